//! Hot reload: sluice.toml, every plugin component file and every data
//! file a plugin's config names are watched; a change (or SIGHUP) reloads
//! the plugins from the config as it is now.
//!
//! A file counts as changed when what its path leads to differs from what
//! it led to when last looked at: another file (behind a swapped link, as
//! a Kubernetes ConfigMap update swaps its `..data` link), another size or
//! modification time — or it changed so close to when it was read that a
//! later write could carry the same times. Events only say when to look:
//! they name the link that moved rather than the file behind it, and a
//! mere read of a file raises one, which must not reload anything (so the
//! watcher itself only looks at metadata). Paths are followed as written,
//! links in them resolved at every look. The directories of the paths and
//! of the files they lead to are watched, and every [`POLL`] the files are
//! looked at anyway, which catches what no event reports (a directory
//! moved into the place of a watched one, a filesystem without change
//! notification).
//!
//! Only the `[[plugins]]` entries are applied by a reload; other settings
//! (listen address, upstream, limits) take a restart. A reload that fails —
//! a config that does not parse, a file that is not a component of the
//! right world, a plugin that rejects its configuration or traps loading it
//! — changes nothing, and the log says why.
//!
//! A reload never turns a control off: one that would leave no identity,
//! policy or masking plugin where one is in force, or that leaves out any
//! of them by name, is refused. A config
//! file emptied or cut short by a bad deploy or an editor's half-save
//! parses as a config without plugins, and taking it would let every
//! statement run, every card number out unmasked, and logins be checked
//! against the static principals read at start, which the identity plugin
//! had replaced; removing a control takes a restart, which reads the whole
//! config again.

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

/// How often the watched files are looked at whatever the events say.
const POLL: Duration = Duration::from_secs(5);

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
    #[error(
        "the new config has no {hook} plugin named {name:?}, which is in force; a reload never removes a control (restart sluice to remove it)"
    )]
    Removes { hook: &'static str, name: String },
}

/// Reads the plugins' entries from the config file.
pub fn plugin_settings(config_path: &Path) -> Result<Vec<PluginSettings>, crate::config::Error> {
    let config = Config::load(config_path)?;
    config.resolve_plugins(&crate::config::base_dir(config_path), &|name| {
        std::env::var(name).ok()
    })
}

/// Reloads the plugins from the config file now.
pub async fn reload_from(plugins: &Plugins, config_path: &Path) -> Result<u64, ReloadError> {
    match plugin_settings(config_path) {
        Ok(settings) => reload_settings(plugins, &settings, |_| {}).await,
        Err(error) => Err(rejected(plugins, error.into())),
    }
}

/// Puts the plugins of `settings` in force, calling `before_swap` with the
/// new set just before it takes over.
async fn reload_settings(
    plugins: &Plugins,
    settings: &[PluginSettings],
    before_swap: impl FnOnce(&super::PluginSet),
) -> Result<u64, ReloadError> {
    let current = plugins.current();
    for (hook, name) in [
        (Hook::Identity, "identity"),
        (Hook::Policy, "policy"),
        (Hook::Masking, "masking"),
    ] {
        if !current.chain(hook).is_empty() && !settings.iter().any(|p| p.hook == hook) {
            return Err(rejected(plugins, ReloadError::TurnsOff(name)));
        }
        // Nor one of several: a config cut short at an entry's end still
        // parses, one plugin of a chain (the access policy behind the
        // command guard) gone.
        for in_force in current.chain(hook) {
            if !settings
                .iter()
                .any(|p| p.hook == hook && p.name == in_force.name)
            {
                return Err(rejected(
                    plugins,
                    ReloadError::Removes {
                        hook: name,
                        name: in_force.name.clone(),
                    },
                ));
            }
        }
    }
    Ok(plugins.reload_then(settings, before_swap).await?)
}

/// Counts and logs a reload refused before the plugins were loaded.
fn rejected(plugins: &Plugins, error: ReloadError) -> ReloadError {
    plugins
        .reloads_rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(%error, "plugin reload rejected; the loaded plugins keep serving");
    error
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

/// `path` made absolute as it is written: a link in it (a directory
/// swapped for a new release, a ConfigMap's `..data`) is followed anew at
/// every read, never resolved once for good.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Watches the config and the plugins' files and listens for SIGHUP (on
/// `hangups` when the caller listened already) until the task is dropped,
/// reloading on every change. Each reload that loads is put on `audit`'s
/// record, with the plugins it put in force.
pub async fn watch(
    plugins: Arc<Plugins>,
    config_path: PathBuf,
    audit: crate::audit::Audit,
    hangups: Option<tokio::signal::unix::Signal>,
) {
    let config_path = absolute(&config_path);
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(_) => {
            let _ = changed_tx.send(());
        }
        Err(error) => tracing::warn!(%error, "watching the plugin files failed"),
    });
    let debouncer = match debouncer {
        Ok(debouncer) => Some(debouncer),
        Err(error) => {
            tracing::error!(%error, "cannot watch files for changes; they are looked at every {}s, or reload with SIGHUP", POLL.as_secs());
            None
        }
    };
    let mut hangup = match hangups {
        Some(hangups) => Some(hangups),
        None => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP");
                None
            }
        },
    };
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The rest of the config as the gateway started with it: a reload
    // applies only the plugins, and says so when more than that changed.
    let started_with = sections_but_plugins(&config_path);
    let initial = plugin_settings(&config_path).unwrap_or_default();
    let mut watched = Watched::new(debouncer);
    watched.rewatch(watched_files(&config_path, &initial), plugins.read_from);

    loop {
        let cause = tokio::select! {
            // An event says where to look, not what changed: reading a
            // file can raise one (its access time), and a swapped link
            // raises one that names the link.
            Some(()) = changed.recv() => watched.changed_file(),
            _ = poll.tick() => watched.changed_file(),
            Some(()) = async { hangup.as_mut()?.recv().await } => Some("SIGHUP".to_owned()),
            else => return,
        };
        let Some(cause) = cause else {
            continue;
        };
        // What the files are now, before the reload reads them: a change
        // made while it reads is a change the next look finds.
        let read_from = std::time::SystemTime::now();
        watched.look_again(read_from);
        tracing::info!(%cause, "reloading plugins");
        let changed = changed_sections(&started_with, &sections_but_plugins(&config_path));
        if !changed.is_empty() {
            tracing::warn!(
                sections = %changed.join(", "),
                "the config changed beyond [[plugins]]: a reload applies the plugins only; these take a restart"
            );
        }
        // The config read once: the plugins it names are loaded and their
        // files (links may lead elsewhere now) watched from here on.
        let settings = match plugin_settings(&config_path) {
            Ok(settings) => settings,
            Err(error) => {
                rejected(&plugins, error.into());
                continue;
            }
        };
        // On the record before the new plugins decide anything: a
        // statement they judge comes after it in the trail.
        let _ = reload_settings(&plugins, &settings, |set| {
            audit.record_later(crate::audit::Event::PluginsReloaded {
                cause: &cause,
                plugins: &set.versions(),
            });
        })
        .await;
        watched.rewatch(watched_files(&config_path, &settings), read_from);
    }
}

/// What a path leads to, following links: another file, or the same file
/// grown, shrunk or written, reads differently here. Only metadata: the
/// watcher opens no file (an open raises an event of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

/// A filesystem's clock may stamp two writes this close together alike.
const TIMESTAMP_GRAIN: std::time::Duration = std::time::Duration::from_millis(20);

impl FileState {
    /// The state of the file at `path` now; `None` when there is none.
    fn of(path: &Path) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileState {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// Whether the file changed so close to `when` (or after it) that a
    /// later write could carry the same times: what was read then may not
    /// be what it holds now.
    fn changed_near(&self, when: std::time::SystemTime) -> bool {
        let stamp = |(secs, nanos): (i64, i64)| {
            let secs = u64::try_from(secs).unwrap_or(0);
            let nanos = u32::try_from(nanos).unwrap_or(0);
            std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
        };
        let latest = stamp(self.modified).max(stamp(self.changed));
        latest + TIMESTAMP_GRAIN >= when
    }
}

/// A followed file as last looked at.
#[derive(Debug, Clone)]
struct Seen {
    state: Option<FileState>,
    /// Whether what was read matches `state` for sure; otherwise the next
    /// look reloads whatever it finds.
    settled: bool,
}

impl Seen {
    /// The file at `path` now, as against a read that began at `read_from`.
    fn now(path: &Path, read_from: std::time::SystemTime) -> Seen {
        let state = FileState::of(path);
        let settled = !state.as_ref().is_some_and(|s| s.changed_near(read_from));
        Seen { state, settled }
    }
}

/// The files a reload follows, what each was when last looked at, and the
/// directories watched for them.
struct Watched {
    debouncer: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
    files: std::collections::BTreeMap<PathBuf, Seen>,
    dirs: BTreeSet<PathBuf>,
}

impl Watched {
    fn new(
        debouncer: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
    ) -> Watched {
        Watched {
            debouncer,
            files: Default::default(),
            dirs: BTreeSet::new(),
        }
    }

    /// Why to reload, if a file's path leads elsewhere, or to a changed
    /// file, since it was last looked at, or it may have changed while it
    /// was read.
    fn changed_file(&self) -> Option<String> {
        self.files.iter().find_map(|(path, seen)| {
            if FileState::of(path) != seen.state {
                Some(format!("{} changed", path.display()))
            } else if !seen.settled {
                Some(format!(
                    "{} may have changed while it was read",
                    path.display()
                ))
            } else {
                None
            }
        })
    }

    /// Notes what every file is now, before a read that begins at
    /// `read_from`.
    fn look_again(&mut self, read_from: std::time::SystemTime) {
        for (path, seen) in &mut self.files {
            *seen = Seen::now(path, read_from);
        }
    }

    /// Follows `wanted` from now on: files already followed keep what they
    /// were last seen as (a change since is still found), new ones are
    /// looked at now, as against the read of them that began at
    /// `read_from`. The directories of the paths and of the files they
    /// lead to are watched (editors replace a file by renaming another
    /// onto it, which a watch on the file itself would lose).
    fn rewatch(&mut self, wanted: BTreeSet<PathBuf>, read_from: std::time::SystemTime) {
        let mut files = std::collections::BTreeMap::new();
        for path in wanted {
            let seen = match self.files.remove(&path) {
                Some(seen) => seen,
                None => Seen::now(&path, read_from),
            };
            files.insert(path, seen);
        }
        self.files = files;
        let mut wanted_dirs = BTreeSet::new();
        for path in self.files.keys() {
            wanted_dirs.extend(path.parent().map(Path::to_path_buf));
            if let Ok(target) = std::fs::canonicalize(path) {
                wanted_dirs.extend(target.parent().map(Path::to_path_buf));
            }
        }
        let Some(debouncer) = &mut self.debouncer else {
            return;
        };
        for gone in self.dirs.difference(&wanted_dirs) {
            let _ = debouncer.watcher().unwatch(gone);
        }
        // A directory whose watch was lost (deleted and made again) is
        // watched anew: a failed or stale watch costs nothing to repeat.
        for dir in &wanted_dirs {
            if let Err(error) = debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)
                && !self.dirs.contains(dir)
            {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch for plugin changes; looked at every {}s", POLL.as_secs());
            }
        }
        self.dirs = wanted_dirs;
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

#[cfg(test)]
mod tests {
    use super::{FileState, Seen, changed_sections};

    /// Reading a file changes nothing the watcher follows; a write does,
    /// and so does a link swapped to an equal copy. A file written as it
    /// was read is not taken as read for sure.
    #[test]
    fn what_counts_as_a_changed_file() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("words.txt");
        std::fs::write(&file, "alpha\n").unwrap();
        let before = FileState::of(&file);
        assert!(before.is_some());
        assert_eq!(std::fs::read(&file).unwrap(), b"alpha\n");
        assert_eq!(FileState::of(&file), before, "a read is no change");
        assert!(
            !Seen::now(&file, SystemTime::now()).settled,
            "written just now"
        );
        let long_after = SystemTime::now() + Duration::from_secs(5);
        assert!(
            Seen::now(&file, long_after).settled,
            "read long after it was written"
        );
        std::fs::write(&file, "alpha, beta\n").unwrap();
        assert_ne!(FileState::of(&file), before, "written again");

        let copy = dir.path().join("copy.txt");
        std::fs::copy(&file, &copy).unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let linked = FileState::of(&link);
        let swap = dir.path().join("swap.txt");
        std::os::unix::fs::symlink(&copy, &swap).unwrap();
        std::fs::rename(&swap, &link).unwrap();
        assert_ne!(FileState::of(&link), linked, "another file behind the link");
        std::fs::remove_file(&copy).unwrap();
        assert_eq!(FileState::of(&link), None, "a dangling link is no file");
    }

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
