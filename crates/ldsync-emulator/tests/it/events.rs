//! Metric-event import on the events path.

use std::io::Write;

use serde_json::json;

use crate::common::{send, Harness};

fn events() -> serde_json::Value {
    json!([{"kind": "custom", "key": "purchase", "creationDate": 1_732_492_800_000_u64, "metricValue": 32.0,
            "contextKeys": {"user": "user-1"}, "data": {"screen": "checkout"}}])
}

#[tokio::test]
async fn accepts_and_deduplicates() {
    let h = Harness::start().await;
    assert_eq!(h.emu.events_url(), h.emu.api_url());
    let r = h.import_events(&events(), Some("p-1")).await;
    assert_eq!(r.status, 202);
    assert_eq!(h.import_events(&events(), Some("p-1")).await.status, 202);
    assert_eq!(h.import_events(&events(), Some("p-2")).await.status, 202);
    assert_eq!(h.import_events(&events(), None).await.status, 202);
    let snap = h.emu.snapshot();
    let ids: Vec<Option<&str>> = snap.events.iter().map(|p| p.payload_id.as_deref()).collect();
    assert_eq!(ids, [Some("p-1"), Some("p-2"), None]);
    assert_eq!(snap.events_in("default", "production").count(), 3);
    assert_eq!(snap.events[0].events[0]["key"], "purchase");
    assert_eq!(h.emu.stats().repeated_payload_ids, 1);
    // Every body answered 202 is counted, repeated or not.
    assert_eq!(h.emu.stats().event_import_bytes, 4 * events().to_string().len() as u64);
    // Events stored are counted once, as the snapshot holds them.
    let stored = h.emu.stats().events_stored;
    assert_eq!(stored.into_iter().collect::<Vec<_>>(), [("default/production".to_owned(), 3)]);
}

#[tokio::test]
async fn gzip_bodies() {
    let h = Harness::start().await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(events().to_string().as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let url = format!("{}/v2/event-data-import/default/production", h.emu.events_url());
    let base = || {
        h.http
            .post(&url)
            .header("Authorization", &h.token)
            .header("X-LaunchDarkly-Event-Schema", "4")
            .header("Content-Type", "application/json")
    };
    let r = send(base().header("Content-Encoding", "gzip").body(gz)).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(h.emu.snapshot().events.len(), 1);
    send(base().header("Content-Encoding", "gzip").body("not gzip"))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn rejections() {
    let h = Harness::start().await;
    let url = format!("{}/v2/event-data-import/default/production", h.emu.events_url());
    let base = || {
        h.http
            .post(&url)
            .header("Authorization", &h.token)
            .header("Content-Type", "application/json")
    };
    send(base().body(events().to_string())).await.assert_error(406, "not_acceptable");
    send(base().header("X-LaunchDarkly-Event-Schema", "3").body(events().to_string()))
        .await
        .assert_error(406, "not_acceptable");
    let with_schema = || base().header("X-LaunchDarkly-Event-Schema", "4");
    send(with_schema().body("{")).await.assert_error(400, "invalid_request");
    send(with_schema().body(json!({"kind": "custom"}).to_string()))
        .await
        .assert_error(400, "invalid_request");
    send(with_schema().body(json!([{"kind": "feature"}]).to_string()))
        .await
        .assert_error(400, "invalid_request");
    let big = vec![b' '; 10 * 1024 * 1024 + 1];
    send(with_schema().body(big)).await.assert_error(413, "request_entity_too_large");
    let other_env = format!("{}/v2/event-data-import/default/staging", h.emu.events_url());
    send(
        h.http
            .post(other_env)
            .header("Authorization", &h.token)
            .header("X-LaunchDarkly-Event-Schema", "4")
            .body("[]"),
    )
    .await
    .assert_error(404, "not_found");
    send(h.http.post(&url).header("X-LaunchDarkly-Event-Schema", "4").body("[]"))
        .await
        .assert_error(401, "unauthorized");
    assert!(h.emu.snapshot().events.is_empty());
}

#[tokio::test]
async fn separate_events_port() {
    let config = ldsync_emulator::EmulatorConfig { events_port: Some(0), ..Default::default() };
    let h = Harness::with(config).await;
    assert_ne!(h.emu.events_url(), h.emu.api_url());
    assert_eq!(h.import_events(&events(), Some("a")).await.status, 202);
}
