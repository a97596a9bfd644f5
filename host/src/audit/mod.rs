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
//!   it.
//!
//! Nothing here masks: the text handed to an [`Event`] has been through
//! the masking plugins already (see [`crate::masking::mask_texts`]).

pub mod chain;
pub mod log;
pub mod postgres;
pub mod read;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::config::{AuditFsync, AuditKey, AuditSettings};
use crate::telemetry::TraceIds;

pub use chain::ChainKey;
pub use log::{AuditError, AuditLog};

/// The gateway's audit trail, or none when it is not configured.
#[derive(Clone, Default)]
pub struct Audit {
    sink: Option<Sink>,
    /// Returned data recorded per statement, at most (bytes of text).
    result_bytes: usize,
    /// Time from a record handed in to its durable commit.
    write_latency: Arc<crate::metrics::LatencyHistogram>,
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

/// Reads the chain key the settings name; a key next to the trail is made
/// when missing (demo-grade, and `sluice audit verify` says so).
pub fn load_key(key: &AuditKey) -> Result<ChainKey, OpenError> {
    let (path, make) = match key {
        AuditKey::File(path) => (path, false),
        AuditKey::NextToTrail(path) => (path, true),
    };
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
        let recorded = match sink {
            Sink::File(log) => log.record(event.into_fields()).await,
            Sink::Postgres(log) => log.record(event.into_fields()).await,
        };
        self.write_latency.observe(started.elapsed());
        recorded.map(Some)
    }

    /// Records, commits and bytes written so far; `None` without a trail.
    pub fn stats(&self) -> Option<log::LogStats> {
        self.sink.as_ref().map(|sink| match sink {
            Sink::File(log) => log.stats(),
            Sink::Postgres(log) => log.stats(),
        })
    }

    /// Why the trail failed, once it has (every statement is refused).
    pub fn failure(&self) -> Option<Arc<str>> {
        self.sink.as_ref().and_then(|sink| match sink {
            Sink::File(log) => log.failure(),
            Sink::Postgres(log) => log.failure(),
        })
    }

    /// How long awaited records took to become durable.
    pub fn write_latency(&self) -> &crate::metrics::LatencyHistogram {
        &self.write_latency
    }

    /// Records `event` in order with the rest, without waiting for it. A
    /// failure still fails the trail (later statements are refused).
    pub fn record_later(&self, event: Event<'_>) {
        match &self.sink {
            Some(Sink::File(log)) => log.record_later(event.into_fields()),
            Some(Sink::Postgres(log)) => log.record_later(event.into_fields()),
            None => {}
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `allow`, `deny` (a policy, an approver, an expired approval), or
    /// `error` (a plugin failed, a limit was hit: refused).
    pub verdict: &'static str,
    /// The plugin and rule that decided, where one did.
    pub plugin: Option<String>,
    pub rule: Option<String>,
    /// Why, in the deciding plugin's or sluice's words.
    pub reason: Option<String>,
    /// The approval the statement needed, if it needed one.
    pub approval: Option<ApprovalRecord>,
}

impl Decision {
    /// Let through with no policy loaded to ask.
    pub fn unjudged() -> Decision {
        Decision {
            verdict: "allow",
            plugin: None,
            rule: None,
            reason: Some("no policy plugin is loaded".to_owned()),
            approval: None,
        }
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

    fn to_json(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("verdict".into(), self.verdict.into());
        for (name, value) in [
            ("plugin", &self.plugin),
            ("rule", &self.rule),
            ("reason", &self.reason),
        ] {
            if let Some(value) = value {
                fields.insert(name.into(), value.clone().into());
            }
        }
        if let Some(approval) = &self.approval {
            fields.insert(
                "approval".into(),
                json!({
                    "ticket": approval.ticket,
                    "approver_group": approval.approver_group,
                    "outcome": approval.outcome,
                    "approver": approval.approver,
                    "requested_ms": approval.requested_ms,
                    "answered_ms": approval.answered_ms,
                }),
            );
        }
        Value::Object(fields)
    }
}

/// A statement's approval: who was asked, who answered, how, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub ticket: String,
    pub approver_group: String,
    /// `approved`, `denied` or `expired`.
    pub outcome: &'static str,
    pub approver: Option<String>,
    /// Unix milliseconds.
    pub requested_ms: u64,
    pub answered_ms: u64,
}

/// How a statement came: a simple Query, or a Bind of the extended
/// protocol (with parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

/// One thing the trail records.
#[derive(Debug)]
pub enum Event<'a> {
    SessionStart {
        session: u64,
        principal: &'a str,
        groups: &'a [String],
        client: SocketAddr,
        application: Option<&'a str>,
        database: &'a str,
        tls: bool,
        /// The session's span, when traced: its trace holds the session.
        trace: Option<&'a TraceIds>,
    },
    LoginFailed {
        user: &'a str,
        client: SocketAddr,
        reason: &'a str,
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
    Outcome {
        session: u64,
        /// The statements this outcome is of (a cycle's).
        statements: &'a [u64],
        /// Command tags, in order (`SELECT 3`, `INSERT 0 1`).
        tags: &'a [String],
        rows: u64,
        duration_us: u64,
        /// The error that ended it, if one did: SQLSTATE and masked
        /// message.
        error: Option<(&'a str, &'a str)>,
        /// Masked rows as text, up to the configured cap; whether more
        /// were returned than kept.
        data: Option<(&'a [Vec<Option<String>>], bool)>,
    },
    SessionEnd {
        session: u64,
        statements: u64,
        duration_ms: u64,
        /// How it ended, in a few words.
        reason: &'a str,
    },
}

/// Adds the span's W3C ids (`trace_id`, `span_id`) to a record, so that a
/// trace and the record of the same session or statement can be joined.
fn with_trace(mut record: Value, trace: Option<&TraceIds>) -> Value {
    if let (Some(trace), Some(fields)) = (trace, record.as_object_mut()) {
        fields.insert("trace_id".into(), trace.trace_id.clone().into());
        fields.insert("span_id".into(), trace.span_id.clone().into());
    }
    record
}

impl Event<'_> {
    /// The event's fields, in the order records show them.
    fn into_fields(self) -> Map<String, Value> {
        let value = match self {
            Event::SessionStart {
                session,
                principal,
                groups,
                client,
                application,
                database,
                tls,
                trace,
            } => with_trace(
                json!({
                    "event": "session_start",
                    "session": session,
                    "principal": principal,
                    "groups": groups,
                    "client": client.to_string(),
                    "application": application,
                    "database": database,
                    "tls": tls,
                }),
                trace,
            ),
            Event::LoginFailed {
                user,
                client,
                reason,
            } => json!({
                "event": "login_failed",
                "user": user,
                "client": client.to_string(),
                "reason": reason,
            }),
            Event::Statement {
                session,
                principal,
                statement,
                protocol,
                text,
                params,
                decision,
                trace,
            } => with_trace(
                json!({
                    "event": "statement",
                    "session": session,
                    "principal": principal,
                    "statement": statement,
                    "protocol": match protocol {
                        Protocol::Simple => "simple",
                        Protocol::Extended => "extended",
                    },
                    "text": text,
                    "params": params,
                    "decision": decision.to_json(),
                }),
                trace,
            ),
            Event::Outcome {
                session,
                statements,
                tags,
                rows,
                duration_us,
                error,
                data,
            } => {
                let mut value = json!({
                    "event": "outcome",
                    "session": session,
                    "statements": statements,
                    "tags": tags,
                    "rows": rows,
                    "duration_us": duration_us,
                });
                if let Some((sqlstate, message)) = error {
                    value["error"] = json!({ "sqlstate": sqlstate, "message": message });
                }
                if let Some((rows, truncated)) = data {
                    value["data"] = json!(rows);
                    value["data_truncated"] = json!(truncated);
                }
                value
            }
            Event::SessionEnd {
                session,
                statements,
                duration_ms,
                reason,
            } => json!({
                "event": "session_end",
                "session": session,
                "statements": statements,
                "duration_ms": duration_ms,
                "reason": reason,
            }),
        };
        match value {
            Value::Object(fields) => fields,
            _ => Map::new(),
        }
    }
}
