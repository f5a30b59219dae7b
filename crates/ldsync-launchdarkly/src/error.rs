//! Errors of the LaunchDarkly client.

use std::time::Duration;

use ldsync_core::{Classify, ErrorDomain};

/// The longest excerpt of a response body kept in an error.
pub(crate) const BODY_EXCERPT_CHARS: usize = 500;

/// Why a LaunchDarkly request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// LaunchDarkly answered with a status that retrying cannot fix.
    #[error("LaunchDarkly answered {status} to {route}: {body}")]
    Status {
        /// The route, such as `GET /api/v2/projects/{project}/environments/{environment}`.
        route: String,
        /// The HTTP status.
        status: u16,
        /// An excerpt of the response body.
        body: String,
    },
    /// The request kept failing with retryable errors until the retry budget ran out.
    #[error("{route} failed after {attempts} attempts in {}s: {last}", elapsed.as_secs())]
    Exhausted {
        /// The route.
        route: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long the attempts took in all.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// The request could not be sent or its answer not read (connection, timeout, TLS).
    #[error("cannot reach LaunchDarkly at {route}")]
    Transport {
        /// The route.
        route: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// LaunchDarkly's answer is not the JSON the API documents.
    #[error("unexpected answer from LaunchDarkly to {route}: {message}")]
    Decode {
        /// The route.
        route: String,
        /// What did not match.
        message: String,
    },
    /// The client could not be built (an invalid base URL or TLS setup).
    #[error("cannot set up the LaunchDarkly client: {0}")]
    Setup(String),
    /// A LaunchDarkly object exists, but in a shape ldsync cannot write to.
    #[error("cannot sync into {what}: {reason}")]
    Incompatible {
        /// The object, such as ``segment `beta` ``.
        what: String,
        /// Why.
        reason: String,
    },
    /// The environment answered, but is not the one the configuration describes.
    #[error("environment `{environment}` of project `{project}` has client-side ID `{actual}`, but the configuration says `{expected}`")]
    ClientSideIdMismatch {
        /// The project key.
        project: String,
        /// The environment key.
        environment: String,
        /// The `client_side_id` configured.
        expected: String,
        /// The `_id` LaunchDarkly returned.
        actual: String,
    },
}

impl Error {
    /// The HTTP status, when LaunchDarkly answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Classify for Error {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Status { status: 400 | 422, .. } | Self::Decode { .. } => ErrorDomain::Internal,
            Self::Status { status, .. } if *status < 500 => ErrorDomain::Config,
            Self::Setup(_) | Self::ClientSideIdMismatch { .. } | Self::Incompatible { .. } => {
                ErrorDomain::Config
            }
            Self::Status { .. } | Self::Exhausted { .. } | Self::Transport { .. } => {
                ErrorDomain::External
            }
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || (*status >= 500 && *status != 501),
            Self::Exhausted { .. } | Self::Transport { .. } => true,
            Self::Decode { .. }
            | Self::Setup(_)
            | Self::ClientSideIdMismatch { .. }
            | Self::Incompatible { .. } => false,
        }
    }
}

/// The result of a LaunchDarkly call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first characters of a body, on one line.
pub(crate) fn excerpt(body: &str) -> String {
    let one_line = body.trim().replace(['\n', '\r'], " ");
    if one_line.chars().count() <= BODY_EXCERPT_CHARS {
        one_line
    } else {
        format!("{}…", one_line.chars().take(BODY_EXCERPT_CHARS).collect::<String>())
    }
}
