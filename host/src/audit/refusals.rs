//! Connections turned away before anyone logged in: too many clients, too
//! many logins at once from one address, a login that never finished, a
//! client that broke the protocol, an unusable PROXY header.
//!
//! Each is an access attempt that failed, and goes on the trail (PCI DSS
//! 10.2.1.4) — but these are what a flood is made of, and a record per
//! refused connection would turn a flood into the disk's problem, the very
//! thing the limits are there to prevent. So they are counted per client
//! address and reason, and each count goes on the trail as one
//! `connections_refused` record (how many, first and last) every
//! [`RECORD_EVERY`], and when the gateway stops. Past [`MOST_ADDRESSES`]
//! addresses in one interval, the rest are counted together, by reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often the counts are put on the trail.
pub const RECORD_EVERY: Duration = Duration::from_secs(10);

/// Most client addresses counted apart in one interval.
pub const MOST_ADDRESSES: usize = 1024;

/// Why a connection was turned away before its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// `[listen] max_connections` sessions were open.
    TooManyClients,
    /// `[limits] max_logins_per_address` logins were in progress from its
    /// address.
    TooManyLoginsFromAddress,
    /// The login (or the PROXY header before it) did not finish within
    /// `[limits] login_timeout`.
    LoginTimedOut,
    /// The client broke the protocol before it logged in (what it sent
    /// first was not a PostgreSQL startup, say).
    ProtocolBroken,
    /// A load balancer `[listen] proxy_protocol_from` lists sent no usable
    /// PROXY protocol header.
    ProxyHeaderRefused,
}

impl Refusal {
    /// As the trail says it.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooManyClients => "too many clients",
            Refusal::TooManyLoginsFromAddress => "too many logins in progress from the address",
            Refusal::LoginTimedOut => "login timed out",
            Refusal::ProtocolBroken => "the client broke the protocol before logging in",
            Refusal::ProxyHeaderRefused => "no usable PROXY protocol header",
        }
    }
}

/// Refusals of one address (or of the addresses past the bound, `None`)
/// for one reason, in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub client: Option<IpAddr>,
    pub refusal: Refusal,
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// The counts of the current interval.
#[derive(Debug, Default)]
pub struct RefusedConnections {
    counts: Mutex<HashMap<(Option<IpAddr>, Refusal), Tally>>,
}

impl RefusedConnections {
    /// Counts one connection from `client` refused for `refusal`.
    pub fn note(&self, client: IpAddr, refusal: Refusal) {
        let now = SystemTime::now();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let apart = counts.len() < MOST_ADDRESSES || counts.contains_key(&(Some(client), refusal));
        let client = apart.then_some(client);
        counts
            .entry((client, refusal))
            .and_modify(|tally| {
                tally.count += 1;
                tally.last = now;
            })
            .or_insert(Tally {
                client,
                refusal,
                count: 1,
                first: now,
                last: now,
            });
    }

    /// The interval's counts, oldest first, and a new interval begun.
    pub fn take(&self) -> Vec<Tally> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tallies: Vec<Tally> = counts.into_values().collect();
        tallies.sort_by_key(|tally| (tally.first, tally.client, tally.refusal));
        tallies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_address_and_reason_and_bounded() {
        let refused = RefusedConnections::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            refused.note(a, Refusal::TooManyLoginsFromAddress);
        }
        refused.note(a, Refusal::LoginTimedOut);
        refused.note(b, Refusal::TooManyLoginsFromAddress);
        let tallies = refused.take();
        let counts: Vec<_> = tallies
            .iter()
            .map(|t| (t.client, t.refusal, t.count))
            .collect();
        assert_eq!(
            counts,
            [
                (Some(a), Refusal::TooManyLoginsFromAddress, 3),
                (Some(a), Refusal::LoginTimedOut, 1),
                (Some(b), Refusal::TooManyLoginsFromAddress, 1),
            ]
        );
        assert!(tallies[0].first <= tallies[0].last);
        assert!(refused.take().is_empty(), "a new interval begins empty");

        // A flood from more addresses than are kept apart: the rest are
        // counted together, nothing lost, memory bounded.
        for n in 0..(MOST_ADDRESSES as u32 + 500) {
            refused.note(IpAddr::from(n.to_be_bytes()), Refusal::TooManyClients);
        }
        refused.note(IpAddr::from(1u32.to_be_bytes()), Refusal::TooManyClients);
        let tallies = refused.take();
        assert_eq!(tallies.len(), MOST_ADDRESSES + 1);
        assert_eq!(tallies.iter().map(|t| t.count).sum::<u64>(), 1525);
        let rest = tallies.iter().find(|t| t.client.is_none()).unwrap();
        assert_eq!(rest.count, 500);
    }
}
