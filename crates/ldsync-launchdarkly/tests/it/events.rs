//! The metric import: headers, gzip, payload-ID deduplication across retries, and the answers
//! that fail at once (400, 406) with their status and body.

use std::collections::BTreeMap;

use ldsync_launchdarkly::{event_payloads, CustomEvent, LaunchDarklyClient, RetryPolicy, Route};

use crate::{
    client, emulator, options,
    stub::{Reply, Stub},
    ENVIRONMENT, PROJECT, TOKEN,
};

fn events(n: i64) -> Vec<CustomEvent> {
    (0..n)
        .map(|i| CustomEvent {
            key: "checkout-completed".to_owned(),
            creation_date: 1_767_225_600_000 + i,
            metric_value: Some(1.5),
            context_keys: BTreeMap::from([("user".to_owned(), format!("u{i}"))]),
            data: None,
        })
        .collect()
}

fn body(n: i64) -> bytes::Bytes {
    let all = events(n);
    let payloads = event_payloads(&all, 1_000, 10 << 20);
    assert_eq!(payloads.len(), 1);
    payloads.into_iter().next().unwrap().body
}

#[tokio::test]
async fn an_import_carries_the_events_headers_and_a_retry_keeps_its_payload_id() {
    let stub = Stub::start(|_, n| {
        if n == 0 {
            Reply::json(503, r#"{"code":"unavailable","message":"try again"}"#)
        } else {
            Reply::json(202, "")
        }
    })
    .await;
    let client =
        LaunchDarklyClient::new(options(&stub.url(), TOKEN, RetryPolicy::immediate(3))).unwrap();
    client.import_events(PROJECT, ENVIRONMENT, "payload-1", body(3)).await.unwrap();
    let requests = stub.requests();
    assert_eq!(requests.len(), 2, "one retry");
    for request in &requests {
        assert_eq!(request.request_line, "POST /v2/event-data-import/default/production HTTP/1.1");
        assert_eq!(request.header_values("x-launchdarkly-event-schema"), ["4"]);
        assert_eq!(request.header_values("x-launchdarkly-payload-id"), ["payload-1"]);
        assert_eq!(request.header_values("content-encoding"), ["gzip"]);
        assert_eq!(request.header_values("content-type"), ["application/json"]);
        assert_eq!(request.header_values("authorization"), [TOKEN]);
        let agent = request.header_values("user-agent");
        assert_eq!(
            agent,
            [format!("MetricImport-ldsync-int/{}", env!("CARGO_PKG_VERSION")).as_str()]
        );
    }
}

#[tokio::test]
async fn schema_and_body_errors_fail_at_once_with_status_and_body() {
    for (status, code) in [(406, "not_acceptable"), (400, "invalid_request")] {
        let body_text = format!(r#"{{"code":"{code}","message":"refused by the test"}}"#);
        let stub = Stub::start(move |_, _| Reply::json(status, &body_text)).await;
        let client =
            LaunchDarklyClient::new(options(&stub.url(), TOKEN, RetryPolicy::immediate(5)))
                .unwrap();
        let error = client.import_events(PROJECT, ENVIRONMENT, "p", body(1)).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        let message = format!("{error:#}");
        assert!(message.contains(code) && message.contains(&status.to_string()), "{message}");
        assert!(!message.contains(TOKEN), "{message}");
        assert_eq!(stub.requests().len(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn the_emulator_stores_a_resent_payload_once() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(3));
    let payload = body(5);
    client.import_events(PROJECT, ENVIRONMENT, "same-id", payload.clone()).await.unwrap();
    client.import_events(PROJECT, ENVIRONMENT, "same-id", payload).await.unwrap();
    let snapshot = emulator.snapshot();
    assert_eq!(snapshot.events_in(PROJECT, ENVIRONMENT).count(), 5);
    assert_eq!(emulator.stats().repeated_payload_ids, 1);
    let imports: u64 = emulator
        .stats()
        .requests_by_route
        .iter()
        .filter(|(route, _)| route.contains("event-data-import"))
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(imports, 2, "{:?} ({})", emulator.stats(), Route::IMPORT_EVENTS.name());
}
