//! Every folder under `tests/cases/` holds `previous`, `current` (one key per line) and
//! `expected` (`+key` for an add, `-key` for a remove, in any order).

use std::{fs, path::Path};

use ldsync_diff::{diff, KeySet};

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn every_case_folder_gives_its_expected_changes() {
    let root = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/cases");
    let mut ran = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let previous = KeySet::from_keys(lines(&dir.join("previous")));
        let current = KeySet::from_keys(lines(&dir.join("current")));
        let changes = diff(&previous, &current);
        let mut got: Vec<String> = changes
            .adds()
            .map(|key| format!("+{key}"))
            .chain(changes.removes().map(|key| format!("-{key}")))
            .collect();
        let mut expected = lines(&dir.join("expected"));
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "case {}", dir.display());
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} cases found");
}
