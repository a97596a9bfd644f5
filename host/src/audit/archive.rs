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
//! Each file is copied (and synced) before its line is written, and its
//! line written (and synced) before the file is removed, so a crash at
//! any point leaves every record in the trail or in the archive, and a
//! second run finishes what the first began.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chain::{self, ChainKey, Link};
use super::log::{RecordLines, open_trail_file, rotated_files};

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

/// What the archive lines of a trail say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveLines {
    /// The last records of the files moved away, as the lines that verify
    /// name them.
    pub archived: Vec<Link>,
    /// Lines (counted from 1) that are not archive lines or do not verify.
    pub refused: Vec<u64>,
}

/// Reads the archive lines of the trail whose active file is `trail`;
/// none when there is no such file.
pub fn read_lines(trail: &Path, key: &ChainKey) -> io::Result<ArchiveLines> {
    let path = lines_path(trail);
    let mut text = String::new();
    match open_trail_file(&path) {
        Ok(file) => {
            // A handful of lines; a file far larger is no archive's.
            file.take(1 << 20).read_to_string(&mut text)?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(ArchiveLines::default());
        }
        Err(error) => return Err(error),
    }
    let mut lines = ArchiveLines::default();
    for (number, line) in (1..).zip(text.split_inclusive('\n')) {
        match chain::parse_archive_line(key, line.as_bytes()) {
            Ok(link) => lines.archived.push(link),
            Err(_) => lines.refused.push(number),
        }
    }
    Ok(lines)
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
/// the directory `to`, oldest first, all but the newest `keep` of them,
/// recording each (see the module's doc). The caller verifies the trail
/// first: what is archived should be known whole.
pub fn archive(
    trail: &Path,
    key: &ChainKey,
    to: &Path,
    keep: usize,
) -> Result<Vec<Moved>, ArchiveError> {
    let rotated = rotated_files(trail).map_err(failed("list the files of", trail))?;
    let chosen = rotated.len().saturating_sub(keep);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .map_err(failed("create", to))?;
    let lines_path = lines_path(trail);
    let mut moved = Vec::new();
    for (_, from) in rotated.into_iter().take(chosen) {
        let last = last_record(&from, key)?;
        let name = from.file_name().unwrap_or_default();
        let copy = to.join(name);
        copy_synced(&from, &copy)?;
        let mut lines = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&lines_path)
            .map_err(failed("open", &lines_path))?;
        lines
            .write_all(&chain::archive_line(key, &last))
            .and_then(|()| lines.sync_data())
            .map_err(failed("write", &lines_path))?;
        fs::remove_file(&from).map_err(failed("remove", &from))?;
        moved.push(Moved {
            from,
            to: copy,
            last,
        });
    }
    if !moved.is_empty() {
        sync_directory(trail).map_err(failed("sync the directory of", trail))?;
        sync_directory(&to.join("x")).map_err(failed("sync", to))?;
    }
    Ok(moved)
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

/// Copies `from` to `to` and syncs the copy. A copy already there with the
/// same bytes (a run a crash cut short) is taken; another is a conflict.
fn copy_synced(from: &Path, to: &Path) -> Result<(), ArchiveError> {
    let bytes = fs::read(from).map_err(failed("read", from))?;
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
    {
        Ok(mut copy) => copy
            .write_all(&bytes)
            .and_then(|()| copy.sync_all())
            .map_err(failed("write", to)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            if fs::read(to).map_err(failed("read", to))? == bytes {
                Ok(())
            } else {
                Err(ArchiveError::Conflict {
                    path: to.to_owned(),
                })
            }
        }
        Err(error) => Err(failed("create", to)(error)),
    }
}

/// Syncs the directory holding `path`, so that a rename or removal in it
/// survives a crash.
fn sync_directory(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}
