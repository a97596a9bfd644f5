//! Connections still logging in, counted per client address.
//!
//! Every connection takes one of `max_connections` slots from the moment
//! it is accepted, and one that never logs in keeps it until the login
//! timeout. Left at that, one host could open connections, send nothing
//! (or trickle bytes) and reconnect, and hold every slot: nobody else could
//! log in, nor could a client whose session dropped log in again. So the
//! connections of one address (an IPv6 /64) logging in at once are bounded;
//! past the bound a new one is refused at once (53300), and the other
//! slots stay free for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The logins in progress per client address.
#[derive(Debug)]
pub struct Logins {
    in_progress: Mutex<HashMap<IpAddr, usize>>,
    per_address: usize,
}

/// One login in progress; its slot is given back when this is dropped.
#[derive(Debug)]
pub struct LoggingIn {
    logins: Arc<Logins>,
    address: IpAddr,
}

impl Logins {
    /// At most `per_address` logins in progress per client address.
    pub fn new(per_address: usize) -> Arc<Logins> {
        Arc::new(Logins {
            in_progress: Mutex::new(HashMap::new()),
            per_address,
        })
    }

    /// A login from `address` begins, unless that address has as many in
    /// progress as it may.
    pub fn begin(self: &Arc<Self>, address: IpAddr) -> Option<LoggingIn> {
        let address = crate::auth::lockout::client_network(address);
        let mut in_progress = self
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = in_progress.entry(address).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(LoggingIn {
            logins: Arc::clone(self),
            address,
        })
    }

    /// Logins in progress from `address`'s client.
    pub fn in_progress(&self, address: IpAddr) -> usize {
        let address = crate::auth::lockout::client_network(address);
        self.in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for LoggingIn {
    fn drop(&mut self) {
        let mut in_progress = self
            .logins
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_progress.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                // An address that logs in no more takes no room.
                in_progress.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_logs_in_up_to_its_bound_and_others_are_not_held_back() {
        let logins = Logins::new(2);
        let one: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let first = logins.begin(one).expect("a slot");
        let second = logins.begin(one).expect("a slot");
        assert!(logins.begin(one).is_none(), "past the bound");
        assert!(logins.begin(other).is_some(), "another address");
        drop(first);
        let third = logins.begin(one).expect("a slot given back");
        drop((second, third));
        assert_eq!(logins.in_progress(one), 0);
        assert!(logins.in_progress.lock().unwrap().is_empty());
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64() {
        let logins = Logins::new(1);
        let held = logins
            .begin("2001:db8:0:1::1".parse().unwrap())
            .expect("a slot");
        assert!(
            logins
                .begin("2001:db8:0:1:ffff::2".parse().unwrap())
                .is_none()
        );
        assert!(logins.begin("2001:db8:0:2::1".parse().unwrap()).is_some());
        drop(held);
    }
}
