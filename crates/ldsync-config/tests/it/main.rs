//! Integration tests of `ldsync-config`: the bundled examples, PRODUCT.md's examples, problems
//! with their positions, and arbitrary input.

mod examples;
mod problems;
mod robustness;

use std::{collections::HashMap, path::Path};

use ldsync_config::expand::Expander;

/// An expander with the variables the examples name.
pub(crate) fn example_env() -> Expander<'static> {
    let vars: HashMap<&str, &str> = [
        ("WAREHOUSE_URL", "postgres://app@127.0.0.1:5432/analytics"),
        ("LD_ACCESS_TOKEN", "api-test-token"),
        ("LDSYNC_STATE_URL", "postgres://ldsync@127.0.0.1/state"),
    ]
    .into_iter()
    .collect();
    Expander::with_lookup(move |name| vars.get(name).map(|v| (*v).to_owned()))
}

/// Writes a project: `ldsync.toml` and the given sync files, in a new temporary folder.
pub(crate) fn project(config: &str, syncs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ldsync.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    for (name, text) in syncs {
        std::fs::write(dir.path().join("syncs").join(name), text).unwrap();
    }
    dir
}

/// The repository's root, from the package folder cargo gives the running test (a test built
/// for another checkout sharing the target folder would carry that checkout's path).
pub(crate) fn repo_root() -> std::path::PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test");
    Path::new(&package).parent().and_then(Path::parent).expect("crates/<package>").to_path_buf()
}
