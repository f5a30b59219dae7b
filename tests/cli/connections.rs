//! `ldsync validate --check-connections` against a throwaway PostgreSQL, a DuckDB file and the
//! emulator: what answers is `ok`, what does not is named with its cause, never its secret.

use ldsync_emulator::{Emulator, EmulatorConfig};

use crate::{describe, ldsync};

const TOKEN: &str = "api-connections-token-91ac";
const PASSWORD: &str = "sekret-pw-5521";

async fn project(client_side_id: &str, emulator: &Emulator) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ldsync_source::DuckDbSource::execute_script(
        dir.path().join("local.duckdb"),
        "create table t (x int)".into(),
    )
    .await
    .unwrap();
    let config = format!(
        r#"[warehouses.pg]
postgres = "${{WAREHOUSE_URL}}"

[warehouses.local]
duckdb = "local.duckdb"

[environments.e]
token = "${{LD_ACCESS_TOKEN}}"
project = "default"
environment = "production"
client_side_id = "{client_side_id}"
api_url = "{}"
events_url = "{}"
"#,
        emulator.api_url(),
        emulator.events_url()
    );
    std::fs::write(dir.path().join("ldsync.toml"), config).unwrap();
    dir
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_answers() {
    let server = ldsync_test_support::postgres::shared();
    let emulator = Emulator::start(EmulatorConfig::default().with_token(TOKEN)).await.unwrap();
    let id = emulator.snapshot().environment("default", "production").unwrap().id.clone();
    let dir = project(&id, &emulator).await;
    let output =
        ldsync(dir.path(), &[("LD_ACCESS_TOKEN", TOKEN), ("WAREHOUSE_URL", &server.url())])
            .args(["validate", "--check-connections"])
            .output()
            .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let all = text(&output);
    assert!(all.contains("warehouse `pg`: ok: postgres answered `select 1`"), "{all}");
    assert!(all.contains("warehouse `local`: ok: duckdb answered `select 1`"), "{all}");
    assert!(all.contains(&format!("environment `e`: ok: project `default` environment `production` at {} (client-side ID {id})", emulator.api_url())), "{all}");
    assert!(!all.contains(TOKEN), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_name_the_warehouse_or_environment_and_never_the_secret() {
    let emulator = Emulator::start(EmulatorConfig::default().with_token(TOKEN)).await.unwrap();
    let dir = project("0123456789abcdef", &emulator).await;
    std::fs::remove_file(dir.path().join("local.duckdb")).unwrap();
    let closed = ldsync_test_support::free_port().unwrap();
    let url =
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{closed}/nowhere?connect_timeout=5");

    // A revoked token: 401.
    let output = ldsync(
        dir.path(),
        &[("LD_ACCESS_TOKEN", "api-revoked-token-0000"), ("WAREHOUSE_URL", &url)],
    )
    .args(["validate", "--check-connections"])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let all = text(&output);
    assert!(all.contains("warehouse `pg`: FAILED: cannot reach the postgres warehouse"), "{all}");
    assert!(all.contains("warehouse `local`: FAILED: cannot reach the duckdb warehouse"), "{all}");
    assert!(all.contains("environment `e`: FAILED: LaunchDarkly answered 401"), "{all}");
    for secret in ["api-revoked-token-0000", PASSWORD] {
        assert!(!all.contains(secret), "`{secret}` leaked:\n{all}");
    }

    // The right token, the wrong client-side ID.
    let output = ldsync(dir.path(), &[("LD_ACCESS_TOKEN", TOKEN), ("WAREHOUSE_URL", &url)])
        .args(["validate", "--check-connections", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let environment = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "environment")
        .unwrap();
    assert_eq!(environment["ok"], false);
    assert!(
        environment["detail"]
            .as_str()
            .unwrap()
            .contains("but the configuration says `0123456789abcdef`"),
        "{report:#}"
    );
    assert!(!text(&output).contains(TOKEN));
}
