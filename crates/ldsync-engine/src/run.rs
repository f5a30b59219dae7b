//! The identity, steps and outcome of one run.

use std::fmt;

use chrono::{DateTime, Utc};

/// Identifies one run of one sync: its start time (UTC, to the millisecond) and a random
/// suffix, so that ids sort by start time and never collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new id, starting now.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// A new id for the run starting now, recorded as the `run_id` field of the current span:
    /// the binary opens each sync's span with that field empty, so every line the run logs
    /// from here on carries its id.
    pub fn start() -> Self {
        let id = Self::new();
        tracing::Span::current().record("run_id", tracing::field::display(&id));
        id
    }

    /// A new id for a run that started at `start`.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{}-{}", start.format("%Y%m%dT%H%M%S%.3fZ"), &random[..8]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The steps of a run, in order. A crash between two steps is repaired by the next run, which
/// finishes the journal before it plans anything new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Run the sync's query against its warehouse, streaming the rows.
    Query,
    /// Check each row against the object's contract and stage the accepted keys or records.
    Stage,
    /// Compare the staged result with the committed snapshot.
    Diff,
    /// Write the planned batches to the journal before anything is sent.
    Journal,
    /// Send the batches to LaunchDarkly, recording each acknowledgement.
    Deliver,
    /// Commit the new snapshot once every batch is acknowledged or rejected.
    Commit,
}

impl Step {
    /// Every step, in the order a run takes them.
    pub const ALL: [Step; 6] =
        [Step::Query, Step::Stage, Step::Diff, Step::Journal, Step::Deliver, Step::Commit];
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "query",
            Self::Stage => "stage",
            Self::Diff => "diff",
            Self::Journal => "journal",
            Self::Deliver => "deliver",
            Self::Commit => "commit",
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every change was delivered and the snapshot committed.
    Succeeded,
    /// Nothing had changed: nothing was sent.
    Unchanged,
    /// A guardrail stopped the run before anything was sent.
    Refused,
    /// The run failed at a step; the journal lets the next run finish it.
    Failed(Step),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_start_time() {
        let early = RunId::starting_at(DateTime::from_timestamp(1_000, 0).unwrap());
        let late = RunId::starting_at(DateTime::from_timestamp(2_000, 0).unwrap());
        assert!(early < late);
        assert_ne!(RunId::new(), RunId::new());
        assert!(early.as_str().starts_with("19700101T001640.000Z-"), "{early}");
    }
}
