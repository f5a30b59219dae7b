//! Errors of the state store.

use std::path::{Path, PathBuf};

use ldsync_core::{Classify, ErrorDomain};

/// Why the state store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder of the state store could not be read or written.
    #[error("cannot use state file `{}`", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds files but no ldsync version marker: it is not ours to write into.
    #[error("`{}` is not an ldsync state folder (it has files but no `{marker}`): point `[state] path` at an empty or new folder", path.display())]
    NotAStateDir {
        /// The folder.
        path: PathBuf,
        /// The version marker's file name.
        marker: &'static str,
    },
    /// The folder was written by a format version this ldsync does not read.
    #[error("state folder `{}` has format version {found}, and this ldsync reads version {supported}: use a matching ldsync, or move the folder away to start over", path.display())]
    IncompatibleVersion {
        /// The folder.
        path: PathBuf,
        /// The version found.
        found: String,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A state file is damaged.
    #[error("state file `{}` is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process is running the sync.
    #[error("sync `{sync}` is already running ({holder}); wait for it to finish")]
    Locked {
        /// The sync.
        sync: String,
        /// Who holds the lock, as the lock file says.
        holder: String,
    },
    /// The shared state store gave this process's lease on the sync to another process (this
    /// one stopped renewing it in time): the run stops writing state.
    #[error("sync `{sync}`: this process lost its lease in the shared state store; another process may be running it")]
    LeaseLost {
        /// The sync.
        sync: String,
    },
    /// The shared state store could not be used.
    #[error("the shared state store could not {operation}: {message}")]
    Shared {
        /// What was being done, as a verb phrase.
        operation: String,
        /// Why it failed (never the connection string).
        message: String,
    },
}

impl Classify for Error {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Io { .. }
            | Self::Locked { .. }
            | Self::LeaseLost { .. }
            | Self::Shared { .. } => ErrorDomain::External,
            Self::NotAStateDir { .. } | Self::IncompatibleVersion { .. } => ErrorDomain::Config,
            Self::Corrupt { .. } => ErrorDomain::Internal,
        }
    }

    fn is_retryable(&self) -> bool {
        matches!(self, Self::Locked { .. } | Self::LeaseLost { .. } | Self::Shared { .. })
    }
}

/// The result of a state store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `pick` makes of each entry of the folder `dir`, sorted; a folder that does not exist
/// yet holds nothing.
pub(crate) fn list_dir<T: Ord>(
    dir: &std::path::Path,
    pick: impl Fn(&std::path::Path) -> Option<T>,
) -> Result<Vec<T>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(dir)(error)),
    };
    let mut picked = Vec::new();
    for entry in entries {
        if let Some(item) = pick(&entry.map_err(io(dir))?.path()) {
            picked.push(item);
        }
    }
    picked.sort();
    Ok(picked)
}

pub(crate) fn io<P: AsRef<Path> + ?Sized>(path: &P) -> impl FnOnce(std::io::Error) -> Error + '_ {
    // The path is copied only on an error: this runs for every write of a million records.
    move |source| Error::Io { path: path.as_ref().to_path_buf(), source }
}
