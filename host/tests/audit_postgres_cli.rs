//! The audit trail in PostgreSQL through the operator's commands: `sluice
//! serve` records into the audit database, and `sluice audit verify`,
//! `tail` and `show` read it back from the same config — verify failing,
//! with exit status 1, once a row is changed.

use sluice::pg_cluster::{HostAuth, PgCluster};

mod support;
use support::{
    audited_gateway_config, free_port, psql, signal, sluice, start_sluice_logging_to, wait_exit,
};

const TOKEN: &str = "audit-db-test-token";

#[test]
fn audit_commands_read_the_audit_database() {
    let cluster = PgCluster::builder()
        .auth(HostAuth::Trust)
        .start()
        .expect("a throwaway PostgreSQL");
    cluster.create_database("audit").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    std::fs::write(&key, format!("{}\n", "c3".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        audited_gateway_config(
            port,
            &cluster.url("postgres"),
            TOKEN,
            &format!(
                "[audit]\nkey_file = \"audit.key\"\ninstance = \"gw-cli\"\n\
                 [audit.postgres]\nurl = \"{}\"\n",
                cluster.url("audit")
            ),
        ),
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let mut gateway = start_sluice_logging_to(&config, port, &log);
    for sql in [
        "SELECT 'marker-one' AS a",
        "SELECT '4111111111111111' AS card",
    ] {
        let output = psql(
            &format!("host=127.0.0.1 port={port} user=admin dbname=postgres sslmode=disable"),
            TOKEN,
            sql,
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A graceful stop commits what is queued.
    signal(&gateway.0, libc::SIGTERM);
    let stopped = wait_exit(&mut gateway.0, std::time::Duration::from_secs(30));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");

    // The chain's head is logged too: an anchor outside the database.
    let logged = std::fs::read_to_string(&log).unwrap();
    let head_line = logged
        .lines()
        .find(|line| line.contains("audit chain head"))
        .unwrap_or_else(|| panic!("no head in the log:\n{logged}"));
    assert!(
        head_line.contains("instance=gw-cli ") && head_line.contains(" seq=1 "),
        "{head_line}"
    );

    let config = config.to_str().unwrap();
    let (ok, verified) = sluice(&["audit", "verify", "-c", config]);
    assert!(ok, "{verified}");
    assert!(verified.contains("postgres:gw-cli: OK"), "{verified}");
    assert!(verified.contains("head: verified"), "{verified}");
    // And at the stop: the head verify found is the one the log names last,
    // so a chain and head put back together to an earlier state show.
    let at_stop = logged
        .lines()
        .find(|line| line.contains("audit chain head at stop"))
        .unwrap_or_else(|| panic!("no head at stop in the log:\n{logged}"));
    let logged_mac = at_stop
        .split("mac=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no mac in {at_stop}"));
    assert_eq!(logged_mac.len(), 64, "{at_stop}");
    assert!(
        verified.contains(&format!("(mac {logged_mac};")),
        "{verified}\n{at_stop}"
    );
    // The logged heads, given back as anchors, are checked by the tool:
    // both are held with their MACs. One the chain does not hold (the seq
    // past its end, or another MAC) fails verification.
    let seq_and_mac = |line: &str| {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        (field("seq"), field("mac"))
    };
    let (first_seq, first_mac) = seq_and_mac(head_line);
    let (stop_seq, stop_mac) = seq_and_mac(at_stop);
    let first = format!("{first_seq}:{first_mac}");
    let stop = format!("{stop_seq}:{stop_mac}");
    let verify_anchored = |anchors: &[&str]| {
        let mut args = vec!["audit", "verify", "-c", config, "--instance", "gw-cli"];
        for anchor in anchors {
            args.extend(["--anchor", anchor]);
        }
        sluice(&args)
    };
    let (ok, anchored) = verify_anchored(&[&first, &stop]);
    assert!(ok, "{anchored}");
    assert_eq!(
        anchored
            .matches("has the MAC the anchor given names")
            .count(),
        2,
        "{anchored}"
    );
    let beyond = format!("{}:{stop_mac}", stop_seq.parse::<u64>().unwrap() + 1);
    let (ok, report) = verify_anchored(&[&beyond]);
    assert!(!ok, "{report}");
    assert!(report.contains("is not in the trail"), "{report}");
    let other = format!("{stop_seq}:{}", "0".repeat(64));
    let (ok, report) = verify_anchored(&[&other]);
    assert!(!ok, "{report}");
    assert!(
        report.contains("has another MAC than the anchor"),
        "{report}"
    );
    // An anchor needs its instance named, and must be SEQ:MAC.
    let (ok, refused) = sluice(&["audit", "verify", "-c", config, "--anchor", &stop]);
    assert!(
        !ok && refused.contains("name that instance with --instance"),
        "{refused}"
    );
    let (ok, refused) = verify_anchored(&["12:not-hex"]);
    assert!(
        !ok && refused.contains("is not a MAC (64 hex digits)"),
        "{refused}"
    );

    let (ok, tail) = sluice(&["audit", "tail", "-c", config]);
    assert!(ok, "{tail}");
    assert!(tail.contains("marker-one"), "{tail}");
    assert!(tail.contains("411111******1111"), "{tail}");
    assert!(!tail.contains("4111111111111111"), "{tail}");

    let (ok, shown) = sluice(&["audit", "show", "-c", config, "--session", "1"]);
    assert!(ok, "{shown}");
    assert!(shown.contains("initiated by admin"), "{shown}");

    // A second gateway's chain in the same database (sealed here with the
    // shared key, written after the first's, under a name read first): its
    // session 1 is another session, so `show` wants an instance named, and
    // `tail` merges the instances by time.
    let key = sluice::audit::ChainKey::load(&key).unwrap();
    let mut head = sluice::audit::chain::Link::GENESIS;
    let mut rows = String::new();
    for event in [
        serde_json::json!({"event": "session_start", "session": 1, "principal": "other-gateway-user"}),
        serde_json::json!({"event": "statement", "session": 1, "statement": 1,
                           "principal": "other-gateway-user", "text": "SELECT 'second instance'",
                           "decision": {"verdict": "allow"}}),
    ] {
        let serde_json::Value::Object(event) = event else {
            unreachable!("an object literal")
        };
        let (line, next) =
            sluice::audit::chain::seal(&key, &head, "gw-a", std::time::SystemTime::now(), &event)
                .unwrap();
        head = next;
        let line = String::from_utf8(line).unwrap();
        rows.push_str(&format!(
            "INSERT INTO sluice_audit (instance, seq, record) VALUES ('gw-a', {}, $r${line}$r$);\n",
            head.seq
        ));
    }
    // Its head row, as that gateway's commit would leave it: the chain
    // verifies, so show and tail read it without a warning.
    let head_line = String::from_utf8(sluice::audit::chain::head_line(&key, &head)).unwrap();
    rows.push_str(&format!(
        "INSERT INTO sluice_audit_head (instance, seq, head) VALUES ('gw-a', {}, $h${head_line}$h$);\n",
        head.seq
    ));
    cluster.psql("audit", &rows).unwrap();
    let (ok, refused) = sluice(&["audit", "show", "-c", config, "--session", "1"]);
    assert!(!ok, "{refused}");
    assert!(
        refused.contains("several instances (gw-a, gw-cli)"),
        "{refused}"
    );
    // Session 1 of one instance's chain, read and verified.
    let show_session_1_of = |instance: &str| {
        sluice(&[
            "audit",
            "show",
            "-c",
            config,
            "--session",
            "1",
            "--instance",
            instance,
        ])
    };
    let (ok, shown) = show_session_1_of("gw-a");
    assert!(ok, "{shown}");
    assert!(shown.contains("other-gateway-user"), "{shown}");
    assert!(!shown.contains("initiated by admin"), "{shown}");
    let (ok, tail) = sluice(&["audit", "tail", "-c", config, "-n", "2"]);
    assert!(ok, "{tail}");
    // Record lines only (stdout and stderr come together).
    let lines: Vec<&str> = tail.lines().filter(|line| line.contains(" #")).collect();
    assert_eq!(lines.len(), 2, "{tail}");
    assert!(
        lines[0].contains("session start: other-gateway-user"),
        "{tail}"
    );
    assert!(lines[1].contains("SELECT 'second instance'"), "{tail}");
    let (ok, missing) = sluice(&["audit", "tail", "-c", config, "--instance", "gw-typo"]);
    assert!(!ok, "{missing}");
    assert!(
        missing.contains("no records of instance \"gw-typo\" (the database has: gw-a, gw-cli)"),
        "{missing}"
    );

    // A row changed behind sluice's back: verify says where, and fails.
    cluster
        .psql(
            "audit",
            "UPDATE sluice_audit SET record = replace(record, 'marker-one', 'marker-two') \
             WHERE record LIKE '%marker-one%';",
        )
        .unwrap();
    let (ok, verified) = sluice(&["audit", "verify", "-c", config]);
    assert!(!ok, "{verified}");
    assert!(verified.contains("postgres:gw-cli: FAILED"), "{verified}");
    // show and tail verify what they read: the replay still comes, under
    // a warning, and the command fails as verify does. The other
    // instance's chain is whole, and its replay is not doubted.
    let (ok, shown) = show_session_1_of("gw-cli");
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("the audit trail failed verification"),
        "{shown}"
    );
    assert!(shown.contains("postgres:gw-cli: FAILED"), "{shown}");
    assert!(shown.contains("marker-two"), "{shown}");
    let (ok, tail) = sluice(&["audit", "tail", "-c", config]);
    assert!(!ok, "{tail}");
    assert!(tail.contains("failed verification"), "{tail}");
    let (ok, shown) = show_session_1_of("gw-a");
    assert!(ok, "{shown}");
    assert!(!shown.contains("verification"), "{shown}");
}
