//! The stage step of a metric-events sync: rows → events, checked against the query contract,
//! kept to the range the run reads, and stripped of what was already delivered.
//!
//! The contract: `event_key` (text), `context_key` (text or integer, of the sync's
//! `context_kind`) or `context_keys` (a JSON object, kind → key), `occurred_at` (a timestamp,
//! or epoch milliseconds), and optionally `metric_value` (a number), `event_id` (text or
//! integer) and `data` (a JSON object). A missing column fails the run; a bad row is rejected
//! with its reason and the others go on.

use std::collections::{BTreeMap, HashSet};

use futures_util::TryStreamExt;
use ldsync_core::{ContextKind, RowBatch, Source, Value, DEFAULT_BATCH_ROWS};
use ldsync_launchdarkly::{CustomEvent, MAX_EVENT_PAYLOAD_BYTES};
use ldsync_state::Rejection;

use super::identity;
use crate::{Error, Result};

/// The most rejections kept with their reasons; the rest are counted.
pub(crate) const KEPT_REJECTIONS: usize = 1_000;

/// One event to send, with its identity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StagedEvent {
    /// `id:<len>:<event_key>:<event_id>` or `h:<content hash>`.
    pub(crate) identity: String,
    /// The event as LaunchDarkly takes it.
    pub(crate) event: CustomEvent,
}

/// The query result, staged.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// New events, by `occurred_at` then identity, so that batches are reproducible.
    pub(crate) events: Vec<StagedEvent>,
    /// Rows read.
    pub(crate) rows: u64,
    /// Rows already delivered (by an earlier run, or earlier in this result).
    pub(crate) duplicates: u64,
    /// Rows outside the range the run reads (the query returned more than `$1` asked for).
    pub(crate) outside: u64,
    /// Rows rejected, in all.
    pub(crate) rejected: u64,
    /// The first rejections, with reasons.
    pub(crate) rejections: Vec<Rejection>,
}

impl Staged {
    fn reject(&mut self, row: u64, key: Option<String>, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < KEPT_REJECTIONS {
            self.rejections.push(Rejection { row, key, reason });
        }
    }

    /// The latest `occurred_at` among the new events.
    pub(crate) fn latest_ms(&self) -> Option<i64> {
        self.events.iter().map(|staged| staged.event.creation_date).max()
    }
}

/// What a run reads: the query, `$1`, the range of `occurred_at` it keeps, and what it knows.
pub(crate) struct Reading<'a> {
    /// The sync, for errors.
    pub(crate) sync: &'a str,
    /// The query.
    pub(crate) query: &'a str,
    /// The context kind of `context_key`.
    pub(crate) context_kind: &'a ContextKind,
    /// The start of the range, inclusive: also `$1`.
    pub(crate) from_ms: i64,
    /// The end of the range, exclusive; `None` for no end.
    pub(crate) until_ms: Option<i64>,
    /// Identities already delivered.
    pub(crate) known: &'a HashSet<String>,
}

/// Where the contract's columns are in the result.
struct Columns {
    event_key: usize,
    contexts: Contexts,
    occurred_at: usize,
    metric_value: Option<usize>,
    event_id: Option<usize>,
    data: Option<usize>,
}

enum Contexts {
    One(usize),
    Many(usize),
}

fn columns(sync: &str, batch: &RowBatch) -> Result<Columns> {
    let contract = |message: String| Error::Contract { sync: sync.to_owned(), message };
    let found = || {
        if batch.columns.is_empty() {
            "it returned no columns".to_owned()
        } else {
            let names: Vec<_> = batch.columns.iter().map(|c| format!("`{c}`")).collect();
            format!("it returned {}", names.join(", "))
        }
    };
    let event_key = batch.column_index("event_key");
    let occurred_at = batch.column_index("occurred_at");
    let contexts = match (batch.column_index("context_key"), batch.column_index("context_keys")) {
        (Some(_), Some(_)) => {
            return Err(contract(
                "the query returns both `context_key` and `context_keys`: return `context_key` for the sync's context kind, or `context_keys` (a JSON object, kind → key), not both".to_owned(),
            ))
        }
        (Some(one), None) => Some(Contexts::One(one)),
        (None, Some(many)) => Some(Contexts::Many(many)),
        (None, None) => None,
    };
    let (Some(event_key), Some(contexts), Some(occurred_at)) = (event_key, contexts, occurred_at)
    else {
        let mut missing = Vec::new();
        if event_key.is_none() {
            missing.push("`event_key`");
        }
        if batch.column_index("context_key").is_none()
            && batch.column_index("context_keys").is_none()
        {
            missing.push("`context_key` (or `context_keys`)");
        }
        if occurred_at.is_none() {
            missing.push("`occurred_at`");
        }
        return Err(contract(format!(
            "the query must return `event_key`, `context_key` (or `context_keys`) and `occurred_at`, and is missing {}; {}",
            missing.join(", "),
            found()
        )));
    };
    Ok(Columns {
        event_key,
        contexts,
        occurred_at,
        metric_value: batch.column_index("metric_value"),
        event_id: batch.column_index("event_id"),
        data: batch.column_index("data"),
    })
}

/// A key column as text, or why the row is rejected.
fn key_text(value: &Value, column: &str) -> Result<String, String> {
    match value {
        Value::Text(text) if text.is_empty() => Err(format!("`{column}` is empty")),
        Value::Text(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        Value::Null => Err(format!("`{column}` is NULL")),
        other => Err(format!("`{column}` is a {}, expected text", other.type_name())),
    }
}

/// A JSON object column: JSON, or text holding JSON (DuckDB hands `JSON` over as text).
fn json_object(
    value: &Value,
    column: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let json = match value {
        Value::Null => return Ok(None),
        Value::Json(json) => json.clone(),
        Value::Text(text) => serde_json::from_str(text)
            .map_err(|err| format!("`{column}` is not valid JSON: {err}"))?,
        other => {
            return Err(format!("`{column}` is a {}, expected a JSON object", other.type_name()))
        }
    };
    match json {
        serde_json::Value::Object(map) => Ok(Some(map)),
        serde_json::Value::Null => Ok(None),
        other => Err(format!("`{column}` is {}, expected a JSON object", json_type(&other))),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn context_keys(
    value: &Value,
    kind: &ContextKind,
    contexts: &Contexts,
) -> Result<BTreeMap<String, String>, String> {
    match contexts {
        Contexts::One(_) => {
            Ok(BTreeMap::from([(kind.to_string(), key_text(value, "context_key")?)]))
        }
        Contexts::Many(_) => {
            let map = json_object(value, "context_keys")?
                .ok_or_else(|| "`context_keys` is NULL".to_owned())?;
            if map.is_empty() {
                return Err("`context_keys` is empty: expected at least one kind → key".to_owned());
            }
            let mut keys = BTreeMap::new();
            for (kind, key) in map {
                ContextKind::new(kind.as_str())
                    .map_err(|err| format!("`context_keys` has an {err}"))?;
                let key = match key {
                    serde_json::Value::String(text) if !text.is_empty() => text,
                    serde_json::Value::Number(number) if number.is_i64() || number.is_u64() => {
                        number.to_string()
                    }
                    other => {
                        return Err(format!(
                            "`context_keys` gives kind `{kind}` {}, expected a non-empty string",
                            if other.as_str() == Some("") {
                                "an empty key"
                            } else {
                                json_type(&other)
                            }
                        ))
                    }
                };
                keys.insert(kind, key);
            }
            Ok(keys)
        }
    }
}

/// How far past the clock an `occurred_at` may lie: a clock skew, not a typo in the year.
const FUTURE_TOLERANCE_MS: i64 = 24 * 3_600 * 1_000;

fn occurred_at(value: &Value) -> Result<i64, String> {
    match value {
        // An event from the future would move the cursor past every late row still to come.
        Value::TimestampMillis(ms) | Value::Int(ms)
            if *ms > chrono::Utc::now().timestamp_millis().saturating_add(FUTURE_TOLERANCE_MS) =>
        {
            Err(format!(
                "`occurred_at` {} is more than a day in the future",
                chrono::DateTime::from_timestamp_millis(*ms)
                    .map_or_else(|| format!("{ms} ms"), |at| at.to_rfc3339())
            ))
        }
        Value::TimestampMillis(ms) | Value::Int(ms) => Ok(*ms),
        Value::Null => Err("`occurred_at` is NULL".to_owned()),
        other => Err(format!(
            "`occurred_at` is a {}, expected a timestamp or epoch milliseconds",
            other.type_name()
        )),
    }
}

fn metric_value(value: &Value) -> Result<Option<f64>, String> {
    #[expect(clippy::cast_precision_loss, reason = "a metric value is a JSON number, an f64")]
    let number = match value {
        Value::Null => return Ok(None),
        Value::Int(number) => *number as f64,
        Value::Float(number) => *number,
        other => {
            return Err(format!("`metric_value` is a {}, expected a number", other.type_name()))
        }
    };
    if number.is_finite() {
        Ok(Some(number))
    } else {
        Err(format!("`metric_value` is {number}, expected a finite number"))
    }
}

/// One row → an event and its identity, or why it is rejected. `Ok(None)`: outside the range.
fn event_of(
    row: &[Value],
    layout: &Columns,
    reading: &Reading<'_>,
) -> Result<Option<StagedEvent>, (Option<String>, String)> {
    let at = occurred_at(&row[layout.occurred_at]).map_err(|reason| (None, reason))?;
    if at < reading.from_ms || reading.until_ms.is_some_and(|until| at >= until) {
        return Ok(None);
    }
    let event_id = match layout.event_id.map(|column| &row[column]) {
        None | Some(Value::Null) => None,
        Some(value) => Some(key_text(value, "event_id").map_err(|reason| (None, reason))?),
    };
    let key = match &row[layout.event_key] {
        Value::Text(text) if !text.is_empty() => text.clone(),
        Value::Text(_) => return Err((event_id, "`event_key` is empty".to_owned())),
        Value::Null => return Err((event_id, "`event_key` is NULL".to_owned())),
        other => {
            return Err((
                event_id,
                format!("`event_key` is a {}, expected text", other.type_name()),
            ))
        }
    };
    let shown = || event_id.clone().or_else(|| Some(key.clone()));
    let column = match layout.contexts {
        Contexts::One(column) | Contexts::Many(column) => column,
    };
    let context_keys = context_keys(&row[column], reading.context_kind, &layout.contexts)
        .map_err(|reason| (shown(), reason))?;
    let metric_value = match layout.metric_value {
        Some(column) => metric_value(&row[column]).map_err(|reason| (shown(), reason))?,
        None => None,
    };
    let data = match layout.data {
        // An empty object says nothing: it is the same event as no `data`.
        Some(column) => json_object(&row[column], "data")
            .map_err(|reason| (shown(), reason))?
            .filter(|map| !map.is_empty()),
        None => None,
    };
    let event =
        CustomEvent { key: key.clone(), creation_date: at, metric_value, context_keys, data };
    // `[` and `]` around one event: an event that alone is over the limit cannot be sent.
    if event.to_json().len() + 2 > MAX_EVENT_PAYLOAD_BYTES {
        return Err((
            shown(),
            "the event is larger than the 10 MB LaunchDarkly takes in one request (shrink `data`)"
                .to_owned(),
        ));
    }
    let identity = match &event_id {
        Some(id) => identity::from_event_id(&event.key, id),
        None => identity::from_content(&event),
    };
    Ok(Some(StagedEvent { identity, event }))
}

/// Runs the query with `$1` bound to the start of the range, and stages its rows.
pub(crate) async fn stage<S: Source>(source: &S, reading: &Reading<'_>) -> Result<Staged> {
    let mut staged = Staged::default();
    let mut seen = HashSet::new();
    let params = [Value::TimestampMillis(reading.from_ms)];
    let mut batches = source.fetch(reading.query, &params, DEFAULT_BATCH_ROWS);
    let mut layout = None;
    while let Some(batch) = batches.try_next().await.map_err(|source| {
        let retryable = ldsync_core::Classify::is_retryable(&source);
        Error::Source { sync: reading.sync.to_owned(), source: Box::new(source), retryable }
    })? {
        if layout.is_none() {
            layout = Some(columns(reading.sync, &batch)?);
        }
        let layout = layout.as_ref().expect("set from the first batch");
        for row in &batch.rows {
            staged.rows += 1;
            match event_of(row, layout, reading) {
                Ok(None) => staged.outside += 1,
                Ok(Some(event)) => {
                    if reading.known.contains(&event.identity)
                        || !seen.insert(event.identity.clone())
                    {
                        staged.duplicates += 1;
                    } else {
                        staged.events.push(event);
                    }
                }
                Err((key, reason)) => staged.reject(staged.rows, key, reason),
            }
        }
    }
    staged.events.sort_by(|a, b| {
        (a.event.creation_date, &a.identity).cmp(&(b.event.creation_date, &b.identity))
    });
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::Arc};

    use ldsync_core::{BatchStream, Classify, ErrorDomain};

    use super::*;

    /// Rows handed back as one batch, whatever the query.
    struct Rows(RowBatch);

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never(Infallible);

    impl Classify for Never {
        fn domain(&self) -> ErrorDomain {
            ErrorDomain::Internal
        }
        fn is_retryable(&self) -> bool {
            false
        }
    }

    impl Source for Rows {
        type Error = Never;

        async fn healthcheck(&self) -> Result<(), Never> {
            Ok(())
        }

        fn fetch<'a>(&'a self, _: &'a str, _: &'a [Value], _: usize) -> BatchStream<'a, Never> {
            Box::pin(futures_util::stream::iter([Ok(self.0.clone())]))
        }
    }

    fn batch(columns: &[&str], rows: Vec<Vec<Value>>) -> Rows {
        let columns: Arc<[String]> = columns.iter().map(|c| (*c).to_owned()).collect();
        Rows(RowBatch { columns, rows })
    }

    async fn staged(rows: &Rows, known: &HashSet<String>, until_ms: Option<i64>) -> Result<Staged> {
        let kind = ContextKind::user();
        let reading = Reading {
            sync: "checkouts",
            query: "select …",
            context_kind: &kind,
            from_ms: 1_000,
            until_ms,
            known,
        };
        stage(rows, &reading).await
    }

    fn text(value: &str) -> Value {
        Value::Text(value.to_owned())
    }

    #[tokio::test]
    async fn missing_columns_fail_the_run_naming_what_was_found() {
        let rows = batch(&["event_key", "user_id"], vec![]);
        let err = staged(&rows, &HashSet::new(), None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync `checkouts`: the query must return `event_key`, `context_key` (or `context_keys`) and `occurred_at`, and is missing `context_key` (or `context_keys`), `occurred_at`; it returned `event_key`, `user_id`"
        );
        let both = batch(&["event_key", "context_key", "context_keys", "occurred_at"], vec![]);
        assert!(staged(&both, &HashSet::new(), None).await.is_err());
    }

    #[tokio::test]
    async fn bad_rows_are_rejected_with_their_reason_and_the_rest_go_on() {
        let columns =
            ["event_id", "event_key", "context_key", "occurred_at", "metric_value", "data"];
        let good = || {
            vec![
                Value::Null,
                text("buy"),
                text("u-1"),
                Value::TimestampMillis(2_000),
                Value::Float(3.5),
                Value::Null,
            ]
        };
        let with = |index: usize, value: Value| {
            let mut row = good();
            row[index] = value;
            row
        };
        let rows = batch(
            &columns,
            vec![
                good(),
                with(1, text("")),
                with(1, Value::Null),
                with(2, Value::Null),
                with(3, Value::Null),
                with(3, text("yesterday")),
                with(4, text("12")),
                with(4, Value::Float(f64::NAN)),
                with(5, Value::Json(serde_json::json!([1]))),
                with(5, text("{not json")),
                with(0, text("")),
                with(3, Value::Int(5_000)), // epoch milliseconds are fine
                with(5, text(r#"{"plan": "pro"}"#)),
            ],
        );
        let staged = staged(&rows, &HashSet::new(), None).await.unwrap();
        let reasons: Vec<_> =
            staged.rejections.iter().map(|r| (r.row, r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (2, "`event_key` is empty"),
                (3, "`event_key` is NULL"),
                (4, "`context_key` is NULL"),
                (5, "`occurred_at` is NULL"),
                (6, "`occurred_at` is a text, expected a timestamp or epoch milliseconds"),
                (7, "`metric_value` is a text, expected a number"),
                (8, "`metric_value` is NaN, expected a finite number"),
                (9, "`data` is an array, expected a JSON object"),
                (10, "`data` is not valid JSON: key must be a string at line 1 column 2"),
                (11, "`event_id` is empty"),
            ]
        );
        assert_eq!(staged.rejections[0].key.as_deref(), None);
        assert_eq!(staged.rejections[2].key.as_deref(), Some("buy"));
        assert_eq!((staged.rows, staged.rejected, staged.events.len()), (13, 10, 3));
        let with_data = staged.events.iter().find_map(|e| e.event.data.as_ref()).unwrap();
        assert_eq!(with_data["plan"], "pro");
        assert_eq!(staged.latest_ms(), Some(5_000));
    }

    #[tokio::test]
    async fn several_context_kinds_come_as_a_json_object() {
        let rows = batch(
            &["event_key", "context_keys", "occurred_at"],
            vec![
                vec![
                    text("buy"),
                    Value::Json(serde_json::json!({"user": "u-1", "organization": 7})),
                    Value::Int(2_000),
                ],
                vec![text("buy"), text(r#"{"user": "u-2"}"#), Value::Int(2_000)],
                vec![text("buy"), Value::Json(serde_json::json!({})), Value::Int(2_000)],
                vec![
                    text("buy"),
                    Value::Json(serde_json::json!({"multi": "x"})),
                    Value::Int(2_000),
                ],
                vec![text("buy"), Value::Json(serde_json::json!({"user": ""})), Value::Int(2_000)],
            ],
        );
        let staged = staged(&rows, &HashSet::new(), None).await.unwrap();
        assert_eq!(staged.events.len(), 2);
        let keys = &staged
            .events
            .iter()
            .find(|e| e.event.context_keys.len() == 2)
            .unwrap()
            .event
            .context_keys;
        assert_eq!(keys["organization"], "7");
        assert_eq!(staged.rejected, 3);
        assert!(staged.rejections[1].reason.contains("reserved"), "{:?}", staged.rejections);
        assert!(staged.rejections[2].reason.contains("empty key"), "{:?}", staged.rejections);
    }

    #[tokio::test]
    async fn known_and_repeated_rows_are_skipped_and_the_range_is_kept() {
        let columns = ["event_id", "event_key", "context_key", "occurred_at"];
        let row =
            |id: Value, at: i64| vec![id, text("buy"), text("u-1"), Value::TimestampMillis(at)];
        let rows = batch(
            &columns,
            vec![
                row(text("o-1"), 2_000),
                row(text("o-2"), 2_000),
                row(text("o-2"), 2_000), // the same order twice in the result
                row(Value::Null, 3_000),
                row(Value::Null, 3_000), // the same content twice, no id
                row(text("o-3"), 500),   // before `$1`: the query read too much
                row(text("o-4"), 9_000), // at the end of the range
            ],
        );
        let known = HashSet::from([identity::from_event_id("buy", "o-1")]);
        let staged = staged(&rows, &known, Some(9_000)).await.unwrap();
        let ids: Vec<_> = staged.events.iter().map(|e| e.identity.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], "id:3:buy:o-2");
        assert!(ids[1].starts_with("h:"));
        assert_eq!((staged.duplicates, staged.outside, staged.rejected), (3, 2, 0));
    }
}
