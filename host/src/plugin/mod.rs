//! Plugins: every decision sluice makes is a WebAssembly component behind
//! the `sluice:gateway` WIT contract (`wit/` at the top of the repository).
//!
//! The data path asks [`Plugins::current`] for the loaded [`PluginSet`] and
//! calls its hooks; a reload builds a new set off the data path and swaps it
//! in whole, so a statement runs on one version from start to end.
//!
//! - [`runtime`]: the process-wide wasmtime engine, linkers, epoch ticker.
//! - [`cache`]: compiled components on disk, MAC-checked before loading.
//! - [`host_api`]: what a plugin may import (log, config, clock, slack) and
//!   the sandbox around it.
//! - [`output`]: what a plugin writes to its standard streams, kept for
//!   the log (a panic's message, say).
//! - [`instance`]: one loaded plugin, its warm instances and the guarded call.
//! - [`set`]: the chains per hook and how their answers combine.
//! - [`reload`]: watching files and SIGHUP.

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod host_api;
pub mod instance;
pub mod output;
pub mod reload;
pub mod runtime;
pub mod set;
#[doc(hidden)]
pub mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use host_api::SessionInfo;
pub use instance::{Fault, PluginStats};
pub use runtime::Runtime;
pub use set::{Judged, PluginSet, Selection, Verdict};

use crate::config::PluginSettings;

/// A plugin that cannot be loaded, and why. At startup sluice refuses to
/// start; on a reload the loaded version keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin}: {reason}")]
pub struct LoadError {
    pub plugin: String,
    pub reason: String,
}

/// The gateway's plugins: the set in force, replaced atomically on reload.
pub struct Plugins {
    current: ArcSwap<PluginSet>,
    generation: AtomicU64,
    /// Reloads run one at a time, so two cannot interleave their swaps.
    reloading: tokio::sync::Mutex<()>,
    pub reloads_applied: AtomicU64,
    pub reloads_rejected: AtomicU64,
    /// When the files of the plugins first loaded began to be read: one
    /// changed after that may hold what they did not read.
    pub read_from: std::time::SystemTime,
}

impl Plugins {
    /// Loads the configured plugins (compiling them, or taking them from
    /// the compile cache) and checks each one's configuration.
    pub async fn load(settings: &[PluginSettings]) -> Result<Plugins, LoadError> {
        let read_from = std::time::SystemTime::now();
        let set = if settings.is_empty() {
            PluginSet::default()
        } else {
            PluginSet::load(Runtime::shared(), settings, None).await?
        };
        Ok(Plugins {
            current: ArcSwap::from_pointee(set),
            generation: AtomicU64::new(1),
            reloading: tokio::sync::Mutex::new(()),
            reloads_applied: AtomicU64::new(0),
            reloads_rejected: AtomicU64::new(0),
            read_from,
        })
    }

    /// The set in force now. Hold it for the length of one decision.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// Counts swaps: 1 for the set loaded at startup.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Builds a set from `settings` off the data path and swaps it in. On
    /// any error the set in force stays, and the error says why.
    pub async fn reload(&self, settings: &[PluginSettings]) -> Result<u64, LoadError> {
        self.reload_then(settings, |_| {}).await
    }

    /// [`Plugins::reload`], calling `before_swap` with the new set just
    /// before it takes over: what must come before any decision of the new
    /// set (its audit record) goes there.
    pub async fn reload_then(
        &self,
        settings: &[PluginSettings],
        before_swap: impl FnOnce(&PluginSet),
    ) -> Result<u64, LoadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.current();
        match PluginSet::load(Runtime::shared(), settings, Some(&previous)).await {
            Ok(set) if set.same_plugins(&previous) => {
                // Nothing changed (a touched file, a SIGHUP): the set in
                // force stays, and with its generation what sessions
                // remember of its decisions.
                tracing::info!(
                    generation = self.generation(),
                    "plugins reloaded: nothing changed, the set in force stays"
                );
                Ok(self.generation())
            }
            Ok(set) => {
                before_swap(&set);
                self.current.store(Arc::new(set));
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                self.reloads_applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, plugins = settings.len(), "plugins reloaded");
                Ok(generation)
            }
            Err(error) => {
                self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "plugin reload rejected; the loaded plugins keep serving");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Hook;
    use crate::plugin::builtin::test_guests;
    use crate::plugin::testing;

    fn sleep_plugin(config_json: &str) -> PluginSettings {
        PluginSettings {
            deadline: Duration::from_millis(100),
            ..testing::plugin_settings("sleep", Hook::Policy, test_guests::GUEST_SLEEP, config_json)
        }
    }

    /// A reload that changes nothing keeps the set in force and its
    /// generation (sessions keep what they remember of its decisions); one
    /// that changes a plugin's config swaps in a new set.
    #[tokio::test]
    async fn a_reload_that_changes_nothing_keeps_the_set_and_its_generation() {
        let allow = |config: &str| {
            testing::plugin_settings("allow", Hook::Policy, test_guests::GUEST_ALLOW_ALL, config)
        };
        let plugins = Plugins::load(&[allow("{}")]).await.expect("loads");
        let before = plugins.current();
        let generation = plugins.generation();
        assert_eq!(plugins.reload(&[allow("{}")]).await.unwrap(), generation);
        assert!(Arc::ptr_eq(&before, &plugins.current()));
        let changed = plugins.reload(&[allow(r#"{"note": 1}"#)]).await.unwrap();
        assert_eq!(changed, generation + 1);
        assert!(!Arc::ptr_eq(&before, &plugins.current()));
        // So does a change of its limits: the bound on its instances.
        let bounded = PluginSettings {
            max_instances: 2,
            ..allow(r#"{"note": 1}"#)
        };
        let changed = plugins.reload(&[bounded]).await.unwrap();
        assert_eq!(changed, generation + 2);
    }

    /// A plugin whose configuration check waits inside WASI is refused, at
    /// load and at reload, within its deadline: a reload holds the reload
    /// lock, so a check that never ended would block every later reload.
    #[tokio::test]
    async fn a_config_check_that_waits_is_rejected_not_waited_for() {
        let waits = sleep_plugin(r#"{"sleep_in_check": true}"#);
        // The guest's check sleeps ten seconds: an answer within five was
        // cut short.
        let within = Duration::from_secs(5);
        let refused = tokio::time::timeout(within, Plugins::load(std::slice::from_ref(&waits)))
            .await
            .expect("loading ends well before the check's sleep would");
        let Err(error) = refused else {
            panic!("a plugin whose check never answered was loaded");
        };
        assert!(error.reason.contains("deadline"), "{error}");

        let plugins = Plugins::load(&[sleep_plugin("{}")]).await.unwrap();
        let error = tokio::time::timeout(within, plugins.reload(&[waits]))
            .await
            .expect("the reload ends well before the check's sleep would")
            .expect_err("the reload is rejected");
        assert!(error.reason.contains("deadline"), "{error}");
        assert_eq!(plugins.generation(), 1);
        assert_eq!(plugins.reloads_rejected.load(Ordering::Relaxed), 1);
        // The lock was given back: the next reload (of a changed config)
        // goes through.
        plugins
            .reload(&[sleep_plugin(r#"{"sleep_in_check": false}"#)])
            .await
            .unwrap();
        assert_eq!(plugins.generation(), 2);
    }
}
