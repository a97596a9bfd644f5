//! Lockout after repeated failed logins (PCI DSS 8.3.4): ten failures for
//! one principal, or from one client address, lock it out for thirty
//! minutes.
//!
//! Both keys count, because they stop different attacks: a principal's
//! count stops guessing one account's token from many addresses; an
//! address's count stops one client spraying guesses over many accounts,
//! nine each. A successful login clears its principal's count, not its
//! address's: a client with one valid account could otherwise reset its
//! address between sprays.
//!
//! While locked, a login is refused before any token is checked, with the
//! same 28P01 as any failure (a client learns nothing it could probe
//! with), and the log says why. The state is in memory, per gateway
//! instance; `sluice` logs every lockout and its end.
//!
//! A login is judged twice: when it starts, and again when its proof is
//! checked ([`Lockouts::check_proof`]). The second is what bounds guessing:
//! a client can open many connections before the lock and hold each until
//! its proof is due, so only the ledger as it stands when a proof is
//! checked may decide whether it is checked at all. For a SCRAM proof
//! (a few hashes) the check, the proof and the count of its failure all
//! happen under the ledger's lock, so parallel proofs are judged one after
//! another and no failure is lost between the check and its count. A
//! bearer token is checked by a plugin call, which cannot run under a
//! lock: it is judged just before the call and its failure counted as soon
//! as the answer is in, with nothing awaited in between.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures that lock a principal or an address out.
pub const MAX_FAILURES: u32 = 10;
/// How long a lockout lasts, and how long a failure is remembered.
pub const LOCKOUT: Duration = Duration::from_secs(30 * 60);
/// Most principals and addresses remembered at once: an attacker cycling
/// through made-up names must not grow the table without bound. When full,
/// the oldest entries that are not locked go first.
const MAX_ENTRIES: usize = 100_000;

/// What a lockout is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Principal(String),
    /// A client's address; an IPv6 one by its /64 (see [`Subject::of_address`]).
    Address(IpAddr),
}

impl Subject {
    /// The subject a failure from `address` counts against. One IPv6 host
    /// is given a /64 and may send from any address in it: keyed by the
    /// whole address, it could try every principal from a fresh address
    /// each time and never be locked out.
    pub fn of_address(address: IpAddr) -> Subject {
        Subject::Address(client_network(address))
    }
}

/// The address that stands for one client: an IPv4 address as it is (also
/// seen through an IPv4-mapped IPv6 one), an IPv6 address by its /64, the
/// network one host is given and may send from anywhere in.
pub fn client_network(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Principal(name) => write!(f, "principal {name:?}"),
            Subject::Address(address @ IpAddr::V4(_)) => write!(f, "address {address}"),
            Subject::Address(address @ IpAddr::V6(_)) => write!(f, "addresses {address}/64"),
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    /// When the count started: failures older than [`LOCKOUT`] are
    /// forgotten.
    since: Instant,
    locked_until: Option<Instant>,
}

/// A lockout in force, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub subject: Subject,
    pub failures: u32,
    pub remaining: Duration,
}

/// The failed-login ledger of one gateway.
#[derive(Debug, Default)]
pub struct Lockouts {
    records: Mutex<HashMap<Subject, Record>>,
}

impl Lockouts {
    /// The lockout that refuses a login of `user` from `address` now, if
    /// one is in force. Without an address (a load balancer's connection
    /// that named no client: its address stands for everyone behind it)
    /// only the principal's count is checked, and counted.
    pub fn check(&self, user: &str, address: Option<IpAddr>) -> Option<Lockout> {
        self.check_at(user, address, Instant::now())
    }

    /// Counts a failed login; returns the lockouts it starts.
    pub fn failed(&self, user: &str, address: Option<IpAddr>) -> Vec<Lockout> {
        self.failed_at(user, address, Instant::now())
    }

    /// Checks a client's proof with `verify` unless `user` or `address` is
    /// locked out at this moment, and counts its failure when `is_guess`
    /// says the error was a wrong credential (not a broken message). The
    /// ledger stays locked from the check to the count: `verify` must be
    /// quick and must not block (a SCRAM proof is a few hashes).
    pub fn check_proof<T, E>(
        &self,
        user: &str,
        address: Option<IpAddr>,
        verify: impl FnOnce() -> Result<T, E>,
        is_guess: impl FnOnce(&E) -> bool,
    ) -> Checked<T, E> {
        self.check_proof_at(user, address, Instant::now(), verify, is_guess)
    }

    /// A successful login clears its principal's count. A lockout in force
    /// stays: a login whose proof was checked before it started must not
    /// lift it.
    pub fn succeeded(&self, user: &str) {
        let mut records = self.lock();
        let subject = Subject::Principal(user.to_owned());
        let now = Instant::now();
        if records
            .get(&subject)
            .is_some_and(|record| record.locked_until.is_none_or(|until| until <= now))
        {
            records.remove(&subject);
        }
    }

    /// Every lockout in force.
    pub fn active(&self) -> Vec<Lockout> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter_map(|(subject, record)| {
                let until = record.locked_until.filter(|until| *until > now)?;
                Some(Lockout {
                    subject: subject.clone(),
                    failures: record.failures,
                    remaining: until - now,
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_at(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Option<Lockout> {
        locked(&mut self.lock(), user, address, now)
    }

    fn failed_at(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Vec<Lockout> {
        count_failure(&mut self.lock(), user, address, now)
    }

    fn check_proof_at<T, E>(
        &self,
        user: &str,
        address: Option<IpAddr>,
        now: Instant,
        verify: impl FnOnce() -> Result<T, E>,
        is_guess: impl FnOnce(&E) -> bool,
    ) -> Checked<T, E> {
        let mut records = self.lock();
        if let Some(lockout) = locked(&mut records, user, address, now) {
            return Checked::Locked(lockout);
        }
        match verify() {
            Ok(value) => Checked::Passed(value),
            Err(error) => {
                let started = if is_guess(&error) {
                    count_failure(&mut records, user, address, now)
                } else {
                    Vec::new()
                };
                Checked::Failed { error, started }
            }
        }
    }
}

/// How a proof checked by [`Lockouts::check_proof`] fared.
#[derive(Debug)]
pub enum Checked<T, E> {
    /// Locked out when the proof was due: it was not checked, and nothing
    /// was counted.
    Locked(Lockout),
    /// The proof was right.
    Passed(T),
    /// The proof was wrong or broken; a wrong one is counted, and
    /// `started` holds the lockouts its count started.
    Failed { error: E, started: Vec<Lockout> },
}

/// The lockout in force for `user` or `address` at `now`, forgetting the
/// ones that ended.
fn locked(
    records: &mut HashMap<Subject, Record>,
    user: &str,
    address: Option<IpAddr>,
    now: Instant,
) -> Option<Lockout> {
    for subject in
        std::iter::once(Subject::Principal(user.to_owned())).chain(address.map(Subject::of_address))
    {
        let Some(record) = records.get(&subject) else {
            continue;
        };
        match record.locked_until {
            Some(until) if until > now => {
                return Some(Lockout {
                    failures: record.failures,
                    remaining: until - now,
                    subject,
                });
            }
            Some(_) => {
                // A principal's name is whatever a client sent as its user
                // (unmasked here): the line names only an address.
                match &subject {
                    Subject::Address(address) => {
                        tracing::warn!(%address, "lockout of an address ended")
                    }
                    Subject::Principal(_) => tracing::warn!("lockout of a principal ended"),
                }
                records.remove(&subject);
            }
            None => {}
        }
    }
    None
}

/// Counts a failure for `user` and for `address`; returns the lockouts it
/// starts.
fn count_failure(
    records: &mut HashMap<Subject, Record>,
    user: &str,
    address: Option<IpAddr>,
    now: Instant,
) -> Vec<Lockout> {
    if records.len() >= MAX_ENTRIES {
        evict(records, now);
    }
    let mut started = Vec::new();
    for subject in
        std::iter::once(Subject::Principal(user.to_owned())).chain(address.map(Subject::of_address))
    {
        let record = records.entry(subject.clone()).or_insert(Record {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if record.locked_until.is_none() && now.duration_since(record.since) > LOCKOUT {
            // The earlier failures are too old to count.
            record.failures = 0;
            record.since = now;
        }
        record.failures = record.failures.saturating_add(1);
        if record.failures >= MAX_FAILURES && record.locked_until.is_none() {
            record.locked_until = Some(now + LOCKOUT);
            started.push(Lockout {
                subject,
                failures: record.failures,
                remaining: LOCKOUT,
            });
        }
    }
    started
}

/// Makes room: forgets expired lockouts and stale counts, then, if still
/// full, the oldest counts that lock nothing. Lockouts in force are kept.
fn evict(records: &mut HashMap<Subject, Record>, now: Instant) {
    records.retain(|_, record| match record.locked_until {
        Some(until) => until > now,
        None => now.duration_since(record.since) <= LOCKOUT,
    });
    if records.len() < MAX_ENTRIES {
        return;
    }
    let mut unlocked: Vec<(Instant, Subject)> = records
        .iter()
        .filter(|(_, r)| r.locked_until.is_none())
        .map(|(s, r)| (r.since, s.clone()))
        .collect();
    unlocked.sort_by_key(|(since, _)| *since);
    let excess = records.len() + 1 - MAX_ENTRIES;
    for (_, subject) in unlocked.into_iter().take(excess.max(MAX_ENTRIES / 10)) {
        records.remove(&subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const AWAY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn ten_failures_lock_a_principal_out_for_thirty_minutes() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 1..MAX_FAILURES {
            // Each from another address: only the principal's count grows.
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, n as u8)));
            assert!(ledger.failed_at("alice", address, start).is_empty());
            assert_eq!(ledger.check_at("alice", HOME, start), None);
        }
        let started = ledger.failed_at("alice", AWAY, start);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].subject, Subject::Principal("alice".into()));
        let locked = ledger
            .check_at("alice", HOME, start + Duration::from_secs(60))
            .expect("locked out");
        assert_eq!(locked.failures, MAX_FAILURES);
        assert_eq!(locked.remaining, LOCKOUT - Duration::from_secs(60));
        // Another principal from the same addresses is not locked.
        assert_eq!(ledger.check_at("bob", HOME, start), None);
        // Thirty minutes on, the lockout is over.
        assert_eq!(ledger.check_at("alice", HOME, start + LOCKOUT), None);
    }

    #[test]
    fn ten_failures_from_one_address_lock_it_out_whoever_it_claims_to_be() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 0..MAX_FAILURES {
            ledger.failed_at(&format!("user{n}"), HOME, start);
        }
        let locked = ledger.check_at("newcomer", HOME, start).expect("locked");
        assert_eq!(locked.subject, Subject::Address(HOME.unwrap()));
        assert_eq!(ledger.check_at("newcomer", AWAY, start), None);
    }

    /// An IPv6 client counts by its /64: fresh addresses in it do not
    /// start fresh counts; another /64 does.
    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        let address = |host: u16| {
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 1, host, 0, 0, host,
            )))
        };
        for n in 0..MAX_FAILURES {
            ledger.failed_at(&format!("user{n}"), address(n as u16 + 1), start);
        }
        let locked = ledger
            .check_at("newcomer", address(999), start)
            .expect("locked");
        assert_eq!(locked.subject.to_string(), "addresses 2001:db8:0:1::/64");
        let elsewhere = Some(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, 2, 0, 0, 0, 1,
        )));
        assert_eq!(ledger.check_at("newcomer", elsewhere, start), None);
        // An IPv4 client seen through an IPv4-mapped address is itself.
        let mapped = "::ffff:10.0.0.1".parse::<IpAddr>().ok();
        ledger.failed_at("x", mapped, start);
        assert_eq!(
            Subject::of_address(mapped.unwrap()),
            Subject::Address(HOME.unwrap())
        );
    }

    #[test]
    fn without_an_address_only_the_principal_counts() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 0..MAX_FAILURES {
            ledger.failed_at(&format!("user{n}"), None, start);
        }
        // Ten principals, one failure each: nothing is locked.
        assert!(ledger.active().is_empty());
        for _ in 1..MAX_FAILURES {
            ledger.failed_at("alice", None, start);
        }
        let started = ledger.failed_at("alice", None, start);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].subject, Subject::Principal("alice".into()));
        assert!(ledger.check_at("alice", None, start).is_some());
        assert_eq!(ledger.check_at("bob", None, start), None);
    }

    #[test]
    fn success_clears_the_principal_not_the_address() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            ledger.failed_at("alice", HOME, start);
        }
        ledger.succeeded("alice");
        assert!(ledger.failed_at("alice", AWAY, start).is_empty());
        // The address kept its nine and locks at the tenth.
        let started = ledger.failed_at("carol", HOME, start);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].subject, Subject::Address(HOME.unwrap()));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            ledger.failed_at("alice", HOME, start);
        }
        let later = start + LOCKOUT + Duration::from_secs(1);
        assert!(ledger.failed_at("alice", HOME, later).is_empty());
        assert_eq!(ledger.check_at("alice", HOME, later), None);
    }

    /// A wrong proof, as SCRAM reports it.
    #[derive(Debug, PartialEq)]
    enum Proof {
        Wrong,
        Malformed,
    }

    #[test]
    fn proofs_are_judged_by_the_ledger_as_it_stands_when_they_are_checked() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        // Twelve logins passed the first check together; their proofs come
        // in later. Ten wrong ones are checked and counted ...
        for n in 0..MAX_FAILURES {
            let checked = ledger.check_proof_at(
                "alice",
                HOME,
                start,
                || Err::<(), _>(Proof::Wrong),
                |e| *e == Proof::Wrong,
            );
            let Checked::Failed { error, started } = checked else {
                panic!("proof {n} was checked: {checked:?}");
            };
            assert_eq!(error, Proof::Wrong);
            assert_eq!(started.len(), if n + 1 == MAX_FAILURES { 2 } else { 0 });
        }
        // ... and from then on no proof is checked, not even a right one.
        let mut checked_after_lock = false;
        for proof in [Err(Proof::Wrong), Ok("right")] {
            let checked = ledger.check_proof_at(
                "alice",
                AWAY,
                start,
                || {
                    checked_after_lock = true;
                    proof
                },
                |e| *e == Proof::Wrong,
            );
            let Checked::Locked(lockout) = checked else {
                panic!("checked after the lock: {checked:?}");
            };
            assert_eq!(lockout.subject, Subject::Principal("alice".into()));
            assert_eq!(lockout.failures, MAX_FAILURES);
        }
        assert!(!checked_after_lock);
    }

    #[test]
    fn only_wrong_proofs_count_and_a_right_one_passes() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES * 2 {
            let checked = ledger.check_proof_at(
                "alice",
                HOME,
                start,
                || Err::<(), _>(Proof::Malformed),
                |e| *e == Proof::Wrong,
            );
            assert!(
                matches!(&checked, Checked::Failed { started, .. } if started.is_empty()),
                "{checked:?}"
            );
        }
        assert_eq!(ledger.check_at("alice", HOME, start), None);
        let checked = ledger.check_proof_at(
            "alice",
            HOME,
            start,
            || Ok::<_, Proof>("right"),
            |e| *e == Proof::Wrong,
        );
        assert!(matches!(checked, Checked::Passed("right")), "{checked:?}");
    }

    #[test]
    fn a_success_does_not_lift_a_lockout_in_force() {
        let ledger = Lockouts::default();
        for _ in 0..MAX_FAILURES {
            ledger.failed("alice", HOME);
        }
        // A login whose proof was checked before the lock finishes after it.
        ledger.succeeded("alice");
        let locked = ledger.check("alice", AWAY).expect("still locked");
        assert_eq!(locked.subject, Subject::Principal("alice".into()));
    }

    #[test]
    fn a_flood_of_names_does_not_grow_the_ledger_without_bound_or_free_a_lockout() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            ledger.failed_at("alice", HOME, start);
        }
        for n in 0..(MAX_ENTRIES + 10) {
            let address = Some(IpAddr::V6(std::net::Ipv6Addr::from(n as u128 + 1)));
            ledger.failed_at(&format!("u{n}"), address, start);
        }
        assert!(ledger.lock().len() <= MAX_ENTRIES);
        assert!(ledger.check_at("alice", AWAY, start).is_some());
    }
}
