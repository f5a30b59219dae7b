//! Faults: statuses, resets, hangs, trickles; scripted and seeded; no state change.

use std::time::Duration;

use ldsync_emulator::{EmulatorConfig, FaultKind, FaultSpec};
use serde_json::json;

use crate::common::{send, Harness};

const SEGS: &str = "/api/v2/segments/default/production";

#[tokio::test]
async fn scripted_statuses_change_nothing() {
    let faults = vec![
        "500@route=POST /api/v2/segments/*/*,nth=1".parse().unwrap(),
        "502@route=POST /api/v2/segments/*/*,nth=2".parse().unwrap(),
        "503@route=POST /api/v2/segments/*/*,nth=3".parse().unwrap(),
        "504@route=POST /api/v2/segments/*/*,nth=4".parse().unwrap(),
    ];
    let h = Harness::with(EmulatorConfig::default().with_faults(faults)).await;
    let body = json!({"key": "beta", "name": "Beta", "unbounded": true});
    for (status, code) in [
        (500, "internal_server_error"),
        (502, "bad_gateway"),
        (503, "service_unavailable"),
        (504, "gateway_timeout"),
    ] {
        h.post(SEGS, &body).await.assert_error(status, code);
        assert!(h.emu.snapshot().segment("default", "production", "beta").is_none());
    }
    assert_eq!(h.post(SEGS, &body).await.status, 201);
    let stats = h.emu.stats();
    assert_eq!(stats.faults_injected, 4);
    assert_eq!(stats.faults_by_kind["503"], 1);
}

#[tokio::test]
async fn connection_reset_on_the_third_import() {
    let spec: FaultSpec = "reset@route=POST /v2/event-data-import/*/*,nth=3".parse().unwrap();
    let h = Harness::with(EmulatorConfig::default().with_faults(vec![spec])).await;
    let events =
        json!([{"kind": "custom", "key": "e", "creationDate": 1, "contextKeys": {"user": "u"}}]);
    assert_eq!(h.import_events(&events, Some("1")).await.status, 202);
    assert_eq!(h.import_events(&events, Some("2")).await.status, 202);
    let url = format!("{}/v2/event-data-import/default/production", h.emu.events_url());
    let err = h
        .http
        .post(&url)
        .header("Authorization", &h.token)
        .header("X-LaunchDarkly-Event-Schema", "4")
        .json(&events)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    assert!(err.is_err(), "the third request must fail at the connection: {err:?}");
    assert_eq!(h.import_events(&events, Some("3")).await.status, 202);
    assert_eq!(h.emu.snapshot().events.len(), 3);
    assert_eq!(h.emu.stats().faults_by_kind["reset"], 1);
}

#[tokio::test]
async fn hang_and_trickle() {
    let h = Harness::start().await;
    h.emu.set_faults(vec![FaultSpec::new(FaultKind::Hang)
        .on_route("GET /api/v2/versions")
        .unwrap()
        .nth(1)]);
    let timed_out = h
        .http
        .get(h.url("/api/v2/versions"))
        .header("Authorization", &h.token)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(timed_out.unwrap_err().is_timeout());
    assert_eq!(h.get("/api/v2/versions").await.status, 200);

    h.emu.set_faults(vec!["trickle@route=GET /api/v2/versions,delay=5ms,max=1".parse().unwrap()]);
    let started = std::time::Instant::now();
    let r = send(h.request(reqwest::Method::GET, "/api/v2/versions")).await;
    r.assert_error(503, "service_unavailable");
    assert!(started.elapsed() >= Duration::from_millis(5 * 40), "{:?}", started.elapsed());
    assert_eq!(h.get("/api/v2/versions").await.status, 200);
}

#[tokio::test]
async fn seeded_rates_are_deterministic() {
    async fn run(seed: u64) -> Vec<u16> {
        let h = Harness::with(
            EmulatorConfig::default()
                .with_seed(seed)
                .with_faults(vec!["503@rate=0.3".parse().unwrap()]),
        )
        .await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(h.get("/api/v2/versions").await.status);
        }
        out
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    let faulted = a.iter().filter(|s| **s == 503).count();
    assert!((4..=24).contains(&faulted), "{faulted} of 40");
}
