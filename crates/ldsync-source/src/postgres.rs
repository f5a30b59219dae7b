//! PostgreSQL, and every engine that speaks its wire protocol, through tokio-postgres.

use std::{error::Error as _, sync::Arc, time::Duration};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, TryStreamExt};
use ldsync_core::{
    BatchStream, Cell, CellBatch, CellStream, RowBatch, Secret, Source, TextBatch, TextStream,
    Value,
};
use tokio_postgres::{
    types::{to_sql_checked, FromSql, IsNull, ToSql, Type},
    Client, Row,
};

use crate::{Error, Result};

pub(crate) const ENGINE: &str = "postgres";

/// A PostgreSQL-wire warehouse.
#[derive(Clone)]
pub struct PostgresSource {
    pub(crate) connect: Arc<ldsync_pgtls::PgConnect>,
    pub(crate) statement_timeout: Duration,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("ssl_mode", &self.connect.ssl_mode)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// A source for the connection string `url` (a URL or `key=value` pairs, with libpq's
    /// `sslmode` and `sslrootcert`); queries running longer than `statement_timeout` are
    /// cancelled by the server.
    pub fn new(url: &Secret, statement_timeout: Duration) -> Result<Self> {
        let connect = ldsync_pgtls::parse(url.expose()).map_err(|err| Error::Connect {
            engine: ENGINE,
            // The parser's messages name parameters, never the string itself.
            message: ldsync_core::error_chain(&err),
        })?;
        Ok(Self { connect: Arc::new(connect), statement_timeout })
    }

    /// Opens a session (over TLS when `sslmode` asks for it), with the statement timeout set.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.connect.connect().await.map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "The PostgreSQL connection closed.");
            }
        });
        self.set_up(&client).await.map_err(query_error)?;
        Ok(client)
    }

    /// What every session of the source runs first: the statement timeout.
    pub(crate) async fn set_up(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let millis = self.statement_timeout.as_millis();
        client.batch_execute(&format!("set statement_timeout = {millis}")).await
    }

    async fn run_query<B: Accumulate>(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
        sender: &tokio::sync::mpsc::Sender<Result<B>>,
    ) -> Result<()> {
        let client = self.connect().await?;
        let statement = client.prepare(sql).await.map_err(query_error)?;
        let (columns, decoders) = layout(&statement)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let rows = client.query_raw(&statement, params.iter()).await.map_err(query_error)?;
        pin_mut!(rows);
        let mut batch = B::new(&columns, batch_rows);
        while let Some(row) = rows.try_next().await.map_err(query_error)? {
            batch.push(&row, &decoders)?;
            if batch.rows() == batch_rows {
                let full = std::mem::replace(&mut batch, B::new(&columns, batch_rows));
                if sender.send(Ok(full)).await.is_err() {
                    // The reader went away: dropping the stream ends the query.
                    return Ok(());
                }
            }
        }
        if batch.rows() > 0 {
            // A closed receiver means the reader stopped early; nothing is left to do.
            let _ = sender.send(Ok(batch)).await;
        }
        Ok(())
    }

    /// Runs the query on a task of its own, its batches read ahead into a channel.
    fn spawn_query<B: Accumulate>(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<B>> {
        self.spawn_reader(sql, params, batch_rows, |source, sql, params, rows, sender| async move {
            if let Err(error) = source.run_query(&sql, &params, rows, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        })
    }

    /// [`Self::spawn_query`] over a session taken back from tokio-postgres (see
    /// `postgres_wire`).
    fn spawn_wire(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<CellBatch>> {
        self.spawn_reader(sql, params, batch_rows, |source, sql, params, rows, sender| async move {
            if let Err(error) = source.run_wire(&sql, &params, rows, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        })
    }

    /// Spawns `read` with the query and the sending end of a channel, and returns the other.
    fn spawn_reader<B, F, R>(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
        read: R,
    ) -> tokio::sync::mpsc::Receiver<Result<B>>
    where
        B: Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
        R: FnOnce(Self, String, Vec<Value>, usize, tokio::sync::mpsc::Sender<Result<B>>) -> F,
    {
        // Four batches read ahead: a metric-events run stages 16 Ki rows (two batches) at
        // once, and the query goes on reading the next chunk meanwhile. More read ahead only
        // pushes the rows out of the processor's caches before they are staged.
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(read(
            self.clone(),
            sql.to_owned(),
            params.to_vec(),
            batch_rows.max(1),
            sender,
        ));
        receiver
    }
}

/// A batch that rows are decoded into.
trait Accumulate: Send + 'static {
    fn new(columns: &Arc<[String]>, rows: usize) -> Self;
    fn push(&mut self, row: &Row, decoders: &[Decoder]) -> Result<()>;
    fn rows(&self) -> usize;
}

impl Accumulate for RowBatch {
    fn new(columns: &Arc<[String]>, rows: usize) -> Self {
        Self { columns: Arc::clone(columns), rows: Vec::with_capacity(rows) }
    }

    fn push(&mut self, row: &Row, decoders: &[Decoder]) -> Result<()> {
        self.rows.push(decode_row(row, decoders)?);
        Ok(())
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }
}

impl Accumulate for CellBatch {
    fn new(columns: &Arc<[String]>, rows: usize) -> Self {
        Self::with_capacity(Arc::clone(columns), rows)
    }

    fn push(&mut self, row: &Row, decoders: &[Decoder]) -> Result<()> {
        push_row(row, decoders, self)
    }

    fn rows(&self) -> usize {
        self.len()
    }
}

impl Source for PostgresSource {
    type Error = Error;

    async fn healthcheck(&self) -> Result<()> {
        let client = self.connect().await?;
        let row = client.query_one("select 1::int4", &[]).await.map_err(query_error)?;
        let one: i32 = row.get(0);
        if one == 1 {
            Ok(())
        } else {
            Err(Error::Internal { engine: ENGINE, message: format!("`select 1` returned {one}") })
        }
    }

    fn fetch<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> BatchStream<'a, Error> {
        crate::duckdb::receiver_stream(self.spawn_query(sql, params, batch_rows))
    }

    fn fetch_cells<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> CellStream<'a, Error> {
        let mut receiver = if self.connect.can_detach() {
            self.spawn_wire(sql, params, batch_rows)
        } else {
            self.spawn_query(sql, params, batch_rows)
        };
        Box::pin(futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }

    fn fetch_text<'a>(
        &'a self,
        sql: &'a str,
        wanted: &'a [&'a str],
        batch_rows: usize,
    ) -> TextStream<'a, Error> {
        // Room for the rows that arrive while the engine loads the committed membership.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<TextBatch>>(16);
        let source = self.clone();
        let sql = sql.to_owned();
        let wanted: Vec<String> = wanted.iter().map(|&name| name.to_owned()).collect();
        let batch_rows = batch_rows.max(1);
        tokio::spawn(async move {
            if let Err(error) = source.run_text(&sql, &wanted, batch_rows, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        Box::pin(futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }
}

pub(crate) fn connect_error(err: tokio_postgres::Error) -> Error {
    if err.as_db_error().is_some() {
        return query_error(err);
    }
    Error::Connect { engine: ENGINE, message: ldsync_core::error_chain(&err) }
}

#[expect(clippy::needless_pass_by_value, reason = "it is the `map_err` adapter of every query")]
pub(crate) fn query_error(err: tokio_postgres::Error) -> Error {
    let Some(db) = err.as_db_error() else {
        if err.is_closed() {
            return Error::Connect { engine: ENGINE, message: "the connection was closed".into() };
        }
        return Error::Query {
            engine: ENGINE,
            sqlstate: None,
            message: err.source().map_or_else(|| err.to_string(), ToString::to_string),
            position: None,
            retryable: false,
        };
    };
    let position = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(at)) => Some(*at),
        _ => None,
    };
    db_error(db.code().code(), db.message().to_owned(), position)
}

/// The error a server reported, with SQLSTATE `code`.
pub(crate) fn db_error(code: &str, message: String, position: Option<u32>) -> Error {
    // Connection exceptions, serialization failures, deadlocks, cancellations and shutdowns
    // can pass on their own; everything else is the query's or the schema's to fix.
    let retryable = code.starts_with("08")
        || matches!(code, "40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03" | "53300");
    Error::Query { engine: ENGINE, sqlstate: Some(code.to_owned()), message, position, retryable }
}

/// The names of a statement's columns, and how each is read.
pub(crate) fn layout(
    statement: &tokio_postgres::Statement,
) -> Result<(Arc<[String]>, Vec<Decoder>)> {
    let columns = statement.columns().iter().map(|c| c.name().to_owned()).collect();
    let decoders = statement
        .columns()
        .iter()
        .map(|c| Decoder::for_type(c.name(), c.type_()))
        .collect::<Result<_>>()?;
    Ok((columns, decoders))
}

/// How one column's values are read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decoder {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Timestamp,
    TimestampTz,
    Date,
    Json,
    Jsonb,
    Uuid,
}

impl Decoder {
    pub(crate) fn for_type(column: &str, ty: &Type) -> Result<Self> {
        Ok(match *ty {
            Type::BOOL => Self::Bool,
            Type::INT2 => Self::Int2,
            Type::INT4 => Self::Int4,
            Type::INT8 => Self::Int8,
            Type::FLOAT4 => Self::Float4,
            Type::FLOAT8 => Self::Float8,
            Type::NUMERIC => Self::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Self::Text,
            Type::TIMESTAMP => Self::Timestamp,
            Type::TIMESTAMPTZ => Self::TimestampTz,
            Type::DATE => Self::Date,
            Type::JSON => Self::Json,
            Type::JSONB => Self::Jsonb,
            Type::UUID => Self::Uuid,
            _ => {
                return Err(Error::UnsupportedType {
                    column: column.to_owned(),
                    type_name: ty.name().to_owned(),
                })
            }
        })
    }
}

pub(crate) fn decode_row(row: &Row, decoders: &[Decoder]) -> Result<Vec<Value>> {
    let mut uuid = uuid::Uuid::encode_buffer();
    decoders
        .iter()
        .enumerate()
        .map(|(i, decoder)| decode_cell(row, i, *decoder, &mut uuid).map(Value::from))
        .collect()
}

/// Appends the cells of `row` to `batch`, decoded from the wire without a `Value` or a
/// `String` per cell.
fn push_row(row: &Row, decoders: &[Decoder], batch: &mut CellBatch) -> Result<()> {
    let mut uuid = uuid::Uuid::encode_buffer();
    for (i, decoder) in decoders.iter().enumerate() {
        batch.push(decode_cell(row, i, *decoder, &mut uuid)?);
    }
    Ok(())
}

/// The bytes of column `i` of `row`, whatever its type (the decoder checks them).
struct RawBytes<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawBytes<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Column `i` of `row` as a cell, its text borrowed from the row (a UUID's from `uuid`).
fn decode_cell<'a>(
    row: &'a Row,
    i: usize,
    decoder: Decoder,
    uuid: &'a mut [u8; 45],
) -> Result<Cell<'a>> {
    let raw = row.try_get::<_, Option<RawBytes<'_>>>(i).map_err(query_error)?;
    decode_raw(raw.map(|RawBytes(raw)| raw), row.columns()[i].name(), decoder, uuid)
}

/// A column's value from the wire (`None` for NULL) as a cell, its text borrowed from `raw`
/// (a UUID's from `uuid`).
pub(crate) fn decode_raw<'a>(
    raw: Option<&'a [u8]>,
    column: &str,
    decoder: Decoder,
    uuid: &'a mut [u8; 45],
) -> Result<Cell<'a>> {
    let Some(raw) = raw else {
        return Ok(Cell::Null);
    };
    let bad = |what: &str| column_error(column, what);
    let fixed = |raw: &[u8], len: usize| -> Result<[u8; 8]> {
        let mut out = [0; 8];
        if raw.len() != len {
            return Err(bad("a value of the wrong length"));
        }
        out[8 - len..].copy_from_slice(raw);
        Ok(out)
    };
    Ok(match decoder {
        Decoder::Bool => Cell::Bool(fixed(raw, 1)?[7] != 0),
        Decoder::Int2 => {
            Cell::Int(i16::from_be_bytes(fixed(raw, 2)?[6..].try_into().expect("2")).into())
        }
        Decoder::Int4 => {
            Cell::Int(i32::from_be_bytes(fixed(raw, 4)?[4..].try_into().expect("4")).into())
        }
        Decoder::Int8 => Cell::Int(i64::from_be_bytes(fixed(raw, 8)?)),
        Decoder::Float4 => {
            Cell::Float(f32::from_be_bytes(fixed(raw, 4)?[4..].try_into().expect("4")).into())
        }
        Decoder::Float8 => Cell::Float(f64::from_be_bytes(fixed(raw, 8)?)),
        Decoder::Numeric => Cell::Float(
            Numeric::from_sql(&Type::NUMERIC, raw).map_err(|err| bad(&err.to_string()))?.0,
        ),
        Decoder::Text => {
            Cell::Text(std::str::from_utf8(raw).map_err(|_| bad("text that is not UTF-8"))?)
        }
        Decoder::Timestamp | Decoder::TimestampTz => {
            let micros = i64::from_be_bytes(fixed(raw, 8)?);
            if micros == i64::MAX || micros == i64::MIN {
                return Err(bad("an infinite timestamp"));
            }
            Cell::TimestampMillis(
                timestamp_millis(micros).ok_or_else(|| bad("a timestamp out of range"))?,
            )
        }
        Decoder::Date => {
            let days = i32::from_be_bytes(fixed(raw, 4)?[4..].try_into().expect("4"));
            if days == i32::MAX || days == i32::MIN {
                return Err(bad("an infinite date"));
            }
            Cell::TimestampMillis((i64::from(days) + 10_957) * 86_400_000)
        }
        Decoder::Json => {
            Cell::Json(std::str::from_utf8(raw).map_err(|_| bad("JSON that is not UTF-8"))?)
        }
        Decoder::Jsonb => match raw.split_first() {
            Some((1, json)) => {
                Cell::Json(std::str::from_utf8(json).map_err(|_| bad("JSON that is not UTF-8"))?)
            }
            _ => return Err(bad("a jsonb value of an unknown version")),
        },
        Decoder::Uuid => {
            let bytes = raw.try_into().map_err(|_| bad("a value of the wrong length"))?;
            Cell::Text(uuid::Uuid::from_bytes(bytes).hyphenated().encode_lower(uuid))
        }
    })
}

/// A value of `column` the source cannot read, and why.
pub(crate) fn column_error(column: &str, what: &str) -> Error {
    Error::Query {
        engine: ENGINE,
        sqlstate: None,
        message: format!("column `{column}`: {what}"),
        position: None,
        retryable: false,
    }
}

/// A binary `timestamp` or `timestamptz` (microseconds since 2000-01-01) as Unix epoch
/// milliseconds; `None` for the infinities and what is out of range.
#[inline]
pub(crate) fn timestamp_millis(micros: i64) -> Option<i64> {
    if micros == i64::MAX || micros == i64::MIN {
        return None;
    }
    micros.checked_add(PG_EPOCH_MICROS).map(|micros| micros.div_euclid(1_000))
}

/// A `numeric` read as the nearest `f64`.
struct Numeric(f64);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // Binary numeric: ndigits, weight, sign, dscale (i16 each), then base-10000 digits.
        let field =
            |at: usize| -> std::result::Result<i16, Box<dyn std::error::Error + Sync + Send>> {
                let bytes = raw.get(at..at + 2).ok_or("truncated numeric")?;
                Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
            };
        let ndigits = usize::try_from(field(0)?).map_err(|_| "invalid numeric")?;
        let weight = i32::from(field(2)?);
        let sign = u16::from_be_bytes([raw[4], raw[5]]);
        if sign == 0xC000 {
            return Ok(Self(f64::NAN));
        }
        let mut value = 0.0_f64;
        for k in 0..ndigits {
            let digit = f64::from(field(8 + 2 * k)?);
            let power = weight - i32::try_from(k).map_err(|_| "invalid numeric")?;
            value += digit * 10_000_f64.powi(power);
        }
        Ok(Self(if sign == 0x4000 { -value } else { value }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A query parameter, converted to whatever type the prepared statement expects.
#[derive(Debug)]
pub(crate) struct Param<'a>(pub(crate) &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!(
                "cannot bind a {} value where the query expects `{}`",
                self.0.type_name(),
                ty.name()
            )
            .into()
        };
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Bool(v), &Type::BOOL) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => {
                i32::try_from(*v).map_err(|_| mismatch())?.to_sql(ty, out)
            }
            (Value::Int(v), &Type::INT2) => {
                i16::try_from(*v).map_err(|_| mismatch())?.to_sql(ty, out)
            }
            #[expect(clippy::cast_precision_loss, reason = "a float column asks for a float")]
            (Value::Int(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out),
            (Value::Float(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Text(v), _) if <String as ToSql>::accepts(ty) => v.to_sql(ty, out),
            (Value::Json(v), &Type::JSON | &Type::JSONB) => v.to_sql(ty, out),
            (Value::TimestampMillis(ms), _) => {
                let instant = DateTime::<Utc>::from_timestamp_millis(*ms).ok_or_else(mismatch)?;
                match *ty {
                    Type::TIMESTAMPTZ => instant.to_sql(ty, out),
                    Type::TIMESTAMP => instant.naive_utc().to_sql(ty, out),
                    Type::DATE => instant.date_naive().to_sql(ty, out),
                    Type::INT8 => ms.to_sql(ty, out),
                    Type::TEXT | Type::VARCHAR => instant.to_rfc3339().to_sql(ty, out),
                    _ => Err(mismatch()),
                }
            }
            _ => Err(mismatch()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
