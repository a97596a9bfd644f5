//! The shipped identity plugins in a real gateway: static tokens checked
//! with SCRAM-SHA-256, and IdP-issued JWTs (ES256) checked against a JWKS
//! file — valid, expired, for another audience, signed by another key, for
//! another user — and the groups a token carries deciding what its holder
//! may read.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, SigningKey};
use sluice_tests::{TestEnv, connect, sqlstate};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "sluice";

fn quickstart(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart")
        .join(file)
}

/// A fresh P-256 key: the IdP's, or an impostor's.
fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

/// The JWKS publishing `idp`'s key.
fn jwks(path: &Path, idp: &KeyPair) {
    // An uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = idp.public_key_raw();
    assert_eq!(point.len(), 65);
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "idp-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    std::fs::write(path, jwks.to_string()).unwrap();
}

/// A DER ECDSA signature (SEQUENCE of two INTEGERs) as JWS wants it: r
/// and s, 32 bytes each.
fn raw_signature(der: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(64);
    // SEQUENCE tag and a one-byte length (a P-256 signature is short).
    let mut rest = &der[2..];
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02, "an INTEGER");
        let len = rest[1] as usize;
        let integer = &rest[2..2 + len];
        let integer = &integer[integer.len().saturating_sub(32)..];
        raw.extend(std::iter::repeat_n(0, 32 - integer.len()));
        raw.extend_from_slice(integer);
        rest = &rest[2 + len..];
    }
    raw
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT signed with `signer`, with claims over the defaults.
fn token(signer: &KeyPair, claims: serde_json::Value) -> String {
    let mut payload = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "carol",
        "iat": now(), "nbf": now() - 10, "exp": now() + 600,
        "groups": ["analysts"],
    });
    for (name, value) in claims.as_object().unwrap() {
        payload[name] = value.clone();
    }
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "idp-1"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let der = signer.sign(signing_input.as_bytes()).expect("signs");
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(raw_signature(&der))
    )
}

/// Both identity plugins, the quickstart's principals and policies.
async fn start(dir: &Path, idp: &KeyPair) -> TestEnv {
    start_with(dir, idp, |_| {}).await
}

/// [`start`], with the settings changed by `customize`.
async fn start_with(
    dir: &Path,
    idp: &KeyPair,
    customize: impl FnOnce(&mut sluice::config::Settings),
) -> TestEnv {
    let jwks_path = dir.join("jwks.json");
    jwks(&jwks_path, idp);
    // A copy, for a test to revoke principals in.
    let principals = dir.join("principals.toml");
    std::fs::copy(quickstart("principals.toml"), &principals).unwrap();
    let extra = format!(
        "[[plugins]]\nname = \"tokens\"\nhook = \"identity\"\npath = \"builtin:static-tokens\"\n\
         [plugins.files]\ntokens = {principals:?}\n\n\
         [[plugins]]\nname = \"idp\"\nhook = \"identity\"\npath = \"builtin:oidc-jwt\"\n\
         [plugins.config]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         [plugins.files]\njwks = {jwks_path:?}\n\n\
         [[plugins]]\nname = \"guard\"\nhook = \"policy\"\npath = \"builtin:command-guard\"\n\
         [plugins.files]\nrules = {guard:?}\n\n\
         [[plugins]]\nname = \"access\"\nhook = \"policy\"\npath = \"builtin:access-policy\"\n\
         [plugins.files]\nrules = {access:?}\n\n",
        guard = quickstart("guard.toml"),
        access = quickstart("access.toml"),
    );
    TestEnv::start_with_config_and(&extra, customize)
        .await
        .expect("the gateway starts with the identity plugins")
}

/// Connects as `user` with `password` (a token).
async fn login(
    env: &TestEnv,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = env.config(user);
    config.password(password);
    connect(&config).await
}

fn refused_login(result: Result<tokio_postgres::Client, tokio_postgres::Error>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: logged in, and should not have"),
        Err(error) => assert_eq!(sqlstate(&error), Some("28P01"), "{what}: {error}"),
    }
}

/// The SQLSTATE of the error a login ends with; fails if it logs in.
async fn login_refusal(conn: &mut sluice_tests::raw::RawConn) -> String {
    loop {
        let reply = conn.recv().await.expect("an answer");
        if reply.tag == b'E' {
            return reply.code();
        }
        assert_ne!(reply.tag, b'Z', "logged in: {reply:?}");
    }
}

/// A login is judged by the identity plugins in force when the client
/// sends its proof, not those of when it began: a user or a signing key
/// revoked by a reload while the client took its time logs in no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_login_judges_its_proof() {
    use sluice_tests::raw::{RawConn, message, startup_message};
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let env = start(dir.path(), &idp).await;
    let begin = |user: &'static str| {
        let addr = env.addr();
        let database = env.database.clone();
        async move {
            let mut conn = RawConn::connect(addr).await;
            conn.send(&startup_message(
                0,
                &[("user", user), ("database", &database)],
            ))
            .await;
            conn
        }
    };
    // Both logins begun, each up to where its proof is due.
    let mut agent = begin("agent").await;
    let proof = agent.scram_until_proof("agent-demo-token").await;
    let mut carol = begin("carol").await;
    let asked = carol.recv().await.expect("asked for the token");
    assert_eq!(
        (asked.tag, &asked.body[..]),
        (b'R', &3i32.to_be_bytes()[..])
    );
    let old_token = token(&idp, serde_json::json!({}));

    // agent revoked; the IdP's key rotated.
    let principals = dir.path().join("principals.toml");
    let kept: String = std::fs::read_to_string(&principals)
        .unwrap()
        .split("[[principal]]")
        .filter(|entry| !entry.contains("name = \"agent\""))
        .collect::<Vec<_>>()
        .join("[[principal]]");
    std::fs::write(&principals, kept).unwrap();
    jwks(&dir.path().join("jwks.json"), &key());
    sluice::plugin::reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .expect("the new identities load");

    agent.send(&proof).await;
    assert_eq!(login_refusal(&mut agent).await, "28P01");
    let mut password = old_token.into_bytes();
    password.push(0);
    carol.send(&message(b'p', &password)).await;
    assert_eq!(login_refusal(&mut carol).await, "28P01");
    // Those still vouched for log in as ever.
    login(&env, "analyst", "analyst-demo-token")
        .await
        .expect("a user the reload kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_and_idp_tokens_decide_who_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let env = start(dir.path(), &idp).await;

    // Static tokens: SCRAM against the principals file.
    let agent = login(&env, "agent", "agent-demo-token")
        .await
        .expect("a static token logs in");
    agent.simple_query("SELECT id FROM orders").await.unwrap();
    refused_login(
        login(&env, "agent", "analyst-demo-token").await,
        "another's token",
    );

    // A valid IdP token logs carol in, with the token's groups.
    let carol = login(&env, "carol", &token(&idp, serde_json::json!({})))
        .await
        .expect("a valid JWT logs in");
    let rows = carol
        .simple_query("SELECT pan FROM cards WHERE id = 1")
        .await
        .expect("analysts read card data");
    assert!(rows.len() > 1);

    // Every bad token gets the same 28P01.
    for (what, bad) in [
        (
            "expired",
            token(&idp, serde_json::json!({"exp": now() - 3600})),
        ),
        (
            "not yet valid",
            token(&idp, serde_json::json!({"nbf": now() + 3600})),
        ),
        (
            "wrong audience",
            token(&idp, serde_json::json!({"aud": "another-app"})),
        ),
        (
            "wrong issuer",
            token(&idp, serde_json::json!({"iss": "https://evil.test"})),
        ),
        (
            "signed by another key",
            token(&key(), serde_json::json!({})),
        ),
        (
            "another user's token",
            token(&idp, serde_json::json!({"sub": "dave"})),
        ),
        ("not a token", "carol-password".to_owned()),
    ] {
        refused_login(login(&env, "carol", &bad).await, what);
    }
}

/// A session lasts no longer than the token it logged in with: its first
/// message after the token's expiry (and the plugin's leeway) ends it,
/// and a fresh token logs in again. A static token's session is not
/// timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let env = start(dir.path(), &idp).await;
    // Expired 57 s ago: three seconds left of the default 60 s leeway.
    let short = login(
        &env,
        "carol",
        &token(&idp, serde_json::json!({"exp": now() - 57})),
    )
    .await
    .expect("logs in within the leeway");
    let lasting = login(&env, "carol", &token(&idp, serde_json::json!({})))
        .await
        .expect("logs in");
    let agent = login(&env, "agent", "agent-demo-token")
        .await
        .expect("a static token logs in");
    short.simple_query("SELECT id FROM orders").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let error = short
        .simple_query("SELECT id FROM orders")
        .await
        .expect_err("the token expired");
    assert_eq!(sqlstate(&error), Some("28000"), "{error}");
    let message = error.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains("log in again"), "{message}");
    // Ended, not just refused.
    assert!(short.simple_query("SELECT 1").await.is_err());
    lasting.simple_query("SELECT id FROM orders").await.unwrap();
    agent.simple_query("SELECT id FROM orders").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_groups_decide_what_its_holder_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let env = start(dir.path(), &idp).await;

    // As an agent: orders yes, card numbers only with approval.
    let agent = login(
        &env,
        "carol",
        &token(&idp, serde_json::json!({"groups": ["agents"]})),
    )
    .await
    .expect("logs in");
    agent.simple_query("SELECT id FROM orders").await.unwrap();
    let error = agent
        .simple_query("SELECT pan FROM cards")
        .await
        .expect_err("card numbers need approval");
    assert_eq!(sqlstate(&error), Some("42501"), "{error}");

    // In a group no grant names: nothing but the defaults.
    let guest = login(
        &env,
        "carol",
        &token(&idp, serde_json::json!({"groups": ["guests"]})),
    )
    .await
    .expect("logs in");
    let error = guest
        .simple_query("SELECT id FROM orders")
        .await
        .expect_err("guests read nothing");
    assert_eq!(sqlstate(&error), Some("42501"), "{error}");
    guest
        .simple_query("BEGIN; COMMIT")
        .await
        .expect("transactions are default kinds");
}

/// Where no bearer token may be sent (in the clear, from elsewhere), a
/// name no identity plugin knows is asked for SCRAM as a known one is, and
/// refused after it: refused at once, it could be told apart from a
/// principal's name by the method asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_is_asked_what_a_known_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let env = start_with(dir.path(), &idp, |settings| {
        settings.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let elsewhere = b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 6432\r\n";
    let mut asked = Vec::new();
    for user in ["agent", "nobody-by-this-name"] {
        let mut conn = sluice_tests::raw::RawConn::connect(env.addr()).await;
        conn.send(elsewhere).await;
        conn.send(&sluice_tests::raw::startup_message(
            0,
            &[("user", user), ("database", env.database.as_str())],
        ))
        .await;
        let first = conn.recv().await.expect("an answer");
        asked.push((first.tag, first.body.get(..4).map(<[u8]>::to_vec)));
    }
    // AuthenticationSASL (10), both.
    assert_eq!(asked[0], (b'R', Some(10u32.to_be_bytes().to_vec())));
    assert_eq!(asked[1], asked[0]);
    // And the unknown name is refused as a wrong token is.
    let mut config = env.config("nobody-by-this-name");
    config.password("anything");
    refused_login(
        sluice_tests::connect_behind_balancer(env.addr(), elsewhere, &config).await,
        "an unknown name",
    );
}

/// Behind a load balancer, a bearer token still travels in the clear only
/// on this machine: the client the balancer's PROXY protocol header names
/// must be on loopback too (as must the balancer's own connection), or the
/// token is refused before it is asked for. Over TLS, negotiated with
/// sluice after the header, it is accepted from anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_client_elsewhere_behind_a_balancer_needs_tls() {
    let dir = tempfile::tempdir().unwrap();
    let idp = key();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let env = start_with(dir.path(), &idp, |settings| {
        settings.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()];
        settings.tls = Some(sluice::config::ListenTls {
            cert: cert_path,
            key: key_path,
        });
    })
    .await;
    let mut config = env.config("carol");
    config.password(token(&idp, serde_json::json!({})));
    let elsewhere = b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 6432\r\n";
    refused_login(
        sluice_tests::connect_behind_balancer(env.addr(), elsewhere, &config).await,
        "a token from a client elsewhere, in the clear",
    );
    let here = b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 6432\r\n";
    let carol = sluice_tests::connect_behind_balancer(env.addr(), here, &config)
        .await
        .expect("a token from a client on this machine logs in");
    carol.simple_query("SELECT 1").await.unwrap();
    let over_tls = sluice_tests::connect_behind_balancer_tls(
        env.addr(),
        elsewhere,
        &config,
        cert.cert.der().clone(),
    )
    .await
    .expect("a token from a client elsewhere, over TLS, logs in");
    let row = over_tls
        .query_one("SELECT current_setting('application_name')", &[])
        .await;
    assert!(row.is_ok(), "{row:?}");
}
