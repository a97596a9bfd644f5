//! One client session, from its first byte to its last:
//! startup ([`startup`]: TLS, the StartupMessage, authentication, the
//! upstream login), then the statement loop ([`proxy`]).
//!
//! This module is the one place that turns a failure into an ErrorResponse
//! with a SQLSTATE for the client.

pub mod cancel;
pub mod logins;

mod cursors;
mod options;
mod prepared;
mod proxy;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::audit::Refusal;
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

/// Serves one client connection, accepted from `connected_from`, until it
/// ends.
pub async fn run(shared: Arc<Shared>, tcp: TcpStream, connected_from: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut client = Stream::Plain(tcp);
    let mut client_buf = BytesMut::with_capacity(1024);
    let login_timeout = shared.settings.limits.login_timeout;
    // The header and the login share one time limit.
    let login_ends = tokio::time::Instant::now() + login_timeout;
    // An IPv4 client on an IPv6 socket is its IPv4 address everywhere.
    let connected_from = SocketAddr::new(connected_from.ip().to_canonical(), connected_from.port());
    let Some(peer) = origin(
        &shared,
        &mut client,
        &mut client_buf,
        connected_from,
        login_ends,
    )
    .await
    else {
        return;
    };
    // One address cannot hold every connection slot with logins that
    // never end: past its bound, a new one is turned away at once.
    let Some(logging_in) = shared.logins.begin(peer.address.ip()) else {
        shared
            .counters
            .sessions_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%peer, "connection refused: its address has too many logins in progress");
        shared.audit.connection_refused(
            peer.address.ip(),
            peer.via_ip(),
            Refusal::TooManyLoginsFromAddress,
        );
        let fatal = Fatal::new(
            crate::protocol::sqlstate::TOO_MANY_CONNECTIONS,
            "too many connections from this address are logging in at once; try again shortly",
        );
        send_fatal(&mut client, &fatal).await;
        return;
    };
    let trace = session_trace(&shared, peer);
    let authenticated = std::sync::atomic::AtomicBool::new(false);
    let started = tokio::time::timeout_at(
        login_ends,
        startup::establish(
            &shared,
            &mut client,
            &mut client_buf,
            peer,
            trace,
            &authenticated,
        ),
    )
    .await;
    let established = match started {
        Ok(Ok(Some(established))) => established,
        // A cancel request, or a client that left during startup.
        Ok(Ok(None)) => return,
        Ok(Err(fatal)) => {
            // Refused logins are logged where they are refused; a client
            // that does not speak the protocol is logged here.
            if fatal.code == crate::protocol::sqlstate::PROTOCOL_VIOLATION {
                tracing::info!(%peer, reason = %fatal.message, "connection refused at startup");
                shared.audit.connection_refused(
                    peer.address.ip(),
                    peer.via_ip(),
                    Refusal::ProtocolBroken,
                );
            }
            send_fatal(&mut client, &fatal).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "client did not finish logging in within {login_timeout:?}");
            // A session that started (on the record, with its end) and
            // could not reach its database in time was no refused login.
            if !authenticated.load(std::sync::atomic::Ordering::Relaxed) {
                shared.audit.connection_refused(
                    peer.address.ip(),
                    peer.via_ip(),
                    Refusal::LoginTimedOut,
                );
            }
            let fatal = Fatal::new(
                crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                "login timed out",
            );
            send_fatal(&mut client, &fatal).await;
            return;
        }
    };
    drop(logging_in);
    // No span around the statement loop: entering one on every poll costs
    // more than the rest of a round trip's own work. Log lines carry the
    // session's fields themselves.
    proxy::run(&shared, client, client_buf, established).await;
}

/// Where a session comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client: the connection's other end, or the client a trusted
    /// load balancer's PROXY protocol header names.
    pub address: SocketAddr,
    /// The load balancer the connection came through, when it came through
    /// one (`[listen] proxy_protocol_from`).
    pub via: Option<SocketAddr>,
}

impl Peer {
    /// The load balancer's address, without its port.
    pub fn via_ip(&self) -> Option<std::net::IpAddr> {
        self.via.map(|via| via.ip())
    }

    /// The address a failed login counts against for lockouts: none for a
    /// balancer's connection that named no client, whose address stands
    /// for everyone behind the balancer.
    pub fn lockout_address(&self) -> Option<std::net::IpAddr> {
        (self.via != Some(self.address)).then(|| self.address.ip())
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.via {
            None => write!(f, "{}", self.address),
            Some(via) if via == self.address => {
                write!(f, "{via} (a load balancer; its header named no client)")
            }
            Some(via) => write!(f, "{} via {via}", self.address),
        }
    }
}

/// Where the session comes from: the address it connected from, or, from
/// a load balancer `[listen] proxy_protocol_from` lists, the client its
/// PROXY protocol header names. `None` when the connection ends here (no
/// usable header, or the balancer left); the client has been told why.
async fn origin(
    shared: &Shared,
    client: &mut Stream,
    buf: &mut BytesMut,
    connected_from: SocketAddr,
    login_ends: tokio::time::Instant,
) -> Option<Peer> {
    use crate::protocol::proxy_header;
    let trusted = &shared.settings.proxy_protocol_from;
    if !trusted
        .iter()
        .any(|range| range.contains(connected_from.ip()))
    {
        return Some(Peer {
            address: connected_from,
            via: None,
        });
    }
    let read = tokio::time::timeout_at(login_ends, async {
        loop {
            if let Some(header) = proxy_header::parse(buf)? {
                buf.advance(header.len);
                return Ok::<_, proxy_header::HeaderError>(Some(header.source));
            }
            buf.reserve(1024);
            match client.read_buf(buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    })
    .await;
    let fatal = match read {
        // A health check's, or one naming no address: the balancer's own
        // address stands.
        Ok(Ok(Some(source))) => {
            return Some(Peer {
                address: source.unwrap_or(connected_from),
                via: Some(connected_from),
            });
        }
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            tracing::warn!(%connected_from, %error, "connection refused: [listen] proxy_protocol_from lists this address, and what it sent is not a usable PROXY protocol header");
            shared
                .audit
                .connection_refused(connected_from.ip(), None, Refusal::ProxyHeaderRefused);
            Fatal::new(
                crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                format!("{error}: sluice expects one from this address first"),
            )
        }
        Err(_) => {
            tracing::info!(%connected_from, "no PROXY protocol header within the login timeout");
            shared
                .audit
                .connection_refused(connected_from.ip(), None, Refusal::LoginTimedOut);
            Fatal::new(
                crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                "no PROXY protocol header arrived in time",
            )
        }
    };
    send_fatal(client, &fatal).await;
    None
}

/// The session's span, from its first byte: who connected from where. The
/// rest (who they are, which database) is added as it becomes known.
fn session_trace(shared: &Shared, peer: Peer) -> crate::telemetry::Trace {
    use crate::telemetry::{KeyValue, attribute};
    if !shared.telemetry.enabled() {
        return crate::telemetry::Trace::none();
    }
    let mut attributes = vec![
        KeyValue::new(attribute::DB_SYSTEM_NAME, "postgresql"),
        KeyValue::new(attribute::CLIENT_ADDRESS, peer.address.ip().to_string()),
        KeyValue::new(attribute::CLIENT_PORT, i64::from(peer.address.port())),
    ];
    // The semantic conventions' name for the immediate peer, where a
    // balancer stands between the client and sluice.
    if let Some(via) = peer.via {
        attributes.push(KeyValue::new(
            attribute::NETWORK_PEER_ADDRESS,
            via.ip().to_string(),
        ));
        attributes.push(KeyValue::new(
            attribute::NETWORK_PEER_PORT,
            i64::from(via.port()),
        ));
    }
    shared.telemetry.session(attributes)
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
