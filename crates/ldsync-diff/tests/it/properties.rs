//! Applying the diff to the previous set gives the current set, whatever the sets.

use std::collections::BTreeSet;

use ldsync_diff::{diff, KeySet};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,3}",         // short keys that collide often
        "\\PC{1,12}",         // any printable unicode
        "[a-z0-9-]{200,400}", // long keys
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn applying_the_diff_gives_the_current_set(
        previous in proptest::collection::vec(key(), 0..60),
        current in proptest::collection::vec(key(), 0..60),
    ) {
        let old = KeySet::from_keys(&previous);
        let new = KeySet::from_keys(&current);
        let changes = diff(&old, &new);

        let mut applied: BTreeSet<String> = previous.iter().cloned().collect();
        for removed in changes.removes() {
            prop_assert!(applied.remove(removed), "removed a key that was not there: {removed:?}");
        }
        for added in changes.adds() {
            prop_assert!(applied.insert(added.to_owned()), "added a key already there: {added:?}");
        }
        let expected: BTreeSet<String> = current.iter().cloned().collect();
        prop_assert_eq!(applied, expected);
        prop_assert_eq!(new.len(), current.iter().collect::<BTreeSet<_>>().len());
        for key in &current {
            prop_assert!(new.contains(key.as_bytes()));
        }
    }
}

#[test]
fn a_set_of_a_million_keys_costs_under_twice_its_raw_bytes() {
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("user-{i:014}")).collect();
    let raw: usize = keys.iter().map(String::len).sum();
    let set = KeySet::from_keys(&keys);
    assert_eq!(set.len(), keys.len());
    assert!(set.heap_bytes() < 2 * raw, "{} bytes for {raw} raw", set.heap_bytes());
}
