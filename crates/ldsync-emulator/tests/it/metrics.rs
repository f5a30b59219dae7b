//! Metrics: per-kind validation, CRUD, paging and JSON Patch.

use serde_json::{json, Value};

use crate::common::Harness;

const METRICS: &str = "/api/v2/metrics/default";

#[tokio::test]
async fn create_validates_per_kind() {
    let h = Harness::start().await;
    let ok = [
        json!({"key":"orders-placed","name":"Orders placed","kind":"custom","isNumeric":false,"eventKey":"Order placed","randomizationUnits":["user"],"tags":["warehouse-sync"]}),
        json!({"key":"revenue","name":"Revenue","kind":"custom","isNumeric":true,"eventKey":"purchase","unit":"USD","successCriteria":"HigherThanBaseline","unitAggregationType":"sum"}),
        json!({"key":"pricing-views","name":"Pricing views","kind":"pageview","urls":[{"kind":"substring","substring":"/pricing"}]}),
        json!({"key":"cta","kind":"click","selector":"#buy","urls":[{"kind":"exact","url":"https://example.com/"}]}),
        json!({"key":"p90","kind":"custom","isNumeric":true,"eventKey":"latency","successCriteria":"LowerThanBaseline","analysisType":"percentile","percentileValue":90}),
    ];
    for body in &ok {
        let r = h.post(METRICS, body).await;
        assert_eq!(r.status, 201, "{body}: {:?}", r.body);
        assert_eq!(r.body["key"], body["key"]);
        assert!(r.body["_id"].is_string() && r.body["_versionId"].is_string());
    }
    assert_eq!(
        h.get(&format!("{METRICS}/cta")).await.body["name"],
        "cta",
        "name defaults to the key"
    );
    let bad = [
        json!({"kind":"custom","isNumeric":false,"eventKey":"e"}),
        json!({"key":"k","kind":"custom","eventKey":"e"}),
        json!({"key":"k","kind":"custom","isNumeric":false}),
        json!({"key":"k","kind":"custom","isNumeric":true,"eventKey":"e"}),
        json!({"key":"k","kind":"custom","isNumeric":false,"eventKey":"e","selector":"#a"}),
        json!({"key":"k","kind":"custom","isNumeric":false,"eventKey":"e","unit":"USD"}),
        json!({"key":"k","kind":"click","urls":[{"kind":"exact","url":"u"}]}),
        json!({"key":"k","kind":"click","selector":"#a"}),
        json!({"key":"k","kind":"pageview","urls":[]}),
        json!({"key":"k","kind":"pageview","urls":[{"kind":"regex"}]}),
        json!({"key":"k","kind":"pageview","urls":[{"kind":"exact","url":"u"}],"eventKey":"e"}),
        json!({"key":"k","kind":"funnel"}),
        json!({"key":"k","kind":"custom","isNumeric":true,"eventKey":"e","successCriteria":"Better"}),
        json!({"key":"k","kind":"custom","isNumeric":true,"eventKey":"e","successCriteria":"HigherThanBaseline","analysisType":"percentile"}),
        json!({"key":"k","kind":"custom","isNumeric":true,"eventKey":"e","successCriteria":"HigherThanBaseline","analysisType":"percentile","percentileValue":101}),
        json!({"key":"k","kind":"custom","isNumeric":"no","eventKey":"e"}),
        json!("not an object"),
    ];
    for body in &bad {
        h.post(METRICS, body).await.assert_error(400, "invalid_request");
    }
    h.post(METRICS, &ok[0]).await.assert_error(409, "optimistic_locking_error");
    h.post("/api/v2/metrics/nope", &ok[0]).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn get_list_delete() {
    let h = Harness::start().await;
    for i in 0..55 {
        let body = json!({"key": format!("m{i:02}"), "kind": "custom", "isNumeric": false, "eventKey": format!("e{i}"), "tags": if i % 2 == 0 { json!(["even"]) } else { json!([]) }});
        assert_eq!(h.post(METRICS, &body).await.status, 201);
    }
    let first = h.get(METRICS).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["totalCount"], 55);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 20);
    let page = h.get(&format!("{METRICS}?limit=50&offset=50")).await;
    let keys: Vec<&str> =
        page.body["items"].as_array().unwrap().iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["m50", "m51", "m52", "m53", "m54"]);
    h.get(&format!("{METRICS}?limit=51")).await.assert_error(400, "invalid_request");
    let even = h.get(&format!("{METRICS}?filter=tags%20contains%20%5B%22even%22%5D")).await;
    assert_eq!(even.body["totalCount"], 28);
    let by_event = h.get(&format!("{METRICS}?filter=eventKeys%20anyOf%20%5B%22e3%22%5D")).await;
    assert_eq!(by_event.body["items"][0]["key"], "m03");
    let desc = h.get(&format!("{METRICS}?sort=-name&limit=1")).await;
    assert_eq!(desc.body["items"][0]["key"], "m54");
    h.get(&format!("{METRICS}/m99")).await.assert_error(404, "not_found");
    assert_eq!(h.get(&format!("{METRICS}/m01")).await.body["eventKey"], "e1");
    assert_eq!(h.delete(&format!("{METRICS}/m01")).await.status, 204);
    h.get(&format!("{METRICS}/m01")).await.assert_error(404, "not_found");
    h.delete(&format!("{METRICS}/m01")).await.assert_error(404, "not_found");
    h.get("/api/v2/metrics/nope").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn json_patch_is_applied() {
    let h = Harness::start().await;
    let path = format!("{METRICS}/revenue");
    h.post(METRICS, &json!({"key":"revenue","kind":"custom","isNumeric":true,"eventKey":"purchase","successCriteria":"HigherThanBaseline","tags":["a"]})).await;
    let r = h
        .patch(
            &path,
            &json!([
                {"op": "test", "path": "/eventKey", "value": "purchase"},
                {"op": "replace", "path": "/name", "value": "Revenue (warehouse)"},
                {"op": "add", "path": "/tags/-", "value": "warehouse-sync"},
                {"op": "replace", "path": "/successCriteria", "value": "LowerThanBaseline"},
                {"op": "add", "path": "/unit", "value": "USD"},
                {"op": "add", "path": "/eventDefault", "value": {"disabled": true, "value": 0}}
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Revenue (warehouse)");
    assert_eq!(r.body["tags"], json!(["a", "warehouse-sync"]));
    assert_eq!(r.body["successCriteria"], "LowerThanBaseline");
    assert_eq!(r.body["_version"], 2);
    let r = h.patch(&path, &json!([{"op": "replace", "path": "/eventDefault/disabled", "value": false}, {"op": "remove", "path": "/unit"}])).await;
    assert_eq!(r.body["eventDefault"]["disabled"], false);
    assert!(r.body.get("unit").is_none());
    let stored = h.emu.snapshot().metric("default", "revenue").cloned().unwrap();
    assert_eq!(stored["name"], "Revenue (warehouse)");

    h.patch(&path, &json!([{"op": "test", "path": "/name", "value": "other"}]))
        .await
        .assert_error(422, "patch_failed");
    h.patch(&path, &json!([{"op": "replace", "path": "/nothing/here", "value": 1}]))
        .await
        .assert_error(422, "patch_failed");
    h.patch(&path, &json!([{"op": "remove", "path": "/description"}]))
        .await
        .assert_error(422, "patch_failed");
    h.patch(&path, &json!([{"op": "replace", "path": "/key", "value": "k2"}]))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!([{"op": "replace", "path": "/kind", "value": "click"}]))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!([{"op": "replace", "path": "/_id", "value": "x"}]))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!([{"op": "remove", "path": "/successCriteria"}]))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!({"op": "replace"})).await.assert_error(400, "invalid_request");
    h.patch(&path, &json!([{"op": "warp", "path": "/name"}]))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&format!("{METRICS}/nope"), &json!([])).await.assert_error(404, "not_found");
    // Nothing of the failed patches stuck.
    let after: Value = h.get(&path).await.body;
    assert_eq!(after["_version"], 3);
}
