//! The snapshot file: a `KeySet` as it was committed, checked when read back.
//!
//! Layout (little endian): the magic `LDSYNCKS`, the format version (u32), the key count and
//! arena length (u64 each), the key end offsets and the fingerprints (u64 each, one per key),
//! the arena, and an xxh3-64 checksum of everything before it. A file that is truncated, altered
//! or out of order is refused, never half-read.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use xxhash_rust::xxh3::Xxh3;

use crate::KeySet;

const MAGIC: &[u8; 8] = b"LDSYNCKS";
const VERSION: u32 = 1;
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

impl KeySet {
    /// Writes the set to `path` and flushes it to disk.
    pub fn write_file(&self, path: &Path) -> Result<(), SnapshotError> {
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
        out.write_all(&(self.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&(self.arena().len() as u64).to_le_bytes()).map_err(io)?;
        for end in self.ends() {
            out.write_all(&end.to_le_bytes()).map_err(io)?;
        }
        for fingerprint in self.fingerprints() {
            out.write_all(&fingerprint.to_le_bytes()).map_err(io)?;
        }
        out.write_all(self.arena()).map_err(io)?;
        let checksum = out.hash.digest();
        let mut inner = out.inner;
        inner.write_all(&checksum.to_le_bytes()).map_err(io)?;
        let file = inner.into_inner().map_err(|err| io(err.into_error()))?;
        file.sync_all().map_err(io)
    }

    /// Reads a set written by [`KeySet::write_file`].
    pub fn read_file(path: &Path) -> Result<Self, SnapshotError> {
        let corrupt = |reason: &str| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })?;
        if bytes.len() < HEADER_LEN + 8 || &bytes[..8] != MAGIC {
            return Err(corrupt("not an ldsync snapshot"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 8);
        if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != checksum {
            return Err(corrupt("checksum mismatch (truncated or altered)"));
        }
        let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(corrupt(&format!("format version {version}, this ldsync reads {VERSION}")));
        }
        let count = usize::try_from(word(12)).map_err(|_| corrupt("key count too large"))?;
        let arena_len = usize::try_from(word(20)).map_err(|_| corrupt("arena too large"))?;
        let expected = count
            .checked_mul(16)
            .and_then(|tables| tables.checked_add(HEADER_LEN + arena_len))
            .ok_or_else(|| corrupt("sizes overflow"))?;
        if expected != body.len() {
            return Err(corrupt("sizes do not match the file's length"));
        }
        let ends: Vec<u64> = (0..count).map(|i| word(HEADER_LEN + 8 * i)).collect();
        let fingerprints: Vec<u64> =
            (0..count).map(|i| word(HEADER_LEN + 8 * (count + i))).collect();
        let arena = body[HEADER_LEN + 16 * count..].to_vec();
        KeySet::from_parts(arena, ends, fingerprints).map_err(corrupt)
    }
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

        let empty = KeySet::default();
        empty.write_file(&path).unwrap();
        assert_eq!(KeySet::read_file(&path).unwrap(), empty);

        set.write_file(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(KeySet::read_file(&path), Err(SnapshotError::Corrupt { .. })));
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(KeySet::read_file(&path), Err(SnapshotError::Corrupt { .. })));
    }
}
