//! Metric events end to end: the binary, DuckDB and PostgreSQL warehouses, and the emulator.
//! Every event must arrive exactly once, across incremental runs, late rows and backfills.

use std::collections::BTreeMap;

use crate::{
    describe,
    segments::{assert_success, Project},
};

const SYNC: &str = r#"[metric_events]
context_kind = "user"
lookback = "2h"
initial_cursor = "2026-01-01T00:00:00Z"
query = """
select order_id as event_id, 'checkout-completed' as event_key, user_id as context_key,
       total as metric_value, placed_at as occurred_at
from orders where placed_at >= $1
"""
"#;

/// The events the emulator stored, by `data`-less identity: (context key, time, value) → count.
fn stored(project: &Project) -> BTreeMap<(String, i64), usize> {
    let snapshot = project.emulator.snapshot();
    let mut counts = BTreeMap::new();
    for event in snapshot.events_in("default", "production") {
        assert_eq!(event["kind"], "custom");
        assert_eq!(event["key"], "checkout-completed");
        let user = event["contextKeys"]["user"].as_str().unwrap().to_owned();
        let at = event["creationDate"].as_i64().unwrap();
        *counts.entry((user, at)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_events_arrive_exactly_once_across_rounds_and_late_rows() {
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "checkouts", SYNC).await;
    project
        .duckdb("create table orders (order_id varchar, user_id varchar, total double, placed_at timestamp)")
        .await;
    let mut expected = 0;
    for round in 0..4_i64 {
        // Each round adds 50 orders an hour later than the last, and 5 late ones 30 minutes
        // before the newest delivered time (inside the lookback).
        let base = 1_767_229_200 + round * 3_600; // 2026-01-01T01:00:00Z + round hours
        project
            .duckdb(&format!(
                "insert into orders select 'o{round}-' || i, 'u' || (i % 7), i * 1.5, to_timestamp({base} + i * 60)::timestamp from range(50) t(i);
                 insert into orders select 'late{round}-' || i, 'late', 1, to_timestamp({base} - 1800 + i)::timestamp from range(5) t(i);"
            ))
            .await;
        expected += 55;
        let output = project.ldsync(&["run", "checkouts"]).await;
        assert_success(&output);
        let counts = stored(&project);
        let total: usize = counts.values().sum();
        assert_eq!(total, expected, "round {round}\n{}", describe(&output));
        assert!(counts.values().all(|&n| n == 1), "an event arrived twice: {counts:?}");
    }
    assert_eq!(project.emulator.stats().repeated_payload_ids, 0);
    // Nothing new: nothing sent.
    let before = project.emulator.stats().requests;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.emulator.stats().requests, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_events_and_a_backfill_never_resend() {
    let server = ldsync_test_support::postgres::shared();
    let db = server.create_unique_database("events").await.unwrap();
    let client = server.connect_to(&db).await.unwrap();
    client
        .batch_execute(
            "create table orders (order_id text, user_id text, total numeric, placed_at timestamptz);
             insert into orders select 'o' || i, 'u' || (i % 9), i, timestamptz '2026-01-01 00:00:00+00' + i * interval '10 minutes'
             from generate_series(1, 300) i;",
        )
        .await
        .unwrap();
    let warehouse = format!("postgres = \"{}\"", server.url_for(&db));
    let project = Project::with_sync(&warehouse, "checkouts", SYNC).await;
    let output = project.ldsync(&["run", "--output", "json"]).await;
    assert_success(&output);
    assert_eq!(stored(&project).values().sum::<usize>(), 300, "{}", describe(&output));

    // A backfill over the same days finds every event already delivered: it sends nothing.
    let before = project.emulator.stats().requests;
    let output = project
        .ldsync(&[
            "backfill",
            "checkouts",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-04",
            "--window",
            "1d",
        ])
        .await;
    assert_success(&output);
    assert_eq!(project.emulator.stats().requests, before, "{}", describe(&output));
    assert_eq!(stored(&project).values().sum::<usize>(), 300);

    // A window so short the range would need millions of them is refused up front.
    let output = project
        .ldsync(&[
            "backfill",
            "checkouts",
            "--from",
            "2020-01-01",
            "--to",
            "2026-01-04",
            "--window",
            "1ms",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("choose a longer `--window`"),
        "{}",
        describe(&output)
    );

    // `plan` counts what a run would send, and sends nothing.
    client
        .batch_execute(
            "insert into orders values ('new-1', 'u1', 5, timestamptz '2026-01-03 02:00:00+00')",
        )
        .await
        .unwrap();
    let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 to send"), "{}", describe(&output));
    assert_eq!(stored(&project).values().sum::<usize>(), 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_event_rows_are_rejected_and_the_rest_delivered() {
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "checkouts", SYNC).await;
    project
        .duckdb(
            "create table orders (order_id varchar, user_id varchar, total double, placed_at timestamp);
             insert into orders values ('a', 'u1', 1, timestamp '2026-01-02 00:00:00'),
                                       ('b', null, 1, timestamp '2026-01-02 00:01:00'),
                                       ('c', '', 1, timestamp '2026-01-02 00:02:00'),
                                       ('d', 'u3', 1, timestamp '2999-01-01 00:00:00');",
        )
        .await;
    let output = project.ldsync(&["run", "--output", "json"]).await;
    assert_success(&output);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["syncs"][0]["report"]["rejected"], 3, "{document:#}");
    let reasons = document["syncs"][0]["report"]["rejections"].to_string();
    assert!(reasons.contains("more than a day in the future"), "{reasons}");
    assert_eq!(stored(&project).values().sum::<usize>(), 1);
    // The cursor did not jump to the year 2999: a late row is still read.
    project
        .duckdb("insert into orders values ('e', 'u4', 1, timestamp '2026-01-02 00:00:30')")
        .await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(stored(&project).values().sum::<usize>(), 2);
}

/// Every order in the DuckDB warehouse: (user, epoch ms).
async fn source_orders(project: &Project) -> std::collections::BTreeSet<(String, i64)> {
    let path = project.path().join("warehouse.duckdb");
    let query =
        "select user_id, epoch_ms(placed_at) from orders where placed_at >= timestamp '2026-01-01'";
    let rows = tokio::task::spawn_blocking(move || {
        // A read-only copy, so the check never holds the file while a killed run's lock lingers.
        let copy = path.with_extension("check.duckdb");
        std::fs::copy(&path, &copy).unwrap();
        let connection = duckdb::Connection::open(&copy).unwrap();
        let mut statement = connection.prepare(query).unwrap();
        let rows: Vec<(String, i64)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    })
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_runs_and_backfills_loses_and_doubles_nothing() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    let sync = SYNC.replace("lookback = \"2h\"", "lookback = \"2h\"\nbatch_size = 20");
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "checkouts", &sync).await;
    project
        .duckdb("create table orders (order_id varchar, user_id varchar, total double, placed_at timestamp)")
        .await;
    // Paced and faulty: runs last long enough to be killed half-way through their batches.
    project
        .emulator
        .set_rate_limits(vec!["POST /v2/event-data-import/*/*=200/1s".parse().unwrap()]);
    project.emulator.set_faults_with_seed(
        vec![
            "503@route=POST /v2/event-data-import/*/*,rate=0.1".parse().unwrap(),
            "reset@route=POST /v2/event-data-import/*/*,rate=0.05".parse().unwrap(),
            "trickle@route=POST /v2/event-data-import/*/*,rate=0.03".parse().unwrap(),
        ],
        9,
    );
    for seed in 0..20_i64 {
        let mut rng = SmallRng::seed_from_u64(seed.cast_unsigned());
        // 100 new orders an hour later each round, and a few late ones inside the lookback.
        let base = 1_767_229_200 + seed * 3_600;
        project
            .duckdb(&format!(
                "insert into orders select 's{seed}-' || i, 'u' || (i % 13), i, to_timestamp({base} + i * 30)::timestamp from range(100) t(i);
                 insert into orders select 'late{seed}-' || i, 'late', 1, to_timestamp({base} - 900 + i)::timestamp from range(3) t(i);"
            ))
            .await;
        let backfill = seed % 5 == 4;
        let backfill_args = [
            "backfill",
            "checkouts",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
            "--window",
            "6h",
        ];
        let args: &[&str] = if backfill { &backfill_args } else { &["run"] };
        let delay = std::time::Duration::from_millis(rng.random_range(0..400));
        let killed = project.run_killed_after(args, delay).await;
        let sent = project.emulator.snapshot().events_in("default", "production").count();
        eprintln!(
            "seed {seed}: {} after {delay:?}; {sent} events stored",
            if killed { "killed" } else { "finished" }
        );
    }
    project.emulator.set_faults(Vec::new());
    // One clean run finishes whatever a killed run or backfill promised, and sends the rest.
    assert_success(&project.ldsync(&["run"]).await);
    let output = project
        .ldsync(&[
            "backfill",
            "checkouts",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
            "--window",
            "6h",
        ])
        .await;
    assert_success(&output);
    let counts = stored(&project);
    assert!(counts.values().all(|&n| n == 1), "an event was stored twice");
    let stored_keys: std::collections::BTreeSet<_> = counts.into_keys().collect();
    assert_eq!(stored_keys, source_orders(&project).await, "{}", describe(&output));
    eprintln!(
        "repeated payload IDs (resends deduplicated): {}",
        project.emulator.stats().repeated_payload_ids
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stamped_in_the_future_never_hides_late_rows() {
    let sync = SYNC.replace(
        "initial_cursor = \"2026-01-01T00:00:00Z\"",
        "initial_cursor = \"2020-01-01T00:00:00Z\"",
    );
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "checkouts", &sync).await;
    let now = chrono::Utc::now().timestamp();
    let at = |offset_secs: i64| format!("to_timestamp({})::timestamp", now + offset_secs);
    project
        .duckdb(&format!(
            "create table orders (order_id varchar, user_id varchar, total double, placed_at timestamp);
             insert into orders values ('a', 'u1', 1, {}), ('b', 'u2', 1, {}), ('skewed', 'u3', 1, {});",
            at(-30 * 60),
            at(-20 * 60),
            at(20 * 3600)
        ))
        .await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(stored(&project).values().sum::<usize>(), 3);
    // A row that arrives late, 25 minutes old: inside the lookback of the run's clock, though
    // far behind the skewed event.
    project.duckdb(&format!("insert into orders values ('late', 'u4', 1, {})", at(-25 * 60))).await;
    let output = project.ldsync(&["run"]).await;
    assert_success(&output);
    let counts = stored(&project);
    assert_eq!(counts.values().sum::<usize>(), 4, "{}", describe(&output));
    assert!(counts.values().all(|&n| n == 1));
}
