//! The trait every warehouse implements.

use std::{future::Future, pin::Pin};

use futures_core::Stream;

use crate::{CellBatch, Classify, RowBatch, TextBatch, Value};

/// How many rows a source puts in one batch unless told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// The batches of one query, streamed as the warehouse produces them.
pub type BatchStream<'a, E> = Pin<Box<dyn Stream<Item = Result<RowBatch, E>> + Send + 'a>>;

/// The batches of one query reduced to a few text columns (see [`Source::fetch_text`]).
pub type TextStream<'a, E> = Pin<Box<dyn Stream<Item = Result<TextBatch, E>> + Send + 'a>>;

/// The batches of one query as typed cells (see [`Source::fetch_cells`]).
pub type CellStream<'a, E> = Pin<Box<dyn Stream<Item = Result<CellBatch, E>> + Send + 'a>>;

/// A SQL warehouse that ldsync reads from.
///
/// Implementations stream: a query's result is never held whole in memory. Query parameters are
/// bound, never spliced into the SQL text.
pub trait Source: Send + Sync {
    /// The error of this source.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// One cheap call that proves the warehouse answers (`select 1`).
    fn healthcheck(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs `sql` with `params` bound to `$1`, `$2` … and streams the result in batches of at
    /// most `batch_rows` rows.
    fn fetch<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> BatchStream<'a, Self::Error>;

    /// Runs `sql` and streams only the columns named in `wanted`, as text: the path of
    /// segment syncs, which read one or two key columns of millions of rows.
    ///
    /// The first batch tells which of the `wanted` columns the query returns
    /// ([`TextBatch::present`]); a source yields at least that batch, empty, when the query
    /// returns no rows and it knows the columns. The default reduces [`Source::fetch`]'s
    /// batches; a source that can produce text cheaper overrides it.
    fn fetch_text<'a>(
        &'a self,
        sql: &'a str,
        wanted: &'a [&'a str],
        batch_rows: usize,
    ) -> TextStream<'a, Self::Error> {
        Box::pin(ReduceToText { rows: self.fetch(sql, &[], batch_rows), wanted })
    }

    /// [`Source::fetch`], each batch as typed cells in one buffer: the path of metric-events
    /// syncs, which read every column of millions of rows. The default converts
    /// [`Source::fetch`]'s batches; a source that can decode into cells directly overrides it.
    fn fetch_cells<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> CellStream<'a, Self::Error> {
        Box::pin(ToCells { rows: self.fetch(sql, params, batch_rows) })
    }
}

/// [`Source::fetch_cells`]'s default: each batch of values converted.
struct ToCells<'a, E> {
    rows: BatchStream<'a, E>,
}

impl<E> Stream for ToCells<'_, E> {
    type Item = Result<CellBatch, E>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rows
            .as_mut()
            .poll_next(cx)
            .map(|next| next.map(|batch| batch.map(|rows| CellBatch::from_rows(&rows))))
    }
}

/// [`Source::fetch_text`]'s default: each batch of values reduced to the wanted columns.
struct ReduceToText<'a, E> {
    rows: BatchStream<'a, E>,
    wanted: &'a [&'a str],
}

impl<E> Stream for ReduceToText<'_, E> {
    type Item = Result<TextBatch, E>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let wanted = self.wanted;
        self.rows
            .as_mut()
            .poll_next(cx)
            .map(|next| next.map(|batch| batch.map(|rows| TextBatch::from_rows(&rows, wanted))))
    }
}
