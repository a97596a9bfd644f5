//! What judging a statement costs before any plugin runs, and what the
//! shipped policies add: the SQL analysis of a pgbench -S query and of a
//! typical 200-byte SELECT (with the lexer's split alone, for scale, and
//! with a session's memory of statement shapes, as sluice runs it), then
//! the command guard, the access policy and both in a chain, with the
//! quickstart's rules, deciding on that SELECT.
//!
//! `cargo bench -p sluice --bench analysis`; results in BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::analysis::{self, Analyser, lexer};
use sluice::config::{Hook, PluginSource};
use sluice::plugin::testing::{plugin_settings, session};
use sluice::plugin::{PluginSet, Runtime, Verdict};

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const TYPICAL_SELECT: &str = "SELECT o.id, o.order_no, o.amount, o.status, c.name, c.email \
    FROM orders o JOIN customers c ON c.id = o.customer_id \
    WHERE o.status = 'paid' AND o.created_at > now() - interval '30 days' \
    ORDER BY o.created_at DESC LIMIT 50";

/// A shipped policy reading the quickstart's rules file `rules`.
fn shipped(name: &str, rules: &str) -> sluice::config::PluginSettings {
    let mut settings = plugin_settings(name, Hook::Policy, "unused", "{}");
    settings.source = PluginSource::Builtin(name.to_owned());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/quickstart")
        .join(rules);
    settings.files.insert("rules".to_owned(), path);
    settings
}

fn analysis(c: &mut Criterion) {
    assert!((190..=230).contains(&TYPICAL_SELECT.len()));
    c.bench_function("analysis/pgbench -S select", |b| {
        b.iter(|| analysis::analyse(std::hint::black_box(PGBENCH_SELECT), true))
    });
    c.bench_function("analysis/typical 200-byte select", |b| {
        b.iter(|| analysis::analyse(std::hint::black_box(TYPICAL_SELECT), true))
    });
    c.bench_function("analysis/lexer statements only, pgbench -S select", |b| {
        b.iter(|| lexer::statements(std::hint::black_box(PGBENCH_SELECT), true))
    });
    c.bench_function("analysis/lexer split only, 200-byte select", |b| {
        b.iter(|| lexer::split(std::hint::black_box(TYPICAL_SELECT), true))
    });
    // A session's analyser remembers statement shapes: the same statement
    // with other values skips the parser.
    for (name, template) in [
        (
            "analysis/pgbench -S select, shape remembered",
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
        ),
        (
            "analysis/typical 200-byte select, shape remembered",
            "SELECT o.id, o.order_no, o.amount, o.status, c.name, c.email \
             FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE o.status = 'paid' AND o.amount > {} \
             ORDER BY o.created_at DESC LIMIT 50",
        ),
    ] {
        let texts: Vec<String> = (0..1000)
            .map(|i| template.replace("{}", &(i * 7919 % 100_000).to_string()))
            .collect();
        let mut analyser = Analyser::default();
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % texts.len();
                analyser.analyse(&texts[next], true)
            })
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let load = |settings: Vec<sluice::config::PluginSettings>| {
        runtime
            .block_on(PluginSet::load(Runtime::shared(), &settings, None))
            .expect("the shipped policies load")
    };
    let guard = load(vec![shipped("command-guard", "guard.toml")]);
    let access = load(vec![shipped("access-policy", "access.toml")]);
    let both = load(vec![
        shipped("command-guard", "guard.toml"),
        shipped("access-policy", "access.toml"),
    ]);
    let session = session();
    let statement = analysis::analyse(TYPICAL_SELECT, true).remove(0).statement;
    for (name, plugins) in [
        ("policy/command-guard, typical select", &guard),
        ("policy/access-policy, typical select", &access),
        ("policy/guard + access, typical select", &both),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let verdict = plugins.evaluate(&session, &statement).await.unwrap();
                assert!(matches!(verdict, Verdict::Allow), "{verdict:?}");
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = analysis
}
criterion_main!(benches);
