//! A helper process that stops the server and deletes its directory once the test process is gone.
//!
//! Statics are never dropped, so the server behind [`super::shared`] cannot clean up in `Drop`;
//! and a test binary killed by a signal runs no destructor at all. Each server therefore starts a
//! small `sh` that blocks reading a pipe whose write end only this process holds (std creates
//! pipes close-on-exec, so no other child inherits it). When the process exits, however it exits,
//! the kernel closes the write end, `read` sees end of file, and the shell runs
//! `pg_ctl stop -m immediate` and `rm -rf` on the directory. A server dropped normally first
//! cleans up itself, then dismisses its watchdog by writing a line, which makes `read` succeed and
//! the shell exit without doing anything.
//!
//! The shell runs in its own process group and ignores `SIGINT`, `SIGTERM` and `SIGHUP`, so a
//! Ctrl-C aimed at the test run (or a harness killing the run's process group) does not take the
//! watchdog down with it. It runs as the same user as the server so that `pg_ctl` accepts it.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use super::account::Account;
use crate::{Error, Result};

/// `$1` is `pg_ctl`, `$2` the data directory, `$3` the directory to delete.
const SCRIPT: &str = r#"trap '' INT TERM HUP
if read -r _; then exit 0; fi
"$1" stop -D "$2" -m immediate -w -t 30 >/dev/null 2>&1
rm -rf -- "$3"
"#;

/// A running watchdog; see the module documentation.
#[derive(Debug)]
pub(super) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog for the server with the given data directory.
    pub(super) fn spawn(
        pg_ctl: &Path,
        data_dir: &Path,
        root: &Path,
        account: Option<&Account>,
    ) -> Result<Self> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SCRIPT)
            .arg("ldsync-pg-watchdog")
            .arg(pg_ctl)
            .arg(data_dir)
            .arg(root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(account) = account {
            command.uid(account.uid).gid(account.gid);
        }
        let mut child =
            command.spawn().map_err(|source| Error::io("start the watchdog shell `sh`", source))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Tells the watchdog that cleanup is done, and waits for it to exit.
    pub(super) fn dismiss(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            // A failed write means the watchdog already exited; `wait` then returns at once.
            let _ = stdin.write_all(b"dismissed\n");
        }
        let _ = self.child.wait();
    }
}
