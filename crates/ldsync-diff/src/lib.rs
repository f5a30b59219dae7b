//! The diff engine of ldsync: the committed membership and the current query result in, the
//! members to add and to remove out.
//!
//! Keys are held ordered by their 128-bit xxh3 fingerprint, in one byte arena plus offsets
//! ([`KeySet`] in memory, [`MappedKeySet`] for a snapshot file read in place). A run never sorts
//! the query's result: it probes each key against the committed membership as the rows arrive
//! ([`Committed::into_probe`], through an [`Index`]) and orders only the adds. A commit writes the
//! run's [`Delta`] on top of the base snapshot, and folds the two into a new base when the delta
//! grows.
//!
//! Memory stays bounded: given a [`Spill`] ([`Probe::spill_to`]), a run holds its adds up to
//! a threshold, sorts them into run files past it, and merges the runs into one snapshot file
//! that a [`KeySet`] reads in place ([`KeySet::from_file`]); removes past the threshold are
//! written the same way, and scans let a mapped file's pages go behind them.
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

mod committed;
mod hint;
mod index;
mod keyset;
mod merge;
mod snapshot;
mod spill;

pub use committed::{
    applied, applied_from, write_applied, Applied, AppliedAt, Committed, Delta, Probe,
};
pub use hint::{write_hint, Arrival, ArrivalHint, ArrivalLog};
pub use index::Index;
pub use keyset::{fingerprint, KeySet, KeySetBuilder, SortedKeys};
pub use merge::{diff, Diff};
pub use snapshot::{write_sorted, MappedKeySet, SnapshotError};
pub use spill::Spill;
