//! Errors of the domain types, and the classification every layer's errors share.

use std::fmt;

/// An identifier that breaks its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The value is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What kind of identifier was expected.
        what: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{what} `{value}` is longer than {max} characters")]
    TooLong {
        /// What kind of identifier was expected.
        what: &'static str,
        /// The offending value, shortened for display.
        value: String,
        /// The longest value allowed.
        max: usize,
    },
    /// The value holds a character or a shape the identifier does not allow.
    #[error("invalid {what} `{value}`: {rule}")]
    Invalid {
        /// What kind of identifier was expected.
        what: &'static str,
        /// The offending value, shortened for display.
        value: String,
        /// The rule, phrased as what is expected.
        rule: &'static str,
    },
}

/// Whose fix an error is: tells an operator where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDomain {
    /// The user's configuration or query is wrong; a retry cannot help.
    Config,
    /// A system outside ldsync (the warehouse, LaunchDarkly, the network) failed.
    External,
    /// ldsync broke one of its own invariants: a bug to report.
    Internal,
}

impl fmt::Display for ErrorDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "configuration",
            Self::External => "external system",
            Self::Internal => "internal",
        })
    }
}

/// What every source and destination error says about itself.
pub trait Classify {
    /// Whose fix the error is.
    fn domain(&self) -> ErrorDomain;
    /// Whether trying the same operation again could succeed.
    fn is_retryable(&self) -> bool;
}

/// An error and its causes on one line, as `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
