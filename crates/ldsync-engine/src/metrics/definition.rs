//! The stage step of a metrics sync: one row → one checked metric definition, or a rejection.
//!
//! Only the columns the query returns are managed; a column it does not return leaves that
//! field of every metric alone. Values are mapped to the API's field names (`event_key` →
//! `eventKey`) and to the JSON LaunchDarkly returns, so that a definition compares directly
//! with a `MetricRep`.

use std::collections::BTreeMap;

use ldsync_core::{MetricKey, RowBatch, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A custom event: a conversion, or numeric.
    Custom,
    /// A page view.
    Pageview,
    /// A click on a CSS selector.
    Click,
}

impl MetricKind {
    /// The API's name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Pageview => "pageview",
            Self::Click => "click",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "custom" => Some(Self::Custom),
            "pageview" => Some(Self::Pageview),
            "click" => Some(Self::Click),
            _ => None,
        }
    }
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Bool,
    /// Text that must be one of these.
    OneOf(&'static [&'static str]),
    /// An integer from 0 to 100.
    Percentile,
    /// A set of strings: a JSON array, a text array, or comma-separated text.
    StringSet,
    /// A JSON array of URL matchers.
    Urls,
}

/// A managed field: its column, its API name, and how its values are read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// The column of the query contract.
    pub(crate) column: &'static str,
    /// The field of `MetricPost` / `MetricRep`.
    pub(crate) api: &'static str,
    shape: Shape,
}

/// The success criteria LaunchDarkly knows.
const SUCCESS_CRITERIA: &[&str] = &["HigherThanBaseline", "LowerThanBaseline"];

/// Every field a query may manage, in the order patches list them.
pub(crate) const FIELDS: [Field; 13] = [
    Field { column: "name", api: "name", shape: Shape::Text },
    Field { column: "description", api: "description", shape: Shape::Text },
    Field { column: "tags", api: "tags", shape: Shape::StringSet },
    Field { column: "event_key", api: "eventKey", shape: Shape::Text },
    Field { column: "is_numeric", api: "isNumeric", shape: Shape::Bool },
    Field { column: "unit", api: "unit", shape: Shape::Text },
    Field {
        column: "success_criteria",
        api: "successCriteria",
        shape: Shape::OneOf(SUCCESS_CRITERIA),
    },
    Field {
        column: "unit_aggregation_type",
        api: "unitAggregationType",
        shape: Shape::OneOf(&["average", "sum"]),
    },
    Field {
        column: "analysis_type",
        api: "analysisType",
        shape: Shape::OneOf(&["mean", "percentile"]),
    },
    Field { column: "percentile_value", api: "percentileValue", shape: Shape::Percentile },
    Field { column: "randomization_units", api: "randomizationUnits", shape: Shape::StringSet },
    Field { column: "urls", api: "urls", shape: Shape::Urls },
    Field { column: "selector", api: "selector", shape: Shape::Text },
];

/// Whether a field applies to a metric of this kind; fields that do not are never sent.
pub(crate) fn applies(api: &str, kind: MetricKind, numeric: bool) -> bool {
    match api {
        "name" | "description" | "tags" | "randomizationUnits" | "unitAggregationType" => true,
        "eventKey" | "isNumeric" | "successCriteria" => kind == MetricKind::Custom,
        "unit" | "analysisType" | "percentileValue" => kind == MetricKind::Custom && numeric,
        "urls" => matches!(kind, MetricKind::Pageview | MetricKind::Click),
        "selector" => kind == MetricKind::Click,
        _ => false,
    }
}

/// The columns a metric of this kind cannot do without.
fn required(kind: MetricKind, numeric: bool, percentile: bool) -> Vec<&'static str> {
    let mut columns = match (kind, numeric) {
        (MetricKind::Custom, false) => vec!["event_key"],
        (MetricKind::Custom, true) => vec!["event_key", "unit", "success_criteria"],
        (MetricKind::Pageview, _) => vec!["urls"],
        (MetricKind::Click, _) => vec!["selector", "urls"],
    };
    if percentile && kind == MetricKind::Custom && numeric {
        columns.push("percentile_value");
    }
    columns
}

/// A checked metric definition: what the warehouse says one metric must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Definition {
    /// The metric key.
    pub(crate) key: String,
    /// Its kind (`custom` when the query does not say).
    pub(crate) kind: MetricKind,
    /// The row of the query result it came from (1-based).
    pub(crate) row: u64,
    /// The managed fields that apply to the kind, by API name; `null` means "absent".
    pub(crate) fields: BTreeMap<String, Json>,
    /// Required columns the query does not return: the metric can be patched, not created.
    pub(crate) missing_for_create: Vec<String>,
}

impl Definition {
    /// The definition, as the body that creates the metric.
    pub(crate) fn create_body(&self) -> serde_json::Map<String, Json> {
        let mut body = serde_json::Map::new();
        body.insert("key".to_owned(), json!(self.key));
        body.insert("kind".to_owned(), json!(self.kind.as_str()));
        for (field, value) in &self.fields {
            if !value.is_null() {
                body.insert(field.clone(), value.clone());
            }
        }
        // LaunchDarkly requires `isNumeric` on a custom metric: a conversion unless told.
        if self.kind == MetricKind::Custom {
            body.entry("isNumeric").or_insert(json!(false));
        }
        body
    }

    /// Why the metric cannot be created from this definition, if it cannot.
    pub(crate) fn cannot_create(&self) -> Option<String> {
        (!self.missing_for_create.is_empty()).then(|| {
            let columns: Vec<String> =
                self.missing_for_create.iter().map(|c| format!("`{c}`")).collect();
            format!(
                "metric `{}` does not exist in LaunchDarkly, and creating a {} metric needs {}, which the query does not return",
                self.key,
                self.kind.as_str(),
                columns.join(" and ")
            )
        })
    }
}

/// Where the contract's columns are in the result.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    key: usize,
    kind: Option<usize>,
    /// Each managed field the query returns, with its column's position.
    fields: Vec<(Field, usize)>,
}

impl Layout {
    /// Finds the columns; the query must return `key`.
    pub(crate) fn of(batch: &RowBatch) -> Result<Self, String> {
        let key = batch.column_index("key").ok_or_else(|| {
            let names: Vec<_> = batch.columns.iter().map(|c| format!("`{c}`")).collect();
            format!(
                "the query must return a `key` column with each metric's key; it returned {}",
                if names.is_empty() { "no columns".to_owned() } else { names.join(", ") }
            )
        })?;
        Ok(Self {
            key,
            kind: batch.column_index("kind"),
            fields: FIELDS
                .iter()
                .filter_map(|field| batch.column_index(field.column).map(|at| (*field, at)))
                .collect(),
        })
    }

    /// The key of a row, when it has a usable one (rejected rows included), so that a
    /// metric whose row is rejected is not taken for one that left the query.
    pub(crate) fn key_of(&self, row: &[Value]) -> Option<String> {
        match &row[self.key] {
            Value::Text(text) if !text.is_empty() => Some(text.clone()),
            _ => None,
        }
    }

    /// Checks one row; a rejected row comes back with its reason.
    pub(crate) fn definition(&self, row: &[Value], position: u64) -> Result<Definition, String> {
        let key = match &row[self.key] {
            Value::Text(text) => MetricKey::new(text.clone()).map_err(|err| err.to_string())?,
            Value::Null => return Err("`key` is NULL".to_owned()),
            other => return Err(format!("`key` is a {}, expected text", other.type_name())),
        };
        let kind = match self.kind.map(|at| &row[at]) {
            None | Some(Value::Null) => MetricKind::Custom,
            Some(Value::Text(text)) => MetricKind::parse(text).ok_or_else(|| {
                format!("`kind` `{text}` is not one of `custom`, `pageview`, `click`")
            })?,
            Some(other) => return Err(format!("`kind` is a {}, expected text", other.type_name())),
        };
        let mut values = BTreeMap::new();
        for (field, at) in &self.fields {
            values.insert(field.column, read(field, &row[*at])?);
        }
        let numeric = values.get("is_numeric").is_some_and(|v| *v == Json::Bool(true));
        let percentile = values.get("analysis_type").is_some_and(|v| *v == json!("percentile"));
        let mut missing_for_create = Vec::new();
        for column in required(kind, numeric, percentile) {
            match values.get(column) {
                None => missing_for_create.push(column.to_owned()),
                Some(value) if is_blank(value) => {
                    return Err(match column {
                        "percentile_value" => {
                            "`analysis_type` is `percentile`, so `percentile_value` (0–100) is required".to_owned()
                        }
                        _ => format!(
                            "a {}{} metric needs `{column}`",
                            if kind == MetricKind::Custom && numeric { "numeric " } else { "" },
                            kind.as_str()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        let mut fields = BTreeMap::new();
        for (field, _) in &self.fields {
            if !applies(field.api, kind, numeric) {
                continue;
            }
            let mut value = values.remove(field.column).expect("read above");
            // Fields LaunchDarkly always holds: NULL means their default.
            if value.is_null() {
                match field.api {
                    "name" => value = json!(key.as_str()),
                    "tags" => value = json!([]),
                    _ => {}
                }
            }
            fields.insert(field.api.to_owned(), value);
        }
        Ok(Definition { key: key.to_string(), kind, row: position, fields, missing_for_create })
    }
}

fn is_blank(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::String(text) => text.trim().is_empty(),
        Json::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Reads one value of a managed column as the JSON the API uses; NULL becomes `null`.
fn read(field: &Field, value: &Value) -> Result<Json, String> {
    let column = field.column;
    let wrong =
        |expected: &str| format!("`{column}` is a {}, expected {expected}", value.type_name());
    if value.is_null() {
        return Ok(Json::Null);
    }
    match field.shape {
        Shape::Text => match value {
            Value::Text(text) => Ok(json!(text)),
            _ => Err(wrong("text")),
        },
        Shape::OneOf(allowed) => match value {
            Value::Text(text) if allowed.contains(&text.as_str()) => Ok(json!(text)),
            Value::Text(text) => Err(format!(
                "`{column}` `{text}` is not one of {}",
                allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
            )),
            _ => Err(wrong("text")),
        },
        Shape::Bool => match value {
            Value::Bool(flag) => Ok(json!(flag)),
            Value::Int(0) => Ok(json!(false)),
            Value::Int(1) => Ok(json!(true)),
            Value::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "1" => Ok(json!(true)),
                "false" | "f" | "no" | "0" => Ok(json!(false)),
                _ => Err(format!("`{column}` `{text}` is not a boolean")),
            },
            _ => Err(wrong("a boolean")),
        },
        Shape::Percentile => {
            let number = match value {
                Value::Int(number) => Some(*number),
                #[expect(clippy::cast_possible_truncation, reason = "checked to be integral")]
                Value::Float(number) if number.fract() == 0.0 && number.abs() < 1e9 => {
                    Some(*number as i64)
                }
                Value::Text(text) => text.trim().parse().ok(),
                _ => None,
            };
            match number {
                Some(number) if (0..=100).contains(&number) => Ok(json!(number)),
                _ => Err(format!(
                    "`{column}` must be an integer from 0 to 100, not {}",
                    shown(value)
                )),
            }
        }
        Shape::StringSet => {
            let mut items = string_list(column, value)?;
            items.sort();
            items.dedup();
            Ok(json!(items))
        }
        Shape::Urls => {
            let list = match value {
                Value::Json(json) => json.clone(),
                Value::Text(text) => serde_json::from_str(text)
                    .map_err(|err| format!("`urls` is not JSON: {err}"))?,
                _ => return Err(wrong("a JSON array of URL matchers")),
            };
            check_urls(&list)?;
            Ok(list)
        }
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Text(text) => format!("`{text}`"),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// A list of strings from a JSON array (a `text[]` arrives as one), or from text: a JSON array,
/// or comma-separated values.
pub(crate) fn string_list(column: &str, value: &Value) -> Result<Vec<String>, String> {
    let from_json = |json: &Json| -> Result<Vec<String>, String> {
        json.as_array()
            .and_then(|items| {
                items.iter().map(|item| item.as_str().map(|s| s.trim().to_owned())).collect()
            })
            .map(|items: Vec<String>| items.into_iter().filter(|s| !s.is_empty()).collect())
            .ok_or_else(|| format!("`{column}` must be an array of strings, not {json}"))
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Json(json) => from_json(json),
        Value::Text(text) if text.trim_start().starts_with('[') => {
            let json: Json = serde_json::from_str(text)
                .map_err(|err| format!("`{column}` is not a JSON array: {err}"))?;
            from_json(&json)
        }
        Value::Text(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(format!(
            "`{column}` is a {}, expected an array of strings or comma-separated text",
            other.type_name()
        )),
    }
}

/// Checks URL matchers as LaunchDarkly defines them.
fn check_urls(list: &Json) -> Result<(), String> {
    let items = list.as_array().ok_or_else(|| "`urls` must be a JSON array".to_owned())?;
    for (at, item) in items.iter().enumerate() {
        let needs = match item.get("kind").and_then(Json::as_str) {
            Some("exact" | "canonical") => "url",
            Some("substring") => "substring",
            Some("regex") => "pattern",
            _ => {
                return Err(format!(
                    "`urls` item {} needs a `kind`: `exact`, `canonical`, `substring` or `regex`",
                    at + 1
                ))
            }
        };
        if item.get(needs).and_then(Json::as_str).is_none_or(str::is_empty) {
            return Err(format!(
                "`urls` item {}: a `{}` matcher needs `{needs}`",
                at + 1,
                item["kind"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}
