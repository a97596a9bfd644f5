//! Startup: who may log in, with what, to which database, and what a
//! client may set on the way in.

use sluice_tests::raw::{RawConn, startup_message};
use sluice_tests::{TestEnv, connect, run_with_password, sqlstate, token_of};

/// A wrong token and an unknown user both get 28P01 with the same
/// message shape, never a silent close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_unknown_user_get_28p01() {
    let env = TestEnv::start().await;
    let mut config = env.config("agent");
    config.password("not-the-token");
    let error = connect(&config).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("28P01"), "{error}");

    let mut config = env.config("mallory");
    config.password("anything");
    let error = connect(&config).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("28P01"), "{error}");
    let message = error.as_db_error().unwrap().message();
    assert!(message.contains("mallory"), "{message}");

    let failed = env
        .gateway
        .shared
        .counters
        .failed_logins
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 2);
}

/// Each principal logs in with its own token; the upstream session runs
/// as sluice's service role, not as the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_log_in_and_run_as_the_service_role() {
    let env = TestEnv::start().await;
    for user in ["agent", "analyst", "admin"] {
        let client = env.connect(user).await;
        let role: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(role, sluice_tests::SERVICE_ROLE);
    }
}

/// `options` are split where PostgreSQL splits them, at every byte C's
/// `isspace` counts: a vertical tab does not hide a role change inside an
/// allowed setting's value (before, `application_name=x\v-c\vrole=...`
/// was judged as one harmless setting and the server read two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_cannot_hide_behind_a_vertical_tab_in_options() {
    let config =
        "[[plugins]]\nname = \"read-only\"\nhook = \"policy\"\npath = \"builtin:read-only\"\n";
    let env = TestEnv::start_with_config(config, false).await.unwrap();
    let mut client = env.config("agent");
    client.options("-c application_name=x\u{0b}-c\u{0b}role=postgres");
    let error = connect(&client).await.expect_err("refused");
    let (code, message) = sluice_tests::code_and_message(&error);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("read-only"), "{message}");
    // A control character the split does not name is refused outright.
    client.options("-c application_name=x\u{1}");
    let error = connect(&client).await.expect_err("refused");
    let (_, message) = sluice_tests::code_and_message(&error);
    assert!(message.contains("printable ASCII"), "{message}");
}

/// Connections from one address that are logging in are bounded: idle
/// ones (a host that opens connections and sends nothing) do not hold
/// every slot. Past the bound a new one is refused at once (53300), and a
/// slot given back serves the next login. The refusals are access
/// attempts, on the trail counted per address and reason — as is a client
/// that does not speak the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_login_slot() {
    let env = TestEnv::start_with_config(
        "[audit]\nfile = \"audit/audit.jsonl\"\nfsync = \"batch\"\n\
         [limits]\nmax_logins_per_address = 2\n",
        false,
    )
    .await
    .unwrap();
    let idle_one = RawConn::connect(env.addr()).await;
    let idle_two = RawConn::connect(env.addr()).await;
    let logins = &env.gateway.shared.logins;
    let local: std::net::IpAddr = [127, 0, 0, 1].into();
    let both_in = sluice_tests::eventually(std::time::Duration::from_secs(30), || async {
        logins.in_progress(local) == 2
    })
    .await;
    assert!(both_in, "the idle connections are logging in");
    let error = connect(&env.config("agent")).await.expect_err("refused");
    assert_eq!(sqlstate(&error), Some("53300"), "{error}");
    drop(idle_one);
    let served = sluice_tests::eventually(std::time::Duration::from_secs(30), || async {
        connect(&env.config("agent")).await.is_ok()
    })
    .await;
    assert!(served, "the slot given back serves a login");
    drop(idle_two);
    // A client that hangs up when asked for its password (psql does, to
    // prompt for it, then connects again) broke nothing.
    let mut hangs_up = RawConn::connect(env.addr()).await;
    let login = [("user", "agent"), ("database", env.database.as_str())];
    hangs_up.send(&startup_message(0, &login)).await;
    assert!(hangs_up.recv().await.is_some(), "asked to authenticate");
    drop(hangs_up);
    let mut not_postgres = RawConn::connect(env.addr()).await;
    not_postgres
        .send(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
        .await;
    assert!(
        not_postgres.closed().await,
        "a client not speaking the protocol is let go"
    );

    // Counted as they come, recorded when the gateway stops (or every few
    // seconds while it runs).
    env.gateway.shutdown().await;
    let trail = env.config_path.with_file_name("audit").join("audit.jsonl");
    let records = sluice::audit::read::read(&trail).unwrap().records;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "connections_refused")
        .collect();
    // Counted by reason (an interval may have split a reason's count).
    let mut counts = std::collections::BTreeMap::new();
    for record in &refused {
        assert_eq!(record["client"], "127.0.0.1", "{record}");
        assert!(record.get("via").is_none(), "{record}");
        let (first, last) = (record["first"].as_str(), record["last"].as_str());
        assert!(
            first.is_some() && last.is_some() && first <= last,
            "{record}"
        );
        *counts
            .entry(record["reason"].as_str().unwrap())
            .or_insert(0) += record["count"].as_u64().unwrap();
    }
    let logins = sluice::audit::Refusal::TooManyLoginsFromAddress.reason();
    let broken = sluice::audit::Refusal::ProtocolBroken.reason();
    assert_eq!(counts.len(), 2, "{refused:#?}");
    assert!(counts[logins] >= 1, "{refused:#?}");
    assert_eq!(counts[broken], 1, "{refused:#?}");
    // Before the gateway's stop, which ends its records.
    assert_eq!(records.last().unwrap()["event"], "gateway_stop");
    let line = sluice::audit::read::one_line(
        refused
            .iter()
            .find(|r| r["reason"] == broken)
            .expect("a record of the broken protocol"),
    );
    assert!(
        line.contains(
            "1 connection(s) refused before a login from 127.0.0.1: the client broke the protocol"
        ),
        "{line}"
    );
}

/// A database the config does not route is 3D000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_database_is_3d000() {
    let env = TestEnv::start().await;
    let mut config = env.config("agent");
    config.dbname("postgres");
    let error = connect(&config).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("3D000"), "{error}");
}

/// Startup parameters outside the allowlist are refused by name; so are
/// replication and `options` that are not settings; allowed ones reach the
/// server, and the session is tagged with its principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_allowlisted() {
    let env = TestEnv::start().await;
    let base = [("user", "agent"), ("database", env.database.as_str())];
    for (extra, needle) in [
        (("search_path", "evil"), "search_path"),
        (("options", "-d 5"), "options"),
        (("options", "-c sluice.principal=admin"), "sluice.principal"),
        (("replication", "database"), "replication"),
        (
            ("session_authorization", "postgres"),
            "session_authorization",
        ),
    ] {
        let mut conn = RawConn::connect(env.addr()).await;
        let mut params = base.to_vec();
        params.push(extra);
        conn.send(&startup_message(0, &params)).await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "42501", "{extra:?}");
        assert!(
            error.fields()[&b'M'].contains(needle),
            "{:?}",
            error.fields()
        );
        assert!(conn.closed().await);
    }

    // Allowed parameters pass through to the server, behind sluice's tag.
    let mut config = env.config("agent");
    config.application_name("nightly-report");
    // An empty `options` carries nothing and is accepted.
    config.options("");
    let client = connect(&config).await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('sluice.principal')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sluice:agent:nightly-report");
    assert_eq!(row.get::<_, String>(1), "agent");

    // Settings in `options` pass as the SET would (no policy here refuses
    // one), and sluice's tag still wins.
    let mut config = env.config("analyst");
    config.options(r"-c statement_timeout=5s -c application_name=two\ words");
    let client = connect(&config).await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('sluice.principal')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "5s");
    assert_eq!(row.get::<_, String>(1), "analyst");
}

/// Operators may extend the allowlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_can_extend_the_allowlist() {
    let env = TestEnv::start_with(|settings| {
        settings
            .allowed_startup_parameters
            .insert("search_path".to_owned());
    })
    .await;
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&startup_message(
        0,
        &[
            ("user", "agent"),
            ("database", &env.database),
            ("search_path", "pg_catalog"),
        ],
    ))
    .await;
    conn.authenticate("agent-demo-token").await;
    conn.until_ready().await;
}

/// Only UTF-8 sessions: another client_encoding is refused at startup,
/// and switching away with SET ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_client_encodings_are_refused() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&startup_message(
        0,
        &[
            ("user", "agent"),
            ("database", &env.database),
            ("client_encoding", "LATIN1"),
        ],
    ))
    .await;
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "0A000");
    assert!(error.fields()[&b'M'].contains("UTF8"));

    let client = env.connect("agent").await;
    // The SET itself may report success before sluice sees the server's
    // new client_encoding; the session ends right after.
    let _ = client.batch_execute("SET client_encoding = 'LATIN1'").await;
    assert!(client.simple_query("SELECT 1").await.is_err());
}

/// A client asking for protocol 3.2 is told 3.0 and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_is_negotiated_down_to_3_0() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&startup_message(
        2,
        &[
            ("user", "agent"),
            ("database", &env.database),
            ("_pq_.some_option", "on"),
        ],
    ))
    .await;
    let negotiate = conn.recv().await.unwrap();
    assert_eq!(negotiate.tag, b'v');
    assert_eq!(&negotiate.body[..4], &196608i32.to_be_bytes());
    assert_eq!(&negotiate.body[4..8], &1i32.to_be_bytes());
    assert_eq!(&negotiate.body[8..], b"_pq_.some_option\0");
    conn.authenticate("agent-demo-token").await;
    let messages = conn.until_ready().await;
    // A 3.0 BackendKeyData: pid and a 4-byte key.
    let key = messages.iter().find(|m| m.tag == b'K').unwrap();
    assert_eq!(key.body.len(), 8);
}

/// Without a certificate, SSLRequest is answered 'N' and the client may
/// go on in plaintext; GSSENCRequest is always declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_declined_without_tls() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&[0, 0, 0, 8, 4, 210, 22, 48]).await; // GSSENCRequest
    assert_eq!(conn.recv_byte().await, Some(b'N'));
    conn.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await; // SSLRequest
    assert_eq!(conn.recv_byte().await, Some(b'N'));
    conn.send(&startup_message(
        0,
        &[("user", "agent"), ("database", &env.database)],
    ))
    .await;
    conn.authenticate("agent-demo-token").await;
    conn.until_ready().await;
}

/// Over TLS sluice offers SCRAM-SHA-256-PLUS bound to its own
/// certificate: libpq with `channel_binding=require` logs in, with a
/// certificate hashed with SHA-256 and one hashed with SHA-384 (RFC 5929
/// follows the signature's hash), and a wrong token still fails as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_channel_binding_required_logs_in_over_tls() {
    for algorithm in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let env = TestEnv::start_with_config_and("", move |settings| {
            settings.tls = Some(sluice::config::ListenTls {
                cert: cert_path,
                key: key_path,
            });
        })
        .await
        .unwrap();

        let conninfo = env
            .conninfo("agent")
            .replace("sslmode=disable", "sslmode=require channel_binding=require");
        let (ok, stdout, stderr) = run_with_password(
            "psql",
            &[&conninfo, "-XAtc", "SELECT count(*) FROM cards"],
            "agent-demo-token",
            None,
        )
        .await;
        assert!(ok, "{algorithm:?}: {stderr}");
        assert_eq!(stdout.trim(), "26");

        let (ok, _, stderr) = run_with_password(
            "psql",
            &[&conninfo, "-XAtc", "SELECT 1"],
            "not-the-token",
            None,
        )
        .await;
        assert!(!ok);
        assert!(stderr.contains("authentication failed"), "{stderr}");

        // Without TLS -PLUS is not offered, and libpq refuses to go on.
        let plain = env
            .conninfo("agent")
            .replace("sslmode=disable", "sslmode=disable channel_binding=require");
        let (ok, _, stderr) = run_with_password(
            "psql",
            &[&plain, "-XAtc", "SELECT 1"],
            "agent-demo-token",
            None,
        )
        .await;
        assert!(!ok);
        assert!(stderr.contains("channel binding"), "{stderr}");
    }
}

/// TLS with a configured certificate: psql negotiates it, and
/// `require_tls` refuses plaintext clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_and_can_be_required() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (cert_for_env, key_for_env) = (cert_path.clone(), key_path.clone());
    let env = TestEnv::start_with_config_and(
        "[audit]\nfile = \"audit/audit.jsonl\"\nfsync = \"batch\"\n",
        move |settings| {
            settings.tls = Some(sluice::config::ListenTls {
                cert: cert_for_env,
                key: key_for_env,
            });
            settings.require_tls = true;
        },
    )
    .await
    .unwrap();

    let conninfo = env
        .conninfo("agent")
        .replace("sslmode=disable", "sslmode=require");
    let (ok, stdout, stderr) = run_with_password(
        "psql",
        &[&conninfo, "-XAtc", "SELECT count(*) FROM cards"],
        "agent-demo-token",
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "26");

    let (ok, _, stderr) = run_with_password(
        "psql",
        &[&env.conninfo("agent"), "-XAtc", "SELECT 1"],
        "agent-demo-token",
        None,
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("requires a TLS connection"), "{stderr}");

    // A client that asks for TLS and then sends no hello fails the
    // handshake: an access attempt, on the trail with the refusals.
    let mut not_tls = RawConn::connect(env.addr()).await;
    not_tls.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await; // SSLRequest
    assert_eq!(not_tls.recv_byte().await, Some(b'S'));
    not_tls
        .send(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
        .await;
    assert!(not_tls.closed().await, "the failed handshake is let go");
    env.gateway.shutdown().await;
    let trail = env.config_path.with_file_name("audit").join("audit.jsonl");
    let records = sluice::audit::read::read(&trail).unwrap().records;
    let handshakes: u64 = records
        .iter()
        .filter(|r| r["event"] == "connections_refused")
        .filter(|r| r["reason"] == sluice::audit::Refusal::TlsHandshakeFailed.reason())
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(handshakes, 1, "{records:#?}");
    // psql's refused plaintext login is a failed login of its own.
    assert!(
        records.iter().any(|r| r["event"] == "login_failed"
            && r["reason"]
                .as_str()
                .is_some_and(|reason| reason.starts_with("refused at startup"))),
        "{records:#?}"
    );
}

/// Ten logins as `user` with the wrong `guess`, each refused with 28P01.
async fn fail_logins(env: &TestEnv, user: &str, guess: &str) {
    for attempt in 0..10 {
        let mut config = env.config(user);
        config.password(guess);
        let error = connect(&config).await.unwrap_err();
        assert_eq!(
            sqlstate(&error),
            Some("28P01"),
            "attempt {attempt}: {error}"
        );
    }
}

/// Ten failed logins lock the principal and the address out (PCI DSS
/// 8.3.4): even the right token is refused, with the same 28P01, and the
/// gateway says why in its log. Other gateways' ledgers are their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_out() {
    let env = TestEnv::start().await;
    fail_logins(&env, "agent", "a wrong guess").await;
    // The right token no longer helps the agent ...
    let error = connect(&env.config("agent")).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("28P01"), "{error}");
    // ... and the address that guessed is locked too, whoever it claims.
    let error = connect(&env.config("analyst")).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("28P01"), "{error}");
    let locked = env.gateway.shared.lockouts.active();
    assert_eq!(locked.len(), 2, "{locked:?}");

    // Fewer failures lock nothing, and a success clears the principal's.
    let env = TestEnv::start().await;
    for _ in 0..5 {
        let mut config = env.config("agent");
        config.password("a wrong guess");
        connect(&config).await.unwrap_err();
    }
    connect(&env.config("agent"))
        .await
        .expect("nine failures or fewer lock nothing");
    assert!(env.gateway.shared.lockouts.active().is_empty());
}

/// A user name longer than PostgreSQL's 63 bytes is no principal's: it is
/// refused at startup (28000, the name not quoted) before any
/// authentication, so it neither runs an exchange nor fills the lockout
/// ledger. 63 bytes start authentication as any name does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_longer_than_63_bytes_is_refused_at_startup() {
    let env = TestEnv::start().await;
    let database = env.database.as_str();
    for long in ["a".repeat(64), "b".repeat(9_000)] {
        let mut conn = RawConn::connect(env.addr()).await;
        conn.send(&startup_message(
            0,
            &[("user", &long), ("database", database)],
        ))
        .await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "28000", "{:?}", error.fields());
        let message = &error.fields()[&b'M'];
        assert!(message.contains("at most 63 bytes"), "{message}");
        assert!(!message.contains(&long[..40]), "{message}");
        assert!(conn.closed().await);
    }
    let failed = env
        .gateway
        .shared
        .counters
        .failed_logins
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 0, "no authentication was tried");

    let longest = "c".repeat(63);
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&startup_message(
        0,
        &[("user", &longest), ("database", database)],
    ))
    .await;
    let sasl = conn.recv().await.expect("an authentication request");
    assert_eq!(sasl.tag, b'R', "{sasl:?}");
}

/// Failed logins under names no principal has are counted apart from
/// principals' (a flood of them cannot push a principal's count out of the
/// ledger), and still against the address; the client is told the same
/// 28P01 either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_counted_apart_and_against_the_address() {
    let env = TestEnv::start().await;
    fail_logins(&env, "mallory", "a guess").await;
    let mut locked = locked_subjects(&env);
    locked.sort();
    assert_eq!(
        locked,
        ["address 127.0.0.1", "unknown user \"mallory\""],
        "{locked:?}"
    );
    let error = connect(&env.config("agent")).await.unwrap_err();
    assert_eq!(
        sqlstate(&error),
        Some("28P01"),
        "the address is locked: {error}"
    );
}

/// The lockout judges each proof when it arrives, not when its login
/// started: connections opened before the lock and held until their proof
/// was due get ten guesses between them, not one each, and a right proof
/// that arrives after the lock is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_held_back_across_connections_are_judged_when_they_arrive() {
    let env = TestEnv::start().await;
    let wrong = 11;
    let (addr, database) = (env.addr(), env.database.as_str());
    // Every connection passes the check at startup, long before the lock,
    // and stops where its proof is due.
    let mut held = Vec::new();
    for n in 0..=wrong {
        let token = if n < wrong {
            "a wrong guess"
        } else {
            "agent-demo-token"
        };
        held.push(async move {
            let mut conn = RawConn::connect(addr).await;
            conn.send(&startup_message(
                0,
                &[("user", "agent"), ("database", database)],
            ))
            .await;
            let proof = conn.scram_until_proof(token).await;
            (conn, proof)
        });
    }
    let mut held = futures_util::future::join_all(held).await;
    assert!(env.gateway.shared.lockouts.active().is_empty());

    let right = held.pop().expect("the right proof's connection");
    for (attempt, (mut conn, proof)) in held.into_iter().enumerate() {
        conn.send(&proof).await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "28P01", "proof {attempt}");
        assert!(conn.closed().await);
    }
    let locked = env.gateway.shared.lockouts.active();
    assert_eq!(locked.len(), 2, "the principal and the address: {locked:?}");
    assert!(
        locked
            .iter()
            .all(|lockout| lockout.failures == sluice::auth::lockout::MAX_FAILURES),
        "only ten proofs were checked: {locked:?}"
    );

    // The right token, sent once the lock is in force, does not log in:
    // the same 28P01 as any failure, never SASLFinal or AuthenticationOk.
    let (mut conn, proof) = right;
    conn.send(&proof).await;
    let reply = conn.recv().await.expect("an answer to the proof");
    assert_eq!(reply.tag, b'E', "refused, not {reply:?}");
    assert_eq!(reply.code(), "28P01");
    assert!(
        reply.fields()[&b'M'].contains("password authentication failed"),
        "{:?}",
        reply.fields()
    );
    assert!(conn.closed().await);
}

/// A PROXY protocol version 2 header naming `source` (IPv4, TCP).
fn proxy_v2(source: [u8; 4], port: u16, local: bool) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(if local { 0x20 } else { 0x21 });
    header.push(0x11);
    header.extend_from_slice(&12u16.to_be_bytes());
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&6432u16.to_be_bytes());
    header
}

/// What the gateway's lockouts in force are keyed by, as text.
fn locked_subjects(env: &TestEnv) -> Vec<String> {
    let lockouts = env.gateway.shared.lockouts.active();
    lockouts.iter().map(|l| l.subject.to_string()).collect()
}

/// Logs in as `user` with `token` over a connection that starts with
/// `header`, as a load balancer's does.
async fn connect_behind(
    env: &TestEnv,
    header: &[u8],
    user: &str,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = env.config(user);
    config.password(token);
    sluice_tests::connect_behind_balancer(env.addr(), header, &config).await
}

/// Behind a load balancer `[listen] proxy_protocol_from` lists, the client
/// its PROXY protocol header names is the session's origin: in the audit
/// trail, and for the address lockout, which then locks out one client,
/// not everyone behind the balancer. A health check's LOCAL header leaves
/// the balancer's own address; a connection from the balancer without a
/// usable header is refused and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_s_proxy_header_names_the_origin() {
    let env = TestEnv::start_with_config_and(
        "[audit]\nfile = \"audit.jsonl\"\nfsync = \"batch\"\n",
        |settings| settings.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()],
    )
    .await
    .unwrap();
    let v1 = b"PROXY TCP4 127.0.0.7 127.0.0.1 40001 6432\r\n";
    let client = connect_behind(&env, v1, "agent", token_of("agent"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let local = connect_behind(
        &env,
        &proxy_v2([10, 9, 9, 9], 1, true),
        "analyst",
        token_of("analyst"),
    )
    .await
    .unwrap();
    local.simple_query("SELECT 1").await.unwrap();

    // Ten failures from one client behind the balancer lock that client's
    // address (and the principal), not the balancer's.
    for _ in 0..10 {
        let error = connect_behind(
            &env,
            &proxy_v2([127, 0, 0, 8], 40002, false),
            "admin",
            "a wrong guess",
        )
        .await
        .unwrap_err();
        assert_eq!(sqlstate(&error), Some("28P01"), "{error}");
    }
    let locked = locked_subjects(&env);
    assert_eq!(locked.len(), 2, "{locked:?}");
    assert!(
        locked.iter().any(|subject| subject.contains("127.0.0.8")),
        "{locked:?}"
    );
    assert!(
        !locked.iter().any(|subject| subject.contains("127.0.0.1")),
        "{locked:?}"
    );
    let other = b"PROXY TCP4 127.0.0.9 127.0.0.1 40003 6432\r\n";
    connect_behind(&env, other, "analyst", token_of("analyst"))
        .await
        .expect("another client behind the same balancer is not locked out");

    // A header that names no client (UNKNOWN) leaves the balancer's own
    // address, which stands for everyone behind it: failures from it count
    // against the principal only.
    let unknown = b"PROXY UNKNOWN\r\n";
    for _ in 0..10 {
        let error = connect_behind(&env, unknown, "agent", "a wrong guess")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), Some("28P01"), "{error}");
    }
    let locked = locked_subjects(&env);
    assert_eq!(locked.len(), 3, "admin, 127.0.0.8 and agent: {locked:?}");
    assert!(
        !locked.iter().any(|subject| subject.contains("127.0.0.1")),
        "{locked:?}"
    );
    connect_behind(&env, unknown, "analyst", token_of("analyst"))
        .await
        .expect("the balancer's own address is not locked out");

    // The header and the startup packet in one write: the bytes after the
    // header are the client's, exactly.
    let mut conn = RawConn::connect(env.addr()).await;
    let mut opening = v1.to_vec();
    opening.extend(startup_message(
        0,
        &[("user", "analyst"), ("database", env.database.as_str())],
    ));
    conn.send(&opening).await;
    let asked = conn.recv().await.expect("an authentication request");
    assert_eq!(asked.tag, b'R', "{asked:?}");

    // The trail names each origin, and the balancer it came through.
    let trail = env.config_path.with_file_name("audit.jsonl");
    let origins = || {
        sluice::audit::read::read(&trail)
            .map(|t| t.records)
            .unwrap_or_default()
            .iter()
            .filter(|r| r["event"] == "session_start" || r["event"] == "login_failed")
            .map(|r| {
                let client = r["client"].as_str().unwrap_or_default().to_owned();
                let via = r["via"].as_str().unwrap_or("none").to_owned();
                (client, via)
            })
            .collect::<Vec<_>>()
    };
    let found = sluice_tests::eventually(std::time::Duration::from_secs(10), || {
        let origins = origins();
        async move { origins.len() == 24 }
    })
    .await;
    let origins = origins();
    assert!(found, "{origins:#?}");
    let balancer = |via: &str| via.starts_with("127.0.0.1:");
    let count = |client: &str| {
        origins
            .iter()
            .filter(|(c, via)| c.as_str() == client && balancer(via))
            .count()
    };
    assert_eq!(count("127.0.0.7:40001"), 1, "{origins:#?}");
    assert_eq!(count("127.0.0.8:40002"), 10, "{origins:#?}");
    assert_eq!(count("127.0.0.9:40003"), 1, "{origins:#?}");
    // LOCAL and UNKNOWN: the balancer's own address, as client and via.
    let own = origins
        .iter()
        .filter(|(c, via)| c == via && balancer(c))
        .count();
    assert_eq!(own, 12, "{origins:#?}");

    // From the balancer, no header, a malformed one, or a cut one is refused.
    let error = connect(&env.config("agent")).await.unwrap_err();
    let (code, message) = sluice_tests::code_and_message(&error);
    assert_eq!(code, "08P01");
    assert!(
        message.contains("did not start with a PROXY protocol header"),
        "{message}"
    );
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(b"PROXY TCP4 127.0.0.7 nonsense\r\n").await;
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "08P01");
    assert!(
        error.fields()[&b'M'].contains("malformed PROXY protocol header"),
        "{error:?}"
    );
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&proxy_v2([127, 0, 0, 7], 1, false)[..20]).await;
    tokio::io::AsyncWriteExt::shutdown(&mut conn.stream)
        .await
        .unwrap();
    assert!(
        conn.recv().await.is_none(),
        "a cut header ends the connection"
    );
}

/// Where no load balancer is configured, a connection that opens with a
/// PROXY protocol header is refused with the setting that would allow it,
/// not read as a length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_an_address_not_listed_is_refused() {
    let env = TestEnv::start().await;
    for header in [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n".to_vec(),
        proxy_v2([203, 0, 113, 7], 1, false),
    ] {
        let mut conn = RawConn::connect(env.addr()).await;
        conn.send(&header).await;
        conn.send(&startup_message(0, &[("user", "agent")])).await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "08P01");
        assert!(
            error.fields()[&b'M'].contains("[listen] proxy_protocol_from"),
            "{error:?}"
        );
    }
}

/// The PROXY protocol header counts against the login timeout: a balancer
/// connection that sends nothing, or half a header, is dropped when it
/// ends, and so is one that sends a header and then stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_never_comes_is_cut_off_at_the_login_timeout() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.login_timeout = std::time::Duration::from_millis(1500);
        settings.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let mut silent = RawConn::connect(env.addr()).await;
    let mut half = RawConn::connect(env.addr()).await;
    half.send(&proxy_v2([127, 0, 0, 7], 1, false)[..20]).await;
    for conn in [&mut silent, &mut half] {
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "08P01");
        assert!(
            error.fields()[&b'M'].contains("no PROXY protocol header arrived in time"),
            "{error:?}"
        );
        assert!(conn.closed().await);
    }
    let mut stalled = RawConn::connect(env.addr()).await;
    stalled.send(&proxy_v2([127, 0, 0, 7], 1, false)).await;
    let error = stalled.expect_error().await;
    assert!(
        error.fields()[&b'M'].contains("login timed out"),
        "{error:?}"
    );
    assert!(stalled.closed().await);
}
