//! The audit file writer: one thread, group commit, the head, rotation and
//! recovery after a crash.
//!
//! # One writer, many sessions
//!
//! Every session must have its statement's record durable before the
//! statement runs, and a durable write costs an `fdatasync` — milliseconds
//! on real disks. One sync per statement would cap the gateway at a few
//! hundred statements a second, so records are written in *group commits*:
//! a dedicated OS thread (`sluice-audit`) owns the files; sessions hand it
//! their events through a channel and wait. The thread blocks for the first
//! request, then takes everything else already queued, seals all of it into
//! one buffer, writes it with one `write`, syncs once, updates the head and
//! answers every waiter. While it syncs, the next group gathers in the
//! channel, so the more sessions wait, the more one sync carries.
//!
//! The thread is a plain OS thread rather than a tokio task because
//! `fdatasync` blocks for as long as the disk takes; on a runtime worker it
//! would stall unrelated sessions. Callers only await a oneshot answer.
//!
//! # Who writes
//!
//! Under [`Fsync::Always`] the thread does, as above. Under
//! [`Fsync::Batch`] there is nothing slow to wait for — a copy into the
//! page cache takes microseconds — and handing each record to another
//! thread and waking the session again cost more than the write (measured:
//! two futex wake-ups and a runtime park per record were most of the
//! trail's CPU). So under `Batch` the caller seals and writes its record
//! itself, under the lock that keeps the chain in order; records from
//! sessions on other threads queue on the lock, not on a channel. A
//! statement's outcome record, which no one waits for, is held back and
//! written with the next statement's record — one copy into the file and
//! one head write for both — or by the thread within [`DEFERRED_FLUSH`] when no
//! statement comes; holding it back takes a lock of its own, not the
//! files'. The thread remains for that and for closing.
//!
//! # Durability: the `fsync` setting
//!
//! - [`Fsync::Always`] (the default): a record is acknowledged once its
//!   group's lines are written and `fdatasync`ed, and the head written
//!   (a group of outcome records alone, which no one waits for, is synced
//!   by the next commit, or by the writer within [`UNSYNCED_FLUSH`]; the
//!   head names records only once they are synced, so a power loss never
//!   leaves a head naming records the disk lost). It
//!   survives a crash of sluice and a power loss or kernel crash (given a
//!   disk that honours flushes). The head is synced too, but at most once
//!   every [`HEAD_SYNC_INTERVAL`] (and when the log closes): a second sync
//!   per commit would halve what one sync carries, and the head only guards
//!   against records cut off the end. After a power loss it may name an
//!   earlier record than the last one on disk; those records verify under
//!   the key, and sluice adopts them when it starts again ("records beyond
//!   the head", below).
//! - [`Fsync::Batch`]: a record is acknowledged once its lines are in the
//!   page cache and the head's write returned. It survives a crash of sluice (the kernel
//!   holds the data), not of the machine: a power loss may take the last
//!   seconds. Outcome records reach the kernel up to [`DEFERRED_FLUSH`]
//!   later: a crash of sluice may take the outcomes of its last
//!   milliseconds, never a statement's record.
//!
//! Under `Batch` the kernel writes the file and the head back in any order,
//! so after a power loss the head may name records that never reached the
//! disk. sluice then refuses to start ("cut short", below): it cannot tell
//! that from a file cut by hand, and the operator must look. Rotation syncs
//! the finished file and the directory under both settings (it is rare);
//! so does opening the log, once.
//!
//! # Preallocation
//!
//! An `fdatasync` of a file that grew must also commit the filesystem's
//! journal (the file's size changed); one that only overwrote allocated
//! space flushes the data alone — measured here, 531 µs against 125 µs per
//! synced 700-byte record. So the active file is extended ahead of its
//! records with `posix_fallocate`, [`PREALLOCATE`] bytes at a time, as
//! PostgreSQL keeps its WAL segments allocated ahead; records are written
//! in place at the end of the data. Allocated space reads as zeros, and no
//! record line holds a NUL byte, so the data ends at the first NUL: readers
//! ([`RecordLines`], [`data_len`]) stop there, and anything but zeros after
//! it is reported. A file that is finished — rotated, or closed — is
//! trimmed to its records. Where space cannot be allocated (a device, a
//! filesystem without the call), records are appended as they come.
//!
//! Records are not written into the allocated space with `pwrite(2)` but
//! copied into a shared mapping of it (a window of a few MiB; see
//! `window.rs`): the same page cache, so the same durability under both
//! settings, without a system call per commit. Where the file cannot be
//! mapped, or a commit's lines do not fit the space allocated, they are
//! written as before.
//!
//! # The head
//!
//! A keyed chain shows any changed, inserted, deleted or reordered record,
//! but not a file cut short at a record boundary. So after every group
//! commit the chain's head (last `seq` and `mac`, MACed with the key; see
//! [`chain::head_line`]) is written, in the same commit, to a separate head
//! file. The file holds two slots of one fixed-length line each, and a head
//! is copied, through a shared mapping like the records, into the first
//! slot, then the second: a copy a crash interrupts tears only the slot it
//! was writing, and the other keeps a whole head (see `head.rs`). Where the
//! file cannot be mapped, both slots are written with one `pwrite`. The head is also logged
//! (`tracing::info!`) at most once a minute: a second anchor, kept wherever
//! the logs go.
//!
//! # Rotation
//!
//! After a commit, when the active file is larger than `rotate_bytes` or
//! older than `rotate_after` (or once it is that old, if nothing comes),
//! it is synced, closed and renamed to
//! `<path>.NNNNNN` (the next number after the highest there, six digits at
//! least so names sort), and a fresh active file continues the same chain:
//! its first record's `prev` is the last `mac` of the rotated file and `seq`
//! goes on. [`chain_files`] lists a trail's files in chain order.
//!
//! # Recovery
//!
//! [`AuditLog::open`] continues an existing chain. It reads the head file and
//! the last complete record (the newest file that has one, read from its
//! end) and compares them:
//!
//! - they agree: the chain continues from there.
//! - one slot of the head file does not verify beside one that does: a
//!   crash tore the head's copy into it (see `head.rs`). Set aside as
//!   below, the trail checked against the slot that verifies.
//! - the active file ends in a torn record (a crash in the middle of a
//!   write), or holds records beyond the head (a crash between writing the
//!   records and the head; the records verify with the key, so sluice wrote
//!   them): the evidence is neither truncated nor overwritten. The active
//!   file is renamed away like a rotated file after a warning that says
//!   what was found, and a fresh file continues the chain from the last
//!   complete record. Its first record (`trail_recovered`) says what was
//!   found, the name the file is kept under and, for a torn record, the
//!   torn bytes' length and SHA-256. `sluice audit verify` still reports
//!   the torn record, as a note when that record accounts for it, and as
//!   a problem otherwise: bytes added to a finished file by hand.
//! - the last record does not open with the key (a wrong key or a changed
//!   file), the head names records that are not there (cut short), the head
//!   does not verify, the head is missing while records exist, or the
//!   active file holds zero bytes before the end of the records the head
//!   names (records it vouches for lost: a power loss under `Batch`, whose
//!   head and later writes reached the disk before earlier ones, or a
//!   wipe): `open` refuses with [`AuditError::Untrusted`]. Zeros after
//!   them are writes a power loss kept from the disk, never acknowledged
//!   as synced: the file is set aside as for a torn record. Only an operator can tell a
//!   crash from tampering there.
//!
//! # Failure: fail closed
//!
//! If a write, sync, head update or rotation fails with an I/O error, every
//! waiter of that commit gets [`AuditError::Write`], an alert-level line is
//! logged, and the log is *failed*: every later [`AuditLog::record`]
//! returns [`AuditError::Failed`] at once, until sluice restarts, so the
//! gateway refuses statements it cannot record. The writer never appends
//! to the file again: a half-written line stays the last thing in it, for
//! recovery to find as a torn record. A failed sync is always such a
//! failure: the kernel may have dropped the pages it could not write, so
//! what the file holds is no longer known.
//!
//! # A full disk: waited out
//!
//! A disk (or quota) that is full when the records or the head are written
//! (`ENOSPC`, `EDQUOT`) is a state an operator clears by making room, so it
//! does not need a restart. Until then the log is *unavailable*: records
//! someone waits for (statements, session starts) are refused with
//! [`AuditError::Unavailable`], sessions are turned away before they log
//! in, and records no one waits for (outcomes, session ends, failed logins)
//! are kept in memory, in order, up to [`MAX_KEPT_BYTES`]. Every
//! [`NO_SPACE_RETRY`] the writer tries to write what it kept followed by an
//! `audit_outage` record — since when, why, how many records were refused
//! and sessions turned away — in one commit; once that is written, records
//! are taken again. The failed write is forgotten: the file is cut back to
//! where the records end (which needs no space), so no part of it is read,
//! or adopted after a crash, as records, and the next write goes where it
//! went. A failed head write is not forgotten that way: the records are
//! whole by then and part of the head may already name them, so they stay
//! in the chain (their waiters are refused all the same), and the next
//! head written names them; the outage's record is written once however
//! often the head fails again. A rotation the disk cut short (its rename,
//! or the fresh file) is waited out the same way, the active file reopened
//! from its path. Before
//! giving up on the space ahead, a write asks for its own space only, so a
//! nearly full disk still takes records.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::chain::{self, ChainKey, EventBody, HeadSlots, Link, SealError};
use super::head::{HeadFile, WRITE_HEAD, read_head_file};
use super::window::{self, WINDOW_BYTES, Window};

/// Most requests one group commit takes, so that one commit's buffer stays
/// bounded however fast requests arrive.
const MAX_GROUP: usize = 4096;

/// Most bytes of records no one waits on (outcomes, session ends, failed
/// logins) a sink keeps while it cannot write (its database away, its disk
/// full); past this, it fails for good, and says how many it dropped.
pub(crate) const MAX_KEPT_BYTES: usize = 256 << 20;

/// While the disk is full, how often the writer tries to write again.
const NO_SPACE_RETRY: Duration = Duration::from_secs(1);

/// While the disk stays full, how often the alert is raised again (each
/// try in between is quiet).
const NO_SPACE_REALERT: Duration = Duration::from_secs(60);

/// How often, at most, the head is logged.
const HEAD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Under [`Fsync::Always`], the head file is synced at most this often (the
/// records themselves are synced every commit).
pub const HEAD_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Size of the first window read from the end of a file to find its last
/// record; it doubles until a whole line fits.
const TAIL_WINDOW: u64 = 64 * 1024;

/// When a record counts as durable; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` every group commit: records survive a power loss.
    #[default]
    Always,
    /// Written to the operating system: records survive a crash of sluice,
    /// not of the machine.
    Batch,
}

/// Where and how the log writes.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// The active file. Its directory must exist; rotated files go next to
    /// it as `<path>.NNNNNN`.
    pub path: PathBuf,
    /// The head file, rewritten in every group commit. Keep it apart from
    /// the audit files: someone able to cut the trail and to put an older
    /// head back would go unseen.
    pub head_path: PathBuf,
    /// The key of the chain's MACs.
    pub key: ChainKey,
    /// This gateway instance's id, written in every record.
    pub instance: String,
    /// When a record counts as durable.
    pub fsync: Fsync,
    /// Rotate when the active file grows beyond this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Rotate when the active file is older than this.
    pub rotate_after: Option<Duration>,
}

/// Counters since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records written.
    pub records: u64,
    /// Group commits (each one write, and one sync under `Always`).
    pub commits: u64,
    /// Bytes of record lines written.
    pub bytes: u64,
    /// Times the sink could not write for a while — its audit database
    /// lost, its disk full — and refused statements until it could.
    pub outages: u64,
}

/// Why the log cannot be opened or a record not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The settings name no instance.
    #[error("audit instance id is empty")]
    NoInstance,
    /// Opening or recovering the trail failed at the operating system.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What sluice was doing.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The existing trail cannot be continued without an operator's look.
    #[error(
        "audit trail {path} cannot be continued: {reason}; check it with `sluice audit verify` \
         and move its files away once examined"
    )]
    Untrusted {
        /// The active file.
        path: PathBuf,
        /// What was found, in plain words.
        reason: String,
    },
    /// The event cannot be made a record (a reserved or missing field).
    #[error(transparent)]
    Event(#[from] SealError),
    /// This record's group commit failed; the log is now failed.
    #[error("audit trail cannot be written: cannot {action} {path}: {source}")]
    Write {
        /// What the writer was doing.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: Arc<io::Error>,
    },
    /// An earlier failure stopped the log; it refuses records until sluice
    /// restarts.
    #[error("audit trail stopped after a failure and refuses records until sluice restarts: {0}")]
    Failed(Arc<str>),
    /// The trail cannot be written for now (its database is away, its disk
    /// full); sluice retries and refuses records until it can write again.
    #[error("audit trail cannot be written for now, sluice retries: {0}")]
    Unavailable(Arc<str>),
    /// The log was closed.
    #[error("audit log is closed")]
    Closed,
    /// Another sluice (or another log in this one) has the trail open.
    #[error(
        "audit trail {path} is in use by another sluice (its lock {lock} is held): one trail, one writer; give each instance a file of its own"
    )]
    InUse {
        /// The active file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

/// A handle to the audit log's writer thread. Clones share the writer;
/// when the last one is dropped, the writer writes what is queued and stops,
/// and the drop waits for it (in async code, prefer
/// [`close`](AuditLog::close)).
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("head", &self.head())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What the handles share: the way to the writer and what it reports back.
struct Shared {
    requests: mpsc::Sender<Request>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The files, for callers that write themselves (under `Batch`).
    files: Arc<Mutex<Writer>>,
    /// Under `Batch`, callers write under the lock instead of handing
    /// events to the thread (see "Who writes" above).
    direct: bool,
    /// Under `Batch`, outcome records held back (see [`AuditLog::defer`]).
    held: Arc<Mutex<Held>>,
    state: Arc<SinkState>,
    /// The trail's lock, held while the log is open (dropped after the
    /// writer has stopped: see [`lock_trail`]).
    _trail_lock: File,
}

/// Under `Batch`, outcome records not written yet. They have a lock of
/// their own so that holding one back never queues behind a write; they
/// are taken only by a holder of the files' lock (the order is always
/// files, then held), so what is taken is written before any later record.
#[derive(Default)]
struct Held {
    records: Vec<Request>,
    /// The writer has taken the last of them to close: nothing more is
    /// held.
    closed: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A send fails only when the writer has already stopped (after
        // `close`); then there is nothing left to flush.
        let _ = self.requests.send(Request::Shutdown { done: None });
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            // A writer that panicked has marked the log failed already.
            let _ = writer.join();
        }
    }
}

/// What a sink's committer publishes to the handles: the chain's head,
/// counts, and whether the sink failed. The file sink and the PostgreSQL
/// sink keep one each.
pub(crate) struct SinkState {
    instance: String,
    head: Mutex<Link>,
    /// When the head was last logged: the log, shipped elsewhere, is an
    /// anchor whoever rewrites the trail (and, for the PostgreSQL sink, its
    /// head row) cannot reach.
    head_logged_at: Mutex<Option<Instant>>,
    records: AtomicU64,
    commits: AtomicU64,
    bytes: AtomicU64,
    failure: OnceLock<Arc<str>>,
    /// Set while the sink cannot write for now and retries: the PostgreSQL
    /// sink's database is away, the file sink's disk is full. `outage`
    /// says since when and why.
    out: AtomicBool,
    outage: Mutex<Option<Outage>>,
    outages: AtomicU64,
    /// Records refused (statements and session starts, which therefore did
    /// not run), and connections turned away before they logged in, during
    /// the current (or last) outage: the trail's record of the outage
    /// counts them.
    records_refused: AtomicU64,
    sessions_refused: AtomicU64,
}

/// Since when and why a sink cannot write for now.
#[derive(Clone)]
struct Outage {
    since: SystemTime,
    cause: Arc<str>,
}

impl SinkState {
    pub(crate) fn new(head: Link, instance: &str) -> SinkState {
        SinkState {
            instance: instance.to_owned(),
            head: Mutex::new(head),
            head_logged_at: Mutex::new(None),
            records: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failure: OnceLock::new(),
            out: AtomicBool::new(false),
            outage: Mutex::new(None),
            outages: AtomicU64::new(0),
            records_refused: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
        }
    }

    /// Fails the sink (once; later causes are dropped) and raises the
    /// alert.
    pub(crate) fn fail(&self, cause: String) {
        let cause: Arc<str> = cause.into();
        if self.failure.set(Arc::clone(&cause)).is_ok() {
            tracing::error!(
                alert = true,
                cause = %cause,
                "audit trail failed: statements are refused until sluice restarts"
            );
        }
    }

    /// Refuses records until [`SinkState::recovered`]: the sink cannot
    /// write for now (its database is away, its disk full) and retries.
    /// Raises the alert; a later cause replaces the first, the outage keeps
    /// its start.
    pub(crate) fn unavailable(&self, cause: String) {
        tracing::error!(
            alert = true,
            cause = %cause,
            "audit trail cannot be written for now: statements are refused while sluice retries"
        );
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match &*outage {
            Some(outage) if self.out.load(Ordering::Acquire) => outage.since,
            _ => SystemTime::now(),
        };
        *outage = Some(Outage {
            since,
            cause: cause.into(),
        });
        if !self.out.swap(true, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            self.records_refused.store(0, Ordering::Relaxed);
            self.sessions_refused.store(0, Ordering::Relaxed);
        }
    }

    /// The record that tells the trail's reader where it was interrupted:
    /// since when, why, what was refused meanwhile and how many records
    /// were kept through it (written just before this one). `None` when
    /// the sink is not out. Written as the first record once the sink
    /// writes again, before [`SinkState::recovered`].
    pub(crate) fn outage_record(&self, kept: usize) -> Option<EventBody> {
        if !self.out.load(Ordering::Acquire) {
            return None;
        }
        let outage = self
            .outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let mut body = EventBody::new("audit_outage");
        let fields = body
            .field("since", &chain::format_utc_micros(outage.since))
            .and_then(|body| body.field("cause", &*outage.cause))
            .and_then(|body| {
                body.field(
                    "records_refused",
                    &self.records_refused.load(Ordering::Relaxed),
                )
            })
            .and_then(|body| {
                body.field(
                    "sessions_refused",
                    &self.sessions_refused.load(Ordering::Relaxed),
                )
            })
            .and_then(|body| body.field("records_kept", &kept));
        // Plain strings and numbers always serialize.
        fields.ok()?;
        Some(body)
    }

    /// The refusals counted since the outage began: records, sessions.
    pub(crate) fn refusals(&self) -> (u64, u64) {
        (
            self.records_refused.load(Ordering::Relaxed),
            self.sessions_refused.load(Ordering::Relaxed),
        )
    }

    /// The sink writes again (and has written what it kept, and the
    /// outage's record): records are taken again.
    pub(crate) fn recovered(&self) {
        if self.out.swap(false, Ordering::AcqRel) {
            let outage = self
                .outage
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let lasted = outage
                .and_then(|outage| outage.since.elapsed().ok())
                .unwrap_or_default();
            tracing::warn!(
                ?lasted,
                records_refused = self.records_refused.load(Ordering::Relaxed),
                sessions_refused = self.sessions_refused.load(Ordering::Relaxed),
                "audit trail written again: statements are recorded and run"
            );
        }
    }

    /// `Err` once the sink has failed, or while it is out (counted as a
    /// refused record: call it only for a record refused if it errs).
    pub(crate) fn refuse_if_failed(&self) -> Result<(), AuditError> {
        self.refuse_if_stopped()?;
        if self.out.load(Ordering::Acquire) {
            let outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(outage) = &*outage {
                self.records_refused.fetch_add(1, Ordering::Relaxed);
                return Err(AuditError::Unavailable(Arc::clone(&outage.cause)));
            }
        }
        Ok(())
    }

    /// `Err` once the sink has failed for good: records that need no
    /// answer are still taken while it is out.
    pub(crate) fn refuse_if_stopped(&self) -> Result<(), AuditError> {
        match self.failure.get() {
            Some(cause) => Err(AuditError::Failed(Arc::clone(cause))),
            None => Ok(()),
        }
    }

    /// Why records are refused, if they are: a failure, or an outage.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        if let Some(cause) = self.failure.get() {
            return Some(Arc::clone(cause));
        }
        if !self.out.load(Ordering::Acquire) {
            return None;
        }
        let outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        outage.as_ref().map(|outage| Arc::clone(&outage.cause))
    }

    /// [`failure`](Self::failure) for a session about to be turned away
    /// because of it: counted for the outage's record.
    pub(crate) fn session_refusal(&self) -> Option<Arc<str>> {
        let cause = self.failure()?;
        if self.out.load(Ordering::Acquire) {
            self.sessions_refused.fetch_add(1, Ordering::Relaxed);
        }
        Some(cause)
    }

    /// A group commit of `records` records (`bytes` of lines) ending at
    /// `head` is durable. Logs the head now and then.
    pub(crate) fn committed(&self, head: Link, records: usize, bytes: usize) {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = head;
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut logged_at = self
            .head_logged_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if logged_at.is_none_or(|logged| logged.elapsed() >= HEAD_LOG_INTERVAL) {
            *logged_at = Some(Instant::now());
            self.log_head(&head, "audit chain head");
        }
    }

    /// Puts the head in sluice's log, apart from the trail and its head
    /// file: `verify` prints the head it found, to be compared with the
    /// last of these (a trail and head file put back together to an
    /// earlier state show there).
    fn log_head(&self, head: &Link, message: &str) {
        tracing::info!(
            instance = %self.instance,
            seq = head.seq,
            mac = %chain::encode_hex(&head.mac),
            "{message}"
        );
    }

    /// Logs the head the sink stopped at: the last seconds of a run, its
    /// stop record among them, are anchored in the log too.
    pub(crate) fn log_final_head(&self) {
        self.log_head(&self.head(), "audit chain head at stop");
    }

    pub(crate) fn head(&self) -> Link {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> LogStats {
        LogStats {
            records: self.records.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }
}

/// Who learns how a record's write went.
enum Answer {
    /// No one: an outcome record (a failure still fails the log).
    Nobody,
    /// A session waiting on the writer thread.
    Waiter(oneshot::Sender<Result<u64, AuditError>>),
    /// The caller writing its own record under `Batch`: the result comes
    /// back from [`Writer::commit`].
    Caller,
}

impl Answer {
    /// Whether someone waits for the record to be durable.
    fn awaited(&self) -> bool {
        !matches!(self, Answer::Nobody)
    }

    /// Gives the result to whoever waits: a waiter over its channel (one
    /// that stopped waiting is no error), the caller through `caller`.
    fn send(self, result: Result<u64, AuditError>, caller: &mut Option<Result<u64, AuditError>>) {
        match self {
            Answer::Nobody => {}
            Answer::Waiter(waiter) => {
                let _ = waiter.send(result);
            }
            Answer::Caller => *caller = Some(result),
        }
    }
}

/// A message to the writer thread.
enum Request {
    /// Seal and write an event; answer with its `seq` when durable, if
    /// anyone waits.
    Record { event: EventBody, answer: Answer },
    /// Write what came before, then stop.
    Shutdown { done: Option<oneshot::Sender<()>> },
}

impl AuditLog {
    /// Opens the log, continuing the chain already on disk (see "Recovery"
    /// in the module documentation), and starts its writer thread.
    ///
    /// Creates the active and head files (mode 0600) if missing; their
    /// directory must exist.
    pub fn open(settings: LogSettings) -> Result<AuditLog, AuditError> {
        if settings.instance.is_empty() {
            return Err(AuditError::NoInstance);
        }
        let trail_lock = lock_trail(&settings.path)?;
        let recovered = recover(&settings)?;
        let recovery = match &recovered.set_aside {
            Some(found) => {
                let kept_as = set_aside_active_file(&settings.path, found, recovered.link)?;
                let record = recovery_record(
                    found,
                    &settings.path,
                    kept_as.as_deref(),
                    recovered.torn.as_ref(),
                    recovered.hole.as_ref(),
                )?;
                Some(record)
            }
            None => None,
        };
        let active = ActiveFile::open(&settings.path).map_err(|source| AuditError::Io {
            action: "open audit file",
            path: settings.path.clone(),
            source,
        })?;
        let head = chain::head_line(&settings.key, &recovered.link);
        let head_file =
            HeadFile::open(&settings.head_path, &head).map_err(|(action, source)| {
                AuditError::Io {
                    action,
                    path: settings.head_path.clone(),
                    source,
                }
            })?;
        for path in [&settings.path, &settings.head_path] {
            sync_directory_of(path).map_err(|source| AuditError::Io {
                action: "sync the directory of",
                path: path.clone(),
                source,
            })?;
        }

        let state = Arc::new(SinkState::new(recovered.link, &settings.instance));
        let mut writer = Writer {
            active: Some(active),
            head_file,
            link: recovered.link,
            state: Arc::clone(&state),
            head_synced_at: None,
            data_synced_at: None,
            unsynced_since: None,
            closed: false,
            held: Arc::default(),
            lines: Vec::new(),
            no_space: None,
            settings,
        };
        if let Some(record) = recovery {
            // The fresh file opens with what recovery found, before any
            // record of this run. A full disk keeps it, to be written first
            // once there is room, as it keeps an outcome: sluice starts and
            // waits the disk out (its statements refused meanwhile). Any
            // other failure fails the trail, and sluice does not start.
            let request = Request::Record {
                event: record,
                answer: Answer::Nobody,
            };
            let _ = writer.commit(vec![request]);
            writer.state.refuse_if_stopped()?;
        }
        let direct = writer.settings.fsync == Fsync::Batch;
        let held = Arc::clone(&writer.held);
        let files = Arc::new(Mutex::new(writer));
        let (requests, inbox) = mpsc::channel();
        let thread_files = Arc::clone(&files);
        let thread = std::thread::Builder::new()
            .name("sluice-audit".to_string())
            .spawn(move || Writer::run(&thread_files, inbox, direct))
            .map_err(|source| AuditError::Io {
                action: "start the audit writer thread for",
                path: PathBuf::from("sluice-audit"),
                source,
            })?;
        Ok(AuditLog {
            shared: Arc::new(Shared {
                requests,
                writer: Mutex::new(Some(thread)),
                files,
                direct,
                held,
                state,
                _trail_lock: trail_lock,
            }),
        })
    }

    /// Records an event and returns its `seq` once it is durable by the
    /// log's [`Fsync`] setting. The event needs an `event` field and may
    /// not use the record's own field names.
    ///
    /// Errors mean the statement must not run: the record is not durable.
    /// Dropping the future before it completes does not withdraw the
    /// record; it may still be written.
    pub async fn record(&self, event: Map<String, Value>) -> Result<u64, AuditError> {
        self.record_body(EventBody::from_map(&event)?).await
    }

    /// [`record`](Self::record) for a body made already.
    pub async fn record_body(&self, event: EventBody) -> Result<u64, AuditError> {
        self.shared.state.refuse_if_failed()?;
        if self.shared.direct {
            return self.commit_here(event);
        }
        let (answer, answered) = oneshot::channel();
        let request = Request::Record {
            event,
            answer: Answer::Waiter(answer),
        };
        self.shared
            .requests
            .send(request)
            .map_err(|_| AuditError::Closed)?;
        answered.await.map_err(|_| AuditError::Closed)?
    }

    /// The files, locked, unless the log was closed.
    fn open_files(&self) -> Option<std::sync::MutexGuard<'_, Writer>> {
        let files = self
            .shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (!files.closed).then_some(files)
    }

    /// Writes a record on the caller's thread, under the files' lock, and
    /// returns its `seq` once written.
    fn commit_here(&self, event: EventBody) -> Result<u64, AuditError> {
        // After `close` the thread has stopped; so does writing here.
        let mut files = self.open_files().ok_or(AuditError::Closed)?;
        // Outcomes held back go first, in order, in the same write.
        let mut group = files.take_held(false);
        group.push(Request::Record {
            event,
            answer: Answer::Caller,
        });
        let (_, answered) = files.commit(group);
        answered.unwrap_or(Err(AuditError::Closed))
    }

    /// Queues an event (a statement's outcome) in the same chain and order
    /// as [`record`](Self::record), without waiting for it.
    ///
    /// Its failures still count: a failed write, or an event that cannot be
    /// a record, fails the log as any failed write does, so the statements
    /// after it are refused.
    pub fn record_later(&self, event: Map<String, Value>) {
        match EventBody::from_map(&event) {
            Ok(body) => self.record_later_body(body),
            Err(refused) => self
                .shared
                .state
                .fail(format!("an outcome record was refused: {refused}")),
        }
    }

    /// [`record_later`](Self::record_later) for a body made already.
    pub fn record_later_body(&self, event: EventBody) {
        if self.shared.state.refuse_if_stopped().is_err() {
            return; // The failure has raised its alert already.
        }
        // While the disk is full, the writer keeps it.
        let request = Request::Record {
            event,
            answer: Answer::Nobody,
        };
        if self.shared.direct {
            self.defer(request);
        } else if self.shared.requests.send(request).is_err() {
            tracing::error!(
                alert = true,
                "audit log is closed: an outcome record was dropped"
            );
        }
    }

    /// Under `Batch`: holds an outcome record back, to share the write (and
    /// the head's) of the next statement's record. The writer thread writes
    /// what is held within [`DEFERRED_FLUSH`] when no statement comes.
    fn defer(&self, request: Request) {
        let mut held = self
            .shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if held.closed {
            tracing::error!(
                alert = true,
                "audit log is closed: an outcome record was dropped"
            );
            return;
        }
        held.records.push(request);
        if held.records.len() < MAX_DEFERRED {
            return;
        }
        drop(held);
        // Enough held: write them now rather than let them pile up.
        if let Some(mut files) = self.open_files() {
            let group = files.take_held(false);
            let _ = files.commit(group);
        }
    }

    /// Writes what is queued and stops the writer thread. Other handles'
    /// later records fail with [`AuditError::Closed`].
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        let request = Request::Shutdown { done: Some(done) };
        if self.shared.requests.send(request).is_ok() {
            // An error means the writer is gone already: nothing to wait for.
            let _ = finished.await;
        }
        self.shared.state.log_final_head();
    }

    /// The head of the chain as of the last group commit.
    pub fn head(&self) -> Link {
        self.shared.state.head()
    }

    /// What the log publishes: its head, counts and failure.
    pub(crate) fn state(&self) -> &SinkState {
        &self.shared.state
    }

    /// Records, commits and bytes written since the log was opened.
    pub fn stats(&self) -> LogStats {
        self.shared.state.stats()
    }
}

/// The writer thread's own state: the files and the chain's head.
struct Writer {
    settings: LogSettings,
    /// `None` once a write failed: nothing is appended after a failure.
    active: Option<ActiveFile>,
    head_file: HeadFile,
    link: Link,
    state: Arc<SinkState>,
    /// When the head file was last synced (under `Always`).
    head_synced_at: Option<Instant>,
    /// When the records were last synced (under `Always`).
    data_synced_at: Option<Instant>,
    /// Under `Always`, since when records have been written that are not
    /// synced yet (and the head does not name them yet).
    unsynced_since: Option<Instant>,
    /// The log was closed: nothing more is written.
    closed: bool,
    /// Under `Batch`, outcome records not written yet: they go with the
    /// next awaited record's write, or within [`DEFERRED_FLUSH`].
    held: Arc<Mutex<Held>>,
    /// The last commit's buffer of lines, kept for the next one.
    lines: Vec<u8>,
    /// Set while the disk is full: what is kept meanwhile.
    no_space: Option<NoSpace>,
}

/// While the disk (or the quota) is full: records no one waits on, kept in
/// order with the time they came, to be written first once there is room.
struct NoSpace {
    kept: VecDeque<(EventBody, SystemTime)>,
    kept_bytes: usize,
    /// The refusals (records, sessions) the outage's record in the chain
    /// counted, once one is: a try wrote it (and what was kept) and only
    /// the head's write failed. The next try writes what was kept since
    /// and the head, and a record of the same outage again only if more
    /// was refused meanwhile (its counts run on from the outage's start).
    outage_recorded: Option<(u64, u64)>,
    retry_at: Instant,
    alerted_at: Instant,
}

/// Under [`Fsync::Always`], how long records written but not yet synced
/// (outcomes, which no one waits for) may go without a sync when no
/// commit comes to sync them: the head names them only once they are
/// synced, so this is also how long the head may lag behind them.
const UNSYNCED_FLUSH: Duration = Duration::from_millis(100);

/// Under `Batch`, how long an outcome record may wait for a statement's
/// record to share its write before the writer thread writes it alone.
const DEFERRED_FLUSH: Duration = Duration::from_millis(10);
/// Outcome records held at most before they are written anyway.
const MAX_DEFERRED: usize = 64;
/// The largest line buffer a writer keeps from one commit to the next.
const KEPT_BUFFER: usize = 1 << 20;

/// The file records are appended to.
struct ActiveFile {
    file: File,
    /// Where the records end: the next record is written here.
    len: u64,
    /// The file's size: space allocated ahead of `len` reads as zeros.
    allocated: u64,
    since: SystemTime,
    /// Where the allocated space ahead is mapped, for records to be copied
    /// into it (see `window.rs`); made when first needed.
    window: Option<Window>,
    /// Whether the file can be mapped at all (not a device, say).
    mappable: bool,
}

impl ActiveFile {
    /// Opens the active file for writing at its end of data, creating it
    /// (mode 0600) if missing.
    fn open(path: &Path) -> io::Result<ActiveFile> {
        let file = open_to_write_in_place(path)?;
        let metadata = file.metadata()?;
        let len = data_len(&file)?;
        let allocated = metadata.len();
        // The space ahead is copied into through a mapping, which must not
        // meet a hole (a page needing blocks on a full disk stops sluice
        // with SIGBUS): a file copied sparse keeps its zeros as holes. So
        // that space is allocated again — nothing to do where it is — and
        // the file is only written, never mapped, where that fails.
        let mappable = metadata.is_file()
            && window::reserves_allocated_space(&file)
            && (allocated <= len || allocate(&file, len, allocated - len).unwrap_or(false));
        Ok(ActiveFile {
            len,
            allocated,
            // Where the filesystem keeps no birth time, the age counts from
            // now: a restart then postpones a rotation by age, never hastens it.
            since: metadata.created().unwrap_or_else(|_| SystemTime::now()),
            mappable,
            window: None,
            file,
        })
    }

    /// Writes `lines` at the end of data, allocating space ahead first
    /// when they do not fit (see "Preallocation"). On a disk too full for
    /// the space ahead, only the lines' own space is asked for.
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let end = self.len + lines.len() as u64;
        if end > self.allocated {
            let grow = end - self.allocated + PREALLOCATE;
            match allocate(&self.file, self.allocated, grow) {
                Ok(allocated) => self.allocated += if allocated { grow } else { 0 },
                Err(error) if is_no_space(&error) => {
                    // A failed allocation may have kept part of its space.
                    self.allocated = self.allocated.max(self.file.metadata()?.len());
                    if end > self.allocated
                        && allocate(&self.file, self.allocated, end - self.allocated)?
                    {
                        self.allocated = end;
                    }
                }
                Err(error) => return Err(error),
            }
        }
        if !self.copy_into_window(lines) {
            self.file.write_all_at(lines, self.len)?;
        }
        self.len = end;
        Ok(())
    }

    /// Copies `lines` to the end of data through the mapped window when
    /// they fit in the space allocated ahead, mapping a window there first
    /// if need be; `false` when they must be written instead.
    fn copy_into_window(&mut self, lines: &[u8]) -> bool {
        let end = self.len + lines.len() as u64;
        if !self.mappable || end > self.allocated {
            return false;
        }
        if !self
            .window
            .as_ref()
            .is_some_and(|window| window.covers(self.len, lines.len()))
        {
            self.window = None;
            let start = self.len - self.len % window::page_size();
            let len = (self.allocated - start).min(WINDOW_BYTES.max(end - start));
            match Window::map(&self.file, start, len) {
                Ok(window) => self.window = Some(window),
                Err(error) => {
                    // Written instead, as where space is not allocated.
                    tracing::warn!(%error, "cannot map the audit file: records are written to it instead");
                    self.mappable = false;
                    return false;
                }
            }
        }
        match self.window.as_mut() {
            Some(window) => {
                window.copy_to(self.len, lines);
                true
            }
            None => false,
        }
    }

    /// A commit's write from `start` failed (the disk full), perhaps
    /// halfway: the file is cut back to `start`, so that whatever part of it
    /// reached the file is not read — nor adopted after a crash — as
    /// records, and the next commit writes from there. Cutting a file
    /// short needs no space.
    fn forget_write(&mut self, start: u64) -> io::Result<()> {
        // No mapped page may lie past the end once the file is shorter.
        self.window = None;
        // A trail on a device (a test's /dev/full) has nothing to cut.
        if self.file.metadata()?.is_file() {
            self.file.set_len(start)?;
        }
        self.len = start;
        self.allocated = start;
        Ok(())
    }

    /// Gives back the space allocated past the records, so a file that is
    /// finished (rotated, or closed) holds its records alone.
    fn trim(&mut self) -> io::Result<()> {
        if self.allocated > self.len {
            self.window = None;
            self.file.set_len(self.len)?;
            self.allocated = self.len;
        }
        Ok(())
    }
}

/// Opens a file of the trail for reading and writing in place, creating
/// it (mode 0600: records and heads are for sluice and its auditors alone)
/// if missing. Not in append mode: `pwrite` on an append-mode file appends.
pub(super) fn open_to_write_in_place(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Whether an error says the disk (or the user's quota) is full: a state
/// an operator can clear, unlike an I/O error.
fn is_no_space(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Space allocated ahead of the records at a time.
const PREALLOCATE: u64 = 16 << 20;

/// How long [`lock_trail`] waits for a lock held by a sluice that is
/// stopping (or a log of this process being dropped).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the trail's lock, `PATH.lock` (an advisory `flock`), for as long
/// as the log is open: a second sluice on the same trail (started by
/// mistake while one serves, or a replica on shared storage) would
/// recover the chain under the first one's feet and write at its own idea
/// of the file's end, overwriting and cutting off records the first one
/// had made durable.
fn lock_trail(path: &Path) -> Result<File, AuditError> {
    lock_trail_within(path, LOCK_WAIT)
}

/// [`lock_trail`], waiting at most `wait` for a lock that is held.
fn lock_trail_within(path: &Path, wait: Duration) -> Result<File, AuditError> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(|source| AuditError::Io {
            action: "open the lock file",
            path: lock.clone(),
            source,
        })?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(AuditError::InUse {
                    path: path.to_owned(),
                    lock,
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(AuditError::Io {
                    action: "lock",
                    path: lock,
                    source,
                });
            }
        }
    }
}

/// Allocates `len` bytes of `file` from `offset` (they read as zeros);
/// `false` where the file cannot have space allocated ahead (a device, a
/// filesystem without the call): records are then appended as they come.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a plain system call on a descriptor this file owns.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) } {
        0 => Ok(true),
        libc::EOPNOTSUPP | libc::ENODEV | libc::EINVAL | libc::ESPIPE => Ok(false),
        error => Err(io::Error::from_raw_os_error(error)),
    }
}

/// The offset of the first zero byte before `end`, the end of the data of
/// a trail file (none there is the healthy case).
fn first_zero_within_data(file: &File, end: u64) -> io::Result<Option<u64>> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < end {
        let len = chunk
            .len()
            .min(usize::try_from(end - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut chunk[..len], at)?;
        if let Some(zero) = chunk[..len].iter().position(|&byte| byte == 0) {
            return Ok(Some(at + zero as u64));
        }
        at += len as u64;
    }
    Ok(None)
}

/// Bytes where a file's records break off at a zero byte: from the start
/// of the line the first zero is in to the end of the data. A power loss
/// leaves them when a later page of the file reached the disk and an
/// earlier one did not. The recovery record that sets such a file aside
/// names them (where, how many, their SHA-256), so that `verify` takes them
/// for that crash's and not for bytes put there later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hole {
    /// The first zero byte.
    pub zero_at: u64,
    /// Where the line it breaks begins.
    pub from: u64,
    /// How many bytes from `from` to the end of the data.
    pub len: u64,
    /// Their SHA-256, in hex.
    pub sha256: String,
}

/// The [`Hole`] in `file`, if its data holds a zero byte.
pub(crate) fn hole_in(file: &File) -> io::Result<Option<Hole>> {
    use sha2::Digest;
    let data_end = data_len(file)?;
    let Some(zero_at) = first_zero_within_data(file, data_end)? else {
        return Ok(None);
    };
    // Back to the newline before it, a window at a time.
    let mut from = 0;
    let mut end = zero_at;
    let mut window = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(window.len() as u64);
        let chunk = &mut window[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(newline) = chunk.iter().rposition(|&byte| byte == b'\n') {
            from = start + newline as u64 + 1;
            break;
        }
        end = start;
    }
    let mut digest = sha2::Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = from;
    while at < data_end {
        let len = chunk
            .len()
            .min(usize::try_from(data_end - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut chunk[..len], at)?;
        digest.update(&chunk[..len]);
        at += len as u64;
    }
    Ok(Some(Hole {
        zero_at,
        from,
        len: data_end - from,
        sha256: chain::encode_hex(&digest.finalize()),
    }))
}

/// Where the data of a trail file ends: its length without the zeros of
/// space allocated ahead (a record line never holds a NUL byte).
pub fn data_len(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut window = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(window.len() as u64);
        let chunk = &mut window[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(last) = chunk.iter().rposition(|&byte| byte != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Why a group commit failed; copied to every waiter.
#[derive(Clone)]
struct WriteFailure {
    action: &'static str,
    path: PathBuf,
    source: Arc<io::Error>,
}

/// The steps of a commit whose failure on a full disk is waited out: the
/// write of the records, and the head's write in place. A failed sync is
/// never retried — the kernel may have dropped the pages it could not
/// write, so what the trail holds is no longer known.
const APPEND: &str = "append to";
/// Rotation's rename, and the fresh file after it (a directory that must
/// grow, no inode left): until they succeed the active file is reopened
/// from its path, the old one or the fresh one.
const ROTATE: &str = "rotate";
const CREATE: &str = "create a fresh audit file";

impl WriteFailure {
    fn new(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteFailure {
        move |source| WriteFailure {
            action,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// The disk was full for a write: sluice keeps what it can and tries
    /// again, instead of failing for good.
    fn no_space(&self) -> bool {
        [APPEND, WRITE_HEAD, ROTATE, CREATE].contains(&self.action) && is_no_space(&self.source)
    }
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl From<WriteFailure> for AuditError {
    fn from(failure: WriteFailure) -> AuditError {
        AuditError::Write {
            action: failure.action,
            path: failure.path,
            source: failure.source,
        }
    }
}

/// A group commit that failed, and how far it got.
struct GroupFailure {
    failure: WriteFailure,
    /// The records were written (and synced, as the setting asks) and stay
    /// in the chain: only the head's write failed (see
    /// [`Writer::write_group`]).
    records_written: bool,
}

impl GroupFailure {
    /// Nothing of the group stayed in the file.
    fn unwritten(failure: WriteFailure) -> GroupFailure {
        GroupFailure {
            failure,
            records_written: false,
        }
    }
}

/// Marks the log failed if the writer thread unwinds, so that callers are
/// refused rather than left to find a closed channel.
struct FailOnPanic(Arc<SinkState>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the audit writer thread panicked".to_string());
        }
    }
}

impl Writer {
    /// The thread's loop: one group commit per turn, until shut down.
    /// Under `Batch` (`direct`) it also writes outcome records held back
    /// longer than [`DEFERRED_FLUSH`]; while the disk is full it tries to
    /// write again every [`NO_SPACE_RETRY`].
    fn run(files: &Mutex<Writer>, inbox: mpsc::Receiver<Request>, direct: bool) {
        let state = Arc::clone(&files.lock().unwrap_or_else(PoisonError::into_inner).state);
        let _fail_on_panic = FailOnPanic(state);
        loop {
            let due = files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_due(direct);
            let received = match due {
                None => inbox
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(due) => inbox.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            let first = match received {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    files
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .when_idle();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP && !matches!(group.last(), Some(Request::Shutdown { .. }))
            {
                match inbox.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            let mut writer = files.lock().unwrap_or_else(PoisonError::into_inner);
            // Outcomes held back come before what arrives now (a shutdown).
            let closing = group
                .iter()
                .any(|request| matches!(request, Request::Shutdown { .. }));
            let mut held = writer.take_held(closing);
            held.extend(group);
            if writer.commit(held).0 == Flow::Stop {
                writer.closed = true;
                return;
            }
        }
    }

    /// When the thread must act though no request came: to write outcomes
    /// held back (under `Batch`), to sync records written but not synced
    /// (under `Always`), to try a full disk again.
    fn next_due(&self, direct: bool) -> Option<Instant> {
        let held = direct.then(|| Instant::now() + DEFERRED_FLUSH);
        [
            held,
            self.unsynced_deadline(),
            self.no_space.as_ref().map(|full| full.retry_at),
            self.rotation_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the active file is due to rotate by age (`rotate_seconds`),
    /// if it holds records: a file of a quiet gateway rotates on time too,
    /// not at its next record. None while the disk is full (its retries
    /// rotate too).
    fn rotation_deadline(&self) -> Option<Instant> {
        let limit = self.settings.rotate_after?;
        let active = self.active.as_ref().filter(|active| active.len > 0)?;
        if self.no_space.is_some() {
            return None;
        }
        let age = SystemTime::now()
            .duration_since(active.since)
            .unwrap_or_default();
        Some(Instant::now() + limit.saturating_sub(age))
    }

    /// What [`next_due`](Self::next_due) was for.
    fn when_idle(&mut self) {
        if self.closed {
            return;
        }
        if let Err(failure) = self.rotate_if_due() {
            self.failed(&failure, Vec::new());
        }
        self.resume_if_due(false);
        let group = self.take_held(false);
        if !group.is_empty() {
            let _ = self.commit(group);
        }
        if let Err(failure) = self.flush_unsynced() {
            self.failed(&failure, Vec::new());
        }
    }

    /// The outcome records held back, to be written now, by the holder of
    /// the files' lock; `closing` once the log is closing, after which
    /// nothing more is held.
    fn take_held(&self, closing: bool) -> Vec<Request> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.closed |= closing;
        std::mem::take(&mut held.records)
    }

    /// Seals, writes and syncs one group, then answers its waiters; the
    /// result for an [`Answer::Caller`] record is returned. While the disk
    /// is full, waiters are refused and the rest is kept.
    fn commit(&mut self, group: Vec<Request>) -> (Flow, Option<Result<u64, AuditError>>) {
        // A try that is due goes first, whatever keeps the thread busy:
        // what it writes came before this group.
        self.resume_if_due(false);
        let mut caller = None;
        // The buffer of the last commit, emptied: no allocation per commit.
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let mut waiting = Vec::new();
        let mut shutdowns = Vec::new();
        let mut link = self.link;
        for request in group {
            match request {
                Request::Shutdown { done } => shutdowns.push(done),
                Request::Record { event, answer } => {
                    if let Err(refused) = self.state.refuse_if_stopped() {
                        answer.send(Err(refused), &mut caller);
                        continue;
                    }
                    if self.no_space.is_some() {
                        if answer.awaited() {
                            answer.send(Err(self.refusal()), &mut caller);
                        } else {
                            self.keep(event, SystemTime::now());
                        }
                        continue;
                    }
                    match self.seal_into(&link, SystemTime::now(), &event, &mut lines) {
                        Ok(next) => {
                            link = next;
                            waiting.push((answer, event));
                        }
                        Err(refused) if answer.awaited() => {
                            answer.send(Err(refused.into()), &mut caller);
                        }
                        Err(refused) => {
                            self.state
                                .fail(format!("an outcome record could not be sealed: {refused}"));
                        }
                    }
                }
            }
        }

        if !waiting.is_empty() {
            // Only a record someone waits for must be on disk before the
            // answer; outcomes alone ride on the next sync.
            let awaited = waiting.iter().any(|(answer, _)| answer.awaited());
            match self.write_group(&lines, &link, awaited) {
                Ok(()) => {
                    let first = self.link.seq + 1;
                    self.publish(link, waiting.len(), lines.len());
                    for (offset, (answer, _)) in waiting.into_iter().enumerate() {
                        answer.send(Ok(first + offset as u64), &mut caller);
                    }
                    if let Err(failure) = self.rotate_if_due() {
                        self.failed(&failure, Vec::new());
                    }
                }
                Err(GroupFailure {
                    failure,
                    records_written,
                }) => {
                    if records_written {
                        // In the chain for good (see `write_group`); the
                        // statements waiting on them are refused all the
                        // same, as the head did not name them (the outage's
                        // record counts them with the refused).
                        self.publish(link, waiting.len(), lines.len());
                    }
                    let unwaited = self.failed(&failure, Vec::new());
                    let mut kept = Vec::new();
                    for (answer, event) in waiting {
                        if !answer.awaited() {
                            if !records_written {
                                kept.push(event);
                            }
                        } else if unwaited {
                            answer.send(Err(self.refusal()), &mut caller);
                        } else {
                            answer.send(Err(failure.clone().into()), &mut caller);
                        }
                    }
                    if unwaited {
                        // They come first, before anything kept later.
                        let at = SystemTime::now();
                        for event in kept {
                            self.keep(event, at);
                        }
                    }
                }
            }
        }

        // A group with large results (their cap is per statement) does not
        // pin its memory for good.
        if lines.capacity() <= KEPT_BUFFER {
            self.lines = lines;
        }

        let stop = !shutdowns.is_empty();
        if stop {
            self.close_files();
        }
        for done in shutdowns.into_iter().flatten() {
            let _ = done.send(()); // The closer may have stopped waiting.
        }
        (if stop { Flow::Stop } else { Flow::Continue }, caller)
    }

    /// At close: brings the files level (what a full disk kept is tried
    /// once more), trims the active file to its records.
    fn close_files(&mut self) {
        if self.no_space.is_some() {
            self.resume_if_due(true);
        }
        if let Some(full) = self.no_space.take() {
            drop_kept(
                "sluice stopped while its audit disk was full",
                full.kept.len(),
            );
        }
        if let Err(failure) = self.flush_unsynced() {
            self.fail(&failure);
        }
        if let Some(active) = self.active.as_mut() {
            // A closed file holds its records alone.
            if let Err(error) = active.trim().and_then(|()| active.file.sync_all()) {
                tracing::error!(alert = true, %error, path = %self.settings.path.display(), "cannot trim the audit file at close");
            }
        }
        if self.settings.fsync == Fsync::Always && self.head_synced_at.is_some() {
            // The head's last sync may be a moment old: bring it level.
            if let Err(error) = self.head_file.sync() {
                tracing::error!(alert = true, %error, path = %self.settings.head_path.display(), "cannot sync the audit head file at close");
            }
        }
    }

    /// The refusal of a record someone waits for while the sink cannot
    /// take it (counted for the outage's record).
    /// Seals `event` into the record after `link`, appended to the group's
    /// `lines`: the first record of a fresh file opens it (see
    /// [`chain::FILE_START`]).
    fn seal_into(
        &self,
        link: &Link,
        time: SystemTime,
        event: &EventBody,
        lines: &mut Vec<u8>,
    ) -> Result<Link, SealError> {
        let opens_file =
            lines.is_empty() && self.active.as_ref().is_some_and(|active| active.len == 0);
        chain::seal_body_into(
            &self.settings.key,
            link,
            &self.settings.instance,
            time,
            event,
            opens_file,
            lines,
        )
    }

    fn refusal(&self) -> AuditError {
        self.state
            .refuse_if_failed()
            .err()
            .unwrap_or(AuditError::Closed)
    }

    /// A write failed. A full disk is waited out: the sink refuses records
    /// for now, keeps what no one waits on, and tries again (`true`); any
    /// other failure fails it for good (`false`). `kept` are records no
    /// one waits on that were being written, in order.
    fn failed(&mut self, failure: &WriteFailure, kept: Vec<(EventBody, SystemTime)>) -> bool {
        if !failure.no_space() {
            self.fail(failure);
            return false;
        }
        let now = Instant::now();
        match &mut self.no_space {
            Some(full) => {
                full.retry_at = now + NO_SPACE_RETRY;
                for (event, at) in kept.into_iter().rev() {
                    full.kept_bytes += event.encoded_len();
                    full.kept.push_front((event, at));
                }
                if full.alerted_at.elapsed() >= NO_SPACE_REALERT {
                    full.alerted_at = now;
                    tracing::error!(alert = true, cause = %failure, kept = full.kept.len(), "audit disk still full: statements are still refused");
                }
            }
            None => {
                self.state.unavailable(failure.to_string());
                let kept_bytes = kept.iter().map(|(event, _)| event.encoded_len()).sum();
                self.no_space = Some(NoSpace {
                    kept: kept.into(),
                    kept_bytes,
                    outage_recorded: None,
                    retry_at: now + NO_SPACE_RETRY,
                    alerted_at: now,
                });
            }
        }
        true
    }

    /// Keeps a record no one waits on while the disk is full, up to
    /// [`MAX_KEPT_BYTES`]; past that, the sink fails for good.
    fn keep(&mut self, event: EventBody, at: SystemTime) {
        let Some(full) = self.no_space.as_mut() else {
            return;
        };
        full.kept_bytes += event.encoded_len();
        full.kept.push_back((event, at));
        if full.kept_bytes > MAX_KEPT_BYTES {
            self.fail_for_good(format!(
                "the audit disk stayed full past {} MiB of records kept for it",
                MAX_KEPT_BYTES >> 20
            ));
        }
    }

    /// While the disk is full, once it is time (or at once, `now`): writes
    /// what was kept and the outage's record, in one commit. Once that is
    /// written, records are taken again.
    fn resume_if_due(&mut self, now: bool) {
        if self.no_space.is_none() {
            return;
        }
        if let Err(AuditError::Failed(cause)) = self.state.refuse_if_stopped() {
            // Failed meanwhile from outside the writer (a record refused):
            // nothing more is written.
            self.fail_for_good(cause.to_string());
            return;
        }
        let Some(full) = self.no_space.as_mut() else {
            return;
        };
        if !now && Instant::now() < full.retry_at {
            return;
        }
        let kept: Vec<(EventBody, SystemTime)> = full.kept.drain(..).collect();
        full.kept_bytes = 0;
        let refusals = self.state.refusals();
        let outage = if full.outage_recorded == Some(refusals) {
            None
        } else {
            match self.state.outage_record(kept.len()) {
                Some(outage) => Some(outage),
                None => return,
            }
        };
        if self.active.is_none() {
            // A rotation the full disk cut short left no active file: it is
            // opened first (the old one, or a fresh one), so that the first
            // record knows whether it opens its file. One that cannot be
            // made yet fails the write below, as it would have.
            self.active = ActiveFile::open(&self.settings.path).ok();
        }
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let mut link = self.link;
        let sealed = kept
            .iter()
            .map(|(event, at)| (event, *at))
            .chain(outage.as_ref().map(|outage| (outage, SystemTime::now())))
            .try_for_each(|(event, at)| {
                let sealed = self.seal_into(&link, at, event, &mut lines);
                sealed.map(|next| link = next)
            });
        if let Err(refused) = sealed {
            self.fail_for_good(format!("a kept record could not be sealed: {refused}"));
            return;
        }
        let records = kept.len() + usize::from(outage.is_some());
        // Nothing to write but the head, when the outage's record is in
        // already and nothing was kept since.
        let written = if records == 0 {
            self.write_head(&link).map_err(GroupFailure::unwritten)
        } else {
            self.write_group(&lines, &link, true)
        };
        match written {
            Ok(()) => {
                if records > 0 {
                    self.publish(link, records, lines.len());
                }
                self.no_space = None;
                self.state.recovered();
                if let Err(failure) = self.rotate_if_due() {
                    self.failed(&failure, Vec::new());
                }
            }
            Err(GroupFailure {
                failure,
                records_written: true,
            }) => {
                // What was kept is in the chain now, and so is the outage's
                // record; the head names them at the next try.
                self.publish(link, records, lines.len());
                self.failed(&failure, Vec::new());
                if let Some(full) = self.no_space.as_mut()
                    && outage.is_some()
                {
                    full.outage_recorded = Some(refusals);
                }
            }
            Err(GroupFailure { failure, .. }) => {
                self.failed(&failure, kept);
            }
        }
        if lines.capacity() <= KEPT_BUFFER {
            self.lines = lines;
        }
    }

    /// One write of all the group's lines, one sync, then the head. Under
    /// `Always` the sync is skipped for a group no one waits for (outcome
    /// records), unless the data was last synced [`HEAD_SYNC_INTERVAL`] ago:
    /// each sync costs the disk's latency and, on a VM, much CPU.
    ///
    /// A write or sync that fails is cut from the file again, as if never
    /// made. A head write that fails is not: the records are whole by then,
    /// and part of the head may have reached its file already, naming them
    /// (one `pwrite` of both slots can stop halfway on a full disk). Cutting
    /// them then would leave a head naming records that are not there, and
    /// sluice would refuse to start again ("cut short"). They stay in the
    /// chain instead, and the head names them at the next commit that
    /// writes it; a crash before that finds records beyond the head, which
    /// recovery adopts.
    fn write_group(
        &mut self,
        lines: &[u8],
        link: &Link,
        awaited: bool,
    ) -> Result<(), GroupFailure> {
        let start = self.active.as_ref().map(|active| active.len);
        let head_due = match self.write_records(lines, awaited) {
            Ok(head_due) => head_due,
            Err(failure) => {
                if let (Some(start), Some(active)) = (start, self.active.as_mut()) {
                    // Not written after all: the next commit writes from
                    // `start`.
                    active.forget_write(start).map_err(|source| {
                        GroupFailure::unwritten(WriteFailure::new(
                            "cut a failed write from",
                            &self.settings.path,
                        )(source))
                    })?;
                }
                return Err(GroupFailure::unwritten(failure));
            }
        };
        if head_due {
            self.write_head(link).map_err(|failure| GroupFailure {
                failure,
                records_written: true,
            })?;
        }
        Ok(())
    }

    /// [`write_group`](Self::write_group)'s write and sync of the records;
    /// `true` when the head is to name them now.
    fn write_records(&mut self, lines: &[u8], awaited: bool) -> Result<bool, WriteFailure> {
        let path = &self.settings.path;
        if self.active.is_none() && self.no_space.is_some() {
            // A rotation the full disk cut short: the file at the path is
            // the old one (not renamed) or none yet (not created).
            self.active = Some(ActiveFile::open(path).map_err(WriteFailure::new(CREATE, path))?);
        }
        let Some(active) = self.active.as_mut() else {
            return Err(WriteFailure::new(APPEND, path)(io::Error::other(
                "the file was closed after an earlier failure",
            )));
        };
        active
            .append(lines)
            .map_err(WriteFailure::new(APPEND, path))?;
        let sync_data = self.settings.fsync == Fsync::Always
            && (awaited
                || self
                    .data_synced_at
                    .is_none_or(|synced| synced.elapsed() >= HEAD_SYNC_INTERVAL));
        if sync_data {
            self.sync_records()?;
        } else if self.settings.fsync == Fsync::Always {
            // The head must never name records a power loss can take: the
            // kernel writes files back in any order, so a head naming
            // unsynced records could reach the disk without them, and the
            // trail would read as cut short. It names these once they are
            // synced, by the next commit or within UNSYNCED_FLUSH.
            self.unsynced_since.get_or_insert_with(Instant::now);
            return Ok(false);
        }
        Ok(true)
    }

    /// Writes the head naming `link` (synced under `Always` at most every
    /// [`HEAD_SYNC_INTERVAL`]).
    fn write_head(&mut self, link: &Link) -> Result<(), WriteFailure> {
        let head = chain::head_line(&self.settings.key, link);
        let sync_head = self.settings.fsync == Fsync::Always
            && self
                .head_synced_at
                .is_none_or(|synced| synced.elapsed() >= HEAD_SYNC_INTERVAL);
        self.head_file
            .write(&head, sync_head)
            .map_err(|(action, source)| {
                WriteFailure::new(action, &self.settings.head_path)(source)
            })?;
        if sync_head {
            self.head_synced_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Under `Always`: syncs records written but not synced yet, then
    /// writes the head naming them.
    fn flush_unsynced(&mut self) -> Result<(), WriteFailure> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        self.sync_records()?;
        let link = self.link;
        self.write_head(&link)
    }

    /// `fdatasync`s the active file: every record written is on the disk.
    fn sync_records(&mut self) -> Result<(), WriteFailure> {
        let path = &self.settings.path;
        let Some(active) = self.active.as_mut() else {
            return Err(WriteFailure::new("fdatasync", path)(io::Error::other(
                "the file was closed after an earlier failure",
            )));
        };
        active
            .file
            .sync_data()
            .map_err(WriteFailure::new("fdatasync", path))?;
        self.data_synced_at = Some(Instant::now());
        self.unsynced_since = None;
        Ok(())
    }

    /// When records written but not synced must be synced by (under
    /// `Always`), if there are any.
    fn unsynced_deadline(&self) -> Option<Instant> {
        self.unsynced_since.map(|since| since + UNSYNCED_FLUSH)
    }

    /// Makes a commit visible to the handles.
    fn publish(&mut self, link: Link, records: usize, bytes: usize) {
        self.link = link;
        self.state.committed(link, records, bytes);
    }

    /// Fails the log and stops appending to the active file.
    fn fail(&mut self, failure: &WriteFailure) {
        self.fail_for_good(failure.to_string());
    }

    /// Fails the log for good: it stops appending to the active file, and
    /// what a full disk kept is dropped, counted in the alert.
    fn fail_for_good(&mut self, cause: String) {
        self.active = None;
        self.state.fail(cause);
        if let Some(full) = self.no_space.take() {
            drop_kept("the audit trail failed", full.kept.len());
        }
    }

    /// Rotates the active file when it is too big or too old.
    fn rotate_if_due(&mut self) -> Result<(), WriteFailure> {
        let Some(active) = &self.active else {
            return Ok(());
        };
        let too_big = self
            .settings
            .rotate_bytes
            .is_some_and(|limit| active.len > limit);
        let too_old = self.settings.rotate_after.is_some_and(|limit| {
            SystemTime::now()
                .duration_since(active.since)
                .is_ok_and(|age| age >= limit)
        });
        if active.len == 0 || !(too_big || too_old) {
            return Ok(());
        }
        let path = &self.settings.path.clone();
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        active
            .trim()
            .map_err(WriteFailure::new("trim the space allocated ahead in", path))?;
        active
            .file
            .sync_all()
            .map_err(WriteFailure::new("fsync", path))?;
        if self.unsynced_since.take().is_some() {
            // Synced with the file: the head may name them now.
            let link = self.link;
            self.write_head(&link)?;
        }
        self.active = None;
        let rotated = rotate_away(path).map_err(WriteFailure::new(ROTATE, path))?;
        self.active = Some(ActiveFile::open(path).map_err(WriteFailure::new(CREATE, path))?);
        sync_directory_of(path).map_err(WriteFailure::new("sync the directory of", path))?;
        tracing::info!(
            rotated = %rotated.display(),
            last_seq = self.link.seq,
            "audit file rotated"
        );
        Ok(())
    }
}

/// Says that `records` kept for a sink that could not write were dropped.
pub(crate) fn drop_kept(why: &str, records: usize) {
    if records > 0 {
        tracing::error!(
            alert = true,
            records,
            "{why}: records kept for it (outcomes, session ends, failed logins, what \
             recovery found at start) were dropped"
        );
    }
}

/// Whether the writer goes on after a commit.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Where the chain on disk ends, and what must be set aside first.
struct Recovered {
    /// The last complete record, or [`Link::GENESIS`] for a new chain.
    link: Link,
    /// What was found at the end of the active file that makes it be
    /// renamed away before the chain continues.
    set_aside: Option<String>,
    /// The bytes after the last record, where the chain ends (a record a
    /// crash tore), and the file they are in.
    torn: Option<(PathBuf, Vec<u8>)>,
    /// Zeros inside the newest data, and the file they are in.
    hole: Option<(PathBuf, Hole)>,
}

/// Finds where the chain on disk ends and checks it against the head.
fn recover(settings: &LogSettings) -> Result<Recovered, AuditError> {
    let path = &settings.path;
    let untrusted = |reason: String| AuditError::Untrusted {
        path: path.clone(),
        reason,
    };
    let io = |action, file: &Path| {
        let file = file.to_path_buf();
        move |source| AuditError::Io {
            action,
            path: file,
            source,
        }
    };
    let slots = read_head(&settings.head_path, &settings.key)?;
    let head = slots.as_ref().map(|slots| slots.newest);
    let files = chain_files(path).map_err(io("list the files of", path))?;

    // Zeros inside the data: writes that never reached the disk while
    // later ones did (a power loss), or records wiped by hand. Either way
    // the chain is broken there, and writing on would bury the break.
    // The records before the hole are the ones to go on from. Looked for
    // in the newest file that holds data: the active file, or the file an
    // earlier start set aside and could not write its recovery record
    // after (it stopped on a full disk, or was killed).
    let hole = newest_hole(&files).map_err(io("read the files of", path))?;
    let mut last = Link::GENESIS;
    let mut torn = None;
    let mut newest_data = true;
    for file in files.iter().rev() {
        let in_hole_file = hole.as_ref().is_some_and(|(holed, _)| holed == file);
        let tail = match &hole {
            Some((_, hole)) if in_hole_file => {
                File::open(file).and_then(|f| tail_of(&f, hole.zero_at))
            }
            _ => read_tail(file),
        }
        .map_err(io("read", file))?;
        // Torn bytes where the data ends are a crash's: in the active file,
        // or in the newest rotated file when the active file holds nothing
        // (an earlier start set the torn file aside, and stopped or crashed
        // before its recovery record could be written: a full disk). Those
        // before a hole are the hole's.
        let torn_here = (newest_data && !tail.torn.is_empty() && !in_hole_file)
            .then(|| (file.clone(), tail.torn.clone()));
        newest_data &= tail.last_line.is_none() && tail.torn.is_empty();
        if let Some(line) = tail.last_line {
            let record = chain::open_line(&settings.key, &line).map_err(|refused| {
                untrusted(format!(
                    "the last record of {} does not open with the key ({refused}): \
                     a wrong key, or the file was changed",
                    file.display()
                ))
            })?;
            last = record.link();
            // Not after a clean stop, though: sluice finished that file
            // whole, and bytes after its last record were added later,
            // for verify to report and sluice not to vouch for.
            let clean_stop =
                record.fields.get("event").and_then(Value::as_str) == Some(GATEWAY_STOP);
            if !(clean_stop && file != path) {
                torn = torn.or(torn_here);
            }
            break;
        }
        torn = torn.or(torn_here);
    }

    let mut found = Vec::new();
    match head {
        None if last.seq == 0 => {}
        None => {
            return Err(untrusted(format!(
                "the head file {} is missing, but the trail holds records up to seq {}",
                settings.head_path.display(),
                last.seq
            )));
        }
        Some(head) if head == last => {}
        Some(head) if head.seq > last.seq => {
            let lost = hole
                .as_ref()
                .map(|(_, hole)| {
                    format!(
                        ", before zero bytes at offset {} (records lost there: a power loss \
                         under fsync = \"batch\"?, or wiped)",
                        hole.zero_at
                    )
                })
                .unwrap_or_default();
            return Err(untrusted(format!(
                "the trail was cut short: the head names seq {} but the last record is seq {}{lost}",
                head.seq, last.seq
            )));
        }
        Some(head) if head.seq == last.seq => {
            return Err(untrusted(format!(
                "the last record (seq {}) is not the one the head names",
                last.seq
            )));
        }
        Some(head) => {
            let mac_at_head =
                mac_of(&files, head.seq, &settings.key).map_err(io("read the files of", path))?;
            if mac_at_head != Some(head.mac) {
                return Err(untrusted(format!(
                    "the head names seq {} with a MAC that no record of the trail has",
                    head.seq
                )));
            }
            found.push(format!(
                "records beyond the head (seq {} to {}; the head names seq {}): \
                 written, but the head was not updated (a crash between the two?)",
                head.seq + 1,
                last.seq,
                head.seq
            ));
        }
    }
    if let Some(refused) = slots.and_then(|slots| slots.other_refused) {
        // Every head is copied into both slots, one after the other: a
        // crash tears at most one, and the other holds the head before (the
        // records the new one was to name then lie beyond it, found above)
        // or the new one. Neither can name an older head than the newest
        // written, so the trail was checked against the newest above.
        found.push(format!(
            "a torn slot in the head file ({refused}): a crash while the head was written"
        ));
    }
    if let Some((holed, hole)) = &hole {
        let place = match holed == path {
            true => String::new(),
            false => format!(" of {}", holed.display()),
        };
        found.push(format!(
            "zero bytes at offset {}{place}, after the records the head names: writes that \
             never reached the disk (a power loss?)",
            hole.zero_at
        ));
    }
    if let Some((_, torn)) = &torn {
        let claims = chain::peek_seq(torn)
            .map(|seq| format!(", claiming seq {seq}"))
            .unwrap_or_default();
        found.push(format!(
            "a torn record at its end ({} bytes without a newline{claims}): \
             a crash during a write",
            torn.len()
        ));
    }
    Ok(Recovered {
        link: last,
        set_aside: (!found.is_empty()).then(|| found.join("; ")),
        torn,
        hole,
    })
}

/// The [`Hole`] in the newest of `files` that holds any data, and that
/// file.
fn newest_hole(files: &[PathBuf]) -> io::Result<Option<(PathBuf, Hole)>> {
    for path in files.iter().rev() {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if data_len(&file)? > 0 {
            return Ok(hole_in(&file)?.map(|hole| (path.clone(), hole)));
        }
    }
    Ok(None)
}

/// The record that opens the fresh file after recovery set the last one
/// aside: what was found, the file it is kept as, and — where a crash tore
/// a record — the torn bytes' length and SHA-256. `sluice audit verify`
/// takes torn bytes in the middle of the chain for a crash only when the
/// record after them accounts for them so: bytes appended to a finished
/// file by hand are a problem, not a note.
fn recovery_record(
    found: &str,
    active: &Path,
    kept_as: Option<&Path>,
    torn: Option<&(PathBuf, Vec<u8>)>,
    hole: Option<&(PathBuf, Hole)>,
) -> Result<EventBody, chain::SealError> {
    let file_name = |path: &Path| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    };
    let mut body = EventBody::new(TRAIL_RECOVERED);
    body.field("found", found)?;
    if let Some(name) = kept_as.and_then(file_name) {
        body.field("set_aside", &name)?;
    }
    if let Some((file, bytes)) = torn {
        // Where the torn bytes lie now: the active file just set aside, or
        // the rotated file they were in already.
        let lies_in = match kept_as {
            Some(kept_as) if file == active => kept_as,
            _ => file.as_path(),
        };
        body.field("torn_file", &file_name(lies_in))?
            .field("torn_bytes", &bytes.len())?
            .field("torn_sha256", &torn_bytes_digest(bytes))?;
    }
    if let Some((file, hole)) = hole {
        let lies_in = match kept_as {
            Some(kept_as) if file == active => kept_as,
            _ => file.as_path(),
        };
        body.field("hole_file", &file_name(lies_in))?
            .field("hole_from", &hole.from)?
            .field("hole_bytes", &hole.len)?
            .field("hole_sha256", &hole.sha256)?;
    }
    Ok(body)
}

/// The event of [`recovery_record`].
pub(crate) const TRAIL_RECOVERED: &str = "trail_recovered";

/// How a recovery record names torn bytes, and how verify checks them:
/// their SHA-256, in hex.
pub(crate) fn torn_bytes_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    chain::encode_hex(&sha2::Sha256::digest(bytes))
}
/// The event of a clean stop's record (see `audit::Event::GatewayStop`).
const GATEWAY_STOP: &str = "gateway_stop";

/// Renames the active file away (as the next rotated file) after a warning
/// that says why, so that its evidence is kept as it is; returns the name
/// it is kept under (`None` when it held nothing to keep).
fn set_aside_active_file(
    path: &Path,
    found: &str,
    last: Link,
) -> Result<Option<PathBuf>, AuditError> {
    let io = |action| {
        move |source| AuditError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let active_len = File::open(path)
        .and_then(|file| data_len(&file))
        .unwrap_or(0);
    if active_len == 0 {
        // What was found lies in a rotated file already (the newest one
        // ends the chain); there is nothing here to set aside.
        tracing::warn!(
            file = %path.display(),
            continues_after_seq = last.seq,
            "audit trail {} holds {found}; the chain continues after seq {}",
            path.display(),
            last.seq,
        );
        return Ok(None);
    }
    let rotated = rotate_away(path).map_err(io("set aside"))?;
    sync_directory_of(path).map_err(io("sync the directory of"))?;
    tracing::warn!(
        file = %path.display(),
        kept_as = %rotated.display(),
        continues_after_seq = last.seq,
        "audit file {} holds {found}; it is kept unchanged as {} and the chain continues \
         after seq {} in a fresh file",
        path.display(),
        rotated.display(),
        last.seq,
    );
    Ok(Some(rotated))
}

/// Reads the head file: `None` when it is missing or empty (a crash before
/// its first write); a head that does not parse or verify in either slot is
/// refused.
fn read_head(path: &Path, key: &ChainKey) -> Result<Option<HeadSlots>, AuditError> {
    let bytes = read_head_file(path).map_err(|source| AuditError::Io {
        action: "read head file",
        path: path.to_path_buf(),
        source,
    })?;
    let Some(bytes) = bytes.filter(|bytes| !bytes.is_empty()) else {
        return Ok(None);
    };
    chain::parse_head_file(key, &bytes)
        .map(Some)
        .map_err(|refused| AuditError::Untrusted {
            path: path.to_path_buf(),
            reason: format!("the head file {} is refused: {refused}", path.display()),
        })
}

/// The end of a file: its last complete line and what follows it.
struct Tail {
    /// The last line that ends with a newline (newline included).
    last_line: Option<Vec<u8>>,
    /// Bytes after the last newline: a torn record, or empty.
    torn: Vec<u8>,
}

/// Reads a file from its end until its last complete line is found, without
/// reading the whole file.
fn read_tail(path: &Path) -> io::Result<Tail> {
    let file = File::open(path)?;
    let len = data_len(&file)?;
    tail_of(&file, len)
}

/// [`read_tail`] of the file's first `len` bytes.
fn tail_of(file: &File, len: u64) -> io::Result<Tail> {
    let mut window = TAIL_WINDOW.min(len);
    loop {
        let start = len - window;
        let mut bytes = vec![0; usize::try_from(window).map_err(io::Error::other)?];
        file.read_exact_at(&mut bytes, start)?;
        let Some(last_newline) = bytes.iter().rposition(|&byte| byte == b'\n') else {
            if start == 0 {
                return Ok(Tail {
                    last_line: None,
                    torn: bytes,
                });
            }
            window = len.min(window * 2);
            continue;
        };
        let line_start = match bytes[..last_newline]
            .iter()
            .rposition(|&byte| byte == b'\n')
        {
            Some(newline) => newline + 1,
            None if start == 0 => 0,
            None => {
                window = len.min(window * 2);
                continue;
            }
        };
        return Ok(Tail {
            torn: bytes[last_newline + 1..].to_vec(),
            last_line: Some(bytes[line_start..=last_newline].to_vec()),
        });
    }
}

/// The MAC of the record with `seq`, searching the files newest first; the
/// genesis MAC for seq 0. Only recovery after a crash needs this.
fn mac_of(files: &[PathBuf], seq: u64, key: &ChainKey) -> io::Result<Option<[u8; 32]>> {
    if seq == 0 {
        return Ok(Some(chain::GENESIS_MAC));
    }
    for path in files.iter().rev() {
        for line in RecordLines::new(File::open(path)?) {
            if let Ok(record) = chain::open_line(key, &line?)
                && record.seq == seq
            {
                return Ok(Some(record.mac));
            }
        }
    }
    Ok(None)
}

/// Opens a file of the trail to read it: a regular file, not a link to
/// one (nor to a device, which never ends, or a pipe, which may never
/// answer). sluice makes none of those; one in the trail's place was put
/// there by someone else.
pub fn open_trail_file(path: &Path) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The lines of a file, each with its newline; the last one lacks it if the
/// file ends in a torn record. The data ends at the first NUL byte (space
/// allocated ahead reads as zeros, and no record holds one); anything but
/// zeros after it is an error.
pub struct RecordLines {
    reader: BufReader<File>,
    /// The end of the data has been reached.
    ended: bool,
}

impl RecordLines {
    /// Reads `file` from its current position.
    pub fn new(file: File) -> RecordLines {
        RecordLines {
            reader: BufReader::new(file),
            ended: false,
        }
    }

    /// After the end of the data: only zeros may follow (read a piece at
    /// a time: space allocated ahead may be large).
    fn rest_is_zeros(&mut self) -> io::Result<()> {
        loop {
            let piece = self.reader.fill_buf()?;
            if piece.is_empty() {
                return Ok(());
            }
            if piece.iter().any(|&byte| byte != 0) {
                return Err(io::Error::other(DataAfterEnd));
            }
            let read = piece.len();
            self.reader.consume(read);
        }
    }
}

/// What [`RecordLines`] finds when bytes other than zeros follow the end
/// of the data (its first NUL). In a finished file that is bytes added
/// where no record may be. In a file sluice is writing it is also what a
/// reader sees in the middle of a write: the record is copied into the
/// mapped file while the reader copies the same pages out, and it may see
/// a later part of the record before an earlier one. So a reader of a live
/// trail tells this apart from a file it cannot read, and looks again.
#[derive(Debug, thiserror::Error)]
#[error("bytes other than zeros follow the end of the records")]
pub struct DataAfterEnd;

impl DataAfterEnd {
    /// Whether `error`, from [`RecordLines`], is this.
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<DataAfterEnd>())
    }
}

/// The longest line a trail's reader takes: far beyond any record sluice
/// writes (a statement is at most `max_message_bytes`, 1 GiB at the most),
/// so that a hostile file of one endless line is reported, not read into
/// memory whole.
const MAX_LINE_BYTES: usize = 2 << 30;

impl Iterator for RecordLines {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if self.ended {
            return None;
        }
        // A piece at a time, up to the line's newline or the data's end (a
        // NUL): a file of zeros is never gathered into one line.
        let mut line = Vec::new();
        loop {
            let piece = match self.reader.fill_buf() {
                Ok(piece) => piece,
                Err(error) => return Some(Err(error)),
            };
            if piece.is_empty() {
                // A last line without its newline: a torn record.
                return (!line.is_empty()).then_some(Ok(line));
            }
            let stop = piece.iter().position(|&byte| byte == b'\n' || byte == 0);
            let taken = stop.map_or(piece.len(), |at| at + usize::from(piece[at] == b'\n'));
            if line.len() + taken > MAX_LINE_BYTES {
                self.ended = true;
                return Some(Err(io::Error::other(format!(
                    "a line longer than {MAX_LINE_BYTES} bytes: not a record"
                ))));
            }
            line.extend_from_slice(&piece[..taken]);
            let at_nul = stop.is_some_and(|at| piece[at] == 0);
            self.reader.consume(taken);
            if at_nul {
                self.ended = true;
                if let Err(error) = self.rest_is_zeros() {
                    return Some(Err(error));
                }
                return (!line.is_empty()).then_some(Ok(line));
            }
            if stop.is_some() {
                return Some(Ok(line));
            }
        }
    }
}

/// The files of the trail whose active file is `path`, in chain order: the
/// rotated files `<path>.NNNNNN` by number, then `path` itself if it exists.
pub fn chain_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(path)?
        .into_iter()
        .map(|(_, file)| file)
        .collect();
    match fs::symlink_metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(files)
}

/// The rotated files of the trail whose active file is `path`, with their
/// numbers, in order.
pub fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "audit file path has no file name",
        ));
    };
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(b'.');
    let mut rotated = Vec::new();
    for entry in fs::read_dir(directory_of(path))? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let Some(digits) = entry_name.as_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        if digits.len() < 6 || !digits.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let number = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok());
        if let Some(number) = number {
            rotated.push((number, path.with_file_name(entry_name)));
        }
    }
    rotated.sort();
    Ok(rotated)
}

/// Renames the active file to the next rotated name and returns that name.
fn rotate_away(path: &Path) -> io::Result<PathBuf> {
    let next = match rotated_files(path)?.last() {
        None => 1,
        // A file numbered u64::MAX was not made by sluice (it would take
        // that many rotations): wrapping would name the next file .000000,
        // which sorts before every other and breaks the chain's order.
        Some((number, newest)) => number.checked_add(1).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has the largest rotation number there can be: no file can follow it \
                     (move it away if sluice did not make it)",
                    newest.display()
                ),
            )
        })?,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{next:06}"));
    let rotated = path.with_file_name(name);
    // Never replace a file: the numbers only grow, so this means someone
    // else is writing here.
    if fs::symlink_metadata(&rotated).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists already", rotated.display()),
        ));
    }
    fs::rename(path, &rotated)?;
    Ok(rotated)
}

/// The directory a path's file lives in (`.` for a bare file name).
pub(super) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Syncs a file's directory, so that a created or renamed name survives a
/// power loss.
pub(super) fn sync_directory_of(path: &Path) -> io::Result<()> {
    File::open(directory_of(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::{self, FindingKind};
    use serde_json::json;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    fn key() -> ChainKey {
        ChainKey::from_bytes(&[42u8; 32]).expect("long enough")
    }

    fn settings(dir: &Path) -> LogSettings {
        LogSettings {
            path: dir.join("audit.jsonl"),
            head_path: dir.join("audit.jsonl.head"),
            key: key(),
            instance: "gw-test".to_string(),
            fsync: Fsync::Always,
            rotate_bytes: None,
            rotate_after: None,
        }
    }

    fn statement(n: u64) -> Map<String, Value> {
        match json!({"event": "statement", "session": format!("s{}", n % 7), "n": n}) {
            Value::Object(map) => map,
            _ => unreachable!("a json object literal"),
        }
    }

    /// Opens the log, records three statements and closes it.
    async fn write_three_records(settings: &LogSettings) {
        let log = AuditLog::open(settings.clone()).expect("opens");
        for n in 0..3 {
            log.record(statement(n)).await.expect("durable");
        }
        log.close().await;
    }

    /// Records two statements, then puts back the head from before the
    /// second: as a crash after the records were written, before the head
    /// was.
    async fn write_a_record_beyond_the_head(settings: &LogSettings) {
        let log = AuditLog::open(settings.clone()).expect("opens");
        log.record(statement(0)).await.expect("durable");
        let old_head = fs::read(&settings.head_path).expect("head");
        log.record(statement(1)).await.expect("durable");
        log.close().await;
        fs::write(&settings.head_path, old_head).expect("writes");
    }

    fn lines_of(path: &Path) -> Vec<Vec<u8>> {
        let file = File::open(path).expect("audit file exists");
        RecordLines::new(file)
            .collect::<io::Result<_>>()
            .expect("readable")
    }

    fn assert_verifies(settings: &LogSettings) -> verify::Report {
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        assert!(report.ok(), "{report}");
        report
    }

    /// Records are copied into the allocated space through a mapped
    /// window, across its edges and past the space allocated at first, and
    /// a record larger than a window gets one of its own; what reaches the
    /// file is the chain, whole.
    #[tokio::test]
    async fn records_are_copied_through_a_mapped_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = LogSettings {
            fsync: Fsync::Batch,
            ..settings(dir.path())
        };
        let log = AuditLog::open(settings.clone()).expect("opens");
        let mut sizes: Vec<usize> = (0..40).map(|n| 3000 + 97 * n).collect();
        sizes.extend([WINDOW_BYTES as usize * 3, PREALLOCATE as usize, 10]);
        for (n, size) in sizes.iter().enumerate() {
            let mut event = statement(n as u64);
            event.insert("data".into(), json!("x".repeat(*size)));
            log.record(event).await.expect("durable");
        }
        let mapped = fs::read_to_string("/proc/self/maps").expect("maps");
        let path = settings.path.to_string_lossy();
        let reserves =
            window::reserves_allocated_space(&File::open(&settings.path).expect("opens"));
        assert_eq!(
            mapped.lines().any(|line| line.ends_with(&*path)),
            reserves,
            "the file is mapped where its filesystem reserves allocated space"
        );
        log.close().await;

        let lines = lines_of(&settings.path);
        assert_eq!(lines.len(), sizes.len());
        for (line, size) in lines.iter().zip(&sizes) {
            let record: Value = serde_json::from_slice(line).expect("json");
            assert_eq!(record["data"].as_str().map(str::len), Some(*size));
        }
        assert_eq!(assert_verifies(&settings).records, sizes.len() as u64);
        let file = File::open(&settings.path).expect("opens");
        assert_eq!(
            file.metadata().expect("stat").len(),
            data_len(&file).expect("reads")
        );
    }

    /// Each append that fits the allocated space goes through the window,
    /// on a filesystem that reserves that space (skipped, saying so, where
    /// the temporary directory is on another).
    #[test]
    fn appends_that_fit_go_through_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut active = ActiveFile::open(&path).expect("opens");
        if !window::reserves_allocated_space(&active.file) {
            eprintln!("SKIPPED: the temporary directory's filesystem is not mapped");
            return;
        }
        let line = |n: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(n * 37 % 9000));
        let mut expected = Vec::new();
        for n in 0..200 {
            let line = line(n);
            active.append(line.as_bytes()).expect("appends");
            expected.extend_from_slice(line.as_bytes());
            let window = active.window.as_ref().expect("a window");
            assert!(window.covers(active.len - line.len() as u64, line.len()));
        }
        active.trim().expect("trims");
        assert!(active.window.is_none(), "unmapped before the file is cut");
        assert_eq!(fs::read(&path).expect("reads"), expected);
    }

    /// A live file has space allocated ahead of its records (zeros); the
    /// trail still verifies and reads, and a closed file holds its records
    /// alone.
    #[tokio::test]
    async fn space_is_allocated_ahead_and_given_back_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        for n in 0..10 {
            log.record(statement(n)).await.expect("durable");
        }
        let size = fs::metadata(&settings.path).expect("exists").len();
        let data = data_len(&File::open(&settings.path).expect("opens")).expect("reads");
        assert!(size >= PREALLOCATE && data < size, "{data} of {size}");
        assert_eq!(lines_of(&settings.path).len(), 10);
        assert_verifies(&settings);
        let read = crate::audit::read::read(&settings.path).expect("reads");
        assert_eq!((read.records.len(), read.unreadable), (10, 0));

        // Reopened with space allocated (as after a crash: a clean close
        // gives it back, so it is put back here), the chain goes on after
        // the data, not after the zeros.
        drop(log);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&settings.path)
            .expect("opens");
        file.set_len(file.metadata().expect("stat").len() + (1 << 20))
            .expect("extends");
        let log = AuditLog::open(settings.clone()).expect("reopens");
        // That space was a hole (`set_len`), which a mapped page must not
        // be: it is allocated again where the file is mapped.
        let metadata = fs::metadata(&settings.path).expect("exists");
        let mapped = window::reserves_allocated_space(&File::open(&settings.path).expect("opens"));
        assert!(
            !mapped || metadata.blocks() * 512 >= metadata.len(),
            "{} blocks for {} bytes",
            metadata.blocks(),
            metadata.len()
        );
        log.record(statement(10)).await.expect("durable");
        log.close().await;
        assert_eq!(
            fs::metadata(&settings.path).expect("exists").len(),
            data_len(&File::open(&settings.path).expect("opens")).expect("reads")
        );
        assert_eq!(assert_verifies(&settings).records, 11);

        // Bytes hidden after the zeros are not taken for the end of data.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&settings.path)
            .expect("opens");
        let end = file.metadata().expect("stat").len();
        file.write_all_at(&[0; 100], end).expect("writes");
        file.write_all_at(b"x", end + 100).expect("writes");
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        assert!(!report.ok(), "{report}");
        assert!(
            report
                .problems()
                .any(|finding| finding.kind == verify::FindingKind::DataAfterEnd),
            "{report}"
        );
        // A reader of a live trail looks again, and still reports it: the
        // bytes stay where no record may be.
        let report = verify::verify_live(
            &settings.path,
            Some(&settings.head_path),
            &settings.key,
            &[],
        );
        assert!(!report.ok(), "{report}");
    }

    /// Under `Batch` each caller writes its own record under the lock:
    /// records and outcomes from tasks on several threads still form one
    /// chain, each outcome after its statement, and nothing is written
    /// once the log is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_callers_write_themselves_into_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path());
        settings.fsync = Fsync::Batch;
        let log = AuditLog::open(settings.clone()).expect("opens");
        let mut tasks = Vec::new();
        for task in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..50 {
                    let seq = log
                        .record(statement(task * 100 + n))
                        .await
                        .expect("written");
                    let mut outcome = statement(task * 100 + n);
                    outcome.insert("event".into(), json!("outcome"));
                    outcome.insert("of".into(), json!(seq));
                    log.record_later(outcome);
                }
            }));
        }
        for task in tasks {
            task.await.expect("task ran");
        }
        // The last outcomes were held back: the thread writes them within
        // DEFERRED_FLUSH, with no statement coming to take them along.
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.head().seq < 800 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(log.head().seq, 800);
        let stats = log.stats();
        assert_eq!(stats.records, 800);
        // Outcomes rode along with the next statement's write: about one
        // write per statement, not one per record (a few flushes by the
        // thread on top).
        assert!(stats.commits < 500, "{} commits", stats.commits);
        let on_disk = data_len(&File::open(&settings.path).expect("exists")).expect("reads");
        assert_eq!(stats.bytes, on_disk);
        let other = log.clone();
        log.close().await;
        assert!(matches!(
            other.record(statement(1)).await,
            Err(AuditError::Closed)
        ));

        let report = assert_verifies(&settings);
        assert_eq!(report.records, 800);
        // Each outcome comes after the statement it is of.
        for line in lines_of(&settings.path) {
            let record = chain::open_line(&settings.key, &line).expect("opens");
            if record.fields["event"] == "outcome" {
                assert!(record.fields["of"].as_u64().expect("of") < record.seq);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_from_many_tasks_share_commits_and_form_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        let mut tasks = Vec::new();
        for task in 0..16 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..25 {
                    seqs.push(
                        log.record(statement(task * 100 + n))
                            .await
                            .expect("durable"),
                    );
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.expect("task ran"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());

        let stats = log.stats();
        assert_eq!(stats.records, 400);
        assert!(stats.commits < stats.records, "no group commit: {stats:?}");
        assert_eq!(log.head().seq, 400);
        let on_disk = data_len(&File::open(&settings.path).expect("exists")).expect("reads");
        assert_eq!(stats.bytes, on_disk);
        log.close().await;

        let report = assert_verifies(&settings);
        assert_eq!(report.records, 400);
        let head = fs::read(&settings.head_path).expect("head exists");
        let slots = chain::parse_head_file(&settings.key, &head).expect("head verifies");
        assert_eq!(slots.newest.seq, 400);
        assert_eq!(slots.other_refused, None);
    }

    #[tokio::test]
    async fn record_later_keeps_the_order_and_close_flushes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        let first = log.record(statement(0)).await.expect("durable");
        for n in 1..=50 {
            log.record_later(statement(n));
        }
        log.close().await;
        assert_eq!(first, 1);
        let lines = lines_of(&settings.path);
        assert_eq!(lines.len(), 51);
        for (index, line) in lines.iter().enumerate() {
            let record = chain::open_line(&settings.key, line).expect("opens");
            assert_eq!(record.fields["n"], json!(index));
        }
        assert_verifies(&settings);
    }

    /// Under `Always` the head names only records that are synced:
    /// outcomes, which no one waits for, are not synced by their own
    /// commit, so the head names them once the writer has synced them —
    /// within UNSYNCED_FLUSH when no statement comes to do it.
    #[tokio::test]
    async fn the_head_names_outcomes_once_they_are_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        let head = || {
            read_head(&settings.head_path, &settings.key)
                .expect("the head reads")
                .expect("a head")
                .newest
                .seq
        };
        assert_eq!(log.record(statement(0)).await.expect("durable"), 1);
        assert_eq!(head(), 1);
        let sent = Instant::now();
        log.record_later(statement(1));
        while log.stats().records < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if sent.elapsed() < UNSYNCED_FLUSH / 2 {
            // Written, not synced yet: not named yet.
            assert_eq!(head(), 1);
        }
        let named = Instant::now();
        while head() < 2 {
            assert!(
                named.elapsed() < Duration::from_secs(5),
                "the head never named the outcome"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // At close, the head names the last record.
        log.record_later(statement(2));
        log.close().await;
        assert_eq!(head(), 3);
        assert_verifies(&settings);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_flushes_queued_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        for n in 0..10 {
            log.record_later(statement(n));
        }
        drop(log);
        assert_eq!(lines_of(&settings.path).len(), 10);
        assert_verifies(&settings);
    }

    #[tokio::test]
    async fn reserved_fields_are_refused_and_the_log_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(settings(dir.path())).expect("opens");
        let mut event = statement(1);
        event.insert("seq".to_string(), json!(99));
        let refused = log.record(event).await;
        assert!(
            matches!(refused, Err(AuditError::Event(SealError::ReservedField(_)))),
            "{refused:?}"
        );
        assert_eq!(log.record(statement(2)).await.expect("durable"), 1);
    }

    #[tokio::test]
    async fn a_refused_outcome_record_fails_the_log_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(settings(dir.path())).expect("opens");
        let mut event = statement(1);
        event.insert("mac".to_string(), json!("forged"));
        log.record_later(event);
        assert!(matches!(
            log.record(statement(2)).await,
            Err(AuditError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn reopening_continues_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        for n in 0..5 {
            log.record(statement(n)).await.expect("durable");
        }
        let head = log.head();
        log.close().await;

        let log = AuditLog::open(settings.clone()).expect("reopens");
        assert_eq!(log.head(), head);
        assert_eq!(log.record(statement(5)).await.expect("durable"), 6);
        log.close().await;

        let lines = lines_of(&settings.path);
        assert_eq!(lines.len(), 6);
        let sixth = chain::open_line(&settings.key, &lines[5]).expect("opens");
        assert_eq!(sixth.prev, head.mac);
        assert_eq!(chain_files(&settings.path).expect("lists").len(), 1);
        assert_verifies(&settings);
    }

    #[tokio::test]
    async fn a_torn_tail_is_set_aside_and_the_chain_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        write_three_records(&settings).await;
        // A crash in the middle of writing record 4.
        let torn = b"{\"seq\":4,\"time\":\"2026-11-29T06:30:00.1";
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&settings.path)
            .expect("opens");
        file.write_all(torn).expect("appends");
        let torn_copy = fs::read(&settings.path).expect("readable");

        let log = AuditLog::open(settings.clone()).expect("recovers");
        // The fresh file opens with what recovery found.
        assert_eq!(log.head().seq, 4);
        assert_eq!(log.record(statement(3)).await.expect("durable"), 5);
        log.close().await;

        let set_aside = dir.path().join("audit.jsonl.000001");
        assert_eq!(fs::read(&set_aside).expect("kept"), torn_copy);
        let fresh = lines_of(&settings.path);
        assert_eq!(fresh.len(), 2);
        let recovery = chain::open_line(&settings.key, &fresh[0]).expect("opens");
        assert_eq!(recovery.fields["event"], TRAIL_RECOVERED);
        assert_eq!(recovery.fields["set_aside"], "audit.jsonl.000001");
        assert_eq!(recovery.fields["torn_file"], "audit.jsonl.000001");
        assert_eq!(recovery.fields["torn_bytes"], torn.len());
        let found = recovery.fields["found"].as_str().expect("text");
        assert!(found.contains("a torn record"), "{found}");
        let tailed = crate::audit::read::one_line(&Value::Object(recovery.fields.clone()));
        assert!(
            tailed.contains("recovered at start: a torn record")
                && tailed.contains("kept as audit.jsonl.000001"),
            "{tailed}"
        );

        let report = assert_verifies(&settings);
        assert_eq!(report.records, 5);
        let torn_finding = report
            .findings
            .iter()
            .find(|finding| matches!(finding.kind, FindingKind::Torn { continued: true }))
            .expect("the torn record is still reported");
        assert_eq!(torn_finding.file.as_deref(), Some(set_aside.as_path()));
        assert_eq!(torn_finding.line, Some(4));
        // And the recovery itself, as a note of what sluice found.
        let recovered = report
            .findings
            .iter()
            .find_map(|finding| match &finding.kind {
                FindingKind::Recovered(found) => Some((found, finding.severity)),
                _ => None,
            })
            .expect("the recovery is reported");
        assert!(
            recovered.0.contains("a torn record") && recovered.0.contains("audit.jsonl.000001"),
            "{recovered:?}"
        );
        assert_eq!(recovered.1, crate::audit::verify::Severity::Note);

        // Bytes added to the torn ones later are no crash's: the recovery
        // record's digest no longer matches.
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&set_aside)
            .expect("opens");
        file.write_all(b"0").expect("appends");
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        let problems: Vec<_> = report.problems().map(|finding| &finding.kind).collect();
        assert_eq!(
            problems,
            [
                &FindingKind::TornUnaccounted,
                &FindingKind::TornBytesMissing
            ],
            "{report}"
        );

        // Nor may the torn bytes be cut off: the recovery record names
        // them.
        let whole = torn_copy.len() - torn.len();
        fs::write(&set_aside, &torn_copy[..whole]).expect("cuts the torn bytes");
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        let problems: Vec<_> = report.problems().map(|finding| &finding.kind).collect();
        assert_eq!(problems, [&FindingKind::TornBytesMissing], "{report}");

        // The file moved away (the trail starts late) and its start
        // acknowledged (`archive` keeps the newest rotated file, which this
        // is): nothing to compare the recovery record with, and only a note.
        fs::remove_file(&set_aside).expect("moves the set-aside file away");
        crate::audit::archive::acknowledge_start(&settings.path, &settings.key)
            .expect("acknowledges the start");
        let report = assert_verifies(&settings);
        assert!(
            report
                .findings
                .iter()
                .any(|finding| finding.kind == FindingKind::StartAcknowledged),
            "{report}"
        );
    }

    /// Bytes without a newline appended to a finished (rotated) file by
    /// hand are a problem, not taken for a crash: no recovery record
    /// follows them.
    #[tokio::test]
    async fn bytes_appended_to_a_rotated_file_are_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path());
        settings.rotate_bytes = Some(1);
        write_three_records(&settings).await;
        let rotated = rotated_files(&settings.path).expect("lists");
        assert!(rotated.len() >= 2, "{rotated:?}");
        assert_verifies(&settings);

        let (_, first) = &rotated[0];
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(first)
            .expect("opens");
        file.write_all(br#"{"seq":2,"time":"2026"#)
            .expect("appends");
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        let problems: Vec<_> = report.problems().map(|finding| &finding.kind).collect();
        assert_eq!(problems, [&FindingKind::TornUnaccounted], "{report}");
        assert!(report.to_string().contains("added to the file"), "{report}");
    }

    #[tokio::test]
    async fn records_beyond_the_head_are_set_aside_and_kept_in_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        write_a_record_beyond_the_head(&settings).await;

        let log = AuditLog::open(settings.clone()).expect("recovers");
        assert_eq!(log.head().seq, 3, "the recovery record follows");
        assert_eq!(log.record(statement(2)).await.expect("durable"), 4);
        log.close().await;
        assert_eq!(chain_files(&settings.path).expect("lists").len(), 2);
        assert_eq!(assert_verifies(&settings).records, 4);
        let recovery =
            chain::open_line(&settings.key, &lines_of(&settings.path)[0]).expect("opens");
        assert_eq!(recovery.fields["event"], TRAIL_RECOVERED);
        assert!(recovery.fields.get("torn_sha256").is_none());
    }

    /// A head write that fails (a full disk under the head file) comes
    /// after the records are whole, and part of the head may have landed
    /// naming them: the records stay in the chain rather than being cut,
    /// so a restart finds either the head naming them or records beyond
    /// the head (adopted), never a head naming records that are gone. The
    /// outcome held back with them is written once, not kept and written
    /// again.
    #[tokio::test]
    async fn a_failed_head_write_keeps_its_records_and_a_restart_continues() {
        for head_landed in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut settings = settings(dir.path());
            settings.fsync = Fsync::Batch;
            let log = AuditLog::open(settings.clone()).expect("opens");
            log.record(statement(0)).await.expect("durable");
            let head_before = log.head();

            log.shared.files.lock().expect("not poisoned").head_file = HeadFile::on_a_full_device();
            let mut outcome = statement(1);
            outcome.insert("event".into(), json!("outcome"));
            log.record_later(outcome);
            match log.record(statement(2)).await {
                Err(AuditError::Unavailable(cause)) => {
                    assert!(cause.contains(WRITE_HEAD), "{cause}");
                    assert!(cause.contains("No space left"), "{cause}");
                }
                other => panic!("expected the trail unavailable, got {other:?}"),
            }
            // The outcome and the statement are in the chain and the file.
            let head_at_failure = log.head();
            assert_eq!(
                head_at_failure.seq,
                head_before.seq + 2,
                "landed {head_landed}"
            );
            assert_eq!(lines_of(&settings.path).len(), 3);
            // The writer tries again, twice here: the first try writes the
            // outage's record (its head fails again), the second only the
            // head, not a second record of the same outage.
            tokio::time::sleep(2 * NO_SPACE_RETRY + Duration::from_millis(500)).await;
            assert_eq!(log.head().seq, head_at_failure.seq + 1, "one outage record");
            // A statement refused meanwhile: the next try records the
            // outage again, its counts run on.
            assert!(matches!(
                log.record(statement(7)).await,
                Err(AuditError::Unavailable(_))
            ));
            tokio::time::sleep(NO_SPACE_RETRY + Duration::from_millis(300)).await;
            let head_after = log.head();
            log.close().await;
            let on_disk = lines_of(&settings.path);
            let events: Vec<String> = on_disk
                .iter()
                .map(|line| {
                    let record: Value = serde_json::from_slice(line).expect("json");
                    record["event"].as_str().unwrap_or("").to_owned()
                })
                .collect();
            assert_eq!(
                events,
                [
                    "statement",
                    "outcome",
                    "statement",
                    "audit_outage",
                    "audit_outage"
                ],
                "the outcome is written once, the outage's record once per change"
            );
            let counted = |line: &[u8]| {
                let outage: Value = serde_json::from_slice(line).expect("json");
                (outage["since"].clone(), outage["records_refused"].clone())
            };
            let (since, first) = counted(&on_disk[3]);
            let (since_again, second) = counted(&on_disk[4]);
            assert_eq!((first, second), (json!(1), json!(2)), "the refusals run on");
            assert_eq!(since, since_again, "one outage");
            assert_eq!(head_after.seq, head_before.seq + 4);

            if head_landed {
                // The head reached its file after all, naming the records
                // the failed commit wrote (the outage's came later).
                let named = chain::head_line(&settings.key, &head_at_failure);
                fs::write(&settings.head_path, [named.as_slice(), &named].concat())
                    .expect("writes the head");
            }
            let log = AuditLog::open(settings.clone()).expect("restarts");
            // The records beyond the head, then the recovery's record.
            assert_eq!(log.head().seq, head_before.seq + 5, "landed {head_landed}");
            log.record(statement(3)).await.expect("durable again");
            log.close().await;
            assert_eq!(assert_verifies(&settings).records, 7);
        }
    }

    /// Every head is copied into both slots of the head file, the first,
    /// then the second. A crash tears at most the one being copied: in the
    /// first, the other keeps the head before, with the records the new
    /// one was to name beyond it (set aside, and continued from); in the
    /// second, the other has the new head. Since both slots hold the newest
    /// head at rest, damaging one (or cutting the file to one) shows no
    /// older head to match a trail cut short.
    #[tokio::test]
    async fn a_torn_head_slot_is_recovered_from_and_no_slot_hides_a_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let intact = settings(dir.path());
        write_three_records(&intact).await;
        let head = fs::read(&intact.head_path).expect("head");
        let slot_seqs: Vec<u64> = head
            .chunks(chain::HEAD_LEN)
            .map(|slot| chain::parse_head(&intact.key, slot).expect("verifies").seq)
            .collect();
        assert_eq!(slot_seqs, [3, 3], "both slots hold the newest head");
        let lines = lines_of(&intact.path);
        let link = |n: usize| {
            chain::open_line(&intact.key, &lines[n])
                .expect("opens")
                .link()
        };
        let (before, newest) = (
            chain::head_line(&intact.key, &link(1)),
            chain::head_line(&intact.key, &link(2)),
        );
        // Commit 3's head copied halfway over commit 2's: new bytes, then old.
        let torn = [&newest[..100], &before[100..]].concat();
        // A fresh copy of the trail, its head file and audit file as given.
        let trail = |name: &str, head: &[u8], records: &[Vec<u8>]| {
            let place = dir.path().join(name);
            fs::create_dir(&place).expect("mkdir");
            let settings = settings(&place);
            fs::write(&settings.head_path, head).expect("writes the head");
            fs::write(&settings.path, records.concat()).expect("writes the records");
            settings
        };
        let problems = |settings: &LogSettings| -> Vec<FindingKind> {
            verify::verify(&settings.path, Some(&settings.head_path), &settings.key)
                .problems()
                .map(|finding| finding.kind.clone())
                .collect()
        };

        // Torn in the first slot: the second names record 2, record 3 is
        // beyond it.
        let first = trail("first", &[torn.clone(), before.clone()].concat(), &lines);
        assert_eq!(
            problems(&first),
            [
                FindingKind::HeadSlotRefused(chain::HeadError::BadMac),
                FindingKind::BeyondHead { head_seq: 2 }
            ]
        );
        // Torn in the second: the first names record 3 already.
        let second = trail("second", &[newest.clone(), torn.clone()].concat(), &lines);
        assert_eq!(
            problems(&second),
            [FindingKind::HeadSlotRefused(chain::HeadError::BadMac)]
        );
        for settings in [first, second] {
            let log = AuditLog::open(settings.clone()).expect("recovers from the torn copy");
            assert_eq!(log.head().seq, 4, "the recovery record follows");
            assert_eq!(log.record(statement(3)).await.expect("durable"), 5);
            log.close().await;
            assert_eq!(
                chain_files(&settings.path).expect("lists").len(),
                2,
                "set aside"
            );
            assert_eq!(assert_verifies(&settings).records, 5);
        }

        // The last record cut off, and a slot damaged or the head file cut
        // to one slot: what is left still names record 3.
        for (name, head) in [
            (
                "zeroed",
                [vec![0; chain::HEAD_LEN], newest.clone()].concat(),
            ),
            ("one slot", newest.clone()),
        ] {
            let cut = trail(name, &head, &lines[..2]);
            assert!(
                problems(&cut).contains(&FindingKind::CutShort { head_seq: 3 }),
                "{name}: {:?}",
                problems(&cut)
            );
            let refused = AuditLog::open(cut.clone()).map(|_| ());
            assert!(
                matches!(&refused, Err(AuditError::Untrusted { reason, .. }) if reason.contains("cut short")),
                "{name}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_wrong_key_or_a_cut_file_or_a_lost_head_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        write_three_records(&settings).await;

        let mut wrong_key = settings.clone();
        wrong_key.key = ChainKey::from_bytes(&[1u8; 32]).expect("long enough");
        let refused = AuditLog::open(wrong_key).map(|_| ());
        assert!(
            matches!(refused, Err(AuditError::Untrusted { .. })),
            "{refused:?}"
        );

        let original = fs::read(&settings.path).expect("readable");
        let lines = lines_of(&settings.path);
        fs::write(&settings.path, lines[..2].concat()).expect("cuts");
        let refused = AuditLog::open(settings.clone()).map(|_| ());
        assert!(
            matches!(&refused, Err(AuditError::Untrusted { reason, .. }) if reason.contains("cut short")),
            "{refused:?}"
        );
        assert_eq!(lines_of(&settings.path).len(), 2, "nothing was changed");

        fs::write(&settings.path, original).expect("restores");
        fs::remove_file(&settings.head_path).expect("removes");
        let refused = AuditLog::open(settings.clone()).map(|_| ());
        assert!(
            matches!(&refused, Err(AuditError::Untrusted { reason, .. }) if reason.contains("missing")),
            "{refused:?}"
        );
    }

    /// Records zeroed in the middle of the file (what a power loss under
    /// `Batch` leaves when later writes reached the disk) stop the start:
    /// new records written on would hide the break.
    #[tokio::test]
    async fn zeros_inside_the_records_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        write_three_records(&settings).await;
        let lines = lines_of(&settings.path);
        // The record's bytes lost, its newline and the records after it not.
        let mut hole = vec![0u8; lines[1].len() - 1];
        hole.push(b'\n');
        fs::write(
            &settings.path,
            [lines[0].clone(), hole, lines[2].clone()].concat(),
        )
        .expect("zeroes the middle record");
        let refused = AuditLog::open(settings.clone()).map(|_| ());
        let at = lines[0].len();
        assert!(
            matches!(&refused, Err(AuditError::Untrusted { reason, .. }) if reason.contains(&format!("zero bytes at offset {at}"))),
            "{refused:?}"
        );

        // Zeros after the records the head names (writes a power loss kept
        // from the disk, then a later page that reached it): set aside, and
        // the chain goes on from the last record the key opens.
        let head_record = lines[1].clone();
        let mut unsynced = vec![0u8; 40];
        unsynced.extend_from_slice(&lines[2][40..]);
        fs::write(&settings.path, [lines[0].clone(), head_record].concat()).expect("two records");
        let head = chain::open_line(&settings.key, &lines[1])
            .expect("opens")
            .link();
        fs::write(&settings.head_path, chain::head_line(&settings.key, &head))
            .expect("head names the second record");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&settings.path)
            .expect("opens");
        std::io::Write::write_all(&mut file, &unsynced).expect("appends");
        drop(file);
        let log = AuditLog::open(settings.clone()).expect("set aside, not refused");
        log.record(statement(9)).await.expect("durable");
        log.close().await;
        let rotated = rotated_files(&settings.path).expect("lists");
        assert_eq!(rotated.len(), 1, "set aside");
        // verify takes the zeros for the crash the recovery record names,
        // as a note; the same bytes changed afterwards are a problem.
        let report = assert_verifies(&settings);
        let at = (lines[0].len() + lines[1].len()) as u64;
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::HoleRecovered { at }),
            "{report}"
        );
        let set_aside = &rotated[0].1;
        let mut bytes = fs::read(set_aside).expect("reads");
        let last = bytes.iter().rposition(|&b| b != 0).expect("data");
        bytes[last - 1] ^= 1;
        fs::write(set_aside, &bytes).expect("changes a byte after the zeros");
        let report =
            crate::audit::verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        assert!(!report.ok(), "{report}");
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::HoleBytesMissing),
            "{report}"
        );
    }

    /// A file with zeros inside its data that an earlier start set aside
    /// without writing its recovery record (it stopped on a full disk, or
    /// was killed): the next start finds the zeros there, goes on from the
    /// record before them, and its recovery record accounts for them.
    #[tokio::test]
    async fn zeros_in_a_file_set_aside_before_a_stop_are_recorded_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        write_three_records(&settings).await;
        let lines = lines_of(&settings.path);
        let head = chain::open_line(&settings.key, &lines[1])
            .expect("opens")
            .link();
        fs::write(&settings.head_path, chain::head_line(&settings.key, &head))
            .expect("head names the second record");
        let mut unsynced = vec![0u8; 40];
        unsynced.extend_from_slice(&lines[2][40..]);
        // Set aside as a start would, and the active file begun empty.
        let set_aside = settings.path.with_file_name("audit.jsonl.000001");
        fs::write(
            &set_aside,
            [lines[0].clone(), lines[1].clone(), unsynced].concat(),
        )
        .expect("the set-aside file");
        fs::write(&settings.path, b"").expect("an empty active file");

        let log = AuditLog::open(settings.clone()).expect("opens, not refused");
        log.record(statement(9)).await.expect("durable");
        log.close().await;
        let report = assert_verifies(&settings);
        let at = (lines[0].len() + lines[1].len()) as u64;
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::HoleRecovered { at }),
            "{report}"
        );
    }

    #[tokio::test]
    async fn small_rotate_bytes_makes_several_files_of_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path());
        settings.rotate_bytes = Some(1000);
        settings.fsync = Fsync::Batch;
        let log = AuditLog::open(settings.clone()).expect("opens");
        for n in 0..40 {
            log.record(statement(n)).await.expect("durable");
        }
        log.close().await;

        let files = chain_files(&settings.path).expect("lists");
        assert!(files.len() > 3, "{files:?}");
        let names: Vec<_> = files
            .iter()
            .filter_map(|file| file.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(names[0], "audit.jsonl.000001");
        assert_eq!(names[1], "audit.jsonl.000002");
        assert_eq!(names.last().map(String::as_str), Some("audit.jsonl"));
        let report = assert_verifies(&settings);
        assert_eq!(report.records, 40);
        assert_eq!(report.files.len(), files.len());

        // Reopening after the last commit rotated continues from the newest
        // rotated file.
        let log = AuditLog::open(settings.clone()).expect("reopens");
        assert_eq!(log.record(statement(40)).await.expect("durable"), 41);
        log.close().await;
        assert_verifies(&settings);
    }

    #[tokio::test]
    async fn rotate_after_rotates_an_old_file_at_the_next_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path());
        settings.rotate_after = Some(Duration::ZERO);
        write_three_records(&settings).await;
        assert_eq!(rotated_files(&settings.path).expect("lists").len(), 3);
        assert_eq!(fs::metadata(&settings.path).expect("exists").len(), 0);
        assert_verifies(&settings);
    }

    /// A quiet gateway's file rotates on time, not at its next record, and
    /// an empty one is not rotated at all; the trail verifies.
    #[tokio::test]
    async fn rotate_after_rotates_a_quiet_file_on_time() {
        for fsync in [Fsync::Always, Fsync::Batch] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut settings = settings(dir.path());
            settings.fsync = fsync;
            settings.rotate_after = Some(Duration::from_millis(300));
            let log = AuditLog::open(settings.clone()).expect("opens");
            log.record(statement(0)).await.expect("records");
            let rotated = || rotated_files(&settings.path).expect("lists").len();
            let deadline = Instant::now() + Duration::from_secs(10);
            while rotated() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(rotated(), 1, "{fsync:?}: rotated while nothing came");
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(rotated(), 1, "{fsync:?}: an empty file is not rotated");
            log.record(statement(1)).await.expect("records");
            log.close().await;
            assert_verifies(&settings);
        }
    }

    /// A planted file numbered u64::MAX: rotating must refuse, not wrap to
    /// `.000000` (which would sort first and misorder the chain) or panic.
    #[tokio::test]
    async fn a_rotated_file_numbered_u64_max_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path());
        let planted = dir.path().join(format!("audit.jsonl.{}", u64::MAX));
        fs::write(&planted, b"").expect("writes");
        fs::write(&settings.path, b"x\n").expect("writes");

        let refused = rotate_away(&settings.path).expect_err("no number follows u64::MAX");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
        assert!(
            refused.to_string().contains(&planted.display().to_string()),
            "{refused}"
        );
        assert_eq!(fs::read(&settings.path).expect("still there"), b"x\n");
        assert!(!dir.path().join("audit.jsonl.000000").exists());

        // The log's own rotation fails the sink closed.
        fs::remove_file(&settings.path).expect("removes");
        settings.rotate_after = Some(Duration::ZERO);
        let log = AuditLog::open(settings.clone()).expect("opens");
        let _ = log.record(statement(0)).await;
        assert!(matches!(
            log.record(statement(1)).await,
            Err(AuditError::Failed(_))
        ));
        log.close().await;
        assert!(!dir.path().join("audit.jsonl.000000").exists());
    }

    /// Fail closed: `/dev/full` fails every write with ENOSPC, as a disk
    /// that never gets room again does.
    #[tokio::test]
    async fn a_disk_that_stays_full_refuses_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        std::os::unix::fs::symlink("/dev/full", &settings.path).expect("symlink");
        let log = AuditLog::open(settings.clone()).expect("opens");

        for n in 0..4 {
            match log.record(statement(n)).await {
                Err(AuditError::Unavailable(cause)) => {
                    assert!(cause.contains("No space left"), "{cause}");
                }
                other => panic!("expected the trail unavailable, got {other:?}"),
            }
        }
        log.record_later(statement(9));
        assert_eq!(log.head(), Link::GENESIS);
        assert_eq!(log.stats().records, 0);
        assert_eq!(log.stats().outages, 1);
        // Closing does not wait for the disk: what was kept is dropped,
        // and said so.
        log.close().await;
    }

    /// A small tmpfs of its own, a disk that can really fill up and be
    /// freed again; unmounted when dropped. `None` where this process may
    /// not mount (not root, no CAP_SYS_ADMIN): the caller skips, saying so.
    struct SmallDisk {
        dir: tempfile::TempDir,
    }

    impl SmallDisk {
        fn mount(bytes: usize) -> Option<SmallDisk> {
            SmallDisk::mount_with(&format!("size={bytes}"))
        }

        /// With tmpfs's own `options` (`size=`, `nr_inodes=`).
        fn mount_with(options: &str) -> Option<SmallDisk> {
            use std::ffi::CString;
            let dir = tempfile::tempdir().expect("tempdir");
            let target = CString::new(dir.path().as_os_str().as_bytes()).expect("no NUL");
            let options = CString::new(format!("{options},mode=0700")).expect("no NUL");
            // SAFETY: every pointer is to a NUL-terminated string that lives
            // through the call.
            let mounted = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                )
            };
            if mounted != 0 {
                let error = io::Error::last_os_error();
                assert_eq!(
                    error.raw_os_error(),
                    Some(libc::EPERM),
                    "mounting a tmpfs failed other than for want of privilege: {error}"
                );
                eprintln!("SKIPPED: mounting a small tmpfs needs root (CAP_SYS_ADMIN): {error}");
                return None;
            }
            Some(SmallDisk { dir })
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Fills what is left of the disk with one file, returned.
        fn fill(&self) -> PathBuf {
            let filler = self.path().join("filler");
            let mut file = File::create(&filler).expect("filler");
            let chunk = vec![b'x'; 4096];
            loop {
                match file.write_all(&chunk) {
                    Ok(()) => {}
                    Err(error) if is_no_space(&error) => break,
                    Err(error) => panic!("filling the disk: {error}"),
                }
            }
            filler
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let target =
                std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).expect("no NUL");
            // SAFETY: a NUL-terminated path that lives through the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// A start that finds records beyond the head on a full disk sets the
    /// file aside and starts all the same: the recovery record is kept,
    /// statements are refused while the disk is full, and once there is
    /// room the fresh file opens with that record.
    #[tokio::test]
    async fn a_recovery_on_a_full_disk_waits_for_room() {
        let Some(disk) = SmallDisk::mount(1 << 20) else {
            return;
        };
        let settings = settings(disk.path());
        write_a_record_beyond_the_head(&settings).await;
        let filler = disk.fill();

        let log = AuditLog::open(settings.clone()).expect("starts on a full disk");
        assert!(matches!(
            log.record(statement(2)).await,
            Err(AuditError::Unavailable(_))
        ));
        fs::remove_file(&filler).expect("free the disk");
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.state().failure().is_some() {
            assert!(Instant::now() < deadline, "not back within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log.record(statement(3)).await.expect("written again");
        log.close().await;

        assert_verifies(&settings);
        let events: Vec<String> = lines_of(&settings.path)
            .iter()
            .map(|line| {
                let record: Value = serde_json::from_slice(line).expect("json");
                record["event"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        assert_eq!(events, [TRAIL_RECOVERED, "audit_outage", "statement"]);
    }

    /// A torn record set aside on a full disk, and sluice stopped before
    /// there was room for the recovery record: the next start finds the
    /// torn bytes in the newest rotated file (the active file is empty)
    /// and records them then, so verify still takes them for the crash
    /// they were. Bytes after a clean stop's record are not vouched for.
    #[tokio::test]
    async fn torn_bytes_set_aside_before_a_stop_are_recorded_at_the_next_start() {
        let Some(disk) = SmallDisk::mount(1 << 20) else {
            return;
        };
        let settings = settings(disk.path());
        write_three_records(&settings).await;
        // A crash in the middle of writing record 4.
        let torn = br#"{"seq":4,"time":"2026-12-01T03:00:00.1"#;
        fs::OpenOptions::new()
            .append(true)
            .open(&settings.path)
            .and_then(|mut file| file.write_all(torn))
            .expect("appends");
        let filler = disk.fill();

        let log = AuditLog::open(settings.clone()).expect("starts on a full disk");
        log.close().await; // before there is room: the record is dropped
        fs::remove_file(&filler).expect("free the disk");
        let log = AuditLog::open(settings.clone()).expect("starts again");
        log.record(statement(9)).await.expect("durable");
        log.close().await;
        let report = assert_verifies(&settings);
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::Torn { continued: true }),
            "{report}"
        );
    }

    /// After a clean stop whose last commit rotated the file (the active
    /// file empty), bytes appended to that rotated file are not taken for
    /// a crash at the next start.
    #[tokio::test]
    async fn bytes_after_a_clean_stop_are_not_vouched_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        log.record(statement(0)).await.expect("durable");
        let mut stop = Map::new();
        stop.insert("event".into(), json!(GATEWAY_STOP));
        log.record(stop).await.expect("durable");
        log.close().await;
        // As a rotation on that last commit leaves it.
        let rotated = rotate_away(&settings.path).expect("rotates");
        File::create(&settings.path).expect("an empty active file");
        fs::OpenOptions::new()
            .append(true)
            .open(&rotated)
            .and_then(|mut file| file.write_all(br#"{"seq":3,"time":"20"#))
            .expect("appends");

        let log = AuditLog::open(settings.clone()).expect("starts");
        log.record(statement(1)).await.expect("durable");
        log.close().await;
        let report = verify::verify(&settings.path, Some(&settings.head_path), &settings.key);
        let problems: Vec<_> = report.problems().map(|finding| &finding.kind).collect();
        assert_eq!(problems, [&FindingKind::TornUnaccounted], "{report}");
    }

    /// One trail, one writer: while a log has the trail open, its lock is
    /// held, and a second log (another sluice, here the same process) is
    /// refused rather than recover and write under the first one's feet;
    /// once the first is gone, the trail opens again.
    #[tokio::test]
    async fn a_trail_open_in_one_log_is_refused_to_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        log.record(statement(1)).await.expect("durable");
        let refused = lock_trail_within(&settings.path, Duration::from_millis(100))
            .expect_err("the lock is held");
        assert!(matches!(refused, AuditError::InUse { .. }), "{refused}");
        assert!(refused.to_string().contains("in use by another sluice"));
        drop(log);
        lock_trail_within(&settings.path, Duration::from_millis(100)).expect("free again");
        let again = AuditLog::open(settings).expect("opens again");
        again.record(statement(2)).await.expect("durable");
        again.close().await;
    }

    /// A write the disk refused halfway leaves its bytes in the file: the
    /// file is cut back to where the records end, and the next write goes
    /// where the failed one went.
    #[test]
    fn a_failed_write_is_cut_off_and_written_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut active = ActiveFile::open(&path).expect("opens");
        active.append(b"{\"seq\":1}\n").expect("appends");
        let start = active.len;
        // What a write cut short by a full disk may have put there.
        active
            .file
            .write_all_at(&[b'x'; 100], start)
            .expect("bytes of a failed write");
        active.forget_write(start).expect("cut back");
        assert_eq!(fs::metadata(&path).expect("metadata").len(), start);
        active.append(b"{\"seq\":2}\n").expect("appends");
        let end = active.len;
        assert_eq!(end, start + 10);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .expect("reads");
        assert!(bytes[end as usize..].iter().all(|&byte| byte == 0));
        assert_eq!(data_len(&active.file).expect("data len"), end);
        assert_eq!(lines_of(&path).len(), 2);
    }

    /// A full disk is waited out, under both settings: statements are
    /// refused while it is full, outcomes are kept, and once there is room
    /// again the trail goes on by itself — what was kept first, then a
    /// record of the outage, then new records — in one unbroken chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_waited_out_and_the_chain_goes_on() {
        for fsync in [Fsync::Batch, Fsync::Always] {
            // Smaller than the space allocated ahead at a time: the first
            // allocation falls back to the records' own space.
            let Some(disk) = SmallDisk::mount(1 << 20) else {
                return;
            };
            let settings = LogSettings {
                fsync,
                ..settings(disk.path())
            };
            let log = AuditLog::open(settings.clone()).expect("opens");
            log.record(statement(0)).await.expect("room for the first");
            let filler = disk.fill();

            // The last page the file has may still hold a few records.
            let mut n = 1;
            let refused = loop {
                match log.record(statement(n)).await {
                    Ok(_) if n < 100 => n += 1,
                    other => break other,
                }
            };
            let written = n; // statements 0..n are in, n was refused
            assert!(
                matches!(&refused, Err(AuditError::Unavailable(cause)) if cause.contains("No space left")),
                "{fsync:?}: {refused:?}"
            );
            assert!(log.state().failure().is_some());
            assert_eq!(log.stats().outages, 1);
            let mut outcome = statement(1000);
            outcome.insert("event".into(), json!("outcome"));
            log.record_later(outcome.clone());
            outcome.insert("n".into(), json!(1001));
            log.record_later(outcome);
            // Refused at once, not written: still out after the writer's
            // retries while the disk stays full.
            tokio::time::sleep(NO_SPACE_RETRY + Duration::from_millis(300)).await;
            assert!(matches!(
                log.record(statement(2000)).await,
                Err(AuditError::Unavailable(_))
            ));
            assert_eq!(
                log.head().seq,
                written,
                "{fsync:?}: statements 0..{written} only"
            );

            fs::remove_file(&filler).expect("free the disk");
            let deadline = Instant::now() + Duration::from_secs(10);
            while log.state().failure().is_some() {
                assert!(Instant::now() < deadline, "{fsync:?}: not back within 10 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let seq = log.record(statement(3000)).await.expect("written again");
            assert_eq!(log.stats().outages, 1);
            log.close().await;

            assert_verifies(&settings);
            let records: Vec<Value> = lines_of(&settings.path)
                .iter()
                .map(|line| serde_json::from_slice(line).expect("json"))
                .collect();
            let seen: Vec<(&str, u64)> = records
                .iter()
                .map(|r| {
                    (
                        r["event"].as_str().unwrap_or(""),
                        r["n"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let mut expected: Vec<(&str, u64)> = (0..written).map(|n| ("statement", n)).collect();
            expected.extend([
                ("outcome", 1000),
                ("outcome", 1001),
                ("audit_outage", 0),
                ("statement", 3000),
            ]);
            assert_eq!(seen, expected, "{fsync:?}");
            let outage = &records[records.len() - 2];
            assert_eq!(outage["records_refused"], 2, "{outage}");
            assert_eq!(outage["records_kept"], 2, "{outage}");
            assert!(
                outage["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("No space left")),
                "{outage}"
            );
            let kept = &records[records.len() - 4];
            assert!(
                outage["since"].as_str() <= kept["time"].as_str(),
                "{outage} {kept}"
            );
            assert_eq!(Some(seq), records[records.len() - 1]["seq"].as_u64());
        }
    }

    /// A rotation that finds no room for the fresh file (here: no inode
    /// left) is waited out as a full disk is: the rotated file holds its
    /// records, the next file starts with the outage's record once there is
    /// room, and the chain runs whole across both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_cut_short_by_a_full_disk_is_waited_out() {
        // The root, the trail, its head, its lock and three spare files.
        let Some(disk) = SmallDisk::mount_with("size=4m,nr_inodes=7") else {
            return;
        };
        let settings = LogSettings {
            fsync: Fsync::Batch,
            rotate_bytes: Some(300),
            ..settings(disk.path())
        };
        let log = AuditLog::open(settings.clone()).expect("opens");
        let spares: Vec<PathBuf> = (0..3)
            .map(|n| disk.path().join(format!("spare{n}")))
            .collect();
        for spare in &spares {
            File::create(spare).expect("the last inodes");
        }

        let mut n = 0;
        let refused = loop {
            match log.record(statement(n)).await {
                Ok(_) if n < 20 => n += 1,
                other => break other,
            }
        };
        assert!(
            matches!(&refused, Err(AuditError::Unavailable(cause)) if cause.contains("create a fresh audit file")),
            "{refused:?}"
        );
        let written = log.head().seq;
        assert!(written >= 1, "the rotation came after a commit");

        for spare in &spares {
            fs::remove_file(spare).expect("free the inodes");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.state().failure().is_some() {
            assert!(
                Instant::now() < deadline,
                "not back within 10 s: {:?}",
                log.state().failure()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log.record(statement(100)).await.expect("written again");
        log.close().await;

        assert_verifies(&settings);
        let files = chain_files(&settings.path).expect("lists");
        assert!(files.len() >= 2, "{files:?}");
        let records: Vec<Value> = files
            .iter()
            .flat_map(|file| lines_of(file))
            .map(|line| serde_json::from_slice(&line).expect("json"))
            .collect();
        let outage = usize::try_from(written).expect("small");
        assert_eq!(records[outage]["event"], "audit_outage", "{records:?}");
        assert_eq!(records[outage]["seq"], written + 1, "{records:?}");
        assert_eq!(records[outage + 1]["n"], 100, "{records:?}");
    }

    #[tokio::test]
    async fn created_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let log = AuditLog::open(settings.clone()).expect("opens");
        log.close().await;
        for path in [&settings.path, &settings.head_path] {
            let mode = fs::metadata(path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert_eq!(
            fs::metadata(&settings.head_path).expect("exists").len(),
            chain::HEAD_FILE_LEN as u64
        );
    }

    #[test]
    fn tail_reading_finds_the_last_line_across_window_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tail");
        let long = vec![b'x'; 200_000];
        let mut contents = b"first\n".to_vec();
        contents.extend_from_slice(&long);
        contents.extend_from_slice(b"\ntorn");
        fs::write(&path, &contents).expect("writes");
        let tail = read_tail(&path).expect("reads");
        let mut expected = long.clone();
        expected.push(b'\n');
        assert_eq!(tail.last_line, Some(expected));
        assert_eq!(tail.torn, b"torn");

        fs::write(&path, b"only\n").expect("writes");
        let tail = read_tail(&path).expect("reads");
        assert_eq!(tail.last_line.as_deref(), Some(&b"only\n"[..]));
        assert!(tail.torn.is_empty());

        fs::write(&path, b"no newline").expect("writes");
        let tail = read_tail(&path).expect("reads");
        assert_eq!(tail.last_line, None);
        assert_eq!(tail.torn, b"no newline");
    }
}
