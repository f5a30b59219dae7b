//! What a metrics sync remembers between runs, committed through the journal like a segment's
//! snapshot: `syncs/<sync>/snapshots/metrics.keys`, a JSON document.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use ldsync_state::Journal;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The name of the committed state in the journal.
pub(crate) const STATE_NAME: &str = "metrics";

/// The committed state of a metrics sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricsState {
    /// The metrics ldsync created: the only ones it may archive.
    pub(crate) owned: BTreeSet<String>,
    /// The managed fields ldsync last delivered, per metric: what tells a LaunchDarkly-side
    /// edit (drift) from a warehouse change.
    pub(crate) delivered: BTreeMap<String, BTreeMap<String, Json>>,
}

impl MetricsState {
    /// Reads the committed state; none yet is the empty state.
    pub(crate) fn read(journal: &Journal) -> ldsync_state::Result<Self> {
        let path = journal.snapshot_path(STATE_NAME);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                ldsync_state::Error::Corrupt { path, reason: format!("not a metrics state: {err}") }
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ldsync_state::Error::Io { path, source }),
        }
    }

    /// Writes the state as the pending plan's target; [`Journal::commit`] makes it committed.
    pub(crate) fn write_target(&self, journal: &Journal) -> ldsync_state::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a metrics state always serialises");
        journal.write_target(STATE_NAME, &bytes)
    }
}
