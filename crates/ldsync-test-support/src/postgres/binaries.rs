//! Finding the PostgreSQL server programs.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`; it is
/// searched before `PATH`.
pub const BIN_DIR_ENV: &str = "LDSYNC_PG_BIN_DIR";

/// Where Debian and Ubuntu install each major version, as `<root>/<version>/bin`.
const DISTRO_ROOT: &str = "/usr/lib/postgresql";

/// The programs a server needs; a directory qualifies when it holds all of them.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Returns the directory holding the server programs, with symbolic links resolved.
///
/// Links are resolved because `pg_ctl` and `initdb` find `postgres` next to their own real path,
/// as in `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb`.
pub(super) fn find_bin_dir() -> Result<PathBuf> {
    let mut searched = Vec::new();
    let overridden = env::var_os(BIN_DIR_ENV).map(PathBuf::from);
    let on_path = env::var_os("PATH").map(|path| env::split_paths(&path).collect::<Vec<_>>());
    let candidates = overridden
        .into_iter()
        .chain(on_path.unwrap_or_default())
        .chain(distro_bin_dirs(Path::new(DISTRO_ROOT)));
    for dir in candidates {
        if holds_programs(&dir) {
            if let Some(real) = real_bin_dir(&dir) {
                return Ok(real);
            }
            return Ok(dir);
        }
        if !searched.contains(&dir) {
            searched.push(dir);
        }
    }
    if !searched.iter().any(|dir| dir.starts_with(DISTRO_ROOT)) {
        searched.push(Path::new(DISTRO_ROOT).join("*").join("bin"));
    }
    Err(Error::BinariesNotFound { searched, env: BIN_DIR_ENV })
}

/// Returns `<root>/<version>/bin` for each version directory, highest version first.
fn distro_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else { return Vec::new() };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(std::result::Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version =
                name.to_str()?.split('.').map(str::parse).collect::<Result<Vec<u32>, _>>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn holds_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|program| dir.join(program).is_file())
}

/// The directory of the real `initdb`, if it holds the other programs too.
fn real_bin_dir(dir: &Path) -> Option<PathBuf> {
    let real = fs::canonicalize(dir.join("initdb")).ok()?;
    let real_dir = real.parent()?;
    holds_programs(real_dir).then(|| real_dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distro_versions_are_sorted_highest_first() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "12", "16", "not-a-version"] {
            fs::create_dir_all(root.path().join(version).join("bin")).unwrap();
        }
        let dirs = distro_bin_dirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|dir| dir.parent().unwrap().file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["16", "15", "12", "9.6"]);
    }

    #[test]
    fn missing_binaries_error_says_where_it_looked_and_what_to_install() {
        let error = Error::BinariesNotFound {
            searched: vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/postgresql/*/bin")],
            env: BIN_DIR_ENV,
        };
        let message = error.to_string();
        assert!(message.contains("`/usr/bin`, `/usr/lib/postgresql/*/bin`"), "{message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
    }
}
