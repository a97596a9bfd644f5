//! Killing sluice (SIGKILL) in the middle of a busy run loses no record of
//! a statement whose result a client received: a statement's record is
//! durable before the statement is forwarded. After the kill, sluice starts
//! again on the same trail, sets aside whatever a write cut short, and the
//! trail verifies; `sluice audit verify`, `show` and `tail` read it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::pg_cluster::{HostAuth, PgCluster};

const TOKEN: &str = "kill-test-token";
const CLIENTS: usize = 4;

mod support;
use support::{free_port, signal, sluice, start_sluice};

fn psql(port: u16, sql: &str) -> std::process::Output {
    support::psql(
        &format!(
            "host=127.0.0.1 port={port} user=admin dbname=postgres sslmode=disable connect_timeout=5"
        ),
        TOKEN,
        sql,
    )
}

/// Under `fsync = "always"` a statement's record is on the disk before the
/// statement runs; under `"batch"` it is in the kernel's hands (the page
/// cache of a mapped file), which a killed process cannot take back. One
/// after the other: each picks a free port and starts a process on it.
#[test]
fn sigkill_mid_run_loses_no_record_of_an_answered_statement() {
    sigkill_mid_run("always");
    sigkill_mid_run("batch");
}

fn sigkill_mid_run(fsync: &str) {
    let cluster = PgCluster::builder()
        .auth(HostAuth::Trust)
        .start()
        .expect("a throwaway PostgreSQL");
    cluster
        .psql("postgres", "CREATE TABLE marks (mark text PRIMARY KEY);")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        support::audited_gateway_config(
            port,
            &cluster.url("postgres"),
            TOKEN,
            &format!("[audit]\nfile = \"audit.jsonl\"\nfsync = \"{fsync}\"\n"),
        ),
    )
    .unwrap();
    let trail = dir.path().join("audit.jsonl");
    let mut gateway = start_sluice(&config, port);

    // Clients insert distinct marks, one statement a session, and note
    // each mark whose result came back.
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (answered, stop) = (answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mark = format!("mark-{client}-{n}");
                    n += 1;
                    let output = psql(port, &format!("INSERT INTO marks VALUES ('{mark}')"));
                    if output.status.success()
                        && String::from_utf8_lossy(&output.stdout).contains("INSERT 0 1")
                    {
                        answered.lock().unwrap().insert(mark);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while answered.lock().unwrap().len() < 40 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the clients got too few answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Read while it is written: the records committed during the check
    // are no tampering.
    let trail_arg = trail.to_str().unwrap().to_owned();
    let (ok, tail) = sluice(&["audit", "tail", "--audit-file", &trail_arg, "-n", "3"]);
    assert!(ok && !tail.contains("failed verification"), "{tail}");
    // Mid-run: statements in flight, records being written.
    signal(&gateway.0, libc::SIGKILL);
    let _ = gateway.0.wait();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    // Every answered statement is on the record.
    let records = sluice::audit::read::read(&trail).unwrap();
    let recorded: BTreeSet<String> = records
        .records
        .iter()
        .filter(|r| r["event"] == "statement")
        .filter_map(|r| {
            let text = r["text"].as_str()?;
            Some(text.split('\'').nth(1)?.to_owned())
        })
        .collect();
    let missing: Vec<&String> = answered.difference(&recorded).collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");
    // Nor did any statement run that is not on the record: every mark the
    // database holds (answered or not: the kill cut some replies off) was
    // recorded before its statement was forwarded.
    let stored: BTreeSet<String> = cluster
        .psql("postgres", "SELECT mark FROM marks")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(stored.len() >= answered.len(), "{stored:?}");
    let ran_unrecorded: Vec<&String> = stored.difference(&recorded).collect();
    assert!(
        ran_unrecorded.is_empty(),
        "ran but not recorded: {ran_unrecorded:?}"
    );

    // sluice starts again on the same trail, and the trail verifies.
    let mut gateway = start_sluice(&config, port);
    let output = psql(port, "SELECT count(*) FROM marks");
    assert!(output.status.success(), "{output:?}");
    // This time it stops as an operator stops it, writing what is queued.
    signal(&gateway.0, libc::SIGTERM);
    assert!(gateway.0.wait().unwrap().success());
    let trail_arg = trail_arg.as_str();
    let (ok, report) = sluice(&["audit", "verify", "--audit-file", trail_arg]);
    assert!(ok, "{report}");
    assert!(report.contains("demo-grade"), "{report}");
    let (ok, tail) = sluice(&["audit", "tail", "--audit-file", trail_arg, "-n", "5"]);
    assert!(ok, "{tail}");
    assert!(tail.contains("SELECT count(*) FROM marks"), "{tail}");
    let session = records
        .records
        .iter()
        .find(|r| r["event"] == "statement")
        .and_then(|r| r["session"].as_u64())
        .unwrap();
    let session = session.to_string();
    let show = || {
        sluice(&[
            "audit",
            "show",
            "--audit-file",
            trail_arg,
            "--session",
            &session,
        ])
    };
    let (ok, shown) = show();
    assert!(ok, "{shown}");
    assert!(shown.contains("initiated by admin"), "{shown}");
    assert!(shown.contains("INSERT INTO marks"), "{shown}");

    // A changed record is caught, and verify says where. (The run's
    // records may sit in a file sluice set aside when it started again.)
    let file = sluice::audit::log::chain_files(&trail)
        .unwrap()
        .into_iter()
        .find(|file| std::fs::read_to_string(file).unwrap().contains("mark-"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("mark-", "MARK-", 1)).unwrap();
    let (ok, report) = sluice(&["audit", "verify", "--audit-file", trail_arg]);
    assert!(!ok, "{report}");
    assert!(report.contains("modified"), "{report}");
    // Replaying it says so too: the edited record is not taken for what
    // happened, and the command fails.
    let (ok, shown) = show();
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("the audit trail failed verification") && shown.contains("modified"),
        "{shown}"
    );
    assert!(shown.contains("initiated by admin"), "{shown}");
    // A reader who cannot read the key is told the replay is unverified.
    let key = trail.with_file_name(format!(
        "{}.key",
        trail.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::rename(&key, key.with_extension("away")).unwrap();
    let (ok, tail) = sluice(&["audit", "tail", "--audit-file", trail_arg, "-n", "1"]);
    assert!(ok, "{tail}");
    assert!(tail.contains("the trail is shown unverified"), "{tail}");
}
