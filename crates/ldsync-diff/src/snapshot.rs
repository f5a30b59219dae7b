//! The snapshot file: keys ordered by (fingerprint, bytes), checked when read back.
//!
//! Layout (little endian): the magic `LDSYNCKS`, the format version (u32), the key count and
//! arena length (u64 each), the fingerprints (u128 each, one per key), the key end offsets (u64
//! each), the arena, and an xxh3-64 checksum of everything before it. A file that is truncated,
//! altered or out of order is refused, never half-read.
//!
//! The fingerprints come first so that a reader that maps the file ([`MappedKeySet`]) and only
//! probes membership touches the fingerprints and nothing else: the keys themselves are read
//! from the disk only for the members a run removes.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use xxhash_rust::xxh3::Xxh3;

use crate::{keyset::RELEASE_STEP, Index, KeySet, SortedKeys};

const MAGIC: &[u8; 8] = b"LDSYNCKS";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

/// Why a snapshot file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("cannot use snapshot file `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a snapshot this ldsync can read.
    #[error("snapshot file `{}` is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Writes `count` keys, ordered, whose lengths add up to `arena_len`, to `path`, and flushes the
/// file to disk. `entries` is called three times (fingerprints, offsets, bytes): the keys are
/// streamed, never gathered.
///
/// # Errors
///
/// When the file cannot be written, or `entries` does not yield what `count` and `arena_len`
/// promise.
pub fn write_sorted<'k, I>(
    path: &Path,
    count: u64,
    arena_len: u64,
    entries: impl Fn() -> I,
) -> Result<(), SnapshotError>
where
    I: Iterator<Item = (u128, &'k [u8])>,
{
    write_keys(path, count, arena_len, entries, true)
}

/// [`write_sorted`]; with `durable` false the file is not flushed to disk (a spill file, which
/// only this process reads, and only while it runs).
pub(crate) fn write_keys<'k, I>(
    path: &Path,
    count: u64,
    arena_len: u64,
    entries: impl Fn() -> I,
    durable: bool,
) -> Result<(), SnapshotError>
where
    I: Iterator<Item = (u128, &'k [u8])>,
{
    let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    // Snapshots hold member keys: readable by their owner only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mut out =
        HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hash: Xxh3::new() };
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&count.to_le_bytes()).map_err(io)?;
    out.write_all(&arena_len.to_le_bytes()).map_err(io)?;
    let mut written = 0_u64;
    for (fingerprint, _) in entries() {
        out.write_all(&fingerprint.to_le_bytes()).map_err(io)?;
        written += 1;
    }
    let mut end = 0_u64;
    for (_, key) in entries() {
        end += key.len() as u64;
        out.write_all(&end.to_le_bytes()).map_err(io)?;
    }
    for (_, key) in entries() {
        out.write_all(key).map_err(io)?;
    }
    if written != count || end != arena_len {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "writing {written} keys of {end} bytes where {count} keys of {arena_len} bytes were announced"
            ),
        });
    }
    let checksum = out.hash.digest();
    let mut inner = out.inner;
    inner.write_all(&checksum.to_le_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|err| io(err.into_error()))?;
    if durable {
        file.sync_all().map_err(io)?;
    }
    Ok(())
}

impl KeySet {
    /// Writes the set to `path` and flushes it to disk.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_file(&self, path: &Path) -> Result<(), SnapshotError> {
        if let Some(file) = &self.file {
            return file.write_file(path);
        }
        write_sorted(path, self.len() as u64, self.key_bytes(), || {
            (0..self.len()).map(|i| (self.fingerprint(i), self.key(i)))
        })
    }

    /// Reads a set written by [`KeySet::write_file`] (or [`write_sorted`]) whole into memory.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or is not an intact snapshot.
    pub fn read_file(path: &Path) -> Result<Self, SnapshotError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, path)
    }

    /// Reads a snapshot file's contents already in memory; `path` only names it in errors.
    ///
    /// # Errors
    ///
    /// When `bytes` are not an intact snapshot.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, SnapshotError> {
        let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
        let layout = Layout::parse(bytes).map_err(corrupt)?;
        let (body, checksum) = bytes.split_at(bytes.len() - 8);
        if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != checksum {
            return Err(corrupt("checksum mismatch (truncated or altered)".to_owned()));
        }
        let fingerprints = (0..layout.count).map(|i| Layout::fingerprint(bytes, i)).collect();
        let ends = (0..layout.count).map(|i| layout.end(bytes, i)).collect();
        let arena = bytes[layout.arena_at..layout.arena_at + layout.arena_len].to_vec();
        KeySet::from_parts(arena, ends, fingerprints).map_err(|reason| corrupt(reason.to_owned()))
    }
}

/// Where the parts of a snapshot file are.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    count: usize,
    arena_len: usize,
    ends_at: usize,
    arena_at: usize,
}

impl Layout {
    /// Checks the header and the sizes of a whole file's `bytes` (the checksum is not checked).
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_LEN + 8 || &bytes[..8] != MAGIC {
            return Err("not an ldsync snapshot".to_owned());
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("format version {version}, this ldsync reads {VERSION}"));
        }
        let count = usize::try_from(word(12)).map_err(|_| "key count too large")?;
        let arena_len = usize::try_from(word(20)).map_err(|_| "arena too large")?;
        let expected = count
            .checked_mul(24)
            .and_then(|tables| tables.checked_add(HEADER_LEN + 8))
            .and_then(|fixed| fixed.checked_add(arena_len))
            .ok_or("sizes overflow")?;
        if expected != bytes.len() {
            return Err("sizes do not match the file's length".to_owned());
        }
        if u32::try_from(count).is_err() {
            return Err("more keys than a snapshot holds (2^32)".to_owned());
        }
        let ends_at = HEADER_LEN + 16 * count;
        Ok(Self { count, arena_len, ends_at, arena_at: ends_at + 8 * count })
    }

    fn fingerprint(bytes: &[u8], index: usize) -> u128 {
        let at = HEADER_LEN + 16 * index;
        u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
    }

    fn end(&self, bytes: &[u8], index: usize) -> u64 {
        let at = self.ends_at + 8 * index;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }
}

/// A snapshot file mapped into memory, checked, and read in place: membership probes touch the
/// fingerprints only, and a key's bytes are paged in when a run asks for that key.
#[derive(Debug, Default)]
pub struct MappedKeySet {
    map: Option<memmap2::Mmap>,
    /// The file, for reading a few keys without mapping their pages in.
    file: Option<File>,
    /// Where the file is (empty for the empty set).
    path: PathBuf,
    layout: Layout,
    index: Index,
}

impl MappedKeySet {
    /// The empty set (a segment with no snapshot yet).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Maps and checks the snapshot file at `path`: its checksum (read through a small buffer,
    /// so that checking maps nothing), its sizes and its order; and builds its directory
    /// ([`MappedKeySet::index`]) in the same pass.
    ///
    /// The pass lets the pages it read go behind it: a run reads a base's pages again only for
    /// the keys it looks up, and a spilled delta front to back, a batch at a time, so the file
    /// never counts whole in the process's memory. Scans should do the same
    /// ([`SortedKeys::release`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or is not an intact snapshot.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
        let corrupt = |reason: &str| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let file = File::open(path).map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        if length < (HEADER_LEN + 8) as u64 {
            return Err(corrupt("not an ldsync snapshot"));
        }
        let mut reader = BufReader::with_capacity(256 << 10, &file);
        let mut hash = Xxh3::new();
        let mut left = length - 8;
        let mut buffer = vec![0_u8; 256 << 10];
        while left > 0 {
            let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
            let read = reader.read(&mut buffer[..want]).map_err(io)?;
            if read == 0 {
                return Err(corrupt("truncated while being read"));
            }
            hash.update(&buffer[..read]);
            left -= read as u64;
        }
        let mut checksum = [0_u8; 8];
        reader.read_exact(&mut checksum).map_err(io)?;
        if hash.digest().to_le_bytes() != checksum {
            return Err(corrupt("checksum mismatch (truncated or altered)"));
        }
        // SAFETY: the file is ldsync's own, written once under a new name and never changed in
        // place; the sync's lock keeps other ldsync processes from replacing it meanwhile.
        #[allow(unsafe_code, reason = "mapping a file is unsafe by the type system's rules")]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let layout = Layout::parse(&map).map_err(|reason| corrupt(&reason))?;
        let mut set = Self {
            map: Some(map),
            file: Some(file),
            path: path.to_path_buf(),
            layout,
            index: Index::default(),
        };
        set.index = set.check().map_err(corrupt)?;
        Ok(set)
    }

    /// One pass over the fingerprints and key ends: every end inside the arena and none going
    /// back, the keys strictly ordered, and the directory counted; pages let go behind it.
    fn check(&self) -> Result<Index, &'static str> {
        let bytes = self.bytes();
        let (count, arena_len) = (self.layout.count, self.layout.arena_len as u64);
        let mut index = Index::counting(count);
        let mut start = 0;
        for i in 0..count {
            if i > 0 && i.is_multiple_of(RELEASE_STEP) {
                self.release(i - RELEASE_STEP..i);
            }
            // The key's end is checked before the key is read.
            let end = self.layout.end(bytes, i);
            if end < start || end > arena_len {
                return Err("key offsets out of range");
            }
            start = end;
            let here = Layout::fingerprint(bytes, i);
            if i > 0 {
                let before = Layout::fingerprint(bytes, i - 1);
                if before > here || (before == here && self.key(i - 1) >= self.key(i)) {
                    return Err("keys out of order");
                }
            }
            index.count(here);
        }
        self.release(count.saturating_sub(RELEASE_STEP)..count);
        if start != arena_len {
            return Err("the arena holds bytes past the last key");
        }
        Ok(index.counted())
    }

    /// The directory over the keys' fingerprints, built when the file was opened.
    pub fn index(&self) -> &Index {
        &self.index
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// Total bytes of the keys.
    pub fn key_bytes(&self) -> u64 {
        self.layout.arena_len as u64
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.layout.count
    }

    /// The file's checksum (0 for the empty set): what binds an arrival hint to this base.
    pub fn checksum(&self) -> u64 {
        let bytes = self.bytes();
        bytes
            .len()
            .checked_sub(8)
            .map_or(0, |at| u64::from_le_bytes(bytes[at..].try_into().expect("8 bytes")))
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.layout.count == 0
    }

    /// Copies key `index` into `out`, read from the file rather than through the mapping: a run
    /// that removes a few thousand members scattered over the snapshot would otherwise bring a
    /// page of keys into its memory for each.
    ///
    /// # Panics
    ///
    /// When `index` is out of range.
    pub fn copy_key(&self, index: usize, out: &mut Vec<u8>) {
        use std::os::unix::fs::FileExt as _;
        let key = self.key(index);
        out.clear();
        out.resize(key.len(), 0);
        let bytes = self.bytes();
        let start = if index == 0 { 0 } else { self.layout.end(bytes, index - 1) };
        let read = self.file.as_ref().is_some_and(|file| {
            file.read_exact_at(out, self.layout.arena_at as u64 + start).is_ok()
        });
        if !read {
            out.copy_from_slice(key);
        }
    }

    /// The keys, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|index| self.key(index))
    }

    /// Puts the same file at `path` too, flushed to disk: a second name for it where the
    /// folder allows, a copy made by the kernel otherwise. The keys never pass through this
    /// process's memory.
    ///
    /// # Errors
    ///
    /// When the file cannot be linked nor copied.
    pub fn write_file(&self, path: &Path) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
        if self.map.is_none() {
            return KeySet::default().write_file(path);
        }
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(error)),
            _ => {}
        }
        if std::fs::hard_link(&self.path, path).is_err() {
            std::fs::copy(&self.path, path).map_err(io)?;
        }
        File::open(path).and_then(|file| file.sync_all()).map_err(io)
    }
}

impl SortedKeys for MappedKeySet {
    fn len(&self) -> usize {
        self.layout.count
    }

    fn release(&self, indices: std::ops::Range<usize>) {
        let Some(map) = &self.map else { return };
        let (start, end) =
            (indices.start.min(self.layout.count), indices.end.min(self.layout.count));
        if start < end {
            release(map, HEADER_LEN + 16 * start..HEADER_LEN + 16 * end);
            let arena_start = if start == 0 { 0 } else { self.layout.end(map, start - 1) };
            let arena_end = self.layout.end(map, end - 1);
            release(map, self.layout.ends_at + 8 * start..self.layout.ends_at + 8 * end);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "checked against the file's length"
            )]
            release(
                map,
                self.layout.arena_at + arena_start as usize
                    ..self.layout.arena_at + arena_end as usize,
            );
        }
    }

    fn fingerprint(&self, index: usize) -> u128 {
        assert!(index < self.layout.count, "index {index} out of {}", self.layout.count);
        Layout::fingerprint(self.bytes(), index)
    }

    fn key(&self, index: usize) -> &[u8] {
        assert!(index < self.layout.count, "index {index} out of {}", self.layout.count);
        let bytes = self.bytes();
        let start = if index == 0 { 0 } else { self.layout.end(bytes, index - 1) };
        let end = self.layout.end(bytes, index);
        #[expect(clippy::cast_possible_truncation, reason = "checked against the file's length")]
        let range = self.layout.arena_at + start as usize..self.layout.arena_at + end as usize;
        &bytes[range]
    }
}

/// Lets the operating system take the pages of `range` (bytes of `map`) back from this
/// process: a scan over a large file would otherwise keep every page it read resident, and
/// count in the run's memory. The pages stay in the page cache; read again, they come back.
pub(crate) fn release(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    let end = range.end.min(map.len());
    if range.start >= end {
        return;
    }
    // SAFETY: `map` is a read-only, shared mapping of a file that is never changed in place
    // (see `MappedKeySet::open`). For such a mapping `MADV_DONTNEED` only drops this process's
    // page table entries: the next read of the range faults the same bytes back in from the
    // page cache, so every reference into it keeps seeing the file's contents.
    #[allow(unsafe_code, reason = "madvise is unsafe by memmap2's rules; see the SAFETY note")]
    let released = unsafe {
        map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            end - range.start,
        )
    };
    // Advice only: when the kernel declines, the pages simply stay.
    drop(released);
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hash.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.keys");
        let set = KeySet::from_keys(["ann", "bob", "Zoë", ""]);
        set.write_file(&path).unwrap();
        assert_eq!(KeySet::read_file(&path).unwrap(), set);
        let mapped = MappedKeySet::open(&path).unwrap();
        assert_eq!(mapped.len(), 4);
        for i in 0..4 {
            assert_eq!(mapped.key(i), set.key(i));
            assert_eq!(SortedKeys::fingerprint(&mapped, i), set.fingerprint(i));
        }

        let empty = KeySet::default();
        empty.write_file(&path).unwrap();
        assert_eq!(KeySet::read_file(&path).unwrap(), empty);
        assert_eq!(MappedKeySet::open(&path).unwrap().len(), 0);

        set.write_file(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(KeySet::read_file(&path), Err(SnapshotError::Corrupt { .. })));
        assert!(matches!(MappedKeySet::open(&path), Err(SnapshotError::Corrupt { .. })));
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(KeySet::read_file(&path), Err(SnapshotError::Corrupt { .. })));
        assert!(matches!(MappedKeySet::open(&path), Err(SnapshotError::Corrupt { .. })));
    }

    #[test]
    fn a_writer_that_breaks_its_promise_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.keys");
        let set = KeySet::from_keys(["a", "b"]);
        let result = write_sorted(&path, 3, set.key_bytes(), || {
            (0..set.len()).map(|i| (set.fingerprint(i), set.key(i)))
        });
        assert!(matches!(result, Err(SnapshotError::Corrupt { .. })));
    }
}
