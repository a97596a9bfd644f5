//! Connections turned away before anyone logged in: too many clients, too
//! many logins at once from one address, a login that never finished, a
//! client that broke the protocol, a TLS handshake that failed, an
//! unusable PROXY header.
//!
//! Each is an access attempt that failed, and goes on the trail (PCI DSS
//! 10.2.1.4) — but these are what a flood is made of, and a record per
//! refused connection would turn a flood into the disk's problem, the very
//! thing the limits are there to prevent. So they are counted per client
//! address and reason, and each count goes on the trail as one
//! `connections_refused` record (how many, first and last) every
//! [`RECORD_EVERY`], and when the gateway stops. Past [`MOST_COUNTED_APART`]
//! counts in one interval, the rest are counted together, by reason.
//!
//! The address is the client's as sluice knew it when it refused: the
//! client a load balancer's PROXY header named (with the balancer as
//! `via`), or, for a refusal before that header was read (too many
//! clients, an unusable header), the connection's own — the balancer's,
//! behind one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often the counts are put on the trail.
pub const RECORD_EVERY: Duration = Duration::from_secs(10);

/// Most counts (of an address, through a balancer, for a reason) kept
/// apart in one interval.
pub const MOST_COUNTED_APART: usize = 1024;

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
    /// The client asked for TLS and the handshake failed: it sent no
    /// usable hello, offered nothing sluice accepts, or would not trust
    /// sluice's certificate.
    TlsHandshakeFailed,
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
            Refusal::TlsHandshakeFailed => "the TLS handshake failed",
        }
    }
}

/// Refusals of one address (or of the addresses past the bound, `None`)
/// for one reason, in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub client: Option<IpAddr>,
    /// The load balancer the client came through, when its PROXY header
    /// named the client.
    pub via: Option<IpAddr>,
    pub refusal: Refusal,
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// The counts of the current interval.
#[derive(Debug, Default)]
pub struct RefusedConnections {
    counts: Mutex<HashMap<CountOf, Tally>>,
}

/// What a count is of: the client (`None` for those past the bound), the
/// load balancer it came through, the reason.
type CountOf = (Option<IpAddr>, Option<IpAddr>, Refusal);

impl RefusedConnections {
    /// Counts one connection from `client` (through `via`) refused for
    /// `refusal`.
    pub fn note(&self, client: IpAddr, via: Option<IpAddr>, refusal: Refusal) {
        let now = SystemTime::now();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Some(client), via, refusal);
        let apart = counts.len() < MOST_COUNTED_APART || counts.contains_key(&key);
        let (client, via) = if apart { (key.0, key.1) } else { (None, None) };
        counts
            .entry((client, via, refusal))
            .and_modify(|tally| {
                tally.count += 1;
                tally.last = now;
            })
            .or_insert(Tally {
                client,
                via,
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
        tallies.sort_by_key(|tally| (tally.first, tally.client, tally.via, tally.refusal));
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
            refused.note(a, None, Refusal::TooManyLoginsFromAddress);
        }
        refused.note(a, None, Refusal::LoginTimedOut);
        refused.note(b, None, Refusal::TooManyLoginsFromAddress);
        // The same address through a balancer is counted apart.
        refused.note(b, Some(a), Refusal::TooManyLoginsFromAddress);
        let tallies = refused.take();
        let counts: Vec<_> = tallies
            .iter()
            .map(|t| (t.client, t.via, t.refusal, t.count))
            .collect();
        assert_eq!(
            counts,
            [
                (Some(a), None, Refusal::TooManyLoginsFromAddress, 3),
                (Some(a), None, Refusal::LoginTimedOut, 1),
                (Some(b), None, Refusal::TooManyLoginsFromAddress, 1),
                (Some(b), Some(a), Refusal::TooManyLoginsFromAddress, 1),
            ]
        );
        assert!(tallies[0].first <= tallies[0].last);
        assert!(refused.take().is_empty(), "a new interval begins empty");

        // A flood from more addresses than are kept apart: the rest are
        // counted together, nothing lost, memory bounded.
        for n in 0..(MOST_COUNTED_APART as u32 + 500) {
            refused.note(IpAddr::from(n.to_be_bytes()), None, Refusal::TooManyClients);
        }
        refused.note(
            IpAddr::from(1u32.to_be_bytes()),
            None,
            Refusal::TooManyClients,
        );
        let tallies = refused.take();
        assert_eq!(tallies.len(), MOST_COUNTED_APART + 1);
        assert_eq!(tallies.iter().map(|t| t.count).sum::<u64>(), 1525);
        let rest = tallies.iter().find(|t| t.client.is_none()).unwrap();
        assert_eq!(rest.count, 500);
    }
}
