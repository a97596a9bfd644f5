//! Plugins on the data path: policy answers reach the client, faulty
//! plugins fail closed for one statement only, masking edits what the
//! client sees, identity plugins decide who logs in, broken plugins are
//! refused at load and at reload, and reloads under load lose nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sluice::plugin::builtin::test_guests as guest;
use sluice::plugin::reload;
use sluice_tests::raw::{
    RawConn, bind, bind_execute, bind_execute_sync, copy_text, execute, message, parse, query, sync,
};
use sluice_tests::{TestEnv, code_and_message, eventually, sqlstate};

/// A `[[plugins]]` table.
fn plugin(name: &str, hook: &str, path: &str, rest: &str) -> String {
    format!("[[plugins]]\nname = \"{name}\"\nhook = \"{hook}\"\npath = \"{path}\"\n{rest}\n\n")
}

/// The deny-rule test policy, named `rules`, with `rest` (its config and
/// files tables).
fn deny_rule(rest: &str) -> String {
    plugin("rules", "policy", guest::GUEST_DENY_RULE, rest)
}

/// The deny-rule test policy, denying statements that contain `words`.
fn deny_words(words: &[&str]) -> String {
    let list: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    deny_rule(&format!(
        "[plugins.config]\ndeny_words = [{}]\ndeny_kinds = [\"delete\", \"unparsed\"]",
        list.join(", ")
    ))
}

/// The first value of the first row a simple query returns.
async fn first_value(client: &tokio_postgres::Client, query: &str) -> String {
    let messages = client
        .simple_query(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0)?.to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{query}: no value in {messages:?}"))
}

async fn start(extra: &str) -> TestEnv {
    TestEnv::start_with_config(extra, false)
        .await
        .expect("the gateway starts with these plugins")
}

/// The message of a database error, or a panic naming what came instead.
fn denial(result: Result<impl std::fmt::Debug, tokio_postgres::Error>) -> (String, String) {
    code_and_message(&result.expect_err("the statement is refused"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_answers_reach_the_client() {
    let env = start(&deny_words(&["forbidden"])).await;
    let client = env.connect("analyst").await;

    // Allowed statements run, in both protocols.
    assert_eq!(first_value(&client, "SELECT 'fine'").await, "fine");
    let count: i64 = client
        .query_one("SELECT count(*) FROM cards WHERE id > $1", &[&0i64])
        .await
        .unwrap()
        .get(0);
    assert!(count > 0);

    // Denied in the simple protocol, with the rule's reason.
    let (code, message) = denial(client.simple_query("SELECT 'forbidden'").await);
    assert_eq!(code, "42501");
    assert!(message.contains("rule deny-rule"), "{message}");
    assert!(message.contains("forbidden"), "{message}");

    // Denied at Bind in the extended protocol.
    let (code, _) = denial(
        client
            .query("SELECT $1::text || 'forbidden'", &[&"x"])
            .await,
    );
    assert_eq!(code, "42501");

    // A denied DELETE deletes nothing.
    let (code, _) = denial(client.execute("DELETE FROM orders", &[]).await);
    assert_eq!(code, "42501");
    let direct = env.connect_direct().await;
    let left: i64 = direct
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(left > 0);

    // Inside a transaction the denial aborts it, as a failing statement
    // would: nothing before it commits.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("UPDATE customers SET name = 'changed' WHERE id = 1")
        .await
        .unwrap();
    // The same shape as `SELECT 'fine'` above: a policy that reads the
    // text (this one says its verdicts are not for the shape) is asked
    // every time.
    denial(client.simple_query("SELECT 'forbidden'").await);
    let (code, _) = denial(client.simple_query("SELECT 1").await);
    assert_eq!(code, "25P02");
    client.batch_execute("COMMIT").await.unwrap();
    let name: String = direct
        .query_one("SELECT name FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(name, "changed");

    // Several statements in one string cannot smuggle one past the policy.
    let (code, _) = denial(client.simple_query("SELECT 1; DELETE FROM orders").await);
    assert_eq!(code, "42501");

    // The session carries on.
    assert_eq!(first_value(&client, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_chain_in_config_order_and_any_deny_wins() {
    let env = start(&format!(
        "{}{}",
        plugin("allow", "policy", guest::GUEST_ALLOW_ALL, ""),
        deny_words(&["forbidden"])
    ))
    .await;
    let client = env.connect("agent").await;
    client.simple_query("SELECT 1").await.unwrap();
    let (code, _) = denial(client.simple_query("SELECT 'forbidden'").await);
    assert_eq!(code, "42501");

    // Two that deny: the first in config order answers, and the chain
    // stops there — the second is not asked. Either order.
    let denier = |name: &str, word: &str| {
        plugin(
            name,
            "policy",
            guest::GUEST_DENY_RULE,
            &format!("[plugins.config]\ndeny_words = [\"{word}\"]\ndeny_kinds = []"),
        )
    };
    for (first, second, first_word) in [("one", "two", "one"), ("two", "one", "two")] {
        let env = start(&format!(
            "{}{}",
            denier(first, first),
            denier(second, second)
        ))
        .await;
        let client = env.connect("agent").await;
        let calls = |name: &str| {
            let plugins = env.gateway.shared.plugins.current();
            plugins
                .plugins()
                .find(|p| p.name == name)
                .unwrap()
                .stats
                .calls()
        };
        let second_asked = calls(second);
        let (_, message) = denial(client.simple_query("SELECT 'one', 'two'").await);
        assert!(
            message.contains(&format!("mentions \"{first_word}\"")),
            "{message}"
        );
        assert_eq!(
            calls(second),
            second_asked,
            "{second} was asked after a deny"
        );
    }
}

/// A policy reads who asks through its session handle, and each call's
/// handle answers for that call's session, though the sessions share the
/// plugin's warm instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_see_the_session_they_judge() {
    let env = start(&deny_rule("[plugins.config]\ndeny_groups = [\"agents\"]")).await;
    let agent = env.connect("agent").await;
    let analyst = env.connect("analyst").await;
    for round in 0..5 {
        assert_eq!(
            first_value(&analyst, "SELECT 'ok'").await,
            "ok",
            "round {round}"
        );
        let (code, message) = denial(agent.simple_query("SELECT 'ok'").await);
        assert_eq!(code, "42501");
        assert!(
            message.contains("agent is in group agents"),
            "round {round}: {message}"
        );
        let value: i32 = analyst
            .query_one("SELECT $1::int4", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(value, round);
        let (code, _) = denial(agent.query_one("SELECT $1::int4", &[&round]).await);
        assert_eq!(code, "42501");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_read_only_policy_is_builtin() {
    let env = start(&plugin("read-only", "policy", "builtin:read-only", "")).await;
    let client = env.connect("agent").await;
    client
        .simple_query("SELECT count(*) FROM cards")
        .await
        .unwrap();
    client.simple_query("SHOW server_version").await.unwrap();
    let login_role: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    for text in [
        "DELETE FROM orders",
        "UPDATE cards SET pan = ''",
        "DROP TABLE cards",
        "SELECT 1; DELETE FROM orders",
        // Changing whose privileges the session runs under, however spelt.
        "SET ROLE postgres",
        "SET role = 'postgres'",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT * FROM pg_catalog.set_config('role', 'postgres', false)",
        // Writes and acts through built-in functions.
        "SELECT setval('orders_id_seq', 1, false)",
        "SELECT nextval('orders_id_seq')",
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT pg_notify('card_events', 'x')",
        "SELECT pg_terminate_backend(0)",
        "SELECT pg_advisory_lock(1)",
    ] {
        let (code, message) = denial(client.simple_query(text).await);
        assert_eq!(code, "42501", "{text}");
        assert!(message.contains("read-only"), "{text}: {message}");
    }
    // A setting's name given only when the statement runs may be the role.
    let (code, message) = denial(
        client
            .query("SELECT set_config($1, 'postgres', false)", &[&"role"])
            .await,
    );
    assert_eq!(code, "42501");
    assert!(message.contains("privilege"), "{message}");
    let role: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, login_role, "the session's role is unchanged");
    // Reading a sequence, the clock or random numbers is reading.
    client
        .simple_query("SELECT currval('orders_id_seq') IS NULL, random() < 2, clock_timestamp()")
        .await
        .map(|_| ())
        .or_else(|e| match code_and_message(&e).0.as_str() {
            // The server's: no nextval in this session yet.
            "55000" => Ok(()),
            _ => Err(e),
        })
        .expect("a read is allowed");
}

/// Trap, endless loop, memory blow-up and an answer sluice cannot use each
/// deny only their statement, while other sessions keep working throughout
/// — during the loop too, which runs its whole 1.5 s deadline yielding to
/// them at every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_plugins_deny_only_that_statement() {
    let env = start(&format!(
        "{}{}{}{}",
        plugin("trap", "policy", guest::GUEST_TRAP, ""),
        plugin("loop", "policy", guest::GUEST_LOOP, "deadline_ms = 1500"),
        // A long deadline, so the memory cap is what stops it even on a
        // loaded machine (filling 16 MiB of fresh pages can take a while).
        plugin(
            "alloc",
            "policy",
            guest::GUEST_ALLOC,
            "memory_mb = 16\ndeadline_ms = 10000"
        ),
        // Asks an approver group of no name: an answer sluice cannot use.
        plugin(
            "nameless",
            "policy",
            guest::GUEST_DENY_RULE,
            "[plugins.config]\ndeny_words = []\ndeny_kinds = []\n\
             approval_words = [\"nogroup\"]\napproval_group = \"\""
        ),
    ))
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let served_in_all = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut others = Vec::new();
    for _ in 0..3 {
        let client = env.connect("analyst").await;
        let (stop, served_in_all) = (stop.clone(), served_in_all.clone());
        others.push(tokio::spawn(async move {
            let mut served = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), 42);
                served += 1;
                served_in_all.fetch_add(1, Ordering::Relaxed);
            }
            served
        }));
    }

    let client = env.connect("agent").await;
    for (text, expected) in [
        ("SELECT 'trap'", "trap in plugin trap"),
        ("SELECT 'loop'", "deadline in plugin loop"),
        ("SELECT 'alloc'", "memory in plugin alloc"),
        ("SELECT 'nogroup'", "invalid-answer in plugin nameless"),
    ] {
        let served_before = served_in_all.load(Ordering::Relaxed);
        let (code, message) = denial(client.simple_query(text).await);
        // A plugin failure is a system error, not a policy's denial.
        assert_eq!(code, "58000", "{text}");
        assert!(message.contains(expected), "{text}: {message}");
        if text.contains("loop") {
            let served_meanwhile = served_in_all.load(Ordering::Relaxed) - served_before;
            assert!(
                served_meanwhile >= 10,
                "{served_meanwhile} statements of other sessions in the loop's 1.5 s"
            );
        }
        // The same session goes on, on a fresh instance.
        client.simple_query("SELECT 1").await.unwrap();
    }

    stop.store(true, Ordering::Relaxed);
    for other in others {
        assert!(other.await.unwrap() > 0, "other sessions were served");
    }
    let plugins = env.gateway.shared.plugins.current();
    let stats = |name: &str| {
        plugins
            .plugins()
            .find(|p| p.name == name)
            .map(|p| p.stats.clone())
            .unwrap()
    };
    assert_eq!(stats("trap").traps.load(Ordering::Relaxed), 1);
    assert_eq!(stats("loop").deadlines.load(Ordering::Relaxed), 1);
    assert_eq!(stats("alloc").memory.load(Ordering::Relaxed), 1);
    assert_eq!(stats("nameless").invalid_answers.load(Ordering::Relaxed), 1);
}

/// What cannot be loaded stops the gateway from starting, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_plugins_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0 and then nonsense").unwrap();
    // The allow-all policy as the SDK of an older sluice built it: every
    // `sluice:gateway/NAME@VERSION` it imports or exports names 0.1.0
    // (a string of the same length, so the component stays well formed).
    let older = dir.path().join("older.wasm");
    let mut bytes = std::fs::read(guest::GUEST_ALLOW_ALL).unwrap();
    let current = format!("@{}", sluice::plugin::runtime::CONTRACT_VERSION);
    assert_eq!(current.len(), "@0.1.0".len());
    let mut renamed = 0;
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], b"sluice:gateway/") {
        let start = at + found;
        let name_end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_graphic())
                .count();
        if let Some(version) = find(&bytes[start..name_end], current.as_bytes()) {
            bytes[start + version..start + version + current.len()].copy_from_slice(b"@0.1.0");
            renamed += 1;
        }
        at = name_end;
    }
    assert!(
        renamed >= 2,
        "the policy's imports and exports were renamed"
    );
    std::fs::write(&older, bytes).unwrap();
    let cases = [
        (
            plugin("p", "policy", &older.display().to_string(), ""),
            "was built against sluice:gateway@0.1.0, and this sluice speaks sluice:gateway@0.4.0",
        ),
        (
            plugin("p", "policy", guest::GUEST_PASS_THROUGH, ""),
            "is not a policy plugin",
        ),
        (
            plugin("p", "masking", guest::GUEST_ALLOW_ALL, ""),
            "is not a masking plugin",
        ),
        (
            plugin("p", "policy", &garbage.display().to_string(), ""),
            "not a loadable WebAssembly component",
        ),
        (
            plugin("p", "policy", "/nonexistent/plugin.wasm", ""),
            "cannot read /nonexistent/plugin.wasm",
        ),
        (
            plugin("p", "policy", "builtin:no-such-plugin", ""),
            "there is no builtin plugin",
        ),
        (
            plugin("p", "policy", guest::GUEST_TRAP_ON_LOAD, ""),
            // Why, in the plugin's own words: its panic's message.
            "guest-trap-on-load: trapping while loading",
        ),
        (
            plugin(
                "p",
                "policy",
                guest::GUEST_DENY_RULE,
                "[plugins.config]\nreject = true",
            ),
            "\"reject\": true",
        ),
        (
            plugin(
                "p",
                "policy",
                guest::GUEST_DENY_RULE,
                "[plugins.files]\nwords = \"/nonexistent/words\"",
            ),
            "file \"words\"",
        ),
        (
            plugin("p", "policy", guest::GUEST_ALLOW_ALL, "deadline_ms = 0"),
            "deadline_ms 0 is not between",
        ),
        (
            plugin("p", "policy", guest::GUEST_ALLOW_ALL, "max_instances = 0"),
            "max_instances 0 is not between 1 and 1024",
        ),
        (
            plugin(
                "p",
                "policy",
                guest::GUEST_ALLOW_ALL,
                "max_instances = 5000",
            ),
            "max_instances 5000 is not between 1 and 1024",
        ),
        (
            plugin("p", "firewall", guest::GUEST_ALLOW_ALL, ""),
            "unknown variant",
        ),
    ];
    for (config, expected) in cases {
        let error = match TestEnv::start_with_config(&config, false).await {
            Ok(_) => panic!("started with {config}"),
            Err(error) => error,
        };
        assert!(error.contains(expected), "{config}\n=> {error}");
    }
}

/// A broken replacement is rejected at reload and the loaded version keeps
/// serving; a good one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rejects_broken_replacements() {
    let env = start(&deny_words(&["old"])).await;
    let client = env.connect("analyst").await;
    let plugins = &env.gateway.shared.plugins;
    let before = plugins.generation();
    let scratch = tempfile::tempdir().unwrap();
    let garbage = scratch.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really a component").unwrap();

    // Each with the reason the log is given.
    for (broken, why) in [
        (
            plugin("rules", "policy", &garbage.display().to_string(), ""),
            "not a loadable WebAssembly component",
        ),
        (
            plugin("rules", "policy", guest::GUEST_PASS_THROUGH, ""),
            "is not a policy plugin",
        ),
        (
            plugin("rules", "policy", guest::GUEST_TRAP_ON_LOAD, ""),
            "guest-trap-on-load: trapping while loading",
        ),
        (
            deny_rule("[plugins.config]\nreject = true"),
            "\"reject\": true",
        ),
        (
            "[[plugins]]\nname = \"rules\"\nhook = \"policy\"\n".to_owned(),
            "path",
        ),
        ("this is not toml".to_owned(), "key with no value"),
        // A config without plugins (emptied by a bad deploy, say): the
        // policy in force is not turned off by a reload.
        (String::new(), "no policy plugin where one is in force"),
        // Nor is it replaced by another (or a chain cut short at an entry).
        (
            plugin("other", "policy", guest::GUEST_ALLOW_ALL, ""),
            "no policy plugin named \"rules\"",
        ),
    ] {
        env.rewrite_config(&broken);
        let error = reload::reload_from(plugins, &env.config_path)
            .await
            .expect_err("a broken replacement is rejected");
        assert!(error.to_string().contains(why), "{broken:?}: {error}");
        assert_eq!(plugins.generation(), before);
        denial(client.simple_query("SELECT 'old'").await);
    }
    assert_eq!(plugins.reloads_rejected.load(Ordering::Relaxed), 8);
    // The replacement that trapped on its config is no fault of the
    // version serving.
    let serving = plugins.current();
    let rules = serving.plugins().find(|p| p.name == "rules").unwrap();
    assert_eq!(rules.stats.traps.load(Ordering::Relaxed), 0);

    env.rewrite_config(&deny_words(&["new"]));
    reload::reload_from(plugins, &env.config_path)
        .await
        .unwrap();
    client.simple_query("SELECT 'old'").await.unwrap();
    denial(client.simple_query("SELECT 'new'").await);
}

/// The deny-rule policy denying the quoted words `'w0'` to `'w{last}'`:
/// quoted, so that `'w1'` is no part of `'w10'`.
fn deny_rounds_up_to(last: u64) -> String {
    let words: Vec<String> = (0..=last).map(|round| format!("'w{round}'")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    deny_words(&words)
}

/// 50 reloads while clients run statements back to back: no statement is
/// lost or fails, and every statement after a reload sees the new rules.
/// Reload `r` denies the words of rounds 0 to `r`, so a word once denied
/// stays denied: a worker that reads the round published after a reload
/// returned sends that round's word, and whichever version judges it must
/// refuse it — an older one would let it through. Each round waits until a
/// worker has been refused under it, so the workers meet every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_statement() {
    const ROUNDS: u64 = 50;
    let env = start(&deny_rounds_up_to(0)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    // The round whose reload has returned, and the latest round a worker
    // was refused under.
    let published = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let client = env.connect("analyst").await;
        let (stop, served) = (stop.clone(), served.clone());
        let (published, refused) = (published.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                // Alternate protocols; every statement must succeed.
                let value: i64 = if i % 2 == 0 {
                    client
                        .query_one("SELECT $1::int8 * 2", &[&i])
                        .await
                        .unwrap_or_else(|e| panic!("worker {worker}: {e}"))
                        .get(0)
                } else {
                    first_value(&client, &format!("SELECT {i} * 2"))
                        .await
                        .parse()
                        .unwrap()
                };
                assert_eq!(value, i * 2);
                served.fetch_add(1, Ordering::Relaxed);

                // The word of the round published last: refused by it and
                // every later one.
                let round = published.load(Ordering::SeqCst);
                let refusal = if i % 2 == 0 {
                    client
                        .query_one(&format!("SELECT 'w{round}' || $1::text"), &[&"x"])
                        .await
                        .map(|_| ())
                } else {
                    client
                        .simple_query(&format!("SELECT 'w{round}'"))
                        .await
                        .map(|_| ())
                };
                let (code, message) = denial(refusal);
                assert_eq!(code, "42501", "worker {worker}, round {round}: {message}");
                assert!(message.contains(&format!("'w{round}'")), "{message}");
                refused.fetch_max(round, Ordering::SeqCst);
                i += 1;
            }
        }));
    }

    let checker = env.connect("agent").await;
    let plugins = &env.gateway.shared.plugins;
    for round in 1..=ROUNDS {
        env.rewrite_config(&deny_rounds_up_to(round));
        let generation = reload::reload_from(plugins, &env.config_path)
            .await
            .unwrap();
        assert_eq!(generation, 1 + round);
        published.store(round, Ordering::SeqCst);
        denial(checker.simple_query(&format!("SELECT 'w{round}'")).await);
        // The next round's word is not denied yet.
        checker
            .simple_query(&format!("SELECT 'w{}'", round + 1))
            .await
            .unwrap();
        let met = eventually(Duration::from_secs(10), || async {
            refused.load(Ordering::SeqCst) >= round
        })
        .await;
        assert!(met, "no worker met round {round}'s rules");
    }

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("no worker statement failed");
    }
    assert!(served.load(Ordering::Relaxed) >= ROUNDS);
    assert_eq!(refused.load(Ordering::SeqCst), ROUNDS);
}

/// Editing a data file the plugin's config names reloads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_data_file_reloads_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "alpha\n").unwrap();
    let env = TestEnv::start_with_config(
        &deny_rule(&format!("[plugins.files]\nwords = \"{}\"", words.display())),
        true,
    )
    .await
    .unwrap();
    let client = env.connect("analyst").await;
    denial(client.simple_query("SELECT 'alpha'").await);
    client.simple_query("SELECT 'beta'").await.unwrap();

    std::fs::write(&words, "beta\n").unwrap();
    let reloaded = eventually(Duration::from_secs(10), || async {
        client.simple_query("SELECT 'beta'").await.is_err()
    })
    .await;
    assert!(reloaded, "the words file change was not picked up");
    client.simple_query("SELECT 'alpha'").await.unwrap();

    // So does the config file itself.
    env.rewrite_config(&deny_words(&["gamma"]));
    let reloaded = eventually(Duration::from_secs(10), || async {
        client.simple_query("SELECT 'gamma'").await.is_err()
    })
    .await;
    assert!(reloaded, "the config change was not picked up");
}

/// A plugin's own file overwritten, as a deploy copies a new build over
/// the old: garbage is refused and the loaded version keeps serving (the
/// watcher counts the rejection); a good build takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_copied_over_reloads_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("rules.wasm");
    std::fs::copy(guest::GUEST_DENY_RULE, &wasm).unwrap();
    let env = TestEnv::start_with_config(
        &plugin(
            "rules",
            "policy",
            &wasm.display().to_string(),
            "[plugins.config]\ndeny_words = [\"alpha\"]\ndeny_kinds = []",
        ),
        true,
    )
    .await
    .unwrap();
    let client = env.connect("analyst").await;
    denial(client.simple_query("SELECT 'alpha'").await);
    let plugins = &env.gateway.shared.plugins;
    let before = plugins.generation();

    std::fs::write(&wasm, b"\0asm and then a torn copy").unwrap();
    let rejected = eventually(Duration::from_secs(10), || async {
        plugins.reloads_rejected.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(rejected, "the broken file was not looked at");
    assert_eq!(plugins.generation(), before);
    denial(client.simple_query("SELECT 'alpha'").await);

    // The allow-all build copied over it: 'alpha' runs.
    std::fs::copy(guest::GUEST_ALLOW_ALL, &wasm).unwrap();
    let reloaded = eventually(Duration::from_secs(10), || async {
        client.simple_query("SELECT 'alpha'").await.is_ok()
    })
    .await;
    assert!(reloaded, "the new build was not picked up");
    assert!(plugins.generation() > before);
}

/// Starts the deny-rule policy with its words read from `words`, and
/// checks that it denies `alpha` and allows `beta`.
async fn start_with_words_file(words: &std::path::Path) -> (TestEnv, tokio_postgres::Client) {
    let env = TestEnv::start_with_config(
        &deny_rule(&format!("[plugins.files]\nwords = \"{}\"", words.display())),
        true,
    )
    .await
    .unwrap();
    let client = env.connect("analyst").await;
    denial(client.simple_query("SELECT 'alpha'").await);
    client.simple_query("SELECT 'beta'").await.unwrap();
    (env, client)
}

/// Whether `word` comes to be denied within the time a reload may take
/// (an event, or the watcher's look every few seconds).
async fn comes_to_deny(client: &tokio_postgres::Client, word: &str) -> bool {
    let query = format!("SELECT '{word}'");
    eventually(Duration::from_secs(15), || async {
        client.simple_query(&query).await.is_err()
    })
    .await
}

/// Makes the directory `dir` holding a `words.txt` of `words`.
fn words_in(dir: &std::path::Path, words: &str) {
    std::fs::create_dir(dir).unwrap();
    std::fs::write(dir.join("words.txt"), format!("{words}\n")).unwrap();
}

/// A Kubernetes ConfigMap updates its files by swapping a `..data` link
/// to a new directory: no event names the file itself, yet it changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_symlink_reloads_the_plugin() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    words_in(&root.join("..v1"), "alpha");
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/words.txt", root.join("words.txt")).unwrap();
    let (_env, client) = start_with_words_file(&root.join("words.txt")).await;

    // The update as the kubelet makes it.
    words_in(&root.join("..v2"), "beta");
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    assert!(
        comes_to_deny(&client, "beta").await,
        "the swapped link was not followed"
    );
    client.simple_query("SELECT 'alpha'").await.unwrap();
}

/// A deploy that moves a new directory into the place of the watched one
/// (`mv rules rules.old && mv rules.new rules`) leaves the watch on the
/// old directory: the file in the new one is still followed, through that
/// change and the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_moved_into_place_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    words_in(&rules, "alpha");
    let (_env, client) = start_with_words_file(&rules.join("words.txt")).await;

    let next = dir.path().join("rules.new");
    words_in(&next, "beta");
    std::fs::rename(&rules, dir.path().join("rules.old")).unwrap();
    std::fs::rename(&next, &rules).unwrap();
    assert!(
        comes_to_deny(&client, "beta").await,
        "the moved-in directory's file was not read"
    );
    std::fs::write(rules.join("words.txt"), "gamma\n").unwrap();
    assert!(
        comes_to_deny(&client, "gamma").await,
        "a change in the moved-in directory was not followed"
    );
    client.simple_query("SELECT 'beta'").await.unwrap();
}

/// Masking plugins chain in config order, each seeing what the one before
/// it made: `hide` turns `secret` into `xxxxxx`, and `rehide` turns
/// `xxxxxx` into `######` — so after `hide` it masks what `hide` masked,
/// and before it finds nothing yet. Rows (both protocols) and error text
/// go through the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_plugins_chain_in_config_order() {
    let hide = plugin(
        "hide",
        "masking",
        guest::GUEST_MASK_NEEDLE,
        "[plugins.config]\nneedle = \"secret\"\nmask = \"x\"",
    );
    let rehide = plugin(
        "rehide",
        "masking",
        guest::GUEST_MASK_NEEDLE,
        "[plugins.config]\nneedle = \"xxxxxx\"\nmask = \"#\"",
    );
    for (config, seen) in [
        (format!("{hide}{rehide}"), "a ###### b"),
        (format!("{rehide}{hide}"), "a xxxxxx b"),
    ] {
        let env = start(&config).await;
        let client = env.connect("analyst").await;
        assert_eq!(first_value(&client, "SELECT 'a secret b'").await, seen);
        let row = client
            .query_one("SELECT $1::text", &[&"a secret b"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), seen);
        let error = client
            .simple_query("SELECT * FROM \"a secret b\"")
            .await
            .expect_err("no such table");
        let (_, message) = code_and_message(&error);
        assert!(message.contains(seen), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}

/// Masking plugins edit rows (text and binary format), error and notice
/// text; everything else arrives as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_plugins_edit_what_the_client_sees() {
    let direct_env = start(&plugin(
        "needle",
        "masking",
        guest::GUEST_MASK_NEEDLE,
        "[plugins.config]\nneedle = \"4111111111111111\"\nmask = \"#\"",
    ))
    .await;
    let env = &direct_env;
    let direct = env.connect_direct().await;
    let pans: Vec<String> = direct
        .query("SELECT pan FROM cards ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(pans.iter().any(|p| p == "4111111111111111"), "{pans:?}");
    let expected: Vec<String> = pans
        .iter()
        .map(|p| p.replace("4111111111111111", "################"))
        .collect();

    let client = env.connect("analyst").await;
    // Extended protocol: tokio-postgres asks for binary results.
    let binary: Vec<String> = client
        .query("SELECT pan FROM cards ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(binary, expected);
    // Simple protocol: text results, several columns, NULLs.
    let rows = client
        .simple_query("SELECT id, pan, NULL::text AS nothing FROM cards ORDER BY id")
        .await
        .unwrap();
    let text: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                assert_eq!(row.get(2), None);
                Some(row.get(1).unwrap().to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(text, expected);
    // A named portal fetched in pieces.
    let transaction_client = env.connect("analyst").await;
    let mut tx_client = transaction_client;
    let tx = tx_client.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT pan FROM cards ORDER BY id", &[])
        .await
        .unwrap();
    let mut fetched = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        if rows.is_empty() {
            break;
        }
        fetched.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    assert_eq!(fetched, expected);
    tx.rollback().await.unwrap();

    // Errors and notices are masked too.
    let error = client
        .simple_query("SELECT '4111111111111111'::int4")
        .await
        .unwrap_err();
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(!message.contains("4111111111111111"), "{message}");
    assert!(message.contains("################"), "{message}");
    let (client, mut messages) = env.connect_with_async_messages("analyst").await;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'card 4111111111111111 seen'; END $$")
        .await
        .unwrap();
    match messages.recv().await {
        Some(tokio_postgres::AsyncMessage::Notice(notice)) => {
            assert_eq!(notice.message(), "card ################ seen");
        }
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_masking_changes_nothing() {
    let env = start(&plugin("noop", "masking", guest::GUEST_PASS_THROUGH, "")).await;
    let direct = env.connect_direct().await;
    let client = env.connect("analyst").await;
    let query =
        "SELECT c.*, o.* FROM cards c LEFT JOIN orders o ON o.card_id = c.id ORDER BY c.id, o.id";
    let through: Vec<String> = client
        .query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let raw: Vec<String> = direct
        .query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(through, raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_plugins_decide_who_logs_in() {
    let alice = sluice::auth::scram::make_verifier("alice-token", 64);
    let env = start(&plugin(
        "idp",
        "identity",
        guest::GUEST_IDENTITY,
        &format!(
            "[plugins.config.users.alice]\nverifier = \"{alice}\"\ngroups = [\"analysts\"]\n\
             [plugins.config.users.mallory]\nverifier = \"not a verifier\"\n\
             [plugins.config.tokens.tok-bob]\nuser = \"bob\"\ngroups = [\"ops\"]\n"
        ),
    ))
    .await;
    let login = |user: &str, password: &str| {
        let mut config = env.config(user);
        config.password(password);
        async move { sluice_tests::connect(&config).await }
    };

    // A stored secret: SCRAM-SHA-256, the token never on the wire.
    let client = login("alice", "alice-token").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(
        sqlstate(&login("alice", "wrong").await.unwrap_err()),
        Some("28P01")
    );
    // A bearer token (loopback here), mapped to its user only.
    let client = login("bob", "tok-bob").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    for (user, token) in [("bob", "tok-nope"), ("carol", "tok-bob")] {
        assert_eq!(
            sqlstate(&login(user, token).await.unwrap_err()),
            Some("28P01"),
            "{user}"
        );
    }
    // With identity plugins, the config's static principals are not used.
    assert_eq!(
        sqlstate(&login("agent", "agent-demo-token").await.unwrap_err()),
        Some("28P01")
    );
    // An unusable verifier admits nobody, and is the plugin's fault,
    // counted as an invalid answer.
    assert_eq!(
        sqlstate(&login("mallory", "anything").await.unwrap_err()),
        Some("28P01")
    );
    let plugins = env.gateway.shared.plugins.current();
    let idp = plugins.plugins().find(|p| p.name == "idp").unwrap();
    assert_eq!(idp.stats.invalid_answers.load(Ordering::Relaxed), 1);
    // A plugin that faults refuses the login, but the fault is not held
    // against the user or the address: past the lockout's count of
    // failures, bob still logs in.
    for attempt in 0..=sluice::auth::lockout::MAX_FAILURES {
        assert_eq!(
            sqlstate(&login("bob", "tok-panic-now").await.unwrap_err()),
            Some("28P01"),
            "attempt {attempt}"
        );
    }
    assert!(idp.stats.traps.load(Ordering::Relaxed) > sluice::auth::lockout::MAX_FAILURES as u64);
    login("bob", "tok-bob").await.unwrap();

    // A reload that would drop the identity plugin (a config emptied by
    // a bad deploy, say) is refused: logins would otherwise fall back to
    // the static principals read at start, which the plugin had replaced.
    env.rewrite_config("");
    let refused = reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .expect_err("a reload never drops the identity plugin");
    assert!(
        refused.to_string().contains("no identity plugin"),
        "{refused}"
    );
    assert_eq!(
        sqlstate(&login("agent", "agent-demo-token").await.unwrap_err()),
        Some("28P01")
    );
    login("bob", "tok-bob").await.unwrap();
}

/// A plugin reaches no file, no environment and no network unless
/// granted: ungranted, it can read no file (not even one in a directory
/// another plugin may read) and sees no environment variable; granted a
/// directory, it reads files in it but writes none there, and a link or a
/// `..` out of it leads nowhere; granted a variable, it sees that one
/// alone; and it never opens a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_cannot_read_host_files_unless_granted() {
    let granted = tempfile::tempdir().unwrap();
    let secret = granted.path().join("allowed.txt");
    std::fs::write(&secret, "twelve bytes").unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "not for plugins").unwrap();
    let link_out = granted.path().join("link-out");
    std::os::unix::fs::symlink(outside.path(), &link_out).unwrap();
    // The two temporary directories share a parent: `..` out of the
    // granted one leads to the file outside.
    let dot_dot_out = granted
        .path()
        .join("..")
        .join(outside.path().file_name().unwrap());
    assert!(dot_dot_out.is_file());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listening = listener.local_addr().unwrap();

    /// What the probe plugin says of `probe`.
    async fn probe(client: &tokio_postgres::Client, probe: String) -> String {
        denial(client.simple_query(&probe).await).1
    }

    let ungranted = start(&plugin("reader", "policy", guest::GUEST_READ_FILE, "")).await;
    let client = ungranted.connect("agent").await;
    for path in [secret.as_path(), outside.path()] {
        let message = probe(&client, format!("read {}", path.display())).await;
        assert!(message.contains("cannot read"), "{message}");
    }
    // The one variable the test gateway's environment holds.
    const VARIABLE: &str = "SLUICE_TEST_UPSTREAM_PASSWORD";
    let message = probe(&client, format!("env {VARIABLE}")).await;
    assert!(
        message.contains(&format!("no env {VARIABLE} of 0")),
        "{message}"
    );
    // Refused by sluice's WASI (no network granted, none grantable), not
    // merely unsupported by the plugin's standard library.
    let message = probe(&client, format!("connect {listening}")).await;
    assert!(
        message.contains("cannot connect: Permission denied"),
        "{message}"
    );
    // Clocks to the millisecond, not finer: nothing to time the host by.
    // (A reading that happens to fall on a whole millisecond would pass
    // by chance; three of them in a row would not.)
    for rounds in [1_000, 100_000, 1_000_000] {
        let message = probe(&client, format!("clock {rounds}")).await;
        assert!(
            message.contains("below a millisecond: wall 0, monotonic 0"),
            "{message}"
        );
    }

    let env = start(&plugin(
        "reader",
        "policy",
        guest::GUEST_READ_FILE,
        &format!(
            "[plugins.grants]\nread_dirs = [\"{}\"]\nenv = [\"{VARIABLE}\"]",
            granted.path().display()
        ),
    ))
    .await;
    let client = env.connect("agent").await;
    let message = probe(&client, format!("read {}", secret.display())).await;
    assert!(message.contains("read 12 bytes"), "{message}");
    for path in [outside.path(), link_out.as_path(), dot_dot_out.as_path()] {
        let message = probe(&client, format!("read {}", path.display())).await;
        assert!(message.contains("cannot read"), "{path:?}: {message}");
    }
    let written = granted.path().join("written.txt");
    let message = probe(&client, format!("write {}", written.display())).await;
    assert!(message.contains("cannot write"), "{message}");
    assert!(!written.exists());
    let message = probe(&client, format!("env {VARIABLE}")).await;
    let value = sluice_tests::SERVICE_PASSWORD;
    assert!(
        message.contains(&format!("env {VARIABLE}={value} of 1")),
        "{message}"
    );
    let message = probe(&client, "env HOME".to_owned()).await;
    assert!(message.contains("no env HOME of 1"), "{message}");
    // Refused by sluice's WASI (no network granted, none grantable), not
    // merely unsupported by the plugin's standard library.
    let message = probe(&client, format!("connect {listening}")).await;
    assert!(
        message.contains("cannot connect: Permission denied"),
        "{message}"
    );
    assert!(
        listener.accept().is_err(),
        "a plugin's connection reached the listener"
    );
}

/// A statement prepared while the policy allowed it is judged again at
/// every Bind: after a reload that forbids it, it no longer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_judged_by_the_policy_in_force_at_bind() {
    let env = start(&deny_words(&["nothing-yet"])).await;
    let client = env.connect("analyst").await;
    let statement = client
        .prepare("SELECT count(*) FROM cards WHERE id > $1")
        .await
        .unwrap();
    client.query_one(&statement, &[&0i64]).await.unwrap();

    env.rewrite_config(&deny_words(&["cards"]));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .unwrap();
    let (code, message) = denial(client.query_one(&statement, &[&0i64]).await);
    assert_eq!(code, "42501");
    assert!(message.contains("cards"), "{message}");
    // Refusing the Bind left the client's other statements alone.
    let other = client.prepare("SELECT 1").await.unwrap();
    client.query_one(&other, &[]).await.unwrap();
}

/// The approvers the approval tests answer as: by the names the test
/// approval plugin reads off an answer (`approve <ticket> <name>`).
const APPROVERS: &str = "[approvals.approvers]
alice = { principal = \"alice\", groups = [\"dba\"] }
bob = { principal = \"bob\", groups = [\"dba\", \"security\"] }
agent = { principal = \"agent\", groups = [\"dba\"] }
U0MALLORY = { principal = \"mallory\", groups = [\"security\"], plugin = \"approvers\" }
";

/// Hands `payload` to the approval plugins in force, as the gateway's
/// receiver of approvers' answers would.
async fn answer_ticket(
    shared: &sluice::gateway::Shared,
    payload: &str,
) -> Result<sluice::approval::Resolution, sluice::approval::AnswerError> {
    let plugins = shared.plugins.current();
    shared.approvals.interaction(&plugins, payload).await
}

/// The note of order `id`, read directly from the database.
async fn order_note(env: &TestEnv, id: i64) -> String {
    env.connect_direct()
        .await
        .query_one(
            "SELECT coalesce(note, '') FROM orders WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// The first approval ticket open, once one is.
async fn open_ticket(
    shared: &sluice::gateway::Shared,
) -> sluice::plugin::bindings::approval::exports::sluice::gateway::approval::Ticket {
    let mut found = None;
    let appeared = eventually(Duration::from_secs(10), || {
        found = shared.approvals.pending().into_iter().next();
        std::future::ready(found.is_some())
    })
    .await;
    assert!(appeared, "no ticket was opened");
    found.unwrap()
}

/// Runs `sql` on `client` in the background, where it may be held.
fn in_background(
    client: &Arc<tokio_postgres::Client>,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>>
{
    let client = client.clone();
    tokio::spawn(async move { client.simple_query(sql).await })
}

/// Sends a CancelRequest for `client`'s session, as Ctrl-C in psql does.
async fn cancel(client: &tokio_postgres::Client) {
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("the cancel request is sent");
}

/// A statement a policy holds for approval waits, unforwarded, until an
/// approver answers through the approval plugin: approved it runs, denied
/// or expired it is refused; nobody approves their own request, and the
/// approver sees the statement with card numbers masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_wait_for_an_approver() {
    let env = start(&format!(
        "{}{}{}[approvals]\ntimeout_ms = 3000\n\n{APPROVERS}\n[audit]\nfile = \"audit.jsonl\"\n",
        deny_rule("[plugins.config]\napproval_words = [\"orders\", \"unreachable\"]"),
        plugin(
            "needle",
            "masking",
            guest::GUEST_MASK_NEEDLE,
            "[plugins.config]\nneedle = \"4111111111111111\"",
        ),
        plugin("approvers", "approval", guest::GUEST_APPROVAL, ""),
    ))
    .await;
    let shared = env.gateway.shared.clone();
    let direct = env.connect_direct().await;
    let next_ticket = || open_ticket(&shared);
    let answer = |payload: String| {
        let shared = shared.clone();
        async move { answer_ticket(&shared, &payload).await }
    };

    // Approved: the statement runs after the answer, not before.
    let client = Arc::new(env.connect("agent").await);
    let held = in_background(
        &client,
        "UPDATE orders SET note = 'card 4111111111111111' WHERE id = 1",
    );
    let ticket = next_ticket().await;
    assert_eq!(ticket.requester.id, "agent");
    assert_eq!(ticket.approver_group, "dba");
    assert!(
        ticket.statement_text.contains("card ****************"),
        "{}",
        ticket.statement_text
    );
    let note = |id: i64| {
        let direct = &direct;
        async move {
            direct
                .query_one(
                    "SELECT coalesce(note, '') FROM orders WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_ne!(
        note(1).await,
        "card 4111111111111111",
        "ran before approval"
    );
    let own = answer(format!("approve {} agent", ticket.id)).await;
    assert!(own.unwrap_err().to_string().contains("may not approve"));
    // Only the configured approvers of the ticket's group answer it.
    let stranger = answer(format!("approve {} eve", ticket.id)).await;
    assert!(
        stranger
            .unwrap_err()
            .to_string()
            .contains("not an approver")
    );
    let other_group = answer(format!("approve {} U0MALLORY", ticket.id)).await;
    let refused = other_group.unwrap_err().to_string();
    assert!(
        refused.contains("mallory (U0MALLORY) does not approve for dba"),
        "{refused}"
    );
    assert_ne!(
        note(1).await,
        "card 4111111111111111",
        "ran on a refused answer"
    );
    answer(format!("approve {} alice", ticket.id))
        .await
        .unwrap();
    held.await.unwrap().expect("the approved statement runs");
    assert_eq!(note(1).await, "card 4111111111111111");
    // A ticket is answered once.
    assert!(answer(format!("deny {} bob", ticket.id)).await.is_err());

    // Denied: refused with the approver's name; the session carries on.
    let held = in_background(&client, "UPDATE orders SET note = 'denied' WHERE id = 2");
    let ticket = next_ticket().await;
    answer(format!("deny {} bob", ticket.id)).await.unwrap();
    let (code, message) = denial(held.await.unwrap());
    assert_eq!(code, "42501");
    assert!(message.contains("bob denied"), "{message}");
    assert_ne!(note(2).await, "denied");

    // Unanswered: refused when the ticket expires.
    let (code, message) = denial(
        client
            .simple_query("UPDATE orders SET note = 'late' WHERE id = 3")
            .await,
    );
    assert_eq!(code, "57014");
    assert!(message.contains("approval ticket"), "{message}");
    assert!(shared.approvals.pending().is_empty());

    // Approvers that cannot be told: refused at once.
    let (code, _) = denial(client.simple_query("SELECT 'unreachable'").await);
    assert_eq!(code, "58000");
    assert_eq!(
        first_value(&client, "SELECT 'still here'").await,
        "still here"
    );
    assert!(shared.approvals.pending().is_empty());

    // A prepared statement's ticket carries the values bound to it, masked:
    // what is approved is the statement with these values.
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .execute(
                    "UPDATE orders SET note = $1 WHERE id = $2::text::int",
                    &[&"card 4111111111111111", &"4"],
                )
                .await
        })
    };
    let ticket = next_ticket().await;
    // tokio-postgres sends every value in binary: labelled so, since the
    // same bytes read otherwise as another type.
    assert_eq!(
        ticket.parameters,
        [
            Some("[binary, as text: \"card ****************\"]".to_owned()),
            Some("[binary, as text: \"4\"]".to_owned())
        ],
        "{ticket:?}"
    );
    answer(format!("deny {} bob", ticket.id)).await.unwrap();
    let denied = held.await.unwrap().unwrap_err();
    assert_eq!(code_and_message(&denied).0, "42501");

    // `00000042` bound in binary to an int8 is not 42: the approver is
    // shown both readings, never the bytes as if they were the number.
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            let statement = client
                .prepare_typed(
                    "UPDATE orders SET note = 'binary' WHERE id <= $1",
                    &[tokio_postgres::types::Type::INT8],
                )
                .await?;
            client
                .execute(&statement, &[&i64::from_be_bytes(*b"00000042")])
                .await
        })
    };
    let ticket = next_ticket().await;
    assert_eq!(
        ticket.parameters,
        [Some(
            "[binary, as text: \"00000042\", as an integer: withheld, 19 digits]".to_owned()
        )],
        "{ticket:?}"
    );
    answer(format!("deny {} bob", ticket.id)).await.unwrap();
    assert!(held.await.unwrap().is_err());

    // An invisible bidi override is shown to the approver, not obeyed:
    // what they read is in the order the server runs it.
    let held = in_background(
        &client,
        "UPDATE orders SET note = 'x' WHERE id = 1 -- \u{202E}1 = di EREHW",
    );
    let ticket = next_ticket().await;
    assert!(
        ticket.statement_text.ends_with("-- <U+202E>1 = di EREHW"),
        "{}",
        ticket.statement_text
    );
    answer(format!("deny {} bob", ticket.id)).await.unwrap();
    assert_eq!(denial(held.await.unwrap()).0, "42501");

    // An EXECUTE's ticket shows what it runs, not only its name.
    let held = in_background(
        &client,
        "PREPARE touch_one AS UPDATE orders SET note = 'prepared' WHERE id > 0",
    );
    let ticket = next_ticket().await;
    answer(format!("approve {} alice", ticket.id))
        .await
        .unwrap();
    held.await.unwrap().expect("PREPARE approved");
    let held = in_background(&client, "EXECUTE touch_one");
    let ticket = next_ticket().await;
    assert!(
        ticket
            .statement_text
            .starts_with("EXECUTE touch_one\n-- EXECUTE runs: ")
            && ticket
                .statement_text
                .contains("UPDATE orders SET note = 'prepared' WHERE id > 0"),
        "{}",
        ticket.statement_text
    );
    answer(format!("deny {} bob", ticket.id)).await.unwrap();
    assert!(denial(held.await.unwrap()).0 == "42501");
    assert_ne!(note(1).await, "prepared");

    // The requester withdraws a held statement: a cancel request refuses
    // it at once, and the ticket closes ...
    let withdrawn = |shared: &Arc<sluice::gateway::Shared>| {
        shared
            .counters
            .approvals
            .withdrawn
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let held = in_background(&client, "UPDATE orders SET note = 'cancelled' WHERE id = 5");
    let ticket = next_ticket().await;
    cancel(&client).await;
    let (code, message) = denial(held.await.unwrap());
    assert_eq!(code, "57014");
    assert!(message.contains("waiting for approval"), "{message}");
    assert!(shared.approvals.pending().is_empty());
    assert!(
        answer(format!("approve {} alice", ticket.id))
            .await
            .is_err()
    );
    assert_ne!(note(5).await, "cancelled");
    assert_eq!(withdrawn(&shared), 1);
    assert_eq!(
        first_value(&client, "SELECT 'after the cancel'").await,
        "after the cancel"
    );

    // ... and so does leaving: nobody is left to answer.
    let mut leaver = RawConn::login(
        env.addr(),
        &env.database,
        "agent",
        sluice_tests::token_of("agent"),
    )
    .await;
    leaver
        .send(&query("UPDATE orders SET note = 'left' WHERE id = 6"))
        .await;
    let ticket = next_ticket().await;
    drop(leaver);
    let closed = eventually(Duration::from_secs(10), || {
        std::future::ready(shared.approvals.pending().is_empty())
    })
    .await;
    assert!(closed, "the ticket stayed open after its client left");
    assert!(
        answer(format!("approve {} alice", ticket.id))
            .await
            .is_err()
    );
    assert_ne!(note(6).await, "left");
    // Counted once the approval plugin has heard of it, a moment later.
    let counted = eventually(Duration::from_secs(10), || {
        std::future::ready(withdrawn(&shared) == 2)
    })
    .await;
    assert!(counted, "withdrawn: {}", withdrawn(&shared));
    // On the record: withdrawn, and its outcome the refusal, not a
    // statement cut off by the session's end.
    let left = eventually(Duration::from_secs(10), || {
        let trail = sluice::audit::read::read(&env.config_path.with_file_name("audit.jsonl"))
            .expect("the trail reads")
            .records;
        let statement = trail.iter().find(|r| {
            r["event"] == "statement" && r["text"] == "UPDATE orders SET note = 'left' WHERE id = 6"
        });
        let outcome = statement.and_then(|statement| {
            trail.iter().find(|r| {
                r["event"] == "outcome"
                    && r["session"] == statement["session"]
                    && r["statements"][0] == statement["statement"]
            })
        });
        let found = statement.zip(outcome).map(|(s, o)| {
            (
                s["decision"]["approval"]["outcome"].clone(),
                o["error"]["sqlstate"].clone(),
            )
        });
        std::future::ready(found == Some(("withdrawn".into(), "57014".into())))
    })
    .await;
    assert!(
        left,
        "the leaver's statement is not on the record as withdrawn"
    );
}

/// Two policies that ask for approval from different groups: `dba` for
/// `orders`, `security` for `cards`.
fn two_groups_policies() -> String {
    plugin(
        "dba-rules",
        "policy",
        guest::GUEST_DENY_RULE,
        "[plugins.config]\napproval_words = [\"orders\"]",
    ) + &plugin(
        "security-rules",
        "policy",
        guest::GUEST_DENY_RULE,
        "[plugins.config]\napproval_words = [\"cards\"]\napproval_group = \"security\"",
    )
}

/// An approval counts only before its ticket expires: a client that
/// stops reading while the gateway writes it earlier replies holds the
/// session up, but cannot choose to run its approved statement long
/// after the approvers' answer stopped counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_counts_only_until_its_ticket_expires() {
    let env = start(&format!(
        "{}{}{}[approvals]\ntimeout_ms = 1000\n\n{APPROVERS}",
        deny_rule("[plugins.config]\napproval_words = [\"orders\"]"),
        plugin("approvers", "approval", guest::GUEST_APPROVAL, ""),
        plugin("pans", "masking", "builtin:luhn-masker", ""),
    ))
    .await;
    let shared = env.gateway.shared.clone();
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    // A reply far larger than the sockets hold, left unread; once the
    // gateway holds as much of it as it takes, a statement held for
    // approval.
    conn.send(&query(
        "SELECT repeat('x', 1000) FROM generate_series(1, 50000)",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.send(&query("UPDATE orders SET note = 'too late' WHERE id = 1"))
        .await;
    let ticket = open_ticket(&shared).await;
    answer_ticket(&shared, &format!("approve {} alice", ticket.id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let big = conn.until_ready().await;
    assert!(big.iter().any(|m| m.tag == b'C'), "the SELECT ran");
    let held = conn.until_ready().await;
    let refused = held.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(refused.code(), "57014", "{held:?}");
    assert_ne!(order_note(&env, 1).await, "too late");
}

/// One ticket asks one group: a query whose statements need the approval
/// of different groups is refused, rather than run on the first group's
/// word; statements needing the same group share one ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_needing_two_groups_approval_is_refused() {
    let approvers = plugin("approvers", "approval", guest::GUEST_APPROVAL, "");
    // Approvers without a masking plugin would be shown every statement
    // withheld, and approve what they did not see: no such gateway starts.
    let unseen =
        TestEnv::start_with_config(&format!("{}{approvers}", two_groups_policies()), false)
            .await
            .err()
            .expect("approval without masking is refused");
    assert!(
        format!("{unseen:#}").contains("an approval plugin needs a masking plugin"),
        "{unseen:#}"
    );
    let env = start(&format!(
        "{}{approvers}{}",
        two_groups_policies(),
        plugin("pans", "masking", "builtin:luhn-masker", ""),
    ))
    .await;
    let client = Arc::new(env.connect("agent").await);
    for query in [
        // Two statements, each held for another group ...
        "UPDATE orders SET note = 'x' WHERE id = 1; SELECT count(*) FROM cards",
        // ... or one statement both policies hold, for different groups.
        "UPDATE orders SET note = (SELECT 'x' FROM cards LIMIT 1) WHERE id = 1",
    ] {
        let (code, message) = denial(client.simple_query(query).await);
        assert_eq!(code, "42501");
        assert!(
            message.contains("different groups (dba, security)"),
            "{query}: {message}"
        );
    }
    let shared = env.gateway.shared.clone();
    assert!(shared.approvals.pending().is_empty());

    // One group: held. The approver is shown the statement masked, as
    // the audit trail records it, never raw.
    let held = in_background(
        &client,
        "UPDATE orders SET note = 'card 4111111111111111' WHERE id = 1",
    );
    let ticket = open_ticket(&shared).await;
    assert!(
        ticket
            .statement_text
            .starts_with("UPDATE orders SET note = 'card ")
            && !ticket.statement_text.contains("4111111111111111"),
        "{}",
        ticket.statement_text
    );
    let tables: Vec<&str> = ticket.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tables, ["orders"]);
    cancel(&client).await;
    let (code, _) = denial(held.await.unwrap());
    assert_eq!(code, "57014");
}

/// An approval holds for the policies it was given under: a reload while
/// the statement waits (a deny rule added during an incident) is applied
/// to it before it runs, approved or not; a reload that still asks the same
/// group lets the approval stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_a_statement_is_held_is_applied_before_it_runs() {
    let approvers = plugin("approvers", "approval", guest::GUEST_APPROVAL, "")
        + &plugin("pans", "masking", "builtin:luhn-masker", "");
    let audit = "\n[audit]\nfile = \"audit.jsonl\"\n";
    let holding = format!(
        "{}{approvers}{APPROVERS}{audit}",
        deny_rule("[plugins.config]\napproval_words = [\"orders\"]")
    );
    let env = start(&holding).await;
    let shared = env.gateway.shared.clone();
    let client = Arc::new(env.connect("agent").await);
    let approve = |id: String| {
        let shared = shared.clone();
        async move { answer_ticket(&shared, &format!("approve {id} alice")).await }
    };
    let reload = |config: String| {
        env.rewrite_config(&config);
        reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
    };

    // Reloaded into other rules that still ask the same group.
    let held = in_background(
        &client,
        "UPDATE orders SET note = 'same rules' WHERE id = 1",
    );
    let ticket = open_ticket(&shared).await;
    let widened = deny_rule("[plugins.config]\napproval_words = [\"orders\", \"invoices\"]");
    reload(format!("{widened}{approvers}{APPROVERS}{audit}"))
        .await
        .unwrap();
    approve(ticket.id).await.unwrap();
    held.await
        .unwrap()
        .expect("approved, and the policies in force agree");

    // Reloaded into a deny: the approval given before it does not run it.
    let held = in_background(
        &client,
        "UPDATE orders SET note = 'denied since' WHERE id = 1",
    );
    let ticket = open_ticket(&shared).await;
    reload(format!(
        "{}{approvers}{APPROVERS}{audit}",
        deny_words(&["orders"])
    ))
    .await
    .unwrap();
    approve(ticket.id.clone()).await.unwrap();
    let (code, message) = denial(held.await.unwrap());
    assert_eq!(code, "42501");
    assert!(message.contains("orders"), "{message}");
    // On the record: denied by the rules in force, with the approval that
    // was given before them.
    let record = statement_record_where(&env, |r| {
        r["decision"]["approval"]["ticket"] == ticket.id.as_str()
    })
    .await;
    assert_eq!(record["decision"]["verdict"], "deny");
    assert_eq!(record["decision"]["approval"]["outcome"], "approved");
    assert_eq!(record["decision"]["approval"]["approver"], "alice");
    assert_eq!(order_note(&env, 1).await, "same rules");
}

/// A statement already running when a reload swaps the masking plugin's
/// config finishes under the version it was judged under; the next one
/// sees the new version. (The statement is held on a table lock taken
/// directly, so that the reload lands while it runs, before its rows come.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_statement_finishes_on_the_plugins_it_started_with() {
    let needle = |mask: &str| {
        plugin(
            "needle",
            "masking",
            guest::GUEST_MASK_NEEDLE,
            &format!("[plugins.config]\nneedle = \"4111111111111111\"\nmask = \"{mask}\""),
        )
    };
    let env = start(&needle("#")).await;
    let client = Arc::new(env.connect("analyst").await);
    let mut direct = env.connect_direct().await;
    let lock = direct.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE cards IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let running = in_background(
        &client,
        "SELECT pan FROM cards WHERE pan = '4111111111111111'",
    );
    let watcher = &env.connect_direct().await;
    let waiting_on_the_lock = eventually(Duration::from_secs(30), || async move {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT pan FROM cards%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting == 1
    })
    .await;
    assert!(
        waiting_on_the_lock,
        "the statement waits on the lock upstream"
    );

    env.rewrite_config(&needle("*"));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .expect("the new config loads");
    lock.rollback().await.unwrap();
    let rows = running.await.unwrap().expect("the statement runs");
    let masked: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(masked, ["################"], "masked as when it was judged");
    assert_eq!(
        first_value(
            &client,
            "SELECT pan FROM cards WHERE pan = '4111111111111111'"
        )
        .await,
        "****************",
        "the next statement is masked under the new config"
    );
}

/// A client that never ends its cycle does not keep the plugins it began
/// under: after a reload, its next statement is refused until it sends
/// Sync, and the one after is judged by the new rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_left_open_does_not_keep_reloaded_plugins() {
    // The deny-rule policy judges every statement afresh; the allow-all
    // one says its verdict holds for the statement's shape, which the
    // session then remembers: neither old verdict outlives the reload.
    for first in [
        deny_words(&["old"]),
        plugin("rules", "policy", guest::GUEST_ALLOW_ALL, ""),
    ] {
        a_pipeline_left_open_under(&first).await;
    }
}

async fn a_pipeline_left_open_under(first: &str) {
    let env = start(first).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let statement = |text: &str| {
        let mut bytes = parse("", text);
        bytes.extend(bind("", ""));
        bytes.extend(execute("", 0));
        bytes.extend(sluice_tests::raw::flush());
        bytes
    };
    // Replies up to the Execute's end (CommandComplete or an error).
    async fn until_done(conn: &mut RawConn) -> Vec<sluice_tests::raw::Message> {
        let mut replies = Vec::new();
        while let Some(reply) = conn.recv().await {
            let done = matches!(reply.tag, b'C' | b'E');
            replies.push(reply);
            if done {
                break;
            }
        }
        replies
    }
    // Twice: the second Bind of the shape may be allowed by its verdict.
    for _ in 0..2 {
        conn.send(&statement("SELECT 'new'")).await;
        let replies = until_done(&mut conn).await;
        assert!(replies.iter().any(|m| m.tag == b'C'), "{replies:?}");
    }

    env.rewrite_config(&deny_words(&["new"]));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .unwrap();
    // Still no Sync: the next statement is refused, not judged by the old
    // rules (which allow 'new').
    conn.send(&statement("SELECT 'new'")).await;
    let replies = until_done(&mut conn).await;
    let refused = replies.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(refused.code(), "55000", "{replies:?}");
    conn.send(&sync()).await;
    conn.until_ready().await;
    // The next cycle is judged by the new rules.
    conn.send(&statement("SELECT 'new'")).await;
    let replies = until_done(&mut conn).await;
    let denied = replies.iter().find(|m| m.tag == b'E').expect("denied");
    assert_eq!(denied.code(), "42501", "{replies:?}");
}

/// A portal bound before a reload, in a transaction that keeps it open,
/// is not run after it under the old verdict: its Execute is refused
/// (55000) and binding it again judges it by the new rules. Portals of a
/// transaction begun after the reload run as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_bound_before_a_reload_is_not_run_after_it() {
    let env = start(&deny_words(&["old"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let cycle = |parts: &[Vec<u8>]| {
        let mut bytes: Vec<u8> = parts.concat();
        bytes.extend(sync());
        bytes
    };
    let code = |replies: &[sluice_tests::raw::Message]| {
        replies
            .iter()
            .find(|m| m.tag == b'E')
            .map(|m| m.code().to_owned())
    };
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    conn.send(&cycle(&[parse("s", "SELECT 'new'"), bind("p", "s")]))
        .await;
    assert_eq!(code(&conn.until_ready().await), None);

    env.rewrite_config(&deny_words(&["new"]));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .unwrap();
    conn.send(&cycle(&[execute("p", 0)])).await;
    let replies = conn.until_ready().await;
    assert_eq!(code(&replies).as_deref(), Some("55000"), "{replies:?}");
    assert!(!replies.iter().any(|m| m.tag == b'D'), "{replies:?}");
    // Nor read by SQL FETCH, which reads a Bind's portal as a cursor.
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    conn.send(&cycle(&[parse("s2", "SELECT 'old'"), bind("p2", "s2")]))
        .await;
    assert_eq!(code(&conn.until_ready().await), None);
    env.rewrite_config(&deny_words(&["old", "new"]));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .unwrap();
    conn.send(&query("FETCH ALL FROM p2")).await;
    let replies = conn.until_ready().await;
    assert_eq!(code(&replies).as_deref(), Some("55000"), "{replies:?}");
    assert!(!replies.iter().any(|m| m.tag == b'D'), "{replies:?}");
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;
    // Bound again, it is judged by the new rules.
    conn.send(&cycle(&[bind("p", "s"), execute("p", 0)])).await;
    assert_eq!(code(&conn.until_ready().await).as_deref(), Some("42501"));

    // A transaction begun after the reload keeps its portals as ever.
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    conn.send(&cycle(&[parse("t", "SELECT 'fine'"), bind("q", "t")]))
        .await;
    assert_eq!(code(&conn.until_ready().await), None);
    conn.send(&cycle(&[execute("q", 0)])).await;
    let replies = conn.until_ready().await;
    assert_eq!(code(&replies), None, "{replies:?}");
    assert!(replies.iter().any(|m| m.tag == b'D'), "{replies:?}");
}

/// With no policy plugin to judge them, SQL that replaces a prepared
/// statement is still followed: a Bind's record names what the server
/// runs, not what the name held before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_s_record_follows_sql_prepare_with_no_policy() {
    let env = start(
        "[audit]\nfile = \"audit.jsonl\"\n\n[[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n",
    )
    .await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", "admin-demo-token").await;
    let mut cycle = parse("s1", "SELECT 'what s1 held first'");
    cycle.extend(sync());
    conn.send(&cycle).await;
    conn.until_ready().await;
    conn.send(&query(
        "DEALLOCATE s1; PREPARE s1 AS SELECT 'what s1 holds now'",
    ))
    .await;
    let replies = conn.until_ready().await;
    assert!(!replies.iter().any(|m| m.tag == b'E'), "{replies:?}");
    conn.send(&bind_execute_sync("s1")).await;
    let replies = conn.until_ready().await;
    assert!(
        replies
            .iter()
            .any(|m| m.tag == b'D' && String::from_utf8_lossy(&m.body).contains("holds now")),
        "{replies:?}"
    );
    conn.send(&query("SELECT 'a marker after the Bind'")).await;
    conn.until_ready().await;
    // The Bind's record: the last statement of the extended protocol.
    statement_record(&env, "a marker after the Bind").await;
    let trail = sluice::audit::read::read(&env.config_path.with_file_name("audit.jsonl")).unwrap();
    let bound = trail
        .records
        .iter()
        .rfind(|r| r["event"] == "statement" && r["protocol"] == "extended")
        .expect("the Bind's record");
    assert!(
        bound["text"]
            .as_str()
            .unwrap()
            .contains("what s1 holds now"),
        "{bound}"
    );
    // A PREPARE of a name in use is the server's to refuse (no policy:
    // sluice refuses nothing), and what the name holds stays followed.
    conn.send(&query("PREPARE s1 AS SELECT 'a third'")).await;
    let replies = conn.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(error.code(), "42P05");
}

/// The statement record of the one whose text holds `needle`, once the
/// trail in the config's directory has it.
async fn statement_record(env: &TestEnv, needle: &str) -> serde_json::Value {
    statement_record_where(env, |r| {
        r["text"].as_str().is_some_and(|t| t.contains(needle))
    })
    .await
}

/// The first statement record `wanted` picks, once the trail in the
/// config's directory has it.
async fn statement_record_where(
    env: &TestEnv,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let trail = env.config_path.with_file_name("audit.jsonl");
    let mut found = None;
    let recorded = eventually(Duration::from_secs(10), || {
        found = sluice::audit::read::read(&trail).ok().and_then(|trail| {
            trail
                .records
                .into_iter()
                .find(|r| r["event"] == "statement" && wanted(r))
        });
        std::future::ready(found.is_some())
    })
    .await;
    assert!(recorded, "no such statement record");
    found.unwrap()
}

/// `sluice audit show` of the session `record` is of.
fn shown_session(env: &TestEnv, record: &serde_json::Value) -> String {
    let trail = sluice::audit::read::read(&env.config_path.with_file_name("audit.jsonl")).unwrap();
    let picked = sluice::audit::read::Filter::default().apply(&trail.records);
    sluice::audit::read::show_session(&picked, record["session"].as_u64().unwrap())
}

/// Every statement that needed approval says so on the record: who was
/// asked, who answered, how and when — or why nobody could answer (the
/// approvers could not be told, no approval plugin is configured, two
/// groups' approval was needed), never that it needed none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_on_the_record_whether_given_or_not() {
    let audit = "[audit]\nfile = \"audit.jsonl\"\n";
    // A masking plugin, so that the ticket's reason (masked as the trail
    // records it) still says what the test approver refuses to deliver.
    let env = start(&format!(
        "{}{}{}[approvals]\ntimeout_ms = 5000\n\n{APPROVERS}\n{audit}",
        deny_rule("[plugins.config]\napproval_words = [\"orders\", \"unreachable\"]"),
        plugin("approvers", "approval", guest::GUEST_APPROVAL, ""),
        plugin("noop", "masking", guest::GUEST_PASS_THROUGH, ""),
    ))
    .await;
    let shared = env.gateway.shared.clone();
    let client = Arc::new(env.connect("agent").await);
    let held = in_background(&client, "UPDATE orders SET note = 'approved' WHERE id = 2");
    let ticket = open_ticket(&shared).await;
    answer_ticket(&shared, &format!("approve {} alice", ticket.id))
        .await
        .unwrap();
    held.await.unwrap().expect("approved, it runs");
    let (code, _) = denial(client.simple_query("SELECT 'unreachable'").await);
    assert_eq!(code, "58000");

    let approved = statement_record(&env, "'approved'").await;
    let approval = &approved["decision"]["approval"];
    assert_eq!(approved["decision"]["verdict"], "allow");
    // The policy and its rule that asked, as a denial's are recorded.
    assert_eq!(approved["decision"]["plugin"], "rules");
    assert_eq!(approved["decision"]["rule"], "approval-words");
    assert_eq!(approval["outcome"], "approved");
    assert_eq!(approval["approver"], "alice");
    assert_eq!(approval["approver_group"], "dba");
    assert_eq!(approval["ticket"], ticket.id.as_str());
    assert!(approval["answered_ms"].as_u64() >= approval["requested_ms"].as_u64());
    let failed = statement_record(&env, "unreachable").await;
    assert_eq!(failed["decision"]["verdict"], "error");
    assert_eq!(failed["decision"]["approval"]["outcome"], "request-failed");
    assert_eq!(failed["decision"]["rule"], "approval-words");
    let not_obtained = |env: &TestEnv, outcome: &str| {
        let at = sluice::audit::NOT_OBTAINED
            .iter()
            .position(|o| *o == outcome)
            .unwrap();
        env.gateway.shared.counters.approvals.not_obtained[at].load(Ordering::Relaxed)
    };
    assert_eq!(not_obtained(&env, "request-failed"), 1);
    assert!(
        !failed["decision"]["approval"]["ticket"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // The request went on the record before the approvers saw it.
    let trail = sluice::audit::read::read(&env.config_path.with_file_name("audit.jsonl")).unwrap();
    let requested = trail
        .records
        .iter()
        .find(|r| r["event"] == "approval_requested" && r["ticket"] == ticket.id.as_str())
        .expect("the request is on the record");
    assert_eq!(requested["statement"], approved["statement"]);
    assert_eq!(requested["approver_group"], "dba");
    assert_eq!(requested["rule"], "approval-words");
    assert!(requested["seq"].as_u64() < approved["seq"].as_u64());
    assert!(requested["text"].as_str().unwrap().contains("'approved'"));
    let shown = shown_session(&env, &approved);
    assert!(
        shown.contains(&format!(
            "for approval from dba (ticket {}, asked by rules, rule approval-words)",
            ticket.id
        )),
        "{shown}"
    );
    assert!(
        shown.contains("approval from dba approved by alice"),
        "{shown}"
    );
    assert!(
        shown.contains("approval from dba required, none obtained: request-failed"),
        "{shown}"
    );
    assert!(!shown.contains("approval: not required"), "{shown}");

    // No approval plugin; two groups asked of one query.
    let env = start(&format!(
        "{}{}{audit}",
        plugin("noop", "masking", guest::GUEST_PASS_THROUGH, ""),
        two_groups_policies(),
    ))
    .await;
    let client = env.connect("agent").await;
    denial(client.simple_query("SELECT 'lonely' FROM orders").await);
    denial(
        client
            .simple_query("SELECT 'two' FROM orders; SELECT count(*) FROM cards")
            .await,
    );
    let lonely = statement_record(&env, "'lonely'").await;
    assert_eq!(lonely["decision"]["verdict"], "deny");
    assert_eq!(
        lonely["decision"]["approval"]["outcome"],
        "no-approval-plugin"
    );
    assert_eq!(lonely["decision"]["approval"]["approver_group"], "dba");
    assert_eq!(lonely["decision"]["rule"], "approval-words");
    let two = statement_record(&env, "'two'").await;
    assert_eq!(two["decision"]["approval"]["outcome"], "two-groups");
    assert_eq!(
        two["decision"]["approval"]["approver_group"],
        "dba, security"
    );
    assert_eq!(two["decision"]["rule"], "one-approver-group");
    // Counted for the metrics, by why.
    assert_eq!(not_obtained(&env, "no-approval-plugin"), 1);
    assert_eq!(not_obtained(&env, "two-groups"), 1);
    assert_eq!(not_obtained(&env, "request-failed"), 0);
}

/// Without an approval plugin, a statement that needs approval is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_without_an_approval_plugin_is_refused() {
    let env = start(&deny_rule(
        "[plugins.config]\napproval_words = [\"orders\"]",
    ))
    .await;
    let client = env.connect("agent").await;
    let (code, message) = denial(client.simple_query("SELECT count(*) FROM orders").await);
    assert_eq!(code, "42501");
    assert!(message.contains("no approval plugin"), "{message}");
}

/// A cycle whose division fails, so that the server skips the Parse of
/// the unnamed statement behind it; then a Bind of the unnamed statement,
/// which sluice must refuse (it did not see one parsed) rather than judge
/// as the skipped text while the server runs the statement it still holds.
async fn assert_a_skipped_parse_is_not_judged(conn: &mut RawConn) {
    let mut failing = parse("divide", "SELECT 1/0");
    failing.extend(bind_execute("divide"));
    failing.extend(parse("", "SELECT 'harmless'"));
    failing.extend(sync());
    assert_eq!(conn.refusal(&failing).await, "22012");
    assert_eq!(conn.refusal(&bind_execute_sync("")).await, "26000");
}

/// A session of `env` as agent, with a temporary table `scratch (n int)`
/// and `load` prepared as a COPY into it from STDIN.
async fn with_a_copy_prepared(env: &TestEnv) -> RawConn {
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("CREATE TEMP TABLE scratch (n int)")).await;
    conn.until_ready().await;
    conn.define("load", "COPY scratch FROM STDIN").await;
    conn
}

/// A Parse cannot rename what a prepared statement runs: PostgreSQL
/// refuses to redefine a named statement and keeps the one it has, and so
/// does sluice, so a later Bind is judged as the statement that runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_redefinition_does_not_change_what_a_bind_is_judged_as() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    // Parsing is not judged: the statement exists on the server.
    conn.define("report", "SELECT 'forbidden'").await;
    // The redefinition is refused (by sluice, as the server would) ...
    let mut redefined = parse("report", "SELECT 'harmless'");
    redefined.extend(sync());
    assert_eq!(conn.refusal(&redefined).await, "42P05");
    // ... so binding the name runs, and is judged as, the first text.
    assert_eq!(conn.refusal(&bind_execute_sync("report")).await, "42501");
}

/// The same through SQL: a `PREPARE` of a name in use is refused (by
/// sluice, before it runs, as the server would), and an `EXECUTE` of the
/// name is judged as what it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sql_prepare_does_not_change_what_an_execute_is_judged_as() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("report", "SELECT 'forbidden'").await;
    let prepare = query("PREPARE report AS SELECT 'harmless'");
    assert_eq!(conn.refusal(&prepare).await, "42P05");
    assert_eq!(conn.refusal(&query("EXECUTE report")).await, "42501");
}

/// A Parse the server skips (an error earlier in its cycle) makes nothing:
/// the unnamed statement it would have replaced still runs on a Bind, so
/// sluice, which cannot judge what it did not see parsed, refuses the Bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_the_server_skipped_is_not_what_a_bind_is_judged_as() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("", "SELECT 'forbidden'").await;
    assert_a_skipped_parse_is_not_judged(&mut conn).await;

    // Parsed again, it is judged as parsed.
    let mut again = parse("", "SELECT 'harmless'");
    again.extend(bind_execute_sync(""));
    let row = conn.first_row(&again).await;
    assert!(row.ends_with(b"harmless"), "{row:?}");
}

/// A refused Bind pipelined behind a statement that fails: the server
/// stops at the first error and never reaches the refused statement, so
/// the client is told what failed, as PostgreSQL would tell it, not that
/// a statement it never reached was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_a_refused_bind_is_the_one_the_client_gets() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    let mut pipeline = parse("divide", "SELECT 1/0");
    pipeline.extend(bind_execute("divide"));
    pipeline.extend(parse("", "SELECT 'forbidden'"));
    pipeline.extend(bind_execute(""));
    pipeline.extend(sync());
    assert_eq!(conn.refusal(&pipeline).await, "22012");

    // Reached, the refused statement is refused.
    let mut reached = parse("", "SELECT 'forbidden'");
    reached.extend(bind_execute_sync(""));
    assert_eq!(conn.refusal(&reached).await, "42501");
}

/// A `PREPARE` the server does not carry out (its transaction is aborted)
/// is forgotten when its cycle ends, as the server never made it: the name
/// is free on both sides, and what a Parse then defines under it is what
/// a Bind of it is judged as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_the_server_did_not_run_is_forgotten() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("BEGIN; SELECT 1/0")).await;
    conn.until_ready().await;
    let prepare = query("PREPARE report AS SELECT 'harmless'");
    assert_eq!(conn.refusal(&prepare).await, "25P02");
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;

    conn.define("report", "SELECT 'forbidden'").await;
    assert_eq!(conn.refusal(&bind_execute_sync("report")).await, "42501");
}

/// A Close of prepared statement `name`.
fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    message(b'C', &body)
}

/// A name is let go only when the server says it let it go: a DEALLOCATE
/// bound but never executed, or a Close the server skipped after an error,
/// leaves the statement where it was on the server, so sluice keeps it
/// too — a new definition of the name is refused as the server refuses
/// it, and what runs under the name is judged as what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_let_go_only_on_the_servers_word() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("report", "SELECT 'forbidden'").await;

    // A DEALLOCATE the server never runs: bound, not executed.
    let mut unexecuted = parse("", "DEALLOCATE report");
    unexecuted.extend(bind("", ""));
    unexecuted.extend(sync());
    conn.send(&unexecuted).await;
    conn.until_ready().await;
    let shadow = query("PREPARE report AS SELECT 'harmless'");
    assert_eq!(conn.refusal(&shadow).await, "42P05");
    assert_eq!(conn.refusal(&query("EXECUTE report")).await, "42501");

    // A Close the server skips: the refused Bind before it fails its cycle.
    let mut skipped = bind("", "nosuch");
    skipped.extend(close_statement("report"));
    skipped.extend(sync());
    assert_eq!(conn.refusal(&skipped).await, "26000");
    let mut redefined = parse("report", "SELECT 'harmless'");
    redefined.extend(sync());
    assert_eq!(conn.refusal(&redefined).await, "42P05");
    assert_eq!(conn.refusal(&bind_execute_sync("report")).await, "42501");

    // Let go for real, the name is free: a Close ...
    let mut closed = close_statement("report");
    closed.extend(sync());
    conn.send(&closed).await;
    conn.until_ready().await;
    let mut again = parse("report", "SELECT 'harmless'");
    again.extend(bind_execute_sync("report"));
    assert!(conn.first_row(&again).await.ends_with(b"harmless"));
    // ... or a DEALLOCATE that ran, then a PREPARE of the name.
    conn.send(&query("DEALLOCATE report")).await;
    conn.until_ready().await;
    conn.send(&query("PREPARE report AS SELECT 'fine'")).await;
    conn.until_ready().await;
    assert!(
        conn.first_row(&query("EXECUTE report"))
            .await
            .ends_with(b"fine")
    );
}

/// A Bind pipelined in the cycle after a Parse the server may skip waits
/// for that cycle's answer: judged before it, it would be judged as the
/// skipped text while the server runs the statement it still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_behind_an_unanswered_parse_waits_for_its_answer() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("", "SELECT 'forbidden'").await;

    // The Parse of the unnamed statement is skipped (a syntax error before
    // it), and the Bind in the next cycle was sent before any answer.
    let mut pipeline = parse("broken", "SELEC");
    pipeline.extend(parse("", "SELECT 'harmless'"));
    pipeline.extend(sync());
    pipeline.extend(bind_execute_sync(""));
    conn.send(&pipeline).await;
    let first = conn.until_ready().await;
    assert!(
        first.iter().any(|m| m.tag == b'E' && m.code() == "42601"),
        "{first:?}"
    );
    let second = conn.until_ready().await;
    assert!(
        !second.iter().any(|m| m.tag == b'D'),
        "nothing ran: {second:?}"
    );
    let refused = second.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(refused.code(), "26000", "{second:?}");

    // Made, the statement parsed in one cycle runs in the next, pipelined.
    let mut pipeline = parse("", "SELECT 'harmless'");
    pipeline.extend(sync());
    pipeline.extend(bind_execute_sync(""));
    conn.send(&pipeline).await;
    conn.until_ready().await;
    let second = conn.until_ready().await;
    let row = second.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.body.ends_with(b"harmless"), "{second:?}");
}

/// A statement that is itself an `EXECUTE` waits like an `EXECUTE` in a
/// query: the name it runs may have been redefined in a cycle the server
/// skipped, and is judged only once that cycle is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_execute_waits_for_the_name_it_runs() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("p", "SELECT 'forbidden'").await;
    let mut pipeline = parse("broken", "SELEC");
    pipeline.extend(close_statement("p"));
    pipeline.extend(parse("p", "SELECT 'harmless'"));
    pipeline.extend(sync());
    pipeline.extend(parse("", "EXECUTE p"));
    pipeline.extend(bind_execute_sync(""));
    conn.send(&pipeline).await;
    let first = answered(&mut conn).await;
    assert!(first.iter().any(|m| m.tag == b'E'), "{first:?}");
    let second = answered(&mut conn).await;
    assert!(
        !second.iter().any(|m| m.tag == b'D'),
        "nothing ran: {second:?}"
    );
    assert!(second.iter().any(|m| m.tag == b'E'), "refused: {second:?}");
}

/// A portal whose statement names a prepared statement runs only in the
/// cycle it was bound in: PostgreSQL looks the name up when the portal
/// runs, so a portal of `EXECUTE h` bound, then run after `h` was
/// redefined, would run the new definition under the old one's verdict;
/// and a portal of `PREPARE x` run in a later cycle would have its
/// confirmation credited to another definition of `x`. In its own cycle
/// it runs as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_that_names_a_prepared_statement_runs_in_its_own_cycle() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;

    // EXECUTE: judged as `h` is, run after `h` was redefined.
    conn.define("h", "SELECT 'harmless'").await;
    let mut bound = parse("", "EXECUTE h");
    bound.extend(bind("p", ""));
    bound.extend(sync());
    conn.send(&bound).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    let mut redefined = close_statement("h");
    redefined.extend(sync());
    redefined.extend(parse("h", "SELECT 'forbidden'"));
    redefined.extend(sync());
    conn.send(&redefined).await;
    conn.until_ready().await;
    conn.until_ready().await;
    let mut later = execute("p", 0);
    later.extend(sync());
    assert_eq!(conn.refusal(&later).await, "0A000");
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;

    // PREPARE: bound in one cycle, run in the next behind another.
    let mut first = parse("", "PREPARE x AS SELECT 'first'");
    first.extend(bind("q", ""));
    first.extend(sync());
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    conn.send(&first).await;
    conn.until_ready().await;
    let mut second = parse("", "PREPARE x AS SELECT 'second'");
    second.extend(bind("", ""));
    second.extend(execute("q", 0));
    second.extend(sync());
    assert_eq!(conn.refusal(&second).await, "0A000");
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;
    // Neither ran: the name is free.
    assert_eq!(conn.refusal(&query("EXECUTE x")).await, "26000");

    // In its own cycle, each runs.
    let mut own = parse("", "PREPARE x AS SELECT 'second'");
    own.extend(bind("r", ""));
    own.extend(execute("r", 0));
    own.extend(parse("", "EXECUTE x"));
    own.extend(bind_execute_sync(""));
    assert!(conn.first_row(&own).await.ends_with(b"second"));
}

/// A portal of `EXECUTE foo` runs what `foo` held when the portal was
/// judged, or nothing: `foo` closed and parsed anew later in the same
/// cycle, or in a later one after a Bind that reused the portal's name
/// failed (inside a savepoint, so the portal lived on), is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_portal_runs_only_the_definition_it_was_judged_by() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("foo", "SELECT 'harmless'").await;
    conn.define("x", "EXECUTE foo").await;
    conn.define("y", "SELECT 'other'").await;

    // Redefined in the same cycle.
    let mut same_cycle = bind("p", "x");
    same_cycle.extend(close_statement("foo"));
    same_cycle.extend(parse("foo", "SELECT 'forbidden'"));
    same_cycle.extend(execute("p", 0));
    same_cycle.extend(sync());
    assert_eq!(conn.refusal(&same_cycle).await, "0A000");
    // (The Close and Parse before the refusal ran: `foo` is made harmless
    // again.)
    let mut reset = close_statement("foo");
    reset.extend(sync());
    reset.extend(parse("foo", "SELECT 'harmless'"));
    reset.extend(sync());
    conn.send(&reset).await;
    conn.until_ready().await;
    conn.until_ready().await;
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;

    // A failed Bind of the portal's name leaves it an EXECUTE portal.
    let mut first = bind("q", "x");
    first.extend(sync());
    conn.send(&first).await;
    conn.until_ready().await;
    conn.send(&query("SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut reuse = bind("q", "y");
    reuse.extend(sync());
    assert_eq!(conn.refusal(&reuse).await, "42P03");
    conn.send(&query("ROLLBACK TO SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut redefine = close_statement("foo");
    redefine.extend(sync());
    redefine.extend(parse("foo", "SELECT 'forbidden'"));
    redefine.extend(sync());
    conn.send(&redefine).await;
    conn.until_ready().await;
    conn.until_ready().await;
    let mut later = execute("q", 0);
    later.extend(sync());
    assert_eq!(conn.refusal(&later).await, "0A000");
}

/// What a session did to its prepared statements in SQL while no policy
/// judged is unknown to sluice: once a reload brings policies, no name
/// from before is judged as what sluice last saw it hold (here `x`,
/// parsed as a harmless SELECT, was deallocated and prepared again
/// unjudged). Prepared again under the policies, a name serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_prepared_before_policies_came_are_prepared_again() {
    let env = start("").await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.define("x", "SELECT 'harmless'").await;
    conn.send(&query("DEALLOCATE x")).await;
    conn.until_ready().await;
    conn.send(&query("PREPARE x AS SELECT 'forbidden'")).await;
    conn.until_ready().await;

    env.rewrite_config(&deny_words(&["forbidden"]));
    reload::reload_from(&env.gateway.shared.plugins, &env.config_path)
        .await
        .unwrap();
    assert_eq!(conn.refusal(&bind_execute_sync("x")).await, "26000");
    assert_eq!(conn.refusal(&query("EXECUTE x")).await, "26000");

    conn.send(&query("DEALLOCATE x")).await;
    conn.until_ready().await;
    conn.send(&query("PREPARE x AS SELECT 'harmless'")).await;
    conn.until_ready().await;
    assert!(
        conn.first_row(&query("EXECUTE x"))
            .await
            .ends_with(b"harmless")
    );
}

/// The replies up to the next ReadyForQuery, which must come within 10 s.
async fn answered(conn: &mut RawConn) -> Vec<sluice_tests::raw::Message> {
    tokio::time::timeout(Duration::from_secs(10), conn.until_ready())
        .await
        .expect("answered, not held")
}

/// What waits for an earlier cycle's answer never waits for its own: a
/// COPY parsed and bound in one cycle, with sluice's own describe slipped
/// in ahead of it, runs (and is masked); cycles of one unnamed statement
/// pipelined with the same text run each, also after one of them was
/// skipped in an aborted transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_waits_for_its_own_cycle() {
    let masking =
        "\n[[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n";
    let env = start(&format!("{}{masking}", deny_words(&["forbidden"]))).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;

    let mut copy = parse("", "COPY (SELECT 'card 4111111111111111') TO STDOUT");
    copy.extend(bind("", ""));
    copy.extend(execute("", 0));
    copy.extend(sync());
    conn.send(&copy).await;
    let replies = answered(&mut conn).await;
    assert_eq!(copy_text(&replies), "card 411111******1111\n");

    conn.send(&query("BEGIN; SELECT 1/0")).await;
    conn.until_ready().await;
    let mut pipeline = parse("", "SELECT 'again'");
    pipeline.extend(bind_execute_sync(""));
    pipeline.extend(query("ROLLBACK"));
    for _ in 0..3 {
        pipeline.extend(parse("", "SELECT 'again'"));
        pipeline.extend(bind_execute_sync(""));
    }
    conn.send(&pipeline).await;
    let aborted = answered(&mut conn).await;
    assert!(
        aborted.iter().any(|m| m.tag == b'E' && m.code() == "25P02"),
        "{aborted:?}"
    );
    answered(&mut conn).await;
    for _ in 0..3 {
        let replies = answered(&mut conn).await;
        assert!(
            replies
                .iter()
                .any(|m| m.tag == b'D' && m.body.ends_with(b"again")),
            "{replies:?}"
        );
    }
}

/// A query pipelined behind a `SET standard_conforming_strings` is read as
/// the server will read it: it waits for the SET's answer, so sluice knows
/// the setting the server lexes it under (a backslash before a quote ends
/// a string under one setting and not under the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_behind_a_setting_change_is_read_under_the_new_setting() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", "agent-demo-token").await;
    conn.send(&query("SET standard_conforming_strings = off"))
        .await;
    conn.until_ready().await;

    // Read with the setting off, this is one SELECT of a string; with it
    // on, as the server reads it after the SET, a DELETE follows.
    let mut pipeline = query("SET standard_conforming_strings = on");
    pipeline.extend(query("SELECT 'a\\'; DELETE FROM orders WHERE id = -1; --'"));
    conn.send(&pipeline).await;
    conn.until_ready().await;
    let second = conn.until_ready().await;
    assert!(
        !second
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"DELETE")),
        "the DELETE ran: {second:?}"
    );
    let refused = second.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(refused.code(), "42501", "{second:?}");
}

/// A COPY FROM STDIN sent as drivers send it through the extended protocol
/// (Bind, Execute, Sync, then the data, CopyDone and another Sync) gets one
/// ReadyForQuery: the server ignores the first Sync while it reads the
/// data. sluice keeps count, so a Parse skipped later is still forgotten
/// when its own cycle ends, not one cycle late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_stdin_does_not_put_sluice_a_cycle_behind() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = with_a_copy_prepared(&env).await;
    conn.define("", "SELECT 'forbidden'").await;

    conn.send(&bind_execute_sync("load")).await;
    loop {
        let reply = conn.recv().await.expect("the server answers");
        assert_ne!(reply.tag, b'E', "{:?}", reply.fields());
        if reply.tag == b'G' {
            break;
        }
    }
    let mut data = message(b'd', b"1\n2\n");
    data.extend(message(b'c', &[]));
    data.extend(sync());
    conn.send(&data).await;
    let replies = conn.until_ready().await;
    let complete = replies
        .iter()
        .find(|m| m.tag == b'C')
        .expect("the COPY completes");
    assert_eq!(complete.body, b"COPY 2\0");

    assert_a_skipped_parse_is_not_judged(&mut conn).await;

    let row = conn.first_row(&query("SELECT count(*) FROM scratch")).await;
    assert!(row.ends_with(b"2"), "{row:?}");
}

/// Messages pipelined with a COPY FROM STDIN would change how many
/// answers the server gives in ways sluice cannot know in advance: the
/// session ends instead, before the server reads any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pipelined_behind_a_copy_from_stdin_end_the_session() {
    let env = start(&deny_words(&["forbidden"])).await;
    let mut conn = with_a_copy_prepared(&env).await;
    let mut pipelined = bind_execute_sync("load");
    pipelined.extend(parse("", "SELECT 'harmless'"));
    pipelined.extend(sync());
    conn.send(&pipelined).await;
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "08P01", "{:?}", error.fields());
    assert!(conn.closed().await);
}

/// A plugin that waits inside WASI (a sleep runs no wasm, so its epoch
/// deadline never runs out) is cut off by the wall clock: its statement is
/// refused as a deadline fault, the session goes on, and a reload to a
/// version whose configuration check waits is rejected instead of hanging
/// (and holding the reload lock) for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_waiting_inside_wasi_fail_at_their_deadline() {
    let sleeper = |rest: &str| {
        plugin(
            "sleep",
            "policy",
            guest::GUEST_SLEEP,
            &format!("deadline_ms = 100\n{rest}"),
        )
    };
    let env = start(&sleeper("")).await;
    let client = env.connect("agent").await;
    // The guest sleeps ten seconds: an answer within five was cut short.
    let within = Duration::from_secs(5);

    let refused = tokio::time::timeout(within, client.simple_query("SELECT 'sleep'"))
        .await
        .expect("the statement is answered well before the plugin's sleep ends");
    let (code, message) = denial(refused);
    assert_eq!(code, "58000");
    assert!(message.contains("deadline in plugin sleep"), "{message}");
    client.simple_query("SELECT 1").await.unwrap();
    let plugins = &env.gateway.shared.plugins;
    let stats = plugins
        .current()
        .plugins()
        .find(|p| p.name == "sleep")
        .map(|p| p.stats.clone())
        .unwrap();
    assert_eq!(stats.deadlines.load(Ordering::Relaxed), 1);

    let before = plugins.generation();
    env.rewrite_config(&sleeper("[plugins.config]\nsleep_in_check = true"));
    let error = tokio::time::timeout(within, reload::reload_from(plugins, &env.config_path))
        .await
        .expect("the reload ends well before the check's sleep would")
        .expect_err("a version whose check never answers is rejected");
    assert!(error.to_string().contains("deadline"), "{error}");
    assert_eq!(plugins.generation(), before);
    client.simple_query("SELECT 1").await.unwrap();
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
