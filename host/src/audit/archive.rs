//! Archiving a trail's oldest files, so that records moved away on
//! purpose can be told from records deleted.
//!
//! A trail grows without end; an operator moves its oldest rotated files
//! to cold storage. The chain then starts late, which is also what
//! deleting those files looks like. So `sluice audit archive` moves them
//! (never the active file) and, for each, appends to `FILE.archived`
//! beside the trail a line naming the file's last record — its seq and
//! MAC — sealed under the key. `verify` accepts a chain that starts late
//! only right after a record so named: records gone from the start
//! without one, or any other cut, are a problem.
//!
//! Each file is copied (written under a temporary name, synced, renamed,
//! its directory synced) before its line is written, and its line written
//! (and synced) before the file is removed, so a crash at any point leaves
//! every record in the trail or in the archive, and a second run finishes
//! what the first began. The newest rotated file always stays: it holds
//! the chain's last record while the file being written has none yet, and
//! sluice numbers the next rotated file after it.
//!
//! A trail whose oldest files were moved away by hand (before this
//! existed) can have its start acknowledged by a holder of the key
//! ([`acknowledge_start`]): a line of its own kind, naming the record its
//! first record follows, which verify shows as an acknowledgement, not an
//! archive.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chain::{self, ChainKey, Link};
use super::log::{RecordLines, directory_of, open_trail_file, rotated_files, sync_directory_of};

/// Why archiving stopped. What was moved before it stays moved, each file
/// with its line.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} does not end in a record that verifies under the key: run sluice audit verify")]
    NoLastRecord { path: PathBuf },
    #[error("{path} is already in the archive with other contents: nothing of it was moved")]
    Conflict { path: PathBuf },
    #[error(
        "{to} is the trail's own directory (or leads there): archiving there would delete the files it moves"
    )]
    IntoTheTrail { to: PathBuf },
    #[error("the trail has no record to acknowledge its start at")]
    NoRecords,
    #[error(
        "the trail has archive lines already: its start is acknowledged only before the first archive"
    )]
    AlreadyRecorded,
}

/// Whether two paths are one file (or directory), whatever links or
/// mounts lie between them: the same device and inode.
fn same_file(a: &Path, b: &Path) -> Result<bool, ArchiveError> {
    let (a_seen, b_seen) = (
        fs::metadata(a).map_err(failed("look at", a))?,
        fs::metadata(b).map_err(failed("look at", b))?,
    );
    Ok((a_seen.dev(), a_seen.ino()) == (b_seen.dev(), b_seen.ino()))
}

/// Makes the error of an I/O `action` on `path` that failed.
fn failed(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

/// Where the archive lines of the trail whose active file is `trail` are
/// kept.
pub fn lines_path(trail: &Path) -> PathBuf {
    let mut name = trail.file_name().unwrap_or_default().to_os_string();
    name.push(".archived");
    trail.with_file_name(name)
}

/// Longest line read: sluice's are about 200 bytes, so anything longer is
/// none of them (and is not gathered into memory whole).
const MAX_LINE: u64 = 1024;

/// What the archive lines of a trail say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveLines {
    /// The last records of the files moved away, as the lines that verify
    /// name them.
    pub archived: Vec<Link>,
    /// Records a holder of the key acknowledged the trail starting after
    /// ([`acknowledge_start`]).
    pub acknowledged: Vec<Link>,
    /// Lines (counted from 1) that are not archive lines or do not verify.
    pub refused: Vec<u64>,
}

/// Reads the archive lines of the trail whose active file is `trail`, a
/// line at a time however many there are; none when there is no such
/// file.
pub fn read_lines(trail: &Path, key: &ChainKey) -> io::Result<ArchiveLines> {
    let file = match open_trail_file(&lines_path(trail)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(ArchiveLines::default());
        }
        Err(error) => return Err(error),
    };
    let mut reader = BufReader::new(file);
    let mut lines = ArchiveLines::default();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            if read as u64 == MAX_LINE {
                skip_line(&mut reader)?;
            } else {
                // The end of the file, torn: a line a crash cut short,
                // whose file was never removed (its line comes first). It
                // accounts for nothing, and the next append drops it.
                break;
            }
        }
        if let Ok(link) = chain::parse_archive_line(key, &line) {
            lines.archived.push(link);
        } else if let Ok(link) = chain::parse_acknowledgement_line(key, &line) {
            lines.acknowledged.push(link);
        } else {
            lines.refused.push(number);
        }
    }
    Ok(lines)
}

/// Reads past the rest of a line, a piece at a time: a hostile line may be
/// endless.
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let piece = reader.fill_buf()?;
        if piece.is_empty() {
            return Ok(());
        }
        match piece.iter().position(|&byte| byte == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let len = piece.len();
                reader.consume(len);
            }
        }
    }
}

/// A file moved into the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: PathBuf,
    pub to: PathBuf,
    /// Its last record.
    pub last: Link,
}

/// Moves the rotated files of the trail whose active file is `trail` into
/// the directory `to`, oldest first, all but the newest `keep` of them —
/// and never the newest: it holds the chain's last record while the
/// active file has none yet, and sluice numbers the next rotated file
/// after it. Each is recorded (see the module's doc). The caller verifies
/// the trail first: what is archived should be known whole.
pub fn archive(
    trail: &Path,
    key: &ChainKey,
    to: &Path,
    keep: usize,
) -> Result<Vec<Moved>, ArchiveError> {
    let rotated = rotated_files(trail).map_err(failed("list the files of", trail))?;
    let chosen = rotated.len().saturating_sub(keep.max(1));
    create_synced(to)?;
    if same_file(to, directory_of(trail))? {
        return Err(ArchiveError::IntoTheTrail { to: to.to_owned() });
    }
    let mut moved = Vec::new();
    for (_, from) in rotated.into_iter().take(chosen) {
        let last = last_record(&from, key)?;
        let copy = to.join(from.file_name().unwrap_or_default());
        copy_synced(&from, &copy, to)?;
        // The copy is another file, whatever links or mounts lie between:
        // removing the original must not remove the only one.
        if same_file(&from, &copy)? {
            return Err(ArchiveError::IntoTheTrail { to: to.to_owned() });
        }
        append_line(trail, &chain::archive_line(key, &last))?;
        fs::remove_file(&from).map_err(failed("remove", &from))?;
        moved.push(Moved {
            from,
            to: copy,
            last,
        });
    }
    if !moved.is_empty() {
        sync_directory_of(trail).map_err(failed("sync the directory of", trail))?;
    }
    Ok(moved)
}

/// Records that the trail's records before its first one were moved away
/// by other means (by hand, before `archive` existed): the line names the
/// record its first record follows. Only a holder of the key can write it,
/// and it says nothing about what those records held: an operator's word,
/// recorded (and shown by verify) as such, not as an archive. Refused once
/// the trail has archive lines: from then on `archive` moves its files,
/// and a start gone past them was deleted.
pub fn acknowledge_start(trail: &Path, key: &ChainKey) -> Result<Link, ArchiveError> {
    let recorded = read_lines(trail, key).map_err(failed("read", &lines_path(trail)))?;
    if recorded != ArchiveLines::default() {
        return Err(ArchiveError::AlreadyRecorded);
    }
    let files = super::log::chain_files(trail).map_err(failed("list the files of", trail))?;
    let first = files
        .iter()
        .find_map(|file| {
            let opened = open_trail_file(file).ok()?;
            let line = RecordLines::new(opened).next()?.ok()?;
            chain::open_line(key, &line).ok()
        })
        .ok_or(ArchiveError::NoRecords)?;
    let before = Link {
        seq: first.seq.saturating_sub(1),
        mac: first.prev,
    };
    append_line(trail, &chain::acknowledgement_line(key, &before))?;
    Ok(before)
}

/// Appends `line` to the trail's archive lines, synced (and the file's
/// directory entry with it, the first time). A line a crash left without
/// its newline is cut off first: its file was not removed, so it named
/// nothing moved, and glued to the new line it would spoil that one too.
fn append_line(trail: &Path, line: &[u8]) -> Result<(), ArchiveError> {
    let path = lines_path(trail);
    let created = !path.exists();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(failed("open", &path))?;
    let metadata = file.metadata().map_err(failed("look at", &path))?;
    if !metadata.is_file() {
        let error = io::Error::other("not a regular file");
        return Err(failed("append to", &path)(error));
    }
    let len = metadata.len();
    let whole = whole_lines_len(&file, len).map_err(failed("read", &path))?;
    if whole < len {
        file.set_len(whole)
            .map_err(failed("cut the torn line of", &path))?;
    }
    // After bytes that are no line of ours (see whole_lines_len): on a
    // line of its own.
    let after_foreign_bytes =
        whole == len && len > 0 && !ends_in_newline(&file, len).map_err(failed("read", &path))?;
    let mut text = Vec::with_capacity(line.len() + 1);
    if after_foreign_bytes {
        text.push(b'\n');
    }
    text.extend_from_slice(line);
    file.write_all(&text)
        .and_then(|()| file.sync_data())
        .map_err(failed("write", &path))?;
    if created {
        sync_directory_of(trail).map_err(failed("sync the directory of", trail))?;
    }
    Ok(())
}

/// How many of the first `len` bytes of `file` are whole lines: up to and
/// including its last newline (the last [`MAX_LINE`] bytes looked at; a
/// longer torn line is no archive line's, and is cut whole).
fn whole_lines_len(file: &fs::File, len: u64) -> io::Result<u64> {
    let from = len.saturating_sub(MAX_LINE);
    let mut tail = vec![0u8; (len - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    Ok(match tail.iter().rposition(|&byte| byte == b'\n') {
        Some(at) => from + at as u64 + 1,
        None if from == 0 => 0,
        // No newline in the last MAX_LINE bytes of a longer file: keep
        // what cannot be judged from here; the reader refuses it.
        None => len,
    })
}

/// Whether the `len` bytes of `file` end in a newline.
fn ends_in_newline(file: &fs::File, len: u64) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// The last record of a finished file that verifies: the one the next
/// file's first record follows. A torn last line (a crash's, which sluice
/// set aside with the file) is no record, and passed over.
fn last_record(path: &Path, key: &ChainKey) -> Result<Link, ArchiveError> {
    let file = open_trail_file(path).map_err(failed("open", path))?;
    let mut last = None;
    for line in RecordLines::new(file) {
        let line = line.map_err(failed("read", path))?;
        match chain::open_line(key, &line) {
            Ok(record) => last = Some(record.link()),
            Err(chain::LineError::Torn) => {}
            Err(_) => last = None,
        }
    }
    last.ok_or_else(|| ArchiveError::NoLastRecord {
        path: path.to_owned(),
    })
}

/// Copies `from` to `to` in the directory `dir`: written under a temporary
/// name, synced, renamed into place and the directory synced, so that the
/// copy is whole and on the disk before its original may go. A copy
/// already there with the same bytes (a run a crash cut short) is taken,
/// and synced again (that run may not have); another is a conflict. Read
/// a piece at a time: a rotated file may be large.
fn copy_synced(from: &Path, to: &Path, dir: &Path) -> Result<(), ArchiveError> {
    match fs::File::open(to) {
        Ok(there) => {
            let original = fs::File::open(from).map_err(failed("open", from))?;
            if !same_contents(original, &there).map_err(failed("compare", to))? {
                return Err(ArchiveError::Conflict {
                    path: to.to_owned(),
                });
            }
            there.sync_all().map_err(failed("sync", to))?;
            return sync_directory_of(to).map_err(failed("sync", dir));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed("open", to)(error)),
    }
    let mut original = fs::File::open(from).map_err(failed("open", from))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(dir)
        .map_err(failed("create a file in", dir))?;
    io::copy(&mut original, &mut temp)
        .and_then(|_| temp.as_file().sync_all())
        .map_err(failed("write", temp.path()))?;
    // Not over a file that appeared meanwhile.
    temp.persist_noclobber(to)
        .map_err(|error| failed("rename into", to)(error.error))?;
    sync_directory_of(to).map_err(failed("sync", dir))
}

/// Whether two files hold the same bytes, compared a piece at a time.
fn same_contents(a: fs::File, b: &fs::File) -> io::Result<bool> {
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut a, mut b) = (BufReader::new(a), BufReader::new(b));
    loop {
        let (pa, pb) = (a.fill_buf()?, b.fill_buf()?);
        if pa.is_empty() || pb.is_empty() {
            return Ok(pa.is_empty() && pb.is_empty());
        }
        let n = pa.len().min(pb.len());
        if pa[..n] != pb[..n] {
            return Ok(false);
        }
        a.consume(n);
        b.consume(n);
    }
}

/// Makes the directory `dir` (and any missing above it, mode 0700), each
/// new one's name synced into its parent, so that a crash cannot take the
/// archive away once its files are there.
fn create_synced(dir: &Path) -> Result<(), ArchiveError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for new in missing.iter().rev() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(new)
            .or_else(|error| match error.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(error),
            })
            .map_err(failed("create", new))?;
        sync_directory_of(new).map_err(failed("sync the directory of", new))?;
    }
    Ok(())
}
