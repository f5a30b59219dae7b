//! The unprivileged account PostgreSQL runs as when the tests run as root.

use std::fs;

use crate::{Error, Result};

/// The users tried, in order: the one the `postgresql` package creates, then the generic one.
const CANDIDATES: &[&str] = &["postgres", "nobody"];

/// The account database read; parsed directly because `getpwnam` would need `unsafe`.
const PASSWD: &str = "/etc/passwd";

/// A user to run the PostgreSQL programs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Account {
    /// The login name, for messages.
    pub(super) name: String,
    /// The user id.
    pub(super) uid: u32,
    /// The primary group id.
    pub(super) gid: u32,
}

/// Returns the first of [`CANDIDATES`] that exists and is not root.
pub(super) fn unprivileged_account() -> Result<Account> {
    let passwd = fs::read_to_string(PASSWD)
        .map_err(|source| Error::io(format!("read `{PASSWD}`"), source))?;
    find_account(&passwd).ok_or(Error::NoUnprivilegedUser { candidates: CANDIDATES })
}

fn find_account(passwd: &str) -> Option<Account> {
    let accounts: Vec<Account> = passwd.lines().filter_map(parse_line).collect();
    CANDIDATES
        .iter()
        .find_map(|wanted| {
            accounts.iter().find(|account| account.name == *wanted && account.uid != 0)
        })
        .cloned()
}

/// Parses `name:password:uid:gid:gecos:home:shell`.
fn parse_line(line: &str) -> Option<Account> {
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(Account { name: name.to_owned(), uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_postgres_over_nobody() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";
        let account = find_account(passwd).unwrap();
        assert_eq!(account, Account { name: "postgres".into(), uid: 101, gid: 104 });
    }

    #[test]
    fn falls_back_to_nobody_and_skips_broken_lines() {
        let passwd = "# comment\nbroken\nnobody:x:65534:65534::/:/bin/false\n";
        assert_eq!(find_account(passwd).unwrap().name, "nobody");
    }

    #[test]
    fn never_picks_uid_zero() {
        assert_eq!(find_account("postgres:x:0:0::/:/bin/sh\n"), None);
    }
}
