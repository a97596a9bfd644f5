//! The on-disk cache of compiled plugins.
//!
//! Compiling a component takes tens of milliseconds; loading a compiled
//! one, a fraction of one. But loading it runs its bytes as native code, so
//! an entry is trusted only if:
//! - the directory belongs to the user sluice runs as and nobody else may
//!   write to it (sluice creates it with mode 0700 and refuses one that is
//!   group- or world-writable), and
//! - its MAC verifies: every entry is stored with an HMAC-SHA256 of its
//!   bytes under a key kept in the directory (mode 0600), recorded in a file
//!   apart from the entry. A torn write, a truncated file or bytes copied in
//!   from elsewhere fail the check and the plugin is compiled afresh.
//!
//! Entries are keyed by the SHA-256 of the component's bytes together with
//! wasmtime's compatibility hash (its version and every `Config` setting
//! that changes the code), so an upgrade or a changed setting misses
//! instead of loading incompatible code.
//!
//! So every plugin release and every sluice upgrade leaves entries nothing
//! will load again, megabytes each. An entry's modification time is when
//! it was last loaded or stored, and the cache is pruned when sluice opens
//! it: entries not used for [`UNUSED_FOR`] go, and so do the temporary
//! files of a write that a crash cut short.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How long an entry may go unloaded before it is removed: longer than any
/// rollback to a previous plugin release is likely to wait.
pub const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// How old a temporary file must be to be taken for a crash's leftover
/// rather than a write in progress (of another sluice sharing the cache).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why the cache cannot be used. sluice then compiles every plugin and
/// says why once.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use plugin cache directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin cache directory {path} is not safe to load native code from: {reason}")]
    Unsafe { path: PathBuf, reason: String },
}

/// A cache directory sluice has checked and holds the MAC key of.
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    /// Opens (creating if needed) the cache directory.
    pub fn open(dir: &Path) -> Result<CompileCache, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let meta = fs::symlink_metadata(dir).map_err(io)?;
        let unsafe_because = |reason: &str| CacheError::Unsafe {
            path: dir.to_owned(),
            reason: reason.to_owned(),
        };
        if !meta.is_dir() {
            return Err(unsafe_because("it is not a directory (or is a symlink)"));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(unsafe_because("it belongs to another user"));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(unsafe_because("others may write to it"));
        }
        let key = Self::mac_key(dir)?;
        let cache = CompileCache {
            dir: dir.to_owned(),
            key,
        };
        cache.prune(std::time::SystemTime::now());
        Ok(cache)
    }

    /// Removes the entries not used for [`UNUSED_FOR`] before `now`, and
    /// temporary files abandoned by a crash. Best effort: what cannot be
    /// read or removed is left (and misses, at worst, cost a compile).
    fn prune(&self, now: std::time::SystemTime) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let limit = if name.starts_with(".incoming-") {
                ABANDONED_AFTER
            } else if name.ends_with(".cwasm") {
                UNUSED_FOR
            } else {
                continue;
            };
            let unused_for = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok());
            if unused_for.is_none_or(|unused_for| unused_for < limit) {
                continue;
            }
            if fs::remove_file(entry.path()).is_ok()
                && let Some(key) = name.strip_suffix(".cwasm")
            {
                let _ = fs::remove_file(self.dir.join(format!("{key}.mac")));
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(dir = %self.dir.display(), removed, "removed compiled plugins not used for {} days", UNUSED_FOR.as_secs() / 86_400);
        }
    }

    /// Reads the MAC key, creating it (random, mode 0600) on first use.
    fn mac_key(dir: &Path) -> Result<[u8; 32], CacheError> {
        let path = dir.join("mac.key");
        let io = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let meta = fs::metadata(&path).map_err(io)?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(CacheError::Unsafe {
                        path: path.clone(),
                        reason: "the MAC key is readable by others".to_owned(),
                    });
                }
                bytes.try_into().map_err(|_| CacheError::Unsafe {
                    path: path.clone(),
                    reason: "the MAC key is not 32 bytes".to_owned(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                // create_new: two processes starting at once must not both
                // write; the loser reads the winner's key.
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(mut file) => {
                        file.write_all(&key).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Ok(key)
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::mac_key(dir)
                    }
                    Err(error) => Err(io(error)),
                }
            }
            Err(error) => Err(io(error)),
        }
    }

    /// The cache key of a component for an engine.
    pub fn key_for(engine: &wasmtime::Engine, wasm: &[u8]) -> String {
        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut digest = hasher.0;
        digest.update(Sha256::digest(wasm));
        hex(&digest.finalize())
    }

    /// The compiled bytes stored under `key`, if present and authentic.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(format!("{key}.cwasm"));
        let bytes = fs::read(&path).ok()?;
        let recorded = fs::read(self.dir.join(format!("{key}.mac"))).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(key.as_bytes());
        mac.update(&bytes);
        match mac.verify_slice(&recorded) {
            Ok(()) => {
                // Used now: kept by the next prune.
                let _ = fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                Some(bytes)
            }
            Err(_) => {
                tracing::warn!(
                    entry = key,
                    "plugin cache entry failed its MAC check; compiling afresh"
                );
                None
            }
        }
    }

    /// Stores compiled bytes under `key`. Each file is written to a
    /// temporary name and renamed, so readers see all of it or none.
    pub fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(key.as_bytes());
        mac.update(bytes);
        let tag = mac.finalize().into_bytes();
        self.write_atomically(&format!("{key}.cwasm"), bytes)?;
        self.write_atomically(&format!("{key}.mac"), &tag)
    }

    fn write_atomically(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&self.dir)?;
        temp.write_all(bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(self.dir.join(name))
            .map(drop)
            .map_err(|e| e.error)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Feeds `Hash` output into a SHA-256, for a key that is stable across runs.
struct DigestHasher(Sha256);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$SLUICE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sluice/plugins`, else `~/.cache/sluice/plugins`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("sluice").join("plugins"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("c")).unwrap();
        cache.put("k1", b"compiled code").unwrap();
        assert_eq!(cache.get("k1").as_deref(), Some(&b"compiled code"[..]));
        assert_eq!(cache.get("missing"), None);

        // Changed bytes, a truncated entry, or an entry moved under another
        // key all fail the MAC.
        let entry = cache.dir().join("k1.cwasm");
        fs::write(&entry, b"compiled codE").unwrap();
        assert_eq!(cache.get("k1"), None);
        fs::write(&entry, b"compiled").unwrap();
        assert_eq!(cache.get("k1"), None);
        cache.put("k2", b"other").unwrap();
        fs::copy(cache.dir().join("k2.cwasm"), cache.dir().join("k3.cwasm")).unwrap();
        fs::copy(cache.dir().join("k2.mac"), cache.dir().join("k3.mac")).unwrap();
        assert_eq!(cache.get("k3"), None);

        // A second open reads the same key: entries survive restarts.
        let again = CompileCache::open(cache.dir()).unwrap();
        assert_eq!(again.get("k2").as_deref(), Some(&b"other"[..]));
    }

    /// Entries not loaded for a month go when the cache is opened, with
    /// their MACs, and so do a crashed write's temporary files; an entry
    /// loaded is kept however old it was when stored.
    #[test]
    fn entries_unused_for_a_month_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("c")).unwrap();
        for key in ["old", "used", "new"] {
            cache.put(key, key.as_bytes()).unwrap();
        }
        let leftover = cache.dir().join(".incoming-abc");
        fs::write(&leftover, b"half a write").unwrap();
        let long_ago =
            std::time::SystemTime::now() - UNUSED_FOR - std::time::Duration::from_secs(60);
        for name in ["old.cwasm", "used.cwasm", ".incoming-abc"] {
            fs::File::options()
                .write(true)
                .open(cache.dir().join(name))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        assert!(cache.get("used").is_some(), "loaded now, so kept");

        let again = CompileCache::open(cache.dir()).unwrap();
        assert_eq!(again.get("old"), None);
        assert!(!again.dir().join("old.cwasm").exists());
        assert!(!again.dir().join("old.mac").exists());
        assert!(!leftover.exists());
        assert_eq!(again.get("used").as_deref(), Some(&b"used"[..]));
        assert_eq!(again.get("new").as_deref(), Some(&b"new"[..]));
        assert!(
            again.dir().join("mac.key").exists(),
            "the key is never pruned"
        );
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let error = CompileCache::open(&open).unwrap_err();
        assert!(error.to_string().contains("others may write"), "{error}");
    }
}
