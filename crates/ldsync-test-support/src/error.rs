//! Errors of the test fixtures.

use std::path::PathBuf;
use std::process::ExitStatus;

/// A fixture that could not be set up or torn down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PostgreSQL server binaries are not installed where we look.
    #[error(
        "postgresql server binaries (`initdb`, `pg_ctl`, `postgres`) not found; looked in {}: \
         install them with `apt-get install postgresql` or set `{env}` to their directory",
        .searched.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
    )]
    BinariesNotFound {
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
        /// The environment variable that points at the binaries.
        env: &'static str,
    },
    /// The tests run as root and no unprivileged account exists to run PostgreSQL as.
    #[error(
        "running as root and none of the users {candidates:?} exists in `/etc/passwd`: \
         postgresql refuses to run as root, create one of these users"
    )]
    NoUnprivilegedUser {
        /// The user names looked up.
        candidates: &'static [&'static str],
    },
    /// A file system or process operation failed.
    #[error("could not {action}")]
    Io {
        /// What was being done, as a verb phrase naming the path or program.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL program exited with a failure.
    #[error("`{command}` failed with {status}:\n{output}")]
    CommandFailed {
        /// The command line that failed.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its output and the end of the server log, to find the cause.
        output: String,
    },
    /// A connection to the server could not be opened.
    #[error("could not connect to `{url}`")]
    Connect {
        /// The connection string used.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("could not run `{statement}`")]
    Statement {
        /// The statement that failed.
        statement: String,
        /// The driver's error, with the SQLSTATE.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A database name that would need quoting.
    #[error(
        "invalid database name `{name}`: use 1 to 63 lowercase letters, digits or `_`, \
         starting with a letter or `_`"
    )]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },
}

/// The result type of the fixtures.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { action: action.into(), source }
    }
}
