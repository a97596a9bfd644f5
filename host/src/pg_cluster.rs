//! A throwaway PostgreSQL cluster started from the machine's own server
//! binaries: `initdb` into a fresh temporary directory, `postgres` on a free
//! TCP port on 127.0.0.1 with its unix socket inside that directory.
//!
//! Used by `sluice demo` (the quickstart) and by the end-to-end test harness.
//! The code is synchronous (`std::process`); call it from a blocking context
//! or `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use sluice::pg_cluster::{HostAuth, PgCluster};
//! let pg = PgCluster::builder()
//!     .auth(HostAuth::ScramSha256)
//!     .superuser_password("s3cret")
//!     .start()?;
//! pg.create_database("payments")?;
//! assert_eq!(pg.psql("payments", "SELECT 1")?, "1");
//! println!("upstream at {}", pg.url("payments"));
//! # Ok::<(), sluice::pg_cluster::Error>(())
//! ```
//!
//! # Layout of the temporary directory
//! `data/` (PGDATA), `sock/` (the unix socket), `postgres.log` (the server's
//! stderr, appended across restarts).
//!
//! # Authentication
//! The unix socket always uses `trust` (that is how [`PgCluster::psql`]
//! gets in as the superuser). TCP connections on 127.0.0.1 use the
//! [`HostAuth`] method chosen on the builder. The superuser is `postgres`;
//! its password is set with `ALTER ROLE` over the socket once the server is
//! up, after `password_encryption` has been set to match the method (`md5`
//! for [`HostAuth::Md5`], so the stored secret is really an md5 hash;
//! `scram-sha-256` otherwise). The same `password_encryption` is written
//! to `postgresql.conf`, so roles a test creates later get the same kind
//! of secret.
//!
//! # Running as root
//! `initdb` and `postgres` refuse to run as root. When the current process
//! is root they run as the `postgres` OS user instead: the temporary
//! directory is handed to that user, and the children get its uid and gid
//! with no supplementary groups (`std` calls `setgroups(0, NULL)` before
//! `setuid` when only a uid is given). `psql` runs as the current user.
//!
//! # Lifetime
//! Dropping a [`PgCluster`] stops the server (fast shutdown, then harder
//! signals after a deadline) and removes the temporary directory. There is
//! no parent-death watchdog: if the owning process is killed with SIGKILL
//! the server is left running (on Ctrl-C in a terminal it gets the SIGINT
//! too and shuts down).

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::analysis::quote_identifier;

/// Environment variable naming the directory that holds `initdb` and
/// `postgres`; it overrides every other way of finding them.
pub const BINDIR_ENV: &str = "SLUICE_PG_BINDIR";

/// The superuser role (and, when running as root, the OS user the server
/// runs as).
pub const SUPERUSER: &str = "postgres";

/// The address the server listens on.
pub const HOST: &str = "127.0.0.1";

/// How many free ports are tried before giving up when another process
/// grabs the chosen port between picking and binding it.
const PORT_ATTEMPTS: u32 = 5;
/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);
/// How long a fast shutdown may take before SIGQUIT, and SIGQUIT before SIGKILL.
const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines quoted in startup errors.
const LOG_TAIL_LINES: usize = 30;

/// Environment variables that would change what libpq-based tools connect
/// to or how; removed from `psql`'s environment.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGTARGETSESSIONATTRS",
    "PGCONNECT_TIMEOUT",
    "PGCHANNELBINDING",
    "PGGSSENCMODE",
    "PSQLRC",
];

/// Everything that can go wrong with a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No directory holding both `initdb` and `postgres` was found.
    #[error(
        "postgresql server binaries (initdb, postgres) not found; looked in: {searched}. \
         install the postgresql server package (on debian/ubuntu: `apt-get install postgresql`; \
         pg_config and psql alone are client-only) or set {BINDIR_ENV} to the directory holding initdb and postgres"
    )]
    BinariesNotFound {
        /// The places that were searched, in order.
        searched: String,
    },
    /// A bin directory was given explicitly (builder or `SLUICE_PG_BINDIR`)
    /// but lacks a server binary.
    #[error(
        "{dir}: no `{missing}` in this postgresql bin directory (given by {source_of_dir}); \
         point it at the server binaries (on debian/ubuntu: `apt-get install postgresql` puts them in /usr/lib/postgresql/<version>/bin)"
    )]
    BadBinDir {
        /// The directory that was given.
        dir: PathBuf,
        /// The binary that is missing.
        missing: &'static str,
        /// Where the directory came from.
        source_of_dir: &'static str,
    },
    /// Running as root, but there is no `postgres` OS user to run the server as.
    #[error(
        "running as root, but os user `{SUPERUSER}` does not exist; initdb and postgres refuse to run as root. \
         create it (`useradd --system --user-group postgres`; the debian/ubuntu postgresql package does) or run as a non-root user"
    )]
    NoServerUser,
    /// A builder argument is unusable.
    #[error("invalid {what}: {detail}")]
    InvalidArgument {
        /// What was invalid (a setting name, an hba line, ...).
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A file-system or process operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file, directory or binary concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A helper program (`initdb`, `psql`, ...) exited unsuccessfully.
    #[error("{} failed ({status}): {output}", program.display())]
    Command {
        /// The program that failed.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stderr, or stdout and stderr).
        output: String,
    },
    /// `psql` ran but the SQL failed.
    #[error("psql on database `{database}` failed ({status}): {stderr}")]
    Sql {
        /// The database the SQL ran in.
        database: String,
        /// psql's exit status.
        status: ExitStatus,
        /// psql's stderr (the server's error message).
        stderr: String,
    },
    /// The server could not bind its TCP port.
    #[error("postgres could not listen on {HOST}:{port} (address in use); server log {} ends with:\n{log_tail}", log.display())]
    PortInUse {
        /// The port.
        port: u16,
        /// The server log.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server exited or did not become ready in time.
    #[error("{} did not start: {reason}; server log {} ends with:\n{log_tail}", program.display(), log.display())]
    Startup {
        /// The `postgres` binary.
        program: PathBuf,
        /// What happened.
        reason: String,
        /// The server log.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// [`PgCluster::start`] was called while the server runs.
    #[error("postgres is already running (pid {pid})")]
    AlreadyRunning {
        /// The postmaster's pid.
        pid: u32,
    },
}

/// The `pg_hba.conf` method for TCP connections from 127.0.0.1 (and ::1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HostAuth {
    /// No password asked.
    Trust,
    /// Cleartext password (`password`).
    Password,
    /// MD5 challenge; the superuser's stored secret is an md5 hash.
    Md5,
    /// SCRAM-SHA-256 (the default).
    #[default]
    ScramSha256,
}

impl HostAuth {
    /// All methods, for tests that try each.
    pub const ALL: [HostAuth; 4] = [
        HostAuth::Trust,
        HostAuth::Password,
        HostAuth::Md5,
        HostAuth::ScramSha256,
    ];

    /// The method's name as written in `pg_hba.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostAuth::Trust => "trust",
            HostAuth::Password => "password",
            HostAuth::Md5 => "md5",
            HostAuth::ScramSha256 => "scram-sha-256",
        }
    }

    /// The `password_encryption` that makes stored secrets fit this method.
    fn password_encryption(self) -> &'static str {
        match self {
            HostAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

impl fmt::Display for HostAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configures and starts a [`PgCluster`]; get one from [`PgCluster::builder`].
#[derive(Clone)]
pub struct PgClusterBuilder {
    auth: HostAuth,
    password: Option<String>,
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
    ssl: Option<(PathBuf, PathBuf)>,
    ssl_ca: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    startup_timeout: Duration,
}

impl fmt::Debug for PgClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgClusterBuilder")
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("settings", &self.settings)
            .field("hba_lines", &self.hba_lines)
            .field("ssl", &self.ssl)
            .field("ssl_ca", &self.ssl_ca)
            .field("bin_dir", &self.bin_dir)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl Default for PgClusterBuilder {
    fn default() -> Self {
        PgClusterBuilder {
            auth: HostAuth::default(),
            password: None,
            settings: Vec::new(),
            hba_lines: Vec::new(),
            ssl: None,
            ssl_ca: None,
            bin_dir: None,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl PgClusterBuilder {
    /// The `pg_hba.conf` method for TCP connections (default SCRAM-SHA-256).
    pub fn auth(mut self, auth: HostAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The password of the `postgres` superuser (default: 24 random
    /// alphanumerics, see [`PgCluster::superuser_password`]).
    pub fn superuser_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Append `name = 'value'` to `postgresql.conf`, after the defaults
    /// (so it overrides them). Names are checked for shape only; a setting
    /// the server does not know makes startup fail with its message.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Add a `pg_hba.conf` line. Extra lines go after the `local` trust line
    /// and before the default `host` lines, so they take precedence for
    /// TCP connections (e.g. `hostssl all alice 127.0.0.1/32 cert` or
    /// `host all mallory 127.0.0.1/32 reject`).
    pub fn hba_line(mut self, line: impl Into<String>) -> Self {
        self.hba_lines.push(line.into());
        self
    }

    /// Turn on TLS with this certificate (PEM, may include the chain) and
    /// private key. Both are copied into the data directory, owned by the
    /// server's OS user with mode 0600, so they may live anywhere the
    /// caller can read.
    pub fn ssl(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.ssl = Some((cert.into(), key.into()));
        self
    }

    /// Trust client certificates signed by this CA (PEM; copied into the
    /// data directory and set as `ssl_ca_file`). Needs [`Self::ssl`].
    pub fn ssl_client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ssl_ca = Some(ca.into());
        self
    }

    /// Use the server binaries in this directory instead of searching
    /// (see [`find_bin_dir`]).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// How long to wait for the server to accept connections (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Create the cluster and start the server; returns once it accepts
    /// connections and the superuser's password is set.
    pub fn start(self) -> Result<PgCluster, Error> {
        self.validate()?;
        let bin_dir = match &self.bin_dir {
            Some(dir) => {
                check_bin_dir(dir, "PgClusterBuilder::bin_dir")?;
                dir.clone()
            }
            None => find_bin_dir()?,
        };
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(OsUser::lookup(SUPERUSER)?.ok_or(Error::NoServerUser)?)
        } else {
            None
        };

        let base = temp_base(run_as.is_some());
        let root = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir_in(&base)
            .map_err(|e| io_err("create temporary directory in", base, e))?;
        let data_dir = root.path().join("data");
        let socket_dir = root.path().join("sock");
        let log_path = root.path().join("postgres.log");
        fs::create_dir(&socket_dir).map_err(|e| io_err("create directory", &socket_dir, e))?;
        if let Some(user) = &run_as {
            user.chown(root.path())?;
            user.chown(&socket_dir)?;
        }

        let password = self.password.clone().unwrap_or_else(|| {
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(24)
                .map(char::from)
                .collect()
        });

        initdb(&bin_dir, root.path(), &data_dir, run_as.as_ref())?;
        self.write_config(&data_dir, run_as.as_ref())?;

        let mut cluster = PgCluster {
            child: None,
            port: 0,
            bin_dir,
            data_dir,
            socket_dir,
            log_path,
            password,
            auth: self.auth,
            run_as,
            startup_timeout: self.startup_timeout,
            root,
        };

        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = free_port()?;
            match cluster.launch() {
                Ok(()) => break,
                Err(Error::PortInUse { .. }) if attempt < PORT_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }

        let sql = format!(
            "SET password_encryption = {};\nALTER ROLE {} PASSWORD {};\n",
            quote_literal(self.auth.password_encryption()),
            quote_identifier(SUPERUSER),
            quote_literal(&cluster.password),
        );
        cluster.psql("postgres", &sql)?;
        Ok(cluster)
    }

    fn validate(&self) -> Result<(), Error> {
        for (name, value) in &self.settings {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(Error::InvalidArgument {
                    what: "setting name",
                    detail: format!("`{name}` (letters, digits, `_` and `.` only)"),
                });
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(Error::InvalidArgument {
                    what: "setting value",
                    detail: format!("value of `{name}` contains a line break or nul"),
                });
            }
        }
        for line in &self.hba_lines {
            if line.contains(['\n', '\r', '\0']) {
                return Err(Error::InvalidArgument {
                    what: "pg_hba.conf line",
                    detail: format!("{line:?} contains a line break or nul"),
                });
            }
        }
        if let Some(password) = &self.password
            && password.contains('\0')
        {
            return Err(Error::InvalidArgument {
                what: "superuser password",
                detail: "contains a nul character".into(),
            });
        }
        if self.ssl_ca.is_some() && self.ssl.is_none() {
            return Err(Error::InvalidArgument {
                what: "ssl_client_ca",
                detail: "needs ssl(cert, key) as well".into(),
            });
        }
        Ok(())
    }

    /// Append our settings to `postgresql.conf`, write `pg_hba.conf`, copy
    /// TLS files in.
    fn write_config(&self, data_dir: &Path, run_as: Option<&OsUser>) -> Result<(), Error> {
        let mut conf =
            String::from("\n# ---- sluice pg_cluster: throwaway test/demo cluster ----\n");
        let mut put = |name: &str, value: &str| {
            conf.push_str(&format!("{name} = {}\n", quote_literal(value)));
        };
        put("fsync", "off");
        put("synchronous_commit", "off");
        put("full_page_writes", "off");
        put("max_connections", "300");
        put("shared_buffers", "32MB");
        put("logging_collector", "off");
        put("log_destination", "stderr");
        put("log_line_prefix", "%m [%p] %q%u@%d ");
        put("lc_messages", "C");
        put("timezone", "UTC");
        put("log_timezone", "UTC");
        put("password_encryption", self.auth.password_encryption());

        if let Some((cert, key)) = &self.ssl {
            put("ssl", "on");
            put(
                "ssl_cert_file",
                &install_file(cert, data_dir, "sluice-server.crt", run_as)?,
            );
            put(
                "ssl_key_file",
                &install_file(key, data_dir, "sluice-server.key", run_as)?,
            );
            if let Some(ca) = &self.ssl_ca {
                put(
                    "ssl_ca_file",
                    &install_file(ca, data_dir, "sluice-client-ca.crt", run_as)?,
                );
            }
        }
        for (name, value) in &self.settings {
            put(name, value);
        }
        let conf_path = data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| io_err("append to", &conf_path, e))?;

        let method = self.auth.as_str();
        let mut hba = String::from(
            "# written by sluice pg_cluster (first match wins)\n\
             # TYPE  DATABASE  USER  ADDRESS  METHOD\n\
             local   all       all            trust\n",
        );
        for line in &self.hba_lines {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str(&format!("host    all       all   127.0.0.1/32  {method}\n"));
        hba.push_str(&format!("host    all       all   ::1/128       {method}\n"));
        let hba_path = data_dir.join("pg_hba.conf");
        // initdb created the file as the server user; writing keeps its owner.
        fs::write(&hba_path, hba).map_err(|e| io_err("write", &hba_path, e))?;
        Ok(())
    }
}

/// A running (or stopped, restartable) throwaway PostgreSQL cluster.
///
/// Dropping it stops the server and removes its temporary directory.
pub struct PgCluster {
    child: Option<Child>,
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    password: String,
    auth: HostAuth,
    run_as: Option<OsUser>,
    startup_timeout: Duration,
    // Last, so it is removed after `Drop::drop` has stopped the server.
    root: tempfile::TempDir,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl PgCluster {
    /// A builder with the defaults: SCRAM-SHA-256 over TCP, a random
    /// superuser password, binaries found by [`find_bin_dir`].
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    /// The TCP port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP address the server listens on: `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`);
    /// connections through it are trusted.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory (PGDATA).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server binaries in use (also `psql`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's log file (its stderr, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The superuser's role name: `"postgres"`.
    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password (the caller's, or the random default).
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// The `pg_hba.conf` method for TCP connections.
    pub fn auth(&self) -> HostAuth {
        self.auth
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>` (no password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{HOST}:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// The postmaster's pid, if it is running.
    pub fn pid(&mut self) -> Option<u32> {
        self.is_running()
            .then(|| self.child.as_ref().map(Child::id))
            .flatten()
    }

    /// Whether the server process is alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
        }
    }

    /// Run `sql` with the machine's `psql` over the unix socket as the
    /// superuser (`-v ON_ERROR_STOP=1 -X -q -At`, SQL on stdin, so psql
    /// meta-commands work and each statement runs on its own). Returns
    /// stdout without its trailing newlines; on failure the error carries
    /// psql's stderr.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        self.run_psql(database, PsqlInput::Sql(sql))
    }

    /// Like [`Self::psql`] with the SQL read from a file (`psql -f path`).
    pub fn run_sql_file(&self, database: &str, path: impl AsRef<Path>) -> Result<String, Error> {
        self.run_psql(database, PsqlInput::File(path.as_ref()))
    }

    /// `CREATE DATABASE "<name>"` (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};", quote_identifier(name)),
        )
        .map(drop)
    }

    /// Start the server again on the same port and data directory after
    /// [`Self::stop`] or [`Self::stop_immediate`] (tests use the pair to
    /// simulate "upstream down" and back). Fails with
    /// [`Error::PortInUse`] if something else took the port meanwhile.
    pub fn start(&mut self) -> Result<(), Error> {
        if let Some(pid) = self.pid() {
            return Err(Error::AlreadyRunning { pid });
        }
        self.launch()
    }

    /// Fast shutdown (SIGINT: sessions are disconnected, a checkpoint is
    /// written), escalating to SIGQUIT and then SIGKILL if the server does
    /// not exit within its deadline. Keeps the data; a no-op when stopped.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.shutdown_with(libc::SIGINT, FAST_STOP_TIMEOUT)
    }

    /// Immediate shutdown (SIGQUIT): every backend dies at once, no
    /// checkpoint — an upstream crash; the next start runs crash recovery.
    pub fn stop_immediate(&mut self) -> Result<(), Error> {
        self.shutdown_with(libc::SIGQUIT, IMMEDIATE_STOP_TIMEOUT)
    }

    /// [`Self::stop`] then [`Self::start`]: same port, same data.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }

    /// Stop the server and remove the temporary directory, reporting
    /// errors (dropping does the same but ignores them).
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()?;
        let root = self.root.path().to_path_buf();
        // Dropping `self` afterwards finds nothing left to stop or remove.
        fs::remove_dir_all(&root).map_err(|e| io_err("remove", root, e))
    }

    fn run_psql(&self, database: &str, input: PsqlInput<'_>) -> Result<String, Error> {
        let program = self.psql_program();
        let conninfo = format!(
            "host={} port={} user={} dbname={}",
            conninfo_value(&self.socket_dir.to_string_lossy()),
            self.port,
            SUPERUSER,
            conninfo_value(database),
        );
        let mut cmd = Command::new(&program);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&conninfo)
            .current_dir(self.root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in LIBPQ_ENV {
            cmd.env_remove(var);
        }
        let output = match input {
            PsqlInput::File(path) => {
                cmd.arg("-f").arg(path).stdin(Stdio::null());
                cmd.output().map_err(|e| io_err("run", &program, e))?
            }
            PsqlInput::Sql(sql) => {
                cmd.args(["-f", "-"]).stdin(Stdio::piped());
                let mut child = cmd.spawn().map_err(|e| io_err("run", &program, e))?;
                let mut stdin = child.stdin.take().expect("stdin is piped");
                // Write from a thread so a large result cannot deadlock
                // against a large script.
                let sql = sql.to_owned();
                let writer = thread::spawn(move || stdin.write_all(sql.as_bytes()));
                let output = child
                    .wait_with_output()
                    .map_err(|e| io_err("run", &program, e))?;
                // A broken pipe here means psql stopped reading (it failed);
                // its exit status and stderr say why.
                let _ = writer.join();
                output
            }
        };
        if !output.status.success() {
            return Err(Error::Sql {
                database: database.to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr)
                    .trim_end()
                    .to_owned(),
            });
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout.truncate(stdout.trim_end_matches('\n').len());
        Ok(stdout)
    }

    fn psql_program(&self) -> PathBuf {
        let in_bin_dir = self.bin_dir.join("psql");
        if in_bin_dir.is_file() {
            in_bin_dir
        } else {
            PathBuf::from("psql")
        }
    }

    /// Spawn `postgres` on `self.port` and wait until it accepts
    /// connections. On any failure the child is killed and reaped.
    fn launch(&mut self) -> Result<(), Error> {
        let program = self.bin_dir.join("postgres");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| io_err("open", &self.log_path, e))?;
        let log_start = log
            .metadata()
            .map_err(|e| io_err("stat", &self.log_path, e))?
            .len();
        let log_err = log
            .try_clone()
            .map_err(|e| io_err("open", &self.log_path, e))?;
        // A stale pid file would be mistaken for readiness below.
        let _ = fs::remove_file(self.data_dir.join("postmaster.pid"));

        let mut cmd = Command::new(&program);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .current_dir(self.root.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(user) = &self.run_as {
            user.apply(&mut cmd);
        }
        let child = cmd.spawn().map_err(|e| io_err("run", &program, e))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + self.startup_timeout;
        let failure = loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                Some(Ok(None)) => None,
                Some(Err(e)) => break format!("waiting for pid {pid} failed: {e}"),
                None => unreachable!("child was just stored"),
            };
            if let Some(status) = exited {
                self.child = None;
                let tail = log_tail(&self.log_path, log_start);
                if tail.contains("could not bind") || tail.contains("Address already in use") {
                    return Err(Error::PortInUse {
                        port: self.port,
                        log: self.log_path.clone(),
                        log_tail: tail,
                    });
                }
                break format!("it exited ({status})");
            }
            if postmaster_ready(&self.data_dir, pid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!(
                    "not accepting connections after {:?} (pid {pid})",
                    self.startup_timeout
                );
            }
            thread::sleep(POLL);
        };
        // Don't leak the server on the error path.
        let _ = self.shutdown_with(libc::SIGQUIT, IMMEDIATE_STOP_TIMEOUT);
        Err(Error::Startup {
            program,
            reason: failure,
            log: self.log_path.clone(),
            log_tail: log_tail(&self.log_path, log_start),
        })
    }

    /// Send `signal`, wait up to `timeout`, then escalate (SIGQUIT, then
    /// SIGKILL) until the postmaster has exited and been reaped.
    fn shutdown_with(&mut self, signal: libc::c_int, timeout: Duration) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as libc::pid_t;
        let program = self.bin_dir.join("postgres");
        let wait = |child: &mut Child, timeout: Duration| -> Result<bool, Error> {
            let deadline = Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return Ok(true),
                    Ok(None) if Instant::now() >= deadline => return Ok(false),
                    Ok(None) => thread::sleep(POLL),
                    Err(e) => return Err(io_err("wait for", &program, e)),
                }
            }
        };
        let mut steps = vec![(signal, timeout)];
        if signal != libc::SIGQUIT {
            steps.push((libc::SIGQUIT, IMMEDIATE_STOP_TIMEOUT));
        }
        for (sig, timeout) in steps {
            // The child is not reaped yet, so the pid cannot have been reused.
            unsafe { libc::kill(pid, sig) };
            if wait(&mut child, timeout)? {
                return Ok(());
            }
        }
        child.kill().map_err(|e| io_err("kill", &program, e))?;
        child.wait().map_err(|e| io_err("wait for", &program, e))?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        // `root` (the TempDir) is dropped after this and removes everything.
    }
}

enum PsqlInput<'a> {
    Sql(&'a str),
    File(&'a Path),
}

/// Find the directory holding `initdb` and `postgres`:
/// `$SLUICE_PG_BINDIR` if set (it must hold them), else `pg_config
/// --bindir` if it holds them, else the highest version under
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    let env = std::env::var_os(BINDIR_ENV).filter(|v| !v.is_empty());
    find_bin_dir_in(
        env,
        OsStr::new("pg_config"),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bin_dir_in(
    env: Option<OsString>,
    pg_config: &OsStr,
    lib_root: &Path,
) -> Result<PathBuf, Error> {
    if let Some(dir) = env {
        let dir = PathBuf::from(dir);
        check_bin_dir(&dir, BINDIR_ENV)?;
        return Ok(dir);
    }
    let mut searched = Vec::new();

    match Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if missing_binary(&dir).is_none() {
                return Ok(dir);
            }
            searched.push(format!(
                "{} (from `{} --bindir`)",
                dir.display(),
                pg_config.to_string_lossy()
            ));
        }
        _ => searched.push(format!(
            "`{} --bindir` (not runnable)",
            pg_config.to_string_lossy()
        )),
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: Option<Vec<u32>> = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect();
            Some((version?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| missing_binary(bin).is_none())
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    searched.push(format!("{}/*/bin", lib_root.display()));
    Err(Error::BinariesNotFound {
        searched: searched.join(", "),
    })
}

fn check_bin_dir(dir: &Path, source_of_dir: &'static str) -> Result<(), Error> {
    match missing_binary(dir) {
        None => Ok(()),
        Some(missing) => Err(Error::BadBinDir {
            dir: dir.to_path_buf(),
            missing,
            source_of_dir,
        }),
    }
}

/// The first server binary `dir` lacks (as an executable file), if any.
fn missing_binary(dir: &Path) -> Option<&'static str> {
    ["initdb", "postgres"].into_iter().find(|name| {
        !fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn initdb(
    bin_dir: &Path,
    cwd: &Path,
    data_dir: &Path,
    run_as: Option<&OsUser>,
) -> Result<(), Error> {
    let program = bin_dir.join("initdb");
    let mut cmd = Command::new(&program);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
        // Everything starts trusted; start() writes the real pg_hba.conf
        // (and sets the password once the server is up).
        .args(["-A", "trust"])
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        user.apply(&mut cmd);
    }
    let out = cmd.output().map_err(|e| io_err("run", &program, e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(Error::Command {
        program,
        status: out.status,
        output: output.trim_end().to_owned(),
    })
}

/// True once `postmaster.pid` names `pid` and says `ready` (PostgreSQL 10+
/// writes the status on line 8 once it accepts connections).
fn postmaster_ready(data_dir: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let mut lines = text.lines();
    lines.next().map(str::trim) == Some(pid.to_string().as_str())
        && lines.nth(6).map(str::trim) == Some("ready")
}

/// Copy `src` into `data_dir/name`, mode 0600, owned by the server user.
fn install_file(
    src: &Path,
    data_dir: &Path,
    name: &str,
    run_as: Option<&OsUser>,
) -> Result<String, Error> {
    let dest = data_dir.join(name);
    fs::copy(src, &dest).map_err(|e| io_err("copy", src, e))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("chmod", &dest, e))?;
    if let Some(user) = run_as {
        user.chown(&dest)?;
    }
    Ok(dest.to_string_lossy().into_owned())
}

/// The last lines the server wrote to its log since `from` (a byte offset).
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // Enough bytes for the quoted lines; the log of one start is small.
        let start = from.max(len.saturating_sub(64 * 1024));
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

/// Pick a port the kernel considers free right now.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io_err("bind", "127.0.0.1:0", e))
}

/// Where to create the temporary directory. The unix socket path
/// (`<dir>/sock/.s.PGSQL.<port>`) must fit in `sun_path` (108 bytes), and
/// when the server runs as another OS user every ancestor must be
/// searchable by it; fall back to `/tmp` otherwise.
fn temp_base(other_user: bool) -> PathBuf {
    let base = std::env::temp_dir();
    let short = base.as_os_str().len() <= 60;
    let searchable = !other_user
        || base.ancestors().all(|dir| {
            fs::metadata(dir)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
        });
    if short && searchable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// The OS user the server runs as when the current process is root.
#[derive(Clone, Debug)]
struct OsUser {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl OsUser {
    fn lookup(name: &str) -> Result<Option<OsUser>, Error> {
        let cname = CString::new(name).expect("user name has no nul");
        let mut buf = vec![0 as libc::c_char; 4096];
        loop {
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = unsafe {
                libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                )
            };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 {
                return Err(io_err(
                    "look up os user",
                    name,
                    io::Error::from_raw_os_error(rc),
                ));
            }
            if result.is_null() {
                return Ok(None);
            }
            return Ok(Some(OsUser {
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            }));
        }
    }

    /// Run the command as this user. `std` drops supplementary groups
    /// (`setgroups(0, NULL)`) before `setuid` when a uid is set and no
    /// groups are, so the child keeps none of root's.
    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    fn chown(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| io_err("chown", path, e))
    }
}

fn io_err(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
    Error::Io {
        action,
        path: path.into(),
        source,
    }
}

/// A SQL string literal (standard_conforming_strings is on by default).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A libpq conninfo value, quoted.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn tcp_accepts(port: u16) -> bool {
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))
            .is_ok()
    }

    /// psql over TCP with a password, as a client of the `auth` method would.
    fn tcp_psql(pg: &PgCluster, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let conninfo = format!(
            "host={HOST} port={} user={user} dbname=postgres sslmode=disable connect_timeout=10",
            pg.port()
        );
        let mut cmd = Command::new(pg.psql_program());
        for var in LIBPQ_ENV {
            cmd.env_remove(var);
        }
        let out = cmd
            .args(["-X", "-q", "-At", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo)
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn lifecycle_query_restart_stop_start_drop() {
        let mut pg = PgCluster::builder()
            .superuser_password("it's a \"secret\"")
            .start()
            .expect("start cluster");
        let port = pg.port();
        let root = pg.data_dir().parent().unwrap().to_path_buf();
        assert!(root.is_dir());
        assert!(pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
        assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
        assert_eq!(
            pg.url("post gres"),
            format!("postgres://postgres@127.0.0.1:{port}/post%20gres")
        );
        assert!(tcp_accepts(port));

        // Settings from our block are in force.
        assert_eq!(pg.psql("postgres", "SHOW max_connections").unwrap(), "300");
        assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "off");

        // Runs as the postgres OS user without root's groups.
        if unsafe { libc::geteuid() } == 0 {
            let pid = pg.pid().unwrap();
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let user = OsUser::lookup(SUPERUSER).unwrap().unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            assert!(
                field("Uid:").iter().all(|u| *u == user.uid.to_string()),
                "{status}"
            );
            assert!(
                field("Gid:").iter().all(|g| *g == user.gid.to_string()),
                "{status}"
            );
            assert!(field("Groups:").is_empty(), "{status}");
        }

        // An SQL error carries the server's message.
        let err = pg
            .psql("postgres", "SELECT * FROM no_such_table")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("relation \"no_such_table\" does not exist"),
            "{err}"
        );

        // Restart keeps port and data.
        pg.psql(
            "postgres",
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);",
        )
        .unwrap();
        let old_pid = pg.pid().unwrap();
        pg.restart().expect("restart");
        assert_eq!(pg.port(), port);
        assert_ne!(pg.pid().unwrap(), old_pid);
        assert_eq!(pg.psql("postgres", "SELECT x FROM kept").unwrap(), "42");

        // Upstream down, then back.
        pg.stop().unwrap();
        assert!(!pg.is_running());
        assert!(!tcp_accepts(port));
        assert!(pg.psql("postgres", "SELECT 1").is_err());
        pg.stop().unwrap(); // idempotent
        pg.start().unwrap();
        assert!(matches!(pg.start(), Err(Error::AlreadyRunning { .. })));
        assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");

        // Crash and recover.
        pg.stop_immediate().unwrap();
        pg.start().unwrap();
        assert_eq!(
            pg.psql("postgres", "SELECT count(*) FROM kept").unwrap(),
            "1"
        );
        assert!(
            fs::read_to_string(pg.log_path())
                .unwrap()
                .contains("database system was interrupted")
        );

        drop(pg);
        assert!(
            !root.exists(),
            "temporary directory {} left behind",
            root.display()
        );
        assert!(!tcp_accepts(port), "port {port} still accepts connections");
    }

    #[test]
    fn each_host_auth_method_logs_in_over_tcp() {
        for auth in HostAuth::ALL {
            let pg = PgCluster::builder()
                .auth(auth)
                .superuser_password("correct horse")
                .setting("log_connections", "on")
                .setting("work_mem", "8MB")
                .hba_line("host all mallory 127.0.0.1/32 reject")
                .start()
                .unwrap_or_else(|e| panic!("start with {auth}: {e}"));
            assert_eq!(pg.psql("postgres", "SHOW work_mem").unwrap(), "8MB");
            assert_eq!(
                pg.psql(
                    "postgres",
                    "SELECT auth_method FROM pg_hba_file_rules \
                     WHERE type = 'host' AND 'all' = ANY(user_name) AND address = '127.0.0.1'"
                )
                .unwrap(),
                auth.as_str()
            );
            let stored = pg
                .psql(
                    "postgres",
                    "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'postgres'",
                )
                .unwrap();
            match auth {
                HostAuth::Md5 => assert!(stored.starts_with("md5"), "{auth}: {stored}"),
                _ => assert_eq!(stored, "SCRAM-SHA-256", "{auth}"),
            }

            assert_eq!(
                tcp_psql(&pg, "postgres", "correct horse", "SELECT current_user").as_deref(),
                Ok("postgres"),
                "{auth}"
            );
            let wrong = tcp_psql(&pg, "postgres", "wrong", "SELECT 1");
            if auth == HostAuth::Trust {
                assert!(wrong.is_ok(), "{auth}: {wrong:?}");
            } else {
                let msg = wrong.expect_err("wrong password accepted");
                assert!(
                    msg.contains("password authentication failed"),
                    "{auth}: {msg}"
                );
                let log = fs::read_to_string(pg.log_path()).unwrap();
                assert!(
                    log.contains(&format!("method={}", auth.as_str())),
                    "{auth}: no authenticated connection with this method in log:\n{log}"
                );
            }
            pg.psql("postgres", "CREATE ROLE mallory LOGIN PASSWORD 'x'")
                .unwrap();
            let msg = tcp_psql(&pg, "mallory", "x", "SELECT 1").unwrap_err();
            assert!(msg.contains("rejects connection"), "{auth}: {msg}");
        }
    }

    #[test]
    fn port_taken_on_restart_is_reported_and_nothing_leaks() {
        let mut pg = PgCluster::builder().start().unwrap();
        let port = pg.port();
        pg.stop().unwrap();
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let err = pg.start().unwrap_err();
        assert!(
            matches!(err, Error::PortInUse { port: p, .. } if p == port),
            "{err}"
        );
        assert!(!pg.is_running());
        drop(squatter);
        pg.start().unwrap();
        assert_eq!(pg.psql("postgres", "SELECT 2").unwrap(), "2");
    }

    #[test]
    fn bad_setting_fails_startup_with_log_tail() {
        let err = PgCluster::builder()
            .setting("no_such_setting_at_all", "1")
            .start()
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Startup { .. }), "{msg}");
        assert!(msg.contains("no_such_setting_at_all"), "{msg}");

        let err = PgCluster::builder()
            .setting("bad name", "1")
            .start()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }

    #[test]
    fn startup_timeout_kills_the_server() {
        // A `postgres` that never becomes ready, beside the real initdb and
        // psql, so the timeout is certain to be what ends the start.
        let real = find_bin_dir().unwrap();
        let fake = tempfile::tempdir().unwrap();
        fs::set_permissions(fake.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for tool in ["initdb", "psql"] {
            std::os::unix::fs::symlink(real.join(tool), fake.path().join(tool)).unwrap();
        }
        let script = fake.path().join("postgres");
        fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let err = PgCluster::builder()
            .bin_dir(fake.path())
            .startup_timeout(Duration::from_millis(300))
            .start()
            .unwrap_err();
        let Error::Startup { reason, log, .. } = &err else {
            panic!("{err}");
        };
        assert!(reason.contains("not accepting connections"), "{err}");
        // The server process itself was stopped and reaped.
        let pid = reason
            .rsplit("pid ")
            .next()
            .and_then(|rest| rest.trim_end_matches(')').parse::<u32>().ok())
            .expect("the reason names the pid");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} leaked"
        );
        let root = log.parent().unwrap().to_string_lossy().into_owned();
        assert!(!Path::new(&root).exists());
        // No process still runs on that directory.
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline);
                assert!(!cmdline.contains(&root), "leaked: {cmdline}");
            }
        }
    }

    #[test]
    fn binaries_not_found_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err =
            find_bin_dir_in(None, OsStr::new("/nonexistent/pg_config"), empty.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::BinariesNotFound { .. }), "{msg}");
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("client-only"), "{msg}");

        let err = find_bin_dir_in(
            Some(empty.path().into()),
            OsStr::new("pg_config"),
            empty.path(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadBinDir {
                    missing: "initdb",
                    ..
                }
            ),
            "{err}"
        );

        // Versions sort numerically: 9.6 < 15 < 100 (only complete dirs count).
        for (version, complete) in [
            ("9.6", true),
            ("15", true),
            ("100", false),
            ("notaversion", true),
        ] {
            let bin = empty.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            let names: &[&str] = if complete {
                &["initdb", "postgres"]
            } else {
                &["initdb"]
            };
            for name in names {
                fs::write(bin.join(name), "").unwrap();
                fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let found =
            find_bin_dir_in(None, OsStr::new("/nonexistent/pg_config"), empty.path()).unwrap();
        assert_eq!(found, empty.path().join("15").join("bin"));
    }

    #[test]
    fn finds_machine_binaries() {
        let dir = find_bin_dir().expect("postgresql server binaries on this machine");
        assert!(missing_binary(&dir).is_none());
    }
}
