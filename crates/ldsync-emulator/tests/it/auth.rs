//! Tokens: 401 without the right one, 403 for a token lacking an action.

use ldsync_emulator::{EmulatorConfig, TokenSpec};
use reqwest::Method;
use serde_json::json;

use crate::common::{send, Harness};

#[tokio::test]
async fn token_is_required() {
    let h = Harness::with(EmulatorConfig::default().with_token("secret")).await;
    assert_eq!(h.emu.token(), "secret");
    let url = h.url("/api/v2/segments/default/production");
    send(h.http.get(&url)).await.assert_error(401, "unauthorized");
    send(h.http.get(&url).header("Authorization", "wrong")).await.assert_error(401, "unauthorized");
    send(h.http.get(&url).header("Authorization", "Bearer secret"))
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(send(h.http.get(&url).header("Authorization", "secret")).await.status, 200);
    assert_eq!(h.emu.stats().unauthorized, 3);
}

#[tokio::test]
async fn limited_token_gets_403() {
    let config = EmulatorConfig::default()
        .with_limited_token("writer-only".parse::<TokenSpec>().unwrap())
        .with_limited_token(TokenSpec::limited("segments", ["createSegment", "updateIncluded"]));
    let mut h = Harness::with(config).await;
    h.big_segment("beta").await;
    h.token = "segments".into();
    assert_eq!(h.get("/api/v2/segments/default/production/beta").await.status, 200);
    assert_eq!(
        h.post("/api/v2/segments/default/production", &json!({"key": "s2", "name": "S"}))
            .await
            .status,
        201
    );
    let path = "/api/v2/segments/default/production/beta/contexts";
    assert_eq!(h.post(path, &json!({"included": {"add": ["a"]}})).await.status, 204);
    h.post(path, &json!({"excluded": {"add": ["a"]}})).await.assert_error(403, "forbidden");
    h.delete("/api/v2/segments/default/production/beta").await.assert_error(403, "forbidden");
    h.post(
        "/api/v2/metrics/default",
        &json!({"key": "m", "kind": "custom", "isNumeric": false, "eventKey": "e"}),
    )
    .await
    .assert_error(403, "forbidden");
    h.patch(
        "/api/v2/segments/default/production/beta",
        &json!([{"op": "replace", "path": "/name", "value": "n"}]),
    )
    .await
    .assert_error(403, "forbidden");
    // The events host answers 401 to a token without `importEventData`.
    h.import_events(&json!([]), None).await.assert_error(401, "unauthorized");
    assert_eq!(h.emu.stats().forbidden, 4);
    // Unknown routes and methods get LaunchDarkly bodies too.
    send(h.request(Method::GET, "/api/v2/nothing")).await.assert_error(404, "not_found");
    send(h.request(Method::PUT, "/api/v2/segments/default/production"))
        .await
        .assert_error(405, "method_not_allowed");
}
