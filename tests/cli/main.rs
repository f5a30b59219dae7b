//! End-to-end tests of the `ldsync` binary: each runs it as a child process.

mod chaos;
mod connections;
mod events;
mod hostile;
mod metrics;
mod operations;
mod secrets;
mod segments;
mod shared_state;
mod validate;

use std::{
    path::Path,
    process::{Command, Output},
};

/// The repository's root, from the package folder cargo gives the running test (a test built
/// for another checkout sharing the target folder would carry that checkout's path).
pub(crate) fn repo_root() -> std::path::PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test");
    Path::new(&package).parent().and_then(Path::parent).expect("crates/<package>").to_path_buf()
}

/// `ldsync` with a clean environment: only `PATH`, `HOME` and the given variables.
pub(crate) fn ldsync(dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ldsync"));
    command.current_dir(dir).env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env("LDSYNC_LOG", "warn");
    command.envs(vars.iter().copied());
    command
}

/// What a finished command printed, for assertion messages.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Copies a folder tree.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
