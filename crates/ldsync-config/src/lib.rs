//! Sync declarations: `ldsync.toml` and `syncs/*.toml`, parsed and validated into a [`Project`].
//!
//! This is the first step of every command: nothing reaches a warehouse or LaunchDarkly until
//! the files have been read in two phases.
//!
//! 1. **Parse.** Each file is read as TOML, `${VAR}` placeholders in strings are expanded from
//!    the environment ([`expand`]), and the result is deserialised into the `raw` types, which
//!    reject unknown keys and check every value with rules (keys, context kinds, durations,
//!    cron expressions, ratios) through newtypes.
//! 2. **Validate.** Rules that span fields or files run on the parsed set: referenced warehouses
//!    and environments exist, one sync writes a segment, a `[metric_events]` query binds `$1`.
//!
//! Every problem found is reported at once, as a [`Diagnostic`] that prints
//! `path:line:column: what was expected`.
//!
//! ```no_run
//! let project = ldsync_config::load(std::path::Path::new("ldsync.toml"))?;
//! for sync in project.syncs.values() {
//!     println!("{} writes to {}", sync.name, sync.environment);
//! }
//! # Ok::<(), ldsync_config::Error>(())
//! ```

mod defaults;
mod diagnostic;
mod error;
pub mod expand;
mod load;
mod raw;
mod spec;
mod validate;
mod value;

pub use defaults::*;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use error::{Error, Result};
pub use load::{load, load_from_texts, load_with};
pub use spec::{
    EnvironmentSpec, LimitsSpec, MetricEventsSpec, MetricsSpec, Project, SegmentSpec, StateSpec,
    SyncObject, SyncSpec, WarehouseSpec,
};
pub use value::{HumanDuration, Query, Ratio, Schedule};
