//! The audit trail, read back: a scripted session's statements in order
//! with principal and decision, denied statements and failed logins,
//! outcomes, parameters and card numbers masked, the chain intact — and a
//! trail that cannot be written refuses sessions.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sluice::plugin::builtin::test_guests as guest;
use sluice_tests::raw::{self, RawConn};
use sluice_tests::{TestEnv, code_and_message, eventually};

/// The trail in the config's directory, synced per commit, with the
/// shipped Luhn masker and the deny-rule test policy denying `forbidden`.
fn audited_config() -> String {
    format!(
        "[audit]\nfile = \"audit.jsonl\"\nfsync = \"always\"\n\n\
         [[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n\n\
         [[plugins]]\nname = \"rules\"\nhook = \"policy\"\npath = \"{}\"\n\
         [plugins.config]\ndeny_words = [\"forbidden\"]\ndeny_kinds = []\n",
        guest::GUEST_DENY_RULE
    )
}

/// [`audited_config`] with the returned rows recorded, and `more` of the
/// `[audit]` table.
fn recording_results(more: &str) -> String {
    audited_config().replacen(
        "fsync = \"always\"\n",
        &format!("fsync = \"always\"\nrecord_results = true\n{more}"),
        1,
    )
}

fn trail(env: &TestEnv) -> PathBuf {
    env.config_path.with_file_name("audit.jsonl")
}

fn records(env: &TestEnv) -> Vec<Value> {
    sluice::audit::read::read(&trail(env))
        .expect("the trail reads")
        .records
}

fn of_event<'r>(records: &'r [Value], event: &str) -> Vec<&'r Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

/// Waits until the trail holds a record matching `wanted` (outcomes and
/// session ends are appended without making anyone wait).
async fn until_recorded(env: &TestEnv, wanted: impl Fn(&Value) -> bool) {
    let found = eventually(Duration::from_secs(10), || {
        let found = records(env).iter().any(&wanted);
        async move { found }
    })
    .await;
    assert!(found, "not recorded: {:#?}", records(env));
}

/// A scripted session, read back: who, from where; each statement in order
/// with its masked text and parameters and the decision (the denied one
/// with its rule); each outcome with its tag, rows or SQLSTATE; a failed
/// login; the session's end — the chain verifying with the key, and no card
/// number anywhere in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_is_on_the_record_in_order() {
    let env = TestEnv::start_with_config(&audited_config(), false)
        .await
        .unwrap();
    let pan = "4111111111111111";
    // Its application named, with a card number in the name.
    let mut config = env.config("analyst");
    config.application_name(format!("etl-{pan}"));
    let client = sluice_tests::connect(&config).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let rows = client
        .query("SELECT $1::text AS card", &[&pan])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "411111******1111");
    let denied = client.simple_query("SELECT 'forbidden'").await.unwrap_err();
    assert_eq!(code_and_message(&denied).0, "42501");
    let failed = client
        .simple_query(&format!("SELECT 1/0 AS \"{pan}\""))
        .await
        .unwrap_err();
    assert_eq!(code_and_message(&failed).0, "22012");
    drop(client);
    let mut wrong = env.config("analyst");
    wrong.password("not-the-token");
    assert!(sluice_tests::connect(&wrong).await.is_err());

    until_recorded(&env, |r| r["event"] == "session_end").await;
    until_recorded(&env, |r| r["event"] == "login_failed").await;
    let records = records(&env);

    let starts = of_event(&records, "session_start");
    assert_eq!(starts.len(), 1, "{records:#?}");
    let start = starts[0];
    assert_eq!(start["principal"], "analyst");
    assert_eq!(start["groups"], serde_json::json!(["analysts"]));
    assert_eq!(start["database"], env.database.as_str());
    assert_eq!(start["tls"], false);
    assert!(start["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(start["application"], "etl-411111******1111", "{start:#}");
    let session = start["session"].as_u64().unwrap();

    // Every statement, in order, after the session's start.
    let statements = of_event(&records, "statement");
    let summary: Vec<(u64, &str, &str, &str)> = statements
        .iter()
        .map(|r| {
            assert_eq!(r["session"], session);
            assert_eq!(r["principal"], "analyst");
            (
                r["statement"].as_u64().unwrap(),
                r["protocol"].as_str().unwrap(),
                r["text"].as_str().unwrap(),
                r["decision"]["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "simple", "SELECT 1", "allow"),
            (2, "extended", "SELECT $1::text AS card", "allow"),
            (3, "simple", "SELECT 'forbidden'", "deny"),
            (4, "simple", "SELECT 1/0 AS \"411111******1111\"", "allow"),
        ]
    );
    // tokio-postgres binds the text in binary format: labelled so.
    assert_eq!(
        statements[1]["params"],
        serde_json::json!(["[binary, as text: \"411111******1111\"]"])
    );
    assert_eq!(statements[2]["decision"]["plugin"], "rules");
    assert!(
        statements[2]["decision"]["rule"]
            .as_str()
            .is_some_and(|rule| !rule.is_empty()),
        "{:?}",
        statements[2]["decision"]
    );
    let seq = |r: &Value| r["seq"].as_u64().unwrap();
    assert!(seq(start) < seq(statements[0]));

    // Each statement's outcome comes after it.
    let outcomes = of_event(&records, "outcome");
    let outcome_of = |statement: u64| {
        outcomes
            .iter()
            .find(|r| {
                r["statements"]
                    .as_array()
                    .unwrap()
                    .contains(&statement.into())
            })
            .unwrap_or_else(|| panic!("no outcome of statement {statement}: {records:#?}"))
    };
    assert_eq!(outcome_of(1)["tags"], serde_json::json!(["SELECT 1"]));
    assert_eq!(outcome_of(1)["rows"], 1);
    assert_eq!(outcome_of(2)["rows"], 1);
    assert_eq!(outcome_of(3)["error"]["sqlstate"], "42501");
    assert_eq!(outcome_of(4)["error"]["sqlstate"], "22012");
    for statement in &statements {
        let n = statement["statement"].as_u64().unwrap();
        assert!(seq(outcome_of(n)) > seq(statement));
    }

    let end = of_event(&records, "session_end")[0];
    assert_eq!(end["session"], session);
    assert_eq!(end["statements"], 4);
    let failed = of_event(&records, "login_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["user"], "analyst");

    // Intact, with the key sluice made next to it, and no card number.
    let key = sluice::audit::ChainKey::load(&trail(&env).with_extension("jsonl.key")).unwrap();
    let head = trail(&env).with_extension("jsonl.head");
    let report = sluice::audit::verify::verify_live(&trail(&env), Some(&head), &key, &[]);
    assert!(report.ok(), "{report}");
    let text = std::fs::read_to_string(trail(&env)).unwrap();
    assert!(!text.contains(pan), "a card number in the trail:\n{text}");

    // The session replayed from the record alone.
    let all = sluice::audit::read::Filter::default().apply(&records);
    let shown = sluice::audit::read::show_session(&all, session);
    for needle in [
        "initiated by analyst (groups: analysts)",
        "etl-411111******1111",
        "statement 3",
        "SELECT 'forbidden'",
        "decision: deny (plugin rules",
        r#"parameters: "[binary, as text: \"411111******1111\"]""#,
        "error 22012",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }

    // A login whose `-c` options a policy refuses is an access attempt
    // too: its session starts and ends on the record, saying why.
    let mut config = env.config("analyst");
    config.options("-c search_path=forbidden");
    let refused = sluice_tests::connect(&config).await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "42501");
    until_recorded(&env, |r| {
        r["event"] == "session_end"
            && r["reason"]
                .as_str()
                .is_some_and(|reason| reason.starts_with("refused at login"))
    })
    .await;
    let after = self::records(&env);
    let end = after.iter().rfind(|r| r["event"] == "session_end").unwrap();
    let start = after
        .iter()
        .find(|r| r["event"] == "session_start" && r["session"] == end["session"])
        .expect("the refused session's start");
    assert_eq!(start["principal"], "analyst");
    assert!(seq(start) < seq(end));
}

/// A trail that cannot be written — here every write fails as on a full
/// disk — refuses sessions with a clear error: nothing runs unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_that_cannot_be_written_refuses_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.jsonl");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nfile = \"{}\"\nkey_file = \"{}\"\nhead_file = \"{}\"\n",
        full.display(),
        dir.path().join("key").display(),
        dir.path().join("head").display()
    );
    std::fs::write(dir.path().join("key"), format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(
        dir.path().join("key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    // The trail's first write (the gateway's start) is what finds the disk
    // full; a session that came before would be refused only once its own
    // record was, after its login upstream.
    let failed = eventually(Duration::from_secs(5), || async {
        env.gateway.shared.audit.failure().is_some()
    })
    .await;
    assert!(failed, "the trail's first write did not fail");
    for _ in 0..2 {
        let error = sluice_tests::connect(&env.config("admin"))
            .await
            .expect_err("no session without a trail");
        let (code, message) = code_and_message(&error);
        assert_eq!(code, "58000", "{message}");
        assert!(message.contains("audit trail"), "{message}");
    }
    // The admin port says so: not ready (a load balancer sends clients
    // elsewhere), and the failure is in the metrics.
    let admin = env.gateway.admin_addr.unwrap();
    let (status, body) = sluice_tests::http_request(admin, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the audit trail cannot be written"), "{body}");
    let (_, metrics) = sluice_tests::http_request(admin, "GET", "/metrics").await;
    assert!(metrics.contains("\nsluice_audit_failed 1\n"), "{metrics}");
    assert!(metrics.contains("\nsluice_ready 0\n"), "{metrics}");
    // Alive all the same: the process answers.
    assert_eq!(
        sluice_tests::http_request(admin, "GET", "/healthz").await.0,
        200
    );
    // Nothing reached the database on those sessions' behalf.
    let direct = env.connect_direct().await;
    let sessions: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'sluice:admin%' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);
}

/// A small tmpfs of the test's own: a disk that really fills up, and is
/// freed again. Unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// `None` (the test skips, saying so) where this process may not mount.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        if !mounted.status.success() {
            let said = String::from_utf8_lossy(&mounted.stderr);
            eprintln!("SKIPPED: mounting a small tmpfs needs root (CAP_SYS_ADMIN): {said}");
            return None;
        }
        Some(SmallDisk(dir))
    }

    /// Fills what is left with one file, returned.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[b'x'; 4096]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// A disk that fills up stops the gateway's statements and sessions, and
/// a disk made room on lets them go on by themselves, without a restart:
/// the trail says where it was interrupted and what was refused, and its
/// chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_is_waited_out() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let trail = disk.0.path().join("audit.jsonl");
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nfile = \"{}\"\nfsync = \"batch\"\n\n\
         [[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n",
        trail.display()
    );
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let admin = env.gateway.admin_addr.unwrap();
    let client = env.connect("admin").await;
    client.simple_query("SELECT 'before'").await.unwrap();
    let leaving = env.connect("admin").await;
    leaving.simple_query("SELECT 'leaving'").await.unwrap();

    client
        .batch_execute("CREATE TABLE filling (n int)")
        .await
        .unwrap();
    let direct = env.connect_direct().await;

    let filler = disk.fill();
    // The file's last page may hold a few more records. Writes, so that
    // what a refused statement did not do can be seen.
    let mut refused = None;
    let mut inserted = Vec::new();
    for n in 0..200 {
        match client
            .simple_query(&format!("INSERT INTO filling VALUES ({n})"))
            .await
        {
            Ok(_) => inserted.push(n),
            Err(error) => {
                refused = Some((n, error));
                break;
            }
        }
    }
    let (refused_n, refused) = refused.expect("a statement refused on a full disk");
    let (code, message) = code_and_message(&refused);
    assert_eq!(code, "58000", "{message}");
    assert!(message.contains("audit trail"), "{message}");
    // Exactly the inserts the client was told of ran: the refused one
    // never reached the database.
    let in_table: Vec<i32> = direct
        .query("SELECT n FROM filling ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(in_table, inserted, "refused: {refused_n}");
    let error = sluice_tests::connect(&env.config("admin"))
        .await
        .expect_err("no session while the trail cannot be written");
    assert_eq!(code_and_message(&error).0, "58000");
    let (status, body) = sluice_tests::http_request(admin, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("No space left"), "{body}");
    // A session that ends meanwhile: its end is kept for the trail.
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::remove_file(&filler).unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        client.simple_query("SELECT 'after'").await.is_ok()
    })
    .await;
    assert!(back, "{:?}", env.gateway.shared.audit.failure());
    let (status, body) = sluice_tests::http_request(admin, "GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = sluice_tests::http_request(admin, "GET", "/metrics").await;
    assert!(
        metrics.contains("\nsluice_audit_outages_total 1\n"),
        "{metrics}"
    );
    let other = env.connect("admin").await;
    other.simple_query("SELECT 'a new session'").await.unwrap();
    drop((client, other));
    env.gateway.shutdown().await;

    let report = sluice::audit::verify::verify(
        &trail,
        Some(&trail.with_file_name("audit.jsonl.head")),
        &sluice::audit::load_key(&sluice::config::AuditKey::File(
            trail.with_file_name("audit.jsonl.key"),
        ))
        .unwrap(),
    );
    assert!(report.ok(), "{report}");
    let records = sluice::audit::read::read(&trail).unwrap().records;
    let outages = of_event(&records, "audit_outage");
    assert_eq!(outages.len(), 1, "{records:#?}");
    assert_eq!(outages[0]["sessions_refused"], 1, "{}", outages[0]);
    assert!(
        outages[0]["records_refused"].as_u64() >= Some(1),
        "{}",
        outages[0]
    );
    let texts: Vec<&str> = of_event(&records, "statement")
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    let after = texts
        .iter()
        .position(|t| *t == "SELECT 'after'")
        .unwrap_or_else(|| panic!("{texts:?}"));
    assert_eq!(texts[after + 1], "SELECT 'a new session'", "{texts:?}");
    assert!(texts.contains(&"SELECT 'before'"), "{texts:?}");
    // Every insert that ran is on the trail; the refused one is not.
    for n in &inserted {
        let text = format!("INSERT INTO filling VALUES ({n})");
        assert!(texts.contains(&text.as_str()), "{text} {texts:?}");
    }
    let refused_text = format!("INSERT INTO filling VALUES ({refused_n})");
    assert!(!texts.contains(&refused_text.as_str()), "{texts:?}");
    // The end of the session that left while the disk was full was kept
    // through the outage and written before the outage's record, which
    // precedes the statements after it.
    let at = |wanted: &Value| records.iter().position(|r| r == wanted).unwrap();
    let outage_at = at(outages[0]);
    assert!(
        outages[0]["records_kept"].as_u64() >= Some(1),
        "{}",
        outages[0]
    );
    let left = of_event(&records, "statement")
        .into_iter()
        .find(|s| s["text"] == "SELECT 'leaving'")
        .unwrap()["session"]
        .clone();
    let end_at = at(of_event(&records, "session_end")
        .into_iter()
        .find(|end| end["session"] == left)
        .expect("the end of the session that left"));
    assert!(end_at < outage_at, "{records:#?}");
    let after_at = at(of_event(&records, "statement")
        .into_iter()
        .find(|s| s["text"] == "SELECT 'after'")
        .unwrap());
    assert!(outage_at < after_at);
}

/// A gateway recording returned rows, and a raw session of `analyst`.
async fn analyst_recording_results() -> (TestEnv, RawConn) {
    let env = TestEnv::start_with_config(&recording_results(""), false)
        .await
        .unwrap();
    let conn = RawConn::login(env.addr(), &env.database, "analyst", "analyst-demo-token").await;
    (env, conn)
}

/// Sends `messages` and a Sync; the replies, which must hold `rows` rows.
async fn rows_of_cycle(conn: &mut RawConn, messages: &[u8], rows: usize) -> Vec<raw::Message> {
    let mut cycle = messages.to_vec();
    cycle.extend(raw::sync());
    conn.send(&cycle).await;
    let replies = conn.until_ready().await;
    let got = replies.iter().filter(|m| m.tag == b'D').count();
    assert_eq!(got, rows, "{replies:?}");
    replies
}

/// A Bind the server refuses leaves the portal bound as it was, on the
/// record too: a named portal bound again inside a savepoint (the server
/// refuses: it exists) and run after the savepoint is rolled back is an
/// outcome of the statement that first bound it, not of the refused Bind's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bind_leaves_the_portal_s_outcomes_where_they_were() {
    let (env, mut conn) = analyst_recording_results().await;
    conn.send(&raw::query("BEGIN")).await;
    conn.until_ready().await;
    conn.define("first", "SELECT 'first'").await;
    conn.define("second", "SELECT 'second'").await;
    conn.define("third", "SELECT 'third'").await;
    let mut bind = raw::bind("p", "first");
    bind.extend(raw::sync());
    conn.send(&bind).await;
    conn.until_ready().await;
    conn.send(&raw::query("SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut again = raw::bind("p", "second");
    again.extend(raw::sync());
    assert_eq!(conn.refusal(&again).await, "42P03");
    conn.send(&raw::query("ROLLBACK TO SAVEPOINT s")).await;
    conn.until_ready().await;
    // Two such Binds pipelined: the second is skipped (the transaction is
    // aborted), and neither's binding stays.
    let mut twice = raw::bind("p", "second");
    twice.extend(raw::sync());
    twice.extend(raw::bind("p", "third"));
    twice.extend(raw::sync());
    conn.send(&twice).await;
    for _ in 0..2 {
        let replies = conn.until_ready().await;
        assert!(replies.iter().any(|m| m.tag == b'E'), "{replies:?}");
    }
    conn.send(&raw::query("ROLLBACK TO SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut run = raw::execute("p", 0);
    run.extend(raw::sync());
    assert!(conn.first_row(&run).await.ends_with(b"first"));
    conn.send(&raw::query("COMMIT")).await;
    conn.until_ready().await;

    until_recorded(&env, |r| {
        r["event"] == "outcome" && r["tags"] == serde_json::json!(["COMMIT"])
    })
    .await;
    let records = records(&env);
    let number_of = |text: &str| {
        of_event(&records, "statement")
            .into_iter()
            .find(|r| r["text"] == text)
            .and_then(|r| r["statement"].as_u64())
            .unwrap_or_else(|| panic!("{text}: {records:#?}"))
    };
    let first = number_of("SELECT 'first'");
    let ran = of_event(&records, "outcome")
        .into_iter()
        .find(|r| r["tags"] == serde_json::json!(["SELECT 1"]))
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        ran["statements"],
        serde_json::json!([first]),
        "{records:#?}"
    );
}

/// A portal read in parts — an Execute with a row limit, then the rest in
/// a later cycle, as JDBC reads with a fetch size — is on the record
/// whole: every part is an outcome of the statement that bound the
/// portal, with its rows and (with `record_results`) its data, masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_read_in_parts_is_recorded_in_every_part() {
    let (env, mut conn) = analyst_recording_results().await;
    conn.send(&raw::query("BEGIN")).await;
    conn.until_ready().await;
    let mut first = raw::parse("cards", "SELECT pan FROM cards ORDER BY id LIMIT 3");
    first.extend(raw::bind("reader", "cards"));
    first.extend(raw::execute("reader", 1));
    let replies = rows_of_cycle(&mut conn, &first, 1).await;
    assert!(
        replies.iter().any(|m| m.tag == b's'),
        "suspended: {replies:?}"
    );
    rows_of_cycle(&mut conn, &raw::execute("reader", 0), 2).await;
    // A SQL cursor is a portal too, bound by no Bind: what an Execute of
    // it returns is still an outcome on the record.
    conn.send(&raw::query(
        "DECLARE listing CURSOR FOR SELECT pan FROM cards ORDER BY id LIMIT 4",
    ))
    .await;
    conn.until_ready().await;
    rows_of_cycle(&mut conn, &raw::execute("listing", 0), 4).await;
    conn.send(&raw::query("COMMIT")).await;
    conn.until_ready().await;

    let statement = |records: &[Value]| {
        of_event(records, "statement")
            .into_iter()
            .find(|r| r["text"] == "SELECT pan FROM cards ORDER BY id LIMIT 3")
            .and_then(|r| r["statement"].as_u64())
    };
    until_recorded(&env, |r| {
        r["event"] == "outcome" && r["tags"] == serde_json::json!(["COMMIT"])
    })
    .await;
    let records = records(&env);
    let number = statement(&records).unwrap_or_else(|| panic!("{records:#?}"));
    let parts: Vec<&Value> = of_event(&records, "outcome")
        .into_iter()
        .filter(|r| r["statements"] == serde_json::json!([number]))
        .collect();
    assert_eq!(parts.len(), 2, "{records:#?}");
    assert_eq!(parts[0]["rows"], 1);
    assert_eq!(
        parts[0]["suspended"], 1,
        "the first part stopped at its limit"
    );
    assert_eq!(parts[1]["rows"], 2);
    assert!(parts[1].get("suspended").is_none(), "the second ran out");
    assert_eq!(parts[1]["tags"], serde_json::json!(["SELECT 2"]));
    let returned: Vec<&Value> = parts
        .iter()
        .flat_map(|part| part["data"].as_array().expect("data").iter())
        .collect();
    assert_eq!(returned.len(), 3, "{parts:#?}");
    for row in returned {
        let pan = row[0].as_str().unwrap();
        assert!(pan.contains('*'), "masked: {pan}");
    }
    let unbound: Vec<&Value> = of_event(&records, "outcome")
        .into_iter()
        .filter(|r| r["statements"] == serde_json::json!([]))
        .collect();
    assert_eq!(unbound.len(), 1, "{records:#?}");
    assert_eq!(unbound[0]["rows"], 4);
    assert_eq!(unbound[0]["data"].as_array().map(Vec::len), Some(4));

    // Replayed: each part under its statement, the cursor's said to be
    // no statement's.
    let all = sluice::audit::read::Filter::default().apply(&records);
    let session = parts[0]["session"].as_u64().unwrap();
    let shown = sluice::audit::read::show_session(&all, session);
    for needle in [
        "returned: stopped at its row limit (rows left in the portal); 1 rows",
        "returned: SELECT 2; 2 rows",
        "returned (a portal no Bind made, such as a SQL cursor): SELECT 4; 4 rows",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }
}

/// An Execute answered before its cycle's Sync comes (the client sent
/// Flush and read the rows first) has its rows and tags on the record,
/// like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_before_the_sync_are_on_the_record() {
    let (env, mut conn) = analyst_recording_results().await;
    let text = "SELECT pan FROM cards ORDER BY id LIMIT 3";
    let mut flushed = raw::parse("", text);
    flushed.extend(raw::bind_execute(""));
    flushed.extend(raw::flush());
    conn.send(&flushed).await;
    let mut rows = 0;
    loop {
        let message = conn.recv().await.expect("the rows, then CommandComplete");
        match message.tag {
            b'D' => rows += 1,
            b'C' => break,
            b'Z' => panic!("ReadyForQuery before Sync"),
            _ => {}
        }
    }
    assert_eq!(rows, 3);
    conn.send(&raw::sync()).await;
    conn.until_ready().await;

    until_recorded(&env, |r| r["event"] == "outcome").await;
    let records = records(&env);
    let statement = of_event(&records, "statement")[0]["statement"].clone();
    let outcome = of_event(&records, "outcome")[0];
    assert_eq!(outcome["statements"], serde_json::json!([statement]));
    assert_eq!(
        outcome["tags"],
        serde_json::json!(["SELECT 3"]),
        "{outcome:#?}"
    );
    assert_eq!(outcome["rows"], 3);
    assert_eq!(outcome["data"].as_array().map(Vec::len), Some(3));
}

/// A session that ends while the server is still answering (here the
/// client leaves during a slow second statement, after reading the first
/// one's rows) leaves the outcome of what was returned, and why it did not
/// finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_cut_short_by_the_session_end_has_an_outcome() {
    let (env, mut conn) = analyst_recording_results().await;
    let mut first = raw::parse("", "SELECT pan FROM cards ORDER BY id LIMIT 2");
    first.extend(raw::bind_execute(""));
    first.extend(raw::flush());
    conn.send(&first).await;
    while conn.recv().await.expect("the first result").tag != b'C' {}
    let mut slow = raw::parse("", "SELECT pg_sleep(30)");
    slow.extend(raw::bind_execute_sync(""));
    conn.send(&slow).await;
    until_recorded(&env, |r| r["event"] == "statement" && r["statement"] == 2).await;
    drop(conn);

    until_recorded(&env, |r| r["event"] == "session_end").await;
    let records = records(&env);
    let outcomes = of_event(&records, "outcome");
    assert_eq!(outcomes.len(), 1, "{records:#?}");
    let outcome = outcomes[0];
    assert_eq!(outcome["statements"], serde_json::json!([1, 2]));
    assert_eq!(outcome["rows"], 2);
    assert_eq!(outcome["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(outcome["error"]["sqlstate"], "08006");
    let message = outcome["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("before the statement finished"),
        "{message}"
    );
    let end = of_event(&records, "session_end")[0];
    assert!(end["seq"].as_u64() > outcome["seq"].as_u64());
}

/// A fastpath FunctionCall is refused, and on the record as an attempt:
/// which function, refused, and the error the client got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_function_call_is_on_the_record() {
    let (env, mut conn) = analyst_recording_results().await;
    // pg_sleep is function 2626.
    conn.send(&raw::function_call(2626, "0.1")).await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.code(), "42501");

    until_recorded(&env, |r| r["event"] == "outcome").await;
    let records = records(&env);
    let statements = of_event(&records, "statement");
    assert_eq!(statements.len(), 1, "{records:#?}");
    let attempt = statements[0];
    assert_eq!(attempt["protocol"], "fastpath");
    assert_eq!(
        attempt["text"],
        "fastpath function call (function oid 2626)"
    );
    assert_eq!(attempt["decision"]["verdict"], "deny");
    let outcome = of_event(&records, "outcome")[0];
    assert_eq!(outcome["statements"], serde_json::json!([1]));
    assert_eq!(outcome["error"]["sqlstate"], "42501");
}

/// A login refused at startup, before any credential is asked for (here
/// a replication connection), is on the record as a failed login, with
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_at_startup_is_on_the_record() {
    let env = TestEnv::start_with_config(&audited_config(), false)
        .await
        .unwrap();
    let mut conn = RawConn::connect(env.addr()).await;
    let params = [
        ("user", "analyst"),
        ("database", env.database.as_str()),
        ("replication", "database"),
    ];
    conn.send(&raw::startup_message(0, &params)).await;
    assert_eq!(conn.expect_error().await.code(), "42501");

    until_recorded(&env, |r| r["event"] == "login_failed").await;
    let records = records(&env);
    let failed = of_event(&records, "login_failed");
    assert_eq!(failed.len(), 1, "{records:#?}");
    assert_eq!(failed[0]["user"], "analyst");
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("refused at startup") && reason.contains("replication"),
        "{reason}"
    );
}

/// The trail says which plugins were in force: the gateway's start names
/// them (each with its fingerprint), a reload that swaps in others is on
/// the record with what set it off, and a clean stop is the last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_in_force_are_on_the_record() {
    let env = TestEnv::start_with_config(&audited_config(), true)
        .await
        .unwrap();
    until_recorded(&env, |r| r["event"] == "gateway_start").await;
    let start = records(&env)[0].clone();
    assert_eq!(start["event"], "gateway_start", "{start:#?}");
    let plugins = |record: &Value| -> Vec<(String, String, String)> {
        record["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| {
                let field = |name: &str| p[name].as_str().unwrap_or_default().to_owned();
                (field("name"), field("hook"), field("fingerprint"))
            })
            .collect()
    };
    let at_start = plugins(&start);
    let names: Vec<(&str, &str)> = at_start
        .iter()
        .map(|(name, hook, _)| (name.as_str(), hook.as_str()))
        .collect();
    assert_eq!(names, [("rules", "policy"), ("pans", "masking")]);
    assert!(
        at_start.iter().all(|(_, _, f)| f.len() >= 16),
        "{at_start:?}"
    );

    // A session asks, back to back, what only the new rules deny.
    let client = env.connect("analyst").await;
    let asking = tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if client.simple_query("SELECT 'other'").await.is_err() {
                return true;
            }
        }
        false
    });
    env.rewrite_config(&audited_config().replace("\"forbidden\"", "\"other\""));
    assert!(asking.await.unwrap(), "the new rules never denied");
    until_recorded(&env, |r| r["event"] == "plugins_reloaded").await;
    until_recorded(&env, |r| r["decision"]["verdict"] == "deny").await;
    let records = records(&env);
    let reload = of_event(&records, "plugins_reloaded")[0];
    // The reload is on the record before anything the new plugins judged.
    let first_denial = records
        .iter()
        .find(|r| r["decision"]["verdict"] == "deny")
        .expect("the denial");
    assert!(
        reload["seq"].as_u64() < first_denial["seq"].as_u64(),
        "{reload:#?} came after {first_denial:#?}"
    );
    assert!(
        reload["cause"]
            .as_str()
            .is_some_and(|c| c.contains("changed")),
        "{reload:#?}"
    );
    let fingerprint = |plugins: &[(String, String, String)], name: &str| {
        plugins.iter().find(|p| p.0 == name).map(|p| p.2.clone())
    };
    let reloaded = plugins(reload);
    assert_ne!(
        fingerprint(&reloaded, "rules"),
        fingerprint(&at_start, "rules")
    );
    assert_eq!(
        fingerprint(&reloaded, "pans"),
        fingerprint(&at_start, "pans")
    );

    let path = trail(&env);
    env.gateway.shutdown().await;
    let records = sluice::audit::read::read(&path).unwrap().records;
    assert_eq!(records.last().unwrap()["event"], "gateway_stop");
}

/// A session sluice ends has why on the record, as its client was told it
/// (SQLSTATE and message): here an idle one, which has no outcome to say
/// it, ended at a shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sluice_ends_has_its_reason_on_the_record() {
    let env = TestEnv::start_with_config(&audited_config(), false)
        .await
        .unwrap();
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 1").await.unwrap();
    let path = trail(&env);
    env.gateway.shutdown().await;
    drop(client);
    let records = sluice::audit::read::read(&path).unwrap().records;
    let end = records
        .iter()
        .rfind(|r| r["event"] == "session_end")
        .expect("the session's end");
    assert_eq!(
        end["reason"],
        "sluice ended it (57P01): terminating connection: sluice is shutting down"
    );
}

/// A session the upstream server refuses has why on the record: the
/// server's SQLSTATE, and what the client was told. Here a database the
/// config routes but the server does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_upstream_refuses_has_its_reason_on_the_record() {
    let env = TestEnv::start_with_config_and(&audited_config(), |settings| {
        settings.upstream.databases.insert("not_there".to_owned());
    })
    .await
    .unwrap();
    let mut config = env.config("analyst");
    config.dbname("not_there");
    let error = sluice_tests::connect(&config).await.expect_err("refused");
    assert_eq!(sluice_tests::sqlstate(&error), Some("3D000"), "{error}");
    let path = trail(&env);
    env.gateway.shutdown().await;
    let records = sluice::audit::read::read(&path).unwrap().records;
    let end = records
        .iter()
        .rfind(|r| r["event"] == "session_end")
        .expect("the session's end");
    let reason = end["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the upstream server refused it (3D000): the client was told (3D000) ")
            && reason.contains("not_there"),
        "{reason}"
    );
}

/// With `record_results`, what each statement returned is on the record as
/// the client got it — card numbers masked — up to the byte cap, and a
/// result larger than the cap is marked cut; COPY TO STDOUT data too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_data_is_recorded_masked_up_to_the_cap() {
    let env = TestEnv::start_with_config(&recording_results("result_bytes = 300\n"), false)
        .await
        .unwrap();
    let client = env.connect("admin").await;
    let pan = "4111111111111111";
    client
        .simple_query(&format!(
            "SELECT 'card {pan}' AS note, 42 AS n, NULL AS nothing"
        ))
        .await
        .unwrap();
    // Binary format (tokio-postgres's extended protocol), a masked number.
    client
        .query_one(&format!("SELECT {pan}::int8 AS n"), &[])
        .await
        .unwrap();
    let all = client.simple_query("SELECT pan FROM cards").await.unwrap();
    assert!(all.len() > 20);
    // Two statements in one query: the cap is each statement's, and the
    // rows say whose they are.
    client
        .simple_query("SELECT pan FROM cards; SELECT 'after' AS tail")
        .await
        .unwrap();
    // COPY TO STDOUT: each row is recorded as the line the client got.
    let copied = sluice_tests::copy_out(
        &client,
        &format!("COPY (SELECT 'card {pan}' AS note, 42 AS n) TO STDOUT"),
    )
    .await
    .unwrap();
    assert_eq!(copied, b"card 411111******1111\t42\n");
    let csv = sluice_tests::copy_out(
        &client,
        "COPY (SELECT pan FROM cards) TO STDOUT (FORMAT csv)",
    )
    .await
    .unwrap();
    drop(client);
    until_recorded(&env, |r| r["event"] == "session_end").await;

    let records = records(&env);
    let outcomes = of_event(&records, "outcome");
    assert_eq!(
        outcomes[0]["data"],
        serde_json::json!([["card 411111******1111", "42", null]])
    );
    assert_eq!(outcomes[0]["data_truncated"], false);
    // The int8 in binary: its bytes as hex, the hidden digits zeroed (the
    // raw 4111111111111111 would be 0x000e9b08a568f1c7).
    let binary = outcomes[1]["data"][0][0].as_str().unwrap();
    assert!(binary.starts_with("\\x"), "{binary}");
    assert_ne!(binary, "\\x000e9b08a568f1c7");
    assert_eq!(
        i64::from_str_radix(&binary[2..], 16).unwrap(),
        4_111_110_000_001_111
    );
    // The whole table does not fit in 300 bytes: cut, and no raw card.
    let kept = outcomes[2]["data"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.len() < all.len() - 1, "{kept:?}");
    assert_eq!(outcomes[2]["data_truncated"], true);
    let pair = outcomes[3];
    let first = pair["data_results"][0]["rows"].as_u64().unwrap() as usize;
    assert_eq!(first, kept.len(), "{pair}");
    assert_eq!(
        pair["data_results"],
        serde_json::json!([{"rows": first, "truncated": true}, {"rows": 1, "truncated": false}])
    );
    let rows = pair["data"].as_array().unwrap();
    assert_eq!(rows.len(), first + 1, "{pair}");
    assert_eq!(rows[first], serde_json::json!(["after"]));
    let shown = sluice::audit::read::show_session(
        &sluice::audit::read::Filter::default().apply(&records),
        pair["session"].as_u64().unwrap(),
    );
    assert!(
        shown.contains("      result 2:\n      [\"after\"]"),
        "{shown}"
    );
    assert_eq!(
        outcomes[4]["data"],
        serde_json::json!([["card 411111******1111\t42"]])
    );
    assert_eq!(outcomes[4]["data_truncated"], false);
    assert_eq!(outcomes[4]["tags"], serde_json::json!(["COPY 1"]));
    // A COPY larger than the cap: its first lines, as sent, then cut.
    let kept = outcomes[5]["data"].as_array().unwrap();
    let sent: Vec<&str> = std::str::from_utf8(&csv).unwrap().lines().collect();
    assert!(!kept.is_empty() && kept.len() < sent.len(), "{kept:?}");
    for (row, line) in kept.iter().zip(&sent) {
        assert_eq!(row, &serde_json::json!([line]));
    }
    assert_eq!(outcomes[5]["data_truncated"], true);
    // Rows of nothing still cost room: a result of empty values is cut
    // like any other, not kept whole.
    let client = env.connect("admin").await;
    client
        .simple_query("SELECT '' AS empty FROM generate_series(1, 5000)")
        .await
        .unwrap();
    drop(client);
    until_recorded(&env, |r| {
        r["event"] == "outcome" && r["tags"] == serde_json::json!(["SELECT 5000"])
    })
    .await;
    let records = self::records(&env);
    let empties = records
        .iter()
        .find(|r| r["event"] == "outcome" && r["tags"] == serde_json::json!(["SELECT 5000"]))
        .unwrap();
    let kept = empties["data"].as_array().unwrap().len();
    assert!(kept > 0 && kept <= 300 / 6, "{kept} rows kept");
    assert_eq!(empties["data_truncated"], true);
    let text = std::fs::read_to_string(trail(&env)).unwrap();
    assert!(!text.contains(pan));
}

/// An audit database of the test's own in the shared cluster, owned by the
/// service role (which then makes the tables), and a key for its chains.
struct AuditDatabase {
    name: String,
    key: tempfile::TempDir,
}

impl AuditDatabase {
    async fn create() -> AuditDatabase {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "audit_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let sql = format!(
            "CREATE DATABASE {name} OWNER {};",
            sluice_tests::SERVICE_ROLE
        );
        tokio::task::spawn_blocking(move || {
            sluice_tests::shared_cluster().psql("postgres", &sql);
        })
        .await
        .unwrap();
        let key = tempfile::tempdir().unwrap();
        let path = key.path().join("audit.key");
        std::fs::write(&path, format!("{}\n", "5a".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        AuditDatabase { name, key }
    }

    fn key(&self) -> sluice::audit::ChainKey {
        sluice::audit::ChainKey::load(&self.key.path().join("audit.key")).unwrap()
    }

    /// The `[audit]` tables of a gateway recording here as `instance`.
    fn config(&self, instance: &str) -> String {
        self.config_through(instance, sluice_tests::shared_cluster().port)
    }

    /// The same, reaching the database through `port` on loopback.
    fn config_through(&self, instance: &str, port: u16) -> String {
        format!(
            "[audit]\ninstance = \"{instance}\"\nkey_file = \"{}\"\n\n\
             [audit.postgres]\nurl = \"postgres://{}@127.0.0.1:{}/{}\"\n\
             password_env = \"SLUICE_TEST_UPSTREAM_PASSWORD\"\n\n\
             [[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n",
            self.key.path().join("audit.key").display(),
            sluice_tests::SERVICE_ROLE,
            port,
            self.name
        )
    }

    fn settings(&self) -> sluice::config::UpstreamSettings {
        sluice_tests::settings_from(&sluice_tests::config_text(1, "x", &self.config("any")))
            .audit
            .unwrap()
            .postgres
            .unwrap()
    }

    async fn read(&self) -> sluice::audit::postgres::PgTrail {
        sluice::audit::postgres::read_all(&self.settings())
            .await
            .unwrap()
    }

    async fn verify(&self, instance: &str) -> sluice::audit::verify::Report {
        let trail = self.read().await;
        let chain = trail
            .instances
            .iter()
            .find(|t| t.instance == instance)
            .unwrap_or_else(|| panic!("no chain for {instance}"));
        sluice::audit::verify::verify_rows(
            &format!("postgres:{instance}"),
            &chain.lines,
            chain.head.as_deref(),
            &self.key(),
        )
    }

    /// A session of `env` that ran `SELECT 1`, once its outcome (recorded
    /// without waiting) is in the database.
    async fn one_statement_recorded(&self, env: &TestEnv) -> tokio_postgres::Client {
        let client = env.connect("analyst").await;
        client.simple_query("SELECT 1").await.unwrap();
        let outcome_written = eventually(Duration::from_secs(10), || async {
            self.sql(
                "SELECT count(*) FROM public.sluice_audit WHERE record_json->>'event' = 'outcome'",
            )
            .await
            .trim()
                == "1"
        })
        .await;
        assert!(outcome_written);
        client
    }

    /// Every record in the database, every instance's.
    async fn records(&self) -> sluice::audit::read::Records {
        let trail = self.read().await;
        sluice::audit::read::Records::from_lines(
            trail
                .instances
                .iter()
                .flat_map(|t| t.lines.iter().map(Vec::as_slice)),
        )
    }

    /// A gateway recording here as `instance`, through a relay the test
    /// can cut or silence.
    async fn gateway_through_a_relay(&self, instance: &str) -> (CuttingRelay, TestEnv) {
        let relay = CuttingRelay::start().await;
        let env = TestEnv::start_with_config(&self.config_through(instance, relay.port), false)
            .await
            .unwrap();
        (relay, env)
    }

    /// `instance`'s chain verifies, and its statements are `texts`.
    async fn assert_whole_with_statements(&self, instance: &str, texts: &[&str]) {
        let report = self.verify(instance).await;
        assert!(report.ok(), "{report}");
        let recorded: Vec<String> = of_event(&self.records().await.records, "statement")
            .iter()
            .filter_map(|s| s["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(recorded, texts);
    }

    /// The server process of the audit connection into this database.
    async fn sinks_backend(&self) -> u32 {
        let pid = self
            .sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'sluice audit' AND datname = current_database()")
            .await;
        pid.trim()
            .parse()
            .unwrap_or_else(|_| panic!("one audit connection: {pid:?}"))
    }

    /// Ends the audit connection into this database, and waits until the
    /// server has let it go.
    async fn end_the_sinks_connection(&self) {
        let pid = self.sinks_backend().await;
        self.sql(&format!("SELECT pg_terminate_backend({pid})"))
            .await;
        let gone = eventually(Duration::from_secs(10), || {
            let query = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
            async move { self.sql(&query).await.trim() == "0" }
        })
        .await;
        assert!(gone);
    }

    /// `ALTER DATABASE` of this database (from another: it may be made
    /// read-only).
    async fn alter_database(&self, change: &str) {
        let sql = format!("ALTER DATABASE {} {change}", self.name);
        tokio::task::spawn_blocking(move || sluice_tests::shared_cluster().psql("postgres", &sql))
            .await
            .unwrap();
    }

    async fn sql(&self, sql: &str) -> String {
        let (name, sql) = (self.name.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || sluice_tests::shared_cluster().psql(&name, &sql))
            .await
            .unwrap()
    }
}

/// The PostgreSQL sink: two gateway instances record into one audit
/// database at once, each its own chain; a restarted instance continues
/// its chain; a changed or deleted row fails verification and stops an
/// instance from continuing; a database that refuses the writes makes the
/// gateway refuse statements — and no card number reaches a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_keep_their_own_chains_in_an_audit_database() {
    let db = AuditDatabase::create().await;
    let pan = "4111111111111111";
    let a = TestEnv::start_with_config(&db.config("gw-a"), false)
        .await
        .unwrap();
    let b = TestEnv::start_with_config(&db.config("gw-b"), false)
        .await
        .unwrap();
    let (ca, cb) = (a.connect("analyst").await, b.connect("agent").await);
    let run = |client: tokio_postgres::Client, label: &'static str| async move {
        for n in 0..20 {
            client
                .simple_query(&format!("SELECT {n} AS {label}, '{pan}' AS card"))
                .await
                .unwrap();
        }
    };
    tokio::join!(run(ca, "a"), run(cb, "b"));
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;

    let trail = db.read().await;
    let names: Vec<&str> = trail
        .instances
        .iter()
        .map(|t| t.instance.as_str())
        .collect();
    assert_eq!(names, ["gw-a", "gw-b"]);
    for instance in ["gw-a", "gw-b"] {
        let report = db.verify(instance).await;
        assert!(report.ok(), "{report}");
        // Gateway start, session start, 20 statements and their
        // outcomes, session end, gateway stop.
        assert_eq!(report.last_seq, Some(44), "{report}");
    }
    let records = sluice::audit::read::Records::from_lines(
        trail
            .instances
            .iter()
            .flat_map(|t| t.lines.iter().map(Vec::as_slice)),
    );
    assert_eq!(records.unreadable, 0);
    let statements = of_event(&records.records, "statement");
    assert_eq!(statements.len(), 40);
    assert!(
        statements
            .iter()
            .any(|r| r["instance"] == "gw-b" && r["principal"] == "agent")
    );
    let stored = db
        .sql("SELECT string_agg(record, '') FROM sluice_audit")
        .await;
    assert!(!stored.contains(pan), "a card number in the audit database");
    // The jsonb column answers SQL about the trail.
    let denied = db
        .sql("SELECT count(*) FROM sluice_audit WHERE record_json->>'event' = 'statement' AND record_json->>'principal' = 'agent'")
        .await;
    assert_eq!(denied.trim(), "20");

    // A restarted instance continues its chain.
    let again = TestEnv::start_with_config(&db.config("gw-a"), false)
        .await
        .unwrap();
    again
        .connect("analyst")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    again.gateway.shutdown().await;
    let report = db.verify("gw-a").await;
    assert!(report.ok(), "{report}");
    // Again: gateway start, session start, a statement and its outcome,
    // session end, gateway stop.
    assert_eq!(report.last_seq, Some(50), "{report}");

    // A changed row is found, and the instance does not continue on it.
    db.sql("UPDATE sluice_audit SET record = replace(record, 'SELECT 3 ', 'SELECT 4 ') WHERE instance = 'gw-a' AND record LIKE '%SELECT 3 %'")
        .await;
    let report = db.verify("gw-a").await;
    assert!(
        report
            .problems()
            .any(|f| matches!(f.kind, sluice::audit::verify::FindingKind::Modified)),
        "{report}"
    );
    // gw-b's chain is untouched by gw-a's.
    assert!(db.verify("gw-b").await.ok());
    // Cut off the end: the head names a record no longer there.
    db.sql("DELETE FROM sluice_audit WHERE instance = 'gw-b' AND seq = 44")
        .await;
    let report = db.verify("gw-b").await;
    assert!(
        report
            .problems()
            .any(|f| matches!(f.kind, sluice::audit::verify::FindingKind::CutShort { .. })),
        "{report}"
    );
    let refused = TestEnv::start_with_config(&db.config("gw-b"), false)
        .await
        .err()
        .expect("a cut chain is not continued");
    assert!(refused.contains("cannot be continued"), "{refused}");

    // A database that refuses the writes: statements are refused, closed.
    let c = TestEnv::start_with_config(&db.config("gw-c"), false)
        .await
        .unwrap();
    let client = c.connect("analyst").await;
    db.sql(&format!(
        "REVOKE INSERT ON sluice_audit FROM {}",
        sluice_tests::SERVICE_ROLE
    ))
    .await;
    let error = client.simple_query("SELECT 1").await.unwrap_err();
    let (code, message) = code_and_message(&error);
    assert_eq!(code, "58000", "{message}");
    assert!(c.gateway.shared.audit.failure().is_some());
}

/// A refusal's reason can quote what the client sent — here a statement
/// name that is a card number — and reaches the record masked like the
/// text; a Bind of `DISCARD ALL`, which forgets every prepared statement
/// when judged, is on the record with its own text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_quoting_the_client_is_masked_and_a_discard_keeps_its_text() {
    let (env, mut conn) = analyst_recording_results().await;
    let pan = "4111111111111111";
    let mut unknown = raw::bind("", pan);
    unknown.extend(raw::execute("", 0));
    unknown.extend(raw::sync());
    conn.send(&unknown).await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.code(), "26000");

    let mut discard = raw::parse("", "DISCARD ALL");
    discard.extend(raw::bind("", ""));
    discard.extend(raw::execute("", 0));
    discard.extend(raw::sync());
    conn.send(&discard).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");

    until_recorded(&env, |r| {
        r["event"] == "outcome" && r["tags"][0] == "DISCARD ALL"
    })
    .await;
    let records = records(&env);
    let statements = of_event(&records, "statement");
    assert_eq!(statements.len(), 2, "{records:#?}");
    let refused = &statements[0]["decision"];
    assert_eq!(refused["verdict"], "error");
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("411111******1111"), "{reason}");
    assert_eq!(statements[1]["text"], "DISCARD ALL");
    let file = std::fs::read(trail(&env)).unwrap();
    assert!(
        !file.windows(pan.len()).any(|w| w == pan.as_bytes()),
        "a raw card number is in the trail"
    );
}

/// A statement whose text the masking plugin fails on is refused, and the
/// attempt is on the record all the same: its words withheld, the verdict
/// `error` with why, and its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_text_cannot_be_masked_is_refused_on_the_record() {
    let config = format!(
        "[audit]\nfile = \"audit.jsonl\"\nfsync = \"always\"\n\n\
         [[plugins]]\nname = \"needle\"\nhook = \"masking\"\npath = \"{}\"\n\
         [plugins.config]\nneedle = \"4111111111111111\"\npanic_on = \"boom\"\n",
        guest::GUEST_MASK_NEEDLE
    );
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let client = env.connect("analyst").await;
    let refused = client.simple_query("SELECT 'boom'").await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "58000");
    // The session goes on.
    client.simple_query("SELECT 1").await.unwrap();

    until_recorded(&env, |r| {
        r["event"] == "outcome" && r["tags"][0] == "SELECT 1"
    })
    .await;
    let records = records(&env);
    let statements = of_event(&records, "statement");
    assert_eq!(statements.len(), 2, "{records:#?}");
    let attempt = statements[0];
    assert_eq!(attempt["text"], "[withheld: masking failed]");
    assert_eq!(attempt["decision"]["verdict"], "error");
    let reason = attempt["decision"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("could not be masked"), "{reason}");
    let outcome = of_event(&records, "outcome")
        .into_iter()
        .find(|o| o["statements"] == serde_json::json!([attempt["statement"]]))
        .expect("the attempt's outcome");
    assert_eq!(outcome["error"]["sqlstate"], "58000");
}

/// An error too large for sluice to hold is replaced by its own (54000):
/// the statement's outcome says it failed, with that SQLSTATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_error_is_the_outcome_of_its_statement() {
    let config = format!(
        "{}\n[limits]\nmax_held_server_message_bytes = 262144\n",
        audited_config()
    );
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let mut conn = RawConn::login(env.addr(), &env.database, "analyst", "analyst-demo-token").await;
    conn.send(&raw::query(
        "DO $$ BEGIN RAISE EXCEPTION '%', repeat('e', 300000); END $$",
    ))
    .await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.code(), "54000");

    until_recorded(&env, |r| r["event"] == "outcome").await;
    let records = records(&env);
    let outcome = of_event(&records, "outcome")[0];
    assert_eq!(outcome["error"]["sqlstate"], "54000", "{records:#?}");
}

/// Startup `options` the policies allowed run at login, before any
/// statement: they are on the record with the session's start, and its
/// replay shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_startup_options_are_on_the_record() {
    let env = TestEnv::start_with_config(&audited_config(), false)
        .await
        .unwrap();
    let mut config = env.config("analyst");
    config.options("-c statement_timeout=5s");
    let client = sluice_tests::connect(&config).await.unwrap();
    let timeout = client.simple_query("SHOW statement_timeout").await.unwrap();
    assert!(format!("{timeout:?}").contains("5s"), "{timeout:?}");
    drop(client);

    until_recorded(&env, |r| r["event"] == "session_end").await;
    let records = records(&env);
    let start = of_event(&records, "session_start")[0];
    assert_eq!(start["options"], "SET statement_timeout TO '5s'");
    let session = start["session"].as_u64().unwrap();
    let shown = sluice::audit::read::show_session(
        &sluice::audit::read::Filter::default().apply(&records),
        session,
    );
    assert!(
        shown.contains("startup options, run at login: SET statement_timeout TO '5s'"),
        "{shown}"
    );

    // The other parameters the server gets are on the record too: they
    // change how what follows runs.
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&raw::startup_message(
        0,
        &[
            ("user", "analyst"),
            ("database", env.database.as_str()),
            ("TimeZone", "Pacific/Auckland"),
            ("DateStyle", "SQL, DMY"),
        ],
    ))
    .await;
    conn.authenticate(sluice_tests::token_of("analyst")).await;
    conn.until_ready().await;
    drop(conn);
    until_recorded(&env, |r| {
        r["event"] == "session_start" && r.get("parameters").is_some()
    })
    .await;
    let now = self::records(&env);
    let start = now
        .iter()
        .find(|r| r["event"] == "session_start" && r.get("parameters").is_some())
        .unwrap();
    assert_eq!(
        start["parameters"],
        serde_json::json!({"TimeZone": "Pacific/Auckland", "DateStyle": "SQL, DMY"})
    );
    let shown = sluice::audit::read::show_session(
        &sluice::audit::read::Filter::default().apply(&now),
        start["session"].as_u64().unwrap(),
    );
    assert!(
        shown.contains("startup parameters, passed to the server: DateStyle=SQL, DMY, TimeZone=Pacific/Auckland"),
        "{shown}"
    );
}

/// A session whose start is on the record has an end there, however it
/// stops: here the login times out while the upstream server (a listener
/// that never answers) is being connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_timed_out_after_its_start_was_recorded_has_an_end() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let env = TestEnv::start_with_config_and(&audited_config(), |settings| {
        settings.upstream.port = silent_port;
        settings.upstream.connect_timeout = Duration::from_secs(30);
        settings.limits.login_timeout = Duration::from_millis(1500);
    })
    .await
    .unwrap();
    let refused = sluice_tests::connect(&env.config("analyst")).await;
    assert!(refused.is_err(), "the login cannot finish");

    until_recorded(&env, |r| r["event"] == "session_end").await;
    let records = records(&env);
    let start = of_event(&records, "session_start")[0];
    let end = of_event(&records, "session_end")[0];
    assert_eq!(end["session"], start["session"]);
    assert_eq!(end["statements"], 0);
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("before its first statement"), "{reason}");
    drop(silent);
}

/// The PostgreSQL sink never rotates: an instance's oldest rows deleted
/// fail verification, and so does an instance the operator names whose
/// rows and head row are all gone. Rows relabelled from one instance to
/// another fail too, and the instance they were moved to does not
/// continue the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_deleted_or_relabelled_in_an_audit_database_fail_verification() {
    use sluice::audit::verify::{Chains, FindingKind, verify_database};
    let db = AuditDatabase::create().await;
    for instance in ["gw-a", "gw-b", "gw-c"] {
        let env = TestEnv::start_with_config(&db.config(instance), false)
            .await
            .unwrap();
        env.connect("analyst")
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap();
        env.gateway.shutdown().await;
    }
    let reports = verify_database(&db.read().await, Chains::Found { expected: &[] }, &db.key());
    assert_eq!(reports.len(), 3);
    for report in &reports {
        assert!(report.ok(), "{report}");
    }

    // gw-a's two oldest rows deleted: its chain starts at seq 3.
    db.sql("DELETE FROM sluice_audit WHERE instance = 'gw-a' AND seq <= 2")
        .await;
    let report = db.verify("gw-a").await;
    let problems: Vec<_> = report.problems().map(|f| (f.seq, &f.kind)).collect();
    assert_eq!(
        problems,
        [(Some(3), &FindingKind::RowsMissingAtStart)],
        "{report}"
    );

    // Everything of gw-c deleted: unnamed, nothing is left to check; named,
    // it is a problem.
    db.sql(
        "DELETE FROM sluice_audit WHERE instance = 'gw-c'; \
         DELETE FROM sluice_audit_head WHERE instance = 'gw-c'",
    )
    .await;
    let trail = db.read().await;
    let named = verify_database(&trail, Chains::Named(&["gw-c".to_owned()]), &db.key());
    assert_eq!(named.len(), 1);
    assert!(!named[0].ok(), "{}", named[0]);
    assert_eq!(named[0].findings[0].kind, FindingKind::InstanceMissing);
    let all = verify_database(&trail, Chains::Found { expected: &[] }, &db.key());
    let places: Vec<_> = all.iter().map(|r| r.path.display().to_string()).collect();
    assert_eq!(places, ["postgres:gw-a", "postgres:gw-b"]);

    // gw-b's rows and head row relabelled as gw-d's.
    db.sql(
        "UPDATE sluice_audit SET instance = 'gw-d' WHERE instance = 'gw-b'; \
         UPDATE sluice_audit_head SET instance = 'gw-d' WHERE instance = 'gw-b'",
    )
    .await;
    let report = db.verify("gw-d").await;
    assert!(!report.ok(), "{report}");
    assert!(
        report.problems().all(|f| f.kind
            == FindingKind::WrongInstance {
                expected: "gw-d".to_owned(),
                found: "gw-b".to_owned(),
            }),
        "{report}"
    );
    assert_eq!(report.problems().count() as u64, report.records, "{report}");
    let refused = TestEnv::start_with_config(&db.config("gw-d"), false)
        .await
        .err()
        .expect("a chain relabelled from another instance is not continued");
    assert!(
        refused.contains("cannot be continued") && refused.contains("\"gw-b\""),
        "{refused}"
    );
}

/// A trigger that drops the audit rows (a BEFORE INSERT returning NULL)
/// commits without an error: sluice checks each row came back as stored,
/// and refuses the statement it could not record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_database_that_drops_rows_refuses_statements() {
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-t"), false)
        .await
        .unwrap();
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 1").await.unwrap();

    let name = db.name.clone();
    tokio::task::spawn_blocking(move || {
        sluice_tests::shared_cluster().psql(
            &name,
            "CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;\n\
             CREATE TRIGGER drop_rows BEFORE INSERT ON sluice_audit FOR EACH ROW EXECUTE FUNCTION drop_row();",
        );
    })
    .await
    .unwrap();

    let refused = client.simple_query("SELECT 2").await.unwrap_err();
    let (code, message) = code_and_message(&refused);
    assert_eq!(code, "58000", "{message}");
    let failure = env.gateway.shared.audit.failure().expect("the sink failed");
    assert!(failure.contains("did not store"), "{failure}");
}

/// The audit tables are named with their schema, and the audit
/// connection's `search_path` is the catalog alone: a `sluice_audit` table
/// in a schema earlier on the database's path (which another role could
/// make and read) neither takes the records nor is read as the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_earlier_on_the_search_path_does_not_take_the_records() {
    let db = AuditDatabase::create().await;
    db.sql(
        "CREATE SCHEMA shadow; \
         CREATE TABLE shadow.sluice_audit (instance text, seq bigint, record text, record_json jsonb); \
         CREATE TABLE shadow.sluice_audit_head (instance text PRIMARY KEY, seq bigint, head text); \
         GRANT ALL ON SCHEMA shadow TO PUBLIC; GRANT ALL ON ALL TABLES IN SCHEMA shadow TO PUBLIC",
    )
    .await;
    db.alter_database("SET search_path = shadow, public").await;

    let env = TestEnv::start_with_config(&db.config("gw-path"), false)
        .await
        .unwrap();
    db.one_statement_recorded(&env).await;
    env.gateway.shutdown().await;

    let shadowed = db
        .sql("SELECT (SELECT count(*) FROM shadow.sluice_audit) + (SELECT count(*) FROM shadow.sluice_audit_head)")
        .await;
    assert_eq!(shadowed.trim(), "0", "records went to the shadowing tables");
    let recorded = db
        .sql("SELECT count(*) FROM public.sluice_audit WHERE record_json->>'event' = 'statement'")
        .await;
    assert_eq!(recorded.trim(), "1");
    let report = db.verify("gw-path").await;
    assert!(report.ok(), "{report}");

    // A schema of the operator's choosing, which the role owns (on
    // PostgreSQL 15, `public` takes no CREATE but from its owner).
    db.sql(&format!(
        "CREATE SCHEMA trail AUTHORIZATION {}",
        sluice_tests::SERVICE_ROLE
    ))
    .await;
    let config = db.config("gw-trail").replace(
        "[audit.postgres]\n",
        "[audit.postgres]\nschema = \"trail\"\n",
    );
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 1").await.unwrap();
    env.gateway.shutdown().await;
    let recorded = db
        .sql("SELECT count(*) FROM trail.sluice_audit WHERE record_json->>'event' = 'statement'")
        .await;
    assert_eq!(recorded.trim(), "1");
    let mut settings = db.settings();
    settings.schema = "trail".to_owned();
    let trail = sluice::audit::postgres::read_all(&settings).await.unwrap();
    let chain = trail
        .instances
        .iter()
        .find(|t| t.instance == "gw-trail")
        .expect("the chain in the schema named");
    let report = sluice::audit::verify::verify_rows(
        "postgres:gw-trail",
        &chain.lines,
        chain.head.as_deref(),
        &db.key(),
    );
    assert!(report.ok(), "{report}");
}

/// A Bind value with a NUL byte in it (PostgreSQL refuses it in text, but
/// only once it runs; the record comes first) is recorded with U+FFFD for
/// the NUL: as `\u0000` its record was refused by the audit table's
/// `jsonb` column, which stopped the sink and with it every statement of
/// the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_parameter_does_not_stop_the_audit_database() {
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-nul"), false)
        .await
        .unwrap();
    let mut conn = RawConn::login(
        env.addr(),
        &env.database,
        "analyst",
        sluice_tests::token_of("analyst"),
    )
    .await;
    // Bind: unnamed portal and statement, one text parameter "a\0b".
    let mut body = vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 3];
    body.extend_from_slice(b"a\0b");
    body.extend_from_slice(&[0, 0]);
    let mut messages = raw::parse("", "SELECT $1::text");
    messages.extend(raw::message(b'B', &body));
    messages.extend(raw::execute("", 0));
    messages.extend(raw::sync());
    conn.send(&messages).await;
    let error = conn.expect_error().await;
    // The server's refusal of the value, not sluice's of the record.
    assert_eq!(error.code(), "22021", "{error:?}");
    conn.until_ready().await;
    // The gateway still records, and so still serves.
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 1").await.unwrap();
    let recorded = eventually(Duration::from_secs(10), || {
        let db = &db;
        async move {
            db.sql("SELECT count(*) FROM sluice_audit WHERE strpos(record, 'a\\ufffdb') > 0")
                .await
                .trim()
                == "1"
        }
    })
    .await;
    assert!(
        recorded,
        "{}",
        db.sql("SELECT record FROM sluice_audit").await
    );
    assert!(db.verify("gw-nul").await.ok());
}

/// The audit database lost (its connection ended, as a restart or a
/// failover ends it): statements are refused while it is gone, the
/// gateway reconnects on its own, the records no one waited on (the
/// refused session's end) are written once it is back, and the chain —
/// read while the gateway writes it — verifies throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_database_that_goes_away_is_reconnected() {
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-r"), false)
        .await
        .unwrap();
    let client = db.one_statement_recorded(&env).await;

    // The sink's idle connection ended by the server (an idle timeout, an
    // administrator): nothing was in flight, so the next record reconnects
    // and its statement runs.
    db.end_the_sinks_connection().await;
    client
        .simple_query("SELECT 'after an idle close'")
        .await
        .unwrap();
    assert_eq!(env.gateway.shared.audit.stats().unwrap().outages, 0);

    // The database turned read-only (as a demoted primary is) and the
    // sink's connection ended again: the next statement's record finds no
    // primary to go to.
    db.alter_database("SET default_transaction_read_only = on")
        .await;
    db.end_the_sinks_connection().await;
    let refused = client.simple_query("SELECT 2").await.unwrap_err();
    let (code, message) = code_and_message(&refused);
    assert_eq!(code, "58000", "{message}");
    // Meanwhile a new session is refused before it logs in, and the
    // read-only server is passed over.
    let Err(refused) = sluice_tests::connect(&env.config("analyst")).await else {
        panic!("a session while the trail takes no records");
    };
    assert_eq!(sluice_tests::sqlstate(&refused), Some("58000"), "{refused}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.gateway.shared.audit.failure().is_some());
    db.alter_database("RESET default_transaction_read_only")
        .await;

    // Back on its own, and counted.
    let back = eventually(Duration::from_secs(15), || async {
        env.gateway.shared.audit.failure().is_none()
    })
    .await;
    assert!(back, "{:?}", env.gateway.shared.audit.failure());
    assert_eq!(env.gateway.shared.audit.stats().unwrap().outages, 1);

    // Statements run and are recorded again; the chain, read from one
    // snapshot while they are written, is whole each time.
    let client = env.connect("analyst").await;
    let writing = async {
        for n in 0..200 {
            client
                .simple_query(&format!("SELECT {n} AS again"))
                .await
                .unwrap();
        }
    };
    let reading = async {
        for _ in 0..10 {
            let report = db.verify("gw-r").await;
            assert!(report.ok(), "{report}");
        }
    };
    tokio::join!(writing, reading);
    drop(client);
    env.gateway.shutdown().await;

    let report = db.verify("gw-r").await;
    assert!(report.ok(), "{report}");
    let records = db.records().await;
    let statements = of_event(&records.records, "statement");
    let texts: Vec<&str> = statements
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    // The refused statement's record never committed; every other one is
    // there, and so is the end of the session cut off while the database
    // was gone, kept until it was back.
    assert!(!texts.contains(&"SELECT 2"), "{texts:?}");
    assert_eq!(texts.len(), 202, "{texts:?}");
    assert!(texts.contains(&"SELECT 'after an idle close'"), "{texts:?}");
    let ends = of_event(&records.records, "session_end");
    assert_eq!(ends.len(), 2, "{:#?}", records.records);
    // And the trail says where it was interrupted, and what was refused.
    let outages = of_event(&records.records, "audit_outage");
    assert_eq!(outages.len(), 1, "{:#?}", records.records);
    assert!(
        outages[0]["records_refused"].as_u64() >= Some(1),
        "{}",
        outages[0]
    );
    assert!(
        outages[0]["sessions_refused"].as_u64() >= Some(1),
        "{}",
        outages[0]
    );
    assert!(outages[0]["records_kept"].is_u64(), "{}", outages[0]);
}

/// Two gateways given one instance id would fork its chain: the second
/// is refused at start, naming the setting; once the first stops, the id
/// is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_with_the_same_instance_is_refused() {
    let db = AuditDatabase::create().await;
    let first = TestEnv::start_with_config(&db.config("gw-x"), false)
        .await
        .unwrap();
    let refused = TestEnv::start_with_config(&db.config("gw-x"), false)
        .await
        .err()
        .expect("a second writer of one chain");
    assert!(
        refused.contains("another connection is writing the chain of instance \"gw-x\"")
            && refused.contains("[audit] instance"),
        "{refused}"
    );
    first
        .connect("analyst")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    first.gateway.shutdown().await;

    let again = TestEnv::start_with_config(&db.config("gw-x"), false)
        .await
        .unwrap();
    again
        .connect("analyst")
        .await
        .simple_query("SELECT 2")
        .await
        .unwrap();
    again.gateway.shutdown().await;
    let report = db.verify("gw-x").await;
    assert!(report.ok(), "{report}");
}

/// A relay in front of the shared cluster that, once armed, lets the
/// server's next reply reach it and then cuts the connection without
/// passing it on: a commit made whose answer is lost. It can also silence
/// the connections it has, keeping them open: what the client sends is
/// dropped on the way, as in a network partition.
struct CuttingRelay {
    port: u16,
    /// Connections numbered below this are silenced.
    silenced_below: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether what it kept from the client was a whole reply, up to its
    /// ReadyForQuery: the transaction was over.
    swallowed_a_reply: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Whether `bytes` hold a whole ReadyForQuery message.
fn has_ready_for_query(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 5) {
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let end = at + 1 + length;
        if header[0] == b'Z' && end <= bytes.len() {
            return true;
        }
        at = end;
    }
    false
}

impl CuttingRelay {
    async fn start() -> CuttingRelay {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swallowed_a_reply = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = armed.clone();
        let swallowed = swallowed_a_reply.clone();
        let silenced_below = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (silenced, counted) = (silenced_below.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = counted.fetch_add(1, Ordering::SeqCst);
                let silenced = silenced.clone();
                let server = tokio::net::TcpStream::connect((
                    "127.0.0.1",
                    sluice_tests::shared_cluster().port,
                ))
                .await
                .unwrap();
                let cut = cut.clone();
                let swallowed = swallowed.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upward = tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                // A silenced connection stays open to the
                                // server when its client goes.
                                Ok(0) | Err(_) if number < silenced.load(Ordering::SeqCst) => {
                                    std::future::pending::<()>().await;
                                    break;
                                }
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if number < silenced.load(Ordering::SeqCst) {
                                continue;
                            }
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut.swap(false, Ordering::SeqCst) {
                            // The whole reply, so the server is done with
                            // the transaction; the client never hears.
                            let mut reply = buf[..n].to_vec();
                            while !has_ready_for_query(&reply) {
                                match server_read.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                                }
                            }
                            swallowed.store(has_ready_for_query(&reply), Ordering::SeqCst);
                            break;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    upward.abort();
                });
            }
        });
        CuttingRelay {
            port,
            silenced_below,
            accepted,
            armed,
            swallowed_a_reply,
        }
    }

    /// Silences every connection it has now; later ones pass.
    fn silence_those_open(&self) {
        let open = self.accepted.load(std::sync::atomic::Ordering::SeqCst);
        self.silenced_below
            .store(open, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut_after_next_reply(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A commit the audit database made but whose answer was lost with the
/// connection: after reconnecting, sluice finds the chain's head at that
/// commit, and does not write its records a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_not_written_twice() {
    let db = AuditDatabase::create().await;
    let (relay, env) = db.gateway_through_a_relay("gw-l").await;
    let client = db.one_statement_recorded(&env).await;

    // The session's end, which no one waits on, is the commit cut off.
    relay.cut_after_next_reply();
    drop(client);
    let back = eventually(Duration::from_secs(15), || async {
        let stats = env.gateway.shared.audit.stats().unwrap();
        stats.outages == 1 && env.gateway.shared.audit.failure().is_none()
    })
    .await;
    assert!(back, "{:?}", env.gateway.shared.audit.failure());
    assert!(
        relay
            .swallowed_a_reply
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    env.connect("analyst")
        .await
        .simple_query("SELECT 2")
        .await
        .unwrap();
    env.gateway.shutdown().await;

    let report = db.verify("gw-l").await;
    assert!(report.ok(), "{report}");
    let records = db.records().await;
    // Each once: the lost commit's record (the session's end, or the
    // outcome before it if the relay caught that reply) is not written
    // again.
    let ends = of_event(&records.records, "session_end");
    assert_eq!(ends.len(), 2, "{:#?}", records.records);
    assert_ne!(ends[0]["session"], ends[1]["session"], "{ends:#?}");
    assert_eq!(of_event(&records.records, "outcome").len(), 2);
}

/// An audit database that refuses commits for a while in a way that may
/// pass (out of disk): sessions and statements are refused meanwhile, and
/// the gateway takes them again once it commits, without a restart, its
/// chain whole. A refusal that would repeat (a trigger's own error) fails
/// it for good, and is no outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_database_out_of_disk_is_waited_for() {
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-f"), false)
        .await
        .unwrap();
    let client = db.one_statement_recorded(&env).await;
    let refuse_inserts = |errcode: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{errcode}'; END $$;\n\
             CREATE TRIGGER refuse BEFORE INSERT ON sluice_audit FOR EACH ROW EXECUTE FUNCTION refuse();"
        )
    };
    db.sql(&refuse_inserts("disk_full")).await;
    let refused = client.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "58000");
    let failure = env.gateway.shared.audit.failure().expect("refusing");
    assert!(failure.contains("53100"), "{failure}");
    // Still refusing a while later: at login, or at the session's first
    // record (with nothing to write, the sink cannot know it is still
    // full until it tries).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempt = async {
        let client = sluice_tests::connect(&env.config("analyst")).await?;
        client.simple_query("SELECT 2").await
    };
    let refused = attempt.await.expect_err("refused while full");
    assert_eq!(sluice_tests::sqlstate(&refused), Some("58000"), "{refused}");
    db.sql("DROP TRIGGER refuse ON sluice_audit").await;
    let back = eventually(Duration::from_secs(15), || async {
        env.gateway.shared.audit.failure().is_none()
    })
    .await;
    assert!(back, "{:?}", env.gateway.shared.audit.failure());
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 3").await.unwrap();

    let outages = env.gateway.shared.audit.stats().unwrap().outages;
    assert!(outages >= 1, "{outages}");
    db.sql(&refuse_inserts("P0001")).await;
    let refused = client.simple_query("SELECT 4").await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "58000");
    let failure = env.gateway.shared.audit.failure().expect("failed");
    assert!(
        failure.contains("refused a commit") && failure.contains("P0001"),
        "{failure}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.gateway.shared.audit.stats().unwrap().outages, outages);
    env.gateway.shutdown().await;
    db.assert_whole_with_statements("gw-f", &["SELECT 1", "SELECT 3"])
        .await;
}

/// `sluice audit verify` of the audit database reads a chain a page at a
/// time, from one snapshot: a chain longer than a page verifies whole, a
/// changed row on a later page is found at its place, and a named
/// instance with nothing there is reported missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_is_verified_a_page_at_a_time() {
    use sluice::audit::verify::{Chains, FindingKind};
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-p"), false)
        .await
        .unwrap();
    let client = env.connect("analyst").await;
    // Pipelined: a statement's record and its outcome each.
    let statements = (0..600).map(|_| client.execute("SELECT 1", &[]));
    for done in futures_util::future::join_all(statements).await {
        done.unwrap();
    }
    drop(client);
    env.gateway.shutdown().await;

    // `named` as `--instance` gives them; none: every instance there,
    // and `expected` (the gateway's own, from its config).
    let verify_expecting = |named: &[&str], expected: &[&str]| {
        let named: Vec<String> = named.iter().map(|n| n.to_string()).collect();
        let expected: Vec<String> = expected.iter().map(|n| n.to_string()).collect();
        let (settings, key) = (db.settings(), db.key());
        async move {
            let chains = if named.is_empty() {
                Chains::Found {
                    expected: &expected,
                }
            } else {
                Chains::Named(&named)
            };
            sluice::audit::postgres::verify_chains(&settings, chains, &key, &[])
                .await
                .unwrap()
        }
    };
    let verify = |named: &[&str]| verify_expecting(named, &[]);
    let reports = verify(&[]).await;
    assert_eq!(reports.len(), 1);
    assert!(reports[0].ok(), "{}", reports[0]);
    assert!(reports[0].records > 1200, "{}", reports[0]);
    assert_eq!(reports[0].records, db.verify("gw-p").await.records);
    // What show and tail read, across the pages, in order.
    let mut seqs = Vec::new();
    sluice::audit::postgres::scan_chains(&db.settings(), Some("gw-p"), |_, line| {
        let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
        seqs.push(record["seq"].as_u64().unwrap());
    })
    .await
    .unwrap();
    assert_eq!(seqs, (1..=reports[0].records).collect::<Vec<_>>());

    db.sql(
        "UPDATE sluice_audit SET record = replace(record, '\"event\":', '\"event\": ') \
         WHERE instance = 'gw-p' AND seq = 1100",
    )
    .await;
    let reports = verify(&["gw-p", "gw-none"]).await;
    assert_eq!(reports.len(), 2);
    let problems: Vec<_> = reports[0]
        .problems()
        .map(|f| (f.line, f.seq, &f.kind))
        .collect();
    assert_eq!(
        problems,
        [(Some(1100), Some(1100), &FindingKind::Modified)],
        "{}",
        reports[0]
    );
    let missing: Vec<_> = reports[1].problems().map(|f| &f.kind).collect();
    assert_eq!(missing, [&FindingKind::InstanceMissing], "{}", reports[1]);
    // Nothing named: every instance there, and the gateway's own from its
    // config, which an instance deleted whole no longer is.
    let reports = verify_expecting(&[], &["gw-gone"]).await;
    let places: Vec<_> = reports
        .iter()
        .map(|r| r.path.display().to_string())
        .collect();
    assert_eq!(places, ["postgres:gw-gone", "postgres:gw-p"]);
    let missing: Vec<_> = reports[0].problems().map(|f| &f.kind).collect();
    assert_eq!(missing, [&FindingKind::InstanceMissing], "{}", reports[0]);
}

/// A commit that gets no answer (a partition: the connection stays open,
/// what is sent never arrives) is given up after its deadline, its
/// statement refused; the reconnect finds the chain still locked by the
/// old connection, which the server cannot see is gone, and ends that
/// connection to take the chain back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_commit_is_given_up_and_its_connection_ended() {
    let db = AuditDatabase::create().await;
    let (relay, env) = db.gateway_through_a_relay("gw-s").await;
    let client = db.one_statement_recorded(&env).await;
    let old = db.sinks_backend().await;
    relay.silence_those_open();
    let refused = client.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "58000");
    let failure = env.gateway.shared.audit.failure().unwrap_or_default();
    assert!(failure.contains("did not commit within"), "{failure}");

    let back = eventually(Duration::from_secs(30), || async {
        env.gateway.shared.audit.failure().is_none()
    })
    .await;
    assert!(back, "{:?}", env.gateway.shared.audit.failure());
    // The relay still holds the old connection open: only sluice ended it.
    let left = db
        .sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {old}"
        ))
        .await;
    assert_eq!(left.trim(), "0");
    env.connect("analyst")
        .await
        .simple_query("SELECT 3")
        .await
        .unwrap();
    assert_eq!(env.gateway.shared.audit.stats().unwrap().outages, 1);
    env.gateway.shutdown().await;
    db.assert_whole_with_statements("gw-s", &["SELECT 1", "SELECT 3"])
        .await;
}

/// A gateway stopped while its audit database is away stops all the same
/// (what it kept for the database is dropped, with an alert), and starts
/// again on the same chain once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stops_while_its_audit_database_is_away() {
    let db = AuditDatabase::create().await;
    let env = TestEnv::start_with_config(&db.config("gw-d"), false)
        .await
        .unwrap();
    let client = db.one_statement_recorded(&env).await;
    db.alter_database("SET default_transaction_read_only = on")
        .await;
    db.end_the_sinks_connection().await;
    let refused = client.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(code_and_message(&refused).0, "58000");
    drop(client);
    tokio::time::timeout(Duration::from_secs(60), env.gateway.shutdown())
        .await
        .expect("the gateway stops while its audit database is away");

    db.alter_database("RESET default_transaction_read_only")
        .await;
    let again = TestEnv::start_with_config(&db.config("gw-d"), false)
        .await
        .unwrap();
    again
        .connect("analyst")
        .await
        .simple_query("SELECT 3")
        .await
        .unwrap();
    again.gateway.shutdown().await;
    db.assert_whole_with_statements("gw-d", &["SELECT 1", "SELECT 3"])
        .await;
}

/// Past the most COPY portals sluice keeps for one session, a Bind of
/// another is refused (54000), and the refusal is on the record like any
/// other: the attempt, its verdict `error` and why. The session carries
/// on, and its COPY data is still read by the right describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_portal_past_the_limit_is_refused_on_the_record() {
    let config = audited_config().replacen("fsync = \"always\"", "fsync = \"batch\"", 1);
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let mut conn = RawConn::login(env.addr(), &env.database, "analyst", "analyst-demo-token").await;
    conn.send(&raw::query("BEGIN")).await;
    conn.until_ready().await;
    let pan = "4111111111111111";
    conn.define("pans", &format!("COPY (SELECT '{pan}') TO STDOUT"))
        .await;
    let mut binds = Vec::new();
    for portal in 0..1_000 {
        binds.extend(raw::bind(&format!("p{portal}"), "pans"));
    }
    binds.extend(raw::sync());
    conn.send(&binds).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");

    let mut one_more = raw::bind("p1000", "pans");
    one_more.extend(raw::execute("p1000", 0));
    one_more.extend(raw::sync());
    conn.send(&one_more).await;
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "54000", "{:?}", error.fields());
    conn.until_ready().await;

    // A refusal is an error like the server's own: the transaction is
    // aborted. Once it is rolled back, COPY portals are bound and read
    // as before.
    conn.send(&raw::query("ROLLBACK")).await;
    conn.until_ready().await;
    conn.send(&raw::bind_execute_sync("pans")).await;
    let replies = conn.until_ready().await;
    assert_eq!(
        raw::copy_text(&replies),
        "411111******1111\n",
        "{replies:?}"
    );

    until_recorded(&env, |r| {
        r["event"] == "statement" && r["decision"]["verdict"] == "error"
    })
    .await;
    let records = records(&env);
    let refused: Vec<_> = of_event(&records, "statement")
        .into_iter()
        .filter(|r| r["decision"]["verdict"] == "error")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let reason = refused[0]["decision"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("open portals of COPY"), "{reason}");
    assert_eq!(
        refused[0]["text"],
        "COPY (SELECT '411111******1111') TO STDOUT"
    );
}
