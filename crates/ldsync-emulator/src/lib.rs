//! A local LaunchDarkly: the REST API for segments, big-segment targets and imports, metrics,
//! environments, and the events host's metric import, with rate limits and faults on demand.
//!
//! It is the test oracle of `ldsync-launchdarkly` and the engine, and a user feature
//! (`ldsync emulator`). Tests start one on an ephemeral port; dropping it stops it.
//!
//! ```no_run
//! # async fn demo() -> ldsync_emulator::Result<()> {
//! use ldsync_emulator::{Emulator, EmulatorConfig};
//!
//! let emulator = Emulator::start(EmulatorConfig::default()).await?;
//! // Point the client at `emulator.api_url()` with `emulator.token()` …
//! let state = emulator.snapshot();
//! assert!(state.environment("default", "production").is_some());
//! emulator.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! What is emulated, the flag syntax and the `/_emulator/` API are in `docs/emulator.md`.

mod api_error;
mod config;
mod environments;
mod error;
mod event_check;
mod events;
mod faults;
mod imports;
mod introspection;
mod json_patch;
mod limits;
mod metrics;
mod request;
mod route;
mod segments;
mod server;
mod snapshot;
mod state;

pub use config::{
    EmulatorConfig, ProjectSpec, TokenSpec, DEFAULT_ENVIRONMENTS, DEFAULT_IMPORT_DELAY,
    DEFAULT_PROJECT, DEFAULT_TOKEN,
};
pub use error::{Error, Result};
pub use events::MAX_EVENT_BODY_BYTES;
pub use faults::{FaultKind, FaultSpec, DEFAULT_TRICKLE_DELAY};
pub use imports::{MAX_IMPORT_FILE_BYTES, MAX_IMPORT_KEYS};
pub use limits::{RateLimitSpec, DEFAULT_WINDOW};
pub use route::RoutePattern;
pub use server::{app, serve_until, Emulator, LoggedRequest, REQUEST_LOG_BODY, REQUEST_LOG_LEN};
pub use snapshot::{
    EnvironmentSnapshot, EventPayload, ImportSnapshot, ProjectSnapshot, SegmentSnapshot, Snapshot,
    Stats,
};
