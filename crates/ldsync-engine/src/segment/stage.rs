//! The stage step of a segment sync: rows → one key set per segment, and rejections.

use std::{borrow::Cow, collections::BTreeMap};

use futures_util::TryStreamExt;
use ldsync_core::{RowBatch, SegmentKey, Source, Value, DEFAULT_BATCH_ROWS};
use ldsync_diff::KeySetBuilder;
use ldsync_state::Rejection;

use crate::{Error, Result};

/// The most rejections kept with their reasons; the rest are counted.
pub(crate) const KEPT_REJECTIONS: usize = 1_000;

/// The query result, staged.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Keys per segment (builders: not yet ordered).
    pub(crate) segments: BTreeMap<String, KeySetBuilder>,
    /// Rows read.
    pub(crate) rows: u64,
    /// Rows rejected, in all.
    pub(crate) rejected: u64,
    /// The first rejections, with reasons.
    pub(crate) rejections: Vec<Rejection>,
}

/// Where the contract's columns are in the result.
struct Columns {
    context_key: usize,
    segment_key: Option<usize>,
}

fn columns(sync: &str, batch: &RowBatch, fixed_segment: bool) -> Result<Columns> {
    let found = || {
        if batch.columns.is_empty() {
            "it returned no columns".to_owned()
        } else {
            let names: Vec<_> = batch.columns.iter().map(|c| format!("`{c}`")).collect();
            format!("it returned {}", names.join(", "))
        }
    };
    let contract = |message: String| Error::Contract { sync: sync.to_owned(), message };
    let context_key = batch.column_index("context_key").ok_or_else(|| {
        contract(format!(
            "the query must return a `context_key` column (for example `select user_id as context_key …`); {}",
            found()
        ))
    })?;
    let segment_key = batch.column_index("segment_key");
    match (fixed_segment, segment_key) {
        (true, Some(_)) => Err(contract(
            "the query returns `segment_key`, but the sync names its segment with `key`: drop one of them"
                .to_owned(),
        )),
        (false, None) => Err(contract(format!(
            "the sync has no `key`, so the query must return a `segment_key` column naming each row's segment; {}",
            found()
        ))),
        _ => Ok(Columns { context_key, segment_key }),
    }
}

/// The text of a key column (borrowed when it is text), or why the row is rejected.
fn key_text<'v>(value: &'v Value, column: &str) -> Result<Cow<'v, str>, String> {
    match value {
        Value::Text(text) if text.is_empty() => Err(format!("`{column}` is empty")),
        Value::Text(text) => Ok(Cow::Borrowed(text)),
        Value::Int(number) => Ok(Cow::Owned(number.to_string())),
        Value::Null => Err(format!("`{column}` is NULL")),
        other => Err(format!("`{column}` is a {}, expected text", other.type_name())),
    }
}

impl Staged {
    fn reject(&mut self, row: u64, key: Option<String>, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < KEPT_REJECTIONS {
            self.rejections.push(Rejection { row, key, reason });
        }
    }
}

/// Runs the query and stages its rows.
pub(crate) async fn stage<S: Source>(
    sync: &str,
    source: &S,
    query: &str,
    fixed_segment: Option<&SegmentKey>,
    progress: &dyn crate::Progress,
) -> Result<Staged> {
    let mut staged = Staged::default();
    if let Some(key) = fixed_segment {
        staged.segments.insert(key.to_string(), KeySetBuilder::new());
    }
    let mut batches = source.fetch(query, &[], DEFAULT_BATCH_ROWS);
    let mut layout = None;
    while let Some(batch) = batches.try_next().await.map_err(|source| {
        let retryable = ldsync_core::Classify::is_retryable(&source);
        Error::Source { sync: sync.to_owned(), source: Box::new(source), retryable }
    })? {
        if layout.is_none() {
            layout = Some(columns(sync, &batch, fixed_segment.is_some())?);
        }
        let layout = layout.as_ref().expect("set from the first batch");
        progress.rows_read(staged.rows + batch.rows.len() as u64);
        for row in &batch.rows {
            staged.rows += 1;
            let position = staged.rows;
            let key = match key_text(&row[layout.context_key], "context_key") {
                Ok(key) => key,
                Err(reason) => {
                    staged.reject(position, None, reason);
                    continue;
                }
            };
            let segment: Cow<'_, str> = match (fixed_segment, layout.segment_key) {
                (Some(fixed), _) => Cow::Borrowed(fixed.as_str()),
                (None, Some(column)) => {
                    match key_text(&row[column], "segment_key").and_then(|text| {
                        SegmentKey::new(text.into_owned()).map_err(|err| err.to_string())
                    }) {
                        Ok(segment) => Cow::Owned(segment.to_string()),
                        Err(reason) => {
                            staged.reject(position, Some(key.into_owned()), reason);
                            continue;
                        }
                    }
                }
                (None, None) => unreachable!("`columns` requires segment_key without a fixed key"),
            };
            // The common case, a segment already seen, costs no allocation.
            if let Some(builder) = staged.segments.get_mut(segment.as_ref()) {
                builder.push(key.as_bytes());
            } else {
                staged.segments.entry(segment.into_owned()).or_default().push(key.as_bytes());
            }
        }
    }
    Ok(staged)
}
