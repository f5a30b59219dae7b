//! PostgreSQL connection strings with libpq's `sslmode`, over rustls.
//!
//! tokio-postgres parses connection strings but knows `sslmode` only as `disable`, `prefer` or
//! `require`, and leaves TLS to a connector. This crate takes the TLS parameters out of the
//! string (`sslmode`, `sslrootcert`), hands the rest to [`tokio_postgres::Config`], and builds a
//! rustls connector (the `ring` provider) that checks the server as libpq would:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert`, its chain is checked as in `verify-ca` |
//! | `verify-ca` | always | its chain must lead to a root of `sslrootcert` |
//! | `verify-full` | always | as `verify-ca`, and it must name the host (a DNS name or an IP address) |
//!
//! `sslrootcert` is a PEM file, or `system` for the bundled Mozilla roots (which, as in libpq,
//! requires `verify-full`). Without it, `verify-ca` and `verify-full` read
//! `~/.postgresql/root.crt`. Client certificates and revocation lists (`sslcert`, `sslkey`,
//! `sslcrl`, …) are refused with an error. Unlike libpq, `PGSSLMODE` and the other environment
//! variables are not read, and `sslmode=allow` is refused.
//!
//! It sits under `ldsync-source`: the PostgreSQL source parses its warehouse URL here once and
//! connects with the result.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let connect = ldsync_pgtls::parse(
//!     "postgres://reader@db.internal:5432/analytics?sslmode=verify-full&sslrootcert=/etc/ldsync/ca.pem",
//! )?;
//! let (client, connection) = connect.connect().await?;
//! tokio::spawn(connection);
//! let row = client.query_one("select 1", &[]).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors never quote the connection string or its password: they name the parameter and the
//! problem.

mod connector;
mod detach;
mod error;
mod params;
mod trust;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, Config, Connection, Socket};

pub use connector::{MakeRustls, RustlsConnect, RustlsStream};
pub use detach::{DetachError, Detachable, ServerSocket, SessionStream, Shared};
pub use error::{Error, Result};

use trust::Verification;

/// The ALPN protocol of PostgreSQL; required by servers from version 17 on direct TLS, and
/// harmless to older ones.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The connection future of a client made by [`PgConnect::connect`]; spawn it.
pub type PgConnection = Connection<Socket, RustlsStream<Socket>>;

/// libpq's `sslmode`: whether TLS is used and how the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS; the certificate is checked only when `sslrootcert` is given (its chain).
    Require,
    /// TLS; the certificate's chain must lead to a trusted root.
    VerifyCa,
    /// TLS; the chain must lead to a trusted root and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The name used in connection strings, such as `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it only negotiates, the verifier does the checking.
    fn negotiation(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => PgSslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(Error::AllowNotSupported),
            _ => Err(Error::InvalidSslMode { value: value.to_owned() }),
        }
    }
}

/// A parsed connection string: tokio-postgres's configuration and the TLS connector to use
/// with it.
///
/// Build it once with [`parse`] (or `str::parse`), then call [`connect`](Self::connect) for each
/// connection. Root certificates are read when it is built, not on each connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgConnect {
    /// Everything but TLS, with `ssl_mode` set to what tokio-postgres must negotiate.
    pub config: Config,
    /// The connector; pass it to [`Config::connect`] if you do not call
    /// [`connect`](Self::connect).
    pub tls: MakeRustls,
    /// The mode asked for, `prefer` when the string names none.
    pub ssl_mode: SslMode,
}

impl PgConnect {
    /// Opens a connection; spawn the returned [`PgConnection`] and use the client.
    ///
    /// A certificate that fails the mode's checks is an error of kind TLS whose message says
    /// why, such as `invalid peer certificate: UnknownIssuer`.
    pub async fn connect(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

impl FromStr for PgConnect {
    type Err = Error;

    fn from_str(conn: &str) -> Result<Self> {
        parse(conn)
    }
}

/// Parses a connection string, a URL (`postgres://…`) or `key=value` pairs, with libpq's
/// `sslmode` and `sslrootcert`.
///
/// Reads the root certificates the mode needs; see the crate documentation for the modes.
pub fn parse(conn: &str) -> Result<PgConnect> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    parse_with_home(conn, home.as_deref())
}

/// [`parse`], with the home directory of `~/.postgresql/root.crt` given.
fn parse_with_home(conn: &str, home: Option<&Path>) -> Result<PgConnect> {
    let (rest, found) = params::split(conn)?;
    let ssl_mode = match (found.sslmode.as_deref(), found.sslrootcert.as_deref()) {
        (Some(mode), _) => mode.parse()?,
        // As libpq 16: the system roots make `verify-full` the default.
        (None, Some(trust::SYSTEM_ROOTS)) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    };
    let verification = Verification::for_mode(ssl_mode, found.sslrootcert.as_deref(), home)?;
    let mut config = Config::from_str(&rest).map_err(Error::from_config)?;
    config.ssl_mode(ssl_mode.negotiation());
    let tls = MakeRustls::new(client_config(verification)?);
    Ok(PgConnect { config, tls, ssl_mode })
}

fn client_config(verification: Verification) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verification.verifier(&provider)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { source: source.into() })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
