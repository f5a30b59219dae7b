//! Domain types and traits of ldsync, shared by every other crate; no IO.
//!
//! ldsync moves the result of a warehouse query into LaunchDarkly. The pipeline of one sync is
//! query → stage → diff → journal → deliver → commit (see `docs/ARCHITECTURE.md`). This crate
//! holds the words that pipeline is written in: validated identifiers ([`SegmentKey`],
//! [`ContextKey`], [`SyncName`] …), the [`Secret`] wrapper, the [`ChangeSet`] a diff produces,
//! the rows a [`Source`] yields, and the error classification every layer shares.
//!
//! ```
//! use ldsync_core::{ChangeSet, ContextKey, SegmentKey};
//!
//! let segment: SegmentKey = "beta-testers".parse()?;
//! let mut changes = ChangeSet::new(segment);
//! changes.add(ContextKey::new("user-1")?);
//! changes.remove(ContextKey::new("user-9")?);
//! assert_eq!(changes.len(), 2);
//! # Ok::<(), ldsync_core::KeyError>(())
//! ```

mod cells;
mod change;
mod error;
mod key;
mod row;
mod secret;
mod source;
mod text;

pub use cells::{Cell, CellBatch, NotUtf8, RawCells, Row as CellRow};
pub use change::{ChangeSet, SegmentChange};
pub use error::{error_chain, Classify, ErrorDomain, KeyError};
pub use key::{
    ContextKey, ContextKind, EnvironmentName, MetricKey, ProjectKey, SegmentKey, SyncName,
    WarehouseName,
};
pub use row::{RowBatch, Value};
pub use secret::Secret;
pub use source::{BatchStream, CellStream, Source, TextStream, DEFAULT_BATCH_ROWS};
pub use text::{TextBatch, TextCell};
