//! A window of the active audit file mapped into memory, for records to
//! be copied into the space allocated ahead of them without a system call.
//!
//! Under `fsync = "batch"` a statement's record must be in the kernel's
//! hands before the statement runs, and no more: the `pwrite(2)` that put it
//! there was about a fifth of the trail's cost per statement
//! (`cargo bench --bench audit_trail`, see BENCHMARKS.md). A copy into a
//! shared mapping of the file lands in the same page cache as the write
//! did, so it survives a crash of sluice the same way, and `fdatasync`
//! writes it back as it would the write's (under `"always"`).
//!
//! Three rules keep the mapping safe, all kept by `ActiveFile` in
//! `log.rs`, the window's only user:
//!
//! - Only space already allocated — inside the file's size, its blocks
//!   reserved by `posix_fallocate` — is copied into. A mapped page past the
//!   end of the file raises `SIGBUS`, and a page whose blocks had to be
//!   found on a full disk would fail the same way, where the write returned
//!   ENOSPC.
//! - Only files on filesystems that always write into the blocks reserved
//!   are mapped ([`reserves_allocated_space`]: ext4 and tmpfs), never where
//!   a block may be shared with a copy (btrfs, XFS with reflink).
//! - The window is dropped (unmapped) before the file is cut shorter.
//!
//! Cutting the active file short from outside while sluice writes it —
//! which its lock file (`PATH.lock`) tells other sluices not to do, and
//! nothing else may — stops sluice with `SIGBUS` at the next record:
//! fail closed, as the write's error did.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// How much of the allocated space one window maps at most (more when one
/// write is larger): the file's pages stay in the page cache either way,
/// but only the window's count in sluice's resident memory.
#[cfg(not(test))]
pub(super) const WINDOW_BYTES: u64 = 4 << 20;
/// Small in unit tests, so that their records cross windows' edges.
#[cfg(test)]
pub(super) const WINDOW_BYTES: u64 = 64 << 10;

/// A shared, writable mapping of `len` bytes of a file from `start`.
pub(super) struct Window {
    start: u64,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the window owns its mapping; nothing else holds `base`, and the
// mapping stays valid whichever thread uses or unmaps it.
unsafe impl Send for Window {}

impl Window {
    /// Maps `file` from `start` for `len` bytes. `start` must be a
    /// multiple of the page size; the caller keeps what it copies inside the
    /// file's size.
    pub(super) fn map(file: &File, start: u64, len: u64) -> io::Result<Window> {
        let offset = libc::off_t::try_from(start).map_err(io::Error::other)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty window"));
        }
        // SAFETY: a new mapping at an address of the kernel's choosing, of a
        // descriptor this file owns; it aliases no Rust memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Window { start, base, len })
    }

    /// Whether `len` bytes from file offset `at` lie inside the window.
    pub(super) fn covers(&self, at: u64, len: usize) -> bool {
        at >= self.start
            && (at - self.start)
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.len as u64)
    }

    /// Copies `bytes` to file offset `at`, which [`covers`](Self::covers)
    /// must hold for.
    pub(super) fn copy_to(&mut self, at: u64, bytes: &[u8]) {
        assert!(self.covers(at, bytes.len()), "a copy outside the window");
        let offset = (at - self.start) as usize;
        // SAFETY: inside the mapping (checked above), which no Rust
        // reference points into, from a slice that cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            );
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Whether the filesystem holding `file` writes a mapped page into the
/// blocks `posix_fallocate` reserved for it, so that a copy into allocated
/// space can never need space a full disk lacks: ext4 and tmpfs do. A
/// copy-on-write filesystem (btrfs) finds new blocks for every write, and
/// would stop sluice with SIGBUS on a full disk where the write returned
/// ENOSPC. So would XFS, for all that it writes in place: with reflink (its
/// default since xfsprogs 5.1), a copy of the file made by `cp` (which
/// shares extents where it can) leaves every shared block to be copied on
/// its next write, and that copy needs space. Files anywhere but on ext4
/// and tmpfs are written, not mapped.
pub(super) fn reserves_allocated_space(file: &File) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the buffer it is given, on a descriptor this
    // file owns; the buffer is read only after it succeeded.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    matches!(stat.f_type, libc::EXT4_SUPER_MAGIC | libc::TMPFS_MAGIC)
}

/// The system's page size, which a window's start must be a multiple of.
pub(super) fn page_size() -> u64 {
    // SAFETY: a plain query with no arguments to get wrong.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|&size| size > 0)
        .unwrap_or(4096)
}
