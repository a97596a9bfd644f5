//! The gateway: accept connections, run a session for each, and shut down
//! gracefully.
//!
//! On shutdown sluice stops accepting at once, closes sessions as they go
//! idle (no statement running, no transaction open), and after the grace
//! period closes the rest with 57P01, as PostgreSQL's own smart-then-fast
//! shutdown does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::{Principal, Settings};
use crate::plugin::{self, Plugins};
use crate::protocol::reply::{self, Severity};
use crate::protocol::sqlstate;
use crate::session::{self, cancel};
use crate::transport;
use crate::upstream::Upstream;

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
    #[error(transparent)]
    Plugin(#[from] plugin::LoadError),
    #[error(transparent)]
    Audit(#[from] crate::audit::OpenError),
    #[error("cannot serve the admin port on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::Error),
}

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Not accepting; idle sessions close.
    Draining,
    /// Every session closes now.
    Closing,
}

/// Counters operators and tests read.
#[derive(Debug, Default)]
pub struct Counters {
    pub sessions_accepted: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub failed_logins: AtomicU64,
    pub active_sessions: AtomicUsize,
    pub statements: crate::metrics::StatementCounters,
    pub approvals: crate::metrics::ApprovalCounters,
}

/// State every session shares.
pub struct Shared {
    pub settings: Settings,
    pub principals: HashMap<String, Principal>,
    pub server_tls: Option<transport::ServerTls>,
    pub upstream: Upstream,
    pub plugins: Arc<Plugins>,
    pub approvals: crate::approval::Approvals,
    pub cancel: cancel::Registry,
    pub counters: Counters,
    /// Failed logins per principal and per address, and the lockouts
    /// they start.
    pub lockouts: crate::auth::lockout::Lockouts,
    /// Connections logging in, per client address (see `session::logins`).
    pub logins: Arc<crate::session::logins::Logins>,
    /// User-defined types looked up so far, per database, for masking
    /// binary values of them.
    pub user_types: crate::masking::types::TypeCatalog,
    /// The audit trail every session writes to.
    pub audit: crate::audit::Audit,
    /// Where sessions' spans go (nowhere when telemetry is off).
    pub telemetry: crate::telemetry::Telemetry,
    pub phase: watch::Receiver<Phase>,
    sessions_done: Notify,
}

/// A bound, not yet serving, gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    phase: watch::Sender<Phase>,
    /// The config file to watch for plugin changes, if any.
    config_path: Option<std::path::PathBuf>,
    /// SIGHUP, listened for since before the plugins were compiled: the
    /// watcher takes it over, so that one sent meanwhile is not lost.
    hangups: Option<tokio::signal::unix::Signal>,
}

/// A gateway serving in the background (tests, `sluice demo`).
pub struct Running {
    pub addr: SocketAddr,
    /// The admin port's address, when it is served.
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AbortOnDrop {
    /// Aborts the task and waits until it has stopped: nothing it does
    /// happens after this returns.
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Gateway {
    /// Checks what the settings name beyond the config text (certificate,
    /// key and CA files), as `sluice check` does, without binding anything.
    /// Plugins are loaded and their configuration checked too.
    pub async fn check(settings: &Settings) -> Result<(), Error> {
        Self::server_tls(settings)?;
        // Fail at startup, not at the first session, on a bad CA file.
        Upstream::new(settings.upstream.clone())?;
        Plugins::load(&settings.plugins).await?;
        Ok(())
    }

    fn server_tls(settings: &Settings) -> Result<Option<transport::ServerTls>, Error> {
        Ok(match &settings.tls {
            Some(files) => Some(transport::server_acceptor(files)?),
            None => None,
        })
    }

    /// Checks the settings and binds the listening socket.
    pub async fn bind(settings: Settings) -> Result<Gateway, Error> {
        let server_tls = Self::server_tls(&settings)?;
        let upstream = Upstream::new(settings.upstream.clone())?;
        let plugins = Arc::new(Plugins::load(&settings.plugins).await?);
        if plugins.current().approves() && settings.approvers.is_empty() {
            tracing::warn!(
                "an approval plugin is loaded but [approvals.approvers] names no approver: no answer is taken, and every held statement is refused when its ticket expires"
            );
        }
        let approvals = crate::approval::Approvals::new(settings.approvers.clone());
        let audit = match &settings.audit {
            Some(audit) => {
                if !plugins.current().masks() {
                    tracing::warn!(
                        "the audit trail is on but no masking plugin is loaded: statement text, parameters and client-chosen names are withheld from it (load builtin:luhn-masker)"
                    );
                }
                let audit = crate::audit::Audit::open(audit).await?;
                // The trail says who was judging from its first record on.
                // Not awaited: a trail that cannot be written fails, and
                // refuses sessions, as it would at the first of them.
                audit.record_later(crate::audit::Event::GatewayStart {
                    version: env!("CARGO_PKG_VERSION"),
                    plugins: &plugins.current().versions(),
                });
                audit
            }
            None => {
                tracing::warn!(
                    "no audit trail is configured: statements are not recorded ([audit] in the config, or --audit-file)"
                );
                crate::audit::Audit::disabled()
            }
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.listen,
                source,
            })?;
        let admin = match settings.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Admin { addr, source })?,
            ),
            None => None,
        };
        let telemetry = match &settings.telemetry {
            Some(telemetry) => crate::telemetry::Telemetry::start(telemetry)?,
            None => crate::telemetry::Telemetry::disabled(),
        };
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let principals = settings
            .principals
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Ok(Gateway {
            shared: Arc::new(Shared {
                // Any bound below max_connections leaves the rest to
                // others; a quarter lets an application's pool log in at
                // once from one host (or one balancer without a PROXY
                // header).
                logins: crate::session::logins::Logins::new(
                    settings
                        .limits
                        .max_logins_per_address
                        .unwrap_or((settings.max_connections / 4).max(1)),
                ),
                settings,
                principals,
                server_tls,
                upstream,
                plugins,
                approvals,
                cancel: cancel::Registry::default(),
                counters: Counters::default(),
                lockouts: Default::default(),
                user_types: Default::default(),
                audit,
                telemetry,
                phase: phase_rx,
                sessions_done: Notify::new(),
            }),
            listener,
            admin,
            phase,
            config_path: None,
            hangups: None,
        })
    }

    /// Reload the plugins when this config file, or a file it names for
    /// them, changes, and on SIGHUP.
    pub fn watch_config(mut self, path: impl Into<std::path::PathBuf>) -> Gateway {
        let path = path.into();
        // The watch is on the config's directory: a trail written there
        // would wake it with every record.
        if let Some(audit) = &self.shared.settings.audit {
            let directory = |file: &std::path::Path| {
                std::path::absolute(file)
                    .ok()
                    .and_then(|f| f.parent().map(std::path::Path::to_path_buf))
            };
            if directory(&audit.file) == directory(&path) {
                tracing::warn!(trail = %audit.file.display(), "the audit trail is in the config file's directory, which sluice watches for changes: every record wakes the watcher; put it in a directory of its own (file = \"audit/audit.jsonl\")");
            }
        }
        self.config_path = Some(path);
        self
    }

    /// Hands the watcher (see [`watch_config`](Self::watch_config)) the
    /// SIGHUP listener taken before the gateway was built, so that a SIGHUP
    /// sent while the plugins compiled still reloads them.
    pub fn hangups_since(mut self, hangups: tokio::signal::unix::Signal) -> Gateway {
        self.hangups = Some(hangups);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin port's address, when it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves, then drains: returns when every
    /// session has ended. Sessions run on the current runtime.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        self.serve_on(&[], shutdown).await
    }

    /// Like [`Gateway::serve`], running sessions on the given single-threaded
    /// runtimes (one per core), round robin. A session stays on its runtime
    /// for life, so its two sockets are served by one thread with no
    /// wake-ups across threads.
    pub async fn serve_on(
        self,
        workers: &[tokio::runtime::Handle],
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Gateway {
            shared,
            listener,
            admin,
            phase,
            config_path,
            hangups,
        } = self;
        // Served through the drain, so that /readyz says it is draining.
        let _admin = admin.map(|listener| {
            AbortOnDrop(tokio::spawn(crate::admin::serve(listener, shared.clone())))
        });
        let _watcher = config_path.map(|path| {
            AbortOnDrop(tokio::spawn(plugin::reload::watch(
                shared.plugins.clone(),
                path,
                shared.audit.clone(),
                hangups,
            )))
        });
        let refusals = shared
            .audit
            .enabled()
            .then(|| AbortOnDrop(tokio::spawn(record_refusals(shared.clone()))));
        tokio::select! {
            () = accept_loop(&shared, &listener, workers) => {}
            () = shutdown => {}
        }
        drop(listener);
        drain(&shared, &phase).await;
        // The sessions' last outcomes are on the record, and their last
        // spans exported, before sluice exits. The interval's counts are
        // taken here, and its task's last turn cannot come after the stop.
        if let Some(refusals) = refusals {
            refusals.stop().await;
        }
        shared.audit.record_refused_connections();
        shared.audit.record_later(crate::audit::Event::GatewayStop);
        shared.audit.clone().close().await;
        shared.telemetry.shutdown().await;
    }

    /// Serves in a background task.
    pub fn spawn(self) -> Running {
        let addr = self.local_addr();
        let admin_addr = self.admin_addr();
        let shared = self.shared.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            admin_addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Running {
    /// Shuts down gracefully (as on SIGTERM) and waits until every session
    /// has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    workers: &[tokio::runtime::Handle],
) {
    let mut phase = shared.phase.clone();
    let mut next_worker = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = phase.wait_for(|p| *p != Phase::Serving) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let active = shared
            .counters
            .active_sessions
            .fetch_add(1, Ordering::AcqRel);
        let guard = SessionGuard(shared.clone());
        if active >= shared.settings.max_connections {
            shared
                .counters
                .sessions_refused
                .fetch_add(1, Ordering::Relaxed);
            shared
                .audit
                .connection_refused(peer.ip(), None, crate::audit::Refusal::TooManyClients);
            tokio::spawn(async move {
                let _guard = guard;
                refuse(tcp).await;
            });
            continue;
        }
        shared
            .counters
            .sessions_accepted
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        if workers.is_empty() {
            tokio::spawn(async move {
                let _guard = guard;
                session::run(shared, tcp, peer).await;
            });
            continue;
        }
        // Move the socket to the worker's reactor.
        let socket = match tcp.into_std() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand a connection to a worker");
                continue;
            }
        };
        next_worker = (next_worker + 1) % workers.len();
        workers[next_worker].spawn(async move {
            let _guard = guard;
            match tokio::net::TcpStream::from_std(socket) {
                Ok(tcp) => session::run(shared, tcp, peer).await,
                Err(error) => tracing::warn!(%peer, %error, "cannot adopt a connection"),
            }
        });
    }
}

/// Puts the connections refused before a login on the trail, counted, at
/// intervals (see [`crate::audit::refusals`]).
async fn record_refusals(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(crate::audit::refusals::RECORD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared.audit.record_refused_connections();
    }
}

/// Counts a session out when its task ends, however it ends.
struct SessionGuard(Arc<Shared>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self
            .0
            .counters
            .active_sessions
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            self.0.sessions_done.notify_waiters();
        }
    }
}

async fn refuse(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    reply::error(
        &mut out,
        Severity::Fatal,
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tcp.write_all(&out)).await;
}

async fn wait_for_sessions(shared: &Shared) {
    loop {
        let notified = shared.sessions_done.notified();
        if shared.counters.active_sessions.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

async fn drain(shared: &Arc<Shared>, phase: &watch::Sender<Phase>) {
    let _ = phase.send(Phase::Draining);
    let active = shared.counters.active_sessions.load(Ordering::Acquire);
    tracing::info!(active, "draining sessions");
    let grace = shared.settings.limits.shutdown_grace;
    if tokio::time::timeout(grace, wait_for_sessions(shared))
        .await
        .is_err()
    {
        tracing::warn!(
            active = shared.counters.active_sessions.load(Ordering::Acquire),
            "grace period over: closing the remaining sessions"
        );
        let _ = phase.send(Phase::Closing);
        wait_for_sessions(shared).await;
    }
    tracing::info!("all sessions ended");
}
