//! Applying the diff to the previous set gives the current set, whatever the sets.

use std::collections::BTreeSet;

use ldsync_diff::{diff, Committed, Delta, Index, KeySet, MappedKeySet};
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

/// A run holds, besides the mapped snapshot, the index and one bit per member: a small share
/// of the keys' raw bytes, so that the run's memory is the snapshot's fingerprints and little
/// else.
#[test]
fn probing_a_million_members_holds_a_fraction_of_their_bytes() {
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("user-{i:015}")).collect();
    let raw: usize = keys.iter().map(String::len).sum();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.keys");
    KeySet::from_keys(&keys).write_file(&path).unwrap();
    let committed = Committed::new(MappedKeySet::open(&path).unwrap(), Delta::default());
    let index = Index::build(committed.base());
    let mut probe = committed.into_probe();
    assert!(index.heap_bytes() < raw / 4, "{} bytes of index for {raw} raw", index.heap_bytes());
    for key in keys.iter().skip(10) {
        probe.offer(key.as_bytes());
    }
    probe.offer(b"newcomer");
    let (_, delta) = probe.finish().unwrap();
    assert_eq!(delta.adds.len(), 1);
    assert_eq!(delta.removes.len(), 10);
}

/// A base large enough that every scan lets pages go several times over, probed without a
/// hint and then with the one the first probe recorded: both give the exact delta.
#[test]
fn a_hinted_probe_over_a_large_base_gives_the_exact_delta() {
    let keys: Vec<String> = (0..300_000).map(|i| format!("user-{i:015}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.keys");
    KeySet::from_keys(&keys).write_file(&path).unwrap();
    // Committed: the base, plus two members added since and three removed since.
    let delta = Delta {
        adds: KeySet::from_keys(["extra-1", "extra-2"]),
        removes: KeySet::from_keys(&keys[5..8]),
    };
    // The query: most of the base in its order, one added member, one removed member back,
    // and a newcomer.
    let query: Vec<&str> = keys[100..]
        .iter()
        .map(String::as_str)
        .chain(["extra-1", keys[5].as_str(), "fresh"])
        .collect();
    let open = || Committed::new(MappedKeySet::open(&path).unwrap(), delta.clone());
    let mut first = open().into_probe();
    first.offer_many(query.iter().map(|k| k.as_bytes()));
    let arrival = first.take_arrival_order().expect("no hint yet: the order is recorded");
    let (committed, expected) = first.finish().unwrap();
    let hint = dir.path().join("hint.order");
    arrival.write_hint(&hint, committed.base()).unwrap();

    let text = |set: &KeySet| -> BTreeSet<String> {
        set.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
    };
    let adds: BTreeSet<String> = ["fresh".to_owned(), keys[5].clone()].into();
    let mut removes: BTreeSet<String> = keys[..5].iter().chain(&keys[8..100]).cloned().collect();
    removes.insert("extra-2".into());
    assert_eq!((text(&expected.adds), text(&expected.removes)), (adds, removes));

    let hinted = open().with_hint(ldsync_diff::ArrivalHint::open(&hint, committed.base()));
    assert!(hinted.has_hint());
    let mut again = hinted.into_probe();
    again.offer_many(query.iter().map(|k| k.as_bytes()));
    assert!(again.predicted() > 290_000, "the hint placed {} keys", again.predicted());
    let (_, same) = again.finish().unwrap();
    assert_eq!(same, expected);
}
