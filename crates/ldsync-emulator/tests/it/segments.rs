//! Segments: CRUD, patches, big-segment targets and membership.

use serde_json::json;

use crate::common::Harness;

const SEGS: &str = "/api/v2/segments/default/production";

#[tokio::test]
async fn environment_has_its_client_side_id() {
    let h = Harness::start().await;
    let r = h.get("/api/v2/projects/default/environments/production").await;
    assert_eq!(r.status, 200);
    let id = r.body["_id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(h.emu.snapshot().environment("default", "production").unwrap().id, id);
    let test = h.get("/api/v2/projects/default/environments/test").await;
    assert_ne!(test.body["_id"], r.body["_id"]);
    h.get("/api/v2/projects/default/environments/staging").await.assert_error(404, "not_found");
    h.get("/api/v2/projects/nope/environments/production").await.assert_error(404, "not_found");
    assert_eq!(h.get("/api/v2/caller-identity").await.status, 200);
    assert_eq!(h.get("/api/v2/versions").await.body["latestVersion"], 20_240_415);
}

#[tokio::test]
async fn create_get_list_delete() {
    let h = Harness::start().await;
    let r = h.big_segment("beta").await;
    assert_eq!(r.body["unbounded"], true);
    assert_eq!(r.body["unboundedContextKind"], "user");
    assert_eq!(r.body["version"], 1);
    let std = h.post(SEGS, &json!({"key": "std", "name": "Standard", "tags": ["t"]})).await;
    assert_eq!(std.status, 201);
    assert_eq!(std.body["unbounded"], false);
    // Default context kind is `user`.
    let org = h.post(SEGS, &json!({"key": "org", "name": "Org", "unbounded": true})).await;
    assert_eq!(org.body["unboundedContextKind"], "user");

    h.post(SEGS, &json!({"key": "beta", "name": "again"}))
        .await
        .assert_error(409, "optimistic_locking_error");
    h.post(SEGS, &json!({"name": "no key"})).await.assert_error(400, "invalid_request");
    h.post(SEGS, &json!({"key": "bad key", "name": "x"}))
        .await
        .assert_error(400, "invalid_request");
    h.post(SEGS, &json!({"key": "k", "name": "x", "unbounded": "yes"}))
        .await
        .assert_error(400, "invalid_request");
    h.post(SEGS, &json!([1])).await.assert_error(400, "invalid_request");
    h.post("/api/v2/segments/default/staging", &json!({"key": "k", "name": "x"}))
        .await
        .assert_error(404, "not_found");
    let raw = crate::common::send(h.request(reqwest::Method::POST, SEGS).body("{not json")).await;
    raw.assert_error(400, "invalid_request");

    let got = h.get(&format!("{SEGS}/beta")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["key"], "beta");
    h.get(&format!("{SEGS}/nope")).await.assert_error(404, "not_found");

    let list = h.get(&format!("{SEGS}?limit=2")).await;
    assert_eq!(list.body["totalCount"], 3);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    let page2 = h.get(&format!("{SEGS}?limit=2&offset=2")).await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 1);
    let big = h.get(&format!("{SEGS}?filter=unbounded%20equals%20true")).await;
    assert_eq!(big.body["totalCount"], 2);
    let tagged = h.get(&format!("{SEGS}?filter=tags%20anyOf%20%5B%22t%22%5D")).await;
    assert_eq!(tagged.body["totalCount"], 1);
    h.get(&format!("{SEGS}?limit=x")).await.assert_error(400, "invalid_request");

    assert_eq!(h.delete(&format!("{SEGS}/std")).await.status, 204);
    h.delete(&format!("{SEGS}/std")).await.assert_error(404, "not_found");
    assert_eq!(h.get(SEGS).await.body["totalCount"], 2);
}

#[tokio::test]
async fn contexts_add_remove_and_membership() {
    let h = Harness::start().await;
    h.big_segment("beta").await;
    let path = format!("{SEGS}/beta/contexts");
    let r = h
        .post(&path, &json!({"included": {"add": ["u3", "u1", "u2"]}, "excluded": {"add": ["x1"]}}))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_null());
    let r = h.post(&path, &json!({"included": {"remove": ["u2", "absent"], "add": ["u1"]}})).await;
    assert_eq!(r.status, 204);
    // The legacy twin writes the same lists.
    assert_eq!(
        h.post(&format!("{SEGS}/beta/users"), &json!({"included": {"add": ["u4"]}})).await.status,
        204
    );
    let snap = h.emu.snapshot();
    let seg = snap.segment("default", "production", "beta").unwrap();
    assert_eq!(seg.included, vec!["u1", "u3", "u4"]);
    assert_eq!(seg.excluded, vec!["x1"]);

    let m = h.get(&format!("{SEGS}/beta/contexts/u1")).await;
    assert_eq!(m.body, json!({"userKey": "u1", "included": true, "excluded": false}));
    let m = h.get(&format!("{SEGS}/beta/users/x1")).await;
    assert_eq!(m.body, json!({"userKey": "x1", "included": false, "excluded": true}));
    let m = h.get(&format!("{SEGS}/beta/contexts/nobody")).await;
    assert_eq!(m.body["included"], false);

    let got = h.get(&format!("{SEGS}/beta")).await;
    assert_eq!(got.body["_unboundedMetadata"]["includedCount"], 3);
    assert_eq!(got.body["_unboundedMetadata"]["excludedCount"], 1);

    h.post(&path, &json!({"included": {"add": "u1"}})).await.assert_error(400, "invalid_request");
    h.post(&path, &json!({"included": {"add": [""]}})).await.assert_error(400, "invalid_request");
    h.post(&path, &json!({"included": ["u1"]})).await.assert_error(400, "invalid_request");
    h.post(&format!("{SEGS}/nope/contexts"), &json!({})).await.assert_error(404, "not_found");
    h.post(SEGS, &json!({"key": "std", "name": "Standard"})).await;
    h.post(&format!("{SEGS}/std/contexts"), &json!({"included": {"add": ["a"]}}))
        .await
        .assert_error(400, "invalid_request");
    h.get(&format!("{SEGS}/std/contexts/a")).await.assert_error(400, "invalid_request");
    h.get(&format!("{SEGS}/nope/contexts/a")).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn contexts_endpoint_handles_large_batches() {
    let h = Harness::start().await;
    h.big_segment("big").await;
    for batch in 0..20 {
        let keys: Vec<String> = (0..5000).map(|i| format!("user-{batch}-{i}")).collect();
        let r = h.post(&format!("{SEGS}/big/contexts"), &json!({"included": {"add": keys}})).await;
        assert_eq!(r.status, 204);
    }
    let snap = h.emu.snapshot();
    let seg = snap.segment("default", "production", "big").unwrap();
    assert_eq!(seg.included.len(), 100_000);
    assert!(seg.included.windows(2).all(|w| w[0] < w[1]), "members are sorted");
}

#[tokio::test]
async fn json_patch_on_segments() {
    let h = Harness::start().await;
    h.big_segment("beta").await;
    let path = format!("{SEGS}/beta");
    let r = h
        .patch(
            &path,
            &json!({"comment": "c", "patch": [
                {"op": "test", "path": "/version", "value": 1},
                {"op": "replace", "path": "/name", "value": "Beta users"},
                {"op": "add", "path": "/description", "value": "from the warehouse"},
                {"op": "replace", "path": "/tags", "value": ["warehouse-sync"]}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Beta users");
    assert_eq!(r.body["description"], "from the warehouse");
    assert_eq!(r.body["tags"], json!(["warehouse-sync"]));
    assert_eq!(r.body["version"], 2);
    // A bare array is accepted too.
    let r = h.patch(&path, &json!([{"op": "replace", "path": "/name", "value": "B"}])).await;
    assert_eq!(r.body["name"], "B");

    h.patch(&path, &json!({"patch": [{"op": "test", "path": "/version", "value": 1}]}))
        .await
        .assert_error(409, "optimistic_locking_error");
    h.patch(&path, &json!({"patch": [{"op": "replace", "path": "/key", "value": "other"}]}))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!({"patch": [{"op": "replace", "path": "/unbounded", "value": false}]}))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!({"patch": [{"op": "remove", "path": "/nothing"}]}))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!({"patch": [{"op": "fly", "path": "/name"}]}))
        .await
        .assert_error(400, "invalid_request");
    h.patch(&path, &json!({"comment": "no patch"})).await.assert_error(400, "invalid_request");
    h.patch(&format!("{SEGS}/nope"), &json!([])).await.assert_error(404, "not_found");

    // Standard segments take their target lists by JSON Patch.
    h.post(SEGS, &json!({"key": "std", "name": "Standard"})).await;
    let r = h
        .patch(
            &format!("{SEGS}/std"),
            &json!([{"op": "replace", "path": "/included", "value": ["a", "b"]}]),
        )
        .await;
    assert_eq!(r.body["included"], json!(["a", "b"]));
    h.patch(
        &format!("{SEGS}/std"),
        &json!([{"op": "replace", "path": "/excluded", "value": ["a"]}]),
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn semantic_patch_on_big_segments() {
    let h = Harness::start().await;
    h.big_segment("beta").await;
    let path = format!("{SEGS}/beta");
    let r = h
        .semantic_patch(
            &path,
            &json!({"environmentKey": "production", "comment": "sync", "instructions": [
                {"kind": "addBigSegmentIncludedTargets", "values": ["u1", "u2", "u3"]},
                {"kind": "removeBigSegmentIncludedTargets", "values": ["u3"]},
                {"kind": "addBigSegmentExcludedTargets", "values": ["x"]},
                {"kind": "updateName", "value": "Renamed"},
                {"kind": "addTags", "values": ["a", "b"]},
                {"kind": "removeTags", "values": ["a"]},
                {"kind": "updateDescription", "value": "d"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["tags"], json!(["b"]));
    let snap = h.emu.snapshot();
    let seg = snap.segment("default", "production", "beta").unwrap();
    assert_eq!(seg.included, vec!["u1", "u2"]);
    assert_eq!(seg.excluded, vec!["x"]);

    // All or nothing: the second instruction fails, so the first is not applied.
    let both = json!({"environmentKey": "production", "instructions": [
        {"kind": "addBigSegmentIncludedTargets", "values": ["new"]},
        {"kind": "addBigSegmentExcludedTargets", "values": ["u1"]}
    ]});
    h.semantic_patch(&path, &both).await.assert_error(400, "invalid_request");
    assert!(!h
        .emu
        .snapshot()
        .segment("default", "production", "beta")
        .unwrap()
        .included
        .contains(&"new".to_owned()));

    let no_env =
        json!({"instructions": [{"kind": "addBigSegmentIncludedTargets", "values": ["a"]}]});
    h.semantic_patch(&path, &no_env).await.assert_error(400, "invalid_request");
    let unknown = json!({"environmentKey": "production", "instructions": [{"kind": "fly"}]});
    h.semantic_patch(&path, &unknown).await.assert_error(400, "invalid_request");
    let standard_only = json!({"environmentKey": "production", "instructions": [
        {"kind": "addIncludedTargets", "contextKind": "user", "values": ["a"]}]});
    h.semantic_patch(&path, &standard_only).await.assert_error(400, "invalid_request");
    // Without the content-type suffix the body is read as JSON Patch.
    h.patch(&path, &no_env).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn semantic_patch_on_standard_segments() {
    let h = Harness::start().await;
    h.post(SEGS, &json!({"key": "std", "name": "Standard"})).await;
    let path = format!("{SEGS}/std");
    let r = h
        .semantic_patch(
            &path,
            &json!({"environmentKey": "production", "instructions": [
                {"kind": "addIncludedTargets", "contextKind": "organization", "values": ["o1"]},
                {"kind": "addIncludedUsers", "values": ["u1"]},
                {"kind": "addExcludedTargets", "contextKind": "user", "values": ["u2"]}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["included"], json!(["u1"]));
    assert_eq!(
        r.body["includedContexts"],
        json!([{"contextKind": "organization", "values": ["o1"]}])
    );
    let too_many: Vec<String> = (0..1501).map(|i| i.to_string()).collect();
    let big = json!({"environmentKey": "production", "instructions": [
        {"kind": "addIncludedUsers", "values": too_many}]});
    h.semantic_patch(&path, &big).await.assert_error(400, "invalid_request");
    let big_only = json!({"environmentKey": "production", "instructions": [
        {"kind": "addBigSegmentIncludedTargets", "values": ["a"]}]});
    h.semantic_patch(&path, &big_only).await.assert_error(400, "invalid_request");
}
