//! One run per sync at a time, across processes on this machine.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use ldsync_core::SyncName;

use crate::{error::io, remote::Publisher, Error, Result};

/// The lock file's name in a sync's folder.
pub(crate) const LOCK_FILE: &str = "lock";

/// Who holds a lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder(pub String);

/// A held lock on one sync; released when dropped (or when the process dies).
///
/// With a shared store, dropping it publishes the sync's folder and gives the lease back; a
/// failure to publish is logged, and leaves the shared copy at the last promise published,
/// which the next holder finishes like a crashed run's.
#[derive(Debug)]
pub struct SyncLock {
    file: File,
    publisher: Option<Publisher>,
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        if let Some(publisher) = self.publisher.take() {
            if let Err(error) = publisher.publish() {
                tracing::error!(
                    sync = %publisher.sync,
                    error = %ldsync_core::error_chain(&error),
                    "Could not publish the sync's state to the shared store; the next run finishes from its last promise."
                );
            }
            publisher.remote.release(&publisher.sync);
        }
    }
}

impl SyncLock {
    pub(crate) fn acquire(path: &Path, sync: &SyncName) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder's note is informative only; an unreadable note still refuses.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    sync: sync.to_string(),
                    holder: if holder.is_empty() { "holder unknown".into() } else { holder.into() },
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(path)(error)),
        }
        let note = format!(
            "pid {} on {} since {}",
            std::process::id(),
            hostname(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.set_len(0).map_err(io(path))?;
        file.rewind().map_err(io(path))?;
        file.write_all(note.as_bytes()).map_err(io(path))?;
        Ok(Self { file, publisher: None })
    }

    pub(crate) fn publishing_to(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Who holds this lock.
    pub fn holder(&self) -> LockHolder {
        let mut text = String::new();
        let mut file = &self.file;
        let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
        LockHolder(text)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this host".to_owned(), |name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateDir;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("s")).unwrap();
        let sync: SyncName = "beta".parse().unwrap();
        let lock = state.lock_sync(&sync).unwrap();
        assert!(lock.holder().0.starts_with(&format!("pid {}", std::process::id())));
        let err = state.lock_sync(&sync).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("sync `beta` is already running (pid "), "{message}");
        drop(lock);
        state.lock_sync(&sync).unwrap();
    }
}
