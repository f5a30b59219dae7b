//! Rows reduced to a few text columns: the shape a segment sync reads, without a [`Value`] per
//! cell.
//!
//! A segment sync needs one or two columns of each row as text (`context_key`, and
//! `segment_key` when the query fans out). [`TextBatch`] holds them as one byte buffer plus a
//! cell per (row, column), so that a source able to produce text directly (PostgreSQL's binary
//! `COPY`) never allocates per row.

use std::sync::Arc;

use crate::{RowBatch, Value};

/// One cell of a [`TextBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCell<'a> {
    /// The value as text (the bytes the warehouse sent; the reader checks they are UTF-8).
    Text(&'a [u8]),
    /// SQL NULL.
    Null,
    /// A value of a type that is not text: its type's name, for the rejection's reason.
    Other(&'static str),
}

/// Where a cell's bytes are, or what the cell is when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Text { start: u32, end: u32 },
    Null,
    Other(&'static str),
}

/// A batch of rows, each reduced to the requested columns as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatch {
    /// Every column the query returns, in its order (for messages about the column contract).
    pub columns: Arc<[String]>,
    /// For each requested column, whether the query returns it.
    pub present: Arc<[bool]>,
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

impl TextBatch {
    /// An empty batch for a query returning `columns`, of which the requested ones are marked
    /// in `present`.
    pub fn new(columns: Arc<[String]>, present: Arc<[bool]>) -> Self {
        Self { columns, present, bytes: Vec::new(), slots: Vec::new() }
    }

    /// How many requested columns each row holds.
    pub fn width(&self) -> usize {
        self.present.len()
    }

    /// How many rows the batch holds.
    pub fn rows(&self) -> usize {
        self.slots.len().checked_div(self.width()).unwrap_or(0)
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of text the batch holds.
    pub fn text_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a text cell; cells are appended row by row, `width` per row.
    ///
    /// # Panics
    ///
    /// When the batch would hold 4 GiB of text (sources cut batches far smaller).
    pub fn push_text(&mut self, text: &[u8]) {
        let start = u32::try_from(self.bytes.len()).expect("a batch holds less than 4 GiB");
        self.bytes.extend_from_slice(text);
        let end = u32::try_from(self.bytes.len()).expect("a batch holds less than 4 GiB");
        self.slots.push(Slot::Text { start, end });
    }

    /// Appends a NULL cell.
    pub fn push_null(&mut self) {
        self.slots.push(Slot::Null);
    }

    /// Appends a cell of a type that is not text.
    pub fn push_other(&mut self, type_name: &'static str) {
        self.slots.push(Slot::Other(type_name));
    }

    /// The cell of `row` in requested column `column`.
    pub fn cell(&self, row: usize, column: usize) -> TextCell<'_> {
        match self.slots[row * self.width() + column] {
            Slot::Text { start, end } => TextCell::Text(&self.bytes[start as usize..end as usize]),
            Slot::Null => TextCell::Null,
            Slot::Other(type_name) => TextCell::Other(type_name),
        }
    }

    /// Reduces a batch of values to the requested columns: text stays text, integers are
    /// written in decimal, NULL stays NULL, anything else is named by its type.
    pub fn from_rows(batch: &RowBatch, wanted: &[&str]) -> Self {
        let indexes: Vec<Option<usize>> =
            wanted.iter().map(|name| batch.column_index(name)).collect();
        let present: Arc<[bool]> = indexes.iter().map(Option::is_some).collect();
        let mut out = Self::new(Arc::clone(&batch.columns), present);
        out.slots.reserve(batch.rows.len() * wanted.len());
        let mut digits = String::new();
        for row in &batch.rows {
            for index in &indexes {
                match index.map(|i| &row[i]) {
                    Some(Value::Text(text)) => out.push_text(text.as_bytes()),
                    Some(Value::Int(number)) => {
                        use std::fmt::Write as _;
                        digits.clear();
                        let _ = write!(digits, "{number}");
                        out.push_text(digits.as_bytes());
                    }
                    Some(Value::Null) | None => out.push_null(),
                    Some(other) => out.push_other(other.type_name()),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_reduce_to_the_requested_columns() {
        let batch = RowBatch {
            columns: ["context_key", "n", "flag"].map(String::from).into(),
            rows: vec![
                vec![Value::Text("ann".into()), Value::Int(-7), Value::Bool(true)],
                vec![Value::Null, Value::Int(3), Value::Null],
            ],
        };
        let text = TextBatch::from_rows(&batch, &["context_key", "missing", "n", "flag"]);
        assert_eq!(&*text.present, [true, false, true, true]);
        assert_eq!(text.rows(), 2);
        assert_eq!(text.cell(0, 0), TextCell::Text(b"ann"));
        assert_eq!(text.cell(0, 1), TextCell::Null);
        assert_eq!(text.cell(0, 2), TextCell::Text(b"-7"));
        assert_eq!(text.cell(0, 3), TextCell::Other("boolean"));
        assert_eq!(text.cell(1, 0), TextCell::Null);
        assert_eq!(text.cell(1, 2), TextCell::Text(b"3"));
    }
}
