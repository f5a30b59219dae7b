//! Rows as typed cells in one buffer: the shape a metric-events sync reads, without a
//! [`Value`] (and a `String` per text cell) for every cell of millions of rows.
//!
//! A [`CellBatch`] holds one fixed-size cell per (row, column) and one byte buffer for the
//! text and JSON of all its cells. A source able to decode its wire format directly
//! (PostgreSQL's binary results) fills it without allocating per row; every other source
//! converts its [`RowBatch`]es ([`CellBatch::from_rows`]).

use std::sync::{Arc, Mutex};

use crate::{RowBatch, Value};

/// Buffers of dropped batches, for the next ones: a million rows come in a hundred batches of
/// about a megabyte each, and fresh buffers would cost their page faults every time (the
/// allocator hands such sizes back to the system when they are freed).
static SPARES: Mutex<Vec<(String, Vec<Slot>)>> = Mutex::new(Vec::new());

/// The most spare buffers kept: a query's read-ahead and a chunk being staged.
const MAX_SPARES: usize = 24;

/// One cell of a [`CellBatch`], borrowing its text from the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point or numeric value.
    Float(f64),
    /// Text (UTF-8, checked when the cell was added).
    Text(&'a str),
    /// A point in time, as Unix epoch milliseconds (UTC).
    TimestampMillis(i64),
    /// A JSON document, as its text.
    Json(&'a str),
}

impl Cell<'_> {
    /// The name of the cell's type, for error messages (the names [`Value::type_name`] uses).
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

impl From<Cell<'_>> for Value {
    /// The cell as an owned value; JSON text that does not parse stays text.
    fn from(cell: Cell<'_>) -> Self {
        match cell {
            Cell::Null => Self::Null,
            Cell::Bool(value) => Self::Bool(value),
            Cell::Int(value) => Self::Int(value),
            Cell::Float(value) => Self::Float(value),
            Cell::Text(text) => Self::Text(text.to_owned()),
            Cell::TimestampMillis(value) => Self::TimestampMillis(value),
            Cell::Json(json) => {
                serde_json::from_str(json).map_or_else(|_| Self::Text(json.to_owned()), Self::Json)
            }
        }
    }
}

/// A cell as stored: its text as a range of the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text { start: u32, end: u32 },
    TimestampMillis(i64),
    Json { start: u32, end: u32 },
}

impl Slot {
    /// `cell` as stored, its text (if any) put where `append` says.
    #[inline]
    fn of(cell: Cell<'_>, append: impl FnOnce(&str) -> (u32, u32)) -> Self {
        match cell {
            Cell::Null => Self::Null,
            Cell::Bool(value) => Self::Bool(value),
            Cell::Int(value) => Self::Int(value),
            Cell::Float(value) => Self::Float(value),
            Cell::TimestampMillis(value) => Self::TimestampMillis(value),
            Cell::Text(text) => {
                let (start, end) = append(text);
                Self::Text { start, end }
            }
            Cell::Json(json) => {
                let (start, end) = append(json);
                Self::Json { start, end }
            }
        }
    }

    /// Where the cell's text is in its batch's buffer, for text and JSON.
    fn text(self) -> Option<std::ops::Range<usize>> {
        match self {
            Self::Text { start, end } | Self::Json { start, end } => {
                Some(start as usize..end as usize)
            }
            _ => None,
        }
    }
}

/// A batch of rows under named columns, each row `width` cells.
#[derive(Debug, Clone, PartialEq)]
pub struct CellBatch {
    /// The column names, in the query's order, lowercase as the warehouse reports them.
    pub columns: Arc<[String]>,
    text: String,
    slots: Vec<Slot>,
}

impl CellBatch {
    /// An empty batch for a query returning `columns`, with room for `rows` rows.
    pub fn with_capacity(columns: Arc<[String]>, rows: usize) -> Self {
        let (text, slots) = Self::spare(rows * columns.len());
        Self { columns, text, slots }
    }

    /// Buffers for a batch of `cells` cells: a dropped batch's, if one is kept.
    fn spare(cells: usize) -> (String, Vec<Slot>) {
        let spare = SPARES.lock().ok().and_then(|mut spares| spares.pop());
        let (text, mut slots) = spare.unwrap_or_default();
        slots.reserve(cells);
        (text, slots)
    }

    /// A batch of the same rows as `rows`.
    pub fn from_rows(rows: &RowBatch) -> Self {
        let mut batch = Self::with_capacity(Arc::clone(&rows.columns), rows.rows.len());
        for row in &rows.rows {
            for value in row {
                batch.push_value(value);
            }
        }
        batch
    }

    /// How many cells each row holds.
    #[inline]
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// How many rows the batch holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len().checked_div(self.width()).unwrap_or(0)
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The position of `column` in the batch, if the query returned it.
    pub fn column_index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|name| name == column)
    }

    /// Cell `column` of row `row`.
    ///
    /// # Panics
    ///
    /// When the row or the column is out of range.
    #[inline]
    pub fn get(&self, row: usize, column: usize) -> Cell<'_> {
        assert!(column < self.width(), "column {column} of a batch of {} columns", self.width());
        self.cell(self.slots[row * self.width() + column])
    }

    /// The rows, in order, each as its cells.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> {
        self.slots.chunks_exact(self.width().max(1)).map(move |slots| Row { batch: self, slots })
    }

    #[inline]
    fn cell(&self, slot: Slot) -> Cell<'_> {
        match slot {
            Slot::Null => Cell::Null,
            Slot::Bool(value) => Cell::Bool(value),
            Slot::Int(value) => Cell::Int(value),
            Slot::Float(value) => Cell::Float(value),
            Slot::TimestampMillis(value) => Cell::TimestampMillis(value),
            Slot::Text { start, end } => Cell::Text(&self.text[start as usize..end as usize]),
            Slot::Json { start, end } => Cell::Json(&self.text[start as usize..end as usize]),
        }
    }

    /// Appends a NULL cell; cells are appended row by row, `width` per row.
    #[inline]
    pub fn push_null(&mut self) {
        self.slots.push(Slot::Null);
    }

    /// Appends a boolean cell.
    #[inline]
    pub fn push_bool(&mut self, value: bool) {
        self.slots.push(Slot::Bool(value));
    }

    /// Appends an integer cell.
    #[inline]
    pub fn push_int(&mut self, value: i64) {
        self.slots.push(Slot::Int(value));
    }

    /// Appends a number cell.
    #[inline]
    pub fn push_float(&mut self, value: f64) {
        self.slots.push(Slot::Float(value));
    }

    /// Appends a point in time, in Unix epoch milliseconds.
    #[inline]
    pub fn push_timestamp_millis(&mut self, value: i64) {
        self.slots.push(Slot::TimestampMillis(value));
    }

    /// Appends a text cell.
    #[inline]
    pub fn push_text(&mut self, text: &str) {
        let (start, end) = self.append(text);
        self.slots.push(Slot::Text { start, end });
    }

    /// Appends a JSON cell, as its text.
    #[inline]
    pub fn push_json(&mut self, json: &str) {
        let (start, end) = self.append(json);
        self.slots.push(Slot::Json { start, end });
    }

    /// Appends a text cell written by `write` (straight into the batch's buffer, so that
    /// formatting a value allocates nothing).
    #[inline]
    pub fn push_text_with(&mut self, write: impl FnOnce(&mut String)) {
        let start = Self::offset(self.text.len());
        write(&mut self.text);
        let end = Self::offset(self.text.len());
        self.slots.push(Slot::Text { start, end });
    }

    /// Appends `cell`.
    #[inline]
    pub fn push(&mut self, cell: Cell<'_>) {
        let slot = Slot::of(cell, |text| self.append(text));
        self.slots.push(slot);
    }

    /// Appends `value` as a cell.
    pub fn push_value(&mut self, value: &Value) {
        match value {
            Value::Null => self.push_null(),
            Value::Bool(value) => self.push_bool(*value),
            Value::Int(value) => self.push_int(*value),
            Value::Float(value) => self.push_float(*value),
            Value::Text(text) => self.push_text(text),
            Value::TimestampMillis(value) => self.push_timestamp_millis(*value),
            Value::Json(json) => {
                let start = Self::offset(self.text.len());
                // Writing JSON into a String keeps it UTF-8.
                let mut bytes = std::mem::take(&mut self.text).into_bytes();
                serde_json::to_writer(&mut bytes, json).expect("writing to memory cannot fail");
                self.text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
                let end = Self::offset(self.text.len());
                self.slots.push(Slot::Json { start, end });
            }
        }
    }

    #[inline]
    fn append(&mut self, text: &str) -> (u32, u32) {
        let start = Self::offset(self.text.len());
        self.text.push_str(text);
        (start, Self::offset(self.text.len()))
    }

    /// # Panics
    ///
    /// When the batch would hold 4 GiB of text (sources cut batches far smaller).
    #[inline]
    fn offset(len: usize) -> u32 {
        u32::try_from(len).expect("a batch holds less than 4 GiB of text")
    }
}

impl CellBatch {
    /// Keeps a batch's buffers for the next batch, if room is left among the spares.
    fn give_back(mut text: String, mut slots: Vec<Slot>) {
        if slots.capacity() == 0 {
            return;
        }
        if let Ok(mut spares) = SPARES.lock() {
            if spares.len() < MAX_SPARES {
                text.clear();
                slots.clear();
                spares.push((text, slots));
            }
        }
    }
}

impl Drop for CellBatch {
    fn drop(&mut self) {
        Self::give_back(std::mem::take(&mut self.text), std::mem::take(&mut self.slots));
    }
}

/// A [`CellBatch`] being filled by a source that hands text over as bytes (PostgreSQL's wire
/// protocol): the text of all its cells is checked to be UTF-8 at once, when the batch is
/// done, rather than cell by cell (for a few short text columns, a check per cell was a
/// twentieth of reading the rows).
#[derive(Debug)]
pub struct RawCells {
    columns: Arc<[String]>,
    text: Vec<u8>,
    slots: Vec<Slot>,
}

/// Where [`RawCells::finish`] found text that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8 {
    /// The row, from 0.
    pub row: usize,
    /// The column, from 0.
    pub column: usize,
}

impl RawCells {
    /// An empty batch for a query returning `columns`, with room for `rows` rows.
    pub fn with_capacity(columns: Arc<[String]>, rows: usize) -> Self {
        let (text, slots) = CellBatch::spare(rows * columns.len());
        Self { columns, text: text.into_bytes(), slots }
    }

    /// How many rows the batch holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len().checked_div(self.columns.len()).unwrap_or(0)
    }

    /// Whether the batch holds no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends `cell`; cells are appended row by row, one per column.
    #[inline]
    pub fn push(&mut self, cell: Cell<'_>) {
        let slot = Slot::of(cell, |text| self.append(text.as_bytes()));
        self.slots.push(slot);
    }

    /// Appends a text cell whose bytes [`RawCells::finish`] checks to be UTF-8.
    #[inline]
    pub fn push_text_bytes(&mut self, bytes: &[u8]) {
        let (start, end) = self.append(bytes);
        self.slots.push(Slot::Text { start, end });
    }

    #[inline]
    fn append(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = CellBatch::offset(self.text.len());
        self.text.extend_from_slice(bytes);
        (start, CellBatch::offset(self.text.len()))
    }

    /// The batch, once its text is checked: the whole of it is UTF-8, and each cell starts
    /// and ends on a character (so each cell is UTF-8 on its own). Else the first cell that is
    /// not UTF-8.
    ///
    /// # Errors
    ///
    /// [`NotUtf8`], naming the cell.
    pub fn finish(mut self) -> Result<CellBatch, NotUtf8> {
        let columns = Arc::clone(&self.columns);
        let (text, slots) = (std::mem::take(&mut self.text), std::mem::take(&mut self.slots));
        let first_bad = |text: &[u8], slots: &[Slot]| {
            let at = slots
                .iter()
                .position(|slot| {
                    slot.text().is_some_and(|at| std::str::from_utf8(&text[at]).is_err())
                })
                .expect("text that is not UTF-8 is in some cell");
            let width = columns.len().max(1);
            NotUtf8 { row: at / width, column: at % width }
        };
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(error) => {
                let text = error.into_bytes();
                let bad = first_bad(&text, &slots);
                CellBatch::give_back(String::new(), slots);
                return Err(bad);
            }
        };
        let split = slots.iter().any(|slot| {
            slot.text().is_some_and(|at| {
                !text.is_char_boundary(at.start) || !text.is_char_boundary(at.end)
            })
        });
        if split {
            let bad = first_bad(text.as_bytes(), &slots);
            CellBatch::give_back(text, slots);
            return Err(bad);
        }
        Ok(CellBatch { columns, text, slots })
    }
}

impl Drop for RawCells {
    fn drop(&mut self) {
        let (mut text, slots) = (std::mem::take(&mut self.text), std::mem::take(&mut self.slots));
        text.clear();
        CellBatch::give_back(String::from_utf8(text).unwrap_or_default(), slots);
    }
}

/// One row of a [`CellBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    batch: &'a CellBatch,
    slots: &'a [Slot],
}

impl<'a> Row<'a> {
    /// Cell `column` of the row.
    ///
    /// # Panics
    ///
    /// When the column is out of range.
    #[inline]
    pub fn get(&self, column: usize) -> Cell<'a> {
        self.batch.cell(self.slots[column])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_back_as_they_were_pushed() {
        let columns: Arc<[String]> = ["a", "b", "c"].iter().map(|c| (*c).to_owned()).collect();
        let rows = RowBatch {
            columns,
            rows: vec![
                vec![Value::Text("é1".into()), Value::Int(-4), Value::Null],
                vec![
                    Value::Float(0.5),
                    Value::TimestampMillis(7),
                    Value::Json(serde_json::json!({"k": [1, "x"]})),
                ],
                vec![Value::Bool(true), Value::Text(String::new()), Value::Text("z".into())],
            ],
        };
        let batch = CellBatch::from_rows(&rows);
        assert_eq!((batch.len(), batch.width(), batch.column_index("c")), (3, 3, Some(2)));
        let cells: Vec<Vec<Cell<'_>>> =
            batch.rows().map(|row| (0..3).map(|column| row.get(column)).collect()).collect();
        assert_eq!(
            cells,
            [
                vec![Cell::Text("é1"), Cell::Int(-4), Cell::Null],
                vec![Cell::Float(0.5), Cell::TimestampMillis(7), Cell::Json(r#"{"k":[1,"x"]}"#)],
                vec![Cell::Bool(true), Cell::Text(""), Cell::Text("z")],
            ]
        );
        assert_eq!(batch.get(2, 2), Cell::Text("z"));
        // Cells read back into the values they came from, and push as themselves.
        let values: Vec<Vec<Value>> =
            batch.rows().map(|row| (0..3).map(|c| Value::from(row.get(c))).collect()).collect();
        assert_eq!(values, rows.rows);
        let mut copy = CellBatch::with_capacity(Arc::clone(&batch.columns), 3);
        for row in batch.rows() {
            (0..3).for_each(|c| copy.push(row.get(c)));
        }
        assert_eq!(copy, batch);
        let mut more = CellBatch::with_capacity(Arc::from(vec!["made".to_owned()]), 1);
        more.push_text_with(|out| out.push_str("made"));
        assert_eq!(more.get(0, 0), Cell::Text("made"));
        assert!(CellBatch::with_capacity(Arc::from(Vec::new()), 0).rows().next().is_none());
    }

    #[test]
    fn raw_cells_finish_as_the_batch_of_the_same_cells() {
        let columns: Arc<[String]> = ["t", "n"].iter().map(|c| (*c).to_owned()).collect();
        let mut raw = RawCells::with_capacity(Arc::clone(&columns), 3);
        let mut checked = CellBatch::with_capacity(Arc::clone(&columns), 3);
        for (text, n) in [("é1", 1), ("", 2), ("日本 ✓", 3)] {
            raw.push_text_bytes(text.as_bytes());
            raw.push(Cell::Int(n));
            checked.push_text(text);
            checked.push_int(n);
        }
        raw.push(Cell::Json("{}"));
        raw.push(Cell::Null);
        checked.push_json("{}");
        checked.push_null();
        assert_eq!(raw.len(), 4);
        assert_eq!(raw.finish(), Ok(checked));
    }

    #[test]
    fn raw_cells_name_the_first_cell_that_is_not_utf8() {
        let columns: Arc<[String]> = ["a", "b"].iter().map(|c| (*c).to_owned()).collect();
        let raw = |cells: &[&[u8]]| {
            let mut raw = RawCells::with_capacity(Arc::clone(&columns), 2);
            for cell in cells {
                raw.push_text_bytes(cell);
            }
            raw.finish()
        };
        // Bytes that are not UTF-8 anywhere.
        assert_eq!(raw(&[b"ok", b"ok", b"\xff", b"ok"]), Err(NotUtf8 { row: 1, column: 0 }));
        // A character split across two cells: the whole is UTF-8, the cells are not.
        let e = "é".as_bytes();
        assert_eq!(raw(&[b"ok", &e[..1], &e[1..], b"ok"]), Err(NotUtf8 { row: 0, column: 1 }));
        assert!(raw(&[b"ok", e, e, b""]).is_ok());
    }

    #[test]
    fn a_batch_made_from_a_dropped_ones_buffers_starts_empty() {
        let one: Arc<[String]> = Arc::from(vec!["k".to_owned()]);
        for round in 0..3 {
            let mut batch = CellBatch::with_capacity(Arc::clone(&one), 100);
            assert!(batch.is_empty(), "round {round}");
            for i in 0..100 {
                batch.push_text(&format!("key-{round}-{i}"));
            }
            assert_eq!(batch.get(99, 0), Cell::Text(&format!("key-{round}-99")));
            assert_eq!(batch.get(0, 0), Cell::Text(&format!("key-{round}-0")));
        }
    }
}
