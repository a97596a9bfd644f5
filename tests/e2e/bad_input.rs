//! Hostile and broken input: every case gets a clear ErrorResponse (08P01
//! for protocol violations) and a closed connection, or a refusal that
//! keeps the session; never a panic, a hang or an unbounded allocation;
//! other sessions are never affected.

use std::time::Duration;

use sluice_tests::TestEnv;
use sluice_tests::raw::{
    RawConn, bind, execute, function_call, message, parse, query, startup_message, sync,
};
use tokio::io::AsyncWriteExt;

/// After each bad client, a good one still works.
async fn gateway_still_serves(env: &TestEnv) {
    let client = env.connect("agent").await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// Garbage instead of a startup packet: 08P01 and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packets_are_refused() {
    let env = TestEnv::start().await;
    let cases: Vec<Vec<u8>> = vec![
        // GET / HTTP/1.1 — a length of 1.1 GB.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // Length shorter than the header.
        vec![0, 0, 0, 2, 0, 3, 0, 0],
        // Negative length.
        vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0],
        // Protocol 2.0.
        startup_message(0, &[("user", "agent")])
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 5 { 2 } else { b })
            .collect(),
        // A parameter list without its terminator.
        {
            let mut m = startup_message(0, &[("user", "agent")]);
            m.truncate(m.len() - 2);
            let len = m.len() as i32;
            m[..4].copy_from_slice(&len.to_be_bytes());
            m
        },
    ];
    for bytes in cases {
        let mut conn = RawConn::connect(env.addr()).await;
        conn.send(&bytes).await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "08P01", "{bytes:?}: {:?}", error.fields());
        assert!(conn.closed().await, "{bytes:?}");
    }
    gateway_still_serves(&env).await;
}

/// After login: unknown message types, lengths over the maximum, and
/// malformed bodies are 08P01 and a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login_are_refused() {
    let env = TestEnv::start_with(|settings| settings.limits.max_message_bytes = 64 << 10).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type", message(b'!', b"hello")),
        ("over the maximum length", {
            // Only the header: sluice must refuse before the body arrives.
            let mut m = vec![b'Q'];
            m.extend_from_slice(&((1i32 << 20) + 4).to_be_bytes());
            m
        }),
        ("negative length", vec![b'Q', 0xff, 0xff, 0xff, 0xff]),
        ("Query without terminator", message(b'Q', b"SELECT 1")),
        (
            "Query with a NUL inside",
            message(b'Q', b"SELECT 1\0; DROP TABLE cards\0"),
        ),
        (
            "Query with invalid UTF-8",
            message(b'Q', b"SELECT '\xff\xfe'\0"),
        ),
        (
            "Parse with a bad count",
            message(b'P', b"\0SELECT 1\0\x00\x05"),
        ),
        (
            "Bind running past its end",
            message(b'B', b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00"),
        ),
        ("Execute without its row limit", message(b'E', b"\0")),
        ("Describe of an unknown kind", message(b'D', b"X\0")),
        ("Sync with a body", message(b'S', b"x")),
        ("CopyData outside a COPY", message(b'd', b"1\n")),
        ("CopyDone outside a COPY", message(b'c', b"")),
        ("Query inside an unfinished extended cycle", {
            let mut m = parse("", "SELECT 1");
            m.extend(query("SELECT 2"));
            m
        }),
        // Refused with a Query stand-in, which the server would skip after
        // the failing Execute: sluice's count of cycles would drift.
        ("FunctionCall inside an unfinished extended cycle", {
            let mut m = parse("", "SELECT 1/0");
            m.extend(bind("", ""));
            m.extend(execute("", 0));
            m.extend(function_call(1598, "1"));
            m.extend(sync());
            m
        }),
    ];
    for (what, bytes) in cases {
        let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
        conn.send(&bytes).await;
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "08P01", "{what}: {:?}", error.fields());
        assert_eq!(error.fields()[&b'S'], "FATAL", "{what}");
        assert!(conn.closed().await, "{what}");
    }
    // Nothing of the refused messages reached the database.
    let direct = env.connect_direct().await;
    let cards: i64 = direct
        .query_one("SELECT count(*) FROM cards", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cards, 26);
    gateway_still_serves(&env).await;
}

/// FunctionCall is refused with 42501 and the session carries on; inside
/// a transaction block the refusal aborts the transaction, as a failing
/// statement would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_refused_and_the_session_survives() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    // pg_sleep is function 2626.
    let function_call = sluice_tests::raw::function_call(2626, "0.1");
    conn.send(&function_call).await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.code(), "42501");
    assert!(error.fields()[&b'M'].contains("fastpath"));
    assert_eq!(replies.last().unwrap().body, b"I");

    let row = conn.first_row(&query("SELECT 41 + 1")).await;
    assert!(row.ends_with(b"42"));

    // Inside a transaction: the refusal aborts it on both sides.
    conn.send(&query(
        "BEGIN; INSERT INTO customers (name, email) VALUES ('f', 'f@example.com')",
    ))
    .await;
    conn.until_ready().await;
    conn.send(&function_call).await;
    let replies = conn.until_ready().await;
    assert_eq!(
        replies.iter().find(|m| m.tag == b'E').unwrap().code(),
        "42501"
    );
    assert_eq!(
        replies.last().unwrap().body,
        b"E",
        "transaction is now aborted"
    );
    conn.send(&query("SELECT 1")).await;
    let replies = conn.until_ready().await;
    assert_eq!(
        replies.iter().find(|m| m.tag == b'E').unwrap().code(),
        "25P02"
    );
    conn.send(&query("COMMIT")).await;
    let replies = conn.until_ready().await;
    let complete = replies.iter().find(|m| m.tag == b'C').unwrap();
    assert_eq!(
        complete.body, b"ROLLBACK\0",
        "COMMIT of an aborted transaction rolls back"
    );
    let direct = env.connect_direct().await;
    let kept: i64 = direct
        .query_one(
            "SELECT count(*) FROM customers WHERE email = 'f@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "no work before the refusal was committed");
}

/// A message cut off by the client closing: the session ends cleanly and
/// the partial message never reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_message_then_close() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let full = query("INSERT INTO customers (name, email) VALUES ('trunc', 't@x')");
    conn.send(&full[..full.len() - 3]).await;
    conn.stream.shutdown().await.ok();
    drop(conn);
    let direct = env.connect_direct().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM customers WHERE name = 'trunc'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    gateway_still_serves(&env).await;
}

/// A client that stops in the middle of a message is dropped after the
/// stall timeout; an idle client between messages is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stalling_mid_message_is_dropped() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.message_stall_timeout = Duration::from_millis(300);
    })
    .await;
    let mut idle = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let mut staller = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let full = query("SELECT 1");
    staller.send(&full[..4]).await;
    let error = staller.expect_error().await;
    assert_eq!(error.code(), "08P01");
    assert!(error.fields()[&b'M'].contains("stalled"));
    assert!(staller.closed().await);
    // The idle session, quiet for longer than the stall timeout, still works.
    idle.send(&query("SELECT 1")).await;
    idle.until_ready().await;
}

/// A session whose client sends nothing for the idle timeout, with
/// nothing running for it, is ended (PCI DSS 8.2.8: an idle session needs
/// a new login), in or out of a transaction, with PostgreSQL's codes for
/// its own idle timeouts; a statement that runs longer than the timeout
/// is not idle time, and a client that keeps talking keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_ended() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.idle_session_timeout = Some(Duration::from_millis(600));
    })
    .await;
    let mut busy = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let mut idle = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let mut in_transaction =
        RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    in_transaction.send(&query("BEGIN")).await;
    in_transaction.until_ready().await;
    // Longer than the timeout, then at once another: not idle.
    busy.send(&query("SELECT pg_sleep(1)")).await;
    let slept = busy.until_ready().await;
    assert!(!slept.iter().any(|m| m.tag == b'E'), "{slept:?}");
    for _ in 0..3 {
        busy.send(&query("SELECT 1")).await;
        busy.until_ready().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let error = idle.expect_error().await;
    assert_eq!(error.code(), "57P05");
    assert!(error.fields()[&b'M'].contains("log in again"), "{error:?}");
    assert!(idle.closed().await);
    let error = in_transaction.expect_error().await;
    assert_eq!(error.code(), "25P03");
    assert!(in_transaction.closed().await);
    busy.send(&query("SELECT 1")).await;
    busy.until_ready().await;
}

/// A client that never finishes logging in is dropped after the login
/// timeout, at any step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_logs_in_is_dropped() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.login_timeout = Duration::from_millis(500);
    })
    .await;
    // Silent from the start.
    let mut silent = RawConn::connect(env.addr()).await;
    // Half a startup packet.
    let mut half = RawConn::connect(env.addr()).await;
    half.send(&startup_message(0, &[("user", "agent")])[..6])
        .await;
    // Startup sent, SASL never answered.
    let mut unanswered = RawConn::connect(env.addr()).await;
    unanswered
        .send(&startup_message(
            0,
            &[("user", "agent"), ("database", &env.database)],
        ))
        .await;
    for conn in [&mut silent, &mut half, &mut unanswered] {
        let error = conn.expect_error().await;
        assert_eq!(error.code(), "08P01");
        assert!(error.fields()[&b'M'].contains("timed out"));
        assert!(conn.closed().await);
    }
    gateway_still_serves(&env).await;
}

/// A client that vanishes mid-query: its statement is cancelled upstream
/// and the upstream connection closed promptly, so no backend leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_frees_its_backend() {
    async fn count(direct: &tokio_postgres::Client) -> i64 {
        let query = "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE '%/* vanishing */' AND pid <> pg_backend_pid()";
        direct
            .query_one(query, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    }
    let env = TestEnv::start().await;
    let direct = env.connect_direct().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("SELECT pg_sleep(60) /* vanishing */"))
        .await;
    assert!(
        sluice_tests::eventually(Duration::from_secs(10), || async {
            count(&direct).await == 1
        })
        .await,
        "the statement runs upstream"
    );
    drop(conn);
    assert!(
        sluice_tests::eventually(Duration::from_secs(10), || async {
            count(&direct).await == 0
        })
        .await,
        "the backend is gone well before its pg_sleep(60) would end"
    );
}
