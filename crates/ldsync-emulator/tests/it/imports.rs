//! Big-segment CSV imports.

use std::time::Duration;

use ldsync_emulator::EmulatorConfig;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::json;

use crate::common::{send, Harness, Resp};

const SEGS: &str = "/api/v2/segments/default/production";

async fn upload(h: &Harness, segment: &str, csv: Vec<u8>, mode: &str, wait: bool) -> Resp {
    let form = Form::new()
        .part("file", Part::bytes(csv).file_name("keys.csv").mime_str("text/csv").unwrap())
        .text("mode", mode.to_owned())
        .text("waitOnApprovals", wait.to_string());
    send(h.request(Method::POST, &format!("{SEGS}/{segment}/imports")).multipart(form)).await
}

fn import_path(r: &Resp) -> String {
    assert_eq!(r.status, 204, "{:?}", r.body);
    r.header("location").unwrap().to_owned()
}

async fn wait_complete(h: &Harness, path: &str) -> serde_json::Value {
    for _ in 0..100 {
        let r = h.get(path).await;
        if r.body["status"] == "complete" {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("import did not complete");
}

#[tokio::test]
async fn merge_then_replace() {
    let h =
        Harness::with(EmulatorConfig::default().with_import_delay(Duration::from_millis(50))).await;
    h.big_segment("beta").await;
    h.post(&format!("{SEGS}/beta/contexts"), &json!({"included": {"add": ["old"]}})).await;

    let path =
        import_path(&upload(&h, "beta", b"a,extra\nb\n\"c\"\n".to_vec(), "merge", false).await);
    assert!(path.starts_with(&format!("{SEGS}/beta/imports/")));
    let first = h.get(&path).await;
    assert_eq!(first.body["status"], "in_progress");
    assert_eq!(h.get(&format!("{SEGS}/beta")).await.body["_importInProgress"], true);
    // One import at a time per environment.
    upload(&h, "beta", b"z\n".to_vec(), "merge", false)
        .await
        .assert_error(409, "optimistic_locking_error");
    let done = wait_complete(&h, &path).await;
    assert_eq!(done["mode"], "merge");
    assert_eq!(done["segmentKey"], "beta");
    let snap = h.emu.snapshot();
    assert_eq!(
        snap.segment("default", "production", "beta").unwrap().included,
        vec!["a", "b", "c", "old"]
    );

    let path = import_path(&upload(&h, "beta", b"x\ny\n".to_vec(), "replace", false).await);
    wait_complete(&h, &path).await;
    let snap = h.emu.snapshot();
    assert_eq!(snap.segment("default", "production", "beta").unwrap().included, vec!["x", "y"]);
}

#[tokio::test]
async fn wait_on_approvals_then_process() {
    let h = Harness::with(EmulatorConfig::default().with_import_delay(Duration::ZERO)).await;
    h.big_segment("beta").await;
    let path = import_path(&upload(&h, "beta", b"a\n".to_vec(), "merge", true).await);
    assert_eq!(h.get(&path).await.body["status"], "pending_approval");
    let id = path.rsplit('/').next().unwrap();
    let r = h
        .semantic_patch(
            &format!("{SEGS}/beta"),
            &json!({"environmentKey": "production", "instructions": [{"kind": "processBigSegmentImport", "importId": id}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_complete(&h, &path).await;
    assert_eq!(
        h.emu.snapshot().segment("default", "production", "beta").unwrap().included,
        vec!["a"]
    );
    let again = json!({"environmentKey": "production", "instructions": [{"kind": "processBigSegmentImport", "importId": id}]});
    h.semantic_patch(&format!("{SEGS}/beta"), &again).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn import_errors() {
    let h = Harness::start().await;
    h.big_segment("beta").await;
    h.post(SEGS, &json!({"key": "std", "name": "Standard"})).await;
    upload(&h, "std", b"a\n".to_vec(), "merge", false).await.assert_error(400, "invalid_request");
    upload(&h, "nope", b"a\n".to_vec(), "merge", false).await.assert_error(404, "not_found");
    upload(&h, "beta", b"a\n".to_vec(), "append", false).await.assert_error(400, "invalid_request");
    let no_file = Form::new().text("mode", "merge");
    send(h.request(Method::POST, &format!("{SEGS}/beta/imports")).multipart(no_file))
        .await
        .assert_error(400, "invalid_request");
    send(h.request(Method::POST, &format!("{SEGS}/beta/imports")).json(&json!({})))
        .await
        .assert_error(400, "invalid_request");
    let mut too_many = Vec::with_capacity(8_000_000);
    for i in 0..=1_000_000u32 {
        too_many.extend_from_slice(format!("{i}\n").as_bytes());
    }
    upload(&h, "beta", too_many, "merge", false).await.assert_error(400, "invalid_request");
    let too_big = vec![b'a'; 40 * 1024 * 1024 + 1];
    upload(&h, "beta", too_big, "merge", false).await.assert_error(400, "invalid_request");
    h.get(&format!("{SEGS}/beta/imports/unknown")).await.assert_error(404, "not_found");
}
