//! Errors of the sources.

use ldsync_core::{Classify, ErrorDomain};

/// Why a warehouse query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The warehouse could not be reached or the session was lost.
    #[error("cannot reach the {engine} warehouse: {message}")]
    Connect {
        /// `postgres` or `duckdb`.
        engine: &'static str,
        /// What went wrong, without the connection string.
        message: String,
    },
    /// The warehouse rejected or aborted the query.
    #[error("{engine} query failed{}: {message}{}", sqlstate.as_ref().map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default(), position.map(|p| format!(" at character {p} of the query")).unwrap_or_default())]
    Query {
        /// `postgres` or `duckdb`.
        engine: &'static str,
        /// The SQLSTATE code, when the warehouse gave one.
        sqlstate: Option<String>,
        /// The warehouse's message.
        message: String,
        /// The 1-based character position in the query the warehouse pointed at.
        position: Option<u32>,
        /// Whether running the query again could succeed (a lost connection, a timeout…).
        retryable: bool,
    },
    /// A column holds a type ldsync cannot read.
    #[error("column `{column}` has type `{type_name}`, which ldsync cannot read: cast it in the query (for example `{column}::text`)")]
    UnsupportedType {
        /// The column.
        column: String,
        /// The warehouse's name for the type.
        type_name: String,
    },
    /// A parameter could not be bound to the type the query expects.
    #[error("cannot bind parameter ${index} of type `{value_type}` where the query expects `{expected}`")]
    Parameter {
        /// 1-based parameter index.
        index: usize,
        /// The type of the value ldsync had.
        value_type: &'static str,
        /// The type the query expects.
        expected: String,
    },
    /// A task of ldsync's own failed.
    #[error("internal error while reading from {engine}: {message}")]
    Internal {
        /// `postgres` or `duckdb`.
        engine: &'static str,
        /// What failed.
        message: String,
    },
}

impl Classify for Error {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Connect { .. } | Self::Query { retryable: true, .. } => ErrorDomain::External,
            Self::Query { .. } | Self::UnsupportedType { .. } | Self::Parameter { .. } => {
                ErrorDomain::Config
            }
            Self::Internal { .. } => ErrorDomain::Internal,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Query { retryable, .. } => *retryable,
            Self::UnsupportedType { .. } | Self::Parameter { .. } | Self::Internal { .. } => false,
        }
    }
}

/// The result of a source operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
