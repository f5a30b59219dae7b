//! Errors of loading a project.

use std::path::PathBuf;

use crate::Diagnostics;

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The files were read, and hold problems.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The result of loading a project.
pub type Result<T, E = Error> = std::result::Result<T, E>;
