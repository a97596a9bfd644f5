//! Real client programs through sluice: psql, pgbench and Python's
//! psycopg 3. None of them is told it is not talking to PostgreSQL.

use sluice_tests::{TestEnv, run_with_password, token_of};

/// psql: a multi-statement string, a transaction with an error, and
/// `\copy` both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_multi_statement_and_copy() {
    let env = TestEnv::start().await;
    let conninfo = env.conninfo("analyst");
    let (ok, stdout, stderr) = run_with_password(
        "psql",
        &[
            &conninfo,
            "-XAt",
            "-c",
            "SELECT count(*) FROM cards; SELECT count(*) FROM orders; SELECT 'done'",
        ],
        token_of("analyst"),
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    // psql 15 prints every result of a multi-statement -c string.
    assert_eq!(stdout.trim(), "26\n30\ndone");

    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("customers.csv");
    let script = format!(
        "\\set ON_ERROR_STOP 1\n\
         SELECT count(*) FROM customers;\n\
         \\copy (SELECT id, name FROM customers ORDER BY id) TO '{out}' WITH (FORMAT csv)\n\
         CREATE TEMP TABLE imported (id bigint, name text);\n\
         \\copy imported FROM '{out}' WITH (FORMAT csv)\n\
         SELECT count(*) FROM imported;\n\
         BEGIN;\n\
         \\set ON_ERROR_STOP 0\n\
         SELECT 1/0;\n\
         SELECT 'after error';\n\
         ROLLBACK;\n\
         SELECT 'still here';\n",
        out = out_file.display()
    );
    let (ok, stdout, stderr) = run_with_password(
        "psql",
        &[&conninfo, "-XAtq"],
        token_of("analyst"),
        Some(&script),
    )
    .await;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["8", "8", "still here"], "{stdout}\n{stderr}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(
        stderr.contains("current transaction is aborted"),
        "{stderr}"
    );
    let csv = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(csv.lines().count(), 8);
}

/// pgbench: initialise through sluice, then short runs in each query
/// mode, with no failed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_and_every_query_mode() {
    let env = TestEnv::start().await;
    sluice_tests::pgbench_init_and_every_query_mode(&env, &[]).await;
}

/// Python's psycopg 3: text and binary results, parameters, a
/// transaction, COPY, server-side cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_works_unchanged() {
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SLUICE_TEST_PYTHON is not set: run the tests with tests/run, which \
             creates .venv with psycopg"
        )
    });
    let env = TestEnv::start().await;
    let script = r#"
import os, sys, psycopg
conninfo = sys.argv[1]
with psycopg.connect(conninfo, password=os.environ["PGPASSWORD"]) as conn:
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM cards")
    assert cur.fetchone()[0] == 26
    cur.execute("SELECT %s::int + %s::int, %s::text", (40, 2, "psycopg"))
    assert cur.fetchone() == (42, "psycopg")
    bcur = conn.cursor(binary=True)
    bcur.execute("SELECT id, customer_id FROM cards ORDER BY id LIMIT 3")
    assert [r[0] for r in bcur.fetchall()] == [1, 2, 3]
    with conn.transaction():
        cur.execute("INSERT INTO customers (name, email) VALUES (%s, %s)", ("py", "py@example.com"))
    with cur.copy("COPY (SELECT id FROM customers ORDER BY id) TO STDOUT") as copy:
        ids = [row for row in copy.rows()]
    assert len(ids) == 9, ids
    with conn.cursor(name="server_side") as named:
        named.execute("SELECT g FROM generate_series(1, 1000) g")
        total = sum(r[0] for r in named)
    assert total == 500500
    try:
        cur.execute("SELECT 1/0")
    except psycopg.errors.DivisionByZero:
        conn.rollback()
    cur.execute("SELECT 'ok'")
    print(cur.fetchone()[0])
"#;
    let (ok, stdout, stderr) = run_with_password(
        &python,
        &["-c", script, &env.conninfo("agent")],
        token_of("agent"),
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "ok");
}
