//! sluice's own connection to PostgreSQL: every authentication method,
//! TLS modes, and a server that is down or restarts.

use std::path::Path;
use std::time::Duration;

use sluice::config::{Config, Overrides};
use sluice::gateway::{Gateway, Running};
use sluice::pg_cluster::{HostAuth, PgCluster};
use sluice_tests::{
    PRINCIPALS, SEEDED_DB, SERVICE_PASSWORD, TestCerts, config_text, connect, settings_from,
    sqlstate, start_seeded_cluster,
};

async fn cluster(
    configure: impl FnOnce(sluice::pg_cluster::PgClusterBuilder) -> sluice::pg_cluster::PgClusterBuilder
    + Send
    + 'static,
) -> PgCluster {
    tokio::task::spawn_blocking(move || start_seeded_cluster(configure))
        .await
        .unwrap()
        .expect("start a cluster")
}

async fn gateway(config: &str) -> Running {
    Gateway::bind(settings_from(config)).await.unwrap().spawn()
}

fn client_config(gateway: &Running) -> tokio_postgres::Config {
    sluice_tests::client_config(gateway.addr, SEEDED_DB, PRINCIPALS[0].0)
}

async fn select_one(gateway: &Running) -> Result<i32, tokio_postgres::Error> {
    let client = connect(&client_config(gateway)).await?;
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

/// `config` with `[upstream] auth_methods` set to `methods`.
fn allowing(config: &str, methods: &[&str]) -> String {
    let list: Vec<String> = methods.iter().map(|m| format!("\"{m}\"")).collect();
    let password_line = "password_env = \"SLUICE_TEST_UPSTREAM_PASSWORD\"\n";
    assert!(config.contains(password_line));
    config.replacen(
        password_line,
        &format!("{password_line}auth_methods = [{}]\n", list.join(", ")),
        1,
    )
}

/// sluice logs in upstream with each method PostgreSQL offers for
/// passwords: trust, cleartext, md5 and SCRAM-SHA-256, each allowed alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_upstream_with_every_password_method() {
    for auth in HostAuth::ALL {
        let pg = cluster(move |b| b.auth(auth)).await;
        // The service role's stored secret matches the method, so the
        // method really is the one exercised (PostgreSQL would switch md5
        // to SCRAM for a SCRAM-stored secret).
        let stored = pg
            .psql(
                "postgres",
                "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'sluice_gateway'",
            )
            .unwrap();
        let expected = if auth == HostAuth::Md5 { "md5" } else { "SCR" };
        assert_eq!(stored, expected, "{auth}");
        let config = allowing(&config_text(pg.port(), SEEDED_DB, ""), &[auth.as_str()]);
        let gateway = gateway(&config).await;
        assert_eq!(select_one(&gateway).await.unwrap(), 1, "{auth}");
        let log = std::fs::read_to_string(pg.log_path()).unwrap_or_default();
        assert!(
            !log.contains("password authentication failed"),
            "{auth}: {log}"
        );
    }
}

/// Whoever answers at the server's address chooses how sluice shows the
/// service password: a method `auth_methods` leaves out is refused (all
/// but SCRAM-SHA-256 by default), and the client learns only that the
/// database is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_auth_methods_leaves_out_is_refused() {
    // By default, with a password configured, only SCRAM-SHA-256: the
    // one method in which the server proves it knows the password.
    for auth in [HostAuth::Password, HostAuth::Md5, HostAuth::Trust] {
        let pg = cluster(move |b| b.auth(auth)).await;
        let by_default = gateway(&config_text(pg.port(), SEEDED_DB, "")).await;
        let error = select_one(&by_default).await.unwrap_err();
        assert_eq!(sqlstate(&error), Some("08006"), "{auth}: {error:?}");
        let message = error.as_db_error().unwrap().message().to_owned();
        assert!(!message.contains("auth_methods"), "{message}");
    }

    for (auth, allowed) in [
        (HostAuth::Md5, &["scram-sha-256"][..]),
        (HostAuth::Trust, &["scram-sha-256", "md5"][..]),
        (HostAuth::ScramSha256, &["md5", "trust"][..]),
    ] {
        let pg = cluster(move |b| b.auth(auth)).await;
        let config = allowing(&config_text(pg.port(), SEEDED_DB, ""), allowed);
        let refusing = gateway(&config).await;
        let error = select_one(&refusing).await.unwrap_err();
        assert_eq!(sqlstate(&error), Some("08006"), "{auth}: {error:?}");
    }
}

/// With no password anywhere, sluice still starts; a session fails only
/// when the server asks for one, and the client is not told the service
/// credential's details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_fails_only_when_the_server_asks() {
    let no_password = |port: u16| {
        config_text(port, SEEDED_DB, "")
            .replace("password_env = \"SLUICE_TEST_UPSTREAM_PASSWORD\"\n", "")
    };
    let trusting = cluster(|b| b.auth(HostAuth::Trust)).await;
    let gateway_trusting = gateway(&no_password(trusting.port())).await;
    assert_eq!(select_one(&gateway_trusting).await.unwrap(), 1);

    let demanding = cluster(|b| b.auth(HostAuth::ScramSha256)).await;
    let gateway_demanding = gateway(&no_password(demanding.port())).await;
    let error = select_one(&gateway_demanding).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"), "{error:?}");
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(!message.contains(sluice_tests::SERVICE_ROLE), "{message}");

    // A wrong service password is the same to the client.
    let wrong = config_text(demanding.port(), SEEDED_DB, "");
    let settings = Config::from_toml(&wrong, Path::new("t.toml"))
        .unwrap()
        .resolve(Path::new("."), &Overrides::default(), &|_| {
            Some("not-the-password".to_owned())
        })
        .unwrap();
    let gateway_wrong = Gateway::bind(settings).await.unwrap().spawn();
    let error = select_one(&gateway_wrong).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"));
}

/// `--upstream` style overrides: a URL with an inline password works (for
/// local use) and replaces host, port, database and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_url_override_with_inline_password() {
    let pg = cluster(|b| b.auth(HostAuth::ScramSha256)).await;
    let text = config_text(1, "elsewhere", "")
        .replace("password_env = \"SLUICE_TEST_UPSTREAM_PASSWORD\"\n", "");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".to_owned()),
        upstream: Some(format!(
            "postgres://{}:{SERVICE_PASSWORD}@127.0.0.1:{}/{SEEDED_DB}",
            sluice_tests::SERVICE_ROLE,
            pg.port()
        )),
        ..Default::default()
    };
    let settings = Config::from_toml(&text, Path::new("t.toml"))
        .unwrap()
        .resolve(Path::new("."), &overrides, &|_| None)
        .unwrap();
    let gateway = Gateway::bind(settings).await.unwrap().spawn();
    assert_eq!(select_one(&gateway).await.unwrap(), 1);
}

/// TLS to the server: `require` encrypts, `verify-full` also checks the
/// certificate against the configured CA and refuses a stranger's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_require_and_verify_full() {
    let certs = TestCerts::generate();
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let pg = cluster(move |b| b.auth(HostAuth::ScramSha256).ssl(cert, key)).await;

    let require = config_text(pg.port(), SEEDED_DB, "")
        .replace("password_env", "tls = \"require\"\npassword_env");
    let gateway_require = gateway(&require).await;
    let client = connect(&client_config(&gateway_require)).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the upstream session is encrypted");

    let verify = config_text(pg.port(), SEEDED_DB, "").replace(
        "password_env",
        &format!(
            "tls = \"verify-full\"\ntls_ca_file = \"{}\"\npassword_env",
            certs.ca.display()
        ),
    );
    let gateway_verify = gateway(&verify).await;
    assert_eq!(select_one(&gateway_verify).await.unwrap(), 1);

    // A CA that did not sign the server's certificate: refused.
    let strangers = TestCerts::generate();
    let wrong_ca = config_text(pg.port(), SEEDED_DB, "").replace(
        "password_env",
        &format!(
            "tls = \"verify-full\"\ntls_ca_file = \"{}\"\npassword_env",
            strangers.ca.display()
        ),
    );
    let gateway_wrong = gateway(&wrong_ca).await;
    let error = select_one(&gateway_wrong).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"));

    // `require` against a server without TLS: refused, not downgraded.
    let plain = cluster(|b| b.auth(HostAuth::ScramSha256)).await;
    let require_plain = config_text(plain.port(), SEEDED_DB, "")
        .replace("password_env", "tls = \"require\"\npassword_env");
    let gateway_plain = gateway(&require_plain).await;
    let error = select_one(&gateway_plain).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"));
}

/// `config` with `lines` added to its `[upstream]` table.
fn with_upstream(config: &str, lines: &str) -> String {
    config.replacen("password_env", &format!("{lines}\npassword_env"), 1)
}

/// Connects straight through sluice's upstream module, for its error.
async fn upstream_login(
    settings: sluice::config::UpstreamSettings,
) -> Result<(), sluice::upstream::Error> {
    let upstream = sluice::upstream::Upstream::new(settings).unwrap();
    upstream
        .connect(sluice::upstream::StartupRequest {
            database: SEEDED_DB,
            parameters: &[],
        })
        .await
        .map(drop)
}

/// An active attacker on the sluice-to-PostgreSQL path: answers the
/// SSLRequest with its own certificate (`certs`), opens its own TLS
/// session to the real server on `upstream_port`, and relays the bytes,
/// SCRAM exchange and all, unchanged. Returns the port it listens on.
async fn tls_relay(upstream_port: u16, certs: &TestCerts) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = sluice::transport::server_acceptor(&sluice::config::ListenTls {
        cert: certs.cert.clone(),
        key: certs.key.clone(),
    })
    .unwrap()
    .acceptor;
    let connector =
        sluice::transport::upstream_connector(sluice::config::UpstreamTlsMode::Require, None)
            .unwrap()
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, connector) = (acceptor.clone(), connector.clone());
            tokio::spawn(async move {
                let mut ssl_request = [0u8; 8];
                client.read_exact(&mut ssl_request).await?;
                client.write_all(b"S").await?;
                let mut client = acceptor.accept(client).await?;
                let mut server =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await?;
                server.write_all(&ssl_request).await?;
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut server = connector.connect(name, server).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

/// SCRAM channel binding upstream: with `channel_binding = "require"`
/// sluice logs in with SCRAM-SHA-256-PLUS over TLS, and fails closed,
/// saying why, without TLS. A relay with a certificate of its own, which
/// `tls = "require"` accepts, is caught by the server under the default
/// `prefer`; with `disable` it would not be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_channel_binding_catches_a_tls_relay() {
    let certs = TestCerts::generate();
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let pg = cluster(move |b| b.auth(HostAuth::ScramSha256).ssl(cert, key)).await;
    let base = config_text(pg.port(), SEEDED_DB, "");

    let verify_full = format!(
        "tls = \"verify-full\"\ntls_ca_file = \"{}\"",
        certs.ca.display()
    );
    for tls in ["tls = \"require\"", verify_full.as_str()] {
        let config = with_upstream(&base, &format!("{tls}\nchannel_binding = \"require\""));
        let settings = settings_from(&config);
        assert_eq!(
            settings.upstream.channel_binding,
            sluice::config::ChannelBindingMode::Require
        );
        upstream_login(settings.upstream.clone())
            .await
            .expect("a bound login");
        let gateway = Gateway::bind(settings).await.unwrap().spawn();
        assert_eq!(select_one(&gateway).await.unwrap(), 1, "{tls}");
    }

    // Without TLS: refused by the config check, and by the login itself
    // should settings say so anyway; the client is told 08006.
    let plain = with_upstream(&base, "channel_binding = \"require\"");
    let error = Config::from_toml(&plain, Path::new("test.toml"))
        .unwrap()
        .resolve(Path::new("."), &Overrides::default(), &|_| {
            Some(SERVICE_PASSWORD.to_owned())
        })
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("channel_binding = \"require\" needs tls"),
        "{error}"
    );
    let mut settings = settings_from(&with_upstream(
        &base,
        "tls = \"require\"\nchannel_binding = \"require\"",
    ));
    settings.upstream.tls = sluice::config::UpstreamTlsMode::Disable;
    let error = upstream_login(settings.upstream.clone()).await.unwrap_err();
    assert!(
        matches!(error, sluice::upstream::Error::ChannelBinding(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("not tls"), "{error}");
    let gateway = Gateway::bind(settings).await.unwrap().spawn();
    let error = select_one(&gateway).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"));

    // The relay: its own certificate, the real server's SCRAM exchange.
    let strangers = TestCerts::generate();
    let relay = tls_relay(pg.port(), &strangers).await;
    let relayed = config_text(relay, SEEDED_DB, "");
    for mode in ["", "channel_binding = \"prefer\"\n"] {
        let config = with_upstream(&relayed, &format!("{mode}tls = \"require\""));
        let error = upstream_login(settings_from(&config).upstream)
            .await
            .unwrap_err();
        let sluice::upstream::Error::Refused { fields, .. } = &error else {
            panic!("the server refuses the relayed exchange: {error:?}");
        };
        assert!(
            fields
                .iter()
                .any(|(_, text)| text.contains("channel binding")),
            "{fields:?}"
        );
    }
    // What the relay gets away with when sluice does not bind.
    let config = with_upstream(&relayed, "tls = \"require\"\nchannel_binding = \"disable\"");
    upstream_login(settings_from(&config).upstream)
        .await
        .expect("unbound, the relay is not noticed");
}

/// An upstream that is down gives a clean error, not a hang; sessions open
/// during a restart end with an error; later sessions work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_and_restarting() {
    let mut pg = cluster(|b| b.auth(HostAuth::ScramSha256)).await;
    let gateway = gateway(&config_text(pg.port(), SEEDED_DB, "")).await;
    let open = connect(&client_config(&gateway)).await.unwrap();
    assert_eq!(
        open.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    // The open session learns its server is gone.
    let error = open.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(error.is_closed() || sqlstate(&error).is_some(), "{error:?}");
    // New sessions get a clean error while the server is down.
    let error = tokio::time::timeout(Duration::from_secs(15), select_one(&gateway))
        .await
        .expect("no hang while the upstream is down")
        .unwrap_err();
    assert_eq!(sqlstate(&error), Some("08006"), "{error:?}");

    let pg = tokio::task::spawn_blocking(move || {
        pg.start().unwrap();
        pg
    })
    .await
    .unwrap();
    assert_eq!(select_one(&gateway).await.unwrap(), 1);
    drop(pg);
}

/// A server in the middle that answers sluice's SCRAM exchange with "ok"
/// (or skips the login altogether) without proving it knows the password
/// is refused: the session never starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_skips_its_scram_proof_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one message of `length`-prefixed body (after a tag, if any).
    async fn read_message(stream: &mut tokio::net::TcpStream, tagged: bool) {
        if tagged {
            stream.read_u8().await.unwrap();
        }
        let length = stream.read_i32().await.unwrap();
        let mut body = vec![0; usize::try_from(length - 4).unwrap()];
        stream.read_exact(&mut body).await.unwrap();
    }
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    for skip_scram in [true, false] {
        let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = fake.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = fake.accept().await {
                read_message(&mut stream, false).await; // the StartupMessage
                let mut reply = Vec::new();
                if skip_scram {
                    // AuthenticationSASL, then "ok" after the first step.
                    let mut sasl = 10i32.to_be_bytes().to_vec();
                    sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
                    stream.write_all(&message(b'R', &sasl)).await.unwrap();
                    read_message(&mut stream, true).await; // SASLInitialResponse
                    reply.extend(message(b'R', &0i32.to_be_bytes()));
                }
                // No login at all: straight to ReadyForQuery.
                reply.extend(message(b'Z', b"I"));
                let _ = stream.write_all(&reply).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
        });
        let env = sluice_tests::TestEnv::start_with_config_and("", |settings| {
            settings.upstream.port = port;
        })
        .await
        .unwrap();
        let refused = sluice_tests::connect(&env.config("agent")).await;
        assert!(
            refused.is_err(),
            "a session started on a server that skipped its login (skip_scram: {skip_scram})"
        );
    }
}

/// A server whose ParameterStatus at login cannot be read (its value runs
/// to the end of the message) is not passed on unread while values are
/// masked: the session ends, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_server_parameter_at_login_is_not_passed_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = fake.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = fake.accept().await {
            let length = stream.read_i32().await.unwrap();
            let mut startup = vec![0; usize::try_from(length - 4).unwrap()];
            stream.read_exact(&mut startup).await.unwrap();
            let mut reply = message(b'R', &0i32.to_be_bytes());
            reply.extend(message(b'S', b"application_name\x004111111111111111"));
            reply.extend(message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
            reply.extend(message(b'Z', b"I"));
            let _ = stream.write_all(&reply).await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    });
    let env = sluice_tests::TestEnv::start_with_config_and(
        "[[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n",
        |settings| {
            settings.upstream.port = port;
            settings.upstream.auth_methods.trust = true;
        },
    )
    .await
    .unwrap();
    let refused = sluice_tests::connect(&env.config("agent"))
        .await
        .expect_err("a session on a parameter nobody read");
    let (code, message) = sluice_tests::code_and_message(&refused);
    assert_eq!(code, "XX000", "{message}");
    assert!(message.contains("malformed ParameterStatus"), "{message}");
    assert!(!message.contains("4111111111111111"), "{message}");
}
