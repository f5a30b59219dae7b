//! The order a base snapshot's keys arrived in last time: a hint that lets a run read the
//! snapshot sequentially instead of at random.
//!
//! A warehouse usually returns a query's rows in the same order run after run (a table's rows
//! in the order they are stored). The hint lists, in the order the last run saw them, each base
//! key's fingerprint and its position in the base. A run keeps a cursor into the hint: when the
//! next key's fingerprint is the one the hint expects, its place is known without a lookup.
//! Anything else falls back to the index, so a stale, reordered or missing hint costs speed,
//! never correctness; the file is bound to one base by the base's checksum and refused whole if
//! damaged.
//!
//! Layout (little endian): the magic `LDSYNCAH`, the format version (u32), the base's checksum
//! and the entry count (u64 each), the entries (u128 fingerprint, u32 position), and an xxh3-64
//! checksum of everything before it.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use xxhash_rust::xxh3::Xxh3;

use crate::MappedKeySet;

const MAGIC: &[u8; 8] = b"LDSYNCAH";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 8;
const ENTRY_LEN: usize = 20;

/// A hint file, mapped and checked.
#[derive(Debug)]
pub struct ArrivalHint {
    map: memmap2::Mmap,
    count: usize,
    /// For each base position, its entry in the hint (`u32::MAX`: none), so that a run that
    /// lost its place (rows that left, or moved) finds it again at the next key it looks up.
    entry_of: Vec<u32>,
}

impl ArrivalHint {
    /// Opens the hint at `path` for `base`; `None` when it is missing, damaged, or was written
    /// for another base (a hint is never an error).
    pub fn open(path: &Path, base: &MappedKeySet) -> Option<Self> {
        let file = File::open(path).ok()?;
        let length = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if length < HEADER_LEN + 8 || !(length - HEADER_LEN - 8).is_multiple_of(ENTRY_LEN) {
            return None;
        }
        // One pass through a small buffer checks the file and finds where each base key is
        // listed; the mapping is read only by the probe, once, front to back.
        let mut reader = BufReader::with_capacity(256 << 10, &file);
        let mut hash = Xxh3::new();
        let mut header = [0_u8; HEADER_LEN];
        reader.read_exact(&mut header).ok()?;
        hash.update(&header);
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let count = usize::try_from(word(20)).ok()?;
        if &header[..8] != MAGIC
            || version != VERSION
            || word(12) != base.checksum()
            || count != (length - HEADER_LEN - 8) / ENTRY_LEN
        {
            return None;
        }
        let mut entry_of = vec![u32::MAX; base.len()];
        let mut chunk = vec![0_u8; ENTRY_LEN * (1 << 13)];
        let mut entry = 0;
        while entry < count {
            let entries = (count - entry).min(1 << 13);
            let bytes = &mut chunk[..entries * ENTRY_LEN];
            reader.read_exact(bytes).ok()?;
            hash.update(bytes);
            for listed in bytes.chunks_exact(ENTRY_LEN) {
                // Every position must be inside the base (the checksums vouch for the rest).
                let position = u32::from_le_bytes(listed[16..20].try_into().expect("4 bytes"));
                *entry_of.get_mut(position as usize)? = u32::try_from(entry).ok()?;
                entry += 1;
            }
        }
        let mut checksum = [0_u8; 8];
        reader.read_exact(&mut checksum).ok()?;
        if hash.digest().to_le_bytes() != checksum {
            return None;
        }
        // SAFETY: as for snapshot files (see `MappedKeySet::open`): ldsync's own file, written
        // once under a temporary name and renamed, never changed in place.
        #[allow(unsafe_code, reason = "mapping a file is unsafe by the type system's rules")]
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        if map.len() != length {
            return None;
        }
        let hint = Self { map, count, entry_of };
        Some(hint)
    }

    /// Says that the probe is done with `entries` for now: their pages go back to the
    /// operating system (see [`crate::SortedKeys::release`]).
    pub(crate) fn release(&self, entries: std::ops::Range<usize>) {
        let (start, end) = (entries.start.min(self.count), entries.end.min(self.count));
        crate::snapshot::release(
            &self.map,
            HEADER_LEN + ENTRY_LEN * start..HEADER_LEN + ENTRY_LEN * end,
        );
    }

    /// The entry of base position `position`, if the hint lists it.
    pub fn entry_of(&self, position: usize) -> Option<usize> {
        self.entry_of.get(position).filter(|&&entry| entry != u32::MAX).map(|&entry| entry as usize)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the hint is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The fingerprint of entry `i`.
    pub fn fingerprint(&self, i: usize) -> u128 {
        let at = HEADER_LEN + ENTRY_LEN * i;
        u128::from_le_bytes(self.map[at..at + 16].try_into().expect("16 bytes"))
    }

    /// The base position of entry `i`.
    pub fn position(&self, i: usize) -> u32 {
        let at = HEADER_LEN + ENTRY_LEN * i + 16;
        u32::from_le_bytes(self.map[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// Writes the hint for `base`: the (fingerprint, position) of its keys in the order a run saw
/// them. Written under a temporary name and renamed; not flushed to disk (a hint lost in a crash
/// costs one slower run).
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_hint(
    path: &Path,
    base: &MappedKeySet,
    order: &[([u8; 16], u32)],
) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut out = create_private(&temporary)?;
    let mut hash = Xxh3::new();
    let mut put = |bytes: &[u8], out: &mut BufWriter<File>| {
        hash.update(bytes);
        out.write_all(bytes)
    };
    put(MAGIC, &mut out)?;
    put(&VERSION.to_le_bytes(), &mut out)?;
    put(&base.checksum().to_le_bytes(), &mut out)?;
    put(&(order.len() as u64).to_le_bytes(), &mut out)?;
    for (fingerprint, position) in order {
        put(fingerprint, &mut out)?;
        put(&position.to_le_bytes(), &mut out)?;
    }
    out.write_all(&hash.digest().to_le_bytes())?;
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    std::fs::rename(&temporary, path)
}

/// A new file at `path`, readable by its owner only (hints name member positions and
/// fingerprints), behind a buffer.
fn create_private(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// The order a run sees a base's keys in, recorded for the next run's hint: in memory, or
/// written to a file as the keys come (a probe that spills, [`crate::Probe::spill_to`]: ten
/// million members would otherwise hold 200 MB for it).
#[derive(Debug)]
pub enum Arrival {
    /// The (fingerprint, position) of each base key seen, in order.
    Listed(Vec<([u8; 16], u32)>),
    /// The same, in a file.
    Logged(ArrivalLog),
}

impl Arrival {
    pub(crate) fn push(&mut self, fingerprint: u128, position: u32) {
        match self {
            Self::Listed(order) => order.push((fingerprint.to_le_bytes(), position)),
            Self::Logged(log) => log.push(fingerprint, position),
        }
    }

    /// Writes the hint at `path` for `base` (see [`write_hint`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_hint(self, path: &Path, base: &MappedKeySet) -> std::io::Result<()> {
        match self {
            Self::Listed(order) => write_hint(path, base, &order),
            Self::Logged(log) => log.finish(path, base),
        }
    }
}

/// A hint written as the keys arrive: the entries after a blank header, which
/// [`Arrival::write_hint`] fills in before it checksums the file and renames it into place.
#[derive(Debug)]
pub struct ArrivalLog {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
    /// The first failure to write; the hint is then not written (a hint is never an error).
    error: Option<std::io::Error>,
}

impl ArrivalLog {
    /// Starts a log at `path` (a scratch file; [`ArrivalLog::finish`] renames it).
    pub(crate) fn create(path: PathBuf) -> std::io::Result<Self> {
        let mut out = create_private(&path)?;
        out.write_all(&[0; HEADER_LEN])?;
        Ok(Self { path, out, count: 0, error: None })
    }

    fn push(&mut self, fingerprint: u128, position: u32) {
        if self.error.is_some() {
            return;
        }
        let mut entry = [0_u8; ENTRY_LEN];
        entry[..16].copy_from_slice(&fingerprint.to_le_bytes());
        entry[16..].copy_from_slice(&position.to_le_bytes());
        match self.out.write_all(&entry) {
            Ok(()) => self.count += 1,
            Err(error) => self.error = Some(error),
        }
    }

    /// Fills in the header, appends the checksum (the file is read back once, from the page
    /// cache) and renames the log to `path`; not flushed to disk, like [`write_hint`].
    fn finish(self, path: &Path, base: &MappedKeySet) -> std::io::Result<()> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut file = self.out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        let mut header = [0_u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..20].copy_from_slice(&base.checksum().to_le_bytes());
        header[20..28].copy_from_slice(&self.count.to_le_bytes());
        file.rewind()?;
        file.write_all(&header)?;
        let mut reader = File::open(&self.path)?;
        let mut hash = Xxh3::new();
        let mut buffer = vec![0_u8; 256 << 10];
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hash.update(&buffer[..read]);
        }
        file.seek(std::io::SeekFrom::End(0))?;
        file.write_all(&hash.digest().to_le_bytes())?;
        std::fs::rename(&self.path, path)
    }
}
