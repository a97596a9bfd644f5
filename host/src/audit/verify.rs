//! `sluice audit verify`: checks a trail and says, in plain words, where it
//! was changed.
//!
//! [`verify`] reads the rotated files `<path>.NNNNNN` in order, then the
//! active file, and checks that
//!
//! - every line opens with the key (a changed byte breaks its MAC);
//! - `seq` grows by exactly one from record to record, across files too, and
//!   each `prev` is the MAC of the record before it (a record inserted,
//!   deleted or moved breaks this at the place it happened);
//! - the first record is seq 1 with a `prev` of zeros — or, when the oldest
//!   rotated files were archived away, the record right after one an
//!   archive line names (see [`super::archive`]), which is reported as a
//!   note; a trail starting late otherwise lost its first records;
//! - the head file verifies with the key and names exactly the last record
//!   (a file cut short at a record boundary leaves a valid chain, and only
//!   the head shows that records are missing). The head is the newer of the
//!   file's two slots; a slot that does not verify beside one that does is
//!   a problem too: a crash tore the head's write (and records then lie
//!   beyond the head, until sluice restarts and sets them aside), or it was
//!   changed.
//!
//! # Problems and notes
//!
//! Every [`Finding`] is a [`Severity::Problem`] or a [`Severity::Note`];
//! [`Report::ok`] holds when there is no problem. Notes are for what sluice
//! itself does and that loses no record:
//!
//! - a trail that starts after seq 1 (rotated files archived or removed:
//!   verify cannot tell which, so it says so);
//! - a torn record at the end of a file that the chain continues after.
//!   When sluice restarts after a crash in the middle of a write, it sets the
//!   file with the torn record aside unchanged and continues the chain from
//!   the last complete record in a fresh file. The torn record was never
//!   acknowledged, so its statement never ran; the chain around it is whole,
//!   and the note keeps the crash visible.
//!
//! A torn record that nothing follows is a problem: the trail ends in a
//! write that did not finish, and sluice has not recovered from it yet.
//!
//! The head shows a cut only as long as it is kept apart from the trail: an
//! older head put back together with a trail cut to match it verifies. The
//! head that sluice logs every minute, and the PostgreSQL sink, are the
//! anchors against that.
//!
//! After a changed record, checking goes on with the MAC the changed line
//! claims, so one edit gives one finding rather than one for every record
//! after it.
//!
//! # The PostgreSQL sink
//!
//! [`verify_rows`] checks one instance's rows the same way, with what the
//! database sink rules out made problems: it never rotates (rows missing
//! before the first one were deleted), its transactions never leave a
//! torn record, and each record names the instance whose chain it is in
//! (a record relabelled into another instance's rows is found by that).
//! [`verify_database`] checks every instance there and the gateway's own
//! (from its config), or those the operator names: an instance expected or
//! named with no rows and no head row is a problem, not an empty trail.
//! An instance deleted whole that no one expects cannot be found: a fleet's
//! auditor names every gateway with `--instance`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{self, ChainKey, GENESIS_MAC, HeadError, HeadSlots, LineError, Link};
use super::head::read_head_file;
use super::log::{DataAfterEnd, RecordLines, chain_files};
use super::postgres::PgTrail;

/// How many findings the human summary lists before it counts the rest.
const FINDINGS_SHOWN: usize = 50;

/// Most findings a report keeps; past them only their count is kept. A
/// hostile file (a hundred million empty lines) would otherwise make a
/// finding of each, and the check run out of memory before it reports.
const FINDINGS_KEPT: usize = 10_000;

/// Times [`verify_live`] looks again before it reports a disagreement
/// between the trail's end and its head.
const LIVE_ATTEMPTS: u32 = 5;

/// [`verify`] for a trail sluice may be writing right now. A commit in
/// flight has its records in the file a moment before the head names
/// them (and a last line half-written, or caught half-copied into the
/// mapped file: its later bytes seen before its earlier ones), which a
/// single look would report as records beyond the head, a torn record or
/// bytes after the end of the data; and a rotation during the
/// look moves records out of the file being read into one the look had
/// not listed, which reads as a break in the chain. When only those can
/// explain what it found — the problems are of the kinds a commit in
/// flight leaves, or the trail's files are not those it started with — it
/// looks again, a little later, a few times, and reports what the last
/// look saw. Anything else is reported at once.
/// `anchors`, as for [`verify_anchored`], are checked at every look.
pub fn verify_live(
    path: &Path,
    head_path: Option<&Path>,
    key: &ChainKey,
    anchors: &[Link],
) -> Report {
    verify_looking_again(path, head_path, key, anchors, || {
        std::thread::sleep(std::time::Duration::from_millis(100))
    })
}

/// [`verify_live`], calling `wait` between one look and the next.
fn verify_looking_again(
    path: &Path,
    head_path: Option<&Path>,
    key: &ChainKey,
    anchors: &[Link],
    mut wait: impl FnMut(),
) -> Report {
    let mut report = verify_anchored(path, head_path, key, anchors);
    for _ in 1..LIVE_ATTEMPTS {
        let in_flight = |kind: &FindingKind| {
            matches!(
                kind,
                FindingKind::BeyondHead { .. }
                    | FindingKind::CutShort { .. }
                    | FindingKind::Torn { continued: false }
                    | FindingKind::DataAfterEnd
                    | FindingKind::HeadSlotRefused(_)
            )
        };
        // A late start does not change between looks: beside it, what a
        // commit in flight leaves is still worth a second look.
        let only_in_flight = report.problems().any(|finding| in_flight(&finding.kind))
            && report
                .problems()
                .all(|finding| in_flight(&finding.kind) || finding.kind == FindingKind::StartsLate);
        let rotated_meanwhile =
            !report.ok() && chain_files(path).is_ok_and(|files| files != report.files);
        if !only_in_flight && !rotated_meanwhile {
            break;
        }
        wait();
        report = verify_anchored(path, head_path, key, anchors);
    }
    report
}

/// Checks the trail whose active file is `path` (with its rotated files)
/// and, if `head_path` is given, its head file.
pub fn verify(path: &Path, head_path: Option<&Path>, key: &ChainKey) -> Report {
    verify_anchored(path, head_path, key, &[])
}

/// [`verify`], and each of `anchors` — heads sluice put in its log (`audit
/// chain head`), kept apart from the trail — must name a record the trail
/// holds, with that MAC. The head file only says where the trail ends now:
/// whoever holds the key can cut the trail and write a head to match, or
/// put trail and head back to an earlier copy, and both verify. An anchor
/// kept where they cannot reach catches that.
pub fn verify_anchored(
    path: &Path,
    head_path: Option<&Path>,
    key: &ChainKey,
    anchors: &[Link],
) -> Report {
    let mut check = Check::new().anchored(anchors);
    let head = read_head(head_path, key, &mut check);
    let head_seq = head.link().map(|head| head.seq);
    check.read_archive_lines(path, key);

    let files = match chain_files(path) {
        Ok(files) => files,
        Err(error) => {
            check.problem(
                FindingKind::Unreadable(error.to_string()),
                Some(path),
                None,
                None,
            );
            Vec::new()
        }
    };
    if files.is_empty() {
        check.problem(FindingKind::NoFiles, Some(path), None, None);
    }
    for file in &files {
        check.file(file, key, head_seq);
    }
    check.report(path.to_path_buf(), files, head)
}

/// How [`verify_rows`] places an instance's chain: `postgres:INSTANCE`.
const DATABASE_PLACE: &str = "postgres:";

/// The place that names `instance`'s chain in an audit database, as
/// [`verify_rows`] takes it.
pub fn database_place(instance: &str) -> String {
    format!("{DATABASE_PLACE}{instance}")
}

/// Which chains of an audit database a check covers. Deleting an
/// instance's rows together with its head row leaves nothing of it to
/// find: only an instance the check expects can be missed.
#[derive(Debug, Clone, Copy)]
pub enum Chains<'a> {
    /// Every instance the database holds, and these whether it holds them
    /// or not: the gateway's own instance, from its `[audit] instance`.
    Found { expected: &'a [String] },
    /// Only these, each of which must be there (`--instance`).
    Named(&'a [String]),
}

impl Chains<'_> {
    /// The instances to check, given those the database holds: those
    /// named in their order, else those found and expected, sorted.
    pub fn pick(self, found: impl IntoIterator<Item = String>) -> Vec<String> {
        match self {
            Chains::Found { expected } => {
                let mut instances: Vec<String> =
                    found.into_iter().chain(expected.iter().cloned()).collect();
                instances.sort();
                instances.dedup();
                instances
            }
            Chains::Named(named) => named.to_vec(),
        }
    }
}

/// Checks an audit database's chains, those `chains` picks, one report
/// each in [`Chains::pick`]'s order. An instance expected or named that has
/// neither rows nor a head row gets a report with a problem: it never
/// wrote, or all of it was deleted. No reports: nothing expected, and the
/// database holds no chain yet.
pub fn verify_database(trail: &PgTrail, chains: Chains<'_>, key: &ChainKey) -> Vec<Report> {
    let found = trail.instances.iter().map(|t| t.instance.clone());
    chains
        .pick(found)
        .iter()
        .map(|instance| {
            let found = trail.instances.iter().find(|t| &t.instance == instance);
            verify_rows(
                &database_place(instance),
                found.map_or(&[][..], |t| t.lines.as_slice()),
                found.and_then(|t| t.head.as_deref()),
                key,
            )
        })
        .collect()
}

/// Checks one instance's chain as the PostgreSQL sink keeps it: its record
/// lines in `seq` order and its head row (`None`: no head row). `place`
/// is [`database_place`] of the instance (a place without its prefix is
/// taken as the instance): it names the chain in the report, and every
/// record must name that instance. A finding's line is the row's place in
/// that order.
///
/// The database sink does not rotate, so a chain that starts after seq 1
/// lost rows (a problem; a file trail's is a note when archive lines
/// account for it); nor does it tear
/// a record, so a torn row is a problem even when rows follow it.
pub fn verify_rows(place: &str, lines: &[Vec<u8>], head: Option<&[u8]>, key: &ChainKey) -> Report {
    let mut rows = RowsVerifier::new(place, head, key);
    rows.check(lines.iter().cloned(), key);
    rows.finish()
}

/// [`verify_rows`] a batch of rows at a time, for a chain too long to hold:
/// the rows of one instance go to [`check`](RowsVerifier::check) in `seq`
/// order, then [`finish`](RowsVerifier::finish) says what was found.
pub struct RowsVerifier {
    check: Check,
    path: PathBuf,
    /// `None`: no head row (a problem once a row is seen; with no rows
    /// either, the instance is missing altogether).
    head: Option<HeadStatus>,
    head_seq: Option<u64>,
    rows_seen: u64,
}

impl RowsVerifier {
    /// Checks the rows against `anchors` too, as [`verify_anchored`] does.
    pub fn anchored(mut self, anchors: &[Link]) -> RowsVerifier {
        self.check = self.check.anchored(anchors);
        self
    }

    pub fn new(place: &str, head: Option<&[u8]>, key: &ChainKey) -> RowsVerifier {
        let path = PathBuf::from(place);
        let instance = place.strip_prefix(DATABASE_PLACE).unwrap_or(place);
        let mut check = Check::new();
        check.rows_of = Some(instance.to_owned());
        // The database keeps one head line per instance, in a row: no slots.
        let head = head.map(|head| {
            let read = chain::parse_head(key, head).map(|newest| HeadSlots {
                newest,
                other_refused: None,
            });
            check_head(read, &path, &mut check)
        });
        let head_seq = head.as_ref().and_then(|h| h.link()).map(|head| head.seq);
        RowsVerifier {
            check,
            path,
            head,
            head_seq,
            rows_seen: 0,
        }
    }

    /// Checks the next rows of the chain.
    pub fn check(&mut self, lines: impl Iterator<Item = Vec<u8>>, key: &ChainKey) {
        let before = self.rows_seen;
        let lines = lines.map(|line| {
            self.rows_seen += 1;
            Ok(line)
        });
        self.check
            .lines_from(&self.path, before + 1, lines, key, self.head_seq);
    }

    pub fn finish(mut self) -> Report {
        let head = match self.head {
            Some(head) => head,
            None if self.rows_seen == 0 => {
                // Only a named instance is checked with neither rows nor
                // a head: nothing of it is there.
                self.check
                    .problem(FindingKind::InstanceMissing, Some(&self.path), None, None);
                HeadStatus::Missing
            }
            None => {
                self.check
                    .problem(FindingKind::HeadMissing, Some(&self.path), None, None);
                HeadStatus::Missing
            }
        };
        self.check.report(self.path, Vec::new(), head)
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The active file named to [`verify`].
    pub path: PathBuf,
    /// The files checked, in chain order.
    pub files: Vec<PathBuf>,
    /// Record lines checked (those that open and those changed).
    pub records: u64,
    /// The first record's seq.
    pub first_seq: Option<u64>,
    /// The last record's seq.
    pub last_seq: Option<u64>,
    /// What the head file said.
    pub head: HeadStatus,
    /// Problems and notes, in the order found (the first
    /// [`FINDINGS_KEPT`]).
    pub findings: Vec<Finding>,
    /// Findings past those kept: how many, and how many of them problems.
    pub left_out: u64,
    pub problems_left_out: u64,
}

impl Report {
    /// Whether the trail is whole: no finding is a problem (notes may be
    /// there).
    pub fn ok(&self) -> bool {
        self.problems_left_out == 0
            && self
                .findings
                .iter()
                .all(|finding| finding.severity == Severity::Note)
    }

    /// The findings that are problems.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|finding| finding.severity == Severity::Problem)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problems = self.problems().count() as u64 + self.problems_left_out;
        match problems {
            0 => writeln!(f, "audit trail {}: OK", self.path.display())?,
            1 => writeln!(f, "audit trail {}: FAILED, 1 problem", self.path.display())?,
            n => writeln!(
                f,
                "audit trail {}: FAILED, {n} problems",
                self.path.display()
            )?,
        }
        match (self.files.first(), self.files.last()) {
            (Some(first), Some(last)) if self.files.len() > 1 => writeln!(
                f,
                "  files: {} ({} … {})",
                self.files.len(),
                file_name(first),
                file_name(last)
            )?,
            (Some(only), _) => writeln!(f, "  files: 1 ({})", file_name(only))?,
            // Rows of a database, or no files (a finding says so).
            _ => {}
        }
        match (self.first_seq, self.last_seq) {
            (Some(first), Some(last)) => writeln!(
                f,
                "  records: {} checked, seq {first} to {last}",
                self.records
            )?,
            _ => writeln!(f, "  records: {} checked", self.records)?,
        }
        writeln!(f, "  head: {}", self.head)?;
        if !self.findings.is_empty() {
            writeln!(f, "  findings:")?;
        }
        for finding in self.findings.iter().take(FINDINGS_SHOWN) {
            writeln!(f, "  - {finding}")?;
        }
        let more = self.findings.len().saturating_sub(FINDINGS_SHOWN) as u64 + self.left_out;
        if more > 0 {
            writeln!(f, "  … and {more} more")?;
        }
        Ok(())
    }
}

/// What the head file said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// No head file was given: a file cut short at a record boundary cannot
    /// be detected.
    NotChecked,
    /// The head file is not there.
    Missing,
    /// The head file cannot be read.
    Unreadable(String),
    /// The head file is not a head, or its MAC does not verify.
    Refused(HeadError),
    /// The head verified and names this record.
    Verified(Link),
}

impl HeadStatus {
    /// The link a verified head names.
    fn link(&self) -> Option<Link> {
        match self {
            HeadStatus::Verified(link) => Some(*link),
            _ => None,
        }
    }
}

impl fmt::Display for HeadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadStatus::NotChecked => {
                f.write_str("not checked (a trail cut short at a record boundary goes unseen)")
            }
            HeadStatus::Missing => f.write_str("missing"),
            HeadStatus::Unreadable(error) => write!(f, "unreadable: {error}"),
            HeadStatus::Refused(refused) => write!(f, "refused: {refused}"),
            HeadStatus::Verified(link) => write!(
                f,
                "verified, names seq {} (mac {}; the heads sluice logs, `audit chain head`, are checked with --anchor SEQ:MAC)",
                link.seq,
                chain::encode_hex(&link.mac)
            ),
        }
    }
}

/// Whether a finding breaks the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The trail is not whole: records were changed, added or lost, or
    /// cannot be shown not to have been.
    Problem,
    /// Worth knowing, but no record is lost or changed.
    Note,
}

/// One thing [`verify`] found, with where it found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Problem or note.
    pub severity: Severity,
    /// What was found.
    pub kind: FindingKind,
    /// The file, when the finding is about one.
    pub file: Option<PathBuf>,
    /// The line in that file, counted from 1.
    pub line: Option<u64>,
    /// The seq of the record concerned, where known.
    pub seq: Option<u64>,
}

/// What [`verify`] can find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A record's MAC does not verify: it was changed, or written under
    /// another key.
    Modified,
    /// A line that is not a record at all.
    NotARecord(&'static str),
    /// The record does not follow the one before it (seq or prev): one was
    /// inserted, deleted or reordered between them.
    Broken {
        /// The seq of the record before.
        after: u64,
        /// Whether the record is the first of its file (a rotated file may
        /// be missing).
        first_of_file: bool,
    },
    /// The first record is not seq 1: older records are not here (whole
    /// files of them: each file that is here starts with the record that
    /// opened it), and no archive line names the record before it.
    StartsLate,
    /// The first record is not seq 1, and the records before it were
    /// archived: an archive line names the record before it.
    ArchivedBefore,
    /// The first record is not seq 1, and a holder of the key acknowledged
    /// the records before it moved away by other means.
    StartAcknowledged,
    /// A line of the archive lines' file is not one, or does not verify
    /// under the key.
    ArchiveLineRefused,
    /// A file's first record is not the one sluice opened it with: its
    /// first records were cut off.
    FileStartLost,
    /// A record sluice opened a file with is inside a file: records were
    /// moved from the start of another.
    FileStartInside,
    /// The first row of an instance in an audit database is not seq 1:
    /// the rows before it were deleted (the database sink never rotates).
    RowsMissingAtStart,
    /// A row of one instance's chain holds a record that names another
    /// instance: rows were moved or relabelled between chains.
    WrongInstance {
        /// The instance whose rows these are.
        expected: String,
        /// The instance the record names.
        found: String,
    },
    /// An instance named to [`verify_database`] has neither rows nor a
    /// head row.
    InstanceMissing,
    /// A line without its newline: a write that did not finish.
    Torn {
        /// Whether records follow it (sluice recovered and went on).
        continued: bool,
    },
    /// A line without its newline with records after it, which no
    /// recovery record accounts for: bytes added to a finished file, not a
    /// crash that sluice recovered from.
    TornUnaccounted,
    /// A recovery record names torn bytes that are not (or no longer, or
    /// not as they were) at the end of the file before it.
    TornBytesMissing,
    /// Zero bytes inside a file's data, with bytes after them, which the
    /// recovery record after the file accounts for: writes that never
    /// reached the disk while later ones did (a power loss), which sluice
    /// found and set aside when it restarted.
    HoleRecovered {
        /// The first zero byte's offset.
        at: u64,
    },
    /// A recovery record names zero bytes inside the data of a file that
    /// are not (or no longer, or not as they were) there.
    HoleBytesMissing,
    /// sluice found the trail's end not as its last run left it, and
    /// recovered (what it found, and the file it set aside): after a crash,
    /// expected; otherwise worth a look, since the records it took at the
    /// end were never named by a head before.
    Recovered(String),
    /// A file cannot be read.
    Unreadable(String),
    /// Bytes other than zeros follow the end of a file's records (its
    /// first NUL): bytes put where no record may be, or — in a file being
    /// written — a record caught half-copied.
    DataAfterEnd,
    /// There is no file of the trail at all.
    NoFiles,
    /// A head file was named, but is missing.
    HeadMissing,
    /// The head file is not a head or does not verify with the key.
    HeadRefused(HeadError),
    /// One of the head file's two slots does not verify: a crash tore the
    /// write of a newer head (the records it was to name then lie beyond
    /// the head, until sluice restarts and sets them aside), or the slot was
    /// changed.
    HeadSlotRefused(HeadError),
    /// The head names an earlier record than the last one.
    BeyondHead {
        /// The seq the head names.
        head_seq: u64,
    },
    /// The head names a later record than the last one: records were cut
    /// off the end.
    CutShort {
        /// The seq the head names.
        head_seq: u64,
    },
    /// The record the head names has another MAC.
    HeadMismatch,
    /// The record an anchor names is there, with the anchor's MAC: the
    /// trail up to it is the one sluice logged.
    AnchorMatched,
    /// The record an anchor names has another MAC: it, or a record before
    /// it, is not what sluice wrote when it logged the anchor.
    AnchorMismatch,
    /// The trail holds no record of the seq an anchor names.
    AnchorMissing,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = Place(self);
        let record = match self.seq {
            Some(seq) => format!("record {seq}"),
            None => "a record".to_string(),
        };
        let seq = self.seq.unwrap_or(0);
        match &self.kind {
            FindingKind::Modified => {
                write!(f, "{record}{place} was modified: its MAC does not verify")
            }
            FindingKind::NotARecord(reason) => {
                write!(f, "a line{place} is not an audit record: {reason}")
            }
            FindingKind::Broken {
                after,
                first_of_file,
            } => {
                write!(
                    f,
                    "record inserted/deleted/reordered between seq {after} and {seq}{place}: \
                     prev does not match"
                )?;
                if *first_of_file {
                    f.write_str(" (at the start of a file: is a rotated file missing?)")?;
                }
                Ok(())
            }
            FindingKind::StartsLate => write!(
                f,
                "the trail starts at seq {seq}{place}: the records before it are not here, and \
                 no archive line names the record before it (sluice audit archive writes one \
                 for each file it moves): deleted, or moved away by hand"
            ),
            FindingKind::ArchivedBefore => write!(
                f,
                "the trail starts at seq {seq}{place}: the records before it were archived \
                 (an archive line names record {})",
                seq.saturating_sub(1)
            ),
            FindingKind::StartAcknowledged => write!(
                f,
                "the trail starts at seq {seq}{place}: the records before it were moved away \
                 by other means than sluice audit archive, as a holder of the key acknowledged"
            ),
            FindingKind::ArchiveLineRefused => write!(
                f,
                "a line{place} is not an archive line, or does not verify under the key"
            ),
            FindingKind::FileStartLost => write!(
                f,
                "{record}{place} is not the record its file was opened with: the file's first \
                 records were cut off"
            ),
            FindingKind::FileStartInside => write!(
                f,
                "{record}{place} opened a file but is not at the start of one: records were \
                 moved from the start of another file"
            ),
            FindingKind::RowsMissingAtStart => write!(
                f,
                "the chain starts at seq {seq}{place}: the rows before it were deleted (an \
                 audit database keeps every record)"
            ),
            FindingKind::WrongInstance { expected, found } => write!(
                f,
                "{record}{place} names instance {found:?}, not {expected:?}: it was moved or \
                 relabelled from another instance's chain"
            ),
            FindingKind::InstanceMissing => write!(
                f,
                "no records and no head row{place}: the instance never wrote to this audit \
                 database, or all its rows and its head row were deleted"
            ),
            FindingKind::Torn { continued: false } => {
                write!(f, "torn last record (crash during write?){place}")
            }
            FindingKind::Torn { continued: true } => write!(
                f,
                "torn record{place}: a crash during a write, after which sluice set the file \
                 aside and continued the chain"
            ),
            FindingKind::TornUnaccounted => write!(
                f,
                "bytes without a newline{place}, with records after them that do not account \
                 for them as a crash sluice recovered from: added to the file after it was \
                 finished"
            ),
            FindingKind::TornBytesMissing => write!(
                f,
                "{record}{place} says sluice found and kept a torn record before it, and \
                 those bytes are not there as it describes them: they were cut off or changed"
            ),
            FindingKind::HoleRecovered { at } => write!(
                f,
                "zero bytes at offset {at}{place} with bytes after them: writes that never \
                 reached the disk (a power loss?), which sluice set aside when it restarted \
                 (the record after them says so)"
            ),
            FindingKind::HoleBytesMissing => write!(
                f,
                "{record}{place} says sluice found and kept zero bytes inside the file before \
                 it, and those bytes are not there as it describes them: they were changed"
            ),
            FindingKind::Recovered(found) => write!(
                f,
                "{record}{place} says sluice recovered the trail when it started: it found {found}"
            ),
            FindingKind::Unreadable(error) => write!(f, "cannot read{place}: {error}"),
            FindingKind::AnchorMatched => write!(
                f,
                "{record}{place} has the MAC the anchor given names: the trail up to it is the one sluice logged"
            ),
            FindingKind::AnchorMismatch => write!(
                f,
                "{record}{place} has another MAC than the anchor given names: it or a record before it is not what sluice wrote (rewritten by a holder of the key?), or the anchor is another trail's"
            ),
            FindingKind::AnchorMissing => write!(
                f,
                "{record}, which the anchor given names, is not in the trail: cut off, deleted or archived, or the anchor is another trail's"
            ),
            FindingKind::DataAfterEnd => write!(
                f,
                "bytes other than zeros follow the end of the records{place}"
            ),
            FindingKind::NoFiles => write!(f, "no audit file{place}"),
            FindingKind::HeadMissing => write!(f, "the head file{place} is missing"),
            FindingKind::HeadRefused(refused) => {
                write!(f, "the head file{place} is refused: {refused}")
            }
            FindingKind::HeadSlotRefused(refused) => write!(
                f,
                "a slot of the head file{place} is refused ({refused}): a crash while the head \
                 was written, or a change; the head is read from the other slot"
            ),
            FindingKind::BeyondHead { head_seq } => write!(
                f,
                "records beyond the head: the head names seq {head_seq}, the trail goes on to \
                 seq {seq}"
            ),
            FindingKind::CutShort { head_seq } => write!(
                f,
                "file cut short after seq {seq}{place}: the head names seq {head_seq}"
            ),
            FindingKind::HeadMismatch => write!(
                f,
                "the head names seq {seq} with a MAC that record {seq} does not have"
            ),
        }
    }
}

/// " (file x, line n)" for a finding that has a place; nothing otherwise.
struct Place<'a>(&'a Finding);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.file, self.0.line) {
            (Some(file), Some(line)) => write!(f, " (file {}, line {line})", file_name(file)),
            (Some(file), None) => write!(f, " ({})", file.display()),
            _ => Ok(()),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A torn record in a file, and what the recovery record after it must
/// say of it to show it torn by a crash (see `recovery_record` in
/// `log.rs`).
struct OpenTorn {
    /// Its finding's index in [`Check::findings`].
    finding: usize,
    file: Option<String>,
    len: usize,
    sha256: String,
}

impl OpenTorn {
    fn new(finding: usize, path: &Path, bytes: &[u8]) -> OpenTorn {
        OpenTorn {
            finding,
            file: path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            len: bytes.len(),
            sha256: super::log::torn_bytes_digest(bytes),
        }
    }

    /// Whether a record's fields are the recovery record for these bytes.
    fn accounted_for_by(&self, fields: &serde_json::Map<String, Value>) -> bool {
        names_torn_bytes(fields)
            && fields.get("torn_file").and_then(Value::as_str) == self.file.as_deref()
            && fields.get("torn_bytes").and_then(Value::as_u64) == Some(self.len as u64)
            && fields.get("torn_sha256").and_then(Value::as_str) == Some(self.sha256.as_str())
    }
}

/// Zero bytes inside a file's data (see `Hole` in `log.rs`), and what the
/// recovery record after it must say of them to show them a crash's.
struct OpenHole {
    /// Its finding's index in [`Check::findings`].
    finding: usize,
    file: Option<String>,
    hole: super::log::Hole,
}

impl OpenHole {
    /// Whether a record's fields are the recovery record for this hole.
    fn accounted_for_by(&self, fields: &serde_json::Map<String, Value>) -> bool {
        names_hole(fields)
            && fields.get("hole_file").and_then(Value::as_str) == self.file.as_deref()
            && fields.get("hole_from").and_then(Value::as_u64) == Some(self.hole.from)
            && fields.get("hole_bytes").and_then(Value::as_u64) == Some(self.hole.len)
            && fields.get("hole_sha256").and_then(Value::as_str) == Some(self.hole.sha256.as_str())
    }
}

/// Whether a record is a recovery record that names a hole it found.
fn names_hole(fields: &serde_json::Map<String, Value>) -> bool {
    fields.get("event").and_then(Value::as_str) == Some(super::log::TRAIL_RECOVERED)
        && fields.contains_key("hole_sha256")
}

/// Whether a record is a recovery record that names torn bytes it found.
fn names_torn_bytes(fields: &serde_json::Map<String, Value>) -> bool {
    fields.get("event").and_then(Value::as_str) == Some(super::log::TRAIL_RECOVERED)
        && fields.contains_key("torn_sha256")
}

/// The state of one verification as it walks the files.
struct Check {
    findings: Vec<Finding>,
    /// Findings past [`FINDINGS_KEPT`], and of them problems.
    left_out: u64,
    problems_left_out: u64,
    records: u64,
    first_seq: Option<u64>,
    /// The record before the next one: its seq and the MAC it has (or, when
    /// it was changed, claims).
    last: Option<Link>,
    /// Where the last record is, for findings about the end of the trail.
    last_place: (Option<PathBuf>, Option<u64>),
    /// The MAC of the record whose seq the head names, once seen.
    mac_at_head_seq: Option<[u8; 32]>,
    /// A torn record not yet followed by another record.
    open_torn: Option<OpenTorn>,
    /// Zeros inside a file's data, not yet followed by another record.
    open_hole: Option<OpenHole>,
    /// Whether the record being counted is the recovery record that
    /// accounts for [`Check::open_hole`].
    hole_accounted: bool,
    /// Whether the record being counted is the recovery record that
    /// accounts for [`Check::open_torn`].
    torn_accounted: bool,
    /// The instance whose database rows these are (`None`: files). The
    /// database sink neither rotates nor tears a record, and each record
    /// must name this instance.
    rows_of: Option<String>,
    /// The anchors to check. Two may name one seq with different MACs (a
    /// log that saw the chain fork): each is checked, so one fails.
    anchors: Vec<Anchor>,
    /// The last records of files archived away (and of starts
    /// acknowledged), as the archive lines name them.
    archived: super::archive::ArchiveLines,
}

/// An anchor and what the check found at its seq.
struct Anchor {
    seq: u64,
    mac: [u8; 32],
    /// The record there, once met.
    met: Option<AnchorMet>,
}

/// The record at an anchor's seq.
struct AnchorMet {
    /// Its MAC, if it verified (a changed record is reported as such).
    verified_mac: Option<[u8; 32]>,
    file: PathBuf,
    line: u64,
}

impl Check {
    fn new() -> Check {
        Check {
            findings: Vec::new(),
            left_out: 0,
            problems_left_out: 0,
            records: 0,
            first_seq: None,
            last: None,
            last_place: (None, None),
            mac_at_head_seq: None,
            open_torn: None,
            open_hole: None,
            hole_accounted: false,
            torn_accounted: false,
            rows_of: None,
            anchors: Default::default(),
            archived: Default::default(),
        }
    }

    /// Reads the archive lines of the trail whose active file is `path`
    /// (see [`super::archive`]): a line that does not verify is a problem.
    fn read_archive_lines(&mut self, path: &Path, key: &ChainKey) {
        let lines_path = super::archive::lines_path(path);
        match super::archive::read_lines(path, key) {
            Ok(lines) => {
                for &line in &lines.refused {
                    let kind = FindingKind::ArchiveLineRefused;
                    self.problem(kind, Some(&lines_path), Some(line), None);
                }
                self.archived = lines;
            }
            Err(error) => {
                let kind = FindingKind::Unreadable(error.to_string());
                self.problem(kind, Some(&lines_path), None, None);
            }
        }
    }

    /// Checks `anchors` too (see [`verify_anchored`]).
    fn anchored(mut self, anchors: &[Link]) -> Check {
        self.anchors = anchors
            .iter()
            .map(|anchor| Anchor {
                seq: anchor.seq,
                mac: anchor.mac,
                met: None,
            })
            .collect();
        // By seq, for the lookup at every record.
        self.anchors.sort_by_key(|anchor| anchor.seq);
        self
    }

    /// Notes the record at `seq`, if an anchor names it.
    fn meet_anchor(&mut self, seq: u64, verified_mac: Option<[u8; 32]>, path: &Path, line: u64) {
        let from = self.anchors.partition_point(|anchor| anchor.seq < seq);
        let at_seq = self.anchors[from..]
            .iter_mut()
            .take_while(|anchor| anchor.seq == seq);
        for anchor in at_seq {
            anchor.met = Some(AnchorMet {
                verified_mac,
                file: path.to_path_buf(),
                line,
            });
        }
    }

    /// What became of each anchor, at the end of the check.
    fn report_anchors(&mut self) {
        for anchor in std::mem::take(&mut self.anchors) {
            let seq = anchor.seq;
            match anchor.met {
                None => self.problem(FindingKind::AnchorMissing, None, None, Some(seq)),
                // Reported as modified already.
                Some(AnchorMet {
                    verified_mac: None, ..
                }) => {}
                Some(AnchorMet {
                    verified_mac: Some(mac),
                    file,
                    line,
                }) => {
                    let (severity, kind) = if mac == anchor.mac {
                        (Severity::Note, FindingKind::AnchorMatched)
                    } else {
                        (Severity::Problem, FindingKind::AnchorMismatch)
                    };
                    self.add(severity, kind, Some(&file), Some(line), Some(seq));
                }
            }
        }
    }

    fn add(
        &mut self,
        severity: Severity,
        kind: FindingKind,
        file: Option<&Path>,
        line: Option<u64>,
        seq: Option<u64>,
    ) {
        if self.findings.len() >= FINDINGS_KEPT {
            self.left_out += 1;
            self.problems_left_out += u64::from(severity == Severity::Problem);
            return;
        }
        self.findings.push(Finding {
            severity,
            kind,
            file: file.map(Path::to_path_buf),
            line,
            seq,
        });
    }

    fn problem(
        &mut self,
        kind: FindingKind,
        file: Option<&Path>,
        line: Option<u64>,
        seq: Option<u64>,
    ) {
        self.add(Severity::Problem, kind, file, line, seq);
    }

    /// Checks every line of one file.
    fn file(&mut self, path: &Path, key: &ChainKey, head_seq: Option<u64>) {
        match super::log::open_trail_file(path) {
            Ok(file) => self.lines(path, RecordLines::new(file), key, head_seq),
            Err(error) => self.problem(
                FindingKind::Unreadable(error.to_string()),
                Some(path),
                None,
                None,
            ),
        }
    }

    /// Checks record lines (newlines included) from `place`, a file or a
    /// database's rows, in chain order.
    fn lines(
        &mut self,
        path: &Path,
        lines: impl Iterator<Item = io::Result<Vec<u8>>>,
        key: &ChainKey,
        head_seq: Option<u64>,
    ) {
        self.lines_from(path, 1, lines, key, head_seq);
    }

    /// [`Check::lines`] of a place read in parts: `first` is the number of
    /// the first of these lines in it.
    fn lines_from(
        &mut self,
        path: &Path,
        first: u64,
        lines: impl Iterator<Item = io::Result<Vec<u8>>>,
        key: &ChainKey,
        head_seq: Option<u64>,
    ) {
        for (number, line) in (first..).zip(lines) {
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    let finding = self.findings.len();
                    let kind = if DataAfterEnd::is(&error) {
                        // A crash's, if the record after the file says so.
                        let hole = super::log::open_trail_file(path)
                            .and_then(|file| super::log::hole_in(&file))
                            .ok()
                            .flatten();
                        self.open_hole = hole.map(|hole| OpenHole {
                            finding,
                            file: path
                                .file_name()
                                .map(|name| name.to_string_lossy().into_owned()),
                            hole,
                        });
                        FindingKind::DataAfterEnd
                    } else {
                        FindingKind::Unreadable(error.to_string())
                    };
                    self.problem(kind, Some(path), Some(number), None);
                    return;
                }
            };
            let at = (path, number, number == 1);
            match chain::open_line(key, &line) {
                Ok(record) => {
                    self.check_instance(&record.fields, path, number, record.seq);
                    if self.rows_of.is_none() && record.opens_file != (number == 1) {
                        let kind = match number {
                            1 => FindingKind::FileStartLost,
                            _ => FindingKind::FileStartInside,
                        };
                        self.problem(kind, Some(path), Some(number), Some(record.seq));
                    }
                    self.torn_accounted = self
                        .open_torn
                        .as_ref()
                        .is_some_and(|torn| torn.accounted_for_by(&record.fields));
                    // Where the files before it were archived away (the
                    // chain starts late), there is nothing to compare.
                    let starts_late = self.last.is_none() && record.seq > 1;
                    if !self.torn_accounted && !starts_late && names_torn_bytes(&record.fields) {
                        // The torn bytes recovery found and kept are gone
                        // from before it, or changed.
                        let kind = FindingKind::TornBytesMissing;
                        self.problem(kind, Some(path), Some(number), Some(record.seq));
                    }
                    self.hole_accounted = self
                        .open_hole
                        .as_ref()
                        .is_some_and(|hole| hole.accounted_for_by(&record.fields));
                    if !self.hole_accounted && !starts_late && names_hole(&record.fields) {
                        let kind = FindingKind::HoleBytesMissing;
                        self.problem(kind, Some(path), Some(number), Some(record.seq));
                    }
                    if record.fields.get("event").and_then(Value::as_str)
                        == Some(super::log::TRAIL_RECOVERED)
                    {
                        let said = |name: &str| record.fields.get(name).and_then(Value::as_str);
                        let found = match (said("found"), said("set_aside")) {
                            (Some(found), Some(kept)) => format!("{found} (set aside as {kept})"),
                            (Some(found), None) => found.to_owned(),
                            (None, _) => "what it found is not said".to_owned(),
                        };
                        let kind =
                            FindingKind::Recovered(crate::text::one_line(&found).into_owned());
                        self.add(
                            Severity::Note,
                            kind,
                            Some(path),
                            Some(number),
                            Some(record.seq),
                        );
                    }
                    self.follow(record.link(), record.prev, at);
                    if head_seq == Some(record.seq) {
                        self.mac_at_head_seq = Some(record.mac);
                    }
                    self.meet_anchor(record.seq, Some(record.mac), path, number);
                }
                Err(LineError::BadMac {
                    claimed_seq,
                    claimed_mac,
                }) => {
                    // Its place in the chain, rather than the seq it claims:
                    // the claim may be what was changed.
                    // Checked: a crafted line can claim seq u64::MAX.
                    let seq = self
                        .last
                        .and_then(|last| last.seq.checked_add(1))
                        .or(claimed_seq);
                    self.problem(FindingKind::Modified, Some(path), Some(number), seq);
                    self.count(seq, path, number);
                    if let Some(seq) = seq {
                        self.last = Some(Link {
                            seq,
                            mac: claimed_mac,
                        });
                        if head_seq == Some(seq) {
                            self.mac_at_head_seq = Some(claimed_mac);
                        }
                        self.meet_anchor(seq, None, path, number);
                    }
                }
                // A transaction commits whole rows: a torn one was made
                // so, and is no crash that sluice recovered from.
                Err(LineError::Torn) if self.rows_of.is_some() => {
                    let kind = FindingKind::NotARecord(
                        "it has no newline at its end, which the database sink never writes",
                    );
                    let seq = chain::peek_seq(&line);
                    self.problem(kind, Some(path), Some(number), seq);
                }
                Err(LineError::Torn) => {
                    self.open_torn = Some(OpenTorn::new(self.findings.len(), path, &line));
                    let kind = FindingKind::Torn { continued: false };
                    let seq = chain::peek_seq(&line);
                    self.problem(kind, Some(path), Some(number), seq);
                }
                Err(LineError::Malformed(reason)) => {
                    let kind = FindingKind::NotARecord(reason);
                    let seq = chain::peek_seq(&line);
                    self.problem(kind, Some(path), Some(number), seq);
                }
            }
        }
    }

    /// Checks that a database row's record names the instance whose rows
    /// it is in: its MAC covers the name, the row's `instance` column does
    /// not.
    fn check_instance(
        &mut self,
        fields: &serde_json::Map<String, Value>,
        path: &Path,
        number: u64,
        seq: u64,
    ) {
        let Some(expected) = &self.rows_of else {
            return;
        };
        let found = fields.get("instance").and_then(Value::as_str).unwrap_or("");
        if found != expected {
            let kind = FindingKind::WrongInstance {
                expected: expected.clone(),
                found: found.to_owned(),
            };
            self.problem(kind, Some(path), Some(number), Some(seq));
        }
    }

    /// Checks that a record that opened follows the one before it.
    fn follow(
        &mut self,
        link: Link,
        prev: [u8; 32],
        (path, number, first_of_file): (&Path, u64, bool),
    ) {
        match self.last {
            None if link.seq == 1 && prev == GENESIS_MAC => {}
            None if link.seq == 1 => {
                let kind = FindingKind::Broken {
                    after: 0,
                    first_of_file,
                };
                self.problem(kind, Some(path), Some(number), Some(1));
            }
            // Rows are never rotated away: a late start lost rows.
            None if self.rows_of.is_some() => {
                let kind = FindingKind::RowsMissingAtStart;
                self.problem(kind, Some(path), Some(number), Some(link.seq));
            }
            None => {
                let before = Link {
                    seq: link.seq.saturating_sub(1),
                    mac: prev,
                };
                let (severity, kind) = if self.archived.archived.contains(&before) {
                    (Severity::Note, FindingKind::ArchivedBefore)
                } else if self.archived.acknowledged.contains(&before) {
                    (Severity::Note, FindingKind::StartAcknowledged)
                } else {
                    (Severity::Problem, FindingKind::StartsLate)
                };
                self.add(severity, kind, Some(path), Some(number), Some(link.seq));
            }
            // Checked: nothing follows seq u64::MAX.
            Some(last) if last.seq.checked_add(1) == Some(link.seq) && prev == last.mac => {}
            Some(last) => {
                let kind = FindingKind::Broken {
                    after: last.seq,
                    first_of_file,
                };
                self.problem(kind, Some(path), Some(number), Some(link.seq));
            }
        }
        self.last = Some(link);
        self.count(Some(link.seq), path, number);
    }

    /// Counts a record line, and turns an earlier torn record into a note:
    /// the chain went on after it.
    fn count(&mut self, seq: Option<u64>, path: &Path, number: u64) {
        self.records += 1;
        if self.first_seq.is_none() {
            self.first_seq = seq;
        }
        self.last_place = (Some(path.to_path_buf()), Some(number));
        let hole_accounted = std::mem::take(&mut self.hole_accounted);
        if let Some(hole) = self.open_hole.take()
            && hole_accounted
            && let Some(finding) = self.findings.get_mut(hole.finding)
        {
            finding.severity = Severity::Note;
            finding.kind = FindingKind::HoleRecovered {
                at: hole.hole.zero_at,
            };
        }
        let accounted = std::mem::take(&mut self.torn_accounted);
        if let Some(torn) = self.open_torn.take()
            && let Some(finding) = self.findings.get_mut(torn.finding)
        {
            // A crash sluice recovered from, if the record after the torn
            // bytes says so; bytes added to a finished file otherwise.
            if accounted {
                finding.severity = Severity::Note;
                finding.kind = FindingKind::Torn { continued: true };
            } else {
                finding.kind = FindingKind::TornUnaccounted;
            }
        }
    }

    /// The report, once every record was checked: the head compared with
    /// the last record first, when it verified.
    fn report(mut self, path: PathBuf, files: Vec<PathBuf>, head: HeadStatus) -> Report {
        if let Some(link) = head.link() {
            self.compare_head(&link);
        }
        self.report_anchors();
        Report {
            path,
            files,
            records: self.records,
            first_seq: self.first_seq,
            last_seq: self.last.map(|last| last.seq),
            head,
            findings: self.findings,
            left_out: self.left_out,
            problems_left_out: self.problems_left_out,
        }
    }

    /// Checks that the head names exactly the last record.
    fn compare_head(&mut self, head: &Link) {
        let last = self.last.unwrap_or(Link::GENESIS);
        let (file, line) = self.last_place.clone();
        if head.seq > last.seq {
            let kind = FindingKind::CutShort { head_seq: head.seq };
            self.problem(kind, file.as_deref(), line, Some(last.seq));
            return;
        }
        if head.seq < last.seq {
            let kind = FindingKind::BeyondHead { head_seq: head.seq };
            self.problem(kind, None, None, Some(last.seq));
        }
        let mac_at_head = if head.seq == last.seq {
            Some(last.mac)
        } else if head.seq == 0 {
            Some(GENESIS_MAC)
        } else {
            self.mac_at_head_seq
        };
        // A head before the first record here (older files archived) cannot
        // be compared.
        if mac_at_head.is_some_and(|mac| mac != head.mac) {
            self.problem(FindingKind::HeadMismatch, None, None, Some(head.seq));
        }
    }
}

/// Reads and checks the head file; a missing or refused head is a problem,
/// and so is a slot of it that does not verify beside one that does.
fn read_head(head_path: Option<&Path>, key: &ChainKey, check: &mut Check) -> HeadStatus {
    let Some(head_path) = head_path else {
        return HeadStatus::NotChecked;
    };
    let at = Some(head_path);
    match read_head_file(head_path) {
        Ok(None) => {
            check.problem(FindingKind::HeadMissing, at, None, None);
            HeadStatus::Missing
        }
        Err(error) => {
            check.problem(FindingKind::Unreadable(error.to_string()), at, None, None);
            HeadStatus::Unreadable(error.to_string())
        }
        Ok(Some(bytes)) => check_head(chain::parse_head_file(key, &bytes), head_path, check),
    }
}

/// Reports a head as read from `at`: refused, or verified (with a problem
/// for a slot beside it that is not).
fn check_head(read: Result<HeadSlots, HeadError>, at: &Path, check: &mut Check) -> HeadStatus {
    match read {
        Ok(slots) => {
            if let Some(refused) = slots.other_refused {
                check.problem(FindingKind::HeadSlotRefused(refused), Some(at), None, None);
            }
            HeadStatus::Verified(slots.newest)
        }
        Err(refused) => {
            check.problem(
                FindingKind::HeadRefused(refused.clone()),
                Some(at),
                None,
                None,
            );
            HeadStatus::Refused(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::log::{AuditLog, Fsync, LogSettings};
    use serde_json::{Map, Value, json};
    use std::fs::{self, File};

    /// A trail written by the real log, and a place to copy it for tampering.
    struct Trail {
        dir: tempfile::TempDir,
        settings: LogSettings,
    }

    fn key() -> ChainKey {
        ChainKey::from_bytes(&[9u8; 32]).expect("long enough")
    }

    fn statement(task: u64, n: u64) -> Map<String, Value> {
        match json!({"event": "statement", "session": format!("s{task}"), "text": format!("select {n}")})
        {
            Value::Object(map) => map,
            _ => unreachable!("a json object literal"),
        }
    }

    /// 8 tasks × 10 records, written at once.
    async fn write_trail(rotate_bytes: Option<u64>) -> Trail {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = LogSettings {
            path: dir.path().join("audit.jsonl"),
            head_path: dir.path().join("audit.head"),
            key: key(),
            instance: "gw-1".to_string(),
            fsync: Fsync::Always,
            rotate_bytes,
            rotate_after: None,
        };
        let log = AuditLog::open(settings.clone()).expect("opens");
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    for n in 0..10 {
                        log.record(statement(task, n)).await.expect("durable");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task ran");
        }
        let stats = log.stats();
        assert!(stats.commits < stats.records, "{stats:?}");
        log.close().await;
        Trail { dir, settings }
    }

    impl Trail {
        fn verify(&self) -> Report {
            verify(
                &self.settings.path,
                Some(&self.settings.head_path),
                &self.settings.key,
            )
        }

        fn lines(&self) -> Vec<Vec<u8>> {
            let file = File::open(&self.settings.path).expect("exists");
            RecordLines::new(file)
                .collect::<io::Result<_>>()
                .expect("readable")
        }

        fn write_lines(&self, lines: &[Vec<u8>]) {
            fs::write(&self.settings.path, lines.concat()).expect("writes");
        }

        /// A fresh copy of the trail (files and head), to tamper with.
        fn copy(&self) -> Trail {
            let dir = tempfile::tempdir().expect("tempdir");
            for entry in fs::read_dir(self.dir.path()).expect("lists") {
                let entry = entry.expect("entry");
                fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copies");
            }
            let mut settings = self.settings.clone();
            settings.path = dir.path().join("audit.jsonl");
            settings.head_path = dir.path().join("audit.head");
            Trail { dir, settings }
        }
    }

    /// [`chain::seal`] of the first record of a file.
    fn seal_opening(
        key: &ChainKey,
        before: &Link,
        instance: &str,
        time: std::time::SystemTime,
        event: &Map<String, Value>,
    ) -> Result<(Vec<u8>, Link), chain::SealError> {
        let body = chain::EventBody::from_map(event)?;
        let mut line = Vec::new();
        let link = chain::seal_body_into(key, before, instance, time, &body, true, &mut line)?;
        Ok((line, link))
    }

    fn kinds(report: &Report) -> Vec<&FindingKind> {
        report
            .findings
            .iter()
            .map(|finding| &finding.kind)
            .collect()
    }

    fn only_problem(report: &Report) -> &Finding {
        let problems: Vec<_> = report.problems().collect();
        assert_eq!(problems.len(), 1, "{report}");
        problems[0]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_catches_every_kind_of_tampering() {
        let trail = write_trail(None).await;
        let report = trail.verify();
        assert!(report.ok(), "{report}");
        assert!(report.findings.is_empty(), "{report}");
        assert_eq!(report.records, 80);
        assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(80)));
        let last = chain::open_line(&trail.settings.key, &trail.lines()[79]).expect("opens");
        assert_eq!(report.head, HeadStatus::Verified(last.link()));
        let summary = report.to_string();
        assert!(summary.contains(": OK"), "{summary}");
        assert!(summary.contains("80 checked, seq 1 to 80"), "{summary}");

        // A byte changed inside record 17's JSON.
        let copy = trail.copy();
        let mut lines = copy.lines();
        let text = String::from_utf8(lines[16].clone()).expect("UTF-8");
        lines[16] = text.replacen("select ", "selekt ", 1).into_bytes();
        copy.write_lines(&lines);
        let report = copy.verify();
        let finding = only_problem(&report);
        assert_eq!(finding.kind, FindingKind::Modified);
        assert_eq!((finding.seq, finding.line), (Some(17), Some(17)));
        assert_eq!(
            finding.to_string(),
            "record 17 (file audit.jsonl, line 17) was modified: its MAC does not verify"
        );

        // A record copied in after record 30.
        let copy = trail.copy();
        let mut lines = copy.lines();
        let copied = lines[9].clone();
        lines.insert(30, copied);
        copy.write_lines(&lines);
        let report = copy.verify();
        assert!(!report.ok());
        assert!(
            report
                .problems()
                .all(|f| matches!(f.kind, FindingKind::Broken { .. }))
        );
        let first = report.problems().next().expect("a problem");
        assert_eq!(first.line, Some(31));
        assert!(
            first
                .to_string()
                .starts_with("record inserted/deleted/reordered between seq 30 and 10")
        );

        // Record 42 deleted.
        let copy = trail.copy();
        let mut lines = copy.lines();
        lines.remove(41);
        copy.write_lines(&lines);
        let report = copy.verify();
        let problems: Vec<_> = report.problems().collect();
        assert!(problems[0].to_string().starts_with(
            "record inserted/deleted/reordered between seq 41 and 43 (file audit.jsonl, line 42): prev does not match"
        ), "{report}");
        // The head names seq 80 and the trail ends at 80: the deletion shows
        // only in the chain.
        assert_eq!(problems.len(), 1, "{report}");

        // Records 50 and 51 swapped.
        let copy = trail.copy();
        let mut lines = copy.lines();
        lines.swap(49, 50);
        copy.write_lines(&lines);
        let report = copy.verify();
        assert!(!report.ok());
        let broken: Vec<_> = report.problems().map(|f| (f.seq, f.kind.clone())).collect();
        assert_eq!(
            broken,
            vec![
                (
                    Some(51),
                    FindingKind::Broken {
                        after: 49,
                        first_of_file: false
                    }
                ),
                (
                    Some(50),
                    FindingKind::Broken {
                        after: 51,
                        first_of_file: false
                    }
                ),
                (
                    Some(52),
                    FindingKind::Broken {
                        after: 50,
                        first_of_file: false
                    }
                ),
            ]
        );

        // The whole chain recomputed under another key, head included: a
        // forger without the key.
        let copy = trail.copy();
        let forger = ChainKey::from_bytes(&[66u8; 32]).expect("long enough");
        let mut link = Link::GENESIS;
        let mut forged = Vec::new();
        for line in copy.lines() {
            let record = chain::open_line(&copy.settings.key, &line).expect("opens");
            let mut event = record.fields.clone();
            for field in chain::RESERVED_FIELDS {
                event.remove(field);
            }
            let (line, next) =
                chain::seal(&forger, &link, "gw-1", std::time::SystemTime::now(), &event)
                    .expect("seals");
            forged.push(line);
            link = next;
        }
        copy.write_lines(&forged);
        fs::write(&copy.settings.head_path, chain::head_line(&forger, &link)).expect("writes");
        let report = copy.verify();
        assert_eq!(
            report
                .problems()
                .filter(|f| f.kind == FindingKind::Modified)
                .count(),
            80
        );
        assert!(kinds(&report).contains(&&FindingKind::HeadRefused(HeadError::BadMac)));
        assert_eq!(report.head, HeadStatus::Refused(HeadError::BadMac));
        // Only the lines forged, the real head kept: it names another MAC.
        fs::copy(&trail.settings.head_path, &copy.settings.head_path).expect("copies");
        let report = copy.verify();
        assert!(
            kinds(&report).contains(&&FindingKind::HeadMismatch),
            "{report}"
        );

        // Cut at a record boundary after seq 70.
        let copy = trail.copy();
        let lines = copy.lines();
        copy.write_lines(&lines[..70]);
        let report = copy.verify();
        let finding = only_problem(&report);
        assert_eq!(finding.kind, FindingKind::CutShort { head_seq: 80 });
        assert_eq!(
            finding.to_string(),
            "file cut short after seq 70 (file audit.jsonl, line 70): the head names seq 80"
        );

        // The head file removed.
        let copy = trail.copy();
        fs::remove_file(&copy.settings.head_path).expect("removes");
        let report = copy.verify();
        assert_eq!(only_problem(&report).kind, FindingKind::HeadMissing);
        assert_eq!(report.head, HeadStatus::Missing);

        // The last line torn in the middle.
        let copy = trail.copy();
        let mut lines = copy.lines();
        let last = lines.len() - 1;
        lines[last].truncate(100);
        copy.write_lines(&lines);
        let report = copy.verify();
        let torn = report
            .problems()
            .find(|f| f.kind == FindingKind::Torn { continued: false })
            .expect("the torn record is a problem");
        assert_eq!((torn.seq, torn.line), (Some(80), Some(80)));
        assert!(
            torn.to_string()
                .starts_with("torn last record (crash during write?)")
        );
        assert!(kinds(&report).contains(&&FindingKind::CutShort { head_seq: 80 }));

        // A forged record appended: it links to the last record, but its
        // MAC is made up.
        let copy = trail.copy();
        let mut lines = copy.lines();
        let last = chain::open_line(&copy.settings.key, &lines[79]).expect("opens");
        let forged = format!(
            "{{\"seq\":81,\"time\":\"2026-11-29T06:30:00.000000Z\",\"instance\":\"gw-1\",\
             \"prev\":\"{}\",\"event\":\"statement\",\"mac\":\"{}\"}}\n",
            chain::encode_hex(&last.mac),
            "ab".repeat(32)
        );
        lines.push(forged.into_bytes());
        copy.write_lines(&lines);
        let report = copy.verify();
        let problems: Vec<_> = report.problems().map(|f| (f.seq, f.kind.clone())).collect();
        assert_eq!(
            problems,
            vec![
                (Some(81), FindingKind::Modified),
                (Some(81), FindingKind::BeyondHead { head_seq: 80 }),
            ]
        );
    }

    /// Same key, same seq, another chain: only `prev` tells the record
    /// does not belong.
    /// Each file starts with the record sluice opened it with: cutting the
    /// oldest records off the only file is found (it only started late
    /// before), and so is a file's opening record moved inside a file;
    /// whole rotated files archived away still leave a trail that is whole.
    #[tokio::test]
    async fn cutting_the_oldest_records_off_a_file_is_found() {
        let trail = write_trail(None).await;
        let copy = trail.copy();
        let lines = copy.lines();
        assert!(
            chain::open_line(&copy.settings.key, &lines[0])
                .expect("opens")
                .opens_file
        );
        copy.write_lines(&lines[5..]);
        let report = copy.verify();
        // The file's start lost, and with it the chain's.
        let problems: Vec<_> = report.problems().collect();
        assert_eq!(problems.len(), 2, "{report}");
        let finding = problems[0];
        assert_eq!(
            (&finding.kind, finding.line, finding.seq),
            (&FindingKind::FileStartLost, Some(1), Some(6)),
            "{report}"
        );
        assert!(finding.to_string().contains("first records were cut off"));
        assert_eq!(problems[1].kind, FindingKind::StartsLate, "{report}");

        let rotated = write_trail(Some(600)).await;
        let files = crate::audit::log::chain_files(&rotated.settings.path).expect("lists");
        assert!(files.len() > 2, "{files:?}");
        let copy = rotated.copy();
        let copied = crate::audit::log::chain_files(&copy.settings.path).expect("lists");
        fs::remove_file(&copied[0]).expect("deletes the oldest file");
        let report = copy.verify();
        assert_eq!(only_problem(&report).kind, FindingKind::StartsLate);
        // The second file's opening record moved to the end of the first.
        let copy = rotated.copy();
        let copied = crate::audit::log::chain_files(&copy.settings.path).expect("lists");
        let read = |path: &Path| -> Vec<Vec<u8>> {
            RecordLines::new(File::open(path).expect("opens"))
                .collect::<io::Result<_>>()
                .expect("reads")
        };
        let (mut first, mut second) = (read(&copied[0]), read(&copied[1]));
        first.push(second.remove(0));
        fs::write(&copied[0], first.concat()).expect("writes");
        fs::write(&copied[1], second.concat()).expect("writes");
        let report = copy.verify();
        assert!(
            kinds(&report).contains(&&FindingKind::FileStartInside),
            "{report}"
        );
        assert!(
            kinds(&report).contains(&&FindingKind::FileStartLost),
            "{report}"
        );
    }

    /// Anchors — heads sluice logged, kept apart from the trail — catch
    /// what the head file cannot: a trail cut short with a head re-sealed
    /// to match (by a holder of the key) verifies, and fails against the
    /// anchor of its old end; an anchor of another MAC fails too.
    #[tokio::test]
    async fn anchors_catch_a_trail_cut_short_and_re_headed() {
        let trail = write_trail(None).await;
        let lines = trail.lines();
        let links: Vec<Link> = lines
            .iter()
            .map(|line| chain::open_line(&key(), line).expect("opens").link())
            .collect();
        let (middle, last) = (links[40], links[links.len() - 1]);
        let anchored = |trail: &Trail, anchors: &[Link]| {
            verify_anchored(
                &trail.settings.path,
                Some(&trail.settings.head_path),
                &key(),
                anchors,
            )
        };
        let report = anchored(&trail, &[middle, last]);
        assert!(report.ok(), "{report}");
        let matched = |report: &Report| {
            kinds(report)
                .into_iter()
                .filter(|kind| **kind == FindingKind::AnchorMatched)
                .count()
        };
        assert_eq!(matched(&report), 2, "{report}");

        let cut = trail.copy();
        cut.write_lines(&lines[..60]);
        fs::write(
            &cut.settings.head_path,
            chain::head_line(&key(), &links[59]),
        )
        .expect("re-seals the head");
        assert!(cut.verify().ok(), "{}", cut.verify());
        let report = anchored(&cut, &[middle, last]);
        assert!(!report.ok(), "{report}");
        assert_eq!(matched(&report), 1, "{report}");
        let missing: Vec<_> = report.problems().collect();
        assert_eq!(missing.len(), 1, "{report}");
        assert_eq!(missing[0].kind, FindingKind::AnchorMissing);
        assert_eq!(missing[0].seq, Some(last.seq));
        assert!(
            report.to_string().contains("is not in the trail"),
            "{report}"
        );

        let other = Link {
            seq: middle.seq,
            mac: [7; 32],
        };
        let report = anchored(&trail, &[other]);
        assert!(
            kinds(&report).contains(&&FindingKind::AnchorMismatch),
            "{report}"
        );
        // Two anchors for one seq (a log that saw the chain fork): each is
        // checked, whichever comes last.
        for anchors in [[middle, other], [other, middle]] {
            let report = anchored(&trail, &anchors);
            assert_eq!(matched(&report), 1, "{report}");
            assert_eq!(only_problem(&report).kind, FindingKind::AnchorMismatch);
        }
        // An anchor at a changed record: the change is the finding.
        let changed = trail.copy();
        let mut edited = lines.clone();
        edited[40] = String::from_utf8(edited[40].clone())
            .expect("text")
            .replacen("select", "SELECT", 1)
            .into_bytes();
        changed.write_lines(&edited);
        let report = anchored(&changed, &[middle]);
        assert!(kinds(&report).contains(&&FindingKind::Modified), "{report}");
        assert!(!kinds(&report).contains(&&FindingKind::AnchorMismatch));
        assert!(!kinds(&report).contains(&&FindingKind::AnchorMatched));
    }

    /// `SEQ:MAC` as the log gives a head; anything else is refused, saying
    /// what is wrong.
    #[test]
    fn an_anchor_is_read_as_the_log_gives_it() {
        let mac = "ab".repeat(32);
        let link = Link::parse(&format!("742:{mac}")).expect("reads");
        assert_eq!((link.seq, link.mac), (742, [0xab; 32]));
        assert_eq!(
            Link::parse(&format!("742:{}", mac.to_uppercase())).expect("reads"),
            link
        );
        for (bad, why) in [
            ("742", "is not SEQ:MAC"),
            (&format!("0:{mac}") as &str, "is not a record's seq"),
            (&format!("-1:{mac}"), "is not a record's seq"),
            ("742:abc", "is not a MAC"),
            (&format!("742:{}", "zz".repeat(32)), "is not a MAC"),
        ] {
            let error = Link::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    /// A reader of a live trail can catch a record half-copied into the
    /// mapped file, its later bytes there before its earlier ones: bytes
    /// after the end of the data. A live look takes it for a write in
    /// flight, looks again once the write is done, and finds the trail
    /// whole. (Bytes that stay there are reported: the log's tests.)
    #[tokio::test]
    async fn a_live_look_waits_out_a_record_caught_half_copied() {
        let copy = write_trail(None).await.copy();
        let lines = copy.lines();
        let whole = lines.concat();
        let (last, before) = lines.split_last().expect("records");
        let mut caught = before.concat();
        caught.extend(std::iter::repeat_n(0u8, last.len() / 2));
        caught.extend_from_slice(&last[last.len() / 2..]);
        caught.extend([0u8; 4096]);
        fs::write(&copy.settings.path, &caught).expect("writes");
        let first = copy.verify();
        assert!(
            kinds(&first).contains(&&FindingKind::DataAfterEnd),
            "{first}"
        );

        let mut waits = 0;
        let path = &copy.settings.path;
        let report =
            verify_looking_again(path, Some(&copy.settings.head_path), &key(), &[], || {
                waits += 1;
                fs::write(path, &whole).expect("the write ends");
            });
        assert!(report.ok(), "{report}");
        assert_eq!(waits, 1);
    }

    /// A hostile file in the trail's place neither hangs the check nor
    /// exhausts it: a link to a device that never ends is refused as
    /// unreadable, and a flood of lines that are no records is counted past
    /// the findings kept, the trail still failing.
    #[tokio::test]
    async fn hostile_files_are_reported_not_read_forever() {
        let trail = write_trail(None).await;
        let copy = trail.copy();
        fs::remove_file(&copy.settings.path).expect("removes");
        std::os::unix::fs::symlink("/dev/zero", &copy.settings.path).expect("links");
        let report = copy.verify();
        assert!(!report.ok());
        assert!(
            report
                .problems()
                .any(|f| matches!(f.kind, FindingKind::Unreadable(_))),
            "{report}"
        );

        let copy = trail.copy();
        let mut lines = copy.lines();
        lines.extend(std::iter::repeat_n(b"\n".to_vec(), FINDINGS_KEPT + 5));
        copy.write_lines(&lines);
        let report = copy.verify();
        assert!(!report.ok());
        assert_eq!(report.findings.len(), FINDINGS_KEPT);
        assert!(report.problems_left_out >= 5, "{}", report.left_out);
        assert!(report.to_string().contains("more"), "{report}");
    }

    #[tokio::test]
    async fn a_record_spliced_in_from_another_chain_breaks_prev() {
        let trail = write_trail(None).await;
        let other = write_trail(None).await;
        let copy = trail.copy();
        let mut lines = copy.lines();
        lines[19] = other.lines()[19].clone();
        copy.write_lines(&lines);
        let report = copy.verify();
        let problems: Vec<_> = report.problems().map(|f| (f.seq, f.kind.clone())).collect();
        let broken = |after| FindingKind::Broken {
            after,
            first_of_file: false,
        };
        assert_eq!(
            problems,
            vec![(Some(20), broken(19)), (Some(21), broken(20))],
            "{report}"
        );
    }

    #[tokio::test]
    async fn rotated_files_verify_as_one_chain_and_a_missing_one_is_caught() {
        let trail = write_trail(Some(2000)).await;
        let report = trail.verify();
        assert!(report.ok(), "{report}");
        assert!(report.files.len() >= 4, "{report}");
        assert_eq!(report.records, 80);

        let copy = trail.copy();
        let removed = copy.dir.path().join("audit.jsonl.000002");
        let first_of_third = {
            let file = File::open(copy.dir.path().join("audit.jsonl.000003")).expect("exists");
            let line = RecordLines::new(file)
                .next()
                .expect("a line")
                .expect("readable");
            chain::open_line(&copy.settings.key, &line)
                .expect("opens")
                .seq
        };
        fs::remove_file(&removed).expect("removes");
        let report = copy.verify();
        let finding = only_problem(&report);
        assert_eq!(finding.seq, Some(first_of_third));
        assert!(
            matches!(
                finding.kind,
                FindingKind::Broken {
                    first_of_file: true,
                    ..
                }
            ),
            "{report}"
        );
        assert!(finding.to_string().contains("is a rotated file missing?"));
        assert_eq!(
            finding.file.as_deref(),
            Some(copy.dir.path().join("audit.jsonl.000003").as_path())
        );

        // The oldest file deleted: the records before the first one here
        // are gone, and nothing says they were archived.
        let copy = trail.copy();
        fs::remove_file(copy.dir.path().join("audit.jsonl.000001")).expect("removes");
        let report = copy.verify();
        let finding = only_problem(&report);
        assert_eq!(finding.kind, FindingKind::StartsLate);
        assert!(
            finding.to_string().starts_with(&format!(
                "the trail starts at seq {}",
                report.first_seq.unwrap_or(0)
            )),
            "{finding}"
        );
        assert!(finding.to_string().contains("no archive line"), "{finding}");
    }

    /// Files moved away by `sluice audit archive` are told from deleted
    /// ones: the trail starting after the last record an archive line
    /// names is a note; one more file deleted after them, an archive line
    /// not sealed with the key, or the lines' file deleted, a problem.
    #[tokio::test]
    async fn archived_files_are_told_from_deleted_ones() {
        use crate::audit::archive;
        let rotated = write_trail(Some(600)).await;
        let files = crate::audit::log::chain_files(&rotated.settings.path).expect("lists");
        assert!(files.len() > 3, "{files:?}");
        let copy = rotated.copy();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let cold = elsewhere.path().join("cold");
        let moved = archive::archive(&copy.settings.path, &key(), &cold, files.len() - 3)
            .expect("archives");
        assert_eq!(moved.len(), 2, "{moved:?}");
        for file in &moved {
            assert!(!file.from.exists() && file.to.exists(), "{file:?}");
        }
        let report = copy.verify();
        assert!(report.ok(), "{report}");
        let note = &report.findings[0];
        assert_eq!(
            (note.severity, &note.kind),
            (Severity::Note, &FindingKind::ArchivedBefore)
        );
        assert_eq!(note.seq, Some(moved[1].last.seq + 1));
        assert!(note.to_string().contains("were archived"), "{note}");
        // Archiving again moves nothing more than asked.
        let again = archive::archive(&copy.settings.path, &key(), &cold, files.len() - 3);
        assert!(again.expect("archives").is_empty());
        // sluice starts again on the archived trail and writes on: the
        // chain goes on, and still verifies.
        let log = AuditLog::open(copy.settings.clone()).expect("reopens the archived trail");
        log.record(statement(9, 9)).await.expect("durable");
        log.close().await;
        let report = copy.verify();
        assert!(report.ok(), "{report}");
        assert_eq!(report.findings[0].kind, FindingKind::ArchivedBefore);
        // Never into the trail's own directory, by its name or a link to
        // it: the copy would be the file, and removing it lose it.
        let link = elsewhere.path().join("link-to-the-trail");
        std::os::unix::fs::symlink(copy.dir.path(), &link).expect("links");
        for into in [copy.dir.path(), link.as_path()] {
            let refused = archive::archive(&copy.settings.path, &key(), into, 1);
            assert!(
                matches!(refused, Err(archive::ArchiveError::IntoTheTrail { .. })),
                "{refused:?}"
            );
        }
        assert!(copy.verify().ok(), "{}", copy.verify());

        // A file deleted past the archived ones.
        let deleted = copy.copy();
        let left = crate::audit::log::chain_files(&deleted.settings.path).expect("lists");
        fs::remove_file(&left[0]).expect("deletes");
        assert_eq!(
            only_problem(&deleted.verify()).kind,
            FindingKind::StartsLate
        );
        // The archive lines' file gone.
        let unrecorded = copy.copy();
        fs::remove_file(archive::lines_path(&unrecorded.settings.path)).expect("deletes");
        assert_eq!(
            only_problem(&unrecorded.verify()).kind,
            FindingKind::StartsLate
        );
        // A line written without the key (another key's), beside the
        // real ones: refused, and it accounts for nothing.
        let forged = copy.copy();
        let other = ChainKey::from_bytes(&[8u8; 32]).expect("a key");
        let lines_path = archive::lines_path(&forged.settings.path);
        let mut text = fs::read_to_string(&lines_path).expect("reads");
        text.push_str(
            std::str::from_utf8(&chain::archive_line(&other, &moved[1].last)).expect("text"),
        );
        fs::write(&lines_path, text).expect("writes");
        let report = forged.verify();
        let problem = only_problem(&report);
        assert_eq!(
            (&problem.kind, problem.line),
            (&FindingKind::ArchiveLineRefused, Some(3))
        );
    }

    /// The newest rotated file always stays (it holds the chain's last
    /// record while the active file has none, and sluice numbers the next
    /// rotated file after it), even asked to keep none.
    #[tokio::test]
    async fn the_newest_rotated_file_always_stays() {
        use crate::audit::archive;
        let copy = write_trail(Some(600)).await.copy();
        let files = crate::audit::log::rotated_files(&copy.settings.path).expect("lists");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let moved =
            archive::archive(&copy.settings.path, &key(), elsewhere.path(), 0).expect("archives");
        assert_eq!(moved.len(), files.len() - 1);
        let left = crate::audit::log::rotated_files(&copy.settings.path).expect("lists");
        assert_eq!(left, files[files.len() - 1..]);
        assert!(copy.verify().ok(), "{}", copy.verify());
    }

    /// A line a crash left torn at the end of the archive lines' file
    /// accounts for nothing and spoils nothing: verify passes over it, and
    /// the next archive run cuts it before writing its own.
    #[tokio::test]
    async fn a_torn_archive_line_is_passed_over_and_cut() {
        use crate::audit::archive;
        let copy = write_trail(Some(600)).await.copy();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let files = crate::audit::log::rotated_files(&copy.settings.path).expect("lists");
        archive::archive(
            &copy.settings.path,
            &key(),
            elsewhere.path(),
            files.len() - 1,
        )
        .expect("archives the oldest");
        let lines_path = archive::lines_path(&copy.settings.path);
        let whole = fs::read(&lines_path).expect("reads");
        let torn = &whole[..40];
        fs::write(&lines_path, [whole.as_slice(), torn].concat()).expect("tears a line");
        assert!(copy.verify().ok(), "{}", copy.verify());
        archive::archive(
            &copy.settings.path,
            &key(),
            elsewhere.path(),
            files.len() - 2,
        )
        .expect("archives the next");
        let lines = archive::read_lines(&copy.settings.path, &key()).expect("reads");
        assert_eq!((lines.archived.len(), lines.refused.len()), (2, 0));
        // The torn bytes are gone: two whole lines, each the size of one.
        let text = fs::read_to_string(&lines_path).expect("reads");
        assert_eq!(text.len(), 2 * whole.len(), "{text}");
        assert!(text.ends_with('\n'));
        assert!(copy.verify().ok(), "{}", copy.verify());
    }

    /// An archive cut short by a crash is finished by the next run: a copy
    /// already in the archive with the same bytes is taken; one with other
    /// bytes stops it, moving nothing.
    #[tokio::test]
    async fn an_interrupted_archive_is_finished_and_a_conflict_refused() {
        use crate::audit::archive;
        let rotated = write_trail(Some(600)).await;
        let copy = rotated.copy();
        let files = crate::audit::log::rotated_files(&copy.settings.path).expect("lists");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let cold = elsewhere.path().join("cold");
        fs::create_dir(&cold).expect("makes the archive");
        // Copied, not yet recorded nor removed: the crash.
        let (_, oldest) = &files[0];
        let name = oldest.file_name().expect("a name");
        fs::copy(oldest, cold.join(name)).expect("copies");
        let moved = archive::archive(&copy.settings.path, &key(), &cold, files.len() - 1)
            .expect("archives");
        assert_eq!(moved.len(), 1);
        assert!(copy.verify().ok(), "{}", copy.verify());

        let (_, next) = &files[1];
        fs::write(cold.join(next.file_name().expect("a name")), b"other").expect("writes");
        let refused = archive::archive(&copy.settings.path, &key(), &cold, 0);
        assert!(
            matches!(refused, Err(archive::ArchiveError::Conflict { .. })),
            "{refused:?}"
        );
        assert!(next.exists(), "the conflicting file stays in the trail");
        assert!(copy.verify().ok(), "{}", copy.verify());
    }

    #[test]
    fn an_empty_trail_with_its_head_verifies_and_no_trail_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let head_path = dir.path().join("audit.head");
        let report = verify(&path, Some(&head_path), &key());
        assert!(kinds(&report).contains(&&FindingKind::NoFiles));
        assert!(kinds(&report).contains(&&FindingKind::HeadMissing));

        fs::write(&path, b"").expect("writes");
        fs::write(&head_path, chain::head_line(&key(), &Link::GENESIS)).expect("writes");
        let report = verify(&path, Some(&head_path), &key());
        assert!(report.ok() && report.findings.is_empty(), "{report}");

        let report = verify(&path, None, &key());
        assert_eq!(report.head, HeadStatus::NotChecked);
        assert!(report.to_string().contains("head: not checked"));
    }

    #[test]
    fn a_line_that_is_no_record_is_reported_with_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let key = key();
        let event = statement(1, 1);
        let (first, link) = seal_opening(
            &key,
            &Link::GENESIS,
            "gw",
            std::time::SystemTime::now(),
            &event,
        )
        .expect("seals");
        let (second, link) =
            chain::seal(&key, &link, "gw", std::time::SystemTime::now(), &event).expect("seals");
        fs::write(&path, [first, b"hello\n".to_vec(), second].concat()).expect("writes");
        let head_path = dir.path().join("head");
        fs::write(&head_path, chain::head_line(&key, &link)).expect("writes");
        let report = verify(&path, Some(&head_path), &key);
        let finding = only_problem(&report);
        assert!(matches!(finding.kind, FindingKind::NotARecord(_)));
        assert_eq!(finding.line, Some(2));
        assert!(
            finding
                .to_string()
                .starts_with("a line (file audit.jsonl, line 2) is not an audit record")
        );
    }

    /// `count` records of `instance`'s chain, sealed as the database sink
    /// seals them, and the head row after them.
    fn rows(instance: &str, count: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut link = Link::GENESIS;
        let mut lines = Vec::new();
        for n in 0..count {
            let (line, next) = chain::seal(
                &key(),
                &link,
                instance,
                std::time::SystemTime::now(),
                &statement(0, n),
            )
            .expect("seals");
            lines.push(line);
            link = next;
        }
        (lines, chain::head_line(&key(), &link))
    }

    /// The database sink never rotates: rows missing before the first one
    /// were deleted, and that is a problem (for files too, unless archive
    /// lines account for them) — as is an instance whose rows and head are
    /// all gone, when
    /// the operator names it.
    #[test]
    fn rows_deleted_from_the_start_of_a_database_chain_are_a_problem() {
        let (lines, head) = rows("gw-1", 10);
        let report = verify_rows(&database_place("gw-1"), &lines, Some(&head), &key());
        assert!(report.ok() && report.findings.is_empty(), "{report}");

        let report = verify_rows(&database_place("gw-1"), &lines[3..], Some(&head), &key());
        let finding = only_problem(&report);
        assert_eq!(finding.kind, FindingKind::RowsMissingAtStart);
        assert_eq!((finding.seq, finding.line), (Some(4), Some(1)));
        assert_eq!(
            finding.to_string(),
            "the chain starts at seq 4 (file postgres:gw-1, line 1): the rows before it were \
             deleted (an audit database keeps every record)"
        );

        // Every row deleted, the head row kept: cut short.
        let report = verify_rows(&database_place("gw-1"), &[], Some(&head), &key());
        assert_eq!(
            only_problem(&report).kind,
            FindingKind::CutShort { head_seq: 10 }
        );

        // Rows and head row deleted: nothing is left of the instance.
        let trail = PgTrail {
            instances: vec![crate::audit::postgres::InstanceTrail {
                instance: "gw-2".to_owned(),
                lines: lines.clone(),
                head: Some(head.clone()),
            }],
        };
        let reports = verify_database(&trail, Chains::Found { expected: &[] }, &key());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].path, PathBuf::from("postgres:gw-2"));
        let gw_1 = ["gw-1".to_owned()];
        let reports = verify_database(&trail, Chains::Named(&gw_1), &key());
        assert_eq!(reports.len(), 1, "only the instance named");
        let finding = only_problem(&reports[0]);
        assert_eq!(finding.kind, FindingKind::InstanceMissing);
        assert_eq!(
            finding.to_string(),
            "no records and no head row (postgres:gw-1): the instance never wrote to this \
             audit database, or all its rows and its head row were deleted"
        );
        assert!(reports[0].to_string().contains("FAILED"), "{}", reports[0]);
        // The gateway's own instance (its config names it) is expected
        // beside every instance there, whether named or not.
        let reports = verify_database(&trail, Chains::Found { expected: &gw_1 }, &key());
        let places: Vec<_> = reports.iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            places,
            [
                PathBuf::from("postgres:gw-1"),
                PathBuf::from("postgres:gw-2")
            ]
        );
        assert_eq!(only_problem(&reports[0]).kind, FindingKind::InstanceMissing);
        assert_eq!(reports[1].records, 10, "{}", reports[1]);
        // Nothing named and nothing there: no chain to report on.
        let empty = PgTrail {
            instances: Vec::new(),
        };
        assert!(verify_database(&empty, Chains::Found { expected: &[] }, &key()).is_empty());
    }

    /// A record's MAC covers the instance it names, the row's `instance`
    /// column is not covered: gw-1's rows relabelled as gw-2's must not
    /// verify as gw-2's chain.
    #[test]
    fn rows_relabelled_to_another_instance_are_found() {
        let (lines, head) = rows("gw-1", 5);
        let trail = PgTrail {
            instances: vec![crate::audit::postgres::InstanceTrail {
                instance: "gw-2".to_owned(),
                lines: lines.clone(),
                head: Some(head.clone()),
            }],
        };
        let reports = verify_database(&trail, Chains::Found { expected: &[] }, &key());
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert!(!report.ok(), "{report}");
        let wrong: Vec<_> = report
            .problems()
            .map(|f| (f.seq, f.line, f.kind.clone()))
            .collect();
        let kind = FindingKind::WrongInstance {
            expected: "gw-2".to_owned(),
            found: "gw-1".to_owned(),
        };
        assert_eq!(
            wrong,
            (1..=5)
                .map(|n| (Some(n), Some(n), kind.clone()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            report.findings[0].to_string(),
            "record 1 (file postgres:gw-2, line 1) names instance \"gw-1\", not \"gw-2\": it \
             was moved or relabelled from another instance's chain"
        );

        // One row of gw-1's moved in among gw-2's own.
        let (mut mixed, mixed_head) = rows("gw-2", 5);
        mixed[2] = lines[2].clone();
        let report = verify_rows(&database_place("gw-2"), &mixed, Some(&mixed_head), &key());
        assert!(
            report.problems().any(|f| f.seq == Some(3)
                && matches!(&f.kind, FindingKind::WrongInstance { found, .. } if found == "gw-1")),
            "{report}"
        );

        // Files keep the record's instance as it is: one file, one chain
        // (the rows, moved into a file, lack only the record that opens it).
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, lines.concat()).expect("writes");
        let head_path = dir.path().join("audit.head");
        fs::write(&head_path, &head).expect("writes");
        let report = verify(&path, Some(&head_path), &key());
        let finding = only_problem(&report);
        assert_eq!(
            (&finding.kind, finding.line),
            (&FindingKind::FileStartLost, Some(1))
        );
    }

    /// A database commits whole rows: a row without its newline is no
    /// crash sluice recovered from, even with rows after it.
    #[test]
    fn a_torn_row_in_a_database_chain_is_a_problem() {
        let (mut lines, head) = rows("gw-1", 5);
        let junk = lines[2][..40].to_vec();
        lines.insert(3, junk);
        let report = verify_rows(&database_place("gw-1"), &lines, Some(&head), &key());
        let finding = only_problem(&report);
        assert!(
            matches!(finding.kind, FindingKind::NotARecord(_)),
            "{report}"
        );
        assert_eq!(finding.line, Some(4));
    }

    /// Crafted lines claiming seq u64::MAX are reported, never a panic on
    /// the seq after them.
    #[test]
    fn a_crafted_seq_of_u64_max_is_reported_not_a_panic() {
        let (lines, head) = rows("gw-1", 2);
        let crafted = |line: &[u8]| {
            let text = String::from_utf8(line.to_vec()).expect("UTF-8");
            let rest = text.split_once(',').expect("fields").1;
            format!("{{\"seq\":{},{rest}", u64::MAX).into_bytes()
        };
        let forged = vec![crafted(&lines[0]), crafted(&lines[1])];
        let report = verify_rows(&database_place("gw-1"), &forged, Some(&head), &key());
        assert!(!report.ok());
        let modified: Vec<_> = report
            .problems()
            .filter(|f| f.kind == FindingKind::Modified)
            .map(|f| f.seq)
            .collect();
        assert_eq!(modified, vec![Some(u64::MAX), Some(u64::MAX)], "{report}");

        // A record that opens at seq u64::MAX (sealed with the key), then
        // a changed line after it, in a file.
        let before = Link {
            seq: u64::MAX - 1,
            mac: [7; 32],
        };
        let (last, _) = seal_opening(
            &key(),
            &before,
            "gw-1",
            std::time::SystemTime::now(),
            &statement(0, 0),
        )
        .expect("seals");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, [last, crafted(&lines[1])].concat()).expect("writes");
        let report = verify(&path, None, &key());
        assert!(!report.ok(), "{report}");
        assert_eq!(report.first_seq, Some(u64::MAX));
        // The records before it are not here, and the next was changed.
        let problems: Vec<_> = report.problems().collect();
        assert_eq!(problems.len(), 2, "{report}");
        assert_eq!(problems[0].kind, FindingKind::StartsLate, "{report}");
        let finding = problems[1];
        assert_eq!(
            (&finding.kind, finding.line),
            (&FindingKind::Modified, Some(2))
        );
    }
}
