//! The text path of the PostgreSQL source, against a throwaway server: the binary `COPY` path
//! and the row path give the same cells, and what the `COPY` wrapper cannot take falls back.

use std::time::Duration;

use futures_util::TryStreamExt;
use ldsync_core::{Secret, Source, TextBatch, TextCell};
use ldsync_source::{Error, PostgresSource};
use ldsync_test_support::postgres::shared;

/// Cells of every row, as owned values, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Text(String),
    Null,
    Other(&'static str),
}

fn cells(batches: &[TextBatch]) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.rows() {
            rows.push(
                (0..batch.width())
                    .map(|column| match batch.cell(row, column) {
                        TextCell::Text(bytes) => {
                            Cell::Text(String::from_utf8(bytes.to_vec()).unwrap())
                        }
                        TextCell::Null => Cell::Null,
                        TextCell::Other(name) => Cell::Other(name),
                    })
                    .collect(),
            );
        }
    }
    rows
}

async fn source() -> PostgresSource {
    let server = shared();
    let db = server.create_unique_database("text").await.unwrap();
    let client = server.connect_to(&db).await.unwrap();
    client
        .batch_execute(
            "create table members (id text, n int8, flag bool, seg text);
             insert into members values
               ('ann', 1, true, 's1'), ('Zoë', -2, false, 's2'), ('', 3, null, 's1'),
               (null, null, null, null), ('line\nbreak', 5, true, 's2');
             insert into members select 'user-' || i, i, true, 's' || (i % 3) from generate_series(1, 20000) i;",
        )
        .await
        .unwrap();
    PostgresSource::new(&Secret::new(server.url_for(&db)), Duration::from_secs(30)).unwrap()
}

async fn text(
    source: &PostgresSource,
    sql: &str,
    wanted: &[&str],
) -> Result<Vec<TextBatch>, Error> {
    source.fetch_text(sql, wanted, 1_000).try_collect().await
}

/// The reduction every other source uses: rows of values, then the wanted columns.
async fn via_rows(source: &PostgresSource, sql: &str, wanted: &[&str]) -> Vec<Vec<Cell>> {
    let rows: Vec<_> = source.fetch(sql, &[], 1_000).try_collect().await.unwrap();
    cells(&rows.iter().map(|batch| TextBatch::from_rows(batch, wanted)).collect::<Vec<_>>())
}

#[tokio::test]
async fn copy_and_rows_give_the_same_cells() {
    let source = source().await;
    for (sql, wanted) in [
        ("select id as context_key from members order by n nulls first, id", &["context_key"][..]),
        (
            "select id as context_key, seg as segment_key from members",
            &["context_key", "segment_key"][..],
        ),
        // Integers are keys in decimal; a trailing comment and semicolon do not break the wrapper.
        ("select n as context_key from members -- every member\n;", &["context_key"][..]),
    ] {
        let batches = text(&source, sql, wanted).await.unwrap();
        assert!(batches[0].is_empty(), "the first batch names the columns before any row");
        assert!(batches[0].present.iter().all(|p| *p));
        let got = cells(&batches);
        assert_eq!(got.len(), 20_005, "{sql}");
        assert_eq!(got, via_rows(&source, sql, wanted).await, "{sql}");
    }
}

#[tokio::test]
async fn what_copy_cannot_carry_goes_by_rows() {
    let source = source().await;
    // A boolean is not a key: the row path names its type, for the rejection's reason.
    let batches =
        text(&source, "select flag as context_key from members", &["context_key"]).await.unwrap();
    let got = cells(&batches);
    assert_eq!(got.len(), 20_005);
    assert!(got.contains(&vec![Cell::Other("boolean")]));
    assert!(got.contains(&vec![Cell::Null]));
    // A column named twice is ambiguous to the wrapper; the rows path takes the first.
    let sql = "select id as context_key, seg as context_key from members";
    let batches = text(&source, sql, &["context_key"]).await.unwrap();
    assert_eq!(cells(&batches), via_rows(&source, sql, &["context_key"]).await);
}

#[tokio::test]
async fn a_missing_column_is_reported_before_anything_runs() {
    let source = source().await;
    let batches =
        text(&source, "select id as user_id from members", &["context_key", "segment_key"])
            .await
            .unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(&*batches[0].present, [false, false]);
    assert_eq!(&*batches[0].columns, ["user_id".to_owned()]);
}

#[tokio::test]
async fn a_broken_query_names_its_sqlstate_and_position() {
    let source = source().await;
    let error = text(&source, "select id as context_key from no_such_table", &["context_key"])
        .await
        .unwrap_err();
    match error {
        Error::Query { sqlstate, position, message, .. } => {
            assert_eq!(sqlstate.as_deref(), Some("42P01"), "{message}");
            assert_eq!(position, Some(31), "{message}");
        }
        other => panic!("expected a query error, got {other:?}"),
    }
}
