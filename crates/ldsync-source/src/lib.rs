//! SQL sources of ldsync: the query step of the pipeline.
//!
//! Two implementations of [`ldsync_core::Source`]: [`PostgresSource`] for PostgreSQL and every
//! engine that speaks its wire protocol (through tokio-postgres, results streamed), and
//! [`DuckDbSource`] for an embedded DuckDB file (blocking work kept off the async threads).
//! Both stream a query's result in [`ldsync_core::RowBatch`]es and bind parameters, never splice
//! them into the SQL.
//!
//! ```no_run
//! use futures_util::TryStreamExt;
//! use ldsync_core::Source;
//! use ldsync_source::DuckDbSource;
//!
//! # async fn example() -> Result<(), ldsync_source::Error> {
//! let source = DuckDbSource::in_memory();
//! let mut batches = source.fetch("select 'user-1' as context_key", &[], 1024);
//! while let Some(batch) = batches.try_next().await? {
//!     println!("{} rows", batch.len());
//! }
//! # Ok(()) }
//! ```

mod duckdb;
mod error;
mod postgres;
mod postgres_text;
mod postgres_wire;

pub use crate::duckdb::DuckDbSource;
pub use error::{Error, Result};
pub use postgres::PostgresSource;
