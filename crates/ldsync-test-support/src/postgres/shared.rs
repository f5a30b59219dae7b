//! One server per test binary.

use std::sync::OnceLock;

use super::PostgresServer;

static SHARED: OnceLock<PostgresServer> = OnceLock::new();

/// Returns the server shared by all tests of this test binary, starting it on first use.
///
/// Give each test its own database with [`PostgresServer::create_unique_database`] rather than
/// sharing tables. Do not stop or restart the shared server: other tests use it at the same time;
/// start a [`PostgresServer`] of your own for fault tests.
///
/// The server is never dropped (statics are not); its watchdog stops it and deletes its directory
/// when the test process exits, even when the process is killed. See the `watchdog` module.
///
/// # Panics
///
/// Panics when the server cannot start, with the reason and its causes; a later call tries again.
pub fn shared() -> &'static PostgresServer {
    SHARED.get_or_init(|| match PostgresServer::start() {
        Ok(server) => server,
        Err(error) => panic!("could not start the shared test postgresql: {}", report(&error)),
    })
}

/// Formats an error with its chain of causes.
fn report(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str("\n  caused by: ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
