//! The wire path of the PostgreSQL source (`fetch_cells`: rows read off a session taken back
//! from tokio-postgres), against a throwaway server: it gives the cells tokio-postgres's rows
//! give, binds `$1`, reports errors with their SQLSTATE, and stops the query when dropped.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use ldsync_core::{CellBatch, Secret, Source, Value};
use ldsync_source::{Error, PostgresSource};
use ldsync_test_support::postgres::shared;

/// Every type the source reads, NULLs, text past the reader's buffer, and enough rows for
/// several batches.
const TABLE: &str = "
    create table everything (
        n int8, small int2, mid int4, f4 float4, f8 float8, num numeric, flag bool, t text,
        v varchar(20), c char(3), at timestamp, atz timestamptz, d date, j json, jb jsonb, u uuid
    );
    insert into everything values
        (1, 2, 3, 1.5, -2.25, 12345.678, true, 'Zoë ✓', 'v', 'abc',
         '2026-01-02 03:04:05.678', '2026-01-02 03:04:05.678+02', '2026-01-02',
         '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
        (null, null, null, null, null, null, null, null, null, null, null, null, null, null,
         null, null),
        (-9223372036854775808, -32768, -2147483648, '3.25', '-Infinity', -0.000001, false, '',
         '', '', '1900-01-01', '1969-12-31 23:59:59.999+00', '1960-06-30', 'null', '[]',
         '00000000-0000-0000-0000-000000000000');
    insert into everything (n, t, atz)
        select i, repeat('x', i % 50) || i, '2026-01-01'::timestamptz + i * interval '1 second'
        from generate_series(1, 30000) i;
    insert into everything (n, t) values (40000, repeat('long ', 200000));";

async fn sources() -> (PostgresSource, PostgresSource) {
    let server = shared();
    let db = server.create_unique_database("wire").await.unwrap();
    let client = server.connect_to(&db).await.unwrap();
    client.batch_execute(TABLE).await.unwrap();
    let url = server.url_for(&db);
    let wire = PostgresSource::new(&Secret::new(url.clone()), Duration::from_secs(30)).unwrap();
    // A session attribute to check is left to tokio-postgres: the row path.
    let separator = if url.contains('?') { '&' } else { '?' };
    let rows = PostgresSource::new(
        &Secret::new(format!("{url}{separator}target_session_attrs=read-write")),
        Duration::from_secs(30),
    )
    .unwrap();
    (wire, rows)
}

async fn values(
    source: &PostgresSource,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>, Error> {
    let batches: Vec<CellBatch> = source.fetch_cells(sql, params, 1_000).try_collect().await?;
    Ok(batches
        .iter()
        .flat_map(|batch| {
            batch.rows().map(|row| (0..batch.width()).map(|i| Value::from(row.get(i))).collect())
        })
        .collect())
}

#[tokio::test]
async fn the_wire_gives_the_cells_that_rows_give() {
    let (wire, rows) = sources().await;
    for sql in [
        "select * from everything order by n nulls first, t",
        "select n, t from everything where false",
        "select 1 as one",
    ] {
        let got = values(&wire, sql, &[]).await.unwrap();
        assert_eq!(got, values(&rows, sql, &[]).await.unwrap(), "{sql}");
    }
    let all = values(&wire, "select * from everything", &[]).await.unwrap();
    assert_eq!(all.len(), 30_004);
    let long = all.iter().find(|row| row[0] == Value::Int(40_000)).unwrap();
    assert_eq!(long[7], Value::Text("long ".repeat(200_000)));
}

#[tokio::test]
async fn the_cursor_is_bound_as_the_statement_types_it() {
    let (wire, rows) = sources().await;
    // 2026-01-01T00:00:00Z plus 29 990 seconds.
    let cursor = Value::TimestampMillis(1_767_225_600_000 + 29_990_000);
    for sql in [
        "select n, atz from everything where atz >= $1 order by n",
        "select n from everything where atz::timestamp >= $1 order by n",
    ] {
        let got = values(&wire, sql, std::slice::from_ref(&cursor)).await.unwrap();
        // The last eleven generated rows, and the first row's 2026-01-02.
        assert!((11..=12).contains(&got.len()), "{sql}: {}", got.len());
        assert_eq!(got, values(&rows, sql, std::slice::from_ref(&cursor)).await.unwrap());
    }
    let error = values(&wire, "select n from everything where n > $1", &[]).await.unwrap_err();
    assert!(error.to_string().contains("takes 1 parameter, and 0 are given"), "{error}");
    let error = values(&wire, "select n from everything where n > $1", &[Value::Bool(true)])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot bind"), "{error}");
}

#[tokio::test]
async fn errors_name_their_sqlstate_whether_found_before_or_during_the_rows() {
    let (wire, _) = sources().await;
    let sqlstate = |error: Error| match error {
        Error::Query { sqlstate, position, retryable, .. } => (sqlstate, position, retryable),
        other => panic!("expected a query error, got {other:?}"),
    };
    // Refused when prepared.
    let error = values(&wire, "select n from no_such_table", &[]).await.unwrap_err();
    assert_eq!(sqlstate(error), (Some("42P01".to_owned()), Some(15), false));
    // Failing after thousands of rows were sent.
    let error = values(&wire, "select 1 / (i - 20000) from generate_series(1, 30000) i", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(error), (Some("22012".to_owned()), None, false));
    // Cancelled by the statement timeout: worth retrying.
    let server = shared();
    let slow =
        PostgresSource::new(&Secret::new(server.url_for("postgres")), Duration::from_millis(200))
            .unwrap();
    let error = values(&slow, "select 1 as one from pg_sleep(5)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(error), (Some("57014".to_owned()), None, true));
    // A type the source does not read is named.
    let error = values(&wire, "select point(1, 2) as p", &[]).await.unwrap_err();
    assert!(error.to_string().contains("point"), "{error}");
    // Values the common types' quick path leaves to the full decoder, which names the column.
    for sql in ["select 'infinity'::timestamptz as at", "select '-infinity'::timestamp as at"] {
        let error = values(&wire, sql, &[]).await.unwrap_err();
        assert!(error.to_string().contains("column `at`: an infinite timestamp"), "{sql}: {error}");
    }
}

#[tokio::test]
async fn dropping_the_rows_ends_the_query_on_the_server() {
    let (wire, _) = sources().await;
    let marker = "ldsync_wire_drop_marker";
    let sql = format!(
        "select i as {marker} from generate_series(1, 2000000) i, lateral pg_sleep(0.0001) s"
    );
    let mut stream = wire.fetch_cells(&sql, &[], 100);
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    let server = shared();
    let client = server.connect_to("postgres").await.unwrap();
    let running = || async {
        let row = client
            .query_one(
                "select count(*) from pg_stat_activity where query like $1 and pid <> pg_backend_pid()",
                &[&format!("%{marker}%")],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while running().await > 0 {
        assert!(std::time::Instant::now() < deadline, "the query still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_wire_reads_over_a_unix_socket_too() {
    let (wire, rows) = sources().await;
    let server = shared();
    let db = server.create_unique_database("wire_unix").await.unwrap();
    server.connect_to(&db).await.unwrap().batch_execute(TABLE).await.unwrap();
    let conn = format!(
        "host={} port={} user=postgres dbname={db}",
        server.socket_dir().display(),
        server.port()
    );
    let unix = PostgresSource::new(&Secret::new(conn), Duration::from_secs(30)).unwrap();
    let sql = "select * from everything order by n nulls first, t";
    let got = values(&unix, sql, &[]).await.unwrap();
    assert_eq!(got.len(), 30_004);
    assert_eq!(got, values(&wire, sql, &[]).await.unwrap());
    assert_eq!(got, values(&rows, sql, &[]).await.unwrap());
}
