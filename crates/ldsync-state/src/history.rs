//! Run history and the rejected records of the last run.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{error::io, journal::write_atomically, Result};

/// One finished run, as `ldsync status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// What the run did: `run`, `backfill`.
    pub command: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `succeeded`, `unchanged`, `refused` or `failed`.
    pub outcome: String,
    /// Rows the query returned.
    pub rows: u64,
    /// Members added, events sent or metrics created, by the object.
    pub adds: u64,
    /// Members removed or metrics patched, by the object.
    pub removes: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Why the run failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A record the run rejected, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The record's position in the query result (1-based).
    pub row: u64,
    /// The key the record carried, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

/// The history files of one sync.
#[derive(Debug, Clone)]
pub struct History {
    runs: PathBuf,
    rejected: PathBuf,
}

impl History {
    pub(crate) fn new(sync_dir: &Path) -> Self {
        Self { runs: sync_dir.join("runs.jsonl"), rejected: sync_dir.join("rejected.json") }
    }

    /// Appends a finished run.
    pub fn record(&self, run: &RunRecord) -> Result<()> {
        let mut line = serde_json::to_vec(run).expect("a run record always serialises");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.runs)
            .map_err(io(&self.runs))?;
        file.write_all(&line).map_err(io(&self.runs))?;
        file.sync_data().map_err(io(&self.runs))
    }

    /// The last `limit` runs, newest last. Lines that do not parse (a torn write) are skipped.
    pub fn recent(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let text = match fs::read_to_string(&self.runs) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&self.runs)(error)),
        };
        let runs: Vec<RunRecord> =
            text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let skip = runs.len().saturating_sub(limit);
        Ok(runs.into_iter().skip(skip).collect())
    }

    /// Replaces the rejected records with those of the latest run.
    pub fn set_rejected(&self, rejected: &[Rejection]) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rejected).expect("rejections always serialise");
        // Most runs reject what the last one did (often nothing): no write, no flush.
        if fs::read(&self.rejected).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomically(&self.rejected, &bytes)
    }

    /// The rejected records of the latest run.
    pub fn rejected(&self) -> Result<Vec<Rejection>> {
        match fs::read(&self.rejected) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(io(&self.rejected)(error)),
        }
    }
}
