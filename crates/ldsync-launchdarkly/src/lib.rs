//! The rate-limited LaunchDarkly client of ldsync: the deliver step of the pipeline.
//!
//! One [`LaunchDarklyClient`] serves every sync of a process. Every attempt, retries included,
//! first waits on the [`Limiter`] (one governor limiter per route and one for the account,
//! paced by LaunchDarkly's `X-Ratelimit-*` headers); every answer goes through the pure
//! [`retry::retry_action`], which decides between done, retry after a delay, and fail.
//!
//! ```no_run
//! use ldsync_core::Secret;
//! use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient};
//!
//! # async fn check() -> Result<(), ldsync_launchdarkly::Error> {
//! let client = LaunchDarklyClient::new(ClientOptions::new(
//!     "https://app.launchdarkly.com",
//!     "https://events.launchdarkly.com",
//!     Secret::new(std::env::var("LD_ACCESS_TOKEN").unwrap_or_default()),
//! ))?;
//! let environment = client.get_environment("default", "production").await?;
//! println!("client-side ID {}", environment.id);
//! # Ok(()) }
//! ```

mod client;
mod error;
mod events;
mod limiter;
mod metrics;
mod model;
pub mod retry;
mod segments;

pub use client::{
    ClientOptions, LaunchDarklyClient, RequestObserver, Route, API_VERSION, USER_AGENT,
};
pub use error::{Error, Result};
pub use events::{
    event_payloads, gzip, CustomEvent, EventPayload, EVENTS_USER_AGENT, EVENT_SCHEMA,
    MAX_EVENT_PAYLOAD_BYTES,
};
pub use limiter::{Limiter, LimiterOptions, RateLimitHeaders};
pub use metrics::{MetricPost, MetricRep, PatchOp, METRICS_PAGE_LIMIT};
pub use model::EnvironmentRep;
pub use retry::{RetryAction, RetryPolicy};
pub use segments::{
    is_import_conflict, ImportMode, ImportRep, MemberChange, NewBigSegment, SegmentRep,
    MAX_IMPORT_BYTES, MAX_IMPORT_KEYS,
};
