//! The trait every warehouse implements.

use std::{future::Future, pin::Pin};

use futures_core::Stream;

use crate::{Classify, RowBatch, Value};

/// How many rows a source puts in one batch unless told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// The batches of one query, streamed as the warehouse produces them.
pub type BatchStream<'a, E> = Pin<Box<dyn Stream<Item = Result<RowBatch, E>> + Send + 'a>>;

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
}
