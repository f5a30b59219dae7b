//! Errors of a run.

use ldsync_core::{Classify, ErrorDomain};

/// Why a run failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The warehouse query failed.
    #[error("sync `{sync}`: the query failed")]
    Source {
        /// The sync.
        sync: String,
        /// The source's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether running again could help.
        retryable: bool,
    },
    /// The query's result does not follow the object's column contract.
    #[error("sync `{sync}`: {message}")]
    Contract {
        /// The sync.
        sync: String,
        /// What is wrong, naming the columns.
        message: String,
    },
    /// A guardrail stopped the run before anything was sent.
    #[error("sync `{sync}`: {message}")]
    Guardrail {
        /// The sync.
        sync: String,
        /// Which guardrail, and how to get past it.
        message: String,
    },
    /// LaunchDarkly refused or failed a request.
    #[error("sync `{sync}`, segment `{segment}`")]
    LaunchDarkly {
        /// The sync.
        sync: String,
        /// The segment.
        segment: String,
        /// The client's error.
        #[source]
        source: Box<ldsync_launchdarkly::Error>,
    },
    /// LaunchDarkly refused or failed a request about metric definitions.
    #[error("sync `{sync}`: {what}")]
    Metrics {
        /// The sync.
        sync: String,
        /// The request's object, such as ``metric `revenue` ``.
        what: String,
        /// The client's error.
        #[source]
        source: Box<ldsync_launchdarkly::Error>,
    },
    /// LaunchDarkly refused or failed a metric-event import.
    #[error("sync `{sync}`: metric-event batch `{batch}` (payload `{payload_id}`)")]
    Events {
        /// The sync.
        sync: String,
        /// The batch's id in the journal.
        batch: String,
        /// The batch's `X-LaunchDarkly-Payload-ID`.
        payload_id: String,
        /// The client's error.
        #[source]
        source: Box<ldsync_launchdarkly::Error>,
    },
    /// The state store failed.
    #[error("sync `{sync}`: the state store failed")]
    State {
        /// The sync.
        sync: String,
        /// The store's error.
        #[source]
        source: ldsync_state::Error,
    },
    /// A snapshot could not be read or written.
    #[error("sync `{sync}`: a snapshot failed")]
    Snapshot {
        /// The sync.
        sync: String,
        /// The snapshot's error.
        #[source]
        source: ldsync_diff::SnapshotError,
    },
    /// A task of ldsync's own failed.
    #[error("sync `{sync}`: internal error: {message}")]
    Internal {
        /// The sync.
        sync: String,
        /// What failed.
        message: String,
    },
}

impl Classify for Error {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Source { retryable: true, .. } | Self::State { .. } => ErrorDomain::External,
            Self::Source { .. } | Self::Contract { .. } | Self::Guardrail { .. } => {
                ErrorDomain::Config
            }
            Self::LaunchDarkly { source, .. }
            | Self::Metrics { source, .. }
            | Self::Events { source, .. } => source.domain(),
            Self::Snapshot { .. } | Self::Internal { .. } => ErrorDomain::Internal,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Source { retryable, .. } => *retryable,
            Self::LaunchDarkly { source, .. }
            | Self::Metrics { source, .. }
            | Self::Events { source, .. } => source.is_retryable(),
            Self::State { source, .. } => source.is_retryable(),
            Self::Contract { .. }
            | Self::Guardrail { .. }
            | Self::Snapshot { .. }
            | Self::Internal { .. } => false,
        }
    }
}

/// The result of a run.
pub type Result<T, E = Error> = std::result::Result<T, E>;
