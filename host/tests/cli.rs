//! The `sluice` command as operators run it: `check`, `hash-token`,
//! `serve` with overrides, SIGHUP and SIGTERM, and the quickstart `demo`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{Reaped, SLUICE, free_port, psql, signal, wait_exit, wait_for_port};

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(SLUICE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `sluice check` accepts the quickstart config, and names the line and
/// column of an unknown key.
#[test]
fn check_validates_configs() {
    let quickstart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart/sluice.toml"
    );
    let (ok, _, stderr) = run(&["check", "-c", quickstart], "");
    // The quickstart names its password by environment variable.
    assert!(!ok);
    assert!(stderr.contains("SLUICE_UPSTREAM_PASSWORD"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"postgres://svc@127.0.0.1:5432/payments\"\n",
    )
    .unwrap();
    let (ok, stdout_good, stderr_good) = run(&["check", "-c", good.to_str().unwrap()], "");
    assert!(ok, "{stderr_good}");
    assert!(stdout_good.contains("ok"), "{stdout_good}");

    // Files the config names are checked too, relative to the config.
    let tls = dir.path().join("tls.toml");
    std::fs::write(
        &tls,
        "[listen]\ntls_cert = \"missing-cert.pem\"\ntls_key = \"missing-key.pem\"\n[upstream]\nurl = \"postgres://svc@h/db\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["check", "-c", tls.to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        stderr.contains(&dir.path().join("missing-cert.pem").display().to_string()),
        "{stderr}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"postgres://svc@h/db\"\nsslmode = \"require\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["check", "-c", bad.to_str().unwrap()], "");
    assert!(!ok);
    assert!(stderr.contains("line 6, column 1"), "{stderr}");
    assert!(stderr.contains("sslmode"), "{stderr}");

    // Plugins are loaded and checked: a builtin of the right kind passes,
    // one configured for the wrong hook is refused with the reason.
    let base = "[upstream]\nurl = \"postgres://svc@h/db\"\n[[plugins]]\nname = \"ro\"\npath = \"builtin:read-only\"\n";
    let plugins = dir.path().join("plugins.toml");
    std::fs::write(&plugins, format!("{base}hook = \"policy\"\n")).unwrap();
    let (ok, stdout, stderr) = run(&["check", "-c", plugins.to_str().unwrap()], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 plugins"), "{stdout}");
    std::fs::write(&plugins, format!("{base}hook = \"masking\"\n")).unwrap();
    let (ok, _, stderr) = run(&["check", "-c", plugins.to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        stderr.contains("plugin ro: builtin:read-only is not a masking plugin"),
        "{stderr}"
    );
}

/// `sluice hash-token` makes a verifier in PostgreSQL's format that
/// PostgreSQL's own client library accepts.
#[test]
fn hash_token_makes_a_scram_verifier() {
    let (ok, stdout, stderr) = run(&["hash-token"], "a-long-random-token\n");
    assert!(ok, "{stderr}");
    let verifier = stdout.trim();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains("a-long-random-token"));
    let parsed: sluice::auth::scram::Verifier = verifier.parse().unwrap();
    assert_eq!(parsed.iterations(), 4096);

    let (ok, _, stderr) = run(&["hash-token"], "");
    assert!(!ok);
    assert!(stderr.contains("no token"), "{stderr}");
}

/// The quickstart: `sluice demo` starts PostgreSQL and sluice, prints a
/// psql line per principal that works, and Ctrl-C removes everything.
#[test]
fn demo_serves_the_quickstart_and_cleans_up() {
    let port = free_port();
    let mut child = Reaped(
        Command::new(SLUICE)
            .args(["demo", "--port", &port.to_string()])
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let analyst = printed
        .iter()
        .find(|l| l.contains("user=analyst"))
        .unwrap_or_else(|| panic!("no analyst line in {printed:?}"));
    let conninfo = analyst.split('"').nth(1).unwrap();
    assert!(analyst.contains(&format!("port={port}")), "{analyst}");
    let output = psql(conninfo, "analyst-demo-token", "SELECT count(*) FROM cards");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "26");
    // The Luhn masker is on: as analyst, card numbers show their first six
    // and last four digits only.
    let output = psql(
        conninfo,
        "analyst-demo-token",
        "SELECT pan FROM cards WHERE id = 1",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "411111******1111",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The audit trail is on: the analyst's session is on the record, shown
    // and verified as the demo says.
    // `  SLUICE_AUDIT_KEY_FILE=KEY sluice audit verify --audit-file TRAIL`:
    // the key named, so that one set in the reader's shell is not used.
    let (key, trail) = printed
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("  SLUICE_AUDIT_KEY_FILE=")?;
            let (key, trail) = rest.split_once(" sluice audit verify --audit-file ")?;
            Some((key.to_owned(), trail.trim().to_owned()))
        })
        .unwrap_or_else(|| panic!("no audit verify line in {printed:?}"));
    assert_eq!(
        key,
        format!("{trail}.key"),
        "the demo's key sits by its trail"
    );
    assert!(std::path::Path::new(&key).is_file(), "{key}");
    let (ok, tail, stderr) = run(&["audit", "tail", "--audit-file", &trail], "");
    assert!(ok, "{stderr}");
    assert!(
        tail.contains("SELECT pan FROM cards WHERE id = 1"),
        "{tail}"
    );
    let session = tail
        .lines()
        .find(|l| l.contains("SELECT pan FROM cards WHERE id = 1"))
        .and_then(|l| l.split(" session ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no session in {tail}"))
        .to_owned();
    let (ok, shown, stderr) = run(
        &[
            "audit",
            "show",
            "--audit-file",
            &trail,
            "--session",
            &session,
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(shown.contains("initiated by analyst"), "{shown}");
    let (ok, verified, stderr) = run(&["audit", "verify", "--audit-file", &trail], "");
    assert!(ok, "{verified}{stderr}");
    assert!(!verified.contains("4111111111111111"), "{verified}");
    // The head it names, given back as an anchor (as an operator gives a
    // head from the log), is held; one past the trail's end is not.
    let (seq, mac) = verified
        .split("names seq ")
        .nth(1)
        .and_then(|rest| rest.split_once(" (mac "))
        .and_then(|(seq, rest)| Some((seq.parse::<u64>().ok()?, rest.split(';').next()?)))
        .unwrap_or_else(|| panic!("no head in {verified}"));
    let verify_anchored = |seq: u64| {
        let anchor = format!("{seq}:{mac}");
        run(
            &[
                "audit",
                "verify",
                "--audit-file",
                &trail,
                "--anchor",
                &anchor,
            ],
            "",
        )
    };
    let (ok, anchored, stderr) = verify_anchored(seq);
    assert!(ok, "{anchored}{stderr}");
    assert!(
        anchored.contains("has the MAC the anchor given names"),
        "{anchored}"
    );
    let (ok, anchored, _) = verify_anchored(seq + 1_000_000);
    assert!(
        !ok && anchored.contains("is not in the trail"),
        "{anchored}"
    );

    // The admin port answers where the demo says: ready, and counting.
    let metrics_url = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("curl -s "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no curl line in {printed:?}"));
    let admin = metrics_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("not a metrics URL: {metrics_url}"));
    assert_eq!(http_get(admin, "/readyz"), "ready\n");
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("sluice_masked_values_total{plugin=\"pans\"} "),
        "{metrics}"
    );

    // The quickstart's policies are on: an agent's bulk delete is refused,
    // naming the rule, in the newcomer's first minute.
    let agent = printed
        .iter()
        .find(|l| l.contains("user=agent"))
        .unwrap_or_else(|| panic!("no agent line in {printed:?}"));
    let output = psql(
        agent.split('"').nth(1).unwrap(),
        "agent-demo-token",
        "DELETE FROM orders",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the bulk delete ran");
    assert!(stderr.contains("no-bulk-write"), "{stderr}");
    let rules_dir = printed
        .iter()
        .find_map(|l| l.strip_prefix("The rules are in "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no rules line in {printed:?}"))
        .to_owned();
    assert!(std::path::Path::new(&rules_dir).join("guard.toml").exists());

    let direct = printed
        .iter()
        .find(|l| l.contains("user=postgres"))
        .expect("a direct line");
    let password = direct
        .trim()
        .strip_prefix("PGPASSWORD=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let direct_conninfo = direct.split('"').nth(1).unwrap();
    let output = psql(
        direct_conninfo,
        password,
        "SELECT current_setting('data_directory')",
    );
    assert!(output.status.success());
    let data_dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // Straight to PostgreSQL the same card number is raw.
    let output = psql(
        direct_conninfo,
        password,
        "SELECT pan FROM cards WHERE id = 1",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "4111111111111111"
    );
    assert!(std::path::Path::new(&data_dir).exists());

    signal(&child.0, libc::SIGINT);
    let status = wait_exit(&mut child.0, Duration::from_secs(60)).expect("demo stops on Ctrl-C");
    assert!(status.success());
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "the cluster is removed"
    );
    assert!(
        !std::path::Path::new(&rules_dir).exists(),
        "the quickstart's files are removed"
    );
}

/// `sluice serve --listen --upstream` overrides the file, SIGHUP reloads
/// the plugins, and SIGTERM drains and exits cleanly.
#[test]
fn serve_with_overrides_sighup_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[listen]\naddress = \"127.0.0.1:1\"\n[upstream]\nurl = \"postgres://svc@192.0.2.1:5432/other\"\n\
         [[plugins]]\nname = \"ro\"\nhook = \"policy\"\npath = \"builtin:read-only\"\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = serve_logged(&["-c", config.to_str().unwrap()], port);
    // A session runs on a worker thread and is answered properly there.
    let output = psql(
        &format!("host=127.0.0.1 port={port} user=nobody dbname=payments sslmode=disable"),
        "whatever",
        "SELECT 1",
    );
    let psql_stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        psql_stderr.contains("password authentication failed"),
        "{psql_stderr}"
    );

    // Log lines, as they come.
    let lines = log_lines(&mut child);
    let mut log = String::new();
    signal(&child.0, libc::SIGHUP);
    wait_for_line(&lines, &mut log, "plugins reloaded");
    assert!(log.contains("SIGHUP"), "{log}");

    signal(&child.0, libc::SIGTERM);
    let status = wait_exit(&mut child.0, Duration::from_secs(20)).expect("exits on SIGTERM");
    assert!(status.success());
    wait_for_line(&lines, &mut log, "SIGTERM");
}

/// An identity plugin that quotes the bearer token it was handed — in its
/// own log line, in its refusal's reason — puts none of it in sluice's
/// log, nor does one that panics over it.
#[test]
fn a_token_an_identity_plugin_quotes_stays_out_of_the_log() {
    const SECRET: &str = "s3cr3t-b34r3r-t0k3n-material";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\nname = \"idp\"\nhook = \"identity\"\npath = \"{}\"\n\
             [plugins.config.tokens.tok-bob]\nuser = \"bob\"\ngroups = [\"ops\"]\n",
            sluice::plugin::builtin::test_guests::GUEST_IDENTITY
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = serve_logged(&["-c", config.to_str().unwrap()], port);
    let lines = log_lines(&mut child);
    let mut log = String::new();
    let conninfo = format!("host=127.0.0.1 port={port} user=bob dbname=payments sslmode=disable");
    for (token, logged) in [
        (format!("tok-{SECRET}"), "invalid token"),
        (format!("tok-panic-{SECRET}"), "identity plugin failed"),
    ] {
        let output = psql(&conninfo, &token, "SELECT 1");
        let psql_stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            psql_stderr.contains("password authentication failed"),
            "{psql_stderr}"
        );
        wait_for_line(&lines, &mut log, logged);
    }
    // The plugin's own line, its reason and its trap were all logged, the
    // trap with the panic's message from the plugin's stderr.
    assert!(log.contains("no such token: [the token]"), "{log}");
    assert!(log.contains("unknown token [the token]"), "{log}");
    assert!(log.contains("plugin idp trapped"), "{log}");
    assert!(log.contains("cannot parse token [the token]"), "{log}");
    assert!(!log.contains(&SECRET[..10]), "{log}");
    signal(&child.0, libc::SIGTERM);
    wait_exit(&mut child.0, Duration::from_secs(20)).expect("exits on SIGTERM");
}

/// SIGHUP to a gateway started without a config (nothing to reload) is
/// not a kill: it says so and goes on serving.
#[test]
fn serve_without_a_config_survives_sighup() {
    let port = free_port();
    let mut child = serve_logged(&[], port);
    let lines = log_lines(&mut child);
    let mut log = String::new();
    signal(&child.0, libc::SIGHUP);
    wait_for_line(&lines, &mut log, "nothing to reload");
    assert!(child.0.try_wait().unwrap().is_none(), "SIGHUP ended sluice");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    signal(&child.0, libc::SIGTERM);
    let status = wait_exit(&mut child.0, Duration::from_secs(20)).expect("exits on SIGTERM");
    assert!(status.success());
}

/// A trail that cannot be written raises the alert an operator's log
/// pipeline pages on: an ERROR line marked `alert=true` that says what
/// failed and what it means, and the gateway keeps running.
#[test]
fn an_audit_trail_that_cannot_be_written_raises_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &trail).unwrap();
    let port = free_port();
    let mut child = serve_logged(&["--audit-file", trail.to_str().unwrap()], port);
    let lines = log_lines(&mut child);
    let mut log = String::new();
    wait_for_line(&lines, &mut log, "alert=true");
    let alert = log
        .lines()
        .find(|line| line.contains("alert=true"))
        .expect("the alert line");
    assert!(alert.contains("ERROR"), "{alert}");
    // A full disk is waited out: refused while sluice retries.
    assert!(
        alert.contains("audit trail cannot be written for now: statements are refused"),
        "{alert}"
    );
    assert!(alert.contains("No space left on device"), "{alert}");
    assert!(child.0.try_wait().unwrap().is_none(), "sluice exited");
    signal(&child.0, libc::SIGTERM);
    wait_exit(&mut child.0, Duration::from_secs(20)).expect("exits on SIGTERM");
}

/// `sluice serve ARGS` on `port` in front of an upstream nothing answers
/// on, its log piped; returns once it listens.
fn serve_logged(args: &[&str], port: u16) -> Reaped {
    let child = Reaped(
        Command::new(SLUICE)
            .arg("serve")
            .args(args)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                "postgres://svc@127.0.0.1:9/payments",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "sluice");
    child
}

/// The child's log lines (its stderr), as they come.
fn log_lines(child: &mut Reaped) -> std::sync::mpsc::Receiver<String> {
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    lines
}

/// Collects log lines into `log` until one contains `needle`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, log: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => panic!("no {needle:?} in the log:\n{log}"),
        }
    }
}

/// The body of a plain HTTP GET that must succeed.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// `sluice audit archive` moves a trail's oldest rotated files away and
/// records them, so that `verify` takes the trail that starts after them
/// as archived; a trail that fails verification is not archived, and the
/// files stay where they were.
#[test]
fn audit_archive_moves_old_files_and_verify_knows_them() {
    let dir = tempfile::tempdir().unwrap();
    let trail = rotated_trail(dir.path());
    let rotated = sluice::audit::log::rotated_files(&trail).unwrap();
    assert!(rotated.len() > 3, "{rotated:?}");
    let trail_arg = trail.to_str().unwrap();
    let cold = dir.path().join("cold");
    let cold_arg = cold.to_str().unwrap();
    let archive = |keep: &str| {
        run(
            &[
                "audit",
                "archive",
                "--audit-file",
                trail_arg,
                "--to",
                cold_arg,
                "--keep",
                keep,
            ],
            "",
        )
    };

    // A changed record: verified first, nothing moved.
    let newest = &rotated.last().unwrap().1;
    let intact = std::fs::read_to_string(newest).unwrap();
    std::fs::write(newest, intact.replacen("select", "SELECT", 1)).unwrap();
    let (ok, _, stderr) = archive("1");
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("nothing was archived"), "{stderr}");
    assert!(stderr.contains("modified"), "{stderr}");
    assert_eq!(sluice::audit::log::rotated_files(&trail).unwrap(), rotated);
    std::fs::write(newest, intact).unwrap();

    let (ok, stdout, stderr) = archive("1");
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.matches("archived ").count(),
        rotated.len() - 1,
        "{stdout}"
    );
    assert!(stdout.contains("audit.jsonl.archived"), "{stdout}");
    let left = sluice::audit::log::rotated_files(&trail).unwrap();
    assert_eq!(left, rotated[rotated.len() - 1..]);
    for (_, file) in &rotated[..rotated.len() - 1] {
        assert!(cold.join(file.file_name().unwrap()).is_file(), "{file:?}");
    }
    let (ok, verified, stderr) = run(&["audit", "verify", "--audit-file", trail_arg], "");
    assert!(ok, "{verified}{stderr}");
    assert!(verified.contains("were archived"), "{verified}");

    // Asked to keep none, it keeps the newest: it holds the chain's last
    // record while the active file has none yet.
    let (ok, stdout, stderr) = archive("0");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("nothing to archive"), "{stdout}");
    assert_eq!(sluice::audit::log::rotated_files(&trail).unwrap(), left);
    // Into the trail's own directory: refused, nothing lost.
    let (ok, _, stderr) = run(
        &[
            "audit",
            "archive",
            "--audit-file",
            trail_arg,
            "--to",
            dir.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(
        !ok && stderr.contains("the trail's own directory"),
        "{stderr}"
    );

    // A file moved by hand once the trail has archive lines: deleted, as
    // far as anyone can tell, and no acknowledgement blesses it.
    let (_, newest) = &left[0];
    std::fs::rename(newest, dir.path().join("moved-by-hand")).unwrap();
    let (ok, verified, _) = run(&["audit", "verify", "--audit-file", trail_arg], "");
    assert!(!ok && verified.contains("no archive line"), "{verified}");
    let (ok, _, stderr) = acknowledge_start(trail_arg);
    assert!(!ok && stderr.contains("archive lines already"), "{stderr}");
}

/// `sluice audit archive --acknowledge-start` of the trail at `trail`.
fn acknowledge_start(trail: &str) -> (bool, String, String) {
    run(
        &[
            "audit",
            "archive",
            "--audit-file",
            trail,
            "--acknowledge-start",
        ],
        "",
    )
}

/// A trail whose oldest files were moved away by hand before `archive`
/// existed fails verify until a holder of the key acknowledges its start
/// — recorded and shown as an acknowledgement, not an archive; refused
/// while anything else is wrong, and once done.
#[test]
fn audit_archive_acknowledges_a_start_moved_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let trail = rotated_trail(dir.path());
    let trail_arg = trail.to_str().unwrap();
    let rotated = sluice::audit::log::rotated_files(&trail).unwrap();
    std::fs::rename(&rotated[0].1, dir.path().join("moved-by-hand")).unwrap();
    let (ok, verified, _) = run(&["audit", "verify", "--audit-file", trail_arg], "");
    assert!(!ok && verified.contains("no archive line"), "{verified}");
    let acknowledge = || acknowledge_start(trail_arg);
    let lines_path = dir.path().join("audit.jsonl.archived");
    let head = dir.path().join("audit.jsonl.head");
    let head_bytes = std::fs::read(&head).unwrap();
    std::fs::write(&head, b"not a head").unwrap();
    let (ok, _, stderr) = acknowledge();
    assert!(!ok && stderr.contains("nothing recorded"), "{stderr}");
    assert!(!lines_path.exists());
    std::fs::write(&head, head_bytes).unwrap();
    let (ok, stdout, stderr) = acknowledge();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("were moved away"), "{stdout}");
    let (ok, verified, stderr) = run(&["audit", "verify", "--audit-file", trail_arg], "");
    assert!(ok, "{verified}{stderr}");
    assert!(
        verified.contains("as a holder of the key acknowledged"),
        "{verified}"
    );
    assert!(!verified.contains("were archived"), "{verified}");
    let (ok, _, stderr) = acknowledge();
    assert!(!ok && stderr.contains("nothing recorded"), "{stderr}");
}

/// A trail of 20 records in `dir`, rotated every 600 bytes, with its key
/// and head beside it as `--audit-file` finds them.
fn rotated_trail(dir: &std::path::Path) -> std::path::PathBuf {
    let trail = dir.join("audit.jsonl");
    let key_path = dir.join("audit.jsonl.key");
    std::fs::write(&key_path, format!("{}\n", "a7".repeat(32))).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let settings = sluice::audit::log::LogSettings {
        path: trail.clone(),
        head_path: dir.join("audit.jsonl.head"),
        key: sluice::audit::ChainKey::load(&key_path).unwrap(),
        instance: "gw-archive".to_owned(),
        fsync: sluice::audit::log::Fsync::Always,
        rotate_bytes: Some(600),
        rotate_after: None,
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let log = sluice::audit::log::AuditLog::open(settings).unwrap();
        for n in 0..20 {
            let event = serde_json::json!({"event": "statement", "text": format!("select {n}")});
            let serde_json::Value::Object(event) = event else {
                unreachable!("an object literal")
            };
            log.record(event).await.unwrap();
        }
        log.close().await;
    });
    trail
}
