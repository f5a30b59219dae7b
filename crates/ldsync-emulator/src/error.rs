//! Errors of the emulator library: bad configuration text, binding, state files.

use std::path::PathBuf;

/// An error from starting, configuring or stopping the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `--rate-limit` value could not be parsed.
    #[error("invalid rate limit `{input}`: {reason}")]
    InvalidRateLimit {
        /// The text as given.
        input: String,
        /// What was expected.
        reason: String,
    },
    /// A `--faults` value could not be parsed.
    #[error("invalid fault `{input}`: {reason}")]
    InvalidFault {
        /// The text as given.
        input: String,
        /// What was expected.
        reason: String,
    },
    /// A `--limited-token` value could not be parsed.
    #[error("invalid token `{input}`: {reason}")]
    InvalidToken {
        /// The text as given, with the token itself redacted.
        input: String,
        /// What was expected.
        reason: String,
    },
    /// A `--project` value could not be parsed.
    #[error("invalid project `{input}`: {reason}")]
    InvalidProject {
        /// The text as given.
        input: String,
        /// What was expected.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on `{addr}`")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file could not be read or written.
    #[error("cannot {action} state file `{}`", path.display())]
    StateFileIo {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not a state the emulator wrote.
    #[error("cannot parse state file `{}`", path.display())]
    StateFileParse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state could not be serialised (a broken invariant).
    #[error("cannot serialise the emulator state")]
    Serialise(#[source] serde_json::Error),
}

impl Error {
    /// Whether trying the same thing again could succeed.
    ///
    /// Binding and file IO can be transient (a port still in use, a full disk); parse errors are
    /// the user's to fix.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Bind { .. } | Self::StateFileIo { .. })
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
