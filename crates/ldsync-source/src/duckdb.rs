//! An embedded DuckDB database; queries may read Parquet and CSV files through SQL.
//!
//! DuckDB's API blocks, so each query runs on a blocking thread with a connection of its own
//! and hands its batches over a bounded channel: the async threads never wait on DuckDB, and a
//! slow reader slows the query instead of filling memory.

use std::{
    path::{Path, PathBuf},
    sync::{mpsc::RecvTimeoutError, Arc},
    time::Duration,
};

use duckdb::{
    types::{TimeUnit, ValueRef},
    AccessMode, Config, Connection,
};
use ldsync_core::{BatchStream, RowBatch, Source, Value};
use tokio::sync::mpsc;

use crate::{Error, Result};

const ENGINE: &str = "duckdb";

/// A DuckDB warehouse: a database file opened read-only, or an in-memory database.
#[derive(Debug, Clone)]
pub struct DuckDbSource {
    path: Option<PathBuf>,
    statement_timeout: Duration,
}

impl DuckDbSource {
    /// A source reading the database file at `path`.
    pub fn open(path: impl Into<PathBuf>, statement_timeout: Duration) -> Self {
        Self { path: Some(path.into()), statement_timeout }
    }

    /// A source on a fresh in-memory database per query (for queries over Parquet or CSV).
    pub fn in_memory() -> Self {
        Self { path: None, statement_timeout: Duration::from_hours(1) }
    }

    /// The database file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs a SQL script against the database file at `path`, creating it when missing: how
    /// demos and tests fill a warehouse. Sources themselves only ever read.
    pub async fn execute_script(path: PathBuf, sql: String) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            let connection =
                Connection::open(&path).map_err(|err| connect_error(Some(&path), &err))?;
            connection.execute_batch(&sql).map_err(|err| query_error(&err))
        })
        .await
        .map_err(|err| Error::Internal { engine: ENGINE, message: err.to_string() })?
    }

    fn connect(&self) -> Result<Connection> {
        let connection = match &self.path {
            Some(path) => {
                if !path.exists() {
                    return Err(Error::Connect {
                        engine: ENGINE,
                        message: format!("database file `{}` does not exist", path.display()),
                    });
                }
                let config = Config::default()
                    .access_mode(AccessMode::ReadOnly)
                    .and_then(|config| config.enable_autoload_extension(false))
                    .map_err(|err| connect_error(self.path.as_deref(), &err))?;
                Connection::open_with_flags(path, config)
            }
            None => Connection::open_in_memory(),
        };
        connection.map_err(|err| connect_error(self.path.as_deref(), &err))
    }

    fn run_query(
        &self,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
        sender: &mpsc::Sender<Result<RowBatch>>,
    ) -> Result<()> {
        let connection = self.connect()?;
        // A watchdog interrupts the query at the deadline unless the query ends first (its
        // sender is dropped then, which wakes the watchdog with `Disconnected`).
        let interrupt = connection.interrupt_handle();
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        let timeout = self.statement_timeout;
        std::thread::spawn(move || {
            if watchdog.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout) {
                interrupt.interrupt();
            }
        });
        let result = Self::stream_rows(&connection, sql, params, batch_rows, sender);
        drop(done);
        result
    }

    fn stream_rows(
        connection: &Connection,
        sql: &str,
        params: &[Value],
        batch_rows: usize,
        sender: &mpsc::Sender<Result<RowBatch>>,
    ) -> Result<()> {
        let mut statement = connection.prepare(sql).map_err(|err| query_error(&err))?;
        let params: Vec<duckdb::types::Value> = params.iter().map(to_duckdb).collect();
        let mut rows = statement
            .query(duckdb::params_from_iter(params.iter()))
            .map_err(|err| query_error(&err))?;
        let columns: Arc<[String]> = rows
            .as_ref()
            .map_or_else(|| Arc::from(Vec::new()), |statement| statement.column_names().into());
        let mut batch = Vec::with_capacity(batch_rows);
        while let Some(row) = rows.next().map_err(|err| query_error(&err))? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                let value = row.get_ref(i).map_err(|err| query_error(&err))?;
                values.push(from_duckdb(column, value)?);
            }
            batch.push(values);
            if batch.len() == batch_rows {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                if sender
                    .blocking_send(Ok(RowBatch { columns: Arc::clone(&columns), rows: full }))
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() {
            // A closed receiver means the reader stopped early; nothing is left to do.
            let _ = sender.blocking_send(Ok(RowBatch { columns, rows: batch }));
        }
        Ok(())
    }
}

impl Source for DuckDbSource {
    type Error = Error;

    async fn healthcheck(&self) -> Result<()> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = source.connect()?;
            let one: i32 = connection
                .query_row("select 1", [], |row| row.get(0))
                .map_err(|err| query_error(&err))?;
            if one == 1 {
                Ok(())
            } else {
                Err(Error::Internal {
                    engine: ENGINE,
                    message: format!("`select 1` returned {one}"),
                })
            }
        })
        .await
        .map_err(|err| Error::Internal { engine: ENGINE, message: err.to_string() })?
    }

    fn fetch<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> BatchStream<'a, Error> {
        let (sender, receiver) = mpsc::channel(2);
        let source = self.clone();
        let sql = sql.to_owned();
        let params = params.to_vec();
        let batch_rows = batch_rows.max(1);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = source.run_query(&sql, &params, batch_rows, &sender) {
                let _ = sender.blocking_send(Err(error));
            }
        });
        receiver_stream(receiver)
    }
}

/// The items of a channel as a stream.
pub(crate) fn receiver_stream<'a>(
    receiver: mpsc::Receiver<Result<RowBatch>>,
) -> BatchStream<'a, Error> {
    Box::pin(futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    }))
}

fn connect_error(path: Option<&Path>, err: &duckdb::Error) -> Error {
    let target =
        path.map_or_else(|| "an in-memory database".to_owned(), |p| format!("`{}`", p.display()));
    Error::Connect { engine: ENGINE, message: format!("cannot open {target}: {err}") }
}

fn query_error(err: &duckdb::Error) -> Error {
    let message = err.to_string();
    let retryable = message.contains("Interrupted") || message.contains("Could not set lock");
    Error::Query { engine: ENGINE, sqlstate: None, message, position: None, retryable }
}

fn to_duckdb(value: &Value) -> duckdb::types::Value {
    use duckdb::types::Value as Duck;
    match value {
        Value::Null => Duck::Null,
        Value::Bool(v) => Duck::Boolean(*v),
        Value::Int(v) => Duck::BigInt(*v),
        Value::Float(v) => Duck::Double(*v),
        Value::Text(v) => Duck::Text(v.clone()),
        Value::TimestampMillis(ms) => Duck::Timestamp(TimeUnit::Millisecond, *ms),
        Value::Json(v) => Duck::Text(v.to_string()),
    }
}

fn unit_to_millis(unit: TimeUnit, value: i64) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000),
        TimeUnit::Millisecond => value,
        TimeUnit::Microsecond => value.div_euclid(1_000),
        TimeUnit::Nanosecond => value.div_euclid(1_000_000),
    }
}

fn from_duckdb(column: &str, value: ValueRef<'_>) -> Result<Value> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Boolean(v) => Value::Bool(v),
        ValueRef::TinyInt(v) => Value::Int(v.into()),
        ValueRef::SmallInt(v) => Value::Int(v.into()),
        ValueRef::Int(v) => Value::Int(v.into()),
        ValueRef::BigInt(v) => Value::Int(v),
        ValueRef::UTinyInt(v) => Value::Int(v.into()),
        ValueRef::USmallInt(v) => Value::Int(v.into()),
        ValueRef::UInt(v) => Value::Int(v.into()),
        ValueRef::UBigInt(v) => {
            i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int)
        }
        ValueRef::HugeInt(v) => {
            i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int)
        }
        ValueRef::UHugeInt(v) => {
            i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int)
        }
        ValueRef::Float(v) => Value::Float(v.into()),
        ValueRef::Double(v) => Value::Float(v),
        ValueRef::Decimal(v) => Value::Float(v.to_string().parse().unwrap_or(f64::NAN)),
        ValueRef::Timestamp(unit, v) => Value::TimestampMillis(unit_to_millis(unit, v)),
        ValueRef::Date32(days) => Value::TimestampMillis(i64::from(days) * 86_400_000),
        ValueRef::Text(bytes) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        other => {
            return Err(Error::UnsupportedType {
                column: column.to_owned(),
                type_name: format!("{:?}", other.data_type()),
            })
        }
    })
}
