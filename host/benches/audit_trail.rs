//! What the audit trail costs a statement under `fsync = "batch"`: sealing
//! one record (its time, chain link and MAC), and a pgbench -S statement's
//! record (awaited, as the session awaits it before forwarding) with its
//! outcome (held back, as the session hands it over) through the file
//! trail, head file and all. No sync: `batch` leaves that to the kernel.
//!
//! `cargo bench -p sluice --bench audit_trail`; results in BENCHMARKS.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::audit::chain::{self, ChainKey, EventBody, Link};
use sluice::audit::{Audit, Decision, Event, Protocol};
use sluice::config::{AuditFsync, AuditSettings};

const TEXT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

/// A directory of its own under the system's temporary directory.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-bench-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the scratch directory");
    dir
}

fn statement<'a>(params: &'a [Option<String>], decision: &'a Decision, n: u64) -> Event<'a> {
    Event::Statement {
        session: 7,
        principal: "bench",
        statement: n,
        protocol: Protocol::Extended,
        text: TEXT,
        params,
        decision,
        trace: None,
    }
}

fn sealing(c: &mut Criterion) {
    let key = ChainKey::from_bytes(&[7; 32]).expect("a 32-byte key");
    let fields = serde_json::json!({
        "event": "statement", "session": 7, "principal": "bench", "statement": 41,
        "protocol": "extended", "text": TEXT, "params": ["48213"],
        "decision": { "verdict": "allow" },
    });
    let body = EventBody::from_map(fields.as_object().expect("an object")).expect("encodes");
    let before = Link {
        seq: 41_208,
        mac: [0xa5; 32],
    };
    c.bench_function("audit/seal a statement record", |b| {
        b.iter(|| {
            chain::seal_body(
                &key,
                black_box(&before),
                "gw-1",
                SystemTime::now(),
                black_box(&body),
            )
        })
    });
}

fn batch_trail(c: &mut Criterion) {
    let dir = scratch_dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut settings = AuditSettings::for_file(dir.join("audit.jsonl"), &|_| None);
    settings.fsync = AuditFsync::Batch;
    // Rotation keeps the scratch file small however long the bench runs.
    settings.rotate_bytes = Some(64 << 20);
    let audit = runtime
        .block_on(Audit::open(&settings))
        .expect("opens the trail");
    let params = [Some("48213".to_owned())];
    let decision = Decision::allowed();
    let tags = ["SELECT 1".to_owned()];
    let mut n = 0;
    c.bench_function("audit/batch: a statement's record and its outcome", |b| {
        b.iter(|| {
            n += 1;
            let statements = [n];
            runtime.block_on(async {
                audit
                    .record(statement(&params, &decision, n))
                    .await
                    .expect("records");
            });
            audit.record_later(Event::Outcome {
                session: 7,
                statements: &statements,
                tags: &tags,
                rows: 1,
                suspended: 0,
                duration_us: 143,
                error: None,
                data: None,
                trace: None,
            });
        })
    });
    runtime.block_on(audit.close());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = sealing, batch_trail
}
criterion_main!(benches);
