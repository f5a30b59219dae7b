//! A throwaway PostgreSQL server for tests.
//!
//! [`PostgresServer::start`] runs `initdb` into a temporary directory and starts a server on a
//! free port of 127.0.0.1, tuned for speed rather than durability. Dropping it stops the server
//! and deletes the directory. [`shared`] starts one server per test binary; each test then takes
//! its own database with [`PostgresServer::create_unique_database`].
//!
//! The programs are looked up in `$LDSYNC_PG_BIN_DIR`, then on `PATH`, then under
//! `/usr/lib/postgresql/*/bin`, highest version first.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as in CI), the programs run as
//! the `postgres` user, or else as `nobody`, and the temporary directory is handed to that user.

mod account;
mod binaries;
mod server;
mod shared;
mod watchdog;

pub use binaries::BIN_DIR_ENV;
pub use server::{PostgresServer, ServerTls};
pub use shared::shared;
