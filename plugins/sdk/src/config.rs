//! The plugin's own configuration.
//!
//! The operator writes it in the plugin's table of `sluice.toml`:
//!
//! ```toml
//! [[plugins]]
//! name = "no-exports"
//! hook = "policy"
//! path = "no_exports.wasm"
//!
//! [plugins.config]          # reaches the plugin as JSON: get()
//! deny_kinds = ["copy-out"]
//!
//! [plugins.files]           # read and watched by the host: file("words")
//! words = "forbidden-words.txt"
//! ```
//!
//! A change to either reloads the plugin, and its `check_config` runs
//! again before the new version serves.
//!
//! Outside sluice (in native tests) there is no configuration and both
//! functions panic: keep the logic to test in functions that take the
//! configuration as an argument.

/// The plugin's config table, as JSON text (`{}` when it has none).
pub fn get() -> String {
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::config::get()
    } else {
        outside_sluice("config::get")
    }
}

/// The contents of the data file the operator names under `key` in the
/// plugin's `files` table, or `None` when no file has that key. The host
/// reads the file; the plugin never touches the filesystem.
pub fn file(key: &str) -> Option<Vec<u8>> {
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::config::file(key)
    } else {
        outside_sluice("config::file")
    }
}

/// Stands in for a capability in native builds, where there is no host.
pub(crate) fn outside_sluice(function: &str) -> ! {
    panic!(
        "sluice_plugin::{function} is only available inside sluice; \
         in native tests, pass the configuration to the logic under test instead"
    )
}
