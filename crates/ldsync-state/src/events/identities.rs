//! The identities a metric-events sync delivered, as compact sorted files of 128-bit hashes.
//!
//! Each commit writes one segment, `identities/c-<plan>.ids`: the hashes it delivered, sorted,
//! each with the UTC day of its delivery. When more than [`MAX_SEGMENTS`] segments pile up they
//! are merged into one (a streaming k-way merge that also drops identities delivered more than
//! the retention ago), so a lookup reads a handful of files. Nothing is ever loaded whole: a
//! segment is opened by reading its header and its fences (the first hash of every block of
//! [`BLOCK`] records, 1/80 of the file), and a lookup reads only the blocks its hashes fall in,
//! with positioned reads.
//!
//! A segment file:
//!
//! ```text
//! header  32 bytes   b"LDSYNCID", version u32, block u32, count u64, newest day i64
//! records count × 20 hash u128, delivered day i32 (little-endian), sorted by hash, unique
//! fences  ⌈count / block⌉ × 16   the hash of each block's first record
//! ```
//!
//! Files are written to a temporary name, synced and renamed, so a reader sees a whole segment
//! or none. Writing a segment twice (a commit repeated after a crash) or holding one identity
//! in two segments (a merge interrupted before it removed its inputs) changes no answer.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::{self, File, OpenOptions},
    io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::{error::io, Error, Result};

const MAGIC: &[u8; 8] = b"LDSYNCID";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const RECORD: usize = 20;
/// Records per block: one fence each, and the smallest read of a lookup.
const BLOCK: usize = 64;
/// Segments kept side by side before a commit merges them.
pub(crate) const MAX_SEGMENTS: usize = 8;
/// The most blocks one positioned read fetches (320 KiB).
const MAX_READ_BLOCKS: usize = 256;

/// One record: a hash and the UTC day (days since 1970-01-01) it was delivered.
type Record = (u128, i32);

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

fn day_i32(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

fn encode(hash: u128, day: i32) -> [u8; RECORD] {
    let mut record = [0; RECORD];
    record[..16].copy_from_slice(&hash.to_le_bytes());
    record[16..].copy_from_slice(&day.to_le_bytes());
    record
}

fn decode(bytes: &[u8]) -> Record {
    let hash = u128::from_le_bytes(bytes[..16].try_into().expect("16 bytes"));
    let day = i32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    (hash, day)
}

/// Writes the sorted, unique `records` as the segment at `path`, atomically.
fn write_segment(path: &Path, records: impl Iterator<Item = Record>) -> Result<u64> {
    let temporary = path.with_extension("tmp");
    let count = write_records(&temporary, records)?;
    publish(&temporary, path)?;
    Ok(count)
}

/// Moves the segment written at `temporary` to `path`, durably.
fn publish(temporary: &Path, path: &Path) -> Result<()> {
    fs::rename(temporary, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))?;
    }
    Ok(())
}

/// Writes the sorted, unique `records` as a segment file at `temporary`, synced to disk.
fn write_records(temporary: &Path, records: impl Iterator<Item = Record>) -> Result<u64> {
    let temporary = temporary.to_path_buf();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io(&temporary))?;
    // Large writes: a commit writes tens of megabytes.
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0; HEADER]).map_err(io(&temporary))?;
    let (mut count, mut newest, mut fences) = (0_u64, i64::MIN, Vec::new());
    let mut previous: Option<u128> = None;
    for (hash, day) in records {
        debug_assert!(previous.is_none_or(|p| p < hash), "segment records are sorted and unique");
        previous = Some(hash);
        if count.is_multiple_of(BLOCK as u64) {
            fences.push(hash);
        }
        out.write_all(&encode(hash, day)).map_err(io(&temporary))?;
        count += 1;
        newest = newest.max(i64::from(day));
    }
    for fence in &fences {
        out.write_all(&fence.to_le_bytes()).map_err(io(&temporary))?;
    }
    let file = out.into_inner().map_err(|err| io(&temporary)(err.into_error()))?;
    finish_file(&file, &temporary, count, newest)?;
    Ok(count)
}

/// Writes the header of a segment of `count` records, the newest delivered on day `newest`,
/// at the start of `file` (its records and fences written), and syncs it.
fn finish_file(file: &File, temporary: &Path, count: u64, newest: i64) -> Result<()> {
    let mut header = [0_u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&u32::try_from(BLOCK).expect("small").to_le_bytes());
    header[16..24].copy_from_slice(&count.to_le_bytes());
    header[24..32].copy_from_slice(&newest.to_le_bytes());
    file.write_all_at(&header, 0).map_err(io(temporary))?;
    file.sync_all().map_err(io(temporary))
}

/// A part of a segment's hashes: how many, and the hashes, ascending and unique. The parts of
/// a segment follow one another (each part's hashes above the last one's).
pub(crate) type Part<I> = (usize, I);

/// What writing one part found: the fences of its blocks, and its first and last hash.
struct Written {
    fences: Vec<u128>,
    first: Option<u128>,
    last: Option<u128>,
}

/// Writes the hashes of `parts` (see [`Part`]), all delivered on `day`, as a segment file at
/// `temporary`, synced to disk: each part on a thread of its own, at the place its count
/// gives it. A part out of order, or not of its count, fails it.
fn write_parts<I>(temporary: &Path, parts: Vec<Part<I>>, day: i32) -> Result<u64>
where
    I: Iterator<Item = u128> + Send,
{
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)
        .map_err(io(temporary))?;
    let mut starts = Vec::with_capacity(parts.len());
    let mut count = 0;
    for (part_count, _) in &parts {
        starts.push(count);
        count += part_count;
    }
    let written: Vec<Result<Written>> = std::thread::scope(|scope| {
        let file = &file;
        let writers: Vec<_> = parts
            .into_iter()
            .zip(starts)
            .map(|((part_count, hashes), start)| {
                scope.spawn(move || write_part(file, temporary, start, part_count, hashes, day))
            })
            .collect();
        writers.into_iter().map(|writer| writer.join().expect("a part's writer panicked")).collect()
    });
    let mut fences = Vec::new();
    let mut previous = None;
    for part in written {
        let part = part?;
        if part.first.is_some_and(|first| previous.is_some_and(|previous| previous >= first)) {
            return Err(corrupt(temporary, "the identities were handed over out of order"));
        }
        previous = part.last.or(previous);
        fences.extend(part.fences);
    }
    let fence_bytes: Vec<u8> = fences.iter().flat_map(|fence| fence.to_le_bytes()).collect();
    let records_end = HEADER + count * RECORD;
    file.write_all_at(&fence_bytes, records_end as u64).map_err(io(temporary))?;
    let newest = if count > 0 { i64::from(day) } else { i64::MIN };
    finish_file(&file, temporary, count as u64, newest)?;
    Ok(count as u64)
}

/// Writes the `count` hashes of a part whose first record is record `start` of the segment.
fn write_part(
    file: &File,
    temporary: &Path,
    start: usize,
    count: usize,
    hashes: impl Iterator<Item = u128>,
    day: i32,
) -> Result<Written> {
    // Records a write (about a MiB).
    const RECORDS: usize = 52_428;
    let mut buffer = Vec::with_capacity(RECORDS * RECORD);
    let mut offset = (HEADER + start * RECORD) as u64;
    let mut written = Written { fences: Vec::new(), first: None, last: None };
    let mut index = start;
    for hash in hashes {
        if written.last.is_some_and(|last| last >= hash) {
            return Err(corrupt(temporary, "the identities were handed over out of order"));
        }
        if index == start + count {
            return Err(corrupt(temporary, "more identities were handed over than counted"));
        }
        written.first.get_or_insert(hash);
        written.last = Some(hash);
        if index.is_multiple_of(BLOCK) {
            written.fences.push(hash);
        }
        buffer.extend_from_slice(&encode(hash, day));
        index += 1;
        if buffer.len() == buffer.capacity() {
            file.write_all_at(&buffer, offset).map_err(io(temporary))?;
            offset += buffer.len() as u64;
            buffer.clear();
        }
    }
    if index != start + count {
        return Err(corrupt(temporary, "fewer identities were handed over than counted"));
    }
    file.write_all_at(&buffer, offset).map_err(io(temporary))?;
    Ok(written)
}

/// One open segment: its header and fences; records are read on demand.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    count: usize,
    newest_day: i64,
    fences: Vec<u128>,
}

impl Segment {
    fn open(path: PathBuf) -> Result<Self> {
        let file = File::open(&path).map_err(io(&path))?;
        let length = file.metadata().map_err(io(&path))?.len();
        let mut header = [0_u8; HEADER];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt(&path, "the header is cut short"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt(&path, "not an identity segment"));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let block = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if version != VERSION || block as usize != BLOCK {
            return Err(corrupt(
                &path,
                format!("version {version} (block {block}) is not the version {VERSION} this ldsync reads"),
            ));
        }
        let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let newest_day = i64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
        let count = usize::try_from(count).map_err(|_| corrupt(&path, "too many records"))?;
        let blocks = count.div_ceil(BLOCK);
        let expected = (HEADER + count * RECORD + blocks * 16) as u64;
        if length != expected {
            return Err(corrupt(
                &path,
                format!("{length} bytes, but {count} records take {expected}"),
            ));
        }
        let mut raw = vec![0_u8; blocks * 16];
        file.read_exact_at(&mut raw, (HEADER + count * RECORD) as u64).map_err(io(&path))?;
        let fences = raw
            .chunks_exact(16)
            .map(|chunk| u128::from_le_bytes(chunk.try_into().expect("16 bytes")))
            .collect();
        Ok(Self { path, file, count, newest_day, fences })
    }

    /// Marks `found[i]` for every `probes[i]` (sorted ascending) this segment holds.
    fn find(&self, probes: &[u128], found: &mut [bool], buffer: &mut Vec<u8>) -> Result<()> {
        let blocks = self.fences.len();
        // The blocks held in `buffer`: `[first, first + held)`.
        let (mut first, mut held) = (0_usize, 0_usize);
        for (index, probe) in probes.iter().enumerate() {
            if found[index] {
                continue;
            }
            let block = self.fences.partition_point(|fence| fence <= probe);
            if block == 0 {
                continue; // before the first record
            }
            let block = block - 1;
            if block < first || block >= first + held {
                // Read ahead as far as the next probes reach, so that dense probes cost a few
                // large reads and sparse ones one small read each.
                let ahead = probes[(index + 32).min(probes.len() - 1)];
                let last = self.fences.partition_point(|fence| *fence <= ahead).max(block + 1);
                let span = (last - block).clamp(1, MAX_READ_BLOCKS).min(blocks - block);
                let start = block * BLOCK;
                let end = ((block + span) * BLOCK).min(self.count);
                buffer.resize((end - start) * RECORD, 0);
                self.file
                    .read_exact_at(buffer, (HEADER + start * RECORD) as u64)
                    .map_err(io(&self.path))?;
                (first, held) = (block, span);
            }
            let offset = (block - first) * BLOCK;
            let records = ((block + 1) * BLOCK).min(self.count) - block * BLOCK;
            let slice = &buffer[offset * RECORD..(offset + records) * RECORD];
            let (mut low, mut high) = (0, records);
            while low < high {
                let middle = usize::midpoint(low, high);
                let hash = decode(&slice[middle * RECORD..]).0;
                match hash.cmp(probe) {
                    std::cmp::Ordering::Less => low = middle + 1,
                    std::cmp::Ordering::Greater => high = middle,
                    std::cmp::Ordering::Equal => {
                        found[index] = true;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The records in order, streamed.
    fn records(&self) -> Result<impl Iterator<Item = Result<Record>> + '_> {
        let mut reader = BufReader::with_capacity(1 << 16, &self.file);
        reader.seek(SeekFrom::Start(HEADER as u64)).map_err(io(&self.path))?;
        let mut left = self.count;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut bytes = [0_u8; RECORD];
            Some(reader.read_exact(&mut bytes).map(|()| decode(&bytes)).map_err(io(&self.path)))
        }))
    }
}

/// The delivered identities of one sync, open for lookups.
#[derive(Debug)]
pub struct IdentityIndex {
    segments: Vec<Segment>,
}

impl IdentityIndex {
    /// Identities held, counting one held by two segments twice.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|segment| segment.count as u64).sum()
    }

    /// Whether no identity is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `found[i]` for each of `probes` (sorted ascending) that was delivered. Reads only
    /// the blocks the probes fall in.
    pub fn find_sorted(&self, probes: &[u128], found: &mut [bool]) -> Result<()> {
        assert_eq!(probes.len(), found.len(), "one answer per probe");
        debug_assert!(probes.is_sorted(), "probes are sorted");
        let mut buffer = Vec::new();
        for segment in &self.segments {
            segment.find(probes, found, &mut buffer)?;
        }
        Ok(())
    }
}

/// A segment written ahead of its commit ([`crate::EventLedger::prepare_identities`]).
#[derive(Debug)]
pub struct Prepared {
    name: String,
    temporary: PathBuf,
    count: u64,
    day: i64,
}

impl Prepared {
    /// Distinct identities in it.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The day it says they were delivered.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// The plan it belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[cfg(test)]
    pub(crate) fn temporary_path(&self) -> &Path {
        &self.temporary
    }
}

/// The identity files of one sync: `identities/*.ids`.
#[derive(Debug, Clone)]
pub(crate) struct IdentityStore {
    dir: PathBuf,
}

impl IdentityStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn segment_paths(&self) -> Result<Vec<PathBuf>> {
        crate::error::list_dir(&self.dir, |path| {
            path.extension().is_some_and(|ext| ext == "ids").then(|| path.to_path_buf())
        })
    }

    /// Opens every segment for lookups.
    pub(crate) fn open(&self) -> Result<IdentityIndex> {
        let segments =
            self.segment_paths()?.into_iter().map(Segment::open).collect::<Result<_>>()?;
        Ok(IdentityIndex { segments })
    }

    /// Writes `hashes` (any order, repeats allowed), delivered on `day`, as segment `name`;
    /// writing the same name again replaces it.
    pub(crate) fn add(&self, name: &str, mut hashes: Vec<u128>, day: i64) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        super::sort_by_uniform_key(&mut hashes, |hash| *hash);
        hashes.dedup();
        crate::journal::create_private_dir(&self.dir)?;
        let day = day_i32(day);
        write_segment(
            &self.dir.join(format!("c-{name}.ids")),
            hashes.into_iter().map(|h| (h, day)),
        )?;
        Ok(())
    }

    /// Writes `hashes` (any order, repeats allowed), delivered on `day`, as the segment
    /// `name` will be, without making it part of the store: [`IdentityStore::add_prepared`]
    /// does, in a moment. A commit's slowest step (sorting and syncing a million identities)
    /// can so run while the last batches are still on their way. The file is a temporary one
    /// until then; a crash leaves it to [`IdentityStore::compact`].
    pub(crate) fn prepare(&self, name: &str, mut hashes: Vec<u128>, day: i64) -> Result<Prepared> {
        if !hashes.is_sorted() {
            super::sort_by_uniform_key(&mut hashes, |hash| *hash);
        }
        hashes.dedup();
        self.prepare_sorted_parts(name, vec![(hashes.len(), hashes.into_iter())], day)
    }

    /// [`IdentityStore::prepare`] of hashes ascending and unique, handed over in parts (see
    /// [`Part`]) written side by side, each on a thread of its own (a run hands a million
    /// out of its runs of identities at the end, when the other cores are idle). Hashes out
    /// of order, or parts not of their counts, fail it, the file removed.
    pub(crate) fn prepare_sorted_parts<I>(
        &self,
        name: &str,
        parts: Vec<Part<I>>,
        day: i64,
    ) -> Result<Prepared>
    where
        I: Iterator<Item = u128> + Send,
    {
        crate::journal::create_private_dir(&self.dir)?;
        let temporary = self.dir.join(format!("c-{name}.prepared.tmp"));
        match write_parts(&temporary, parts, day_i32(day)) {
            Ok(count) => Ok(Prepared { name: name.to_owned(), temporary, count, day }),
            Err(error) => {
                remove(&temporary)?;
                Err(error)
            }
        }
    }

    /// Makes a prepared segment part of the store, as [`IdentityStore::add`] of the same
    /// identities would.
    pub(crate) fn add_prepared(&self, prepared: Prepared) -> Result<()> {
        let Prepared { name, temporary, .. } = prepared;
        publish(&temporary, &self.dir.join(format!("c-{name}.ids")))
    }

    /// Drops segments wholly older than the retention (delivered before `oldest_day`), and
    /// merges the rest into one when more than [`MAX_SEGMENTS`] are left.
    pub(crate) fn compact(&self, oldest_day: i64) -> Result<()> {
        // Segments prepared by a run that did not commit them.
        for path in crate::error::list_dir(&self.dir, |path| {
            path.extension().is_some_and(|ext| ext == "tmp").then(|| path.to_path_buf())
        })? {
            remove(&path)?;
        }
        let mut segments = Vec::new();
        for path in self.segment_paths()? {
            let segment = Segment::open(path)?;
            if segment.newest_day < oldest_day {
                remove(&segment.path)?;
            } else {
                segments.push(segment);
            }
        }
        if segments.len() <= MAX_SEGMENTS {
            return Ok(());
        }
        self.merge(&segments, oldest_day)?;
        for segment in &segments {
            remove(&segment.path)?;
        }
        Ok(())
    }

    /// Merges `segments` into one new segment, keeping each hash once (with its latest
    /// delivery) and dropping those delivered before `oldest_day`.
    fn merge(&self, segments: &[Segment], oldest_day: i64) -> Result<()> {
        let mut readers = segments.iter().map(Segment::records).collect::<Result<Vec<_>>>()?;
        let mut heap = BinaryHeap::new();
        for (index, reader) in readers.iter_mut().enumerate() {
            if let Some(record) = reader.next().transpose()? {
                heap.push(Reverse((record, index)));
            }
        }
        let mut failure = None;
        let merged = std::iter::from_fn(|| {
            let Reverse(((hash, mut day), index)) = heap.pop()?;
            let mut advance = |index: usize, heap: &mut BinaryHeap<_>| match readers[index].next() {
                Some(Ok(record)) => heap.push(Reverse((record, index))),
                Some(Err(error)) => failure = Some(error),
                None => {}
            };
            advance(index, &mut heap);
            while let Some(Reverse(((next, next_day), next_index))) = heap.peek().copied() {
                if next != hash {
                    break;
                }
                heap.pop();
                day = day.max(next_day);
                advance(next_index, &mut heap);
            }
            Some((hash, day))
        })
        .filter(|(_, day)| i64::from(*day) >= oldest_day);
        let name =
            format!("m-{}.ids", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        // Written under a name that sorts after the commits it merges (`m` > `c`).
        let path = self.dir.join(name);
        write_segment(&path, merged)?;
        match failure {
            Some(error) => {
                remove(&path)?;
                Err(error)
            }
            None => Ok(()),
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io(path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes())
    }

    fn found(index: &IdentityIndex, probes: &[u128]) -> Vec<bool> {
        let mut sorted: Vec<_> = probes.iter().copied().enumerate().collect();
        sorted.sort_by_key(|(_, hash)| *hash);
        let hashes: Vec<_> = sorted.iter().map(|(_, hash)| *hash).collect();
        let mut answers = vec![false; hashes.len()];
        index.find_sorted(&hashes, &mut answers).unwrap();
        let mut out = vec![false; probes.len()];
        for ((position, _), answer) in sorted.into_iter().zip(answers) {
            out[position] = answer;
        }
        out
    }

    #[test]
    fn lookups_find_exactly_what_was_added() {
        let temp = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(temp.path().join("identities"));
        assert!(store.open().unwrap().is_empty());
        let added: Vec<u128> = (0..10_000).map(hash).collect();
        store.add("one", added.clone(), 100).unwrap();
        store.add("two", (20_000..20_100).map(hash).collect(), 101).unwrap();
        let index = store.open().unwrap();
        assert_eq!(index.len(), 10_100);
        // Dense probes (every identity) and sparse ones (a few, mixed with unknown ones).
        assert!(found(&index, &added).into_iter().all(|f| f));
        let sparse = [hash(7), hash(10_007), hash(20_050), hash(9_999), hash(30_000), 0, u128::MAX];
        assert_eq!(found(&index, &sparse), [true, false, true, true, false, false, false]);
        // The same name again replaces, not adds.
        store.add("two", vec![hash(20_000)], 101).unwrap();
        assert_eq!(store.open().unwrap().len(), 10_001);
    }

    /// A segment written in parts, side by side, is byte for byte the one written in one go,
    /// whichever records the parts' edges fall on (blocks and their fences cross them), and
    /// empty parts change nothing.
    #[test]
    fn a_segment_written_in_parts_is_the_one_written_whole() {
        let temp = tempfile::tempdir().unwrap();
        let mut hashes: Vec<u128> = (0..1_000).map(hash).collect();
        hashes.sort_unstable();
        let whole = temp.path().join("whole.ids");
        write_records(&whole, hashes.iter().map(|&h| (h, 100))).unwrap();
        let expected = fs::read(&whole).unwrap();
        for edges in [vec![], vec![0], vec![1_000], vec![64], vec![70, 500], vec![1, 2, 3, 999]] {
            let mut parts = Vec::new();
            let mut start = 0;
            for end in edges.iter().copied().chain([hashes.len()]) {
                parts.push((end - start, hashes[start..end].iter().copied()));
                start = end;
            }
            let path = temp.path().join("parts.ids");
            assert_eq!(write_parts(&path, parts, 100).unwrap(), 1_000);
            assert!(fs::read(&path).unwrap() == expected, "edges {edges:?}");
        }
        let empty = temp.path().join("empty.ids");
        write_records(&empty, std::iter::empty()).unwrap();
        let parts = vec![(0, Vec::new().into_iter()), (0, Vec::new().into_iter())];
        write_parts(&temp.path().join("none.ids"), parts, 100).unwrap();
        assert_eq!(fs::read(temp.path().join("none.ids")).unwrap(), fs::read(&empty).unwrap());
    }

    #[test]
    fn compaction_merges_and_forgets_what_left_the_retention() {
        let temp = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(temp.path().join("identities"));
        for segment in 0..=MAX_SEGMENTS as u64 {
            // Every segment repeats identity 0; segment `n` was delivered on day 100 + n.
            let hashes = (segment * 100..segment * 100 + 100).map(hash).chain([hash(0)]).collect();
            store.add(&segment.to_string(), hashes, 100 + i64::try_from(segment).unwrap()).unwrap();
        }
        assert_eq!(store.segment_paths().unwrap().len(), MAX_SEGMENTS + 1);
        // One too many: merged into one, each identity once (identity 0 with its latest day).
        store.compact(100).unwrap();
        assert_eq!(store.segment_paths().unwrap().len(), 1);
        assert_eq!(store.open().unwrap().len(), (MAX_SEGMENTS as u64 + 1) * 100);
        // More commits, then a merge keeping what was delivered on day 105 or later: the
        // identities of days 100 to 104 go, but identity 0 stays, delivered again later.
        for segment in 0..MAX_SEGMENTS as u64 {
            store.add(&format!("late-{segment}"), vec![hash(10_000 + segment)], 200).unwrap();
        }
        store.compact(105).unwrap();
        assert_eq!(store.segment_paths().unwrap().len(), 1);
        let index = store.open().unwrap();
        assert_eq!(index.len(), (MAX_SEGMENTS as u64 + 1 - 5) * 100 + MAX_SEGMENTS as u64 + 1);
        assert_eq!(
            found(&index, &[hash(0), hash(150), hash(550), hash(10_000)]),
            [true, false, true, true]
        );
        // A whole segment older than the retention is removed without a merge.
        store.compact(300).unwrap();
        assert!(store.open().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_segment_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(temp.path().join("identities"));
        store.add("one", (0..100).map(hash).collect(), 1).unwrap();
        let path = store.segment_paths().unwrap().remove(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, &bytes).unwrap();
        let err = store.open().unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
