//! Startup: from a new connection to a session ready for its first
//! statement.
//!
//! In order: SSLRequest / GSSENCRequest negotiation, the StartupMessage
//! (protocol 3.0 only; parameters from an allowlist; replication refused),
//! authentication of the client — SCRAM-SHA-256 against a stored verifier,
//! from the identity plugins or else the config's static principals, or a
//! bearer token an identity plugin checks; a principal or address locked
//! out after repeated failures is refused before any of it, and a proof
//! that arrives once it is locked is refused unchecked — then the
//! client's `options` judged as the SET they amount to, and the upstream
//! login with sluice's own credential, the session tagged with its
//! principal. The client sees AuthenticationOk only once the upstream
//! session exists, then the server's ParameterStatus messages, sluice's own
//! BackendKeyData and ReadyForQuery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Authentication;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cancel::UpstreamKey;
use super::options;
use super::{Fatal, Peer};
use crate::audit::Event;
use crate::auth::lockout::{Checked, Claim, LOCKOUT, Lockout, Subject};
use crate::auth::scram::{self, ScramServer, Verifier};
use crate::config::{Hook, MAX_NAME_BYTES};
use crate::gateway::Shared;
use crate::plugin::bindings::identity::exports::sluice::gateway::identity::AuthError;
use crate::plugin::bindings::types::{ConnectionInfo, Principal};
use crate::plugin::host_api::without_secret;
use crate::plugin::{SessionInfo, Verdict};
use crate::protocol::frame::{Frame, read_frame};
use crate::protocol::reply;
use crate::protocol::sqlstate;
use crate::protocol::startup::{self as packet, Packet, StartupMessage};
use crate::protocol::tag;
use crate::telemetry::{KeyValue, SpanKind, Trace, TraceIds, attribute};
use crate::transport::Stream;
use crate::upstream;

/// Largest authentication message accepted from a client.
const MAX_AUTH_MESSAGE: usize = 8 << 10;

/// A logged-in session, ready for the statement loop.
pub struct Established {
    pub login: LoggedIn,
    /// The session's span (empty when not traced).
    pub trace: Trace,
}

/// The end of a session whose start is on the record, written if the
/// session stops before its statement loop writes its own: a login that
/// times out while the upstream connects (the startup future is dropped),
/// a client gone before its first reply. A session on the record always
/// has an end there.
pub struct SessionEnd {
    audit: crate::audit::Audit,
    session: u64,
    started: std::time::Instant,
    /// Why, if it ends now; `None` once the end is someone else's to write.
    reason: Option<&'static str>,
    /// The session's span, when traced.
    trace: Option<TraceIds>,
}

impl SessionEnd {
    fn new(audit: crate::audit::Audit, session: u64, trace: Option<TraceIds>) -> SessionEnd {
        SessionEnd {
            audit,
            session,
            trace,
            started: std::time::Instant::now(),
            reason: Some(
                "it ended before its first statement (the login timed out, or the client left)",
            ),
        }
    }

    /// The session ends now, for `reason`.
    pub fn now(mut self, reason: &str) {
        self.reason = None;
        self.write(reason);
    }

    /// The statement loop took the session over: it writes the end.
    pub fn handed_over(mut self) {
        self.reason = None;
    }

    fn write(&self, reason: &str) {
        self.audit.record_later(Event::SessionEnd {
            session: self.session,
            statements: 0,
            duration_ms: self.started.elapsed().as_millis() as u64,
            reason,
            trace: self.trace.as_ref(),
        });
    }
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        if let Some(reason) = self.reason.take() {
            self.write(reason);
        }
    }
}

/// Who logged in, and the upstream connection opened on their behalf.
pub struct LoggedIn {
    pub principal: Principal,
    pub connection: ConnectionInfo,
    /// Unique for the life of the process.
    pub session_id: u64,
    /// Writes the session's end unless the statement loop does.
    pub end: SessionEnd,
    pub peer: Peer,
    pub upstream: upstream::Connection,
    pub upstream_key: Option<UpstreamKey>,
}

/// Runs the startup phase. `Ok(None)` means the connection ended without a
/// session (a cancel request, or a client that left). `authenticated` is
/// set once the client has proven who it is: a caller that gives up on the
/// phase (its time limit) knows whether a login was refused or a session,
/// started and on the record, could not reach its database in time.
pub async fn establish(
    shared: &Shared,
    client: &mut Stream,
    buf: &mut BytesMut,
    peer: Peer,
    trace: Trace,
    authenticated: &AtomicBool,
) -> Result<Option<Established>, Fatal> {
    let Some(startup) = negotiate(shared, client, buf, peer).await? else {
        return Ok(None);
    };
    match login(shared, client, buf, peer, startup, &trace, authenticated).await {
        Ok(login) => Ok(Some(Established { login, trace })),
        Err(fatal) => {
            // The message quotes what the client sent (its user name, a
            // startup parameter), which nothing has masked: the span says
            // only that the login was refused, and with which SQLSTATE.
            trace.set(KeyValue::new(attribute::ERROR_TYPE, fatal.code));
            trace.fail("login refused");
            Err(fatal)
        }
    }
}

/// The refusal of a session the audit trail cannot record.
fn trail_unwritable() -> Fatal {
    Fatal::new(
        sqlstate::SYSTEM_ERROR,
        "sluice cannot write its audit trail, so it serves no session: tell the operator",
    )
}

/// From the StartupMessage to a session logged in upstream.
async fn login(
    shared: &Shared,
    client: &mut Stream,
    buf: &mut BytesMut,
    peer: Peer,
    startup: StartupMessage,
    trace: &Trace,
    authenticated: &AtomicBool,
) -> Result<LoggedIn, Fatal> {
    // While the trail takes no records no session could start: the client
    // is told before it authenticates, and nothing piles up for the trail
    // meanwhile (a failed login's record is kept through an outage of the
    // audit database).
    if shared.audit.session_refusal().is_some() {
        tracing::info!(%peer, "connection refused: the audit trail takes no records");
        return Err(trail_unwritable());
    }
    if shared.settings.require_tls && !client.is_tls() {
        let refusal = Fatal::new(
            sqlstate::INVALID_AUTHORIZATION,
            "sluice requires a TLS connection (sslmode=require)",
        );
        record_refused_startup(shared, &startup, peer, &refusal, trace).await;
        return Err(refusal);
    }

    let mut out = BytesMut::new();
    let unsupported: Vec<String> = startup
        .parameters
        .iter()
        .filter(|(name, _)| name.starts_with("_pq_."))
        .map(|(name, _)| name.clone())
        .collect();
    if startup.minor_version > 0 || !unsupported.is_empty() {
        // A client asking for 3.2 (or with protocol options) is told sluice
        // speaks 3.0, and carries on at 3.0.
        reply::negotiate_protocol_version(&mut out, unsupported);
    }

    let request = match check_parameters(shared, &startup) {
        Ok(request) => request,
        Err(refusal) => {
            record_refused_startup(shared, &startup, peer, &refusal, trace).await;
            return Err(refusal);
        }
    };
    if !out.is_empty() {
        write(client, &out).await?;
        out.clear();
    }

    let connection = ConnectionInfo {
        client_address: peer.address.to_string(),
        tls: client.is_tls(),
        database: request.database.clone(),
        application_name: startup.get("application_name").map(str::to_owned),
    };
    trace.set(KeyValue::new(
        attribute::DB_NAMESPACE,
        request.database.clone(),
    ));
    trace.set(KeyValue::new(attribute::TLS, client.is_tls()));
    let identity = trace.child("identity", SpanKind::Internal, Vec::new());
    let principal =
        authenticate_counted(shared, client, buf, &request.user, &connection, peer, trace).await;
    let principal = match principal {
        Ok(principal) => {
            authenticated.store(true, Ordering::Relaxed);
            identity.set(KeyValue::new(attribute::IDENTITY_OUTCOME, "authenticated"));
            identity.set(KeyValue::new(attribute::ENDUSER_ID, principal.id.clone()));
            identity.end();
            principal
        }
        Err(fatal) => {
            identity.set(KeyValue::new(attribute::IDENTITY_OUTCOME, "refused"));
            // The message quotes the user name the client sent.
            identity.fail("refused");
            return Err(fatal);
        }
    };
    let session_id = super::next_session_id();
    trace.set(KeyValue::new(attribute::ENDUSER_ID, principal.id.clone()));
    trace.set(KeyValue::new(attribute::SESSION_ID, session_id as i64));

    // The session is on the record before anything reaches the database
    // on its behalf. The client chose its application name: it is masked.
    let application = match &connection.application_name {
        Some(name) if shared.audit.enabled() => {
            Some(crate::masking::for_log(&shared.plugins.current(), name).await)
        }
        _ => None,
    };
    // Settings the server applies at login, before any statement: on the
    // record with the session (judged just below; a refusal ends it).
    let startup_options = if shared.audit.enabled() && !request.options.is_empty() {
        let statement = options::as_statement(&request.options);
        Some(crate::masking::for_log(&shared.plugins.current(), &statement.text).await)
    } else {
        None
    };
    // The other parameters the server gets (application_name is above):
    // they change how what follows runs. The client chose them: masked.
    let mut passed_parameters = Vec::new();
    if shared.audit.enabled() {
        let plugins = shared.plugins.current();
        for (name, value) in &request.forwarded {
            // The names are the config's allowlist's; the values the
            // client's.
            if !name.eq_ignore_ascii_case("application_name") {
                let value = crate::masking::for_log(&plugins, value).await;
                passed_parameters.push((name.clone(), value));
            }
        }
    }
    let recorded = shared
        .audit
        .record(Event::SessionStart {
            session: session_id,
            principal: &principal.id,
            groups: &principal.groups,
            client: peer.address,
            via: peer.via,
            application: application.as_deref(),
            database: &request.database,
            tls: client.is_tls(),
            options: startup_options.as_deref(),
            parameters: &passed_parameters,
            trace: trace.ids().as_ref(),
        })
        .await;
    let end = SessionEnd::new(shared.audit.clone(), session_id, trace.ids());
    if let Err(error) = recorded {
        end.handed_over(); // Its start is not on the record either.
        tracing::error!(alert = true, %error, "the audit trail cannot be written: session refused");
        return Err(trail_unwritable());
    }
    // The client's own `-c name=value` options run only where the same SET
    // would, judged as that SET for this principal. A refusal ends the
    // session, on the record: the attempt was made.
    if !request.options.is_empty() {
        let session = Arc::new(SessionInfo {
            session_id,
            principal: principal.clone(),
            connection: connection.clone(),
        });
        if let Err(refusal) = judge_options(shared, &session, &request.options).await {
            let reason = crate::masking::for_log(&shared.plugins.current(), &refusal.message).await;
            end.now(&format!("refused at login: {reason}"));
            return Err(refusal);
        }
    }
    let mut parameters = request.forwarded.clone();
    tag_upstream(&mut parameters, &principal.id, &request.options);

    let server = match shared
        .upstream
        .connect(upstream::StartupRequest {
            database: &request.database,
            parameters: &parameters,
        })
        .await
    {
        Ok(server) => server,
        Err(error) => {
            // The trail says which: the server refused the session (with
            // its SQLSTATE), or sluice could not log in there at all; and
            // what the client was told (masked, as the server's words are).
            let refused_with = match &error {
                upstream::Error::Refused { code, .. } => Some(code.clone()),
                _ => None,
            };
            let plugins = shared.plugins.current();
            let fatal = upstream_refusal(&plugins, error, &request.database).await;
            let told = format!("the client was told ({}) {}", fatal.code, fatal.message);
            end.now(&match refused_with {
                Some(code) => format!("the upstream server refused it ({code}): {told}"),
                None => format!("sluice could not open an upstream session: {told}"),
            });
            return Err(fatal);
        }
    };

    let upstream_key = server
        .backend_key
        .map(|(pid, secret)| UpstreamKey { pid, secret });
    tracing::info!(
        session = session_id,
        %peer,
        principal = %principal.id,
        database = %request.database,
        tls = client.is_tls(),
        "session started"
    );
    Ok(LoggedIn {
        principal,
        connection,
        session_id,
        end,
        peer,
        upstream: server,
        upstream_key,
    })
}

/// Handles SSLRequest and GSSENCRequest until the StartupMessage arrives.
async fn negotiate(
    shared: &Shared,
    client: &mut Stream,
    buf: &mut BytesMut,
    peer: Peer,
) -> Result<Option<StartupMessage>, Fatal> {
    let mut asked_tls = false;
    let mut asked_gss = false;
    loop {
        let Some(packet) = read_packet(client, buf).await? else {
            return Ok(None);
        };
        match packet {
            Packet::SslRequest if !asked_tls => {
                asked_tls = true;
                let Some(tls) = shared.server_tls.as_ref() else {
                    write(client, b"N").await?;
                    continue;
                };
                if !buf.is_empty() {
                    // Bytes sent after SSLRequest but before the handshake
                    // would be read as if they came over TLS.
                    return Err(Fatal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    ));
                }
                write(client, b"S").await?;
                let Stream::Plain(tcp) = std::mem::replace(client, Stream::Detached) else {
                    // Only a plain stream reaches here: `asked_tls` is set.
                    return Ok(None);
                };
                match tls.acceptor.accept(tcp).await {
                    Ok(tls) => *client = Stream::ServerTls(Box::new(tls)),
                    Err(error) => {
                        // An access attempt that failed, on the trail with
                        // the other refusals before a login.
                        tracing::info!(%peer, %error, "tls handshake failed");
                        shared.audit.connection_refused(
                            peer.address.ip(),
                            peer.via_ip(),
                            crate::audit::Refusal::TlsHandshakeFailed,
                        );
                        return Ok(None);
                    }
                }
            }
            Packet::GssEncRequest if !asked_gss && !asked_tls => {
                // No GSSAPI: decline, the client may go on in plaintext or ask
                // for TLS.
                asked_gss = true;
                write(client, b"N").await?;
            }
            Packet::SslRequest | Packet::GssEncRequest => {
                return Err(Fatal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "duplicate encryption negotiation",
                ));
            }
            Packet::Cancel { pid, secret } => {
                forward_cancel(shared, pid, secret, peer).await;
                return Ok(None);
            }
            Packet::Startup(message) => return Ok(Some(message)),
        }
    }
}

async fn read_packet(client: &mut Stream, buf: &mut BytesMut) -> Result<Option<Packet>, Fatal> {
    loop {
        match packet::split_packet(buf) {
            Ok(Some(packet)) => return Ok(Some(packet)),
            Ok(None) => {}
            Err(error) => return Err(Fatal::new(sqlstate::PROTOCOL_VIOLATION, error.to_string())),
        }
        buf.reserve(1024);
        match client.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(Fatal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "incomplete startup packet",
                ));
            }
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
    }
}

async fn write(client: &mut Stream, bytes: &[u8]) -> Result<(), Fatal> {
    client
        .write_all(bytes)
        .await
        .map_err(|e| Fatal::new(sqlstate::CONNECTION_FAILURE, e.to_string()))
}

async fn forward_cancel(shared: &Shared, pid: i32, secret: i32, peer: Peer) {
    let Some(target) = shared.cancel.lookup(pid, secret) else {
        // As PostgreSQL does, say nothing to the sender either way.
        tracing::info!(%peer, "cancel request with an unknown key ignored");
        return;
    };
    // Counted at once: a hold that ends meanwhile (an approval coming in
    // while the cancel travels upstream) sees it and withdraws.
    target.cancelled.arrived();
    // A statement running upstream is cancelled there; then one held in
    // sluice is woken to withdraw. In that order: a client answered first
    // could send its next statement before the cancel reached the server,
    // and have that cancelled instead.
    let upstream = target.upstream;
    if let Err(error) = shared.upstream.cancel(upstream.pid, upstream.secret).await {
        tracing::warn!(%peer, %error, "could not forward a cancel request");
    }
    target.cancelled.announced.notify_waiters();
}

/// What the client asked for, checked.
struct Request {
    user: String,
    database: String,
    /// Parameters passed on to the server, in the order sent.
    forwarded: Vec<(String, String)>,
    /// The settings of the client's `options` parameter, to be judged.
    options: Vec<(String, String)>,
}

fn check_parameters(shared: &Shared, startup: &StartupMessage) -> Result<Request, Fatal> {
    let user = check_user(startup)?;
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();

    let mut forwarded = Vec::new();
    let mut options = Vec::new();
    for (name, value) in &startup.parameters {
        match name.as_str() {
            "user" | "database" => {}
            _ if name.starts_with("_pq_.") => {}
            "replication" => {
                return Err(Fatal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "replication connections are not allowed through sluice",
                ));
            }
            "options" => {
                let refused = |why: String| {
                    Fatal::new(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!("startup parameter \"options\" refused: {why}"),
                    )
                };
                options = options::parse(value).map_err(refused)?;
                if let Some((name, _)) = options.iter().find(|(n, _)| n.starts_with("sluice.")) {
                    return Err(refused(format!(
                        "{name:?} is sluice's own setting and no client may set it"
                    )));
                }
            }
            _ if name.eq_ignore_ascii_case("client_encoding") => {
                if !is_utf8_name(value) {
                    return Err(Fatal::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!(
                            "client_encoding {value:?} is not supported: sluice serves UTF8 sessions only (set PGCLIENTENCODING=UTF8)"
                        ),
                    ));
                }
                // sluice always asks the server for UTF8 itself.
            }
            _ if shared
                .settings
                .allowed_startup_parameters
                .contains(&name.to_ascii_lowercase()) =>
            {
                forwarded.push((name.clone(), value.clone()));
            }
            _ => {
                return Err(Fatal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("startup parameter {name:?} is not allowed through sluice"),
                ));
            }
        }
    }

    if !shared.settings.upstream.databases.contains(&database) {
        return Err(Fatal::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("database {database:?} is not served by this gateway"),
        ));
    }
    Ok(Request {
        user,
        database,
        forwarded,
        options,
    })
}

/// The startup `user`: present, and no longer than a principal's name can
/// be. PostgreSQL cuts a longer name to its 63 bytes; sluice's principals
/// are its own names, none longer ([`MAX_NAME_BYTES`]), so a longer one
/// can never log in and is refused before any authentication: no SCRAM
/// exchange, no count in the lockout ledger, whose records it would
/// otherwise make up to 10 KB each.
fn check_user(startup: &StartupMessage) -> Result<String, Fatal> {
    let user = startup
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Fatal::new(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?;
    if user.len() > MAX_NAME_BYTES {
        // Not quoted: it is long, and whatever the client sent.
        return Err(Fatal::new(
            sqlstate::INVALID_AUTHORIZATION,
            format!(
                "user name is {} bytes: a sluice principal's name is at most {MAX_NAME_BYTES} bytes, as PostgreSQL's are",
                user.len()
            ),
        ));
    }
    Ok(user.to_owned())
}

/// Judges the settings of the client's startup `options` as the SET
/// statement they amount to: with no policy plugin they pass as a SET
/// would. (sluice's own `sluice.*` settings were refused on arrival.)
async fn judge_options(
    shared: &Shared,
    session: &Arc<SessionInfo>,
    settings: &[(String, String)],
) -> Result<(), Fatal> {
    let plugins = shared.plugins.current();
    if plugins.chain(Hook::Policy).is_empty() {
        return Ok(());
    }
    let statement = options::as_statement(settings);
    let why = match plugins.evaluate(session, &statement).await {
        Ok(Verdict::Allow) => return Ok(()),
        Ok(Verdict::Deny { rule, reason, .. }) => format!("{reason} (rule {rule})"),
        // Nobody can approve a login while it waits.
        Ok(Verdict::RequireApproval { rule, reason, .. }) => {
            format!("it would need approval ({reason}) (rule {rule})")
        }
        // The fault's detail (a trap's wasm backtrace) is for the log.
        Err(fault) => {
            tracing::warn!(session = session.session_id, %fault, "a policy plugin failed judging startup options");
            format!("a policy plugin failed ({})", fault.summary())
        }
    };
    // The reason may quote the options, as the statement's refusal may.
    let logged = crate::masking::for_log(&plugins, &why).await;
    tracing::info!(session = session.session_id, reason = %logged, "startup options refused");
    Err(Fatal::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("startup parameter \"options\" refused: {why}"),
    ))
}

/// Tags the upstream session with its principal, so PostgreSQL's own logs
/// and views attribute it: `application_name` becomes
/// `sluice:PRINCIPAL` (then `:` and the client's own name, if it sent
/// one), and the setting `sluice.principal` holds the principal (which no
/// client may set or change: the guard refuses it). The client's judged
/// options go first, sluice's last, so sluice's win.
fn tag_upstream(
    parameters: &mut Vec<(String, String)>,
    principal: &str,
    options: &[(String, String)],
) {
    let client_name = parameters
        .iter()
        .position(|(name, _)| name.eq_ignore_ascii_case("application_name"))
        .map(|at| parameters.remove(at).1);
    let mut tag = format!("sluice:{principal}");
    if let Some(client_name) = client_name.filter(|n| !n.is_empty()) {
        tag.push(':');
        tag.push_str(&client_name);
    }
    parameters.push(("application_name".to_owned(), tag));
    let mut all: Vec<(String, String)> = options.to_vec();
    all.push(("sluice.principal".to_owned(), principal.to_owned()));
    parameters.push(("options".to_owned(), options::render(&all)));
}

/// PostgreSQL's spellings of UTF-8 (`UTF8`, `UTF-8`, `unicode`), any case.
fn is_utf8_name(value: &str) -> bool {
    let normalised: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(normalised.as_str(), "utf8" | "unicode")
}

/// Counts a failed login in the metrics and tells the client, always in
/// the same words: which check failed is for the log, not for someone
/// guessing.
fn login_failed(shared: &Shared, user: &str) -> Fatal {
    shared
        .counters
        .failed_logins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Fatal::new(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user {user:?}"),
    )
}

/// Puts a failed login on the record. The user name is whatever the client
/// sent: it is masked.
async fn record_failed_login(
    shared: &Shared,
    user: &str,
    peer: Peer,
    reason: &str,
    trace: Option<&TraceIds>,
) {
    if !shared.audit.enabled() {
        return;
    }
    let user = crate::masking::for_log(&shared.plugins.current(), user).await;
    shared.audit.record_later(Event::LoginFailed {
        user: &user,
        client: peer.address,
        via: peer.via,
        reason,
        trace,
    });
}

/// Puts a login refused before any credential was asked for (a startup
/// parameter, replication, no TLS) on the record: an access attempt like
/// a failed one. What the client sent is masked.
async fn record_refused_startup(
    shared: &Shared,
    startup: &StartupMessage,
    peer: Peer,
    refusal: &Fatal,
    trace: &Trace,
) {
    if !shared.audit.enabled() {
        return;
    }
    let reason = crate::masking::for_log(&shared.plugins.current(), &refusal.message).await;
    let user = startup.get("user").unwrap_or_default();
    let reason = format!("refused at startup: {reason}");
    record_failed_login(shared, user, peer, &reason, trace.ids().as_ref()).await;
}

/// Why authentication ended without a principal.
enum AuthFailure {
    /// Locked out when the login started or when its proof was due: the
    /// proof was not checked, and nothing more was counted.
    LockedOut(Lockout),
    /// A failed login, already counted toward lockouts and logged.
    Failed(Fatal),
    /// The client left or broke the protocol: not a guess at a token.
    Ended(Fatal),
}

impl From<Fatal> for AuthFailure {
    fn from(fatal: Fatal) -> Self {
        AuthFailure::Ended(fatal)
    }
}

/// One login attempt: who it claims to be and from where, as the lockout
/// ledger and the log know it.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    shared: &'a Shared,
    /// The user name the client sent.
    user: &'a str,
    /// The same, masked for the log: it is whatever the client sent (a card
    /// number, say).
    logged_user: &'a str,
    peer: Peer,
}

impl Attempt<'_> {
    /// A failed login, counted toward lockouts right here (against the
    /// user name as `claim` says it is): no await between the failure and
    /// its count, so a login timeout that drops the future cannot lose it.
    fn failed(&self, why: &str, claim: Claim) -> AuthFailure {
        let started = self
            .shared
            .lockouts
            .failed(self.user, claim, self.peer.lockout_address());
        self.failed_counted(why, started)
    }

    /// A login the identity plugin could not judge (it faulted): refused,
    /// on the record, and not held against the user or the address. The
    /// fault is the plugin's; a slow or broken plugin must not lock real
    /// users and whole application hosts out for the lockout's length,
    /// beyond the reload that mends it. (A guess that makes the plugin
    /// fault cannot succeed either, so nothing is learnt by sending them.)
    fn unjudged(&self, why: &str) -> AuthFailure {
        self.failed_counted(why, Vec::new())
    }

    /// A failed login the ledger has already counted; `started` holds the
    /// lockouts its count started. The client is told in the same words
    /// whatever failed: which check it was is for the log.
    fn failed_counted(&self, why: &str, started: Vec<Lockout>) -> AuthFailure {
        tracing::warn!(peer = %self.peer, user = self.logged_user, reason = why, "authentication failed");
        for lockout in started {
            tracing::warn!(
                locked = %self.locked_for_log(&lockout.subject),
                failures = lockout.failures,
                minutes = LOCKOUT.as_secs() / 60,
                "locked out after repeated failed logins"
            );
        }
        AuthFailure::Failed(login_failed(self.shared, self.user))
    }

    /// What the log may say of a locked subject: a principal is named as
    /// the client spelled it, so masked.
    fn locked_for_log(&self, subject: &Subject) -> String {
        match subject {
            Subject::Principal(_) => format!("principal {:?}", self.logged_user),
            Subject::UnknownUser(_) => format!("unknown user {:?}", self.logged_user),
            address => address.to_string(),
        }
    }
}

/// Authenticates, refusing a principal or an address locked out after
/// repeated failures: before any exchange when it is locked already, and
/// before its proof is checked when it was locked meanwhile. Failures are
/// counted toward lockouts where they happen; here they go on the record.
async fn authenticate_counted(
    shared: &Shared,
    client: &mut Stream,
    buf: &mut BytesMut,
    user: &str,
    connection: &ConnectionInfo,
    peer: Peer,
    trace: &Trace,
) -> Result<Principal, Fatal> {
    let logged_user = crate::masking::for_log(&shared.plugins.current(), user).await;
    let trace = trace.ids();
    let attempt = Attempt {
        shared,
        user,
        logged_user: &logged_user,
        peer,
    };
    let result = match shared.lockouts.check(user, peer.lockout_address()) {
        Some(lockout) => Err(AuthFailure::LockedOut(lockout)),
        None => authenticate(attempt, client, buf, connection).await,
    };
    match result {
        Ok(principal) => {
            shared.lockouts.succeeded(user);
            Ok(principal)
        }
        Err(AuthFailure::LockedOut(lockout)) => {
            tracing::warn!(
                %peer,
                user = %logged_user,
                locked = %attempt.locked_for_log(&lockout.subject),
                remaining_s = lockout.remaining.as_secs(),
                "login refused: locked out after repeated failed logins"
            );
            let refusal = login_failed(shared, user);
            record_failed_login(
                shared,
                user,
                peer,
                "locked out after repeated failed logins",
                trace.as_ref(),
            )
            .await;
            Err(refusal)
        }
        Err(AuthFailure::Failed(refusal)) => {
            record_failed_login(shared, user, peer, "authentication failed", trace.as_ref()).await;
            Err(refusal)
        }
        Err(AuthFailure::Ended(fatal)) => Err(fatal),
    }
}

/// Who the client is. With identity plugins, they answer: a stored
/// verifier for a SCRAM-SHA-256 exchange, or, when none has one, a bearer
/// token the client sends as its password (only over TLS or loopback).
/// Without, the config's static principals do. Every failure looks the same
/// to the client (28P01); the log says which it was.
async fn authenticate(
    attempt: Attempt<'_>,
    client: &mut Stream,
    buf: &mut BytesMut,
    connection: &ConnectionInfo,
) -> Result<Principal, AuthFailure> {
    let Attempt {
        shared, user, peer, ..
    } = attempt;
    let generation = shared.plugins.generation();
    let plugins = shared.plugins.current();
    if !plugins.identifies() {
        let principal = shared.principals.get(user);
        let verifier = principal.map(|p| p.verifier.clone());
        let claim = match principal {
            Some(_) => Claim::Principal,
            None => Claim::Unknown,
        };
        scram_exchange(attempt, client, buf, verifier, claim).await?;
        return match principal {
            Some(p) => Ok(Principal {
                id: p.name.clone(),
                groups: p.groups.clone(),
                attributes: Vec::new(),
                expires_at: None,
            }),
            None => Err(attempt.failed("unknown user", Claim::Unknown)),
        };
    }

    let stored = match plugins.scram_verifier(user, connection).await {
        Ok(stored) => stored,
        Err(fault) => {
            // Fail closed: run no exchange, admit nobody.
            return Err(attempt.unjudged(&format!("identity plugin failed: {fault}")));
        }
    };
    if let Some((_, secret)) = stored {
        // The plugin's answer was checked where it was called (another
        // user's principal or an unusable verifier is its fault, refused
        // above); should it not parse all the same, the exchange runs to
        // its end and fails, like an unknown user's.
        let verifier = secret.scram_verifier.parse::<Verifier>().ok();
        // A plugin vouched for the name: its failures are a principal's.
        scram_exchange(attempt, client, buf, verifier, Claim::Principal).await?;
        // The client chose how long to take: a reload meanwhile (a
        // revoked user, a changed secret) is asked whether it still
        // vouches for the same secret and principal.
        if shared.plugins.generation() != generation {
            let now = shared.plugins.current();
            match now.scram_verifier(user, connection).await {
                Ok(Some((_, still)))
                    if still.scram_verifier == secret.scram_verifier
                        && still.principal == secret.principal => {}
                Ok(_) => {
                    return Err(attempt.failed(
                        "the identity plugins were reloaded during this login and no longer vouch for this user's secret",
                        Claim::Principal,
                    ));
                }
                Err(fault) => {
                    return Err(attempt.unjudged(&format!("identity plugin failed: {fault}")));
                }
            }
        }
        return Ok(secret.principal);
    }

    // A bearer token travels as a cleartext password: never in the open,
    // neither from the client nor from a load balancer in between.
    let on_this_machine = peer.address.ip().is_loopback() && client.connected_over_loopback();
    if !(client.is_tls() || on_this_machine) {
        // Refused as an unknown user is, after a SCRAM exchange that
        // fails: refused at once, a name no plugin knows could be told
        // from one it knows by the method asked for.
        // No credential is checked here, and the mock verifier fails
        // whatever is sent: counted as a name no principal has.
        scram_exchange(attempt, client, buf, None, Claim::Unknown).await?;
        return Err(attempt.failed(
            "no verifier for this user, and bearer tokens are accepted only over TLS or loopback",
            Claim::Unknown,
        ));
    }
    let mut out = BytesMut::new();
    reply::authentication(&mut out, Authentication::CleartextPassword);
    write(client, &out).await?;
    let password = read_password_message(client, buf).await?;
    let mut body = password.body();
    let token = crate::protocol::frame::take_cstr(&mut body)
        .filter(|_| body.is_empty())
        .ok_or_else(|| Fatal::new(sqlstate::PROTOCOL_VIOLATION, "malformed password message"))?;
    // The token is this login's proof, and the client chose when to send
    // it: it is judged by the ledger as it stands now, not as it stood
    // when the login started.
    if let Some(lockout) = shared.lockouts.check(user, peer.lockout_address()) {
        return Err(AuthFailure::LockedOut(lockout));
    }
    // By the identity plugins in force now, likewise: a token revoked by
    // a reload while the client waited is not taken.
    let plugins = shared.plugins.current();
    let answer = plugins.authenticate(user, token, connection).await;
    // Nothing awaits between the answer and the count of a failure.
    // What the plugin says goes to the log: a careless one may quote the
    // token it was given (a parse error, a panic message), a secret the
    // log must not hold.
    match answer {
        Ok(Ok(principal)) => Ok(principal),
        Ok(Err(error)) => {
            // Only a name every plugin said it does not know is counted
            // apart; a token judged wrong counts against the principal.
            let claim = match error {
                AuthError::UnknownUser => Claim::Unknown,
                _ => Claim::Principal,
            };
            let why = without_secret(&describe_auth_error(&error), token);
            Err(attempt.failed(&why, claim))
        }
        Err(fault) => Err(attempt.unjudged(&without_secret(
            &format!("identity plugin failed: {fault}"),
            token,
        ))),
    }
}

fn describe_auth_error(error: &AuthError) -> String {
    match error {
        AuthError::UnknownUser => "unknown user".to_owned(),
        AuthError::InvalidToken(why) => format!("invalid token: {why}"),
        AuthError::Expired => "token expired".to_owned(),
        AuthError::WrongUser => "token belongs to another user".to_owned(),
    }
}

/// Runs a SCRAM-SHA-256 exchange with the client. Without a verifier (an
/// unknown user) it runs against a made-up one and fails at the end, so the
/// two failures look alike on the wire. A wrong proof is counted against
/// the user name as `claim` says it is: a name no principal has is counted
/// apart, so a flood of made-up names cannot push principals' counts out
/// of the ledger (see [`crate::auth::lockout`]).
async fn scram_exchange(
    attempt: Attempt<'_>,
    client: &mut Stream,
    buf: &mut BytesMut,
    verifier: Option<Verifier>,
    claim: Claim,
) -> Result<(), AuthFailure> {
    let known = verifier.is_some();
    // Over TLS the exchange is bound to sluice's own certificate: -PLUS is
    // offered first, and `y` is then a downgrade. The same for unknown
    // users, so the offer and the checks do not tell them apart.
    let end_point = match (&*client, attempt.shared.server_tls.as_ref()) {
        (Stream::ServerTls(_), Some(tls)) => tls.end_point.clone(),
        _ => None,
    };
    let mut server = match verifier {
        Some(verifier) => ScramServer::new(verifier),
        None => ScramServer::for_unknown_user(attempt.user),
    }
    .with_channel_binding(end_point);

    let mut out = BytesMut::new();
    reply::authentication(&mut out, Authentication::SASL(server.mechanisms()));
    write(client, &out).await?;

    let initial = read_password_message(client, buf).await?;
    let (mechanism, data) = parse_sasl_initial(initial.body()).ok_or_else(|| {
        Fatal::new(
            sqlstate::PROTOCOL_VIOLATION,
            "malformed SASLInitialResponse message",
        )
    })?;
    // No proof is checked here: whatever fails is the protocol's.
    let server_first = server
        .server_first(mechanism, data)
        .map_err(scram_violation)?;
    out.clear();
    reply::authentication(
        &mut out,
        Authentication::SASLContinue(Bytes::from(server_first)),
    );
    write(client, &out).await?;

    let response = read_password_message(client, buf).await?;
    // The client chose when to send its proof, possibly long after the
    // login started and other connections' guesses locked it out: the
    // proof is checked only if the ledger allows it now, and a wrong one
    // is counted under the same lock, before anything awaits.
    let checked = attempt.shared.lockouts.check_proof(
        attempt.user,
        claim,
        attempt.peer.lockout_address(),
        || server.server_final(response.body()),
        |error| matches!(error, scram::Error::WrongProof),
    );
    let server_final = match checked {
        Checked::Passed(server_final) => server_final,
        Checked::Locked(lockout) => return Err(AuthFailure::LockedOut(lockout)),
        Checked::Failed {
            error: scram::Error::WrongProof,
            started,
        } => return Err(attempt.failed_counted("wrong token", started)),
        Checked::Failed { error, .. } => return Err(scram_violation(error).into()),
    };
    if known {
        out.clear();
        reply::authentication(
            &mut out,
            Authentication::SASLFinal(Bytes::from(server_final)),
        );
        write(client, &out).await?;
    }
    Ok(())
}

/// A SCRAM error other than a wrong proof: the client broke the exchange
/// (08P01, as in PostgreSQL).
fn scram_violation(error: scram::Error) -> Fatal {
    Fatal::new(sqlstate::PROTOCOL_VIOLATION, error.to_string())
}

async fn read_password_message(client: &mut Stream, buf: &mut BytesMut) -> Result<Frame, Fatal> {
    let frame = read_frame(client, buf, MAX_AUTH_MESSAGE)
        .await
        .map_err(|e| Fatal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?
        .ok_or_else(|| {
            // Not a broken protocol: psql does this at every login it has
            // no password for (it hangs up, asks, and connects again).
            Fatal::new(
                sqlstate::CONNECTION_FAILURE,
                "client closed the connection during authentication",
            )
        })?;
    if frame.tag() != tag::PASSWORD {
        return Err(Fatal::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "expected a password or SASL response, got message type {:?}",
                frame.tag() as char
            ),
        ));
    }
    Ok(frame)
}

/// SASLInitialResponse body: mechanism name, then a length-prefixed
/// initial response. Parsed here with bounds checks; pgwire's decoder
/// trusts the length it reads.
fn parse_sasl_initial(body: &[u8]) -> Option<(&str, &[u8])> {
    let mut rest = body;
    let mechanism = crate::protocol::frame::take_cstr(&mut rest)?;
    let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let len = i32::from_be_bytes(len_bytes);
    let data = &rest[4..];
    (usize::try_from(len).ok()? == data.len()).then_some((mechanism, data))
}

/// Turns an upstream failure into what the client is told. Details stay in
/// sluice's log: the client learns nothing about the service credential.
/// The server's message may quote what the client sent (`invalid value
/// for parameter "TimeZone": "4111..."`): it is masked as any server
/// message is.
async fn upstream_refusal(
    plugins: &crate::plugin::PluginSet,
    error: upstream::Error,
    database: &str,
) -> Fatal {
    match &error {
        upstream::Error::Refused { code, fields, .. } if !code.starts_with("28") => {
            tracing::warn!(database, %code, "upstream refused the session");
            let message = crate::protocol::backend::field(fields, b'M')
                .unwrap_or("the upstream server refused the session");
            let message = match crate::masking::mask_texts(plugins, &[message]).await {
                Ok(Some(mut masked)) => masked.pop().unwrap_or_default(),
                Ok(None) => message.to_owned(),
                Err(fault) => {
                    tracing::warn!(%fault, "the upstream server's refusal could not be masked");
                    "the upstream server refused the session".to_owned()
                }
            };
            let code = match code.as_str() {
                "53300" => sqlstate::TOO_MANY_CONNECTIONS,
                "3D000" => sqlstate::INVALID_CATALOG_NAME,
                "57P03" => sqlstate::CANNOT_CONNECT_NOW,
                _ => sqlstate::CONNECTION_REJECTED,
            };
            Fatal::new(code, message)
        }
        _ => {
            tracing::error!(database, %error, "cannot open an upstream session");
            Fatal::new(
                sqlstate::CONNECTION_FAILURE,
                "sluice cannot reach the upstream database; try again later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity plugin's reason reaches the log without the token it
    /// quotes, whole or in part, and cut to a line's length.
    #[test]
    fn a_plugin_quoting_the_token_does_not_put_it_in_the_log() {
        let token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig-4f2a9c";
        let whole = describe_auth_error(&AuthError::InvalidToken(format!("cannot parse {token}")));
        let logged = without_secret(&whole, token);
        assert!(!logged.contains(token), "{logged}");
        assert!(logged.contains("cannot parse [the token]"), "{logged}");
        let part = &token[4..30];
        let logged = without_secret(&format!("bad segment {part}!"), token);
        assert_eq!(logged, "bad segment [part of the token]!");
        let long = without_secret(&"x".repeat(5000), token);
        assert!(long.len() < 500, "{}", long.len());
        assert_eq!(without_secret("token expired", token), "token expired");
    }

    /// A user name longer than any principal's (63 bytes, PostgreSQL's
    /// limit) is refused before authentication, without being quoted; 63
    /// bytes pass.
    #[test]
    fn a_user_name_longer_than_63_bytes_is_refused() {
        let startup = |user: &str| StartupMessage {
            minor_version: 0,
            parameters: vec![("user".to_owned(), user.to_owned())],
        };
        let longest = "é".repeat(31) + "a";
        assert_eq!(longest.len(), 63);
        assert_eq!(check_user(&startup(&longest)).ok(), Some(longest));
        for long in ["a".repeat(64), "é".repeat(32), "x".repeat(9_000)] {
            let refusal = check_user(&startup(&long)).unwrap_err();
            assert_eq!(refusal.code, sqlstate::INVALID_AUTHORIZATION);
            assert!(
                refusal.message.contains("at most 63 bytes"),
                "{}",
                refusal.message
            );
            assert!(
                !refusal.message.contains(&long[..32]),
                "{}",
                refusal.message
            );
        }
        let none = check_user(&startup("")).unwrap_err();
        assert!(
            none.message.contains("no PostgreSQL user name"),
            "{}",
            none.message
        );
    }

    #[test]
    fn utf8_spellings_are_recognised() {
        for name in ["UTF8", "utf-8", "Unicode", "'utf8'"] {
            assert!(is_utf8_name(name), "{name}");
        }
        for name in ["LATIN1", "SQL_ASCII", "WIN1252", "", "utf16"] {
            assert!(!is_utf8_name(name), "{name}");
        }
    }

    #[test]
    fn sasl_initial_response_is_bounds_checked() {
        assert_eq!(
            parse_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x03abc"),
            Some(("SCRAM-SHA-256", &b"abc"[..]))
        );
        for bad in [
            &b""[..],
            b"SCRAM-SHA-256",
            b"SCRAM-SHA-256\0\0\0",
            b"SCRAM-SHA-256\0\x7f\xff\xff\xff",
            b"SCRAM-SHA-256\0\xff\xff\xff\xff",
            b"SCRAM-SHA-256\0\0\0\0\x04abc",
        ] {
            assert_eq!(parse_sasl_initial(bad), None, "{bad:?}");
        }
    }
}
