//! The gateway as a whole: many sessions at once, bounded memory under a
//! slow client, connection limits, oversized server messages, graceful
//! shutdown.

use std::time::Duration;

use sluice::gateway::Gateway;
use sluice_tests::raw::{RawConn, query};
use sluice_tests::{
    PRINCIPALS, SEEDED_DB, TestEnv, config_text, connect, eventually, settings_from, sqlstate,
    start_seeded_cluster,
};

/// 200 clients at once, each with its own upstream session, all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients() {
    let pg = tokio::task::spawn_blocking(|| {
        start_seeded_cluster(|b| b.setting("max_connections", "400"))
    })
    .await
    .unwrap()
    .unwrap();
    let gateway = Gateway::bind(settings_from(&config_text(pg.port(), SEEDED_DB, "")))
        .await
        .unwrap()
        .spawn();
    let config = sluice_tests::client_config(gateway.addr, SEEDED_DB, PRINCIPALS[1].0);
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let config = config.clone();
            tokio::spawn(async move {
                let client = connect(&config).await?;
                let mut sum = 0i64;
                for j in 0..5i64 {
                    let row = client
                        .query_one("SELECT $1::int8 + count(*) FROM cards", &[&(i * 10 + j)])
                        .await?;
                    sum += row.get::<_, i64>(0);
                }
                Ok::<_, tokio_postgres::Error>((client, sum))
            })
        })
        .collect();
    let mut held = Vec::new();
    for (i, handle) in clients.into_iter().enumerate() {
        let (client, sum) = handle.await.unwrap().unwrap();
        let i = i as i64;
        assert_eq!(sum, (0..5).map(|j| i * 10 + j + 26).sum::<i64>());
        held.push(client);
    }
    // All 200 are open at once.
    assert_eq!(
        gateway
            .shared
            .counters
            .active_sessions
            .load(std::sync::atomic::Ordering::Relaxed),
        200
    );
    drop(held);
}

/// A client that does not read its results: the server is made to wait
/// (backpressure), rather than sluice buffering the result; once the
/// client reads, everything arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_backpressures_the_server() {
    let env = TestEnv::start().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    // About 200 MB of rows.
    conn.send(&query(
        "SELECT repeat('x', 1000) /* backpressure */ FROM generate_series(1, 200000)",
    ))
    .await;
    let direct = env.connect_direct().await;
    let waiting_to_write = || async {
        direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE '%/* backpressure */%' AND wait_event = 'ClientWrite'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(15), waiting_to_write).await,
        "the server blocks writing to sluice while the client does not read"
    );
    // Meanwhile other sessions are served as usual.
    let other = env.connect("analyst").await;
    for _ in 0..20 {
        let cards: i64 = other
            .query_one("SELECT count(*) FROM cards", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(cards, 26);
    }
    let mut rows = 0;
    loop {
        let message = conn.recv().await.expect("results");
        match message.tag {
            b'D' => rows += 1,
            b'Z' => break,
            b'E' => panic!("error: {:?}", message.fields()),
            _ => {}
        }
    }
    assert_eq!(rows, 200_000);
}

/// Beyond `max_connections`, clients get 53300 and the others are not
/// affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_with_53300() {
    let env = TestEnv::start_with(|settings| settings.max_connections = 2).await;
    let first = env.connect("agent").await;
    let second = env.connect("analyst").await;
    let error = connect(&env.config("admin")).await.unwrap_err();
    assert_eq!(sqlstate(&error), Some("53300"));
    for client in [&first, &second] {
        assert_eq!(
            client
                .query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
    }
    drop(first);
    // A slot frees when a session ends.
    assert!(
        eventually(Duration::from_secs(10), || async {
            connect(&env.config("admin")).await.is_ok()
        })
        .await
    );
}

/// A notice or error larger than sluice may hold is replaced by sluice's
/// own (54000) with the same effect, and the session carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_server_messages_are_replaced() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.max_held_server_message_bytes = 256 << 10;
    })
    .await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query(
        "DO $$ BEGIN RAISE NOTICE '%', repeat('n', 300000); END $$",
    ))
    .await;
    let replies = conn.until_ready().await;
    let notice = replies.iter().find(|m| m.tag == b'N').expect("a notice");
    assert_eq!(notice.code(), "54000");
    assert!(
        replies.iter().any(|m| m.tag == b'C'),
        "the statement completed"
    );

    conn.send(&query(
        "DO $$ BEGIN RAISE EXCEPTION '%', repeat('e', 300000); END $$",
    ))
    .await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.code(), "54000");
    assert!(error.body.len() < 1000);

    conn.send(&query("SELECT 'alive'")).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().any(|m| m.tag == b'D'));
}

/// SIGTERM-style shutdown: new connections are refused, idle sessions close
/// at once with 57P01, a session in a transaction may finish it and then
/// closes; all the while the admin port says the gateway is not ready
/// (a load balancer sends new clients elsewhere) but alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_sessions() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.shutdown_grace = Duration::from_secs(20);
        settings.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = env.addr();
    let admin = env.gateway.admin_addr.expect("the admin port");
    let (status, body) = sluice_tests::http_request(admin, "GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let mut idle = RawConn::login(addr, &env.database, "agent", "agent-demo-token").await;
    let mut busy = RawConn::login(addr, &env.database, "analyst", "analyst-demo-token").await;
    busy.send(&query("BEGIN; SELECT 1")).await;
    busy.until_ready().await;

    let sluice_tests::TestEnv { gateway, .. } = env;
    let shutdown = tokio::spawn(gateway.shutdown());

    let error = idle.expect_error().await;
    assert_eq!(error.code(), "57P01");
    assert!(idle.closed().await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "no new connections while draining"
    );
    let (status, body) = sluice_tests::http_request(admin, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let (_, metrics) = sluice_tests::http_request(admin, "GET", "/metrics").await;
    assert!(metrics.contains("\nsluice_ready 0\n"), "{metrics}");
    assert_eq!(
        sluice_tests::http_request(admin, "GET", "/healthz").await.0,
        200
    );

    // The transaction finishes undisturbed.
    busy.send(&query("SELECT count(*) FROM cards")).await;
    let replies = busy.until_ready().await;
    assert!(replies.iter().any(|m| m.tag == b'D'));
    busy.send(&query("COMMIT")).await;
    let error = busy.expect_error().await;
    assert_eq!(error.code(), "57P01");
    assert!(busy.closed().await);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes once sessions are gone")
        .unwrap();
}

/// When the grace period ends, sessions still busy are closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_period_ends_busy_sessions() {
    let env = TestEnv::start_with(|settings| {
        settings.limits.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut busy = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    busy.send(&query("BEGIN")).await;
    busy.until_ready().await;
    let sluice_tests::TestEnv { gateway, .. } = env;
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .expect("shutdown does not wait past the grace period");
    let error = busy.expect_error().await;
    assert_eq!(error.code(), "57P01");
}
