//! The text path of a PostgreSQL source: a few columns of every row as text, through
//! `COPY … TO STDOUT (FORMAT binary)`, parsed straight into [`TextBatch`]es.
//!
//! A segment sync reads one or two key columns of millions of rows. `query_raw` would decode
//! each row into values and each key into its own `String`; the binary `COPY` of the query,
//! wrapped to cast the wanted columns to text, arrives as length-prefixed bytes that are copied
//! once, into the batch. Engines that speak PostgreSQL's protocol but not its `COPY` (or a
//! query the wrapper does not fit) take the row path instead, with the same result.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures_util::{pin_mut, TryStreamExt};
use ldsync_core::{RowBatch, TextBatch};
use tokio::sync::mpsc::Sender;
use tokio_postgres::{types::Type, Client, Statement};

use crate::postgres::{decode_row, query_error, Decoder, PostgresSource};
use crate::{Error, Result};

/// The signature that opens every binary `COPY` stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Types whose text form (`::text`) is the value a key column means.
fn casts_to_its_key(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::INT2
            | Type::INT4
            | Type::INT8
    )
}

/// A column name as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query wrapped to return the wanted columns as text, in binary `COPY` form. The query is
/// put on lines of its own so that a trailing `-- comment` cannot swallow the wrapper.
fn copy_statement(sql: &str, wanted: &[String]) -> String {
    let sql = sql.trim_end().trim_end_matches(';').trim_end();
    let columns: Vec<String> =
        wanted.iter().map(|name| format!("{}::text", quote_identifier(name))).collect();
    format!(
        "copy (select {} from (\n{sql}\n) as ldsync_rows) to stdout (format binary)",
        columns.join(", ")
    )
}

impl PostgresSource {
    pub(crate) async fn run_text(
        &self,
        sql: &str,
        wanted: &[String],
        batch_rows: usize,
        sender: &Sender<Result<TextBatch>>,
    ) -> Result<()> {
        let client = self.connect().await?;
        let statement = client.prepare(sql).await.map_err(query_error)?;
        let columns: Arc<[String]> =
            statement.columns().iter().map(|c| c.name().to_owned()).collect();
        let positions: Vec<Vec<usize>> = wanted
            .iter()
            .map(|name| {
                columns.iter().enumerate().filter(|(_, c)| *c == name).map(|(i, _)| i).collect()
            })
            .collect();
        let present: Arc<[bool]> = positions.iter().map(|p| !p.is_empty()).collect();
        let empty = TextBatch::new(Arc::clone(&columns), Arc::clone(&present));
        if present.iter().any(|p| !p) {
            // The reader refuses the query by its columns; nothing needs to run.
            let _ = sender.send(Ok(empty)).await;
            return Ok(());
        }
        let fast = positions
            .iter()
            .all(|p| p.len() == 1 && casts_to_its_key(statement.columns()[p[0]].type_()));
        if fast {
            match client.copy_out(&copy_statement(sql, wanted)).await {
                Ok(stream) => {
                    if sender.send(Ok(empty.clone())).await.is_err() {
                        return Ok(());
                    }
                    return copy_batches(stream, empty, batch_rows, sender).await;
                }
                Err(error) => {
                    let refused =
                        error.as_db_error().is_some_and(|db| !retryable_code(db.code().code()));
                    if !refused {
                        return Err(query_error(error));
                    }
                    // Not every PostgreSQL-wire engine has `COPY`: read rows instead.
                    tracing::debug!(error = %error, "Binary COPY refused; reading rows instead.");
                }
            }
        }
        row_batches(&client, &statement, wanted, columns, batch_rows, sender).await
    }
}

fn retryable_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(code, "40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03" | "53300")
}

/// The row path: values decoded per row, then reduced to the wanted columns.
async fn row_batches(
    client: &Client,
    statement: &Statement,
    wanted: &[String],
    columns: Arc<[String]>,
    batch_rows: usize,
    sender: &Sender<Result<TextBatch>>,
) -> Result<()> {
    let decoders = statement
        .columns()
        .iter()
        .map(|c| Decoder::for_type(c.name(), c.type_()))
        .collect::<Result<Vec<_>>>()?;
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let rows = client
        .query_raw(statement, std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>())
        .await
        .map_err(query_error)?;
    pin_mut!(rows);
    let mut batch = RowBatch { columns, rows: Vec::with_capacity(batch_rows) };
    let mut sent = false;
    while let Some(row) = rows.try_next().await.map_err(query_error)? {
        batch.rows.push(decode_row(&row, &decoders)?);
        if batch.rows.len() == batch_rows {
            if sender.send(Ok(TextBatch::from_rows(&batch, &wanted))).await.is_err() {
                return Ok(());
            }
            batch.rows.clear();
            sent = true;
        }
    }
    if !batch.rows.is_empty() || !sent {
        let _ = sender.send(Ok(TextBatch::from_rows(&batch, &wanted))).await;
    }
    Ok(())
}

/// Parses a binary `COPY` stream into batches of `batch_rows` rows.
async fn copy_batches(
    stream: tokio_postgres::CopyOutStream,
    empty: TextBatch,
    batch_rows: usize,
    sender: &Sender<Result<TextBatch>>,
) -> Result<()> {
    pin_mut!(stream);
    let mut parser = CopyParser::new(empty.width());
    let mut batch = empty.clone();
    while let Some(chunk) = stream.try_next().await.map_err(query_error)? {
        parser.feed(&chunk, &mut batch)?;
        if batch.rows() >= batch_rows {
            let full = std::mem::replace(&mut batch, empty.clone());
            if sender.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    parser.finish()?;
    if !batch.is_empty() {
        let _ = sender.send(Ok(batch)).await;
    }
    Ok(())
}

/// The state of a binary `COPY` parse across the stream's chunks.
#[derive(Debug)]
struct CopyParser {
    width: usize,
    header_done: bool,
    ended: bool,
    /// The start of a tuple that continues in the next chunk.
    carry: BytesMut,
}

fn malformed(message: &str) -> Error {
    Error::Internal {
        engine: "postgres",
        message: format!("malformed binary COPY data: {message}"),
    }
}

impl CopyParser {
    fn new(width: usize) -> Self {
        Self { width, header_done: false, ended: false, carry: BytesMut::new() }
    }

    fn feed(&mut self, chunk: &[u8], batch: &mut TextBatch) -> Result<()> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, batch)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let carry = std::mem::take(&mut self.carry);
            let used = self.parse(&carry, batch)?;
            self.carry.extend_from_slice(&carry[used..]);
        }
        Ok(())
    }

    /// Parses every whole tuple in `data`; returns how many bytes it used.
    fn parse(&mut self, data: &[u8], batch: &mut TextBatch) -> Result<usize> {
        let mut at = 0;
        if !self.header_done {
            let seen = data.len().min(SIGNATURE.len());
            if data[..seen] != SIGNATURE[..seen] {
                return Err(malformed("missing signature"));
            }
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            let mut header = &data[SIGNATURE.len()..];
            let _flags = header.get_u32();
            let extension = header.get_u32() as usize;
            if data.len() < SIGNATURE.len() + 8 + extension {
                return Ok(0);
            }
            at = SIGNATURE.len() + 8 + extension;
            self.header_done = true;
        }
        while at < data.len() {
            if self.ended {
                return Err(malformed("data after the trailer"));
            }
            let Some(mut rest) = data.get(at..at + 2) else { return Ok(at) };
            let fields = rest.get_i16();
            if fields == -1 {
                self.ended = true;
                at += 2;
                continue;
            }
            if usize::try_from(fields).ok() != Some(self.width) {
                return Err(malformed(&format!("{fields} fields where {} were asked", self.width)));
            }
            // Measure the tuple before touching the batch, so a split tuple is taken whole.
            let mut end = at + 2;
            for _ in 0..self.width {
                let Some(mut length) = data.get(end..end + 4) else { return Ok(at) };
                let length = length.get_i32();
                end += 4 + usize::try_from(length).unwrap_or(0);
                if end > data.len() {
                    return Ok(at);
                }
            }
            let mut field = at + 2;
            for _ in 0..self.width {
                let length =
                    i32::from_be_bytes(data[field..field + 4].try_into().expect("4 bytes"));
                field += 4;
                if let Ok(length) = usize::try_from(length) {
                    batch.push_text(&data[field..field + length]);
                    field += length;
                } else {
                    batch.push_null();
                }
            }
            at = end;
        }
        Ok(at)
    }

    fn finish(&self) -> Result<()> {
        if !self.carry.is_empty() {
            return Err(malformed("the stream ended inside a row"));
        }
        if self.header_done && !self.ended {
            return Err(malformed("the stream ended without its trailer"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ldsync_core::TextCell;

    use super::*;

    fn stream(rows: &[&[Option<&str>]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0_u32.to_be_bytes());
        out.extend_from_slice(&0_u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&i16::try_from(row.len()).unwrap().to_be_bytes());
            for field in *row {
                match field {
                    Some(text) => {
                        out.extend_from_slice(&i32::try_from(text.len()).unwrap().to_be_bytes());
                        out.extend_from_slice(text.as_bytes());
                    }
                    None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1_i16).to_be_bytes());
        out
    }

    fn empty(width: usize) -> TextBatch {
        TextBatch::new(Arc::from(vec!["a".to_owned(); width]), Arc::from(vec![true; width]))
    }

    #[test]
    fn parses_rows_split_anywhere() {
        let rows: &[&[Option<&str>]] =
            &[&[Some("ann"), Some("s1")], &[None, Some("")], &[Some("Zoë\n"), None]];
        let bytes = stream(rows);
        for split in 1..bytes.len() {
            let mut parser = CopyParser::new(2);
            let mut batch = empty(2);
            parser.feed(&bytes[..split], &mut batch).unwrap();
            parser.feed(&bytes[split..], &mut batch).unwrap();
            parser.finish().unwrap();
            assert_eq!(batch.rows(), 3, "split at {split}");
            assert_eq!(batch.cell(0, 0), TextCell::Text(b"ann"));
            assert_eq!(batch.cell(1, 0), TextCell::Null);
            assert_eq!(batch.cell(1, 1), TextCell::Text(b""));
            assert_eq!(batch.cell(2, 0), TextCell::Text("Zoë\n".as_bytes()));
            assert_eq!(batch.cell(2, 1), TextCell::Null);
        }
    }

    #[test]
    fn refuses_what_is_not_a_whole_stream() {
        let bytes = stream(&[&[Some("ann")]]);
        let mut parser = CopyParser::new(1);
        let mut batch = empty(1);
        parser.feed(&bytes[..bytes.len() - 3], &mut batch).unwrap();
        assert!(parser.finish().is_err());
        let mut parser = CopyParser::new(2);
        assert!(parser.feed(&bytes, &mut empty(2)).is_err(), "width mismatch");
        let mut parser = CopyParser::new(1);
        assert!(parser.feed(b"NOTPGCOPY\n\xff\r\n\0\0", &mut empty(1)).is_err());
    }

    #[test]
    fn wraps_the_query_so_comments_and_semicolons_cannot_break_it() {
        let copy = copy_statement(
            "select id as context_key from t -- all of them\n;",
            &["context_key".to_owned()],
        );
        assert_eq!(
            copy,
            "copy (select \"context_key\"::text from (\nselect id as context_key from t -- all of them\n) as ldsync_rows) to stdout (format binary)"
        );
    }
}
