//! One linear merge of two ordered key sets.

use std::cmp::Ordering;

use crate::{KeySet, SortedKeys};

/// What changed between two key sets: indexes into the current set (adds) and the previous
/// set (removes).
#[derive(Debug)]
pub struct Diff<'a> {
    previous: &'a KeySet,
    current: &'a KeySet,
    adds: Vec<usize>,
    removes: Vec<usize>,
}

impl<'a> Diff<'a> {
    /// The keys to add, as text (a key that is not UTF-8 is shown lossily).
    pub fn adds(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.adds.iter().map(|&i| std::str::from_utf8(self.current.key(i)).unwrap_or("\u{fffd}"))
    }

    /// The keys to remove, as text.
    pub fn removes(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.removes
            .iter()
            .map(|&i| std::str::from_utf8(self.previous.key(i)).unwrap_or("\u{fffd}"))
    }

    /// How many keys to add.
    pub fn add_count(&self) -> usize {
        self.adds.len()
    }

    /// How many keys to remove.
    pub fn remove_count(&self) -> usize {
        self.removes.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }
}

/// Compares `previous` with `current`: keys only in `current` are adds, keys only in
/// `previous` are removes.
pub fn diff<'a>(previous: &'a KeySet, current: &'a KeySet) -> Diff<'a> {
    let (mut p, mut c) = (0, 0);
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    while p < previous.len() && c < current.len() {
        match order(previous, p, current, c) {
            Ordering::Less => {
                removes.push(p);
                p += 1;
            }
            Ordering::Greater => {
                adds.push(c);
                c += 1;
            }
            Ordering::Equal => {
                p += 1;
                c += 1;
            }
        }
    }
    removes.extend(p..previous.len());
    adds.extend(c..current.len());
    Diff { previous, current, adds, removes }
}

/// How key `a` of `left` orders against key `b` of `right`.
pub(crate) fn order(
    left: &impl SortedKeys,
    a: usize,
    right: &impl SortedKeys,
    b: usize,
) -> Ordering {
    left.fingerprint(a).cmp(&right.fingerprint(b)).then_with(|| left.key(a).cmp(right.key(b)))
}
