//! The diff engine of ldsync: the committed snapshot and the current query result in, the
//! members to add and to remove out.
//!
//! Keys are held in a [`KeySet`]: one byte arena plus offsets, ordered by a 64-bit xxh3
//! fingerprint, so that a set of 10 M 20-byte keys costs about 1.6 × its raw bytes and the
//! diff is one linear merge. Fingerprints only order the keys: equal fingerprints are always
//! settled by comparing the keys themselves, so a collision can never hide a change.
//!
//! ```
//! use ldsync_diff::{diff, KeySet};
//!
//! let previous = KeySet::from_keys(["ann", "bob", "cy"]);
//! let current = KeySet::from_keys(["bob", "cy", "dee", "dee"]);
//! let changes = diff(&previous, &current);
//! assert_eq!(changes.adds().collect::<Vec<_>>(), ["dee"]);
//! assert_eq!(changes.removes().collect::<Vec<_>>(), ["ann"]);
//! ```

mod keyset;
mod merge;
mod snapshot;

pub use keyset::{fingerprint, KeySet, KeySetBuilder};
pub use merge::{diff, Diff};
pub use snapshot::SnapshotError;
