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
//!
//! The ledger is three tables, each with a hard cap ([`MAX_ENTRIES`]), so
//! that no flood of made-up names or addresses can grow it, or buy back a
//! guess at a real principal:
//!
//! - **Principals**: names the static principals or an identity plugin
//!   know ([`Claim::Principal`]). Made-up names never land here, so only
//!   real principals (and, with a bearer-token plugin that cannot tell a
//!   name it does not know, names it was asked about) fill it. Nothing is
//!   evicted from it: when it is full, the failures of every principal
//!   without a record of its own are counted together in one shared record
//!   ([`Subject::OtherPrincipals`]), which locks all of them at the tenth.
//!   That fails closed: a flood can lock principals out for a while (and
//!   the log says so), never wipe a count or lift a lockout.
//! - **Unknown user names** ([`Claim::Unknown`]): a name no principal has
//!   runs its SCRAM exchange against a mock verifier and can never log in.
//!   It is counted and locked exactly like a principal's, so a client
//!   cannot tell a real name from a made-up one by when the gateway stops
//!   answering; but apart, so a flood of them cannot push a principal's
//!   count out. When full, the oldest count that locks nothing goes; when
//!   every record is locked, the lockout that ends soonest. Forgetting a
//!   made-up name frees no guess at any credential; the worst it costs is
//!   that a name locked out can be seen to come free early, after a flood
//!   of a whole table of locked names (a million failed logins) to learn
//!   one name.
//! - **Addresses**: full, they go in the same order. An address's lockout
//!   only holds back whoever sends from it, and an attacker who can fill
//!   the table from its own addresses has more fresh ones than any lockout
//!   it could free; the principals' counts still bound guesses at each.
//!
//! Every table keeps its records ordered by when they may go, so making
//! room is one removal at the front (`O(log n)`) under the ledger's lock,
//! nothing copied or sorted table-wide. User names are at most 63 bytes
//! (startup refuses longer ones), so a full ledger stays within tens of
//! megabytes.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures that lock a principal or an address out.
pub const MAX_FAILURES: u32 = 10;
/// How long a lockout lasts, and how long a failure is remembered.
pub const LOCKOUT: Duration = Duration::from_secs(30 * 60);
/// Most records each table of the ledger holds (principals, unknown user
/// names, addresses): see the module's documentation for what happens
/// when one is full.
pub const MAX_ENTRIES: usize = 100_000;

/// What a failed login's user name is to the gateway, as the login found
/// out: where its failure is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A principal's name: the static principals or an identity plugin
    /// know it (a stored verifier, or a bearer token judged wrong rather
    /// than unknown). When in doubt, this: it fails closed.
    Principal,
    /// A name no principal has (every identity source said so): it can
    /// never log in.
    Unknown,
}

/// What a lockout is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Principal(String),
    /// A user name no principal has, as the client sent it.
    UnknownUser(String),
    /// Every principal without a record of its own, counted together while
    /// the principals' table is full.
    OtherPrincipals,
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
            Subject::UnknownUser(name) => write!(f, "unknown user {name:?}"),
            Subject::OtherPrincipals => {
                write!(
                    f,
                    "every principal without a count of its own (the ledger is full)"
                )
            }
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

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            since: now,
            locked_until: None,
        }
    }

    /// Whether the record still counts at `now`: a lockout in force, or
    /// failures not yet too old.
    fn live(&self, now: Instant) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => now.duration_since(self.since) <= LOCKOUT,
        }
    }

    /// The lockout in force at `now`: how long it has to run.
    fn in_force(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Counts one failure at `now`, and says whether it started a
    /// lockout.
    fn count(&mut self, now: Instant) -> Count {
        if !self.live(now) {
            // The earlier failures are too old to count, or their
            // lockout is over.
            *self = Record::new(now);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= MAX_FAILURES && self.locked_until.is_none() {
            self.locked_until = Some(now + LOCKOUT);
            return Count::Started(self.failures);
        }
        Count::Counted
    }
}

/// A lockout in force, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub subject: Subject,
    pub failures: u32,
    pub remaining: Duration,
}

/// The failed-login ledger of one gateway.
#[derive(Debug)]
pub struct Lockouts {
    ledger: Mutex<Ledger>,
}

impl Default for Lockouts {
    fn default() -> Self {
        Lockouts::with_capacity(MAX_ENTRIES)
    }
}

impl Lockouts {
    /// A ledger whose tables hold at most `cap` records each.
    fn with_capacity(cap: usize) -> Lockouts {
        Lockouts {
            ledger: Mutex::new(Ledger {
                principals: Table::new(cap, |name| Subject::Principal(name.clone())),
                others: None,
                unknown: Table::new(cap, |name| Subject::UnknownUser(name.clone())),
                addresses: Table::new(cap, |address| Subject::Address(*address)),
            }),
        }
    }

    /// The lockout that refuses a login of `user` from `address` now, if
    /// one is in force. Without an address (a load balancer's connection
    /// that named no client: its address stands for everyone behind it)
    /// only the user name's count is checked, and counted. Whether `user`
    /// is a principal's need not be known yet: every count of the name is
    /// checked.
    pub fn check(&self, user: &str, address: Option<IpAddr>) -> Option<Lockout> {
        self.check_at(user, address, Instant::now())
    }

    /// Counts a failed login of `user`, a name `claim` says what it is;
    /// returns the lockouts it starts.
    pub fn failed(&self, user: &str, claim: Claim, address: Option<IpAddr>) -> Vec<Lockout> {
        self.failed_at(user, claim, address, Instant::now())
    }

    /// Checks a client's proof with `verify` unless `user` or `address` is
    /// locked out at this moment, and counts its failure (against `user`
    /// as `claim` says) when `is_guess` says the error was a wrong
    /// credential (not a broken message). The ledger stays locked from the
    /// check to the count: `verify` must be quick and must not block (a
    /// SCRAM proof is a few hashes).
    pub fn check_proof<T, E>(
        &self,
        user: &str,
        claim: Claim,
        address: Option<IpAddr>,
        verify: impl FnOnce() -> Result<T, E>,
        is_guess: impl FnOnce(&E) -> bool,
    ) -> Checked<T, E> {
        self.check_proof_at(user, claim, address, Instant::now(), verify, is_guess)
    }

    /// A successful login clears its user name's counts. A lockout in
    /// force stays: a login whose proof was checked before it started must
    /// not lift it.
    pub fn succeeded(&self, user: &str) {
        let now = Instant::now();
        let mut ledger = self.lock();
        if ledger
            .others
            .as_ref()
            .is_some_and(|others| others.live(now))
        {
            // Without its record the principal would be judged by the
            // shared one: its count starts again, in its own record.
            ledger.principals.update(user, |record| {
                if record.in_force(now).is_none() {
                    *record = Record::new(now);
                }
            });
        } else {
            ledger.principals.clear(user, now);
        }
        ledger.unknown.clear(user, now);
    }

    /// Every lockout in force.
    pub fn active(&self) -> Vec<Lockout> {
        let now = Instant::now();
        let ledger = self.lock();
        let others = ledger.others.iter().filter_map(|record| {
            Some(Lockout {
                subject: Subject::OtherPrincipals,
                failures: record.failures,
                remaining: record.in_force(now)?,
            })
        });
        ledger
            .principals
            .active(now)
            .chain(others)
            .chain(ledger.unknown.active(now))
            .chain(ledger.addresses.active(now))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_at(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Option<Lockout> {
        self.lock().locked(user, address, now)
    }

    fn failed_at(
        &self,
        user: &str,
        claim: Claim,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Vec<Lockout> {
        self.lock().count_failure(user, claim, address, now)
    }

    fn check_proof_at<T, E>(
        &self,
        user: &str,
        claim: Claim,
        address: Option<IpAddr>,
        now: Instant,
        verify: impl FnOnce() -> Result<T, E>,
        is_guess: impl FnOnce(&E) -> bool,
    ) -> Checked<T, E> {
        let mut ledger = self.lock();
        if let Some(lockout) = ledger.locked(user, address, now) {
            return Checked::Locked(lockout);
        }
        match verify() {
            Ok(value) => Checked::Passed(value),
            Err(error) => {
                let started = if is_guess(&error) {
                    ledger.count_failure(user, claim, address, now)
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

/// The ledger's tables (see the module's documentation).
#[derive(Debug)]
struct Ledger {
    principals: Table<String>,
    /// The failures of principals without a record of their own, counted
    /// together from when the principals' table was full until they are
    /// forgotten (thirty minutes after the count started, or its lockout
    /// ended): while it lives, every principal without a record is judged
    /// by it and counted in it, even once the table has room again, so no
    /// principal gets a fresh count of ten for the failures it had here.
    others: Option<Record>,
    unknown: Table<String>,
    addresses: Table<IpAddr>,
}

impl Ledger {
    /// The lockout in force for `user` or `address` at `now`, forgetting
    /// the ones that ended.
    fn locked(&mut self, user: &str, address: Option<IpAddr>, now: Instant) -> Option<Lockout> {
        let principal = if self.principals.contains(user) {
            self.principals.judge(user, now)
        } else {
            self.judge_others(now)
        };
        if let Some(lockout) = principal.or_else(|| self.unknown.judge(user, now)) {
            return Some(lockout);
        }
        self.addresses.judge(&client_network(address?), now)
    }

    /// The shared principals' lockout in force, forgetting it once over.
    fn judge_others(&mut self, now: Instant) -> Option<Lockout> {
        let record = self.others.as_ref()?;
        if let Some(remaining) = record.in_force(now) {
            return Some(Lockout {
                subject: Subject::OtherPrincipals,
                failures: record.failures,
                remaining,
            });
        }
        if !record.live(now) {
            if record.locked_until.is_some() {
                log_ended(&Subject::OtherPrincipals);
            }
            self.others = None;
        }
        None
    }

    /// Counts a failure for `user` and for `address`; returns the
    /// lockouts it starts.
    fn count_failure(
        &mut self,
        user: &str,
        claim: Claim,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Vec<Lockout> {
        let mut started = Vec::new();
        started.extend(match claim {
            Claim::Principal => self.count_principal(user, now),
            Claim::Unknown => self
                .unknown
                .count(user, now, Full::Evict)
                .lockout(|| Subject::UnknownUser(user.to_owned())),
        });
        if let Some(address) = address {
            let network = client_network(address);
            started.extend(
                self.addresses
                    .count(&network, now, Full::Evict)
                    .lockout(|| Subject::Address(network)),
            );
        }
        started
    }

    /// Counts a principal's failure: in its own record, or, when the
    /// principals' table has no room for one, in the shared record.
    fn count_principal(&mut self, user: &str, now: Instant) -> Option<Lockout> {
        let others_live = self.others.as_ref().is_some_and(|record| record.live(now));
        if !others_live && self.others.take().is_some_and(|r| r.locked_until.is_some()) {
            log_ended(&Subject::OtherPrincipals);
        }
        if others_live && !self.principals.contains(user) {
            return self.count_others(now);
        }
        match self.principals.count(user, now, Full::Refuse) {
            Count::NoRoom => {
                tracing::warn!(
                    alert = true,
                    max = self.principals.cap,
                    "the failed-login ledger has no room for another principal: the failures of principals without a count of their own are counted together, and ten lock all of them out"
                );
                self.count_others(now)
            }
            counted => counted.lockout(|| Subject::Principal(user.to_owned())),
        }
    }

    fn count_others(&mut self, now: Instant) -> Option<Lockout> {
        self.others
            .get_or_insert_with(|| Record::new(now))
            .count(now)
            .lockout(|| Subject::OtherPrincipals)
    }
}

/// What a table does with a new record when it is full (after forgetting
/// what is too old to count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// Makes room: the oldest count that locks nothing goes, or, when
    /// every record is locked, the lockout that ends soonest.
    Evict,
    /// Takes no new record: the caller counts the failure elsewhere.
    Refuse,
}

/// What [`Table::count`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Counted; no lockout started.
    Counted,
    /// Counted, and a lockout started after this many failures.
    Started(u32),
    /// Not counted: the table is full and refuses new records.
    NoRoom,
}

impl Count {
    /// The lockout of `subject` this count started, if it started one.
    fn lockout(self, subject: impl FnOnce() -> Subject) -> Option<Lockout> {
        match self {
            Count::Started(failures) => Some(Lockout {
                subject: subject(),
                failures,
                remaining: LOCKOUT,
            }),
            Count::Counted | Count::NoRoom => None,
        }
    }
}

/// Records of a table by an instant (with the record's ticket, which tells
/// apart records of the same instant), for their keys.
type Order<K> = BTreeMap<(Instant, u64), K>;

/// One table of the ledger: records by key, and the order in which they
/// may go.
#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Entry>,
    /// Records that lock nothing, by when their count started.
    counting: Order<K>,
    /// Locked records, by when their lockout ends.
    locked: Order<K>,
    /// The ticket of the next record.
    next: u64,
    /// Most records held.
    cap: usize,
    /// What a key locks out, as operators see it.
    subject: fn(&K) -> Subject,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    ticket: u64,
}

impl<K: Clone + Eq + Hash> Table<K> {
    fn new(cap: usize, subject: fn(&K) -> Subject) -> Table<K> {
        Table {
            records: HashMap::new(),
            counting: BTreeMap::new(),
            locked: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
            subject,
        }
    }

    /// Where a record sits in the order: which map, at which key.
    fn place(&mut self, record: &Record, ticket: u64) -> (&mut Order<K>, (Instant, u64)) {
        match record.locked_until {
            Some(until) => (&mut self.locked, (until, ticket)),
            None => (&mut self.counting, (record.since, ticket)),
        }
    }

    fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.contains_key(key)
    }

    /// The lockouts in force at `now`.
    fn active(&self, now: Instant) -> impl Iterator<Item = Lockout> + '_ {
        self.records.iter().filter_map(move |(key, entry)| {
            Some(Lockout {
                remaining: entry.record.in_force(now)?,
                failures: entry.record.failures,
                subject: (self.subject)(key),
            })
        })
    }

    /// The lockout in force for `key` at `now`, forgetting one that ended.
    fn judge<Q>(&mut self, key: &Q, now: Instant) -> Option<Lockout>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (owned, entry) = self.records.get_key_value(key)?;
        let record = &entry.record;
        if let Some(remaining) = record.in_force(now) {
            return Some(Lockout {
                subject: (self.subject)(owned),
                failures: record.failures,
                remaining,
            });
        }
        if record.locked_until.is_some() {
            log_ended(&(self.subject)(owned));
            self.remove(key);
        }
        None
    }

    /// Changes the record of `key` with `change`, and moves it to its new
    /// place in the order; `None` when there is no record.
    fn update<Q, T>(&mut self, key: &Q, change: impl FnOnce(&mut Record) -> T) -> Option<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.records.get_mut(key)?;
        let ticket = entry.ticket;
        let before = entry.record.clone();
        let answer = change(&mut entry.record);
        let after = entry.record.clone();
        let (order, at) = self.place(&before, ticket);
        let owned = order
            .remove(&at)
            .expect("every record has its place in the order");
        let (order, at) = self.place(&after, ticket);
        order.insert(at, owned);
        Some(answer)
    }

    /// Forgets the count of `key` unless it holds a lockout in force.
    fn clear<Q>(&mut self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self
            .records
            .get(key)
            .is_some_and(|entry| entry.record.in_force(now).is_none())
        {
            self.remove(key);
        }
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(Entry { record, ticket }) = self.records.remove(key) {
            let (order, at) = self.place(&record, ticket);
            order.remove(&at);
        }
    }

    /// Counts a failure against `key`, in its record or a new one.
    fn count<Q>(&mut self, key: &Q, now: Instant, full: Full) -> Count
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.forget_stale(now);
        if let Some(counted) = self.update(key, |record| record.count(now)) {
            return counted;
        }
        if self.records.len() >= self.cap {
            if full == Full::Refuse {
                return Count::NoRoom;
            }
            // Counts that lock nothing go first, the oldest first; then
            // the lockout that ends soonest (the module's documentation
            // says why that is safe in the tables that evict).
            let victim = match self.counting.pop_first() {
                Some((_, victim)) => victim,
                None => {
                    let (_, victim) = self.locked.pop_first().expect("a full table holds records");
                    tracing::warn!(
                        locked = %for_log(&(self.subject)(&victim)),
                        max = self.cap,
                        "the failed-login ledger is full of lockouts: the one that ends soonest is forgotten early"
                    );
                    victim
                }
            };
            self.records.remove::<K>(&victim);
        }
        let mut record = Record::new(now);
        let counted = record.count(now);
        let ticket = self.next;
        self.next += 1;
        let owned = key.to_owned();
        let (order, at) = self.place(&record, ticket);
        order.insert(at, owned.clone());
        self.records.insert(owned, Entry { record, ticket });
        counted
    }

    /// Forgets counts too old to count and lockouts that ended: those at
    /// the front of the order, one removal each.
    fn forget_stale(&mut self, now: Instant) {
        while let Some((&(since, _), _)) = self.counting.first_key_value() {
            if now.duration_since(since) <= LOCKOUT {
                break;
            }
            if let Some((_, key)) = self.counting.pop_first() {
                self.records.remove(&key);
            }
        }
        while let Some((&(until, _), _)) = self.locked.first_key_value() {
            if until > now {
                break;
            }
            if let Some((_, key)) = self.locked.pop_first() {
                log_ended(&(self.subject)(&key));
                self.records.remove(&key);
            }
        }
    }
}

/// A subject as the log may name it: a user name is whatever a client
/// sent (unmasked here), so only an address is named.
fn for_log(subject: &Subject) -> String {
    match subject {
        Subject::Principal(_) => "a principal".to_owned(),
        Subject::UnknownUser(_) => "an unknown user name".to_owned(),
        other => other.to_string(),
    }
}

/// Logs a lockout's end.
fn log_ended(subject: &Subject) {
    match subject {
        Subject::Address(address) => tracing::warn!(%address, "lockout of an address ended"),
        other => tracing::warn!(locked = %for_log(other), "lockout ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const AWAY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));
    const KNOWN: Claim = Claim::Principal;
    const UNKNOWN: Claim = Claim::Unknown;

    /// The `n`th IPv4 address of 10.1/16 (or 10.2/16 ...): one client each.
    fn v4(n: usize) -> Option<IpAddr> {
        let n = n as u32 + 1;
        Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + n)))
    }

    /// An address in the `n`th /64 of 2001:db8::/32.
    fn in_64(n: usize) -> Option<IpAddr> {
        let network = (0x2001_0db8_u128 << 96) | ((n as u128) << 64);
        Some(IpAddr::V6(std::net::Ipv6Addr::from(network | 0x1234)))
    }

    fn sizes(ledger: &Lockouts) -> (usize, usize, usize) {
        let ledger = ledger.lock();
        (
            ledger.principals.records.len(),
            ledger.unknown.records.len(),
            ledger.addresses.records.len(),
        )
    }

    #[test]
    fn ten_failures_lock_a_principal_out_for_thirty_minutes() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 1..MAX_FAILURES {
            // Each from another address: only the principal's count grows.
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, n as u8)));
            assert!(ledger.failed_at("alice", KNOWN, address, start).is_empty());
            assert_eq!(ledger.check_at("alice", HOME, start), None);
        }
        let started = ledger.failed_at("alice", KNOWN, AWAY, start);
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
        for claim in [KNOWN, UNKNOWN] {
            let ledger = Lockouts::default();
            let start = Instant::now();
            for n in 0..MAX_FAILURES {
                ledger.failed_at(&format!("user{n}"), claim, HOME, start);
            }
            let locked = ledger.check_at("newcomer", HOME, start).expect("locked");
            assert_eq!(locked.subject, Subject::Address(HOME.unwrap()), "{claim:?}");
            assert_eq!(ledger.check_at("newcomer", AWAY, start), None);
        }
    }

    /// A made-up name is locked out after ten failures as a principal's is,
    /// for as long: when the gateway stops answering tells a client nothing
    /// about which names are real. (Its count is kept apart, below.)
    #[test]
    fn an_unknown_name_is_locked_out_as_a_principal_is() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 0..MAX_FAILURES as usize {
            ledger.failed_at("alice", KNOWN, v4(n), start);
            ledger.failed_at("mallory", UNKNOWN, v4(100 + n), start);
        }
        let later = start + Duration::from_secs(60);
        let alice = ledger.check_at("alice", AWAY, later).expect("locked");
        let mallory = ledger.check_at("mallory", AWAY, later).expect("locked");
        assert_eq!(mallory.subject, Subject::UnknownUser("mallory".into()));
        assert_eq!(
            (alice.failures, alice.remaining),
            (mallory.failures, mallory.remaining)
        );
        // A name is judged by every count it has, whatever it turns out
        // to be: the check comes before anyone knows.
        assert!(ledger.check_at("mallory", None, later).is_some());
        assert_eq!(ledger.check_at("mallory", None, start + LOCKOUT), None);
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
            ledger.failed_at(&format!("user{n}"), UNKNOWN, address(n as u16 + 1), start);
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
        ledger.failed_at("x", UNKNOWN, mapped, start);
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
            ledger.failed_at(&format!("user{n}"), KNOWN, None, start);
        }
        // Ten principals, one failure each: nothing is locked.
        assert!(ledger.active().is_empty());
        for _ in 1..MAX_FAILURES {
            ledger.failed_at("alice", KNOWN, None, start);
        }
        let started = ledger.failed_at("alice", KNOWN, None, start);
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
            ledger.failed_at("alice", KNOWN, HOME, start);
        }
        ledger.succeeded("alice");
        assert!(ledger.failed_at("alice", KNOWN, AWAY, start).is_empty());
        // The address kept its nine and locks at the tenth.
        let started = ledger.failed_at("carol", KNOWN, HOME, start);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].subject, Subject::Address(HOME.unwrap()));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            ledger.failed_at("alice", KNOWN, HOME, start);
        }
        let later = start + LOCKOUT + Duration::from_secs(1);
        assert!(ledger.failed_at("alice", KNOWN, HOME, later).is_empty());
        assert_eq!(ledger.check_at("alice", HOME, later), None);
    }

    /// A failure counted just as a lockout ends starts a new count, and
    /// nine more lock again: a lockout over is not a count stuck at ten.
    #[test]
    fn a_failure_after_a_lockout_ends_starts_a_new_count() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            ledger.failed_at("alice", KNOWN, None, start);
        }
        let after = start + LOCKOUT;
        for n in 1..MAX_FAILURES {
            assert!(
                ledger.failed_at("alice", KNOWN, None, after).is_empty(),
                "{n}"
            );
        }
        let started = ledger.failed_at("alice", KNOWN, None, after);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].failures, MAX_FAILURES);
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
                KNOWN,
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
                KNOWN,
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
                KNOWN,
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
            KNOWN,
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
            ledger.failed("alice", KNOWN, HOME);
        }
        // A login whose proof was checked before the lock finishes after it.
        ledger.succeeded("alice");
        let locked = ledger.check("alice", AWAY).expect("still locked");
        assert_eq!(locked.subject, Subject::Principal("alice".into()));
    }

    /// The review's attack: nine guesses at a principal, then failed
    /// logins under made-up names from a /48's worth of /64s, ten from
    /// each, more than the ledger holds. The principal's nine stand, and
    /// the tenth guess locks it out; every table stays within its cap.
    #[test]
    fn a_flood_of_made_up_names_cannot_wipe_a_principal_s_count() {
        let ledger = Lockouts::default();
        let start = Instant::now();
        for n in 0..MAX_FAILURES as usize - 1 {
            ledger.failed_at("victim", KNOWN, v4(n), start);
        }
        let names = MAX_ENTRIES + MAX_ENTRIES / 10;
        for n in 0..names {
            let at = start + Duration::from_millis(n as u64 / 100);
            ledger.failed_at(&format!("u{n}"), UNKNOWN, in_64(n / 10), at);
        }
        let later = start + Duration::from_secs(60);
        let started = ledger.failed_at("victim", KNOWN, AWAY, later);
        assert!(
            started
                .iter()
                .any(|l| l.subject == Subject::Principal("victim".into())),
            "{started:?}"
        );
        assert!(ledger.check_at("victim", HOME, later).is_some());
        // Each /64 locked itself at its tenth name.
        assert!(ledger.check_at("anyone", in_64(5), later).is_some());
        let (principals, unknown, addresses) = sizes(&ledger);
        assert_eq!(principals, 1);
        assert_eq!(unknown, MAX_ENTRIES);
        assert!(addresses <= MAX_ENTRIES, "{addresses}");
    }

    /// A table that evicts (unknown names, addresses) drops one record to
    /// make room: the oldest count that locks nothing first; when every
    /// record is locked, the lockout that ends soonest. It never holds
    /// more than its cap.
    #[test]
    fn a_full_table_drops_the_oldest_count_then_the_lockout_ending_soonest() {
        let ledger = Lockouts::with_capacity(4);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        // Two names locked (at 0 s and at 1 s), two counting (at 2 s, 3 s).
        for (name, second, failures) in [("l0", 0, 10), ("l1", 1, 10), ("c2", 2, 1), ("c3", 3, 1)] {
            for _ in 0..failures {
                ledger.failed_at(name, UNKNOWN, None, at(second));
            }
        }
        ledger.failed_at("c4", UNKNOWN, None, at(4));
        let names = |ledger: &Lockouts| {
            let mut names: Vec<String> = ledger.lock().unknown.records.keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(names(&ledger), ["c3", "c4", "l0", "l1"]);
        // Every record locked: the lockout that ends soonest goes.
        for name in ["c3", "c4"] {
            for _ in 1..MAX_FAILURES {
                ledger.failed_at(name, UNKNOWN, None, at(5));
            }
        }
        for _ in 0..MAX_FAILURES {
            ledger.failed_at("l5", UNKNOWN, None, at(6));
        }
        assert_eq!(names(&ledger), ["c3", "c4", "l1", "l5"]);
        assert!(ledger.check_at("l1", None, at(6)).is_some());
        assert!(ledger.check_at("l5", None, at(6)).is_some());
        // The order stays whole: every record has its one place.
        let ledger = ledger.lock();
        let table = &ledger.unknown;
        assert_eq!(
            table.counting.len() + table.locked.len(),
            table.records.len()
        );
    }

    /// The principals' table evicts nothing: full, it counts the failures
    /// of principals without a record of their own together, and ten of
    /// them lock all those principals out. No principal's lockout is
    /// lifted or count wiped, and the table stays within its cap.
    #[test]
    fn a_full_principals_table_fails_closed() {
        let ledger = Lockouts::with_capacity(4);
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            ledger.failed_at("locked", KNOWN, None, start);
        }
        for name in ["p1", "p2", "p3"] {
            for _ in 0..MAX_FAILURES - 1 {
                ledger.failed_at(name, KNOWN, None, start);
            }
        }
        for n in 0..MAX_FAILURES - 1 {
            assert!(
                ledger
                    .failed_at(&format!("new{n}"), KNOWN, None, start)
                    .is_empty()
            );
            assert_eq!(ledger.check_at("anyone", None, start), None);
        }
        let started = ledger.failed_at("new9", KNOWN, None, start);
        assert_eq!(started[0].subject, Subject::OtherPrincipals);
        assert_eq!(sizes(&ledger).0, 4);
        // Every name without a record of its own is locked, known or not.
        for name in ["new0", "anyone", "mallory"] {
            let locked = ledger.check_at(name, None, start).expect("locked");
            assert_eq!(locked.subject, Subject::OtherPrincipals);
        }
        // The principals with records keep them: their own counts judge.
        assert!(ledger.check_at("locked", None, start).is_some());
        assert_eq!(ledger.check_at("p1", None, start), None);
        let started = ledger.failed_at("p1", KNOWN, None, start);
        assert_eq!(started[0].subject, Subject::Principal("p1".into()));
        // A success keeps the principal's record (its count starts again):
        // it is not thrown to the shared lockout.
        ledger.succeeded("p2");
        assert_eq!(ledger.check_at("p2", None, start), None);
        // The shared lockout ends as any other does.
        assert_eq!(ledger.check_at("anyone", None, start + LOCKOUT), None);
    }

    /// Principals counted together stay together while that count lives,
    /// even once the table has room: none gets a fresh count of ten for
    /// the failures it had there.
    #[test]
    fn the_shared_count_lives_on_once_the_table_has_room() {
        let ledger = Lockouts::with_capacity(1);
        let start = Instant::now();
        ledger.failed_at("p0", KNOWN, None, start);
        let later = start + Duration::from_secs(60);
        for _ in 0..MAX_FAILURES - 1 {
            ledger.failed_at("q", KNOWN, None, later);
        }
        // p0's count is too old now, the table has room; q's nine are
        // still counted in the shared record, and the tenth locks.
        let after = start + LOCKOUT + Duration::from_secs(1);
        let started = ledger.failed_at("q", KNOWN, None, after);
        assert_eq!(started[0].subject, Subject::OtherPrincipals);
    }
}
