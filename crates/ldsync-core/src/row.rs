//! Rows as sources yield them: a batch of values under named columns.

use std::sync::Arc;

/// One value of a result row, in the few types ldsync's query contracts use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point or numeric value.
    Float(f64),
    /// Text.
    Text(String),
    /// A point in time, as Unix epoch milliseconds (UTC).
    TimestampMillis(i64),
    /// A JSON document (`json`, `jsonb`, or a DuckDB `JSON`).
    Json(serde_json::Value),
}

impl Value {
    /// The value as text, when it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Whether the value is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "boolean",
            Self::Int(_) => "integer",
            Self::Float(_) => "number",
            Self::Text(_) => "text",
            Self::TimestampMillis(_) => "timestamp",
            Self::Json(_) => "json",
        }
    }
}

/// A batch of rows that share one list of column names.
#[derive(Debug, Clone, PartialEq)]
pub struct RowBatch {
    /// The column names, in the query's order, lowercase as the warehouse reports them.
    pub columns: Arc<[String]>,
    /// The rows; each has one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl RowBatch {
    /// The position of `column` in the batch, if the query returned it.
    pub fn column_index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|name| name == column)
    }

    /// How many rows the batch holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
