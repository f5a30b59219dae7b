//! Arbitrary input never panics the parser.

use std::fmt::Write as _;

use proptest::prelude::*;

use crate::{example_env, project};

fn load_sync(text: &str) {
    let dir = project(
        "[warehouses.w]\nduckdb = \":memory:\"\n[environments.e]\ntoken = \"${LD_ACCESS_TOKEN}\"\nproject = \"p\"\nenvironment = \"e\"\n",
        &[("s.toml", text)],
    );
    let _ = ldsync_config::load_with(&dir.path().join("ldsync.toml"), &example_env());
}

fn load_project_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ldsync.toml"), bytes).unwrap();
    let _ = ldsync_config::load_with(&dir.path().join("ldsync.toml"), &example_env());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        load_project_bytes(&bytes);
    }

    #[test]
    fn toml_shaped_text_never_panics(
        text in "(\\[[a-z_.]{0,12}\\]\n|[a-z_]{1,10} = (\"[^\"\\\\]{0,16}\"|[0-9.e+-]{1,6}|true|\\[\\]|\\{\\})\n|\\$\\{[A-Z_:?-]{0,8}\\}|\n){0,12}"
    ) {
        load_sync(&text);
        load_project_bytes(text.as_bytes());
    }
}

#[test]
fn deep_and_large_documents_are_errors_not_crashes() {
    let deep = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    load_project_bytes(deep.as_bytes());
    let mut wide = String::new();
    for i in 0..20_000 {
        writeln!(wide, "k{i} = {i}").unwrap();
    }
    load_sync(&wide);
}
