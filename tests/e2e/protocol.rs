//! Protocol fidelity through sluice with tokio-postgres: a client must not
//! be able to tell sluice from PostgreSQL.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use sluice_tests::{TestEnv, eventually, sqlstate};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::Type;

/// Several statements in one simple-query string run in order, each with
/// its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    let messages = client
        .simple_query("SELECT 1 AS one; SELECT count(*) FROM cards; SELECT 'x' || 'y' AS xy")
        .await
        .unwrap();
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "26", "xy"]);
    let completes = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 3);
}

/// Extended protocol: parameters and results in binary format, named
/// statements reused, many types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_binary_parameters_and_results() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    let statement = client
        .prepare_typed(
            "SELECT $1::int8 + 1, $2::text || '!', $3::float8 * 2, $4::bytea, $5::bool",
            &[
                Type::INT8,
                Type::TEXT,
                Type::FLOAT8,
                Type::BYTEA,
                Type::BOOL,
            ],
        )
        .await
        .unwrap();
    for i in 0..3i64 {
        let row = client
            .query_one(
                &statement,
                &[&i, &format!("v{i}"), &1.5f64, &vec![0u8, 1, 255], &true],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i + 1);
        assert_eq!(row.get::<_, String>(1), format!("v{i}!"));
        assert_eq!(row.get::<_, f64>(2), 3.0);
        assert_eq!(row.get::<_, Vec<u8>>(3), vec![0u8, 1, 255]);
        assert!(row.get::<_, bool>(4));
    }
    // Rows of the seeded table, in binary.
    let rows = client
        .query(
            "SELECT id, pan, expiry FROM cards WHERE id <= $1 ORDER BY id",
            &[&3i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

/// Many statements pipelined without waiting for each answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    let statement = client.prepare("SELECT $1::int4 * 10").await.unwrap();
    let futures = (0..50i32).map(|i| {
        let client = &client;
        let statement = &statement;
        async move {
            client
                .query_one(statement, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap(), i as i32 * 10);
    }
}

/// Errors inside a transaction: the transaction is aborted (25P02) until
/// ROLLBACK, and the session carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_transactions() {
    let env = TestEnv::start().await;
    let mut client = env.connect("agent").await;
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO customers (name, email) VALUES ('t', 't@example.com')",
        &[],
    )
    .await
    .unwrap();
    let error = tx.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("22012"));
    let error = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("25P02"));
    tx.rollback().await.unwrap();
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM customers WHERE email = 't@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the rolled-back insert is gone");
    // Committed work stays.
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO customers (name, email) VALUES ('u', 'u@example.com')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM customers WHERE email = 'u@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

/// COPY FROM STDIN and COPY TO STDOUT both ways through sluice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    client
        .batch_execute("CREATE TABLE copied (id int, note text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY copied (id, note) FROM STDIN")
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tnote number {i}\n"));
    }
    // In several chunks, as drivers send it.
    for chunk in data.as_bytes().chunks(7_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 10_000);

    let stream = client
        .copy_out("COPY (SELECT id, note FROM copied ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), data);

    // A COPY the server fails mid-stream leaves the session usable.
    let sink = client.copy_in("COPY copied (id) FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(Bytes::from_static(b"not a number\n"))
        .await
        .unwrap();
    let error = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("22P02"));
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// LISTEN/NOTIFY: notifications from another session arrive through
/// sluice with their payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify() {
    let env = TestEnv::start().await;
    let (client, mut messages) = env.connect_with_async_messages("agent").await;
    client
        .batch_execute("LISTEN payments_events")
        .await
        .unwrap();
    let other = env.connect("analyst").await;
    other
        .batch_execute("NOTIFY payments_events, 'order 42 shipped'")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("notification within 10 s")
        .unwrap();
    let tokio_postgres::AsyncMessage::Notification(notification) = message else {
        panic!("expected a notification, got {message:?}");
    };
    let (channel, payload) = (notification.channel(), notification.payload());
    assert_eq!(channel, "payments_events");
    assert_eq!(payload, "order 42 shipped");
}

/// NoticeResponse and ParameterStatus reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_parameter_status() {
    let env = TestEnv::start().await;
    let (client, mut messages) = env.connect_with_async_messages("agent").await;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("notice within 10 s")
        .unwrap();
    let tokio_postgres::AsyncMessage::Notice(notice) = message else {
        panic!("expected a notice, got {message:?}");
    };
    assert_eq!(notice.message(), "hello from plpgsql");
    // The server's parameters arrived at startup (tokio-postgres reads
    // server_version from ParameterStatus to decide on some features).
    client
        .batch_execute("SET application_name = 'reporting'")
        .await
        .unwrap();
    let name: String = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "reporting");
}

/// Cancelling a running statement reaches the server through sluice's own
/// cancel key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_statement() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    // Wait until the sleep runs upstream.
    let direct = env.connect_direct().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                    &[],
                )
                .await
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        })
        .await
    );
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled within 10 s")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), Some("57014"));
}

/// A result much larger than sluice's buffers streams through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_and_results_stream_through() {
    let env = TestEnv::start().await;
    let client = env.connect("agent").await;
    // One 5 MB value.
    let row = client
        .query_one("SELECT repeat('x', 5 * 1024 * 1024)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0).len(), 5 * 1024 * 1024);
    // 200,000 rows.
    let rows = client
        .simple_query("SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
        .await
        .unwrap();
    let count = rows
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(count, 200_000);
}

/// Terminate right behind a statement: the statement still runs (as it
/// would on PostgreSQL), then the upstream session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_after_a_statement_runs_it_then_ends_the_backend() {
    use sluice_tests::raw::{RawConn, message, query};
    let env = TestEnv::start().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let mut bytes = query(
        "INSERT INTO customers (name, email) VALUES ('bye', 'bye@example.com') /* terminating */",
    );
    bytes.extend_from_slice(&message(b'X', b""));
    conn.send(&bytes).await;
    assert!(conn.closed().await);
    let direct = env.connect_direct().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            direct
                .query_one(
                    "SELECT (SELECT count(*) FROM customers WHERE name = 'bye') = 1 \
                     AND (SELECT count(*) FROM pg_stat_activity \
                          WHERE query LIKE '%/* terminating */' AND pid <> pg_backend_pid()) = 0",
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        })
        .await
    );
}

/// When the server ends a session (an administrator terminated it), the
/// client gets the server's own FATAL error, and the gateway carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_termination_reaches_the_client() {
    use sluice_tests::raw::{RawConn, query};
    let env = TestEnv::start().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("SELECT pg_backend_pid()")).await;
    let replies = conn.until_ready().await;
    let row = replies.iter().find(|m| m.tag == b'D').unwrap();
    let pid: i32 = std::str::from_utf8(&row.body[6..])
        .unwrap()
        .parse()
        .unwrap();
    let direct = env.connect_direct().await;
    direct
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "57P01");
    assert!(error.fields()[&b'M'].contains("administrator command"));
    assert!(conn.recv().await.is_none(), "one FATAL, then the close");
    let client = env.connect("agent").await;
    client.simple_query("SELECT 1").await.unwrap();
}

/// Named portals fetched in batches (Execute with a row limit, answered by
/// PortalSuspended) inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_portals_fetch_in_batches() {
    let env = TestEnv::start().await;
    let mut client = env.connect("agent").await;
    let tx = client.transaction().await.unwrap();
    let statement = tx
        .prepare("SELECT g FROM generate_series(1, $1::int4) g")
        .await
        .unwrap();
    let portal = tx.bind(&statement, &[&25i32]).await.unwrap();
    let mut batches = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 10).await.unwrap();
        if rows.is_empty() {
            break;
        }
        batches.push(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>());
    }
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0], (1..=10).collect::<Vec<_>>());
    assert_eq!(batches[2], (21..=25).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}
