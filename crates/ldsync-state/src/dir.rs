//! The embedded state folder and its format version.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use ldsync_core::SyncName;

use crate::{error::io, remote::Publisher, Error, History, Journal, Remote, Result, SyncLock};

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// The file that marks a folder as ldsync state and names its format version.
const MARKER: &str = "VERSION";
/// What the marker file says before the version number.
const MARKER_PREFIX: &str = "ldsync-state ";

/// An open state folder: the embedded store, or the working copy of a shared one.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    /// The shared store this folder is a working copy of, if any.
    remote: Option<Arc<dyn Remote>>,
}

impl StateDir {
    /// Opens the folder, creating it (readable by its owner only) when it does not exist.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if !path.exists() {
            crate::journal::create_private_dir(&path)?;
        }
        let marker = path.join(MARKER);
        match fs::read_to_string(&marker) {
            Ok(text) => check_marker(&path, &marker, &text)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let has_files = fs::read_dir(&path).map_err(io(&path))?.next().is_some();
                if has_files {
                    return Err(Error::NotAStateDir { path, marker: MARKER });
                }
                write_private(&marker, format!("{MARKER_PREFIX}{FORMAT_VERSION}\n").as_bytes())?;
            }
            Err(error) => return Err(io(&marker)(error)),
        }
        Ok(Self { path, remote: None })
    }

    /// Makes this folder the working copy of a shared store: taking a sync's lock takes its
    /// lease there and checks its files out, and the journal's promises are published to it.
    #[must_use]
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The shared store this folder is a working copy of, if any.
    pub fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref()
    }

    fn publisher(&self, sync: &SyncName) -> Result<Option<Publisher>> {
        let Some(remote) = &self.remote else { return Ok(None) };
        Ok(Some(Publisher {
            remote: Arc::clone(remote),
            sync: sync.clone(),
            dir: self.sync_dir(sync)?,
        }))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder that holds `sync`'s files, created on first use.
    pub fn sync_dir(&self, sync: &SyncName) -> Result<PathBuf> {
        let dir = self.path.join("syncs").join(sync.as_str());
        crate::journal::create_private_dir(&dir)?;
        Ok(dir)
    }

    /// The journal of `sync`: its pending plan and committed snapshots.
    pub fn journal(&self, sync: &SyncName) -> Result<Journal> {
        Ok(Journal::new(&self.sync_dir(sync)?).publishing_to(self.publisher(sync)?))
    }

    /// The run history and rejected records of `sync`.
    pub fn history(&self, sync: &SyncName) -> Result<History> {
        Ok(History::new(&self.sync_dir(sync)?))
    }

    /// Takes the lock that keeps a second process from running `sync` at the same time.
    ///
    /// With a shared store, the lock is the sync's lease there (held across machines) and the
    /// local lock of the working copy; the sync's files are checked out of the shared store,
    /// and published back when the lock is dropped.
    pub fn lock_sync(&self, sync: &SyncName) -> Result<SyncLock> {
        let dir = self.sync_dir(sync)?;
        let Some(publisher) = self.publisher(sync)? else {
            return SyncLock::acquire(&dir.join(crate::lock::LOCK_FILE), sync);
        };
        publisher.remote.acquire(sync)?;
        // The lease is ours: give it back on every way out that does not hand it to the lock.
        let lock = SyncLock::acquire(&dir.join(crate::lock::LOCK_FILE), sync)
            .and_then(|lock| publisher.remote.check_out(sync, &dir).map(|()| lock));
        match lock {
            Ok(lock) => Ok(lock.publishing_to(publisher)),
            Err(error) => {
                publisher.remote.release(sync);
                Err(error)
            }
        }
    }
}

fn check_marker(dir: &Path, marker: &Path, text: &str) -> Result<()> {
    let Some(version) = text.trim().strip_prefix(MARKER_PREFIX) else {
        return Err(Error::Corrupt {
            path: marker.to_path_buf(),
            reason: format!("expected `{MARKER_PREFIX}<version>`"),
        });
    };
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(Error::IncompatibleVersion {
            path: dir.to_path_buf(),
            found: version.to_owned(),
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Writes a file readable and writable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    crate::journal::write_atomically(path, contents)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_folder_is_private_and_marked() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("state")).unwrap();
        let mode = fs::metadata(state.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let marker = fs::read_to_string(state.path().join(MARKER)).unwrap();
        assert_eq!(marker, format!("ldsync-state {FORMAT_VERSION}\n"));
        // Opening again accepts the folder it made.
        StateDir::open(temp.path().join("state")).unwrap();
    }

    #[test]
    fn foreign_newer_and_corrupt_folders_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("notes.txt"), "hello").unwrap();
        let err = StateDir::open(temp.path()).unwrap_err();
        assert!(matches!(err, Error::NotAStateDir { .. }), "{err}");

        let newer = tempfile::tempdir().unwrap();
        fs::write(newer.path().join(MARKER), "ldsync-state 99\n").unwrap();
        let err = StateDir::open(newer.path()).unwrap_err();
        assert!(err.to_string().contains("has format version 99"), "{err}");

        let corrupt = tempfile::tempdir().unwrap();
        fs::write(corrupt.path().join(MARKER), "\0\0garbage").unwrap();
        let err = StateDir::open(corrupt.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
