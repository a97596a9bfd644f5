//! The end-to-end test harness: a real PostgreSQL, a real sluice, real
//! clients.
//!
//! - One throwaway cluster per test process ([`shared_cluster`]), started on
//!   first use from the machine's binaries and stopped when the process
//!   exits. It holds a seeded `payments` template; every test gets its own
//!   copy of it ([`TestEnv::start`]), so tests run in parallel without
//!   seeing each other's writes.
//! - Tests that need a cluster of their own (an authentication method, TLS,
//!   a server that goes down) start one with [`sluice::pg_cluster`].
//! - sluice runs in-process on port 0 ([`Gateway`]), configured from TOML
//!   text like an operator's.
//! - [`raw`] speaks the wire protocol byte by byte, for the malformed input
//!   no real driver sends.

pub mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sluice::config::{Config, Overrides, Settings};
use sluice::gateway::{Gateway, Running};
use sluice::pg_cluster::{HostAuth, PgCluster, PgClusterBuilder};

/// The seed data of the quickstart, used by every test.
pub const SEED_SQL: &str = include_str!("../../examples/quickstart/seed.sql");
/// The role sluice logs in upstream as.
pub const SERVICE_ROLE: &str = "sluice_gateway";
/// Its password (test-only).
pub const SERVICE_PASSWORD: &str = "service-test-password";
/// Principals every test gateway knows: (name, groups, token).
pub const PRINCIPALS: &[(&str, &str, &str)] = &[
    ("agent", "agents", "agent-demo-token"),
    ("analyst", "analysts", "analyst-demo-token"),
    ("admin", "admins", "admin-demo-token"),
];
const TEMPLATE_DB: &str = "payments_template";

/// The process-wide cluster.
pub struct SharedCluster {
    cluster: Mutex<Option<PgCluster>>,
    pub port: u16,
    pub superuser_password: String,
    pub socket_dir: std::path::PathBuf,
}

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_shared_cluster() {
    if let Some(shared) = CLUSTER.get()
        && let Ok(mut slot) = shared.cluster.lock()
        && let Some(cluster) = slot.take()
    {
        let _ = cluster.shutdown();
    }
}

/// The cluster shared by this test process, started and seeded on first
/// use. It stops when the process exits, whether tests passed or not.
pub fn shared_cluster() -> &'static SharedCluster {
    CLUSTER.get_or_init(|| {
        let cluster = start_seeded_cluster(|builder| builder.auth(HostAuth::ScramSha256))
            .expect("start the shared test cluster");
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe {
            libc::atexit(stop_shared_cluster);
        }
        SharedCluster {
            port: cluster.port(),
            superuser_password: cluster.superuser_password().to_owned(),
            socket_dir: cluster.socket_dir().to_owned(),
            cluster: Mutex::new(Some(cluster)),
        }
    })
}

impl SharedCluster {
    /// Runs SQL as the superuser over the socket.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let slot = self.cluster.lock().expect("cluster lock");
        slot.as_ref()
            .expect("cluster running")
            .psql(database, sql)
            .unwrap_or_else(|e| panic!("psql failed: {e}"))
    }
}

/// Starts a cluster of a test's own (`configure` picks the authentication
/// method, TLS, settings) with the seeded `payments_template` database and
/// the service role.
pub fn start_seeded_cluster(
    configure: impl FnOnce(PgClusterBuilder) -> PgClusterBuilder,
) -> Result<PgCluster, sluice::pg_cluster::Error> {
    let cluster = configure(PgCluster::builder()).start()?;
    seed(&cluster, TEMPLATE_DB)?;
    Ok(cluster)
}

/// The seeded database in clusters from [`start_seeded_cluster`].
pub const SEEDED_DB: &str = TEMPLATE_DB;

/// A test certificate authority and a server certificate it signed for
/// `localhost` and 127.0.0.1, as PEM files in a temporary directory.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let server = server_params.signed_by(&server_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TestCerts {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server.key", server_key.serialize_pem()),
            dir,
        }
    }
}

/// Creates `database` with the quickstart's data and grants the service
/// role what the tests need.
pub fn seed(cluster: &PgCluster, database: &str) -> Result<(), sluice::pg_cluster::Error> {
    cluster.create_database(database)?;
    let seed_file = cluster.log_path().with_file_name("seed.sql");
    std::fs::write(&seed_file, SEED_SQL).expect("write the seed file");
    cluster.run_sql_file(database, &seed_file)?;
    cluster.psql(
        database,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                 CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{SERVICE_PASSWORD}';
               END IF;
             END $$;
             GRANT ALL ON SCHEMA public TO {SERVICE_ROLE};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {SERVICE_ROLE};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {SERVICE_ROLE};
             GRANT CREATE, TEMPORARY ON DATABASE \"{database}\" TO {SERVICE_ROLE};"
        ),
    )?;
    Ok(())
}

/// The config text every test gateway starts from: an operator's file with
/// the three principals. `extra` is appended (more tables or keys).
pub fn config_text(upstream_port: u16, database: &str, extra: &str) -> String {
    let mut text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n\
         [upstream]\nurl = \"postgres://{SERVICE_ROLE}@127.0.0.1:{upstream_port}/{database}\"\n\
         password_env = \"SLUICE_TEST_UPSTREAM_PASSWORD\"\n\n"
    );
    for (name, group, token) in PRINCIPALS {
        // Few iterations: these are test tokens, and logins are many.
        let verifier = sluice::auth::scram::make_verifier(token, 64);
        text.push_str(&format!(
            "[[principals]]\nname = \"{name}\"\ngroups = [\"{group}\"]\ntoken_verifier = \"{verifier}\"\n\n"
        ));
    }
    text.push_str(extra);
    text
}

/// Resolves config text as `sluice serve` would, with the service password
/// in the environment variable it names.
pub fn settings_from(text: &str) -> Settings {
    Config::from_toml(text, Path::new("test.toml"))
        .expect("test config parses")
        .resolve(Path::new("."), &Overrides::default(), &|name| {
            (name == "SLUICE_TEST_UPSTREAM_PASSWORD").then(|| SERVICE_PASSWORD.to_owned())
        })
        .expect("test config resolves")
}

/// Resolves a config file as `sluice serve -c FILE` would (relative paths
/// from its directory), with the test service password.
pub fn settings_from_file(path: &Path) -> Result<Settings, sluice::config::Error> {
    Config::load(path)?.resolve(
        path.parent().expect("a config file has a directory"),
        &Overrides::default(),
        &|name| (name == "SLUICE_TEST_UPSTREAM_PASSWORD").then(|| SERVICE_PASSWORD.to_owned()),
    )
}

/// A test's own database in the shared cluster, and a sluice in front of it.
pub struct TestEnv {
    pub database: String,
    pub gateway: Running,
    pub cluster: &'static SharedCluster,
    /// The config file the gateway was started from (in a directory of its
    /// own, removed with the env), for tests that edit and reload it.
    pub config_path: std::path::PathBuf,
    _config_dir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh copy of the seeded database and a gateway with the default
    /// test config.
    pub async fn start() -> TestEnv {
        TestEnv::start_with(|_| {}).await
    }

    /// Like [`TestEnv::start`], letting the test change the settings.
    pub async fn start_with(customize: impl FnOnce(&mut Settings)) -> TestEnv {
        TestEnv::start_configured("", false, customize)
            .await
            .expect("the test gateway starts")
    }

    /// A gateway whose config file has `extra` appended (`[[plugins]]`
    /// tables, say); with `watch`, it reloads its plugins when the file or
    /// what it names changes. Fails as `sluice serve` would on a config or
    /// plugin it cannot load.
    pub async fn start_with_config(extra: &str, watch: bool) -> Result<TestEnv, String> {
        TestEnv::start_configured(extra, watch, |_| {}).await
    }

    /// [`TestEnv::start_with_config`], with the settings read from it
    /// changed by `customize` before the gateway starts.
    pub async fn start_with_config_and(
        extra: &str,
        customize: impl FnOnce(&mut Settings),
    ) -> Result<TestEnv, String> {
        TestEnv::start_configured(extra, false, customize).await
    }

    async fn start_configured(
        extra: &str,
        watch: bool,
        customize: impl FnOnce(&mut Settings),
    ) -> Result<TestEnv, String> {
        let cluster = tokio::task::spawn_blocking(shared_cluster)
            .await
            .expect("cluster start");
        let database = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        {
            let database = database.clone();
            tokio::task::spawn_blocking(move || {
                cluster.psql(
                    "postgres",
                    &format!("CREATE DATABASE {database} TEMPLATE {TEMPLATE_DB};"),
                )
            })
            .await
            .expect("create database");
        }
        let config_dir = tempfile::tempdir().expect("a config directory");
        let config_path = config_dir.path().join("sluice.toml");
        std::fs::write(&config_path, config_text(cluster.port, &database, extra))
            .expect("write the config");
        let mut settings = settings_from_file(&config_path).map_err(|e| e.to_string())?;
        customize(&mut settings);
        let mut gateway = Gateway::bind(settings).await.map_err(|e| e.to_string())?;
        if watch {
            gateway = gateway.watch_config(&config_path);
        }
        Ok(TestEnv {
            database,
            gateway: gateway.spawn(),
            cluster,
            config_path,
            _config_dir: config_dir,
        })
    }

    /// Rewrites the config file with `extra` appended to the base config.
    pub fn rewrite_config(&self, extra: &str) {
        let text = config_text(self.cluster.port, &self.database, extra);
        // Write then rename, as an editor or a deploy tool does, so a
        // reader never sees half a file.
        let temp = self.config_path.with_extension("toml.new");
        std::fs::write(&temp, text).expect("write the config");
        std::fs::rename(&temp, &self.config_path).expect("replace the config");
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    /// A tokio-postgres config for `user` through sluice.
    pub fn config(&self, user: &str) -> tokio_postgres::Config {
        client_config(self.addr(), &self.database, user)
    }

    /// Connects as `user` through sluice.
    pub async fn connect(&self, user: &str) -> tokio_postgres::Client {
        connect(&self.config(user))
            .await
            .expect("connect through sluice")
    }

    /// Connects as `user` through sluice and hands over what the server sends
    /// unasked (notices, notifications) as it arrives.
    pub async fn connect_with_async_messages(
        &self,
        user: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    ) {
        use futures_util::StreamExt;
        let (client, mut connection) = self
            .config(user)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect through sluice");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                let _ = tx.send(message);
            }
        });
        (client, rx)
    }

    /// Connects straight to PostgreSQL as the superuser, bypassing sluice.
    pub async fn connect_direct(&self) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.cluster.port)
            .user("postgres")
            .password(self.cluster.superuser_password.as_str())
            .dbname(&self.database);
        connect(&config).await.expect("connect directly")
    }

    /// A libpq connection string for `user` through sluice (psql, pgbench,
    /// psycopg). The token goes in PGPASSWORD, not here.
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user={user} sslmode=disable",
            self.addr().port(),
            self.database
        )
    }
}

/// A tokio-postgres config for `user` (with its demo token) through the
/// gateway at `addr`.
pub fn client_config(addr: SocketAddr, database: &str, user: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(addr.port())
        .user(user)
        .password(token_of(user))
        .dbname(database)
        .connect_timeout(Duration::from_secs(30));
    config
}

/// The demo token of a principal; unknown names get a token nothing
/// accepts.
pub fn token_of(user: &str) -> &'static str {
    PRINCIPALS
        .iter()
        .find(|(name, _, _)| *name == user)
        .map(|(_, _, token)| *token)
        .unwrap_or("no-such-token")
}

/// Connects and drives the connection in the background.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with `config` over a connection that starts with `header`, as
/// a load balancer speaking the PROXY protocol connects, and drives it in
/// the background.
pub async fn connect_behind_balancer(
    addr: SocketAddr,
    header: &[u8],
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to sluice");
    stream.write_all(header).await.expect("send the header");
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// [`connect_behind_balancer`] over TLS: after the header, an SSLRequest
/// and a handshake trusting `certificate` for `localhost`, as a client
/// behind a TCP balancer negotiates TLS with sluice itself.
pub async fn connect_behind_balancer_tls(
    addr: SocketAddr,
    header: &[u8],
    config: &tokio_postgres::Config,
    certificate: rustls::pki_types::CertificateDer<'static>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to sluice");
    stream.write_all(header).await.expect("send the header");
    // SSLRequest: length 8, code 80877103.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("ask for TLS");
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(answer[0], b'S', "sluice agrees to TLS");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).expect("a usable certificate");
    let tls_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config))
        .connect(server, stream)
        .await
        .expect("the TLS handshake");
    // TLS is already up: the driver sees a plain stream.
    let (client, connection) = config.connect_raw(tls, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// An error's SQLSTATE (`none` when it is not a database error) and its
/// message.
pub fn code_and_message(error: &tokio_postgres::Error) -> (String, String) {
    let code = sqlstate(error).unwrap_or("none").to_owned();
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| error.to_string());
    (code, message)
}

/// The SQLSTATE of an error, if it came from the server (or sluice).
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|c| c.code())
}

/// Waits for `condition` to hold, polling, up to `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a program with PGPASSWORD set, returns (success, stdout, stderr).
pub async fn run_with_password(
    program: &str,
    args: &[&str],
    password: &str,
    stdin: Option<&str>,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("PGPASSWORD", password)
        .env_remove("PGSSLMODE")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut child_stdin = child.stdin.take().expect("stdin piped");
    if let Some(input) = stdin {
        child_stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
    }
    drop(child_stdin);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within 120 s"))
        .expect("wait for child");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The directory with pgbench and the server binaries.
pub fn pg_bin(program: &str) -> String {
    sluice::pg_cluster::find_bin_dir()
        .map(|dir| dir.join(program).to_string_lossy().into_owned())
        .unwrap_or_else(|_| program.to_owned())
}

/// pgbench as `admin`: `pgbench -i` through the gateway, then a short run
/// in each query mode (`script` adds options such as `-S`), each with no
/// failed transaction.
pub async fn pgbench_init_and_every_query_mode(env: &TestEnv, script: &[&str]) {
    let pgbench = pg_bin("pgbench");
    // pgbench takes the database as its last argument; the rest from env.
    let port = env.addr().port().to_string();
    let common = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "admin"];
    let mut init: Vec<&str> = common.to_vec();
    init.extend(["-i", "-s", "1", "-q", env.database.as_str()]);
    let (ok, _, stderr) = run_with_password(&pgbench, &init, token_of("admin"), None).await;
    assert!(ok, "pgbench -i through sluice failed: {stderr}");

    for mode in ["simple", "extended", "prepared"] {
        let mut run: Vec<&str> = common.to_vec();
        run.extend(["-M", mode, "-c", "4", "-j", "2", "-t", "200", "-n"]);
        run.extend(script);
        run.push(env.database.as_str());
        let (ok, stdout, stderr) = run_with_password(&pgbench, &run, token_of("admin"), None).await;
        assert!(ok, "pgbench -M {mode}: {stderr}");
        assert!(
            stdout.contains("number of transactions actually processed: 800/800"),
            "-M {mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "-M {mode}: {stdout}"
        );
    }
}

/// A plain HTTP/1.1 GET (or any method) against the admin port: status and
/// body. Written by hand so the test reads exactly what goes over the wire.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin port");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the admin port answers in time")
        .unwrap();
    let response = String::from_utf8(response).expect("a text response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// Runs a `COPY ... TO STDOUT` through `client` (in the extended
/// protocol, as tokio-postgres does) and returns its data.
pub async fn copy_out(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<u8>, tokio_postgres::Error> {
    use futures_util::StreamExt;
    let stream = client.copy_out(sql).await?;
    let mut stream = std::pin::pin!(stream);
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}
