//! Cancel keys: the client gets sluice's own BackendKeyData, never the
//! server's, and a CancelRequest carrying it is forwarded to the server
//! backend that session runs on.
//!
//! Keeping the server's key private means a client cannot cancel another
//! session's statements by guessing server pids, and sluice can refuse
//! cancels for sessions it no longer serves. A statement sluice itself is
//! holding (for a human's approval) is not on the server yet: a cancel
//! reaches it through the session's [`Registration::cancelled`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The cancel requests a session has been sent, for what sluice itself
/// holds: counted as each arrives, and announced once it has also been
/// forwarded upstream.
#[derive(Debug, Default)]
pub struct Cancels {
    count: AtomicU64,
    /// Wakes a hold waiting on it; nothing when nothing waits.
    pub announced: Notify,
}

impl Cancels {
    /// How many cancel requests have arrived so far: a hold compares this
    /// from its start to its end, so that none is missed between the two.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Counts a cancel request as it arrives.
    pub fn arrived(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }
}

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
    cancelled: Arc<Cancels>,
}

/// What a CancelRequest with a live key reaches.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server backend the session's statements run on.
    pub upstream: UpstreamKey,
    /// What the session holds in sluice (a statement waiting for
    /// approval) hears of the cancel through this.
    pub cancelled: Arc<Cancels>,
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
    /// The cancels sent with this key (see [`Target::cancelled`]).
    pub cancelled: Arc<Cancels>,
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
            let cancelled = Arc::new(Cancels::default());
            entries.insert(
                pid,
                Entry {
                    secret,
                    upstream,
                    cancelled: cancelled.clone(),
                },
            );
            return Registration {
                registry: self,
                pid,
                secret,
                cancelled,
            };
        }
    }

    /// What a client's cancel key reaches, if the key is live and the
    /// secret matches.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Target> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(&pid)?;
        // The secret is what keeps one client from cancelling another's
        // statements; a wrong one is ignored, as PostgreSQL ignores it.
        (entry.secret == secret).then(|| Target {
            upstream: entry.upstream,
            cancelled: entry.cancelled.clone(),
        })
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
        let target = registry
            .lookup(registration.pid, registration.secret)
            .expect("a live key");
        assert_eq!(target.upstream, upstream);
        assert!(Arc::ptr_eq(&target.cancelled, &registration.cancelled));
        assert!(
            registry
                .lookup(registration.pid, registration.secret.wrapping_add(1))
                .is_none()
        );
        let pid = registration.pid;
        drop(registration);
        assert!(registry.is_empty());
        assert!(registry.lookup(pid, 5).is_none());
    }
}
