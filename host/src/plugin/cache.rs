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

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

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
        Ok(CompileCache {
            dir: dir.to_owned(),
            key,
        })
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
        let bytes = fs::read(self.dir.join(format!("{key}.cwasm"))).ok()?;
        let recorded = fs::read(self.dir.join(format!("{key}.mac"))).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(key.as_bytes());
        mac.update(&bytes);
        match mac.verify_slice(&recorded) {
            Ok(()) => Some(bytes),
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
