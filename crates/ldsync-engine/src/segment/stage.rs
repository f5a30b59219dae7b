//! The stage step of a segment sync: rows → each segment's diff against its committed
//! membership, probed key by key as the rows arrive, and rejections.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use ldsync_core::{SegmentKey, Source, TextBatch, TextCell, DEFAULT_BATCH_ROWS};
use ldsync_diff::{Committed, Probe, Spill};
use ldsync_state::Rejection;

use crate::{Error, Result};

/// The most rejections kept with their reasons; the rest are counted.
pub(crate) const KEPT_REJECTIONS: usize = 1_000;

/// The query result, staged.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Per segment: the diff of its keys against its committed membership, under way.
    pub(crate) segments: BTreeMap<String, Probe>,
    /// Rows read.
    pub(crate) rows: u64,
    /// Rows rejected, in all.
    pub(crate) rejected: u64,
    /// The first rejections, with reasons.
    pub(crate) rejections: Vec<Rejection>,
}

/// Whether the query's columns meet the contract; the columns to read.
fn check_columns(sync: &str, batch: &TextBatch, fixed_segment: bool) -> Result<()> {
    let found = || {
        if batch.columns.is_empty() {
            "it returned no columns".to_owned()
        } else {
            let names: Vec<_> = batch.columns.iter().map(|c| format!("`{c}`")).collect();
            format!("it returned {}", names.join(", "))
        }
    };
    let contract = |message: String| Error::Contract { sync: sync.to_owned(), message };
    if !batch.present[0] {
        return Err(contract(format!(
            "the query must return a `context_key` column (for example `select user_id as context_key …`); {}",
            found()
        )));
    }
    let has_segment_key = batch.columns.iter().any(|c| c == "segment_key");
    match (fixed_segment, has_segment_key) {
        (true, true) => Err(contract(
            "the query returns `segment_key`, but the sync names its segment with `key`: drop one of them"
                .to_owned(),
        )),
        (false, false) => Err(contract(format!(
            "the sync has no `key`, so the query must return a `segment_key` column naming each row's segment; {}",
            found()
        ))),
        _ => Ok(()),
    }
}

/// The text of a key cell, or why the row is rejected.
fn key_text<'c>(cell: TextCell<'c>, column: &str) -> Result<&'c str, String> {
    match cell {
        TextCell::Text([]) => Err(format!("`{column}` is empty")),
        TextCell::Text(bytes) => {
            std::str::from_utf8(bytes).map_err(|_| format!("`{column}` is not valid UTF-8"))
        }
        TextCell::Null => Err(format!("`{column}` is NULL")),
        TextCell::Other(type_name) => Err(format!("`{column}` is a {type_name}, expected text")),
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

/// Runs the query and diffs its keys, segment by segment, against what `committed` loads
/// (a segment's membership, read the first time the segment appears). A sync with one segment
/// passes its membership as `fixed_segment`, still loading: the query starts meanwhile.
pub(crate) async fn stage<S: Source>(
    sync: &str,
    source: &S,
    query: &str,
    fixed_segment: Option<(&SegmentKey, impl std::future::Future<Output = Result<Committed>>)>,
    committed: &(dyn Fn(&str) -> Result<Committed> + Sync),
    spill: &(dyn Fn(usize) -> Spill + Sync),
    progress: &dyn crate::Progress,
) -> Result<Staged> {
    // A segment's probe, spilling its new members to a folder of its own.
    let probe = |members: Committed, segments: usize| {
        let mut probe = members.into_probe();
        probe.spill_to(spill(segments));
        probe
    };
    let mut staged = Staged::default();
    let wanted: &[&str] =
        if fixed_segment.is_some() { &["context_key"] } else { &["context_key", "segment_key"] };
    let mut batches = source.fetch_text(query, wanted, DEFAULT_BATCH_ROWS);
    let fixed = match fixed_segment {
        Some((key, members)) => {
            staged.segments.insert(key.to_string(), probe(members.await?, 0));
            Some(key.as_str())
        }
        None => None,
    };
    let mut checked = false;
    // The segment of the previous row: rows of one segment tend to come together.
    let mut last: Option<String> = None;
    while let Some(batch) = batches.try_next().await.map_err(|source| {
        let retryable = ldsync_core::Classify::is_retryable(&source);
        Error::Source { sync: sync.to_owned(), source: Box::new(source), retryable }
    })? {
        if !checked {
            check_columns(sync, &batch, fixed.is_some())?;
            checked = true;
        }
        progress.rows_read(staged.rows + batch.rows() as u64);
        if let Some(fixed) = fixed {
            let mut keys = Vec::with_capacity(batch.rows());
            for row in 0..batch.rows() {
                staged.rows += 1;
                match key_text(batch.cell(row, 0), "context_key") {
                    Ok(key) => keys.push(key.as_bytes()),
                    Err(reason) => staged.reject(staged.rows, None, reason),
                }
            }
            staged.segments.get_mut(fixed).expect("inserted above").offer_many(keys);
            continue;
        }
        for row in 0..batch.rows() {
            staged.rows += 1;
            let position = staged.rows;
            let key = match key_text(batch.cell(row, 0), "context_key") {
                Ok(key) => key,
                Err(reason) => {
                    staged.reject(position, None, reason);
                    continue;
                }
            };
            let segment = match key_text(batch.cell(row, 1), "segment_key") {
                Ok(segment) => segment,
                Err(reason) => {
                    staged.reject(position, Some(key.to_owned()), reason);
                    continue;
                }
            };
            if last.as_deref() != Some(segment) {
                if !staged.segments.contains_key(segment) {
                    if let Err(error) = SegmentKey::new(segment.to_owned()) {
                        staged.reject(position, Some(key.to_owned()), error.to_string());
                        continue;
                    }
                    let members = committed(segment)?;
                    let number = staged.segments.len();
                    staged.segments.insert(segment.to_owned(), probe(members, number));
                }
                last = Some(segment.to_owned());
            }
            staged
                .segments
                .get_mut(last.as_deref().expect("set above"))
                .expect("inserted above")
                .offer(key.as_bytes());
        }
    }
    Ok(staged)
}
