//! One client session, from its first byte to its last:
//! startup ([`startup`]: TLS, the StartupMessage, authentication, the
//! upstream login), then the statement loop ([`proxy`]).
//!
//! This module is the one place that turns a failure into an ErrorResponse
//! with a SQLSTATE for the client.

pub mod cancel;

mod options;
mod prepared;
mod proxy;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::gateway::Shared;
use crate::protocol::reply::{self, Severity};
use crate::transport::Stream;

/// Something the client is told before its session ends.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub code: &'static str,
    pub message: String,
}

impl Fatal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

/// Numbers sessions for logs, hooks and (later) the audit trail.
static SESSION_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_session_id() -> u64 {
    SESSION_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Serves one client connection until it ends.
pub async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut client = Stream::Plain(tcp);
    let mut client_buf = BytesMut::with_capacity(1024);
    let login_timeout = shared.settings.limits.login_timeout;
    let trace = session_trace(&shared, peer);
    let started = tokio::time::timeout(
        login_timeout,
        startup::establish(&shared, &mut client, &mut client_buf, peer, trace),
    )
    .await;
    let established = match started {
        Ok(Ok(Some(established))) => established,
        // A cancel request, or a client that left during startup.
        Ok(Ok(None)) => return,
        Ok(Err(fatal)) => {
            send_fatal(&mut client, &fatal).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "client did not finish logging in within {login_timeout:?}");
            let fatal = Fatal::new(
                crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                "login timed out",
            );
            send_fatal(&mut client, &fatal).await;
            return;
        }
    };
    // No span around the statement loop: entering one on every poll costs
    // more than the rest of a round trip's own work. Log lines carry the
    // session's fields themselves.
    proxy::run(&shared, client, client_buf, established).await;
}

/// The session's span, from its first byte: who connected from where. The
/// rest (who they are, which database) is added as it becomes known.
fn session_trace(shared: &Shared, peer: SocketAddr) -> crate::telemetry::Trace {
    use crate::telemetry::{KeyValue, attribute};
    if !shared.telemetry.enabled() {
        return crate::telemetry::Trace::none();
    }
    shared.telemetry.session(vec![
        KeyValue::new(attribute::DB_SYSTEM_NAME, "postgresql"),
        KeyValue::new(attribute::CLIENT_ADDRESS, peer.ip().to_string()),
        KeyValue::new(attribute::CLIENT_PORT, i64::from(peer.port())),
    ])
}

/// Writes a FATAL ErrorResponse, best effort: the client may be gone.
async fn send_fatal(stream: &mut Stream, fatal: &Fatal) {
    let mut out = BytesMut::new();
    reply::error(&mut out, Severity::Fatal, fatal.code, &fatal.message);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
