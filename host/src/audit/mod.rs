//! The audit trail: who asked for what, what was decided, what ran and
//! what came back — written by the host, because sluice is the only
//! component that sees the traffic (PCI DSS Req. 10.2).
//!
//! Every session's start and end, every failed login, every statement
//! with its masked text and parameters and the policy decision (and the
//! approval, if one was needed), and every outcome (command tags, rows,
//! duration, SQLSTATE, and — as configured — the returned rows as the
//! client got them, masked, up to a cap) is an [`Event`]. A statement's record is durable before the statement is
//! forwarded upstream; its outcome is appended after, without making the
//! client wait. If the trail cannot be written, statements are refused.
//!
//! - [`chain`]: one record as a line of JSON, keyed into a hash chain
//!   (HMAC-SHA256 with a key from a file, never from the config text), so
//!   a record changed, inserted, removed or reordered without the key
//!   shows;
//! - [`log`]: the writer — group commit across sessions, the chain head
//!   kept apart from the trail, rotation, recovery after a crash;
//! - [`verify`]: `sluice audit verify`, which says what is wrong and where;
//! - [`read`]: `sluice audit show` and `tail`, the trail as people read
//!   it;
//! - [`refusals`]: connections turned away before a login, counted and
//!   recorded every few seconds.
//!
//! Nothing here masks: the text handed to an [`Event`] has been through
//! the masking plugins already (see [`crate::masking::mask_texts`]).

pub mod archive;
pub mod chain;
mod head;
pub mod log;
pub mod postgres;
pub mod read;
pub mod refusals;
pub mod verify;
mod window;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use crate::config::{AuditFsync, AuditKey, AuditSettings};
use crate::telemetry::TraceIds;

pub use chain::{ChainKey, EventBody};
pub use log::{AuditError, AuditLog};
pub use refusals::Refusal;

/// The gateway's audit trail, or none when it is not configured.
#[derive(Clone, Default)]
pub struct Audit {
    sink: Option<Sink>,
    /// Returned data recorded per statement, at most (bytes of text).
    result_bytes: usize,
    /// Time from a record handed in to its durable commit.
    write_latency: Arc<crate::metrics::LatencyHistogram>,
    /// Connections turned away before a login, counted until they are
    /// recorded.
    refused: Arc<refusals::RefusedConnections>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

/// Why the trail could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("audit key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: chain::KeyError,
    },
    #[error("audit trail {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        source: AuditError,
    },
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
}

/// Where the records go.
#[derive(Clone)]
enum Sink {
    File(AuditLog),
    Postgres(postgres::PgLog),
}

impl Sink {
    /// The sink's counts and failure, as its committer publishes them.
    fn state(&self) -> &log::SinkState {
        match self {
            Sink::File(log) => log.state(),
            Sink::Postgres(log) => log.state(),
        }
    }
}

/// Reads the chain key the settings name; a key next to the trail is made
/// when missing (demo-grade, and `sluice audit verify` says so).
pub fn load_key(key: &AuditKey) -> Result<ChainKey, OpenError> {
    let (path, make) = match key {
        AuditKey::File(path) => (path, false),
        AuditKey::NextToTrail(path) => (path, true),
    };
    if make {
        tracing::warn!(
            key = %path.display(),
            "the audit key sits next to the trail it protects (demo-grade): whoever can rewrite \
             the trail can read it and re-seal it; configure [audit] key_file elsewhere"
        );
    }
    let loaded = if make && !path.exists() {
        chain::generate_key_file(path)
    } else {
        ChainKey::load(path)
    };
    loaded.map_err(|source| OpenError::Key {
        path: path.clone(),
        source,
    })
}

impl Audit {
    /// No trail: nothing is recorded.
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// Opens (or continues) the trail the settings describe.
    pub async fn open(settings: &AuditSettings) -> Result<Audit, OpenError> {
        if let Some(database) = &settings.postgres {
            let key = load_key(&settings.key)?;
            let log = postgres::PgLog::open(database, key, settings.instance.clone()).await?;
            return Ok(Audit {
                sink: Some(Sink::Postgres(log)),
                result_bytes: settings.result_bytes,
                write_latency: Default::default(),
                refused: Default::default(),
            });
        }
        // The trail's own directory (`audit/audit.jsonl`) is made if
        // missing, readable by sluice's user alone.
        if let Some(dir) = settings.file.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .map_err(|source| OpenError::Log {
                path: settings.file.clone(),
                source: AuditError::Io {
                    action: "create the directory of",
                    path: dir.to_owned(),
                    source,
                },
            })?;
        }
        let key = load_key(&settings.key)?;
        let log = AuditLog::open(log::LogSettings {
            path: settings.file.clone(),
            head_path: settings.head_file.clone(),
            key,
            instance: settings.instance.clone(),
            fsync: match settings.fsync {
                AuditFsync::Always => log::Fsync::Always,
                AuditFsync::Batch => log::Fsync::Batch,
            },
            rotate_bytes: settings.rotate_bytes,
            rotate_after: settings.rotate_after,
        })
        .map_err(|source| OpenError::Log {
            path: settings.file.clone(),
            source,
        })?;
        Ok(Audit {
            sink: Some(Sink::File(log)),
            result_bytes: settings.result_bytes,
            write_latency: Default::default(),
            refused: Default::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// How much returned data to record per statement (0: none).
    pub fn result_bytes(&self) -> usize {
        self.result_bytes
    }

    /// Records `event` and returns once it is durable (its sequence number;
    /// `None` when there is no trail).
    pub async fn record(&self, event: Event<'_>) -> Result<Option<u64>, AuditError> {
        let Some(sink) = &self.sink else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let body = event.encode()?;
        let recorded = match sink {
            Sink::File(log) => log.record_body(body).await,
            Sink::Postgres(log) => log.record(body).await,
        };
        self.write_latency.observe(started.elapsed());
        recorded.map(Some)
    }

    /// Records, commits and bytes written so far; `None` without a trail.
    pub fn stats(&self) -> Option<log::LogStats> {
        self.sink.as_ref().map(|sink| sink.state().stats())
    }

    /// Why the trail takes no records, while it takes none (every session
    /// and statement is refused): it failed, or it cannot write for now
    /// (its database is away, its disk full) and sluice retries.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.sink.as_ref().and_then(|sink| sink.state().failure())
    }

    /// [`failure`](Self::failure), for a connection turned away because of
    /// it: the record of the outage counts the sessions refused.
    pub fn session_refusal(&self) -> Option<Arc<str>> {
        self.sink
            .as_ref()
            .and_then(|sink| sink.state().session_refusal())
    }

    /// How long awaited records took to become durable.
    pub fn write_latency(&self) -> &crate::metrics::LatencyHistogram {
        &self.write_latency
    }

    /// Records `event` in order with the rest, without waiting for it. A
    /// failure still fails the trail (later statements are refused).
    pub fn record_later(&self, event: Event<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        match (event.encode(), sink) {
            (Ok(body), Sink::File(log)) => log.record_later_body(body),
            (Ok(body), Sink::Postgres(log)) => log.record_later(body),
            (Err(refused), sink) => sink
                .state()
                .fail(format!("a record was refused: {refused}")),
        }
    }

    /// Counts a connection from `client` (through the load balancer `via`,
    /// when its PROXY header named the client) turned away before its
    /// login; the count is recorded by
    /// [`Audit::record_refused_connections`].
    pub fn connection_refused(&self, client: IpAddr, via: Option<IpAddr>, refusal: Refusal) {
        if self.sink.is_some() {
            let via = via.map(|via| via.to_canonical());
            self.refused.note(client.to_canonical(), via, refusal);
        }
    }

    /// Puts the connections refused since the last call on the record, a
    /// record per client address and reason (see [`refusals`]).
    pub fn record_refused_connections(&self) {
        for tally in self.refused.take() {
            self.record_later(Event::ConnectionsRefused {
                client: tally.client,
                via: tally.via,
                reason: tally.refusal.reason(),
                count: tally.count,
                first: tally.first,
                last: tally.last,
            });
        }
    }

    /// Writes what is queued and stops the writer.
    pub async fn close(self) {
        match self.sink {
            Some(Sink::File(log)) => log.close().await,
            Some(Sink::Postgres(log)) => log.close().await,
            None => {}
        }
    }
}

/// What the policies decided about a statement, as the trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// `allow`, `deny` (a policy, an approver, an expired approval), or
    /// `error` (a plugin failed, a limit was hit: refused).
    pub verdict: &'static str,
    /// The plugin and rule that decided, where one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, in the deciding plugin's or sluice's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approval the statement needed, if it needed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
}

/// The reason of a statement let through unjudged: sluice's own words.
const UNJUDGED: &str = "no policy plugin is loaded";

impl Decision {
    /// Let through with no policy loaded to ask.
    pub fn unjudged() -> Decision {
        Decision {
            verdict: "allow",
            plugin: None,
            rule: None,
            reason: Some(UNJUDGED.to_owned()),
            approval: None,
        }
    }

    /// Whether the reason may quote what the client sent or a plugin
    /// judged (a statement name, a table): only [`Decision::unjudged`]'s
    /// is sluice's own words alone.
    pub fn reason_needs_masking(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|reason| reason != UNJUDGED)
    }

    /// Let through by every policy.
    pub fn allowed() -> Decision {
        Decision {
            verdict: "allow",
            plugin: None,
            rule: None,
            reason: None,
            approval: None,
        }
    }

    /// Refused for `reason` (the message the client gets).
    pub fn refused(verdict: &'static str, reason: impl Into<String>) -> Decision {
        Decision {
            verdict,
            plugin: None,
            rule: None,
            reason: Some(reason.into()),
            approval: None,
        }
    }
}

/// A statement's approval: who was asked, who answered, how, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApprovalRecord {
    /// Empty where no ticket was opened.
    pub ticket: String,
    pub approver_group: String,
    /// `approved`, `denied`, `expired` or `withdrawn`; where no approver
    /// could answer, why ([`NOT_OBTAINED`]).
    pub outcome: &'static str,
    pub approver: Option<String>,
    /// Unix milliseconds.
    pub requested_ms: u64,
    pub answered_ms: u64,
}

/// The outcomes of an approval no approver could answer: no approval
/// plugin is configured; the statements of one query need two groups'
/// approval; asking for it failed (the approval plugin, or masking the
/// ticket).
pub const NOT_OBTAINED: [&str; 3] = ["no-approval-plugin", "two-groups", "request-failed"];

impl ApprovalRecord {
    /// An approval `approver_group` was to give and could not: `outcome`
    /// is one of [`NOT_OBTAINED`]; `ticket` the one opened, if any.
    pub fn not_obtained(
        approver_group: String,
        outcome: &'static str,
        ticket: Option<String>,
        now_ms: u64,
    ) -> ApprovalRecord {
        debug_assert!(NOT_OBTAINED.contains(&outcome));
        ApprovalRecord {
            ticket: ticket.unwrap_or_default(),
            approver_group,
            outcome,
            approver: None,
            requested_ms: now_ms,
            answered_ms: now_ms,
        }
    }
}

/// The rows a cycle returned, as its outcome keeps them.
#[derive(Debug)]
pub struct ReturnedData<'a> {
    /// Masked rows as text: of each result, those that fit its cap.
    pub rows: &'a [Vec<Option<String>>],
    /// Each result's share of `rows`, in order: the first `results[0].rows`
    /// rows are the first result's, and so on.
    pub results: Vec<ResultData>,
}

/// One result's share of the rows an outcome keeps: a statement's (its
/// CommandComplete ends it), or the part of one an Execute with a row
/// limit returned (its PortalSuspended ends it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResultData {
    /// Rows of the outcome's `data` that are this result's.
    pub rows: u32,
    /// Whether it returned more than were kept.
    pub truncated: bool,
}

/// How a statement came: a simple Query, a Bind of the extended protocol
/// (with parameters), or a fastpath FunctionCall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
    /// A FunctionCall message (always refused).
    Fastpath,
}

/// A plugin version in force, as the trail names it: which version of
/// which plugin judged, masked or approved what the records after it
/// show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginVersion {
    pub name: String,
    pub hook: &'static str,
    /// The component's and its inputs' digest (see `sluice check`).
    pub fingerprint: String,
}

/// One thing the trail records.
#[derive(Debug)]
pub enum Event<'a> {
    /// The gateway started recording, with the plugins it starts with.
    GatewayStart {
        version: &'a str,
        plugins: &'a [PluginVersion],
    },
    /// A reload swapped in another set of plugins; the statements after
    /// it are judged by these.
    PluginsReloaded {
        /// What set it off: a file that changed, SIGHUP.
        cause: &'a str,
        plugins: &'a [PluginVersion],
    },
    /// The gateway stopped cleanly: nothing is missing after the last
    /// record. (A trail that ends without it ended in a crash or a kill.)
    GatewayStop,
    SessionStart {
        session: u64,
        principal: &'a str,
        groups: &'a [String],
        client: SocketAddr,
        /// The load balancer the client came through, when its PROXY
        /// protocol header named the client.
        via: Option<SocketAddr>,
        application: Option<&'a str>,
        database: &'a str,
        tls: bool,
        /// The client's startup `options` as the SET statements they
        /// amount to (masked), which the server runs at login.
        options: Option<&'a str>,
        /// The other startup parameters passed to the server (those the
        /// config allows: `DateStyle`, `TimeZone`, an operator's
        /// `search_path`, ...), values masked; `application_name` is above.
        parameters: &'a [(String, String)],
        /// The session's span, when traced: its trace holds the session.
        trace: Option<&'a TraceIds>,
    },
    LoginFailed {
        user: &'a str,
        client: SocketAddr,
        via: Option<SocketAddr>,
        reason: &'a str,
        /// The refused session's span, when traced.
        trace: Option<&'a TraceIds>,
    },
    /// Connections from one client address turned away before a login,
    /// for one reason, within a few seconds (see [`refusals`]).
    ConnectionsRefused {
        /// `None`: from addresses past the most counted apart.
        client: Option<IpAddr>,
        /// The load balancer the client came through, when its PROXY
        /// header named the client.
        via: Option<IpAddr>,
        reason: &'a str,
        count: u64,
        first: SystemTime,
        last: SystemTime,
    },
    Statement {
        session: u64,
        /// Who ran it (also in the session's start record; here so that
        /// every statement record stands on its own).
        principal: &'a str,
        /// The statement's number in its session, from 1.
        statement: u64,
        protocol: Protocol,
        /// Masked.
        text: &'a str,
        /// Masked; `None` for NULL or a value not in text form.
        params: &'a [Option<String>],
        decision: &'a Decision,
        /// The statement's span, when traced.
        trace: Option<&'a TraceIds>,
    },
    /// A statement was held for approval and the approvers are about to
    /// be asked: on the record before they see the ticket, so that a
    /// request an approver saw is there even if sluice stops during the
    /// wait. The statement's own record (with the answer) follows.
    ApprovalRequested {
        session: u64,
        /// The number the statement's record will have.
        statement: u64,
        ticket: &'a str,
        approver_group: &'a str,
        /// The policy, and its rule, that asked for the approval.
        plugin: &'a str,
        rule: &'a str,
        /// The statement as the approvers are shown it (masked).
        text: &'a str,
        /// Unix milliseconds.
        expires_ms: u64,
        /// The statement's span, when traced.
        trace: Option<&'a TraceIds>,
    },
    Outcome {
        session: u64,
        /// The statements this outcome is of (a cycle's).
        statements: &'a [u64],
        /// Command tags, in order (`SELECT 3`, `INSERT 0 1`).
        tags: &'a [String],
        rows: u64,
        /// Executes that stopped at their row limit, leaving rows in their
        /// portal for a later Execute (written only when not 0).
        suspended: u32,
        duration_us: u64,
        /// The error that ended it, if one did: SQLSTATE and masked
        /// message.
        error: Option<(&'a str, &'a str)>,
        /// Masked rows as text, up to the configured cap per result.
        data: Option<ReturnedData<'a>>,
        /// The span of its (first) statement, when traced.
        trace: Option<&'a TraceIds>,
    },
    SessionEnd {
        session: u64,
        statements: u64,
        duration_ms: u64,
        /// How it ended, in a few words.
        reason: &'a str,
        /// The session's span, when traced.
        trace: Option<&'a TraceIds>,
    },
}

impl Event<'_> {
    /// The event's fields, in the order records show them, written
    /// straight into the body the chain seals (no intermediate map: this
    /// runs for every statement). Every record of a traced session (its
    /// start, a failed login, a statement, an outcome, its end) carries
    /// its span's W3C ids (`trace_id`, `span_id`), so that a trace and the
    /// record can be joined.
    fn encode(self) -> Result<EventBody, chain::SealError> {
        let body = match self {
            Event::SessionStart {
                session,
                principal,
                groups,
                client,
                via,
                application,
                database,
                tls,
                options,
                parameters,
                trace,
            } => {
                let mut body = EventBody::new("session_start");
                body.field("session", &session)?
                    .field("principal", principal)?
                    .field("groups", groups)?
                    .field("client", &client.to_string())?;
                if let Some(via) = via {
                    body.field("via", &via.to_string())?;
                }
                body.field("application", &application)?
                    .field("database", database)?
                    .field("tls", &tls)?;
                if let Some(options) = options {
                    body.field("options", options)?;
                }
                if !parameters.is_empty() {
                    let parameters: serde_json::Map<String, serde_json::Value> = parameters
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone().into()))
                        .collect();
                    body.field("parameters", &parameters)?;
                }
                with_trace(body, trace)?
            }
            Event::LoginFailed {
                user,
                client,
                via,
                reason,
                trace,
            } => {
                let mut body = EventBody::new("login_failed");
                body.field("user", user)?
                    .field("client", &client.to_string())?;
                if let Some(via) = via {
                    body.field("via", &via.to_string())?;
                }
                body.field("reason", reason)?;
                with_trace(body, trace)?
            }
            Event::Statement {
                session,
                principal,
                statement,
                protocol,
                text,
                params,
                decision,
                trace,
            } => {
                let mut body = EventBody::new("statement");
                body.field("session", &session)?
                    .field("principal", principal)?
                    .field("statement", &statement)?
                    .field(
                        "protocol",
                        match protocol {
                            Protocol::Simple => "simple",
                            Protocol::Extended => "extended",
                            Protocol::Fastpath => "fastpath",
                        },
                    )?
                    .field("text", text)?
                    .field("params", params)?
                    .field("decision", decision)?;
                with_trace(body, trace)?
            }
            Event::Outcome {
                session,
                statements,
                tags,
                rows,
                suspended,
                duration_us,
                error,
                data,
                trace,
            } => {
                let mut body = EventBody::new("outcome");
                body.field("session", &session)?
                    .field("statements", statements)?
                    .field("tags", tags)?
                    .field("rows", &rows)?
                    .field("duration_us", &duration_us)?;
                if suspended > 0 {
                    body.field("suspended", &suspended)?;
                }
                if let Some((sqlstate, message)) = error {
                    body.field(
                        "error",
                        &json!({ "sqlstate": sqlstate, "message": message }),
                    )?;
                }
                if let Some(ReturnedData { rows, results }) = data {
                    // Whether any result returned more than was kept.
                    let truncated = results.iter().any(|result| result.truncated);
                    body.field("data", rows)?
                        .field("data_truncated", &truncated)?
                        .field("data_results", &results)?;
                }
                with_trace(body, trace)?
            }
            Event::GatewayStart { version, plugins } => {
                let mut body = EventBody::new("gateway_start");
                body.field("version", version)?.field("plugins", plugins)?;
                body
            }
            Event::PluginsReloaded { cause, plugins } => {
                let mut body = EventBody::new("plugins_reloaded");
                body.field("cause", cause)?.field("plugins", plugins)?;
                body
            }
            Event::GatewayStop => EventBody::new("gateway_stop"),
            Event::ConnectionsRefused {
                client,
                via,
                reason,
                count,
                first,
                last,
            } => {
                let mut body = EventBody::new("connections_refused");
                body.field("client", &client.map(|client| client.to_string()))?;
                if let Some(via) = via {
                    body.field("via", &via.to_string())?;
                }
                body.field("reason", reason)?
                    .field("count", &count)?
                    .field("first", &chain::format_utc_micros(first))?
                    .field("last", &chain::format_utc_micros(last))?;
                body
            }
            Event::ApprovalRequested {
                session,
                statement,
                ticket,
                approver_group,
                plugin,
                rule,
                text,
                expires_ms,
                trace,
            } => {
                let mut body = EventBody::new("approval_requested");
                body.field("session", &session)?
                    .field("statement", &statement)?
                    .field("ticket", ticket)?
                    .field("approver_group", approver_group)?
                    .field("plugin", plugin)?
                    .field("rule", rule)?
                    .field("text", text)?
                    .field("expires_ms", &expires_ms)?;
                with_trace(body, trace)?
            }
            Event::SessionEnd {
                session,
                statements,
                duration_ms,
                reason,
                trace,
            } => {
                let mut body = EventBody::new("session_end");
                body.field("session", &session)?
                    .field("statements", &statements)?
                    .field("duration_ms", &duration_ms)?
                    .field("reason", reason)?;
                with_trace(body, trace)?
            }
        };
        Ok(body)
    }
}

fn with_trace(
    mut body: EventBody,
    trace: Option<&TraceIds>,
) -> Result<EventBody, chain::SealError> {
    if let Some(trace) = trace {
        body.field("trace_id", &trace.trace_id)?
            .field("span_id", &trace.span_id)?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain::Link;
    use serde_json::Value;

    /// Seals `body` as a chain's first record, checks it opens, and reads
    /// it back.
    fn sealed(key: &ChainKey, body: &EventBody) -> Value {
        let now = std::time::SystemTime::now();
        let (line, _) = chain::seal_body(key, &Link::GENESIS, "gw", now, body).expect("seals");
        chain::open_line(key, &line).expect("opens");
        serde_json::from_slice(&line).expect("JSON")
    }

    /// A typed event, written straight into its body, seals into a record
    /// that reads back with every field: the decision without the fields
    /// it has none of, the approval whole, the span's ids.
    #[test]
    fn typed_events_read_back_as_written() {
        let key = ChainKey::from_bytes(&[7; 32]).expect("a key");
        let decision = Decision {
            verdict: "allow",
            plugin: None,
            rule: None,
            reason: Some("approved \"by\" a human".to_owned()),
            approval: Some(ApprovalRecord {
                ticket: "t-1".to_owned(),
                approver_group: "dba".to_owned(),
                outcome: "approved",
                approver: Some("alice".to_owned()),
                requested_ms: 1,
                answered_ms: 2,
            }),
        };
        let trace = TraceIds {
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            span_id: "b7ad6b7169203331".to_owned(),
        };
        let params = [Some("4111******".to_owned()), None];
        let body = Event::Statement {
            session: 3,
            principal: "agent",
            statement: 9,
            protocol: Protocol::Extended,
            text: "SELECT $1 -- é\n",
            params: &params,
            decision: &decision,
            trace: Some(&trace),
        }
        .encode()
        .expect("encodes");
        let record = sealed(&key, &body);
        assert_eq!(record["event"], "statement");
        assert_eq!(record["session"], 3);
        assert_eq!(record["statement"], 9);
        assert_eq!(record["protocol"], "extended");
        assert_eq!(record["text"], "SELECT $1 -- é\n");
        assert_eq!(record["params"], json!(["4111******", null]));
        assert_eq!(
            record["decision"],
            json!({
                "verdict": "allow",
                "reason": "approved \"by\" a human",
                "approval": {
                    "ticket": "t-1", "approver_group": "dba", "outcome": "approved",
                    "approver": "alice", "requested_ms": 1, "answered_ms": 2,
                },
            })
        );
        assert_eq!(record["trace_id"], trace.trace_id.as_str());
        assert_eq!(record["span_id"], trace.span_id.as_str());

        let rows = [vec![Some("a".to_owned()), None]];
        let body = Event::Outcome {
            session: 3,
            statements: &[9],
            tags: &["SELECT 1".to_owned()],
            rows: 1,
            suspended: 0,
            duration_us: 5,
            error: Some(("22012", "division by zero")),
            data: Some(ReturnedData {
                rows: &rows,
                results: vec![ResultData {
                    rows: 1,
                    truncated: true,
                }],
            }),
            trace: Some(&trace),
        }
        .encode()
        .expect("encodes");
        let record = sealed(&key, &body);
        assert_eq!(record["event"], "outcome");
        assert_eq!(
            record["error"],
            json!({"sqlstate": "22012", "message": "division by zero"})
        );
        assert_eq!(record["data"], json!([["a", null]]));
        assert_eq!(record["data_truncated"], true);
        assert_eq!(
            record["data_results"],
            json!([{"rows": 1, "truncated": true}])
        );
        assert!(record.get("suspended").is_none(), "written only when not 0");
        assert_eq!(record["trace_id"], trace.trace_id.as_str());
    }
}
