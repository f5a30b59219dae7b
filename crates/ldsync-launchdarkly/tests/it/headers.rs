//! What every request carries: `LD-API-Version`, `User-Agent` and the raw token, on first
//! attempts and retries alike. The emulator accepts and ignores `LD-API-Version`, so the
//! requests are read from the stub.

use bytes::Bytes;
use ldsync_launchdarkly::{
    ImportMode, LaunchDarklyClient, MemberChange, RetryPolicy, API_VERSION, USER_AGENT,
};

use crate::{
    options,
    stub::{Recorded, Reply, Stub},
    ENVIRONMENT, PROJECT, TOKEN,
};

const ENVIRONMENT_BODY: &str =
    r#"{"_id":"57be1db38b75bf0772d11384","key":"production","name":"Production"}"#;

fn assert_carries_the_headers(request: &Recorded) {
    let line = &request.request_line;
    assert_eq!(request.header_values("ld-api-version"), [API_VERSION], "{line}");
    assert_eq!(request.header_values("user-agent"), [USER_AGENT], "{line}");
    // The raw token: no `Bearer` prefix.
    assert_eq!(request.header_values("authorization"), [TOKEN], "{line}");
}

#[tokio::test]
async fn every_request_carries_the_api_version_user_agent_and_raw_token() {
    assert_eq!(API_VERSION, "20240415");
    assert_eq!(USER_AGENT, format!("ldsync/{}", env!("CARGO_PKG_VERSION")));
    let stub = Stub::start(|request, _| {
        let line = request.request_line.as_str();
        if line.starts_with("GET /api/v2/projects/") {
            Reply::json(200, ENVIRONMENT_BODY)
        } else if line.starts_with("POST ") && line.contains("/contexts ") {
            Reply::no_content()
        } else if line.starts_with("POST ") && line.contains("/imports ") {
            Reply::no_content()
                .with_header("location", "/api/v2/segments/default/production/beta/imports/i-1")
        } else if line.contains("/imports/i-1 ") {
            Reply::json(200, r#"{"id":"i-1","status":"complete"}"#)
        } else {
            Reply::json(404, r#"{"code":"not_found","message":"Invalid resource identifier"}"#)
        }
    })
    .await;
    let client =
        LaunchDarklyClient::new(options(&stub.url(), TOKEN, RetryPolicy::immediate(1))).unwrap();

    client.get_environment(PROJECT, ENVIRONMENT).await.unwrap();
    assert!(client.get_segment(PROJECT, ENVIRONMENT, "beta").await.unwrap().is_none());
    client.update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["a"]).await.unwrap();
    let id = client
        .start_import(PROJECT, ENVIRONMENT, "beta", ImportMode::Replace, Bytes::from("a\n"))
        .await
        .unwrap();
    assert_eq!(id, "i-1");
    assert_eq!(
        client.get_import(PROJECT, ENVIRONMENT, "beta", &id).await.unwrap().status,
        "complete"
    );

    let requests = stub.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");
    for request in &requests {
        assert_carries_the_headers(request);
    }
}

#[tokio::test]
async fn retries_carry_the_same_headers() {
    let stub = Stub::start(|_, n| match n {
        0 => Reply::json(503, r#"{"code":"service_unavailable","message":"Service unavailable"}"#),
        _ => Reply::json(200, ENVIRONMENT_BODY),
    })
    .await;
    let client =
        LaunchDarklyClient::new(options(&stub.url(), TOKEN, RetryPolicy::immediate(3))).unwrap();

    let environment = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap();

    assert_eq!(environment.id, "57be1db38b75bf0772d11384");
    let requests = stub.requests();
    assert_eq!(requests.len(), 2, "one failure, one retry: {requests:#?}");
    for request in &requests {
        assert_carries_the_headers(request);
    }
}
