//! Serialisable views of the emulator: its state and its statistics, as `/_emulator/` shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole state: projects with their segments (members sorted) and metrics, and the imported
/// metric events in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Projects, by key.
    pub projects: Vec<ProjectSnapshot>,
    /// Accepted metric-import payloads in arrival order (repeated payload IDs are not stored).
    pub events: Vec<EventPayload>,
}

impl Snapshot {
    /// The segment `segment` of `project`/`environment`, if it exists.
    pub fn segment(
        &self,
        project: &str,
        environment: &str,
        segment: &str,
    ) -> Option<&SegmentSnapshot> {
        self.environment(project, environment)?.segments.iter().find(|s| s.key == segment)
    }

    /// The environment `environment` of `project`, if it exists.
    pub fn environment(&self, project: &str, environment: &str) -> Option<&EnvironmentSnapshot> {
        self.projects
            .iter()
            .find(|p| p.key == project)?
            .environments
            .iter()
            .find(|e| e.key == environment)
    }

    /// The representation of metric `metric` in `project`, if it exists.
    pub fn metric(&self, project: &str, metric: &str) -> Option<&serde_json::Value> {
        self.projects
            .iter()
            .find(|p| p.key == project)?
            .metrics
            .iter()
            .find(|m| m.get("key").and_then(serde_json::Value::as_str) == Some(metric))
    }

    /// Every event imported into `project`/`environment`, in arrival order.
    pub fn events_in<'a>(
        &'a self,
        project: &'a str,
        environment: &'a str,
    ) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.events
            .iter()
            .filter(move |p| p.project == project && p.environment == environment)
            .flat_map(|p| p.events.iter())
    }
}

/// One project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectSnapshot {
    /// Project key.
    pub key: String,
    /// Its environments, by key.
    pub environments: Vec<EnvironmentSnapshot>,
    /// Its metrics as the API returns them, by key.
    pub metrics: Vec<serde_json::Value>,
}

/// One environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSnapshot {
    /// Environment key.
    pub key: String,
    /// Client-side ID (the environment's `_id`).
    pub id: String,
    /// Segments, by key.
    pub segments: Vec<SegmentSnapshot>,
    /// Segment imports, by ID.
    pub imports: Vec<ImportSnapshot>,
}

/// One segment with its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSnapshot {
    /// Segment key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether it is a big (list-based, unbounded) segment.
    pub unbounded: bool,
    /// The context kind of a big segment's members.
    pub context_kind: String,
    /// Document version.
    pub version: u64,
    /// Included keys, sorted (a standard segment's `user` targets).
    pub included: Vec<String>,
    /// Excluded keys, sorted.
    pub excluded: Vec<String>,
    /// A standard segment's included targets of other context kinds, sorted.
    pub included_contexts: BTreeMap<String, Vec<String>>,
    /// A standard segment's excluded targets of other context kinds, sorted.
    pub excluded_contexts: BTreeMap<String, Vec<String>>,
}

/// One segment import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSnapshot {
    /// Import ID.
    pub id: String,
    /// The segment it writes.
    pub segment_key: String,
    /// `merge` or `replace`.
    pub mode: String,
    /// `pending_approval`, `in_progress`, `complete`, …
    pub status: String,
    /// Keys in the file.
    pub key_count: usize,
}

/// One accepted metric-import request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    /// Project key from the path.
    pub project: String,
    /// Environment key from the path.
    pub environment: String,
    /// `X-LaunchDarkly-Payload-ID`, when sent.
    pub payload_id: Option<String>,
    /// Arrival time, epoch milliseconds.
    pub received_at: u64,
    /// The events as sent.
    pub events: Vec<serde_json::Value>,
}

/// Counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to the emulated API (not `/_emulator/`).
    pub requests: u64,
    /// Requests by `METHOD /route/{template}`.
    pub requests_by_route: BTreeMap<String, u64>,
    /// `429` responses sent.
    pub rate_limited: u64,
    /// Requests that arrived in a window already reported exhausted (`*-Remaining: 0` or a 429).
    pub requests_into_exhausted_windows: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Faults injected, by kind (`500`, `reset`, …).
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Metric-import requests whose payload ID had been seen before.
    pub repeated_payload_ids: u64,
    /// Bytes of the metric-import bodies checked and answered `202`, as sent (compressed when
    /// they came gzip).
    #[serde(default)]
    pub event_import_bytes: u64,
    /// Events stored by the metric import (payloads answered `202` under a payload ID not
    /// seen before), by `project/environment`: what [`Snapshot::events_in`] counts, without
    /// reading the stored payloads into values.
    #[serde(default)]
    pub events_stored: BTreeMap<String, u64>,
    /// `401` responses sent.
    pub unauthorized: u64,
    /// `403` responses sent.
    pub forbidden: u64,
}
