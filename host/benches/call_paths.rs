//! What the host's async call path costs: the pass-through masking plugin's
//! `mask-batch` on one value, called straight through wasmtime (no pool, no
//! metrics) synchronously and on a fiber (`call_async`, as sluice calls
//! every plugin), warm and with the caches emptied before each call.
//!
//! A synchronous call needs an instance whose imports are all synchronous;
//! here they trap (the pass-through plugin calls none), which sluice cannot
//! do with real plugins: wasmtime-wasi's synchronous bindings block on the
//! current tokio runtime, which panics on sluice's worker threads.
//!
//! `cargo bench -p sluice --bench call_paths`; results in BENCHMARKS.md.
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::masking::batch::Batch;
use sluice::masking::codec::PieceKind;
use sluice::plugin::bindings::masking::exports::sluice::gateway::masking::{
    ValueBatch, ValueEdits,
};
use sluice::plugin::bindings::session::Session;
use sluice::plugin::builtin::test_guests;
use sluice::plugin::runtime::CONTRACT_VERSION;
use wasmtime::component::{Component, Linker, Resource, ResourceType};
use wasmtime::{Config, Engine, Store};

fn probe(c: &mut Criterion) {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    let engine = Engine::new(&config).unwrap();
    let bytes = std::fs::read(test_guests::GUEST_PASS_THROUGH).unwrap();
    let component = Component::new(&engine, &bytes).unwrap();
    let mut linker: Linker<()> = Linker::new(&engine);
    linker
        .instance(&format!("sluice:gateway/session@{CONTRACT_VERSION}"))
        .unwrap()
        .resource("session", ResourceType::host::<Session>(), |_, _| Ok(()))
        .unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(1 << 40);
    let instance = pre.instantiate(&mut store).unwrap();
    let iface = instance
        .get_export_index(
            &mut store,
            None,
            &format!("sluice:gateway/masking@{CONTRACT_VERSION}"),
        )
        .unwrap();
    let index = instance
        .get_export_index(&mut store, Some(&iface), "mask-batch")
        .unwrap();
    let func = instance
        .get_typed_func::<(Resource<Session>, &ValueBatch), (ValueEdits,)>(&mut store, index)
        .unwrap();
    let mut batch = Batch::default();
    batch.push(0, PieceKind::Text, b"12345");
    let wit = batch.as_wit().into_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pollution = vec![0u8; 8 << 20];
    let mut group = c.benchmark_group("mask-batch of one value");
    for cold in [false, true] {
        for sync in [true, false] {
            let name = format!(
                "{} {}",
                if sync { "sync" } else { "fiber" },
                if cold { "cold" } else { "warm" }
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iterations| {
                    let mut spent = Duration::ZERO;
                    for i in 0..iterations {
                        if cold {
                            for line in pollution.chunks_mut(64) {
                                line[0] = line[0].wrapping_add(i as u8);
                            }
                        }
                        let started = Instant::now();
                        let (edits,) = if sync {
                            func.call(&mut store, (Resource::new_borrow(0), &wit))
                                .unwrap()
                        } else {
                            runtime
                                .block_on(
                                    func.call_async(&mut store, (Resource::new_borrow(0), &wit)),
                                )
                                .unwrap()
                        };
                        spent += started.elapsed();
                        assert!(edits.edits.is_empty());
                    }
                    std::hint::black_box(&pollution);
                    spent
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, probe);
criterion_main!(benches);
