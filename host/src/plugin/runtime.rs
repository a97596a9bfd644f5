//! The wasmtime engine every plugin runs in: one per process, with an epoch
//! ticker for deadlines, a linker per world, and the compile cache.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings;
use super::cache::{self, CompileCache};
use super::host_api::State;
use crate::config::Hook;

/// How often the engine's epoch advances: the granularity of deadlines and
/// of a long call's yields. Every tick wakes a thread, which costs more than
/// it seems on a virtual machine (at 1 ms, about a tenth of a core): 5 ms
/// keeps that near nothing while a runaway call still gives its worker
/// thread back within 5 ms.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The version of the `sluice:gateway` WIT package this host speaks
/// (`wit/`). A plugin built against another names it in its imports and
/// exports, and is refused with both versions named (see
/// [`foreign_contract_versions`]).
pub const CONTRACT_VERSION: &str = "0.4.0";

/// The versions of the `sluice:gateway` package that a component's
/// imports and exports name, other than [`CONTRACT_VERSION`], without
/// repeats: a plugin built with the SDK of another sluice. Read only to
/// explain why a component did not link.
pub fn foreign_contract_versions(engine: &Engine, component: &Component) -> Vec<String> {
    let ty = component.component_type();
    let mut versions: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name))
        .filter_map(|name| name.strip_prefix("sluice:gateway/"))
        .filter_map(|interface| interface.split_once('@').map(|(_, version)| version))
        .filter(|version| *version != CONTRACT_VERSION)
        .map(str::to_owned)
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// The process-wide engine and what goes with it.
pub struct Runtime {
    engine: Engine,
    cache: Option<CompileCache>,
    /// Components compiled, and loaded compiled from the cache, since the
    /// runtime was built.
    compiled: AtomicU64,
    loaded_from_cache: AtomicU64,
    identity: Linker<State>,
    policy: Linker<State>,
    masking: Linker<State>,
    approval: Linker<State>,
}

static SHARED: OnceLock<Runtime> = OnceLock::new();

impl Runtime {
    /// The process's runtime, built on first use with the default cache
    /// directory (see [`cache::default_dir`]).
    pub fn shared() -> &'static Runtime {
        SHARED.get_or_init(|| {
            Runtime::new(cache::default_dir().as_deref())
                .expect("the WebAssembly engine's fixed configuration is valid")
        })
    }

    fn new(cache_dir: Option<&Path>) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        spawn_epoch_ticker(&engine);

        let cache = match cache_dir.map(CompileCache::open) {
            Some(Ok(cache)) => Some(cache),
            Some(Err(error)) => {
                tracing::warn!(%error, "plugins will be compiled at every start");
                None
            }
            None => None,
        };

        Ok(Runtime {
            identity: linker(&engine, |l| {
                bindings::identity::IdentityPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
            })?,
            policy: linker(&engine, |l| {
                bindings::policy::PolicyPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
            })?,
            masking: linker(&engine, |l| {
                bindings::masking::MaskingPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
            })?,
            approval: linker(&engine, |l| {
                bindings::approval::ApprovalPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
            })?,
            engine,
            cache,
            compiled: AtomicU64::new(0),
            loaded_from_cache: AtomicU64::new(0),
        })
    }

    /// Components compiled and components loaded from the compile cache,
    /// so far.
    pub fn compile_counts(&self) -> (u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.loaded_from_cache.load(Ordering::Relaxed),
        )
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker for one world: WASI (empty unless granted) plus the host
    /// capabilities that world may import.
    pub fn linker(&self, hook: Hook) -> &Linker<State> {
        match hook {
            Hook::Identity => &self.identity,
            Hook::Policy => &self.policy,
            Hook::Masking => &self.masking,
            Hook::Approval => &self.approval,
        }
    }

    /// Compiles a component, or loads it from the cache. Blocking and
    /// CPU-heavy on a miss: call it off the data path.
    pub fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(cache) = &self.cache else {
            self.compiled.fetch_add(1, Ordering::Relaxed);
            return Component::new(&self.engine, wasm);
        };
        let key = CompileCache::key_for(&self.engine, wasm);
        if let Some(compiled) = cache.get(&key) {
            // SAFETY: deserialising runs these bytes as native code. They
            // come from a directory only this user may write, and their MAC
            // under a key only this user may read verified just now (see
            // the cache module); wasmtime checks they fit this engine.
            match unsafe { Component::deserialize(&self.engine, &compiled) } {
                Ok(component) => {
                    self.loaded_from_cache.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(error) => {
                    tracing::warn!(%error, "plugin cache entry not loadable; compiling afresh");
                }
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(bytes) => {
                if let Err(error) = cache.put(&key, &bytes) {
                    tracing::warn!(%error, dir = %cache.dir().display(), "could not store a compiled plugin");
                }
            }
            Err(error) => tracing::warn!(%error, "could not serialise a compiled plugin"),
        }
        Ok(component)
    }
}

fn linker(
    engine: &Engine,
    add_world: impl FnOnce(&mut Linker<State>) -> wasmtime::Result<()>,
) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    add_world(&mut linker)?;
    Ok(linker)
}

/// Advances the epoch every tick for as long as the engine lives. A call
/// past its deadline is stopped at the next tick.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::builtin::test_guests;

    /// A plugin compiled once is loaded compiled from then on, by this
    /// runtime and by the next one on the same directory (a restart); an
    /// entry changed on disk fails its check and the plugin is compiled
    /// afresh, and stored again.
    #[test]
    fn compiled_plugins_are_cached_and_a_changed_entry_is_compiled_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = dir.path().join("cache");
        let wasm = std::fs::read(test_guests::GUEST_ALLOW_ALL).expect("the test plugin");
        let runtime = Runtime::new(Some(&cache_dir)).expect("a runtime");
        let links = |runtime: &Runtime, component: &Component| {
            runtime
                .linker(Hook::Policy)
                .instantiate_pre(component)
                .map(|_| ())
        };
        let compiled = runtime.compile(&wasm).expect("compiles");
        links(&runtime, &compiled).expect("a policy plugin");
        assert_eq!(runtime.compile_counts(), (1, 0));
        let loaded = runtime.compile(&wasm).expect("loads");
        links(&runtime, &loaded).expect("the same plugin");
        assert_eq!(runtime.compile_counts(), (1, 1));

        let restarted = Runtime::new(Some(&cache_dir)).expect("a runtime");
        restarted.compile(&wasm).expect("loads");
        assert_eq!(restarted.compile_counts(), (0, 1));

        let entry = std::fs::read_dir(&cache_dir)
            .expect("lists")
            .map(|entry| entry.expect("entry").path())
            .find(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
            .expect("an entry");
        let mut bytes = std::fs::read(&entry).expect("reads");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&entry, &bytes).expect("changes the entry");
        let recompiled = restarted.compile(&wasm).expect("compiles afresh");
        links(&restarted, &recompiled).expect("a policy plugin");
        assert_eq!(restarted.compile_counts(), (1, 1));
        restarted.compile(&wasm).expect("loads");
        assert_eq!(restarted.compile_counts(), (1, 2));
    }
}
