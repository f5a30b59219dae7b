//! The ldsync engine: runs one sync through the pipeline, top to bottom.
//!
//! query → stage → diff → journal → deliver → commit. The engine is generic over the core
//! traits; the binary picks the concrete sources and clients. Each run has a [`RunId`] and
//! ends in a [`RunOutcome`]; its progress is a sequence of [`Step`]s.
//!
//! ```
//! use ldsync_engine::{RunId, Step};
//!
//! let run = RunId::new();
//! assert!(run.to_string().len() > 16);
//! assert_eq!(Step::ALL.first(), Some(&Step::Query));
//! assert_eq!(Step::Commit.to_string(), "commit");
//! ```

mod error;
pub mod events;
pub mod metrics;
mod progress;
mod run;
pub mod scheduler;
pub mod segment;
pub mod telemetry;

pub use error::{Error, Result};
pub use progress::{Progress, Silent};
pub use run::{RunId, RunOutcome, Step};

pub use ldsync_core::error_chain as chain;
