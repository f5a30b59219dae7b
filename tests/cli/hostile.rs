//! Hostile input through the binary: wide and empty results, NULL everywhere, huge JSON,
//! numbers that overflow, timestamps far away, deep and enormous TOML, variables holding line
//! breaks. Each gets a clear error or correct handling: never a panic (exit 101), never a
//! partial commit (a clean run afterwards leaves the emulator exactly right).

use std::process::Output;

use crate::{
    describe,
    segments::{assert_success, Project},
};

fn not_a_panic(output: &Output) {
    assert_ne!(output.status.code(), Some(101), "ldsync panicked\n{}", describe(output));
    assert!(output.status.code().is_some(), "ldsync died of a signal\n{}", describe(output));
}

/// Everything the command printed, on either stream.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wide_empty_and_null_results_are_handled_or_refused_clearly() {
    let project = Project::new(
        "duckdb = \"warehouse.duckdb\"",
        "[segment]\nkey = \"wide\"\nquery = \"select * from wide\"\n",
    )
    .await;
    // A hundred columns, one of them the key: the others are ignored.
    let columns: Vec<String> = (0..99).map(|i| format!("i as c{i}")).collect();
    project
        .duckdb(&format!(
            "create table wide as select 'user-' || i as context_key, {} from range(50) t(i);",
            columns.join(", ")
        ))
        .await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.members("wide").len(), 50);

    // NULL everywhere: every row is rejected with its reason, and the guardrail keeps the
    // segment rather than emptying it.
    project.duckdb("update wide set context_key = null").await;
    let output = project.ldsync(&["run"]).await;
    not_a_panic(&output);
    assert!(printed(&output).contains("refusing to empty it"), "{}", describe(&output));
    assert_eq!(project.members("wide").len(), 50);
    let rejected = project.ldsync(&["status", "--rejected"]).await;
    assert!(
        String::from_utf8_lossy(&rejected.stdout).contains("`context_key` is NULL"),
        "{}",
        describe(&rejected)
    );

    // A result without the key column names the columns it has.
    project.duckdb("alter table wide drop column context_key").await;
    let output = project.ldsync(&["run"]).await;
    not_a_panic(&output);
    assert!(
        printed(&output).contains("must return a `context_key` column"),
        "{}",
        describe(&output)
    );
    assert!(printed(&output).contains("`c0`"), "{}", describe(&output));
    assert_eq!(project.members("wide").len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_with_no_columns_is_a_contract_error() {
    let server = ldsync_test_support::postgres::shared();
    let db = server.create_unique_database("hostile").await.unwrap();
    server
        .connect_to(&db)
        .await
        .unwrap()
        .batch_execute("create table t (id text); insert into t values ('a');")
        .await
        .unwrap();
    let project = Project::new(
        &format!("postgres = \"{}\"", server.url_for(&db)),
        "[segment]\nkey = \"none\"\nquery = \"select from t\"\n",
    )
    .await;
    let output = project.ldsync(&["run"]).await;
    not_a_panic(&output);
    assert!(printed(&output).contains("it returned no columns"), "{}", describe(&output));
}

const EVENTS: &str = r#"[metric_events]
lookback = "1h"
initial_cursor = "0001-01-01T00:00:00Z"
query = """
select id as event_id, 'hostile' as event_key, user_id as context_key, value as metric_value,
       happened as occurred_at, data from events where happened >= $1
"""
"#;

#[tokio::test(flavor = "multi_thread")]
async fn hostile_events_are_rejected_with_reasons_and_the_rest_arrive_once() {
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "events", EVENTS).await;
    let huge = format!("{{\"blob\": \"{}\"}}", "x".repeat(2_000_000));
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    project
        .duckdb(&format!(
            "create table events (id varchar, user_id varchar, value double, happened timestamp, data json);
             insert into events values
               ('ok-1', 'u1', 1.5, timestamp '2026-01-02 00:00:00', '{{\"plan\": \"pro\"}}'),
               ('null-user', null, 1, timestamp '2026-01-02 00:00:01', null),
               ('null-all', null, null, null, null),
               ('infinite', 'u2', 'inf'::double, timestamp '2026-01-02 00:00:02', null),
               ('not-a-number', 'u3', 'nan'::double, timestamp '2026-01-02 00:00:03', null),
               ('ancient', 'u4', 1, timestamp '0001-01-01 00:00:00', null),
               ('far-future', 'u5', 1, timestamp '9999-12-31 23:59:59', null),
               ('huge-data', 'u6', 1, timestamp '2026-01-02 00:00:04', '{huge}'),
               ('deep-data', 'u7', 1, timestamp '2026-01-02 00:00:05', '{deep}'),
               ('not-an-object', 'u8', 1, timestamp '2026-01-02 00:00:06', '[1, 2]'),
               ('ok-2', 'u9', 2.5, timestamp '2026-01-02 00:00:07', null);"
        ))
        .await;
    let output = project.ldsync(&["run", "--output", "json"]).await;
    not_a_panic(&output);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rejections = report["syncs"][0]["report"]["rejections"].to_string();
    for reason in [
        "`context_key` is NULL",
        "`metric_value` is inf, expected a finite number",
        "`metric_value` is NaN",
        "more than a day in the future",
        "`data` is not valid JSON",
        "`data` is an array, expected a JSON object",
    ] {
        assert!(rejections.contains(reason), "{reason}: {report:#}");
    }
    // No event arrived twice, the good ones arrived, and the unrepresentable values did not.
    let stored: Vec<serde_json::Value> =
        project.emulator.snapshot().events_in("default", "production").cloned().collect();
    let users: Vec<&str> =
        stored.iter().filter_map(|e| e["contextKeys"]["user"].as_str()).collect();
    assert!(users.contains(&"u1") && users.contains(&"u9"), "{users:?}");
    assert!(
        !users.contains(&"u2") && !users.contains(&"u3"),
        "a non-finite value was sent: {users:?}"
    );
    assert!(!users.contains(&"u5"), "an event from the far future was sent");
    let mut sorted = users.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), users.len(), "an event arrived twice: {users:?}");
    // Nothing was left half-done: the next run sends nothing new.
    let before = project.emulator.stats().requests;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.emulator.stats().requests, before);
}

/// A project file of 200 000 warehouses (about 8 MB).
fn enormous(base: &str) -> String {
    use std::fmt::Write as _;
    let mut text = base.to_owned();
    for i in 0..200_000 {
        let _ = write!(text, "[warehouses.w{i}]\nduckdb = \"w{i}.duckdb\"\n");
    }
    text
}

#[test]
fn deep_enormous_and_broken_toml_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    let base = "[warehouses.w]\nduckdb = \"w.duckdb\"\n\n[environments.e]\ntoken = \"${LD_ACCESS_TOKEN}\"\nproject = \"p\"\nenvironment = \"production\"\n";
    let cases = [
        ("deep arrays", format!("{base}deep = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000))),
        (
            "deep tables",
            format!("{base}deep = {}1{}\n", "{ a = ".repeat(50_000), " }".repeat(50_000)),
        ),
        ("enormous", enormous(base)),
        ("binary", String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2]).into_owned()),
    ];
    for (name, text) in cases {
        std::fs::write(dir.path().join("ldsync.toml"), text).unwrap();
        let output = crate::ldsync(dir.path(), &[("LD_ACCESS_TOKEN", "t")])
            .arg("validate")
            .output()
            .unwrap();
        not_a_panic(&output);
        if name != "enormous" {
            assert_eq!(output.status.code(), Some(78), "{name}: {}", describe(&output));
            assert!(printed(&output).contains("ldsync.toml"), "{name}: {}", describe(&output));
        }
    }
}

#[test]
fn variables_holding_line_breaks_cannot_change_a_files_structure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    std::fs::write(
        dir.path().join("ldsync.toml"),
        "[warehouses.w]\npostgres = \"${WAREHOUSE_URL}\"\n\n[environments.e]\ntoken = \"${LD_ACCESS_TOKEN}\"\nproject = \"p\"\nenvironment = \"production\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("syncs/s.toml"),
        "warehouse = \"w\"\nenvironment = \"e\"\n[segment]\nkey = \"s\"\nquery = \"select 1 as context_key\"\n",
    )
    .unwrap();
    let sneaky = "postgres://u@127.0.0.1:1/db\"\n[warehouses.evil]\nduckdb = \"/etc/passwd";
    let output = crate::ldsync(
        dir.path(),
        &[("WAREHOUSE_URL", sneaky), ("LD_ACCESS_TOKEN", "line1\nline2-secret")],
    )
    .args(["validate", "--output", "json"])
    .output()
    .unwrap();
    not_a_panic(&output);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!report.contains("evil"), "a variable added a warehouse: {}", describe(&output));
    assert!(
        !report.contains("line2-secret") && !printed(&output).contains("line2-secret"),
        "{}",
        describe(&output)
    );
}
