//! `/_emulator/`: state, stats, reset, run-time config; state file; the curl walk-through.

use ldsync_emulator::{Emulator, EmulatorConfig, ProjectSpec, Snapshot, Stats};
use serde_json::{json, Value};

use crate::common::{client, send, Harness};

#[tokio::test]
async fn state_stats_reset_and_config() {
    let h = Harness::start().await;
    h.big_segment("beta").await;
    h.post(
        "/api/v2/segments/default/production/beta/contexts",
        &json!({"included": {"add": ["b", "a"]}}),
    )
    .await;
    h.import_events(
        &json!([{"kind": "custom", "key": "e", "contextKeys": {"user": "a"}}]),
        Some("p1"),
    )
    .await;
    // No auth needed here.
    let state: Snapshot =
        client().get(h.url("/_emulator/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state.segment("default", "production", "beta").unwrap().included, ["a", "b"]);
    assert_eq!(state.events[0].payload_id.as_deref(), Some("p1"));
    assert_eq!(state, h.emu.snapshot());
    let counters: Stats =
        client().get(h.url("/_emulator/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters.requests, 3);
    assert_eq!(
        counters.requests_by_route
            ["POST /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/contexts"],
        1
    );
    assert_eq!(
        counters.requests_by_route["POST /v2/event-data-import/{projectKey}/{environmentKey}"],
        1
    );

    let cfg = send(client().put(h.url("/_emulator/config")).json(&json!({
        "rate_limits": ["global=1/10s", {"route": "POST /api/v2/metrics/*", "limit": 3, "window_ms": 500}],
        "faults": ["503@route=GET /api/v2/caller-identity,nth=1"],
        "seed": 9,
        "import_delay_ms": 0
    })))
    .await;
    assert_eq!(cfg.status, 200, "{:?}", cfg.body);
    assert_eq!(cfg.body["seed"], 9);
    assert_eq!(cfg.body["rate_limits"][1]["limit"], 3);
    assert_eq!(cfg.body["faults"][0]["kind"], "503");
    let got = send(client().get(h.url("/_emulator/config"))).await;
    assert_eq!(got.body, cfg.body);
    h.get("/api/v2/caller-identity").await.assert_error(503, "service_unavailable");
    h.get("/api/v2/caller-identity").await.assert_error(429, "rate_limited");
    send(client().put(h.url("/_emulator/config")).json(&json!({"faults": ["teapot"]})))
        .await
        .assert_error(400, "invalid_request");
    send(client().put(h.url("/_emulator/config")).json(&json!({"rate_limits": [], "faults": []})))
        .await;

    assert_eq!(client().post(h.url("/_emulator/reset")).send().await.unwrap().status(), 204);
    let after = h.emu.snapshot();
    assert!(after.segment("default", "production", "beta").is_none());
    assert!(after.events.is_empty());
    assert!(after.environment("default", "test").is_some());
    assert_eq!(h.emu.stats(), Stats::default());
    // The payload IDs are forgotten too.
    assert_eq!(h.import_events(&json!([]), Some("p1")).await.status, 202);
    assert_eq!(h.emu.stats().repeated_payload_ids, 0);
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("ldsync-emulator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.json");
    let _ = std::fs::remove_file(&file);
    let config = EmulatorConfig::default().with_state_file(&file).with_projects(vec![
        ProjectSpec::new("default", ["production"]),
        "mobile=prod".parse().unwrap(),
    ]);
    let h = Harness::with(config.clone()).await;
    h.big_segment("beta").await;
    h.post(
        "/api/v2/segments/default/production/beta/contexts",
        &json!({"included": {"add": ["u1"]}}),
    )
    .await;
    h.emu.shutdown().await.unwrap();
    assert!(file.exists());
    let again = Emulator::start(config).await.unwrap();
    let snap = again.snapshot();
    assert_eq!(snap.segment("default", "production", "beta").unwrap().included, ["u1"]);
    assert!(snap.environment("mobile", "prod").is_some());
    assert!(snap.environment("default", "test").is_none());
    drop(again);
    std::fs::write(&file, "garbage").unwrap();
    let err = Emulator::start(EmulatorConfig::default().with_state_file(&file)).await.unwrap_err();
    assert!(err.to_string().contains("cannot parse state file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The walk-through of `docs/emulator.md`: create a big segment, add members, read them back.
#[tokio::test]
async fn quickstart_walkthrough() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let http = client();
    let api = emu.api_url();
    let auth = ("Authorization", ldsync_emulator::DEFAULT_TOKEN);
    let r = http
        .post(format!("{api}/api/v2/segments/default/production"))
        .header(auth.0, auth.1)
        .json(&json!({"key": "beta-testers", "name": "Beta testers", "unbounded": true, "unboundedContextKind": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{api}/api/v2/segments/default/production/beta-testers/contexts"))
        .header(auth.0, auth.1)
        .json(&json!({"included": {"add": ["user-1", "user-2"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let state: Value =
        http.get(format!("{api}/_emulator/state")).send().await.unwrap().json().await.unwrap();
    let seg = &state["projects"][0]["environments"][0]["segments"][0];
    assert_eq!(seg["key"], "beta-testers");
    assert_eq!(seg["included"], json!(["user-1", "user-2"]));
}
