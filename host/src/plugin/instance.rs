//! One loaded plugin: its pre-linked component, a pool of warm instances,
//! and the guarded call every hook goes through.
//!
//! Each instance lives in a store of its own. A call takes an instance from
//! the pool (or instantiates one, about 30 µs), arms its deadline and runs.
//! After a trap the store is poisoned, so the instance is dropped rather
//! than returned, and the next call gets a fresh one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Resource};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::session::Session;
use super::bindings::{approval, identity, masking, policy};
use super::host_api::{MemoryCapExceeded, PluginContext, SessionInfo, State};
use super::runtime::{EPOCH_TICK, Runtime};
use crate::config::{Hook, PluginSettings};

/// Warm instances kept per plugin and pool shard; more are created under
/// load and dropped when they come back to a full shard.
const SHARD_SIZE: usize = 4;
/// Pool shards per plugin: each thread that calls plugins sticks to one
/// shard (the one its metrics count in), so sessions on different worker
/// threads never contend for (or bounce the cache line of) the same lock.
use crate::metrics::{SHARDS, shard};

/// Why a call failed. Every fault fails closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("plugin {plugin} trapped: {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin {plugin} ran past its {}ms deadline", deadline.as_millis())]
    Deadline { plugin: String, deadline: Duration },
    #[error("plugin {plugin} exceeded its memory cap: {detail}")]
    Memory { plugin: String, detail: String },
    #[error("plugin {plugin} gave an answer sluice cannot use: {detail}")]
    InvalidAnswer { plugin: String, detail: String },
}

impl Fault {
    /// The plugin that failed.
    pub fn plugin(&self) -> &str {
        match self {
            Fault::Trap { plugin, .. }
            | Fault::Deadline { plugin, .. }
            | Fault::Memory { plugin, .. }
            | Fault::InvalidAnswer { plugin, .. } => plugin,
        }
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap { .. } => "trap",
            Fault::Deadline { .. } => "deadline",
            Fault::Memory { .. } => "memory",
            Fault::InvalidAnswer { .. } => "invalid-answer",
        }
    }
}

/// Calls and faults of one plugin name, kept across reloads.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made (each checks an instance out of the pool once), counted
    /// per pool shard so that threads calling at once do not contend for
    /// one cache line; [`PluginStats::calls`] sums them.
    calls: [ShardCounter; SHARDS],
    pub traps: AtomicU64,
    pub deadlines: AtomicU64,
    pub memory: AtomicU64,
    pub invalid_answers: AtomicU64,
    pub instances_created: AtomicU64,
    /// Time per call, checkout to checkin (faults included).
    pub latency: crate::metrics::LatencyHistogram,
    /// Values a masking plugin changed.
    pub values_masked: AtomicU64,
}

/// A counter on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ShardCounter(AtomicU64);

impl PluginStats {
    /// Calls made to the plugin, all versions of it.
    pub fn calls(&self) -> u64 {
        self.calls
            .iter()
            .map(|counter| counter.0.load(Ordering::Relaxed))
            .sum()
    }

    pub fn faults(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
            + self.deadlines.load(Ordering::Relaxed)
            + self.memory.load(Ordering::Relaxed)
            + self.invalid_answers.load(Ordering::Relaxed)
    }

    fn count(&self, fault: &Fault) {
        let counter = match fault {
            Fault::Trap { .. } => &self.traps,
            Fault::Deadline { .. } => &self.deadlines,
            Fault::Memory { .. } => &self.memory,
            Fault::InvalidAnswer { .. } => &self.invalid_answers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pre-linked component, typed by its world.
enum Pre {
    Identity(identity::IdentityPluginPre<State>),
    Policy(policy::PolicyPluginPre<State>),
    Masking(masking::MaskingPluginPre<State>),
    Approval(approval::ApprovalPluginPre<State>),
}

/// An instance's exports, typed by its world.
pub enum Exports {
    Identity(identity::IdentityPlugin),
    Policy(policy::PolicyPlugin),
    Masking(masking::MaskingPlugin),
    Approval(approval::ApprovalPlugin),
}

/// An instance ready for calls.
pub struct Warm {
    pub store: Store<State>,
    pub exports: Exports,
    /// When the call now using it began (for the latency histogram).
    called_at: std::time::Instant,
}

/// Lends the plugin a handle on `session` for the next call. The handle's
/// number means nothing: its methods answer from the session kept in the
/// store, which `Plugin::checkin` takes back.
pub fn lend(store: &mut Store<State>, session: &Arc<SessionInfo>) -> Resource<Session> {
    store.data_mut().session = Some(session.clone());
    Resource::new_borrow(0)
}

/// One version of one configured plugin.
pub struct Plugin {
    pub name: String,
    pub hook: Hook,
    pub deadline: Duration,
    /// Identifies this version: the component's and its inputs' digest.
    pub fingerprint: String,
    context: Arc<PluginContext>,
    engine: wasmtime::Engine,
    pre: Pre,
    pool: [std::sync::Mutex<Vec<Warm>>; SHARDS],
    pub stats: Arc<PluginStats>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Links a compiled component for the hook its settings name. Fails if
    /// the component is not of that hook's world (exports missing, or
    /// imports the world does not offer).
    pub fn link(
        runtime: &Runtime,
        settings: &PluginSettings,
        component: &Component,
        context: Arc<PluginContext>,
        fingerprint: String,
        stats: Arc<PluginStats>,
    ) -> wasmtime::Result<Plugin> {
        let instance_pre = runtime.linker(settings.hook).instantiate_pre(component)?;
        let pre = match settings.hook {
            Hook::Identity => Pre::Identity(identity::IdentityPluginPre::new(instance_pre)?),
            Hook::Policy => Pre::Policy(policy::PolicyPluginPre::new(instance_pre)?),
            Hook::Masking => Pre::Masking(masking::MaskingPluginPre::new(instance_pre)?),
            Hook::Approval => Pre::Approval(approval::ApprovalPluginPre::new(instance_pre)?),
        };
        Ok(Plugin {
            name: settings.name.clone(),
            hook: settings.hook,
            deadline: settings.deadline,
            fingerprint,
            context,
            engine: runtime.engine().clone(),
            pre,
            pool: Default::default(),
            stats,
        })
    }

    /// Takes a warm instance from the pool, or makes one.
    pub async fn checkout(&self) -> Result<Warm, Fault> {
        let called_at = std::time::Instant::now();
        self.stats.calls[shard()].0.fetch_add(1, Ordering::Relaxed);
        let pooled = self.pool[shard()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut warm = match pooled {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        warm.called_at = called_at;
        self.arm(&mut warm.store);
        Ok(warm)
    }

    /// Gives the next call its full time budget.
    fn arm(&self, store: &mut Store<State>) {
        store.data_mut().ticks_left = self.deadline_ticks();
        store.set_epoch_deadline(1);
    }

    /// The deadline in ticks, rounded up, plus one: the first tick may come
    /// a moment after the call starts.
    fn deadline_ticks(&self) -> u64 {
        self.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// Ends a call: a healthy instance goes back to the pool, a faulted one
    /// is dropped and the fault counted and logged.
    pub fn checkin<R>(&self, mut warm: Warm, result: wasmtime::Result<R>) -> Result<R, Fault> {
        self.stats.latency.observe(warm.called_at.elapsed());
        match result {
            Ok(value) => {
                warm.store.data_mut().session = None;
                let mut pool = self.pool[shard()].lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < SHARD_SIZE {
                    pool.push(warm);
                }
                Ok(value)
            }
            Err(error) => Err(self.fault(error)),
        }
    }

    /// Counts and logs a fault the caller found in an answer.
    pub fn invalid_answer(&self, detail: impl Into<String>) -> Fault {
        let fault = Fault::InvalidAnswer {
            plugin: self.name.clone(),
            detail: detail.into(),
        };
        self.record(&fault);
        fault
    }

    fn fault(&self, error: wasmtime::Error) -> Fault {
        let plugin = self.name.clone();
        let fault = if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
            Fault::Memory {
                plugin,
                detail: cap.to_string(),
            }
        } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            Fault::Deadline {
                plugin,
                deadline: self.deadline,
            }
        } else {
            Fault::Trap {
                plugin,
                detail: format!("{error:#}"),
            }
        };
        self.record(&fault);
        fault
    }

    fn record(&self, fault: &Fault) {
        self.stats.count(fault);
        tracing::error!(plugin = %self.name, hook = %self.hook, kind = fault.kind(), "{fault}; failing closed");
    }

    async fn instantiate(&self) -> Result<Warm, Fault> {
        let warm = self.instantiate_inner().await.map_err(|e| self.fault(e))?;
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        Ok(warm)
    }

    async fn instantiate_inner(&self) -> wasmtime::Result<Warm> {
        let state = State::new(self.context.clone())?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        self.arm(&mut store);
        // Every tick a call runs through costs one tick of its budget; with
        // budget left it yields to the runtime, so the other sessions of
        // its worker thread keep moving, and without it traps. Time spent
        // suspended is not charged: a plugin is not failed for a busy host.
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            state.ticks_left = state.ticks_left.saturating_sub(1);
            if state.ticks_left == 0 {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let exports = match &self.pre {
            Pre::Identity(pre) => Exports::Identity(pre.instantiate_async(&mut store).await?),
            Pre::Policy(pre) => Exports::Policy(pre.instantiate_async(&mut store).await?),
            Pre::Masking(pre) => Exports::Masking(pre.instantiate_async(&mut store).await?),
            Pre::Approval(pre) => Exports::Approval(pre.instantiate_async(&mut store).await?),
        };
        Ok(Warm {
            store,
            exports,
            called_at: std::time::Instant::now(),
        })
    }

    /// Calls `check-config` on a fresh instance: the plugin's own verdict
    /// on its configuration. A trap or timeout is a rejection too.
    pub async fn check_config(&self) -> Result<(), String> {
        let mut warm = self.checkout().await.map_err(|f| f.to_string())?;
        let result = match &warm.exports {
            Exports::Identity(e) => {
                e.sluice_gateway_plugin()
                    .call_check_config(&mut warm.store)
                    .await
            }
            Exports::Policy(e) => {
                e.sluice_gateway_plugin()
                    .call_check_config(&mut warm.store)
                    .await
            }
            Exports::Masking(e) => {
                e.sluice_gateway_plugin()
                    .call_check_config(&mut warm.store)
                    .await
            }
            Exports::Approval(e) => {
                e.sluice_gateway_plugin()
                    .call_check_config(&mut warm.store)
                    .await
            }
        };
        self.checkin(warm, result).map_err(|f| f.to_string())?
    }
}
