//! A shared store behind the local folder, for several processes on several machines.
//!
//! With a shared store (the PostgreSQL store of `ldsync-state-pg`), the local folder is a
//! working copy: a run takes the sync's lease in the shared store, makes the sync's local
//! folder equal to the shared copy, and publishes the folder back at every point where the
//! journal promises something LaunchDarkly may already see: the plan, each journaled request
//! body and each durable acknowledgement, then once more when the lock is released. A process
//! that dies therefore leaves in the shared store the same state a crash leaves in a local
//! folder, and whoever takes the lease next finishes the plan, as the next run does locally.

use std::{fmt, path::Path, sync::Arc};

use ldsync_core::SyncName;

use crate::Result;

/// A shared store that holds each sync's folder and hands out leases on syncs.
///
/// Every method may block on the network; implementations bound each call in time.
pub trait Remote: Send + Sync + fmt::Debug {
    /// Takes the lease on `sync` for this process, or fails with [`crate::Error::Locked`]
    /// naming the holder. The lease is renewed in the background until released.
    fn acquire(&self, sync: &SyncName) -> Result<()>;

    /// Makes the folder `dir` hold exactly the shared copy of `sync`'s files.
    fn check_out(&self, sync: &SyncName, dir: &Path) -> Result<()>;

    /// Stores the files of `dir` as the shared copy of `sync`, in one transaction, if this
    /// process still holds the lease; fails with [`crate::Error::LeaseLost`] otherwise.
    fn publish(&self, sync: &SyncName, dir: &Path) -> Result<()>;

    /// Gives the lease on `sync` back.
    fn release(&self, sync: &SyncName);
}

/// The remote and the sync a journal or lock publishes to.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    pub(crate) remote: Arc<dyn Remote>,
    pub(crate) sync: SyncName,
    pub(crate) dir: std::path::PathBuf,
}

impl Publisher {
    pub(crate) fn publish(&self) -> Result<()> {
        self.remote.publish(&self.sync, &self.dir)
    }
}

/// The files of a sync folder that belong in the shared copy: every regular file under it,
/// as paths relative to it with `/` between parts, except the process-local lock file and
/// the temporary files of writes in progress.
pub fn shared_files(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    walk(dir, "", &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(crate::error::io(dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(crate::error::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(crate::Error::Corrupt {
                path: entry.path(),
                reason: "a state file name that is not UTF-8".into(),
            });
        };
        let kind = entry.file_type().map_err(crate::error::io(&entry.path()))?;
        let relative = format!("{prefix}{name}");
        if kind.is_dir() {
            walk(&entry.path(), &format!("{relative}/"), found)?;
        } else if kind.is_file() && !is_local_only(&relative) {
            found.push(relative);
        }
    }
    Ok(())
}

/// Whether a file stays out of the shared copy: the lock file, temporary files, and a run's
/// scratch files (keys spilled to disk while it runs).
pub fn is_local_only(relative: &str) -> bool {
    relative == crate::lock::LOCK_FILE
        || relative.starts_with("scratch/")
        || Path::new(relative).extension().is_some_and(|ext| ext.eq_ignore_ascii_case("tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_leave_out_the_lock_and_temporary_files() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        std::fs::create_dir_all(dir.join("snapshots/beta")).unwrap();
        std::fs::create_dir_all(dir.join("scratch/7-0/0")).unwrap();
        for file in [
            "lock",
            "runs.jsonl",
            "snapshots/beta/base-1.keys",
            "snapshots/x.tmp",
            "scratch/7-0/0/run-0.keys",
        ] {
            std::fs::write(dir.join(file), b"x").unwrap();
        }
        assert_eq!(shared_files(dir).unwrap(), ["runs.jsonl", "snapshots/beta/base-1.keys"]);
        assert!(shared_files(&dir.join("missing")).unwrap().is_empty());
    }
}
