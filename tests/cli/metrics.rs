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
