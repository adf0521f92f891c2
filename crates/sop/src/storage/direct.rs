//! `O_DIRECT` files: [`DirectFile`], used by `FileStorage::direct()`.
//!
//! `O_DIRECT` bypasses the page cache but requires the buffer address, the file offset and the
//! length of every `pread`/`pwrite` to be multiples of [`DIRECT_IO_ALIGNMENT`]. The engine reads
//! and writes at arbitrary offsets and lengths, so this type translates:
//!
//! # Invariants
//!
//! - Every `pread`/`pwrite` goes through an [`AlignedBuf`] (heap memory allocated with
//!   4096-byte alignment, a multiple of 4096 long) at a 4096-aligned offset, and
//!   [`check_aligned`] verifies address, offset and length right before each syscall: a
//!   violation is an `InvalidInput` error, never a panic and never a syscall.
//! - A read covers the aligned block range around the request and copies the wanted bytes out.
//!   The last block may be partial (the file ends inside it): the kernel returns a short count
//!   there, which ends the read; a request past the end fails with `UnexpectedEof`.
//! - A write covers the aligned block range around the request. The partial first and last
//!   blocks are read first (read-modify-write) so bytes outside the request keep their values;
//!   a write past the end extends the file (the gap reads as zeros).
//! - The logical length is exact: when the aligned write went past the true end
//!   (`max(old length, offset + len)`), the file is cut back to it with `ftruncate`
//!   (`File::set_len`), so `len()` never shows the padding.
//! - A per-handle `RwLock` serialises writes and `set_len` (a read-modify-write must not race
//!   another one on the same block) and keeps reads from seeing the padding between the
//!   aligned write and the `ftruncate`. Two handles writing the same file concurrently are not
//!   coordinated; the engine has one writer per file.
//! - `sync` is `fdatasync`, which also persists the size.
//! - A file system that refuses `O_DIRECT` (`EINVAL` at open) gives an `Unsupported` error
//!   that says so (and a file just created by that open is removed again).
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt::{self, Debug};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{PoisonError, RwLock};

use super::file::{open_options, with_path};
use super::{OpenMode, StorageFile};

/// The alignment (of buffer addresses, file offsets and lengths) `O_DIRECT` I/O uses.
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

const ALIGN: u64 = DIRECT_IO_ALIGNMENT as u64;

/// A zero-initialised heap buffer whose address is a multiple of [`DIRECT_IO_ALIGNMENT`] and
/// whose length is a non-zero multiple of it.
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// Allocates `len` zero bytes; `len` must be a non-zero multiple of the alignment.
    pub(super) fn zeroed(len: usize) -> io::Result<Self> {
        if len == 0 || !len.is_multiple_of(DIRECT_IO_ALIGNMENT) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("aligned buffer length {len} is not a non-zero multiple of 4096"),
            ));
        }
        let layout = Layout::from_size_align(len, DIRECT_IO_ALIGNMENT)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate a {len}-byte aligned buffer"),
            )
        })?;
        Ok(Self { ptr, layout })
    }

    /// The buffer length.
    pub(super) fn len(&self) -> usize {
        self.layout.size()
    }

    /// The bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` bytes allocated by `zeroed` (so initialised)
        // and owned by `self` until drop; the shared borrow of `self` prevents mutation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The bytes, mutably.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the exclusive borrow of `self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed(self.layout)` and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Fails unless an `O_DIRECT` transfer of `len` bytes at `offset` from/to `addr` is aligned.
pub(super) fn check_aligned(addr: *const u8, offset: u64, len: usize) -> io::Result<()> {
    if (addr as usize).is_multiple_of(DIRECT_IO_ALIGNMENT)
        && offset.is_multiple_of(ALIGN)
        && len.is_multiple_of(DIRECT_IO_ALIGNMENT)
    {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unaligned O_DIRECT I/O refused (address {addr:p}, offset {offset}, length {len}; \
                 all must be multiples of {DIRECT_IO_ALIGNMENT})"
            ),
        ))
    }
}

fn align_down(x: u64) -> u64 {
    x - x % ALIGN
}

fn align_up(x: u64) -> io::Result<u64> {
    x.checked_next_multiple_of(ALIGN)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// The end of a request, checking for overflow.
fn request_end(offset: u64, len: usize) -> io::Result<u64> {
    offset
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset + length overflows"))
}

/// The number of bytes in an aligned block range (fits in memory or fails).
fn span_len(start: u64, end: u64) -> io::Result<usize> {
    usize::try_from(end - start)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))
}

/// A file opened with `O_DIRECT` (see the module docs).
pub(super) struct DirectFile {
    file: File,
    path: PathBuf,
    /// Read lock for reads, write lock for writes and `set_len`.
    lock: RwLock<()>,
}

impl Debug for DirectFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectFile")
            .field("path", &self.path)
            .finish()
    }
}

impl DirectFile {
    /// Opens `path` with `O_DIRECT`.
    pub(super) fn open(path: &Path, mode: OpenMode) -> io::Result<Self> {
        let mut options = open_options(mode);
        options.custom_flags(libc::O_DIRECT);
        match options.open(path) {
            Ok(file) => Ok(Self {
                file,
                path: path.to_path_buf(),
                lock: RwLock::new(()),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if mode == OpenMode::CreateNew {
                    // The kernel checks O_EXCL before O_DIRECT support: the file did not exist
                    // and this open created it. Do not leave it behind.
                    let _ = std::fs::remove_file(path);
                }
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the file system refuses O_DIRECT for {} ({e}); use buffered I/O",
                        path.display()
                    ),
                ))
            }
            Err(e) => Err(with_path(e, "cannot open", path)),
        }
    }

    /// Reads the aligned range starting at `start` into `buf`, stopping at the end of the file.
    /// Returns the number of bytes read (less than `buf.len()` only at the end of the file).
    fn read_aligned(&self, buf: &mut AlignedBuf, start: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf.as_mut_slice()[done..];
            let offset = start + done as u64;
            check_aligned(rest.as_ptr(), offset, rest.len())?;
            match self.file.read_at(rest, offset) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if !n.is_multiple_of(DIRECT_IO_ALIGNMENT) {
                        // Only the block holding the end of the file comes back partial.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes all of `buf` at the aligned offset `start`.
    fn write_aligned(&self, buf: &AlignedBuf, start: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf.as_slice()[done..];
            let offset = start + done as u64;
            check_aligned(rest.as_ptr(), offset, rest.len())?;
            match self.file.write_at(rest, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "O_DIRECT write wrote nothing",
                    ));
                }
                Ok(n) if !n.is_multiple_of(DIRECT_IO_ALIGNMENT) => {
                    return Err(io::Error::other(format!(
                        "short O_DIRECT write ({n} of {} bytes)",
                        rest.len()
                    )));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the single block at aligned offset `block` into `buf[at..at + 4096]` (zeros past
    /// the end of the file stay zeros).
    fn read_block_into(&self, buf: &mut AlignedBuf, at: usize, block: u64) -> io::Result<()> {
        let mut one = AlignedBuf::zeroed(DIRECT_IO_ALIGNMENT)?;
        let n = self.read_aligned(&mut one, block)?;
        buf.as_mut_slice()[at..at + n].copy_from_slice(&one.as_slice()[..n]);
        Ok(())
    }
}

impl StorageFile for DirectFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = request_end(offset, buf.len())?;
        let start = align_down(offset);
        let mut aligned = AlignedBuf::zeroed(span_len(start, align_up(end)?)?)?;
        let _guard = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let got = self.read_aligned(&mut aligned, start)?;
        if start + (got as u64) < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&aligned.as_slice()[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = request_end(offset, buf.len())?;
        let start = align_down(offset);
        let aligned_end = align_up(end)?;
        let mut aligned = AlignedBuf::zeroed(span_len(start, aligned_end)?)?;
        let _guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let old_len = self.file.metadata()?.len();

        // Read-modify-write: keep the bytes of the partial first and last blocks.
        let head_partial = offset != start;
        if head_partial && start < old_len {
            self.read_block_into(&mut aligned, 0, start)?;
        }
        let last_block = aligned_end - ALIGN;
        let tail_partial = end != aligned_end;
        if tail_partial && last_block < old_len && !(head_partial && last_block == start) {
            let at = (last_block - start) as usize;
            self.read_block_into(&mut aligned, at, last_block)?;
        }

        let skip = (offset - start) as usize;
        aligned.as_mut_slice()[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_aligned(&aligned, start)?;

        // Cut the padding of the last block off again (ftruncate) so the length stays exact.
        let new_len = old_len.max(end);
        if aligned_end > new_len {
            self.file.set_len(new_len)?;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::{FileStorage, Storage};

    /// A temporary folder on a file system that accepts O_DIRECT: the system temp folder if it
    /// does (tmpfs may not), else one next to the test binary (under `target/`).
    fn direct_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        match DirectFile::open(&dir.path().join("probe"), OpenMode::CreateNew) {
            Ok(_) => dir,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
                let exe = std::env::current_exe().unwrap();
                tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
            }
        }
    }

    /// A direct file and a buffered file that must always hold the same bytes.
    struct Pair {
        _dir: tempfile::TempDir,
        direct: std::sync::Arc<dyn StorageFile>,
        buffered: std::sync::Arc<dyn StorageFile>,
    }

    impl Pair {
        fn new() -> Self {
            let dir = direct_tempdir();
            let direct = FileStorage::direct()
                .open(&dir.path().join("d"), OpenMode::CreateNew)
                .unwrap();
            let buffered = FileStorage::new()
                .open(&dir.path().join("b"), OpenMode::CreateNew)
                .unwrap();
            Self {
                _dir: dir,
                direct,
                buffered,
            }
        }

        fn write(&self, data: &[u8], offset: u64) {
            self.direct.write_at(data, offset).unwrap();
            self.buffered.write_at(data, offset).unwrap();
            self.check();
        }

        fn check(&self) {
            let len = self.buffered.len().unwrap();
            assert_eq!(self.direct.len().unwrap(), len);
            let mut a = vec![0u8; len as usize];
            let mut b = vec![1u8; len as usize];
            self.direct.read_at(&mut a, 0).unwrap();
            self.buffered.read_at(&mut b, 0).unwrap();
            assert!(a == b, "contents differ");
        }

        fn compare_read(&self, offset: u64, len: usize) {
            let mut a = vec![0u8; len];
            let mut b = vec![1u8; len];
            let ra = self.direct.read_at(&mut a, offset);
            let rb = self.buffered.read_at(&mut b, offset);
            match (ra, rb) {
                (Ok(()), Ok(())) => assert!(a == b, "read {offset}+{len} differs"),
                (Err(ea), Err(eb)) => assert_eq!(ea.kind(), eb.kind()),
                (ra, rb) => panic!("read {offset}+{len}: direct {ra:?}, buffered {rb:?}"),
            }
        }
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn aligned_buf_is_aligned_and_zeroed() {
        for blocks in [1, 2, 7] {
            let mut buf = AlignedBuf::zeroed(blocks * DIRECT_IO_ALIGNMENT).unwrap();
            assert_eq!(buf.len(), blocks * DIRECT_IO_ALIGNMENT);
            assert!((buf.as_slice().as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGNMENT));
            assert!(buf.as_slice().iter().all(|&b| b == 0));
            buf.as_mut_slice()[5] = 9;
            assert_eq!(buf.as_slice()[5], 9);
        }
        assert!(AlignedBuf::zeroed(0).is_err());
        assert!(AlignedBuf::zeroed(100).is_err());
    }

    #[test]
    fn check_aligned_refuses_misalignment() {
        let buf = AlignedBuf::zeroed(2 * DIRECT_IO_ALIGNMENT).unwrap();
        let p = buf.as_slice().as_ptr();
        check_aligned(p, 0, 4096).unwrap();
        check_aligned(p, 8192, 8192).unwrap();
        let bad = [
            check_aligned(p.wrapping_add(1), 0, 4096),
            check_aligned(p, 1, 4096),
            check_aligned(p, 4096, 4095),
        ];
        for r in bad {
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn boundary_writes_match_buffered() {
        let offsets = [0u64, 1, 100, 4095, 4096, 4097, 8191, 8192, 12_000, 20_480];
        let lens = [1usize, 2, 100, 4095, 4096, 4097, 8192, 9000];
        let mut seed = 0u8;
        for &first in &offsets {
            // Start from files that end at `first`, in the middle of a block or on a boundary.
            let pair = Pair::new();
            if first > 0 {
                pair.write(&pattern(200, first as usize), 0);
            }
            for &offset in &offsets {
                for &len in &lens {
                    seed = seed.wrapping_add(1);
                    pair.write(&pattern(seed, len), offset);
                }
            }
        }
    }

    #[test]
    fn random_ops_match_buffered() {
        let pair = Pair::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..600u32 {
            let len = pair.buffered.len().unwrap();
            match rng.u8(0..10) {
                0..=4 => {
                    let offset = rng.u64(0..=len + 10_000);
                    let n = rng.usize(1..20_000);
                    pair.write(&pattern(step as u8, n), offset);
                }
                5..=8 => {
                    let offset = rng.u64(0..=len + 10);
                    let n = rng.usize(0..15_000);
                    pair.compare_read(offset, n);
                }
                _ => {
                    let new_len = rng.u64(0..=len + 9000);
                    pair.direct.set_len(new_len).unwrap();
                    pair.buffered.set_len(new_len).unwrap();
                    pair.check();
                }
            }
        }
        pair.direct.sync().unwrap();
    }

    #[test]
    fn reads_at_many_offsets_match_buffered() {
        let pair = Pair::new();
        pair.write(&pattern(3, 3 * 4096 + 123), 0);
        let len = pair.buffered.len().unwrap();
        for offset in (0..len + 2).step_by(97) {
            for n in [0usize, 1, 511, 4096, 5000, 13_000] {
                pair.compare_read(offset, n);
            }
        }
    }

    #[test]
    fn past_end_reads_fail_and_writes_extend() {
        let pair = Pair::new();
        pair.write(b"abc", 10_000);
        assert_eq!(pair.direct.len().unwrap(), 10_003);
        let mut buf = [9u8; 4];
        let err = pair.direct.read_at(&mut buf, 10_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = pair.direct.read_at(&mut buf, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut gap = [9u8; 10_000];
        pair.direct.read_at(&mut gap, 0).unwrap();
        assert!(gap.iter().all(|&b| b == 0));
        pair.direct.read_at(&mut [], 1 << 30).unwrap();
        pair.direct.write_at(&[], 1 << 30).unwrap();
        assert_eq!(pair.direct.len().unwrap(), 10_003);
        assert!(pair.direct.write_at(b"x", u64::MAX).is_err());
        assert!(pair.direct.read_at(&mut buf, u64::MAX - 1).is_err());
    }

    #[test]
    fn read_only_direct_file_refuses_writes() {
        let dir = direct_tempdir();
        let path = dir.path().join("f");
        drop(DirectFile::open(&path, OpenMode::CreateNew).unwrap());
        let f = DirectFile::open(&path, OpenMode::Read).unwrap();
        assert!(f.write_at(b"x", 0).is_err());
        assert_eq!(f.len().unwrap(), 0);
        assert!(format!("{f:?}").contains("DirectFile"));
    }

    #[test]
    fn concurrent_writers_to_one_block_do_not_lose_bytes() {
        let pair = Pair::new();
        let file = std::sync::Arc::clone(&pair.direct);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let file = &file;
                s.spawn(move || {
                    for i in 0..64u64 {
                        // Every thread writes its own bytes of the same few blocks.
                        file.write_at(&[t + 1], i * 4 + u64::from(t)).unwrap();
                    }
                });
            }
        });
        let mut buf = vec![0u8; 256];
        file.read_at(&mut buf, 0).unwrap();
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b as usize, i % 4 + 1);
        }
    }

    #[test]
    fn tmpfs_refusal_is_a_clear_error() {
        // Kernels before 6.6 refuse O_DIRECT on tmpfs; newer ones accept it. Either way the
        // result must be a working file or an `Unsupported` error that names O_DIRECT.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("f");
        match DirectFile::open(&path, OpenMode::CreateNew) {
            Ok(f) => {
                f.write_at(b"ok", 1).unwrap();
                assert_eq!(f.len().unwrap(), 3);
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported);
                assert!(e.to_string().contains("O_DIRECT"));
                assert!(!path.exists());
            }
        }
    }
}
