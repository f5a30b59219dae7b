//! Starting, controlling and removing one server.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tempfile::TempDir;

use super::account::{self, Account};
use super::binaries;
use super::watchdog::Watchdog;
use crate::{free_port, Error, Result};

/// The superuser `initdb` creates, and the user of [`PostgresServer::url`].
const SUPERUSER: &str = "postgres";

/// The database `initdb` creates for connecting to, used by [`PostgresServer::url`].
const DEFAULT_DATABASE: &str = "postgres";

/// How long `pg_ctl` waits for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "30";

/// Start attempts when another process takes the chosen port first.
const START_ATTEMPTS: usize = 3;

/// Lines of the server log shown in errors.
const LOG_TAIL_LINES: usize = 20;

/// Settings written to the configuration: reachable on 127.0.0.1 only, and fast rather than
/// durable. The port and socket directory are added per server.
///
/// `synchronous_commit` stays on: with it off, a commit returns before its WAL leaves the
/// server's memory, so [`PostgresServer::restart_immediate`] would lose recent commits and fault
/// tests would flake. With `fsync` off, a synchronous commit costs one `write` to the page cache.
const SETTINGS: &str = "listen_addresses = '127.0.0.1'\n\
                        fsync = off\n\
                        full_page_writes = off\n";

/// The files the TLS settings point at, relative to the data directory.
const TLS_SETTINGS: &str = "ssl = on\n\
                            ssl_cert_file = 'server.crt'\n\
                            ssl_key_file = 'server.key'\n";

/// The client authentication of a server that refuses TCP without TLS: trust over the Unix
/// socket (which the fixture's own helpers then use) and over TLS, nothing else.
const HBA_TLS_ONLY: &str = "local all all trust\n\
                            hostssl all all 127.0.0.1/32 trust\n\
                            hostssl all all ::1/128 trust\n";

/// Numbers the databases of [`PostgresServer::create_unique_database`].
static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The certificate and key of a server started by [`PostgresServer::start_with_tls`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate, PEM, followed by any intermediate certificates.
    pub cert_pem: String,
    /// The certificate's private key, PEM.
    pub key_pem: String,
    /// Whether TCP connections without TLS are refused (`hostssl` lines only in `pg_hba.conf`).
    pub tls_only: bool,
}

/// A throwaway PostgreSQL server in a temporary directory, listening on 127.0.0.1.
///
/// Authentication is `trust`, the superuser is `postgres`, the encoding UTF8 and the locale C.
/// Durability is off (`fsync`, `full_page_writes`): a crash of the machine loses data, a crash
/// of the server (as in [`restart_immediate`](Self::restart_immediate)) does not.
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and deletes the directory.
#[derive(Debug)]
pub struct PostgresServer {
    /// Removed in `Drop`, after the server has stopped.
    dir: Option<TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// Who runs the programs when we are root.
    account: Option<Account>,
    /// Whether the server may be running, so that `Drop` knows whether to stop it.
    running: AtomicBool,
    watchdog: Option<Watchdog>,
    /// Settings added to [`SETTINGS`], such as TLS.
    extra_settings: &'static str,
    /// Whether plain TCP is refused, so that our helpers connect through the Unix socket.
    tls_only: bool,
}

impl PostgresServer {
    /// Creates a cluster in a new temporary directory and starts a server on a free port.
    ///
    /// Blocks until the server accepts connections; this takes a second or two. It may be called
    /// from synchronous tests and from inside a Tokio runtime.
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// Like [`start`](Self::start), with TLS on (`ssl = on`) using the given certificate and key.
    ///
    /// The files are written into the data directory as `server.crt` and `server.key` (mode
    /// 0600, as PostgreSQL demands). With [`ServerTls::tls_only`], TCP connections without TLS
    /// are refused; the helpers of this type ([`connect`](Self::connect),
    /// [`create_database`](Self::create_database), …) then use the Unix socket, while
    /// [`url`](Self::url) still names 127.0.0.1.
    pub fn start_with_tls(tls: &ServerTls) -> Result<Self> {
        Self::start_inner(Some(tls))
    }

    fn start_inner(tls: Option<&ServerTls>) -> Result<Self> {
        let bin_dir = binaries::find_bin_dir()?;
        let (dir, account) = create_dir()?;
        let root = dir.path().to_path_buf();
        let mut server = Self {
            dir: Some(dir),
            data_dir: root.join("data"),
            root,
            bin_dir,
            port: 0,
            account,
            running: AtomicBool::new(false),
            watchdog: None,
            extra_settings: "",
            tls_only: false,
        };
        server.init_cluster()?;
        if let Some(tls) = tls {
            server.install_tls(tls)?;
        }
        server.watchdog = Some(Watchdog::spawn(
            &server.bin_dir.join("pg_ctl"),
            &server.data_dir,
            &server.root,
            server.account.as_ref(),
        )?);
        server.start_on_free_port()?;
        Ok(server)
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The connection string of the `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DATABASE)
    }

    /// The connection string of the database `db`, as the `postgres` superuser.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The data directory of the cluster.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the `initdb`, `pg_ctl` and `postgres` programs in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Connects to the `postgres` database; the connection runs on a spawned Tokio task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        self.connect_to(DEFAULT_DATABASE).await
    }

    /// Connects to the database `db`; the connection runs on a spawned Tokio task.
    ///
    /// The task ends when the client is dropped or the connection fails; failures then show as
    /// errors of the client's calls.
    pub async fn connect_to(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (url, config) = if self.tls_only {
            let mut config = tokio_postgres::Config::new();
            config.host_path(&self.root).port(self.port).user(SUPERUSER).dbname(db);
            (format!("the Unix socket in `{}`, database `{db}`", self.root.display()), config)
        } else {
            let url = self.url_for(db);
            let config =
                url.parse().map_err(|source| Error::Connect { url: url.clone(), source })?;
            (url, config)
        };
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| Error::Connect { url, source })?;
        tokio::spawn(async move {
            // The client reports a broken connection on its next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates the empty database `name`.
    ///
    /// Names are limited to lowercase letters, digits and `_` so that they need no quoting in
    /// SQL or connection strings.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        let statement = format!("create database \"{name}\"");
        let client = self.connect().await?;
        client
            .batch_execute(&statement)
            .await
            .map_err(|source| Error::Statement { statement, source })
    }

    /// Creates an empty database named `<prefix>_<n>`, unique in this process, and returns the
    /// name: the way for each test to get its own database on the [`shared`](super::shared)
    /// server.
    pub async fn create_unique_database(&self, prefix: &str) -> Result<String> {
        let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{n}");
        self.create_database(&name).await?;
        Ok(name)
    }

    /// Kills the server without a clean shutdown and starts it again on the same port, as after
    /// a crash: open connections break, committed data survives.
    ///
    /// Blocks until the server accepts connections again.
    pub fn restart_immediate(&self) -> Result<()> {
        self.running.store(true, Ordering::SeqCst);
        self.pg_ctl(&["restart", "-m", "immediate"])
    }

    /// Kills the server without a clean shutdown (`pg_ctl stop -m immediate`) and waits until
    /// it has exited. The data stays until the value is dropped; [`start_again`](Self::start_again)
    /// brings the server back.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "immediate"])?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Starts a server stopped by [`stop`](Self::stop) again, on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.running.store(true, Ordering::SeqCst);
        self.pg_ctl(&["start"])
    }

    fn init_cluster(&self) -> Result<()> {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        self.run(&mut initdb)?;
        // The settings live in their own file, rewritten on each start attempt.
        self.append_to(
            "postgresql.conf",
            "\n# added by ldsync-test-support\ninclude 'ldsync.conf'\n",
        )
    }

    /// Writes the certificate and key, turns TLS on and, if asked, refuses plain TCP.
    fn install_tls(&mut self, tls: &ServerTls) -> Result<()> {
        self.write_data_file("server.crt", &tls.cert_pem, 0o644)?;
        self.write_data_file("server.key", &tls.key_pem, 0o600)?;
        self.extra_settings = TLS_SETTINGS;
        if tls.tls_only {
            self.write_data_file("pg_hba.conf", HBA_TLS_ONLY, 0o600)?;
            self.tls_only = true;
        }
        Ok(())
    }

    /// Writes a file of the data directory with the given mode, owned by the server's account.
    fn write_data_file(&self, name: &str, contents: &str, mode: u32) -> Result<()> {
        let path = self.data_dir.join(name);
        fs::write(&path, contents)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
            .map_err(|source| Error::io(format!("write `{}`", path.display()), source))?;
        self.hand_over(&path)
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.port =
                free_port().map_err(|source| Error::io("find a free port on 127.0.0.1", source))?;
            self.write_settings()?;
            self.running.store(true, Ordering::SeqCst);
            match self.pg_ctl(&["start"]) {
                Ok(()) => return Ok(()),
                Err(_)
                    if attempt < START_ATTEMPTS && self.log_tail().contains("already in use") =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn write_settings(&self) -> Result<()> {
        let socket_dir = self.root.to_string_lossy().replace('\'', "''");
        let settings = format!(
            "{SETTINGS}{}port = {}\nunix_socket_directories = '{socket_dir}'\n",
            self.extra_settings, self.port
        );
        let path = self.data_dir.join("ldsync.conf");
        fs::write(&path, settings)
            .map_err(|source| Error::io(format!("write `{}`", path.display()), source))?;
        self.hand_over(&path)
    }

    fn append_to(&self, file: &str, text: &str) -> Result<()> {
        let path = self.data_dir.join(file);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|source| Error::io(format!("append to `{}`", path.display()), source))
    }

    /// Gives a file we created to the account the server runs as.
    fn hand_over(&self, path: &Path) -> Result<()> {
        match &self.account {
            Some(account) => chown(path, account),
            None => Ok(()),
        }
    }

    /// Runs `pg_ctl <args> -w` on this cluster.
    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .args(args)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path());
        self.run(&mut pg_ctl)
    }

    /// A command for one of the programs, run as the server's account, from its directory.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.root).stdin(Stdio::null());
        if let Some(account) = &self.account {
            command.uid(account.uid).gid(account.gid);
        }
        command
    }

    fn run(&self, command: &mut Command) -> Result<()> {
        let shown = format!("{command:?}");
        let output =
            command.output().map_err(|source| Error::io(format!("run {shown}"), source))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::new();
        for stream in [&output.stdout, &output.stderr] {
            let stream = String::from_utf8_lossy(stream);
            if !stream.trim().is_empty() {
                let _ = writeln!(text, "{}", stream.trim_end());
            }
        }
        let log = self.log_tail();
        if !log.is_empty() {
            let _ = write!(text, "server log `{}` ends with:\n{log}", self.log_path().display());
        }
        Err(Error::CommandFailed { command: shown, status: output.status, output: text })
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running.swap(false, Ordering::SeqCst) {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        // Last, so that the watchdog cleans up if anything above is interrupted.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }
}

/// Creates the temporary directory; when we are root, hands it to an unprivileged account.
///
/// Whether we are root is read from the owner of the new directory, which is our effective user:
/// `geteuid` would need `unsafe`.
fn create_dir() -> Result<(TempDir, Option<Account>)> {
    let dir = temp_dir_in(&std::env::temp_dir())?;
    let owner = fs::metadata(dir.path())
        .map_err(|source| Error::io(format!("inspect `{}`", dir.path().display()), source))?
        .uid();
    if owner != 0 {
        return Ok((dir, None));
    }
    let account = account::unprivileged_account()?;
    // The account must be able to reach the directory: `TMPDIR` may point under `/root`.
    let dir = if traversable_by_others(dir.path()) { dir } else { temp_dir_in(Path::new("/tmp"))? };
    chown(dir.path(), &account)?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).map_err(|source| {
        Error::io(format!("set the mode of `{}`", dir.path().display()), source)
    })?;
    Ok((dir, Some(account)))
}

fn temp_dir_in(base: &Path) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("ldsync-pg-")
        .tempdir_in(base)
        .map_err(|source| Error::io(format!("create a directory in `{}`", base.display()), source))
}

/// Whether every directory above `path` lets other users pass through.
fn traversable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0))
}

fn chown(path: &Path, account: &Account) -> Result<()> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid)).map_err(|source| {
        Error::io(format!("give `{}` to user `{}`", path.display(), account.name), source)
    })
}

fn validate_database_name(name: &str) -> Result<()> {
    let valid = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidDatabaseName { name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_need_no_quoting() {
        for good in ["orders", "_x", "orders_12"] {
            assert!(validate_database_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Orders", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(validate_database_name(bad).is_err(), "{bad}");
        }
    }
}
