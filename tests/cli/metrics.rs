//! Metric definitions end to end: the binary, a DuckDB table of definitions, and the emulator.

use crate::{
    describe,
    segments::{assert_success, Project},
};

const SYNC: &str = r#"[metrics]
query = "select key, name, kind, event_key, is_numeric, unit, success_criteria, tags from defs"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_holds_the_warehouses_definitions_after_each_run() {
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "definitions", SYNC).await;
    project
        .duckdb(
            "create table defs (key varchar, name varchar, kind varchar, event_key varchar, is_numeric boolean,
                                unit varchar, success_criteria varchar, tags varchar);
             insert into defs values
               ('orders-placed', 'Orders placed', 'custom', 'order-placed', false, null, null, 'warehouse'),
               ('revenue', 'Revenue', 'custom', 'purchase', true, 'USD', 'HigherThanBaseline', 'warehouse,money'),
               ('broken', 'Broken', 'custom', null, true, null, null, null);",
        )
        .await;
    let output = project.ldsync(&["run", "--output", "json"]).await;
    assert_success(&output);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["syncs"][0]["report"]["rejected"], 1, "{document:#}");
    let snapshot = project.emulator.snapshot();
    let revenue = snapshot.metric("default", "revenue").unwrap();
    assert_eq!(revenue["unit"], "USD");
    assert_eq!(revenue["isNumeric"], true);
    assert!(snapshot.metric("default", "broken").is_none());

    // A change in the warehouse is one minimal patch; an unchanged run sends no write.
    project.duckdb("update defs set name = 'Revenue (USD)' where key = 'revenue'").await;
    let output = project.ldsync(&["plan"]).await;
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("patch `revenue`: /name: \"Revenue\" → \"Revenue (USD)\"")
            || String::from_utf8_lossy(&output.stdout)
                .contains("patch `revenue`: name: \"Revenue\" → \"Revenue (USD)\""),
        "{}",
        describe(&output)
    );
    let patches_before = patches(&project);
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(patches(&project), patches_before + 1);
    assert_eq!(
        project.emulator.snapshot().metric("default", "revenue").unwrap()["name"],
        "Revenue (USD)"
    );
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(patches(&project), patches_before + 1, "an unchanged run patched");
}

fn patches(project: &Project) -> u64 {
    project
        .emulator
        .stats()
        .requests_by_route
        .iter()
        .filter(|(route, _)| route.starts_with("PATCH"))
        .map(|(_, n)| *n)
        .sum()
}

/// What the emulator holds of the managed fields, per metric key.
fn held(project: &Project) -> std::collections::BTreeMap<String, serde_json::Value> {
    let snapshot = project.emulator.snapshot();
    let project_snapshot = snapshot.projects.iter().find(|p| p.key == "default").unwrap();
    project_snapshot
        .metrics
        .iter()
        .filter(|m| m.get("archived") != Some(&serde_json::Value::Bool(true)))
        .map(|m| {
            let fields =
                ["key", "name", "kind", "eventKey", "isNumeric", "unit", "successCriteria"];
            let managed: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .filter_map(|f| m.get(*f).map(|v| ((*f).to_owned(), v.clone())))
                .collect();
            (m["key"].as_str().unwrap().to_owned(), serde_json::Value::Object(managed))
        })
        .collect()
}

fn writes(project: &Project) -> (u64, u64) {
    let stats = project.emulator.stats();
    let count = |method: &str| {
        stats
            .requests_by_route
            .iter()
            .filter(|(route, _)| route.starts_with(method) && route.contains("/metrics/"))
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    (count("POST"), count("PATCH"))
}

const DEFS: &str = "create table defs (key varchar, name varchar, kind varchar, event_key varchar,
    is_numeric boolean, unit varchar, success_criteria varchar, tags varchar);
  insert into defs values
    ('signups', 'Sign-ups', 'custom', 'signed-up', false, null, null, 'growth'),
    ('revenue', 'Revenue', 'custom', 'purchase', true, 'USD', 'HigherThanBaseline', 'money'),
    ('latency', 'Latency', 'custom', 'page-load', true, 'ms', 'LowerThanBaseline', null);";

#[tokio::test(flavor = "multi_thread")]
async fn drift_adds_and_removes_end_in_the_warehouses_definitions_with_minimal_requests() {
    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "definitions", SYNC).await;
    project.duckdb(DEFS).await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(writes(&project), (3, 0), "three creates, no patch");
    assert_eq!(held(&project)["revenue"]["unit"], "USD");

    // Someone renames a metric in LaunchDarkly; the warehouse changes another.
    let url = format!("{}/api/v2/metrics/default/signups", project.emulator.api_url());
    #[expect(clippy::disallowed_methods, reason = "the test plays a person editing LaunchDarkly")]
    let response = reqwest::Client::new()
        .patch(url)
        .header("Authorization", crate::segments::TOKEN)
        .json(
            &serde_json::json!([{"op": "replace", "path": "/name", "value": "Renamed in the UI"}]),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    project.duckdb("update defs set unit = 'EUR' where key = 'revenue'").await;
    let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("(changed in LaunchDarkly)"),
        "{}",
        describe(&output)
    );
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(writes(&project), (3, 1 + 2), "the UI's patch and two minimal patches");
    assert_eq!(held(&project)["signups"]["name"], "Sign-ups");
    assert_eq!(held(&project)["revenue"]["unit"], "EUR");

    // A row is added and one removed: one create; the removed metric is left alone.
    project
        .duckdb("insert into defs values ('refunds', 'Refunds', 'custom', 'refund', false, null, null, null); delete from defs where key = 'latency';")
        .await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(writes(&project), (4, 3));
    let held = held(&project);
    assert!(held.contains_key("refunds") && held.contains_key("latency"), "{held:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_server_faults_end_in_the_same_definitions() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    let project = Project::with_sync("duckdb = \"warehouse.duckdb\"", "definitions", SYNC).await;
    project.duckdb(DEFS).await;
    project.duckdb("insert into defs select 'm' || i, 'Metric ' || i, 'custom', 'e' || i, false, null, null, null from range(40) t(i)").await;
    project.emulator.set_faults_with_seed(
        vec!["503@rate=0.2".parse().unwrap(), "reset@rate=0.05".parse().unwrap()],
        5,
    );
    // Without rate-limit headers the client cannot pace itself: 429s come back and are retried.
    project.emulator.set_rate_limits(vec!["global=8/1s,no-headers".parse().unwrap()]);
    for seed in 0..20_u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        project
            .duckdb(&format!("update defs set name = 'Metric {seed}-' || key where key like 'm%'"))
            .await;
        let delay = std::time::Duration::from_millis(rng.random_range(0..300));
        project.run_killed_after(&["run"], delay).await;
    }
    project.emulator.set_faults(Vec::new());
    assert_success(&project.ldsync(&["run"]).await);
    // 40 patches at 8 a second: the clean run alone must have met 429s and waited them out.
    assert!(project.emulator.stats().rate_limited > 0, "the runs met 429s");
    let held = held(&project);
    assert_eq!(held.len(), 43, "{held:?}");
    for i in 0..40 {
        assert_eq!(held[&format!("m{i}")]["name"], format!("Metric 19-m{i}"));
    }
    // Nothing is left to send.
    let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}
