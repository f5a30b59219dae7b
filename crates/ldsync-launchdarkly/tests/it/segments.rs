//! Big segments: ensure (create, accept, refuse), member batches, CSV imports and their
//! one-at-a-time rule.

use std::time::Duration;

use bytes::Bytes;
use ldsync_launchdarkly::{
    is_import_conflict, Error, ImportMode, MemberChange, RetryPolicy, Route,
};

use crate::{big_segment, client, emulator, members, requests_to, ENVIRONMENT, PROJECT};

#[tokio::test]
async fn ensure_big_segment_creates_a_missing_segment() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));

    let segment = client
        .ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "account"))
        .await
        .unwrap();

    assert!(segment.unbounded);
    assert_eq!(segment.unbounded_context_kind.as_deref(), Some("account"));
    let state = emulator.snapshot();
    let stored = state.segment(PROJECT, ENVIRONMENT, "beta").unwrap();
    assert!(stored.unbounded);
    assert_eq!((stored.name.as_str(), stored.context_kind.as_str()), ("Segment beta", "account"));
    assert_eq!(stored.tags, ["ldsync"]);
}

#[tokio::test]
async fn ensure_big_segment_accepts_an_existing_big_segment_of_the_same_kind() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    let wanted = big_segment("beta", "user");
    client.create_big_segment(PROJECT, ENVIRONMENT, &wanted).await.unwrap();
    client
        .update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["kept"])
        .await
        .unwrap();

    let segment = client.ensure_big_segment(PROJECT, ENVIRONMENT, &wanted).await.unwrap();

    assert_eq!(segment.key, "beta");
    assert_eq!(requests_to(&emulator, Route::CREATE_SEGMENT), 1, "not created a second time");
    assert_eq!(members(&emulator, "beta"), ["kept"], "left as it was");
}

#[tokio::test]
async fn ensure_big_segment_refuses_a_standard_segment() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    let mut standard = big_segment("beta", "user");
    standard.unbounded = false;
    client.create_big_segment(PROJECT, ENVIRONMENT, &standard).await.unwrap();

    let error = client
        .ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "user"))
        .await
        .unwrap_err();

    assert!(matches!(error, Error::Incompatible { .. }), "{error:?}");
    assert!(error.to_string().contains("standard segment"), "{error}");
    assert!(!emulator.snapshot().segment(PROJECT, ENVIRONMENT, "beta").unwrap().unbounded);
}

#[tokio::test]
async fn ensure_big_segment_refuses_another_context_kind() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    client.create_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "account")).await.unwrap();

    let error = client
        .ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "user"))
        .await
        .unwrap_err();

    assert!(matches!(error, Error::Incompatible { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`account`") && message.contains("`user`"), "{message}");
}

#[tokio::test]
async fn update_members_adds_and_removes() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    client.ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "user")).await.unwrap();

    client
        .update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["a", "b", "c", "d"])
        .await
        .unwrap();
    assert_eq!(members(&emulator, "beta"), ["a", "b", "c", "d"]);
    client
        .update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Remove, &["b", "d", "absent"])
        .await
        .unwrap();
    assert_eq!(members(&emulator, "beta"), ["a", "c"]);
    // Keys that need percent-encoding nowhere but in a path travel in the body unchanged.
    client
        .update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["user/1 é", "x@y.z"])
        .await
        .unwrap();
    assert_eq!(members(&emulator, "beta"), ["a", "c", "user/1 é", "x@y.z"]);
}

#[tokio::test]
async fn imports_replace_then_merge() {
    let emulator = emulator().await;
    emulator.set_import_delay(Duration::from_millis(500));
    let client = client(&emulator, RetryPolicy::immediate(2));
    client.ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "user")).await.unwrap();
    client.update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["old"]).await.unwrap();
    let poll = Duration::from_millis(50);

    let id = client
        .start_import(PROJECT, ENVIRONMENT, "beta", ImportMode::Replace, Bytes::from("a\nb\nc\n"))
        .await
        .unwrap();
    let running = client.get_import(PROJECT, ENVIRONMENT, "beta", &id).await.unwrap();
    assert_eq!((running.id.as_str(), running.status.as_str()), (id.as_str(), "in_progress"));
    let segment = client.get_segment(PROJECT, ENVIRONMENT, "beta").await.unwrap().unwrap();
    assert!(segment.import_in_progress);
    client.wait_for_import(PROJECT, ENVIRONMENT, "beta", &id, poll).await.unwrap();
    assert_eq!(members(&emulator, "beta"), ["a", "b", "c"], "replaced: `old` is gone");
    assert!(requests_to(&emulator, Route::GET_IMPORT) >= 3, "polled until complete");

    let id = client
        .start_import(PROJECT, ENVIRONMENT, "beta", ImportMode::Merge, Bytes::from("c\nd\n"))
        .await
        .unwrap();
    client.wait_for_import(PROJECT, ENVIRONMENT, "beta", &id, poll).await.unwrap();
    assert_eq!(members(&emulator, "beta"), ["a", "b", "c", "d"], "merged");

    let state = emulator.snapshot();
    let imports = &state.environment(PROJECT, ENVIRONMENT).unwrap().imports;
    let mut modes: Vec<(&str, &str, usize)> =
        imports.iter().map(|i| (i.mode.as_str(), i.status.as_str(), i.key_count)).collect();
    modes.sort_unstable();
    assert_eq!(modes, [("merge", "complete", 2), ("replace", "complete", 3)]);
}

#[tokio::test]
async fn a_concurrent_import_is_reported_as_a_conflict() {
    let emulator = emulator().await;
    emulator.set_import_delay(Duration::from_secs(2));
    let client = client(&emulator, RetryPolicy::immediate(3));
    for key in ["first", "second"] {
        client.ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment(key, "user")).await.unwrap();
    }
    client
        .start_import(PROJECT, ENVIRONMENT, "first", ImportMode::Replace, Bytes::from("a\n"))
        .await
        .unwrap();

    // One import at a time per environment, whatever the segment.
    let error = client
        .start_import(PROJECT, ENVIRONMENT, "second", ImportMode::Merge, Bytes::from("b\n"))
        .await
        .unwrap_err();

    assert!(is_import_conflict(&error), "{error:?}");
    assert_eq!(error.status(), Some(409));
    assert!(error.to_string().contains("optimistic_locking_error"), "{error}");
    assert_eq!(requests_to(&emulator, Route::CREATE_IMPORT), 2, "a 409 is not retried");
    assert!(members(&emulator, "second").is_empty());
    assert!(!is_import_conflict(&Error::Setup("x".to_owned())));
}
