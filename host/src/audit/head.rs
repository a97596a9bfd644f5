//! The head file: the chain's last `seq` and `mac`, kept apart from the
//! records, rewritten in every commit (see "The head" in `log.rs`).
//!
//! A head write was a `pwrite(2)` in place, about a quarter of what a
//! statement's record cost under `fsync = "batch"` (BENCHMARKS.md). Like
//! the records, the head is now copied into a shared mapping of the file
//! instead. A copy into a mapping is not atomic the way a small `pwrite`
//! was: a crash of sluice in the middle of it, or the kernel writing the
//! page back while it runs, can leave a line that is half old, half new
//! and verifies under neither. So the file holds two slots (see
//! [`chain::parse_head_file`]), and every head is copied into both, the
//! first slot, then the second. A crash tears at most the one being
//! copied: in the first, the second still holds the head before, and the
//! records the new one was to name lie beyond it (recovery sets them aside
//! and continues, as after a crash between records and head); in the
//! second, the first holds the new head already.
//!
//! Both slots hold the same head at rest, and this matters: the file never
//! keeps an older head beside the newest, so damaging or removing a slot
//! never brings an older head to light to match a trail cut short — the
//! slot left still names the newest record. (Whoever saved an older head
//! beforehand can put it back, as with any head kept in a file they can
//! write; the head sluice logs every minute is the anchor against that.)
//!
//! Where the file cannot be mapped (not a regular file, not on ext4 or
//! tmpfs; see `window.rs`), the slots are written with `pwrite`.
//! Cutting the head file short while sluice runs stops sluice with
//! `SIGBUS` at its next commit, as cutting the active file does: fail
//! closed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::chain::{HEAD_FILE_LEN, HEAD_LEN};
use super::log::open_to_write_in_place;
use super::window::{self, Window};

/// The open head file, written slot by slot.
pub(super) struct HeadFile {
    file: File,
    /// The file mapped, for heads to be copied in without a system call;
    /// `None` where it cannot be.
    mapped: Option<Window>,
}

/// What failed, named for the operator's error message, and why.
pub(super) type HeadWriteError = (&'static str, io::Error);

impl HeadFile {
    /// Opens the head file (creating it, mode 0600, if missing) and writes
    /// `line` into both slots with one `pwrite`, synced: a write that a
    /// crash cannot tear into anything but the file as it was, so the file
    /// holds two whole slots from here on.
    pub(super) fn open(path: &Path, line: &[u8]) -> Result<HeadFile, HeadWriteError> {
        debug_assert_eq!(line.len(), HEAD_LEN);
        let file = open_to_write_in_place(path).map_err(|error| ("open head file", error))?;
        let metadata = file
            .metadata()
            .map_err(|error| ("read the metadata of", error))?;
        // A longer file (from another version) would keep a stale tail.
        if metadata.len() > HEAD_FILE_LEN as u64 {
            file.set_len(HEAD_FILE_LEN as u64)
                .map_err(|error| ("truncate head file", error))?;
        }
        // Written before it is mapped: with one `pwrite`, synced.
        let mut head = HeadFile { file, mapped: None };
        head.write(line, true)?;
        // Both slots are written, so their block is allocated: a copy into
        // the mapping never needs space a full disk lacks.
        head.mapped = (metadata.is_file() && window::reserves_allocated_space(&head.file))
            .then(|| Window::map(&head.file, 0, HEAD_FILE_LEN as u64))
            .and_then(|mapped| {
                mapped
                    .inspect_err(|error| {
                        tracing::warn!(%error, path = %path.display(), "cannot map the audit head file: heads are written to it instead");
                    })
                    .ok()
            });
        Ok(head)
    }

    /// Writes `line` into the first slot, then the second, and syncs the
    /// file if `sync`.
    pub(super) fn write(&mut self, line: &[u8], sync: bool) -> Result<(), HeadWriteError> {
        debug_assert_eq!(line.len(), HEAD_LEN);
        match self.mapped.as_mut() {
            Some(mapped) => {
                mapped.copy_to(0, line);
                mapped.copy_to(HEAD_LEN as u64, line);
            }
            // One write of both: as a crash cannot tear it, the order of
            // the slots does not matter there.
            None => self
                .file
                .write_all_at(&[line, line].concat(), 0)
                .map_err(|error| (WRITE_HEAD, error))?,
        }
        if sync {
            self.sync()
                .map_err(|error| ("fdatasync head file", error))?;
        }
        Ok(())
    }

    /// `fdatasync`s the head file: a copy into the mapping is written back
    /// by it like a write.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
impl HeadFile {
    /// A head file on `/dev/full`, where every write fails with ENOSPC as
    /// on a full disk: for a test to swap in after the log opened.
    pub(super) fn on_a_full_device() -> HeadFile {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens for writing");
        HeadFile { file, mapped: None }
    }
}

/// The step named when a head's write fails.
pub(super) const WRITE_HEAD: &str = "write head file";

/// Reads a head file's bytes (at most one more than a head file holds, so
/// that a longer file is seen to be one); `None` when it is missing. Only
/// a regular file (a symlink to one is followed, as the writer follows
/// it: an operator may keep the head elsewhere), opened without blocking:
/// a FIFO put in its place must not hang `verify` or a start.
pub(super) fn read_head_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(HEAD_FILE_LEN + 1);
    match crate::config::open_regular_file(path) {
        Ok(file) => {
            file.take(HEAD_FILE_LEN as u64 + 1)
                .read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO where the head file belongs is refused at once (reading it
    /// would hang); a symlink to a regular file is followed, as the writer
    /// follows it.
    #[test]
    fn a_head_file_is_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.head");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo reads nothing else.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = read_head_file(&fifo).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");

        let real = dir.path().join("real.head");
        std::fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link.head");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_head_file(&link).unwrap(), Some(b"x".to_vec()));
        let to_fifo = dir.path().join("to-fifo.head");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        assert!(read_head_file(&to_fifo).is_err());
        assert_eq!(read_head_file(&real).unwrap(), Some(b"x".to_vec()));
        assert_eq!(read_head_file(&dir.path().join("none")).unwrap(), None);
    }
}
