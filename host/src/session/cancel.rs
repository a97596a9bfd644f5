//! Cancel keys: the client gets sluice's own BackendKeyData, never the
//! server's, and a CancelRequest carrying it is forwarded to the server
//! backend that session runs on.
//!
//! Keeping the server's key private means a client cannot cancel another
//! session's statements by guessing server pids, and sluice can refuse
//! cancels for sessions it no longer serves.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where a session's statements run upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamKey {
    pub pid: i32,
    pub secret: i32,
}

#[derive(Debug)]
struct Entry {
    secret: i32,
    upstream: UpstreamKey,
}

/// The live sessions' cancel keys.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// Removes the session's key when the session ends, however it ends.
#[derive(Debug)]
pub struct Registration<'a> {
    registry: &'a Registry,
    pub pid: i32,
    pub secret: i32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.pid);
    }
}

impl Registry {
    /// Hands out a fresh (pid, secret) pair for a session whose statements
    /// run on `upstream`.
    pub fn register(&self, upstream: UpstreamKey) -> Registration<'_> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            // Positive pids, as clients expect; random so keys are not
            // guessable from one another.
            let pid = rand::random::<i32>() & i32::MAX;
            if pid == 0 || entries.contains_key(&pid) {
                continue;
            }
            let secret = rand::random::<i32>();
            entries.insert(pid, Entry { secret, upstream });
            return Registration {
                registry: self,
                pid,
                secret,
            };
        }
    }

    /// The upstream backend for a client's cancel key, if the key is live
    /// and the secret matches.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<UpstreamKey> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(&pid)?;
        // The secret is what keeps one client from cancelling another's
        // statements; a wrong one is ignored, as PostgreSQL ignores it.
        (entry.secret == secret).then_some(entry.upstream)
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_upstream_and_expire_with_the_session() {
        let registry = Registry::default();
        let upstream = UpstreamKey { pid: 77, secret: 5 };
        let registration = registry.register(upstream);
        assert!(registration.pid > 0);
        assert_eq!(
            registry.lookup(registration.pid, registration.secret),
            Some(upstream)
        );
        assert_eq!(
            registry.lookup(registration.pid, registration.secret.wrapping_add(1)),
            None
        );
        let pid = registration.pid;
        drop(registration);
        assert!(registry.is_empty());
        assert_eq!(registry.lookup(pid, 5), None);
    }
}
