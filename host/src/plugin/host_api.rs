//! What a plugin instance's store holds, and the host capabilities the WIT
//! worlds import: log, config, clock and (for approval plugins) slack.
//!
//! A plugin reaches nothing else. Its WASI context has no preopened
//! directories, no environment, no arguments, closed stdio and no network
//! unless the operator granted them in the plugin's `[plugins.grants]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::bindings::approval::sluice::gateway::slack;
use super::bindings::{clock, config, log, types};
use crate::config::PluginSettings;

/// Longest line a plugin may log; the rest is cut.
const MAX_LOG_LINE: usize = 2048;
/// Most table elements an instance may grow to: generous for any plugin
/// (function tables are small), a bound against a runaway one.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What one version of a plugin was loaded with: everything its imports
/// answer from. Shared by all its instances, read-only.
#[derive(Debug)]
pub struct PluginContext {
    pub name: String,
    pub config_json: String,
    /// The data files the config names, read by the host at load.
    pub files: BTreeMap<String, Arc<[u8]>>,
    pub memory_bytes: usize,
    pub env: Vec<(String, String)>,
    pub read_dirs: Vec<std::path::PathBuf>,
}

/// The memory cap was hit: the call traps and fails closed.
#[derive(Debug, thiserror::Error)]
#[error("the plugin tried to grow its memory to {wanted} bytes, over its cap of {cap}")]
pub struct MemoryCapExceeded {
    pub wanted: usize,
    pub cap: usize,
}

/// The data of one instance's store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub context: Arc<PluginContext>,
    /// Epoch ticks the running call may still run for. Ticks spent
    /// suspended (yielded to other sessions) are not counted.
    pub ticks_left: u64,
}

impl State {
    pub fn new(context: Arc<PluginContext>) -> Result<State, std::io::Error> {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, value) in &context.env {
            wasi.env(name, value);
        }
        for dir in &context.read_dirs {
            let guest_path = dir.to_string_lossy();
            wasi.preopened_dir(dir, guest_path, FsPerms::ReadOnly)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
        }
        Ok(State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            context,
            ticks_left: 0,
        })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let cap = self.context.memory_bytes;
        if desired > cap {
            return Err(MemoryCapExceeded {
                wanted: desired,
                cap,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl types::Host for State {}

impl log::Host for State {
    async fn write(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.context.name.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl config::Host for State {
    async fn get(&mut self) -> String {
        self.context.config_json.clone()
    }

    async fn file(&mut self, key: String) -> Option<Vec<u8>> {
        self.context.files.get(&key).map(|bytes| bytes.to_vec())
    }
}

impl clock::Host for State {
    async fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

impl slack::Host for State {
    async fn post_message(
        &mut self,
        _channel: String,
        _text: String,
        _blocks_json: String,
    ) -> Result<slack::MessageRef, String> {
        Err("Slack is not configured for this gateway".to_owned())
    }

    async fn update_message(
        &mut self,
        _message: slack::MessageRef,
        _text: String,
        _blocks_json: String,
    ) -> Result<(), String> {
        Err("Slack is not configured for this gateway".to_owned())
    }
}

/// Reads the data files a plugin's config names.
pub fn read_files(settings: &PluginSettings) -> Result<BTreeMap<String, Arc<[u8]>>, String> {
    settings
        .files
        .iter()
        .map(|(key, path)| match std::fs::read(path) {
            Ok(bytes) => Ok((key.clone(), Arc::from(bytes))),
            Err(error) => Err(format!("file {key:?} ({}): {error}", path.display())),
        })
        .collect()
}
