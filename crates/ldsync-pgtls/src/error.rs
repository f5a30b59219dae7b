//! The errors of turning a connection string into a configuration and a TLS connector.

use std::path::PathBuf;

use crate::SslMode;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a connection string could not be used.
///
/// No message holds the connection string or any of its values other than `sslmode` and the path
/// of `sslrootcert`: the string may carry a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `sslmode` has a value that libpq does not know.
    #[error(
        "invalid `sslmode` `{value}`: use `disable`, `prefer`, `require`, `verify-ca` or \
         `verify-full`"
    )]
    InvalidSslMode {
        /// The value found.
        value: String,
    },

    /// `sslmode=allow` (plain first, TLS when the server insists) is not implemented.
    #[error("`sslmode=allow` is not supported: use `prefer` or a stricter mode")]
    AllowNotSupported,

    /// A TLS parameter that this crate does not implement, such as a client certificate.
    #[error("`{name}` is not supported: ldsync sends no client certificate and reads no revocation list")]
    Unsupported {
        /// The parameter's name.
        name: &'static str,
    },

    /// `sslrootcert=system` with a mode that would not check the host name; libpq refuses it too.
    #[error("`sslrootcert=system` needs `sslmode=verify-full`, not `{mode}`")]
    WeakModeWithSystemRoots {
        /// The mode given.
        mode: SslMode,
    },

    /// `verify-ca` or `verify-full` without `sslrootcert`, and the default file is missing.
    #[error(
        "`sslmode={mode}` needs trusted root certificates: set `sslrootcert` to a PEM file (or to \
         `system`), or create `{default}`"
    )]
    MissingRootCert {
        /// The mode given.
        mode: SslMode,
        /// The default file looked for, `~/.postgresql/root.crt`.
        default: String,
    },

    /// The file named by `sslrootcert` (or the default one) could not be read.
    #[error("cannot read the `sslrootcert` file `{}`", path.display())]
    ReadRootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The `sslrootcert` file is not PEM or holds no certificate.
    #[error("the `sslrootcert` file `{}` holds no PEM certificate", path.display())]
    NoRootCert {
        /// The file.
        path: PathBuf,
    },

    /// A certificate of the `sslrootcert` file could not be used as a trust anchor.
    #[error("the `sslrootcert` file `{}` holds an invalid certificate", path.display())]
    InvalidRootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },

    /// A parameter's name or value is not valid UTF-8 once percent-decoded.
    #[error("invalid percent-encoding in the connection string: not UTF-8 once decoded")]
    InvalidEncoding,

    /// The `key=value` form is malformed; the problem is described without quoting the input.
    #[error("invalid connection string: {problem}")]
    Syntax {
        /// What is wrong, for example "unterminated quoted value".
        problem: &'static str,
    },

    /// tokio-postgres refused the rest of the connection string.
    ///
    /// The reason comes from tokio-postgres's parser, which names options but not their values.
    #[error("invalid connection string: {reason}")]
    Invalid {
        /// tokio-postgres's reason, such as "unknown option `foo`".
        reason: String,
    },

    /// The TLS client could not be configured.
    #[error("cannot set up the TLS client")]
    Tls {
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a parse error of tokio-postgres, keeping its reason without the "invalid connection
    /// string" prefix that our own message already has.
    pub(crate) fn from_config(error: tokio_postgres::Error) -> Self {
        let reason = match error.into_source() {
            Some(source) => source.to_string(),
            None => "rejected by tokio-postgres".to_owned(),
        };
        Self::Invalid { reason }
    }
}
