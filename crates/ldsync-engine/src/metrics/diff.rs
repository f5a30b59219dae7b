//! The diff step of a metrics sync: a definition against what LaunchDarkly holds → the
//! minimal JSON Patch. Pure.

use std::collections::BTreeMap;

use ldsync_launchdarkly::{MetricRep, PatchOp};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::definition::Definition;

/// One field that differs, as a plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The API field, such as `eventKey`.
    pub field: String,
    /// What LaunchDarkly holds (`None`: absent).
    pub old: Option<Json>,
    /// What the warehouse says (`None`: remove it).
    pub new: Option<Json>,
    /// Whether LaunchDarkly was edited behind ldsync's back: the warehouse's value is the one
    /// ldsync last delivered, and LaunchDarkly's differs from it.
    pub drift: bool,
}

/// Fields whose order means nothing: compared as sets.
fn is_set(field: &str) -> bool {
    matches!(field, "tags" | "randomizationUnits")
}

/// A value made comparable: sets sorted, integral numbers as integers.
pub(crate) fn normalise(field: &str, value: &Json) -> Json {
    match value {
        Json::Array(items) if is_set(field) => {
            let mut items = items.clone();
            items.sort_by_key(ToString::to_string);
            items.dedup();
            Json::Array(items)
        }
        Json::Number(number) => match number.as_f64() {
            #[expect(clippy::cast_possible_truncation, reason = "checked to be integral")]
            Some(float)
                if number.as_i64().is_none() && float.fract() == 0.0 && float.abs() < 1e15 =>
            {
                Json::from(float as i64)
            }
            _ => value.clone(),
        },
        _ => value.clone(),
    }
}

/// Whether two values of `field` are the same.
pub(crate) fn same(field: &str, a: &Json, b: &Json) -> bool {
    normalise(field, a) == normalise(field, b)
}

/// The managed fields that differ between the definition and LaunchDarkly, with `delivered`
/// (what ldsync last delivered for this metric) telling drift from a warehouse change.
pub(crate) fn changes(
    definition: &Definition,
    current: &MetricRep,
    delivered: Option<&BTreeMap<String, Json>>,
) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for (field, wanted) in &definition.fields {
        let held = current.field(field);
        let differs = match (wanted.is_null(), held) {
            (true, None) => false,
            (true, Some(_)) | (false, None) => true,
            (false, Some(held)) => !same(field, wanted, held),
        };
        if !differs {
            continue;
        }
        let drift = delivered
            .and_then(|fields| fields.get(field))
            .is_some_and(|last| same(field, last, wanted));
        changes.push(FieldChange {
            field: field.clone(),
            old: held.cloned(),
            new: (!wanted.is_null()).then(|| wanted.clone()),
            drift,
        });
    }
    // A metric the warehouse declares is in use: an archived one comes back.
    if current.archived {
        changes.push(FieldChange {
            field: "archived".to_owned(),
            old: Some(Json::Bool(true)),
            new: Some(Json::Bool(false)),
            drift: false,
        });
    }
    changes
}

/// The JSON Patch that makes those changes: `replace` a field LaunchDarkly holds, `add` one it
/// does not, `remove` one the warehouse has no value for.
pub(crate) fn patch(changes: &[FieldChange]) -> Vec<PatchOp> {
    changes
        .iter()
        .map(|change| {
            let path = format!("/{}", change.field);
            match (&change.old, &change.new) {
                (_, None) => PatchOp::Remove { path },
                (None, Some(value)) => PatchOp::Add { path, value: value.clone() },
                (Some(_), Some(value)) => PatchOp::Replace { path, value: value.clone() },
            }
        })
        .collect()
}

/// Every managed field as a change, for a backfill: each is sent whether it differs or not
/// (a field both sides leave absent excepted: there is nothing to remove).
pub(crate) fn all_fields(definition: &Definition, current: &MetricRep) -> Vec<FieldChange> {
    let mut changes: Vec<FieldChange> = definition
        .fields
        .iter()
        .filter_map(|(field, wanted)| {
            let held = current.field(field);
            if wanted.is_null() && held.is_none() {
                return None;
            }
            Some(FieldChange {
                field: field.clone(),
                old: held.cloned(),
                new: (!wanted.is_null()).then(|| wanted.clone()),
                drift: false,
            })
        })
        .collect();
    if current.archived {
        changes.push(FieldChange {
            field: "archived".to_owned(),
            old: Some(Json::Bool(true)),
            new: Some(Json::Bool(false)),
            drift: false,
        });
    }
    changes
}

/// The patch that archives a metric.
pub(crate) fn archive(current: &MetricRep) -> Vec<PatchOp> {
    let path = "/archived".to_owned();
    let value = Json::Bool(true);
    if current.raw.contains_key("archived") {
        vec![PatchOp::Replace { path, value }]
    } else {
        vec![PatchOp::Add { path, value }]
    }
}
