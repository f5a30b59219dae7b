//! The emulated account: projects, environments, segments, metrics, imports and events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::ProjectSpec;
use crate::events::StoredPayload;
use crate::snapshot::{
    EnvironmentSnapshot, ImportSnapshot, ProjectSnapshot, SegmentSnapshot, Snapshot,
};

/// Everything the API can change; what the state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Model {
    pub(crate) projects: BTreeMap<String, Project>,
    pub(crate) payloads: Vec<StoredPayload>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Project {
    pub(crate) key: String,
    pub(crate) id: String,
    pub(crate) environments: BTreeMap<String, Environment>,
    pub(crate) metrics: BTreeMap<String, Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Environment {
    pub(crate) key: String,
    pub(crate) id: String,
    pub(crate) segments: BTreeMap<String, Segment>,
    pub(crate) imports: BTreeMap<String, Import>,
    pub(crate) payload_ids: HashSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Segment {
    pub(crate) key: String,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) creation_date: u64,
    pub(crate) last_modified: u64,
    pub(crate) version: u64,
    pub(crate) unbounded: bool,
    pub(crate) context_kind: String,
    /// Big segment members, or a standard segment's `user` targets.
    pub(crate) included: HashSet<String>,
    pub(crate) excluded: HashSet<String>,
    /// A standard segment's targets of other context kinds.
    pub(crate) included_contexts: BTreeMap<String, BTreeSet<String>>,
    pub(crate) excluded_contexts: BTreeMap<String, BTreeSet<String>>,
    pub(crate) rules: Vec<Value>,
    /// Bumped on each change of a big segment's membership.
    pub(crate) members_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ImportStatus {
    PendingApproval,
    InProgress,
    Complete,
    Stopped,
}

impl ImportStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::InProgress => "in_progress",
            Self::Complete => "complete",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn is_running(self) -> bool {
        matches!(self, Self::PendingApproval | Self::InProgress)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Import {
    pub(crate) id: String,
    pub(crate) segment_key: String,
    pub(crate) creation_time: u64,
    pub(crate) replace: bool,
    pub(crate) status: ImportStatus,
    pub(crate) file_name: String,
    pub(crate) key_count: usize,
    /// Keys still to apply; emptied once complete.
    pub(crate) keys: Vec<String>,
    pub(crate) ready_at: u64,
}

/// 24 hex digits derived from `parts`, stable across runs (LaunchDarkly IDs look like this).
pub(crate) fn stable_id(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::with_capacity(24);
    for round in 0u64..2 {
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b) ^ round;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let _ = write!(out, "{h:016x}");
    }
    out.truncate(24);
    out
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default()
}

impl Model {
    pub(crate) fn new(projects: &[ProjectSpec]) -> Self {
        let mut model = Self::default();
        for p in projects {
            let project = model.projects.entry(p.key.clone()).or_insert_with(|| Project {
                key: p.key.clone(),
                id: stable_id(&["project", &p.key]),
                environments: BTreeMap::new(),
                metrics: BTreeMap::new(),
            });
            for e in &p.environments {
                project.environments.entry(e.clone()).or_insert_with(|| Environment {
                    key: e.clone(),
                    id: stable_id(&["environment", &p.key, e]),
                    segments: BTreeMap::new(),
                    imports: BTreeMap::new(),
                    payload_ids: HashSet::new(),
                });
            }
        }
        model
    }

    pub(crate) fn project(&self, p: &str) -> Option<&Project> {
        self.projects.get(p)
    }

    pub(crate) fn project_mut(&mut self, p: &str) -> Option<&mut Project> {
        self.projects.get_mut(p)
    }

    pub(crate) fn env_mut(&mut self, p: &str, e: &str) -> Option<&mut Environment> {
        self.projects.get_mut(p)?.environments.get_mut(e)
    }

    /// Completes the imports whose time has come, everywhere.
    pub(crate) fn advance_all_imports(&mut self, now: u64) {
        for p in self.projects.values_mut() {
            for e in p.environments.values_mut() {
                e.advance_imports(now);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            projects: self
                .projects
                .values()
                .map(|p| ProjectSnapshot {
                    key: p.key.clone(),
                    environments: p
                        .environments
                        .values()
                        .map(|e| EnvironmentSnapshot {
                            key: e.key.clone(),
                            id: e.id.clone(),
                            segments: e.segments.values().map(Segment::snapshot).collect(),
                            imports: e
                                .imports
                                .values()
                                .map(|i| ImportSnapshot {
                                    id: i.id.clone(),
                                    segment_key: i.segment_key.clone(),
                                    mode: if i.replace { "replace" } else { "merge" }.to_owned(),
                                    status: i.status.as_str().to_owned(),
                                    key_count: i.key_count,
                                })
                                .collect(),
                        })
                        .collect(),
                    metrics: p.metrics.values().map(|m| Value::Object(m.clone())).collect(),
                })
                .collect(),
            events: self.payloads.iter().map(StoredPayload::to_payload).collect(),
        }
    }
}

impl Environment {
    pub(crate) fn running_import(&self) -> Option<&Import> {
        self.imports.values().find(|i| i.status.is_running())
    }

    /// Applies imports that are `in_progress` and due.
    pub(crate) fn advance_imports(&mut self, now: u64) {
        for import in self.imports.values_mut() {
            if import.status != ImportStatus::InProgress || import.ready_at > now {
                continue;
            }
            let keys = std::mem::take(&mut import.keys);
            if let Some(seg) = self.segments.get_mut(&import.segment_key) {
                if import.replace {
                    seg.included = keys.into_iter().collect();
                } else {
                    seg.included.extend(keys);
                }
                seg.members_version += 1;
                seg.last_modified = now;
                import.status = ImportStatus::Complete;
            } else {
                import.status = ImportStatus::Stopped;
            }
        }
    }

    pub(crate) fn import_in_progress(&self, segment: &str) -> bool {
        self.imports.values().any(|i| i.segment_key == segment && i.status.is_running())
    }
}

fn sorted(set: &HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().cloned().collect();
    v.sort_unstable();
    v
}

impl Segment {
    fn snapshot(&self) -> SegmentSnapshot {
        let kinds = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect()
        };
        SegmentSnapshot {
            key: self.key.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            unbounded: self.unbounded,
            context_kind: self.context_kind.clone(),
            version: self.version,
            included: sorted(&self.included),
            excluded: sorted(&self.excluded),
            included_contexts: kinds(&self.included_contexts),
            excluded_contexts: kinds(&self.excluded_contexts),
        }
    }

    /// The `UserSegment` representation.
    pub(crate) fn to_json(&self, project: &str, env: &Environment) -> Value {
        let mut v = json!({
            "key": self.key,
            "name": self.name,
            "tags": self.tags,
            "creationDate": self.creation_date,
            "lastModifiedDate": self.last_modified,
            "rules": self.rules,
            "version": self.version,
            "deleted": false,
            "generation": 1,
            "unbounded": self.unbounded,
            "_flags": [],
            "_links": {
                "self": {
                    "href": format!("/api/v2/segments/{project}/{}/{}", env.key, self.key),
                    "type": "application/json"
                }
            },
        });
        let o = v.as_object_mut().expect("built as an object");
        if let Some(d) = &self.description {
            o.insert("description".into(), json!(d));
        }
        if self.unbounded {
            o.insert("unboundedContextKind".into(), json!(self.context_kind));
            o.insert("_importInProgress".into(), json!(env.import_in_progress(&self.key)));
            o.insert(
                "_unboundedMetadata".into(),
                json!({
                    "envId": env.id,
                    "segmentId": self.id,
                    "version": self.members_version,
                    "includedCount": self.included.len(),
                    "excludedCount": self.excluded.len(),
                    "lastModified": self.last_modified,
                    "deleted": false,
                }),
            );
        } else {
            o.insert("included".into(), json!(sorted(&self.included)));
            o.insert("excluded".into(), json!(sorted(&self.excluded)));
            let ctx = |m: &BTreeMap<String, BTreeSet<String>>| {
                m.iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| json!({"contextKind": k, "values": v}))
                    .collect::<Vec<_>>()
            };
            o.insert("includedContexts".into(), json!(ctx(&self.included_contexts)));
            o.insert("excludedContexts".into(), json!(ctx(&self.excluded_contexts)));
        }
        v
    }
}
