//! One loaded plugin: its pre-linked component, a pool of warm instances,
//! and the guarded call every hook goes through.
//!
//! Each instance lives in a store of its own. A call takes an instance from
//! the pool (or instantiates one, about 30 µs), arms its deadline and runs.
//! After a trap the store is poisoned, so the instance is dropped rather
//! than returned, and the next call gets a fresh one. So is an instance
//! whose call was abandoned at the wall-clock bound (its store stopped
//! mid-call) and one that gave an invalid answer (its state is suspect).
//!
//! A plugin's instances are bounded (`max_instances`): each may grow to the
//! memory cap, and calls that wait inside the host (or are suspended at a
//! tick) hold theirs, so without a bound a flood of them would make as
//! many instances. A call that finds the bound reached takes an idle
//! instance from another thread's pool, or waits for one to come free
//! within its own time, and fails closed (`busy`) when none does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// The least time a call may take by the wall clock beyond its deadline.
/// The deadline counts only the ticks a call spends running wasm, so that
/// a busy host, which suspends a call between ticks, does not fail it; a
/// call waiting inside WASI (a sleep, a blocked pollable) runs no wasm and
/// would never reach it. The wall-clock bound catches that wait while
/// leaving a call its deadline again (at least this much) for suspension.
const WALL_CLOCK_GRACE: Duration = Duration::from_millis(200);

/// Longest a call that found others waiting for an instance waits for its
/// wake-up before it looks for one itself.
const QUEUED_LOOK_AFTER: Duration = Duration::from_millis(5);

/// A call (or the instantiation for it) was abandoned at its wall-clock
/// bound: classified as the deadline fault.
#[derive(Debug, thiserror::Error)]
#[error("the call was abandoned after {}ms of wall-clock time", .0.as_millis())]
struct WallClockExceeded(Duration);

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
    #[error(
        "plugin {plugin} had all {instances} of its instances busy until the call's time ran out"
    )]
    Busy { plugin: String, instances: usize },
}

impl Fault {
    /// The plugin that failed.
    pub fn plugin(&self) -> &str {
        match self {
            Fault::Trap { plugin, .. }
            | Fault::Deadline { plugin, .. }
            | Fault::Memory { plugin, .. }
            | Fault::InvalidAnswer { plugin, .. }
            | Fault::Busy { plugin, .. } => plugin,
        }
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap { .. } => "trap",
            Fault::Deadline { .. } => "deadline",
            Fault::Memory { .. } => "memory",
            Fault::InvalidAnswer { .. } => "invalid-answer",
            Fault::Busy { .. } => "busy",
        }
    }

    /// One line safe to show a client: the kind of fault and the plugin,
    /// nothing more. The `Display` form is for the log: a trap's detail
    /// holds the plugin's wasm backtrace and whatever its panic message
    /// said, which may be statement data.
    pub fn summary(&self) -> String {
        format!("{} in plugin {}", self.kind(), self.plugin())
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
    /// Calls that found every instance busy for as long as they could wait.
    pub busy: AtomicU64,
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
            + self.busy.load(Ordering::Relaxed)
    }

    fn count(&self, fault: &Fault) {
        let counter = match fault {
            Fault::Trap { .. } => &self.traps,
            Fault::Deadline { .. } => &self.deadlines,
            Fault::Memory { .. } => &self.memory,
            Fault::InvalidAnswer { .. } => &self.invalid_answers,
            Fault::Busy { .. } => &self.busy,
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
    called_at: Instant,
    /// When the call now using it must be over by the wall clock (see
    /// [`Plugin::bounded`]).
    ends_by: Instant,
    /// The plugin's pool generation when it was made: an instance of an
    /// older generation was retired and is dropped when next seen.
    generation: u64,
    /// Its place among the plugin's instances, given back when it is
    /// dropped.
    _slot: Slot,
}

impl Warm {
    /// When the call now using this instance must be over, by the wall
    /// clock.
    pub fn ends_by(&self) -> Instant {
        self.ends_by
    }
}

/// The instances of one plugin version that exist, against their bound.
#[derive(Debug)]
struct Instances {
    /// Instances made and not yet dropped: in calls, or kept warm.
    live: AtomicUsize,
    max: usize,
    /// Calls waiting for an instance to come free.
    waiting: AtomicUsize,
    /// Told when an instance comes back to a pool or is dropped while a
    /// call waits.
    freed: tokio::sync::Notify,
}

impl Instances {
    /// Takes a place for a new instance, if the bound leaves one.
    fn reserve(self: &Arc<Self>) -> Option<Slot> {
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
                (live < self.max).then_some(live + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Wakes a waiting call, if there is one, to look again. (Sequentially
    /// consistent with the waiter's count and look: either it sees what
    /// came free, or this sees it waiting.)
    fn came_free(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }
}

/// A place among a plugin's [`Instances`], held by the instance made in
/// it.
struct Slot(Arc<Instances>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.came_free();
    }
}

/// Counts a call among those waiting for an instance while it lives.
struct Waiting<'a>(&'a Instances);

impl<'a> Waiting<'a> {
    fn new(instances: &'a Instances) -> Waiting<'a> {
        instances.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(instances)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a call gets its instance when its own pool shard has none.
enum Found {
    /// An idle one from another thread's shard.
    Idle(Warm),
    /// A place to make a new one in.
    Place(Slot),
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
    instances: Arc<Instances>,
    /// Bumped to retire every instance made before (see
    /// [`Plugin::invalid_answer`]).
    generation: AtomicU64,
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
            instances: Arc::new(Instances {
                live: AtomicUsize::new(0),
                max: settings.max_instances.max(1),
                waiting: AtomicUsize::new(0),
                freed: tokio::sync::Notify::new(),
            }),
            generation: AtomicU64::new(0),
            stats,
        })
    }

    /// Takes a warm instance from the pool, or makes one (within the
    /// call's wall-clock bound, which starts now).
    pub async fn checkout(&self) -> Result<Warm, Fault> {
        let called_at = Instant::now();
        let mut ends_by = called_at + self.wall_clock_limit();
        self.stats.calls[shard()].0.fetch_add(1, Ordering::Relaxed);
        // While calls wait for an instance, one coming back goes to them
        // first: a new call queues behind them rather than take it here.
        let queued = self.instances.waiting.load(Ordering::SeqCst) > 0;
        let pooled = if queued { None } else { self.pooled(shard()) };
        let found = match pooled {
            Some(warm) => Found::Idle(warm),
            None => match self.idle_or_place(ends_by, queued).await? {
                (found, true) => {
                    // The wait was the bound's doing, not the plugin's: the
                    // call gets its whole time from here.
                    ends_by = Instant::now() + self.wall_clock_limit();
                    found
                }
                (found, false) => found,
            },
        };
        let mut warm = match found {
            Found::Idle(warm) => warm,
            Found::Place(slot) => {
                let instantiated = self.bounded(ends_by, self.instantiate_inner(slot)).await;
                let warm = instantiated.map_err(|error| self.fault(error))?;
                self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
                warm
            }
        };
        warm.called_at = called_at;
        warm.ends_by = ends_by;
        self.arm(&mut warm.store);
        Ok(warm)
    }

    /// A current instance from pool shard `shard`. Retired ones there are
    /// dropped, all of them: each holds a place among the instances.
    fn pooled(&self, shard: usize) -> Option<Warm> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut pool = self.pool[shard].lock().unwrap_or_else(|p| p.into_inner());
        if pool.iter().any(|warm| warm.generation != generation) {
            pool.retain(|warm| warm.generation == generation);
        }
        pool.pop()
    }

    /// For a call its own pool shard had no instance for: a place to make
    /// one in, while the bound leaves one; else an idle instance from
    /// another shard; else the first of either to come free before
    /// `ends_by`, when the call fails closed as [`Fault::Busy`]. A call
    /// `queued` behind others waiting does not look before it is woken or
    /// a moment has passed: instances coming back go to the calls that
    /// waited first, by and large (a call that wakes and loses a race
    /// waits again behind the rest). Says whether the call waited.
    async fn idle_or_place(&self, ends_by: Instant, queued: bool) -> Result<(Found, bool), Fault> {
        let look = || {
            if let Some(slot) = self.instances.reserve() {
                return Some(Found::Place(slot));
            }
            (0..SHARDS).find_map(|shard| self.pooled(shard).map(Found::Idle))
        };
        if !queued && let Some(found) = look() {
            return Ok((found, false));
        }
        let waiting = Waiting::new(&self.instances);
        let mut turn = !queued;
        loop {
            // Registered before the look, so that an instance freed after
            // the look wakes it.
            let freed = self.instances.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if turn && let Some(found) = look() {
                // More may have come free than wake-ups were given (freed
                // while no call was counted waiting yet): the next waiter
                // looks too.
                drop(waiting);
                self.instances.came_free();
                return Ok((found, true));
            }
            // A call queued behind others looks when woken, or after a
            // moment in any case: it is owed no wake-up of its own.
            let look_by = match turn {
                true => ends_by,
                false => ends_by.min(Instant::now() + QUEUED_LOOK_AFTER),
            };
            turn = true;
            if tokio::time::timeout_at(look_by.into(), freed)
                .await
                .is_err()
                && Instant::now() >= ends_by
            {
                // A wake-up it may hold goes on with its `Notified`; and
                // its turn passes on to the next waiter.
                drop(waiting);
                self.instances.came_free();
                let fault = Fault::Busy {
                    plugin: self.name.clone(),
                    instances: self.instances.max,
                };
                self.record(&fault);
                return Err(fault);
            }
        }
    }

    /// How long a call may take by the wall clock, instantiation included:
    /// its deadline, and again as much (at least [`WALL_CLOCK_GRACE`]) for
    /// the time a busy host keeps it suspended.
    pub fn wall_clock_limit(&self) -> Duration {
        self.deadline + self.deadline.max(WALL_CLOCK_GRACE)
    }

    /// Runs `call` until `ends_by` at the latest. A call still running then
    /// is dropped where it stands and ends in [`WallClockExceeded`] (the
    /// deadline fault): the epoch deadline stops wasm that runs, this stops
    /// one that waits inside the host. Its store may be mid-call, so the
    /// instance must not serve again: every error drops it at checkin.
    pub async fn bounded<R>(
        &self,
        ends_by: Instant,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let mut call = std::pin::pin!(call);
        // Nearly every call is over at its first poll: it needs no timer,
        // and making one (the runtime's handle, a timer entry) costs a
        // tenth of a warm call.
        let first = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            std::task::Poll::Ready(result) => std::task::Poll::Ready(Some(result)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(result) = first {
            return result;
        }
        match tokio::time::timeout_at(ends_by.into(), call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(WallClockExceeded(self.wall_clock_limit()).into()),
        }
    }

    /// Gives the next call its full time budget, and its log lines.
    fn arm(&self, store: &mut Store<State>) {
        let state = store.data_mut();
        state.ticks_left = self.deadline_ticks();
        state.log_lines_left = super::host_api::MAX_LOG_LINES_PER_CALL;
        state.log_lines_dropped = 0;
        store.set_epoch_deadline(1);
    }

    /// The deadline in ticks, rounded up, plus one: the first tick may come
    /// a moment after the call starts.
    fn deadline_ticks(&self) -> u64 {
        self.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// Ends a call: the answer is checked by `check` (which says what is
    /// wrong with an answer sluice cannot use, or turns it into what the
    /// caller wants), and only then does the instance go back to the pool.
    /// An instance that faulted or gave an invalid answer is dropped, and
    /// the fault counted and logged.
    pub fn checkin<R, T>(
        &self,
        mut warm: Warm,
        result: wasmtime::Result<R>,
        check: impl FnOnce(R) -> Result<T, String>,
    ) -> Result<T, Fault> {
        self.stats.latency.observe(warm.called_at.elapsed());
        // Cleaned while the call's secret is still known.
        let state = warm.store.data();
        let wrote = state.output.take().map(|text| state.clean(&text));
        let dropped = state.log_lines_dropped;
        if dropped > 0 {
            tracing::warn!(plugin = %self.name, hook = %self.hook, dropped, "the plugin logged more than {} lines in one call; the rest were dropped", super::host_api::MAX_LOG_LINES_PER_CALL);
        }
        let secret = warm.store.data_mut().secret.take();
        let answer = result
            .map_err(|error| self.fault_handed(error, secret.as_deref(), wrote.as_deref()))?;
        if let Some(wrote) = &wrote {
            tracing::debug!(plugin = %self.name, hook = %self.hook, "the plugin wrote: {wrote}");
        }
        let value = check(answer).map_err(|detail| self.answer_refused(detail))?;
        warm.store.data_mut().session = None;
        if warm.generation == self.generation.load(Ordering::Acquire) {
            let mut pool = self.pool[shard()].lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < SHARD_SIZE {
                pool.push(warm);
                drop(pool);
                self.instances.came_free();
            }
        }
        Ok(value)
    }

    /// Counts and logs a fault the caller found in an answer after the
    /// call ended, and retires every instance made so far: the one that
    /// answered is back in a pool by now, among them, and must not serve
    /// again. Checking the answer in [`Plugin::checkin`] instead drops just
    /// that instance.
    pub fn invalid_answer(&self, detail: impl Into<String>) -> Fault {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.answer_refused(detail.into())
    }

    fn answer_refused(&self, detail: String) -> Fault {
        let fault = Fault::InvalidAnswer {
            plugin: self.name.clone(),
            detail,
        };
        self.record(&fault);
        fault
    }

    fn fault(&self, error: wasmtime::Error) -> Fault {
        self.fault_handed(error, None, None)
    }

    /// [`Plugin::fault`] of a call handed `secret`: a trap's detail may
    /// quote it, and goes to the log. `wrote` is what the call wrote to
    /// its standard streams, cleaned: a panic's message, which a trap's
    /// detail starts with.
    fn fault_handed(
        &self,
        error: wasmtime::Error,
        secret: Option<&str>,
        wrote: Option<&str>,
    ) -> Fault {
        let plugin = self.name.clone();
        let fault = if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
            Fault::Memory {
                plugin,
                detail: cap.to_string(),
            }
        } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt))
            || error.is::<WallClockExceeded>()
        {
            Fault::Deadline {
                plugin,
                deadline: self.deadline,
            }
        } else {
            let detail = match wrote {
                Some(wrote) => format!("{wrote}; {error:#}"),
                None => format!("{error:#}"),
            };
            // wasmtime's backtrace names the plugin's functions as its
            // name section spells them: on one line, a name cannot start
            // one of sluice's own.
            let detail = crate::text::one_line(&detail).into_owned();
            Fault::Trap {
                plugin,
                detail: match secret {
                    Some(secret) => super::host_api::without_secret(&detail, secret),
                    None => detail,
                },
            }
        };
        self.record(&fault);
        fault
    }

    fn record(&self, fault: &Fault) {
        self.stats.count(fault);
        tracing::error!(plugin = %self.name, hook = %self.hook, kind = fault.kind(), "{fault}; failing closed");
    }

    /// Makes an instance in `slot`.
    async fn instantiate_inner(&self, slot: Slot) -> wasmtime::Result<Warm> {
        // Read before instantiating: an instance made while its generation
        // is retired is retired with it.
        let generation = self.generation.load(Ordering::Acquire);
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
        let instantiated = match &self.pre {
            Pre::Identity(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Identity),
            Pre::Policy(pre) => pre.instantiate_async(&mut store).await.map(Exports::Policy),
            Pre::Masking(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Masking),
            Pre::Approval(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Approval),
        };
        // A component's start code that panics says why on its stderr.
        let exports = instantiated.map_err(|error| {
            let state = store.data();
            match state.output.take() {
                Some(wrote) => error.context(state.clean(&wrote)),
                None => error,
            }
        })?;
        // What it wrote starting is its own, not the first call's.
        let state = store.data();
        if let Some(wrote) = state.output.take() {
            let wrote = state.clean(&wrote);
            tracing::debug!(plugin = %self.name, hook = %self.hook, "the plugin wrote while starting: {wrote}");
        }
        let now = Instant::now();
        Ok(Warm {
            store,
            exports,
            called_at: now,
            ends_by: now,
            generation,
            _slot: slot,
        })
    }

    /// Calls `check-config` on a fresh instance: the plugin's own verdict
    /// on its configuration. A trap or timeout is a rejection too, so a
    /// check that never ends cannot hold up a reload.
    pub async fn check_config(&self) -> Result<(), String> {
        let mut warm = self.checkout().await.map_err(|f| f.to_string())?;
        let ends_by = warm.ends_by();
        let call = async {
            match &warm.exports {
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
            }
        };
        let result = self.bounded(ends_by, call).await;
        // The plugin's own `Err` is its verdict, not an invalid answer.
        self.checkin(warm, result, Ok).map_err(|f| f.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Hook, PluginSettings};
    use crate::plugin::builtin::test_guests;
    use crate::plugin::set::PluginSet;
    use crate::plugin::testing;

    /// A call that arrives while another is counted waiting queues behind
    /// it, but is owed no wake-up: an instance that came free while no one
    /// was counted waiting (so none was given) is found after a moment,
    /// not when the call's time runs out.
    #[tokio::test]
    async fn a_queued_call_looks_for_itself_after_a_moment() {
        let set = PluginSet::load(
            super::super::runtime::Runtime::shared(),
            &[PluginSettings {
                max_instances: 1,
                ..testing::plugin_settings("one", Hook::Policy, test_guests::GUEST_ALLOW_ALL, "{}")
            }],
            None,
        )
        .await
        .expect("loads");
        let plugin = set.plugins().next().expect("the plugin").clone();
        let held = plugin.checkout().await.expect("the instance");
        // Another call counted waiting (it never wakes); the instance back
        // in its pool with no wake-up given.
        let _ghost = Waiting::new(&plugin.instances);
        plugin.pool[shard()].lock().expect("the pool").push(held);
        let started = Instant::now();
        let warm = plugin.checkout().await.expect("found, not busy");
        assert!(
            started.elapsed() < plugin.wall_clock_limit(),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(plugin.stats.instances_created.load(Ordering::Relaxed), 1);
        plugin
            .checkin(warm, Ok(()), Ok::<(), String>)
            .expect("back");
    }
}
