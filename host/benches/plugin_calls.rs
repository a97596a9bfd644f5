//! What a plugin call costs on the data path: a trivial policy decision
//! (with a bare statement and with an analysed one, and with the principal
//! read through the session handle),
//! and masking batches of 1, 100 and 1,000 values through a plugin that
//! looks at every value and edits none (the boundary's cost) and one that
//! edits every value; a batch of one with the caches emptied before each
//! call (as the gateway makes it, between two results); and the shipped Luhn masker on 16-byte values, alone
//! (a batch through the boundary) and on the whole row path (DataRows in,
//! a batch, the edits applied, the rows rebuilt).
//!
//! `cargo bench -p sluice --bench plugin_calls`; results in BENCHMARKS.md.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::config::Hook;
use sluice::masking::batch::Batch;
use sluice::masking::codec::PieceKind;
use sluice::plugin::bindings::types::StatementKind;
use sluice::plugin::builtin::test_guests;
use sluice::plugin::testing::{plugin_settings as settings, session, statement};
use sluice::plugin::{PluginSet, Runtime, set};

/// `n` card-number-like text values, as a result column's would be.
fn batch(n: usize, with_pan: bool) -> Batch {
    let mut batch = Batch::default();
    for i in 0..n {
        let value = if with_pan {
            format!("card 4111111111111111 order {i:08}")
        } else {
            format!("card 5500-0000-0000-{i:04} order")
        };
        batch.push((i % 4) as u16, PieceKind::Text, value.as_bytes());
    }
    batch
}

fn plugin_calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plugins = runtime
        .block_on(PluginSet::load(
            Runtime::shared(),
            &[
                settings(
                    "allow-all",
                    Hook::Policy,
                    test_guests::GUEST_ALLOW_ALL,
                    "{}",
                ),
                settings(
                    "pass-through",
                    Hook::Masking,
                    test_guests::GUEST_PASS_THROUGH,
                    "{}",
                ),
                settings(
                    "needle",
                    Hook::Masking,
                    test_guests::GUEST_MASK_NEEDLE,
                    r#"{"needle":"4111111111111111"}"#,
                ),
            ],
            None,
        ))
        .expect("the test plugins load");
    let session = session();
    let query = statement(
        StatementKind::Select,
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    );

    c.bench_function("policy/allow-all", |b| {
        b.to_async(&runtime).iter(|| async {
            plugins.evaluate(&session, &query).await.unwrap();
        })
    });

    // The same call with the statement as sluice analyses it (a table, two
    // columns, the command): what a policy is handed on the data path.
    let analysed = sluice::analysis::analyse(
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
        true,
    )
    .remove(0)
    .statement;
    c.bench_function("policy/allow-all, analysed pgbench statement", |b| {
        b.to_async(&runtime).iter(|| async {
            plugins.evaluate(&session, &analysed).await.unwrap();
        })
    });

    // The same trivial decision, by a policy that reads the principal
    // through its session handle on every call: what reading it costs.
    let reads_session = runtime
        .block_on(PluginSet::load(
            Runtime::shared(),
            &[settings(
                "group-rule",
                Hook::Policy,
                test_guests::GUEST_DENY_RULE,
                r#"{"deny_groups":["nobody"]}"#,
            )],
            None,
        ))
        .expect("the deny-rule plugin loads");
    c.bench_function("policy/reads the principal", |b| {
        b.to_async(&runtime).iter(|| async {
            let verdict = reads_session.evaluate(&session, &query).await.unwrap();
            assert!(matches!(verdict, sluice::plugin::Verdict::Allow));
        })
    });

    let masking = plugins.chain(Hook::Masking);
    let (pass_through, needle) = (&masking[0], &masking[1]);
    let mut group = c.benchmark_group("masking");
    for n in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(n as u64));
        let clean = batch(n, false);
        group.bench_with_input(BenchmarkId::new("pass-through", n), &clean, |b, batch| {
            b.to_async(&runtime).iter(|| async {
                let edits = set::mask_batch(pass_through, &session, &batch.as_wit())
                    .await
                    .unwrap();
                assert!(edits.edits.is_empty());
            })
        });
        let dirty = batch(n, true);
        group.bench_with_input(
            BenchmarkId::new("edit-every-value", n),
            &dirty,
            |b, batch| {
                b.to_async(&runtime).iter(|| async {
                    let edits = set::mask_batch(needle, &session, &batch.as_wit())
                        .await
                        .unwrap();
                    let masked = batch.apply(edits, None).unwrap();
                    assert_eq!(masked.len(), batch.len());
                })
            },
        );
    }
    // As the gateway makes the call: between two results the session's
    // network work has pushed the plugin's state out of the caches. Only
    // the call is timed; the 8 MiB walked before it is not.
    let mut pollution = vec![0u8; 8 << 20];
    let clean = batch(1, false);
    group.bench_function("pass-through, 1, cold caches", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for i in 0..iterations {
                for line in pollution.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(i as u8);
                }
                let started = std::time::Instant::now();
                let edits = runtime
                    .block_on(set::mask_batch(pass_through, &session, &clean.as_wit()))
                    .unwrap();
                spent += started.elapsed();
                assert!(edits.edits.is_empty());
            }
            std::hint::black_box(&pollution);
            spent
        })
    });
    group.finish();
    luhn_masker(c, &runtime);
}

/// 16-digit values: Luhn-valid test card numbers, or digit strings that
/// fail the Luhn check (what an order number column looks like to it).
fn sixteen_digits(n: usize, pans: bool) -> Vec<String> {
    const PANS: [&str; 4] = [
        "4111111111111111",
        "5555555555554444",
        "6011111111111117",
        "3530111333300000",
    ];
    (0..n)
        .map(|i| {
            if pans {
                PANS[i % PANS.len()].to_owned()
            } else {
                // The check digit one off: never Luhn-valid, so the masker
                // does all its work and finds nothing.
                let body = format!("41111111{i:07}");
                format!("{body}{}", (luhn_check_digit(&body) + 1) % 10)
            }
        })
        .collect()
}

/// The digit that makes `body` followed by it pass the Luhn check.
fn luhn_check_digit(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// DataRow messages of one text column holding `values`.
fn data_rows(values: &[String]) -> Vec<u8> {
    let mut rows = Vec::new();
    for value in values {
        rows.push(b'D');
        rows.extend_from_slice(&(4 + 2 + 4 + value.len() as i32).to_be_bytes());
        rows.extend_from_slice(&1i16.to_be_bytes());
        rows.extend_from_slice(&(value.len() as i32).to_be_bytes());
        rows.extend_from_slice(value.as_bytes());
    }
    rows
}

fn luhn_masker(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    use sluice::config::PluginSource;
    use sluice::masking::rows::ResultMask;
    use sluice::plugin::bindings::types::{Column, ValueFormat};

    let mut luhn = settings("pans", Hook::Masking, "", "{}");
    luhn.source = PluginSource::Builtin("luhn-masker".to_owned());
    let plugins = runtime
        .block_on(PluginSet::load(Runtime::shared(), &[luhn], None))
        .expect("the Luhn masker loads");
    let session = session();
    let masker = &plugins.chain(Hook::Masking)[0];
    let n = 1000usize;
    let mut group = c.benchmark_group("luhn-masker");
    group.throughput(Throughput::Elements(n as u64));
    for pans in [false, true] {
        let kind = if pans {
            "card numbers"
        } else {
            "no card numbers"
        };
        let values = sixteen_digits(n, pans);
        let mut batch = Batch::default();
        for value in &values {
            batch.push(0, PieceKind::Text, value.as_bytes());
        }
        group.bench_function(BenchmarkId::new("batch of 16-byte values", kind), |b| {
            b.to_async(runtime).iter(|| async {
                let edits = set::mask_batch(masker, &session, &batch.as_wit())
                    .await
                    .unwrap();
                assert_eq!(edits.edits.len(), if pans { n } else { 0 });
            })
        });
        let columns = vec![Column {
            name: "pan".to_owned(),
            table_oid: 0,
            column_number: 0,
            type_oid: 25,
            type_modifier: -1,
            format: ValueFormat::Text,
        }];
        let mask = runtime
            .block_on(ResultMask::for_columns(
                &plugins,
                &session,
                columns,
                Default::default(),
            ))
            .unwrap()
            .expect("the masker selects text columns");
        let rows = data_rows(&values);
        group.bench_function(
            BenchmarkId::new("DataRows of one 16-byte text column", kind),
            |b| {
                b.to_async(runtime).iter(|| async {
                    let mut out = bytes::BytesMut::with_capacity(rows.len());
                    mask.mask_rows(&session, &rows, &mut out).await.unwrap();
                    assert_eq!(out.len(), rows.len());
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = plugin_calls
}
criterion_main!(benches);
