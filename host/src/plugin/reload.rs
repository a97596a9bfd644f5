//! Hot reload: sluice.toml, every plugin component file and every data
//! file a plugin's config names are watched; a change (or SIGHUP) reloads
//! the plugins from the config as it is now.
//!
//! Only the `[[plugins]]` entries are applied by a reload; other settings
//! (listen address, upstream, limits) take a restart. A reload that fails —
//! a config that does not parse, a file that is not a component of the
//! right world, a plugin that rejects its configuration or traps loading it
//! — changes nothing, and the log says why.
//!
//! A reload never turns a control off: one that would leave no policy or
//! no masking plugin where one is in force is refused. A config file
//! emptied or cut short by a bad deploy or an editor's half-save parses as
//! a config without plugins, and taking it would let every statement run
//! and every card number out unmasked; removing a control takes a
//! restart, which reads the whole config again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use super::{LoadError, Plugins};
use crate::config::{Config, Hook, PluginSettings, PluginSource};

/// Changes closer together than this are one reload: an editor's save is
/// several filesystem events.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error(
        "the new config has no {0} plugin where one is in force; a reload never turns a control off (restart sluice to remove it)"
    )]
    TurnsOff(&'static str),
}

/// Reads the plugins' entries from the config file.
pub fn plugin_settings(config_path: &Path) -> Result<Vec<PluginSettings>, crate::config::Error> {
    let config = Config::load(config_path)?;
    config.resolve_plugins(&base_dir(config_path), &|name| std::env::var(name).ok())
}

fn base_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reloads the plugins from the config file now.
pub async fn reload_from(plugins: &Plugins, config_path: &Path) -> Result<u64, ReloadError> {
    reload_recorded(plugins, config_path, |_| {}).await
}

/// [`reload_from`], calling `before_swap` with the new set just before it
/// takes over.
async fn reload_recorded(
    plugins: &Plugins,
    config_path: &Path,
    before_swap: impl FnOnce(&super::PluginSet),
) -> Result<u64, ReloadError> {
    let rejected = |error: ReloadError| {
        plugins
            .reloads_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(%error, "plugin reload rejected; the loaded plugins keep serving");
        error
    };
    let settings = plugin_settings(config_path).map_err(|error| rejected(error.into()))?;
    let current = plugins.current();
    for (hook, name) in [(Hook::Policy, "policy"), (Hook::Masking, "masking")] {
        if !current.chain(hook).is_empty() && !settings.iter().any(|p| p.hook == hook) {
            return Err(rejected(ReloadError::TurnsOff(name)));
        }
    }
    Ok(plugins.reload_then(&settings, before_swap).await?)
}

/// The files whose change reloads the plugins.
fn watched_files(config_path: &Path, settings: &[PluginSettings]) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::from([config_path.to_owned()]);
    for plugin in settings {
        if let PluginSource::File(path) = &plugin.source {
            files.insert(path.clone());
        }
        files.extend(plugin.files.values().cloned());
    }
    files.into_iter().map(|path| absolute(&path)).collect()
}

/// An absolute path with its directory resolved, as the watcher reports
/// events (the file itself may not exist at the moment).
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or(path),
        _ => path,
    }
}

/// Watches the config and the plugins' files and listens for SIGHUP until
/// the task is dropped, reloading on every change. Each reload that loads
/// is put on `audit`'s record, with the plugins it put in force.
pub async fn watch(plugins: Arc<Plugins>, config_path: PathBuf, audit: crate::audit::Audit) {
    let config_path = absolute(&config_path);
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    let debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let _ = changed_tx.send(events.into_iter().map(|event| event.path).collect());
        }
        Err(error) => tracing::warn!(%error, "watching the plugin files failed"),
    });
    let mut debouncer = match debouncer {
        Ok(debouncer) => Some(debouncer),
        Err(error) => {
            tracing::error!(%error, "cannot watch files for changes; reload with SIGHUP");
            None
        }
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP");
            None
        }
    };

    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    // The rest of the config as the gateway started with it: a reload
    // applies only the plugins, and says so when more than that changed.
    let started_with = sections_but_plugins(&config_path);
    let initial = plugin_settings(&config_path).unwrap_or_default();
    rewatch(
        &mut debouncer,
        &mut files,
        &mut dirs,
        watched_files(&config_path, &initial),
    );

    loop {
        let cause = tokio::select! {
            Some(paths) = changed.recv() => {
                let Some(path) = paths.into_iter().find(|p| files.contains(&absolute(p))) else {
                    continue;
                };
                format!("{} changed", path.display())
            }
            Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP".to_owned(),
            else => return,
        };
        tracing::info!(%cause, "reloading plugins");
        let changed = changed_sections(&started_with, &sections_but_plugins(&config_path));
        if !changed.is_empty() {
            tracing::warn!(
                sections = %changed.join(", "),
                "the config changed beyond [[plugins]]: a reload applies the plugins only; these take a restart"
            );
        }
        // On the record before the new plugins decide anything: a
        // statement they judge comes after it in the trail.
        let _ = reload_recorded(&plugins, &config_path, |set| {
            audit.record_later(crate::audit::Event::PluginsReloaded {
                cause: &cause,
                plugins: &set.versions(),
            });
        })
        .await;
        // Paths may have changed with the config; watch what it names now.
        if let Ok(settings) = plugin_settings(&config_path) {
            rewatch(
                &mut debouncer,
                &mut files,
                &mut dirs,
                watched_files(&config_path, &settings),
            );
        }
    }
}

/// The config file's top-level tables other than `[[plugins]]`, as read
/// now (`None` when it does not read as TOML).
fn sections_but_plugins(config_path: &Path) -> Option<toml::Table> {
    let bytes =
        crate::config::read_regular_file(config_path, crate::config::MAX_CONFIG_FILE_BYTES).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut table: toml::Table = text.parse().ok()?;
    table.remove("plugins");
    Some(table)
}

/// The names of the top-level sections that differ between `then` and
/// `now` (a file that does not read is no change here: the reload says
/// why it failed).
fn changed_sections(then: &Option<toml::Table>, now: &Option<toml::Table>) -> Vec<String> {
    let (Some(then), Some(now)) = (then, now) else {
        return Vec::new();
    };
    let names: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|name| then.get(*name) != now.get(*name))
        .map(|name| format!("[{name}]"))
        .collect()
}

/// Watches the directories holding `wanted` (editors replace files by
/// renaming, which a watch on the file itself would lose).
fn rewatch(
    debouncer: &mut Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
    files: &mut BTreeSet<PathBuf>,
    dirs: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) {
    let Some(debouncer) = debouncer else {
        *files = wanted;
        return;
    };
    let wanted_dirs: BTreeSet<PathBuf> = wanted
        .iter()
        .filter_map(|file| file.parent().map(Path::to_path_buf))
        .collect();
    for gone in dirs.difference(&wanted_dirs) {
        let _ = debouncer.watcher().unwatch(gone);
    }
    for new in wanted_dirs.difference(dirs) {
        if let Err(error) = debouncer.watcher().watch(new, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %new.display(), %error, "cannot watch for plugin changes");
        }
    }
    *dirs = wanted_dirs;
    *files = wanted;
}

#[cfg(test)]
mod tests {
    use super::changed_sections;

    /// Only sections other than the plugins count, each named once.
    #[test]
    fn changed_sections_are_named() {
        let table = |text: &str| Some(text.parse::<toml::Table>().unwrap());
        let then =
            table("[listen]\naddress = \"127.0.0.1:6432\"\n[limits]\nmax_message_bytes = 1024\n");
        let now = table(
            "[listen]\naddress = \"0.0.0.0:6432\"\n[limits]\nmax_message_bytes = 1024\n[[principals]]\nname = \"x\"\n",
        );
        assert_eq!(changed_sections(&then, &now), ["[listen]", "[principals]"]);
        assert!(changed_sections(&then, &then).is_empty());
        assert!(changed_sections(&then, &None).is_empty());
    }
}
