//! A query's rows read off the wire, decoded straight into cells.
//!
//! tokio-postgres opens the session and prepares the statement (TLS, authentication, the
//! types of the parameters and the columns), then hands the socket back
//! ([`ldsync_pgtls::Detachable`]). The query itself is sent here as the extended protocol's
//! `Parse`, `Bind`, `Execute` and `Sync`, its `$1` bound in binary as before, and each
//! `DataRow` is decoded from the read buffer into the batch: no `Row`, no vector of ranges,
//! no message passed between tasks. For a million small rows this takes about a third of
//! the CPU that reading them through tokio-postgres took.

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use ldsync_core::{Cell, CellBatch, RawCells, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::types::{IsNull, ToSql};

use crate::postgres::{
    column_error, connect_error, db_error, decode_raw, layout, query_error, timestamp_millis,
    Decoder, Param, ENGINE,
};
use crate::{Error, PostgresSource, Result};

/// Bytes asked of the socket at a time.
const READ_SIZE: usize = 256 * 1024;

impl PostgresSource {
    /// Runs the query over a session taken back from tokio-postgres; its rows go to `sender`
    /// in batches of `batch_rows`.
    pub(crate) async fn run_wire(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
        sender: &tokio::sync::mpsc::Sender<Result<CellBatch>>,
    ) -> Result<()> {
        let (client, detachable) = self.connect.connect_detachable().await.map_err(detach_error)?;
        let prepared = detachable.drive(async {
            self.set_up(&client).await?;
            client.prepare(sql).await
        });
        let (statement, mut stream) = prepared.await.map_err(|err| match err {
            ldsync_pgtls::DetachError::Postgres(err) => query_error(err),
            other @ ldsync_pgtls::DetachError::Unreachable { .. } => detach_error(other),
        })?;
        let (columns, decoders) = layout(&statement)?;
        let request = encode_query(sql, &statement, params, &decoders)?;
        // The client and the statement go now: what they send on their way out goes nowhere.
        drop(statement);
        drop(client);
        stream.write_all(&request).await.map_err(io_error)?;
        let mut reader = Reader { buffer: BytesMut::with_capacity(READ_SIZE), at: 0 };
        let mut batch = RawCells::with_capacity(Arc::clone(&columns), batch_rows);
        let mut uuid = uuid::Uuid::encode_buffer();
        loop {
            let Some((tag, body)) = reader.next(&mut stream).await? else {
                return Err(closed());
            };
            match tag {
                b'D' => {
                    push_data_row(body, &columns, &decoders, &mut batch, &mut uuid)?;
                    if batch.len() == batch_rows {
                        let fresh = RawCells::with_capacity(Arc::clone(&columns), batch_rows);
                        let full = checked(std::mem::replace(&mut batch, fresh), &columns)?;
                        if sender.send(Ok(full)).await.is_err() {
                            // The reader went away: closing the socket ends the query.
                            return Ok(());
                        }
                    }
                }
                b'E' => return Err(error_response(body)),
                b'Z' => break,
                // ParseComplete, BindComplete, CommandComplete, EmptyQueryResponse, and what
                // the server may send at any time: notices, parameter changes, notifications.
                b'1' | b'2' | b'C' | b'I' | b'N' | b'S' | b'A' => {}
                other => {
                    return Err(protocol(&format!(
                        "an unexpected message `{}` during the query",
                        char::from(other)
                    )))
                }
            }
        }
        if !batch.is_empty() {
            // A closed receiver means the reader stopped early; nothing is left to do.
            let _ = sender.send(Ok(checked(batch, &columns)?)).await;
        }
        // Terminate; the server closes the session either way.
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        Ok(())
    }
}

/// `Parse`, `Bind`, `Execute` and `Sync` for the query, its parameters in binary as the
/// prepared statement types them, each column in the format cheaper for the server to send
/// ([`result_format`]).
fn encode_query(
    sql: &str,
    statement: &tokio_postgres::Statement,
    params: &[Value],
    decoders: &[Decoder],
) -> Result<BytesMut> {
    let types = statement.params();
    if types.len() != params.len() {
        return Err(Error::Query {
            engine: ENGINE,
            sqlstate: None,
            message: format!(
                "the query takes {} parameter{}, and {} {} given",
                types.len(),
                if types.len() == 1 { "" } else { "s" },
                params.len(),
                if params.len() == 1 { "is" } else { "are" }
            ),
            position: None,
            retryable: false,
        });
    }
    let mut out = BytesMut::with_capacity(sql.len() + 128);
    message(&mut out, b'P', |out| {
        out.put_u8(0);
        put_cstr(out, sql);
        out.put_i16(i16::try_from(types.len()).unwrap_or(i16::MAX));
        for ty in types {
            out.put_u32(ty.oid());
        }
        Ok(())
    })?;
    message(&mut out, b'B', |out| {
        out.put_u8(0);
        out.put_u8(0);
        out.put_i16(1);
        out.put_i16(1);
        out.put_i16(i16::try_from(params.len()).unwrap_or(i16::MAX));
        for (value, ty) in params.iter().zip(types) {
            let at = out.len();
            out.put_i32(0);
            let bound = Param(value).to_sql(ty, out).map_err(|err| Error::Query {
                engine: ENGINE,
                sqlstate: None,
                message: format!("cannot bind `$1`: {err}"),
                position: None,
                retryable: false,
            })?;
            let len = match bound {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(out.len() - at - 4).map_err(|_| too_long())?,
            };
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.put_i16(i16::try_from(decoders.len()).map_err(|_| too_long())?);
        for decoder in decoders {
            out.put_i16(result_format(*decoder));
        }
        Ok(())
    })?;
    message(&mut out, b'E', |out| {
        out.put_u8(0);
        out.put_i32(0);
        Ok(())
    })?;
    message(&mut out, b'S', |_| Ok(()))?;
    Ok(out)
}

/// The format a column is asked for in: text (0) for text and `json`, whose text is the same
/// bytes either way (the server's binary form costs it a buffer of a kilobyte per value, the
/// text form a copy: about a tenth of its time for a query of a few text columns); binary
/// (1) for the rest, whose text forms are costly to write and to read.
fn result_format(decoder: Decoder) -> i16 {
    match decoder {
        Decoder::Text | Decoder::Json => 0,
        _ => 1,
    }
}

/// Appends a message: its tag, its length, and what `body` writes.
fn message(
    out: &mut BytesMut,
    tag: u8,
    body: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<()> {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out)?;
    let len = i32::try_from(out.len() - at).map_err(|_| too_long())?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_cstr(out: &mut BytesMut, text: &str) {
    out.put_slice(text.as_bytes());
    out.put_u8(0);
}

fn too_long() -> Error {
    protocol("a message longer than the protocol allows")
}

/// Backend messages, read from the socket a large piece at a time.
struct Reader {
    buffer: BytesMut,
    /// Where the next message starts in `buffer`.
    at: usize,
}

impl Reader {
    /// The next message's tag and body; `None` when the server closed the session.
    async fn next<S>(&mut self, stream: &mut S) -> Result<Option<(u8, &[u8])>>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        loop {
            let ready = &self.buffer[self.at..];
            if ready.len() >= 5 {
                let len = u32::from_be_bytes(ready[1..5].try_into().expect("4 bytes")) as usize;
                if len < 4 {
                    return Err(protocol("a message with an impossible length"));
                }
                if ready.len() > len {
                    let start = self.at;
                    self.at += 1 + len;
                    return Ok(Some((
                        self.buffer[start],
                        &self.buffer[start + 5..start + 1 + len],
                    )));
                }
                // Room for the whole message, however large.
                self.buffer.reserve(len + 1);
            }
            if self.at > 0 {
                self.buffer.advance(self.at);
                self.at = 0;
            }
            if self.buffer.capacity() - self.buffer.len() < READ_SIZE / 4 {
                self.buffer.reserve(READ_SIZE);
            }
            if stream.read_buf(&mut self.buffer).await.map_err(io_error)? == 0 {
                return Ok(None);
            }
        }
    }
}

/// The batch, its text checked to be UTF-8 (else the column that holds some that is not).
fn checked(batch: RawCells, columns: &[String]) -> Result<CellBatch> {
    batch.finish().map_err(|bad| column_error(&columns[bad.column], "text that is not UTF-8"))
}

/// Decodes one `DataRow` into the batch.
fn push_data_row(
    body: &[u8],
    columns: &[String],
    decoders: &[Decoder],
    batch: &mut RawCells,
    uuid: &mut [u8; 45],
) -> Result<()> {
    let truncated = || protocol("a row cut short");
    let (count, mut rest) = body.split_first_chunk::<2>().ok_or_else(truncated)?;
    if usize::from(u16::from_be_bytes(*count)) != decoders.len() {
        return Err(protocol("a row with another number of columns than the query's"));
    }
    for (decoder, column) in decoders.iter().zip(columns) {
        let (len, after) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = i32::from_be_bytes(*len);
        let raw = if len < 0 {
            rest = after;
            None
        } else {
            let len = usize::try_from(len).expect("not negative");
            let value = after.get(..len).ok_or_else(truncated)?;
            rest = &after[len..];
            Some(value)
        };
        if !raw.is_some_and(|raw| push_common(raw, *decoder, batch)) {
            batch.push(decode_raw(raw, column, *decoder, uuid)?);
        }
    }
    Ok(())
}

/// Appends a value of the types most rows carry (text, numbers, timestamps) straight into
/// the batch, without a [`Cell`](ldsync_core::Cell) returned through memory: the common case
/// of [`decode_raw`], a fifth of reading a row. `false` (nothing appended) for every other
/// type and for a value [`decode_raw`] must refuse, so that it reports why.
#[expect(clippy::inline_always, reason = "measured: called once per cell, in the loop over a row")]
#[inline(always)]
fn push_common(raw: &[u8], decoder: Decoder, batch: &mut RawCells) -> bool {
    let cell = match decoder {
        // Checked to be UTF-8 with the rest of the batch's text.
        Decoder::Text => {
            batch.push_text_bytes(raw);
            return true;
        }
        Decoder::Int4 => match raw.try_into() {
            Ok(bytes) => Cell::Int(i32::from_be_bytes(bytes).into()),
            Err(_) => return false,
        },
        Decoder::Int8 => match raw.try_into() {
            Ok(bytes) => Cell::Int(i64::from_be_bytes(bytes)),
            Err(_) => return false,
        },
        Decoder::Float8 => match raw.try_into() {
            Ok(bytes) => Cell::Float(f64::from_be_bytes(bytes)),
            Err(_) => return false,
        },
        Decoder::Timestamp | Decoder::TimestampTz => {
            match raw.try_into().ok().map(i64::from_be_bytes).and_then(timestamp_millis) {
                Some(millis) => Cell::TimestampMillis(millis),
                None => return false,
            }
        }
        _ => return false,
    };
    batch.push(cell);
    true
}

/// An `ErrorResponse` as the query's error.
fn error_response(body: &[u8]) -> Error {
    let (mut code, mut message, mut position) = (None, None, None);
    for field in body.split(|&byte| byte == 0) {
        let Some((&kind, text)) = field.split_first() else { continue };
        let text = String::from_utf8_lossy(text);
        match kind {
            b'C' => code = Some(text.into_owned()),
            b'M' => message = Some(text.into_owned()),
            b'P' => position = text.parse().ok(),
            _ => {}
        }
    }
    match code {
        Some(code) => db_error(&code, message.unwrap_or_default(), position),
        None => protocol("an error without a code"),
    }
}

fn protocol(what: &str) -> Error {
    Error::Query {
        engine: ENGINE,
        sqlstate: None,
        message: format!("the server sent {what}"),
        position: None,
        retryable: false,
    }
}

fn closed() -> Error {
    Error::Connect { engine: ENGINE, message: "the connection was closed".into() }
}

#[expect(clippy::needless_pass_by_value, reason = "it is a `map_err` adapter")]
fn io_error(err: std::io::Error) -> Error {
    Error::Connect { engine: ENGINE, message: ldsync_core::error_chain(&err) }
}

fn detach_error(err: ldsync_pgtls::DetachError) -> Error {
    match err {
        ldsync_pgtls::DetachError::Postgres(err) => connect_error(err),
        other @ ldsync_pgtls::DetachError::Unreachable { .. } => {
            Error::Connect { engine: ENGINE, message: ldsync_core::error_chain(&other) }
        }
    }
}
