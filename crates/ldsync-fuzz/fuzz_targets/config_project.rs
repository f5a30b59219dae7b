//! A project held in memory: `ldsync.toml`, then each sync file, separated by NUL bytes (which
//! TOML never holds), loaded and validated as `ldsync validate` does.

#![no_main]

use std::path::{Path, PathBuf};

use ldsync_config::{expand::Expander, Error};
use libfuzzer_sys::fuzz_target;

/// The most sync files one input declares.
const MAX_SYNCS: usize = 8;

/// Placeholder values: a few names are unset, so both branches of `${VAR:-default}` and
/// `${VAR:?message}` run; every other name holds a value shaped like what it names.
fn lookup(name: &str) -> Option<String> {
    if name.starts_with("UNSET") || name.is_empty() {
        None
    } else if name.ends_with("_URL") {
        Some("postgres://ldsync:fuzz-password@127.0.0.1:5432/analytics".to_owned())
    } else if name == "EMPTY" {
        Some(String::new())
    } else {
        Some(format!("fuzz-{}", name.to_ascii_lowercase()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Some(Ok(project)) = parts.next().map(std::str::from_utf8) else { return };
    let mut syncs = Vec::new();
    for (i, part) in parts.take(MAX_SYNCS).enumerate() {
        let Ok(text) = std::str::from_utf8(part) else { return };
        syncs.push((PathBuf::from(format!("syncs/sync-{i}.toml")), text.to_owned()));
    }
    let expander = Expander::with_lookup(lookup);
    match ldsync_config::load_from_texts(Path::new("ldsync.toml"), project, &syncs, &expander) {
        Ok(project) => {
            assert!(project.syncs.len() <= syncs.len(), "more syncs than files");
            let _ = format!("{project:?}");
        }
        Err(Error::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty(), "invalid without a problem to show");
            for diagnostic in &diagnostics {
                assert!(diagnostic.line >= 1 && diagnostic.column >= 1, "{diagnostic:?}");
                assert!(!diagnostic.message.is_empty(), "{diagnostic:?}");
                let _ = diagnostic.to_string();
            }
        }
        Err(other) => panic!("nothing is read from disk, yet: {other}"),
    }
});
