//! Retries: 5xx (but 501), resets and hangs are retried and the call succeeds once the fault
//! passes; other 4xx fail at once with the status and a body excerpt; a spent budget says so.
//! Faults are scripted with `nth=`, so the number of attempts is exact.

use std::time::Duration;

use ldsync_core::{Classify, ErrorDomain};
use ldsync_emulator::{EmulatorConfig, TokenSpec};
use ldsync_launchdarkly::{Error, LaunchDarklyClient, MemberChange, RetryPolicy, Route};

use crate::{
    big_segment, client, emulator, members, options, requests_to,
    stub::{Reply, Stub},
    ENVIRONMENT, PROJECT, TOKEN,
};

const ENVIRONMENT_ROUTE: &str = "GET /api/v2/projects/*/environments/*";
const CONTEXTS_ROUTE: &str = "POST /api/v2/segments/*/*/*/contexts";

#[tokio::test]
async fn server_errors_are_retried_until_the_call_succeeds() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(3));
    for status in ["500", "502", "503", "504"] {
        emulator.reset();
        emulator.set_faults(vec![format!("{status}@route={ENVIRONMENT_ROUTE},nth=1,nth=2")
            .parse()
            .unwrap()]);

        let environment = client.get_environment(PROJECT, ENVIRONMENT).await;

        assert_eq!(environment.unwrap().key, ENVIRONMENT, "{status}");
        let stats = emulator.stats();
        assert_eq!(stats.requests, 3, "{status}: two faults, then success: {stats:?}");
        assert_eq!(stats.faults_by_kind.get(status), Some(&2), "{status}: {stats:?}");
    }
}

#[tokio::test]
async fn a_failed_write_is_retried_and_lands_once() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(4));
    client.ensure_big_segment(PROJECT, ENVIRONMENT, &big_segment("beta", "user")).await.unwrap();
    emulator.set_faults(vec![
        format!("503@route={CONTEXTS_ROUTE},nth=1").parse().unwrap(),
        format!("reset@route={CONTEXTS_ROUTE},nth=2").parse().unwrap(),
    ]);

    client
        .update_members(PROJECT, ENVIRONMENT, "beta", MemberChange::Add, &["u1", "u2"])
        .await
        .unwrap();

    assert_eq!(requests_to(&emulator, Route::UPDATE_SEGMENT_CONTEXTS), 3);
    assert_eq!(members(&emulator, "beta"), ["u1", "u2"]);
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(3));
    emulator
        .set_faults(vec![format!("reset@route={ENVIRONMENT_ROUTE},nth=1,nth=2").parse().unwrap()]);

    client.get_environment(PROJECT, ENVIRONMENT).await.unwrap();

    let stats = emulator.stats();
    assert_eq!((stats.requests, stats.faults_by_kind.get("reset")), (3, Some(&2)), "{stats:?}");
}

#[tokio::test]
async fn hangs_time_out_and_are_retried() {
    let emulator = emulator().await;
    let mut options = options(&emulator.api_url(), TOKEN, RetryPolicy::immediate(3));
    options.request_timeout = Duration::from_millis(300);
    let client = LaunchDarklyClient::new(options).unwrap();
    emulator.set_faults(vec![format!("hang@route={ENVIRONMENT_ROUTE},nth=1").parse().unwrap()]);

    client.get_environment(PROJECT, ENVIRONMENT).await.unwrap();

    let stats = emulator.stats();
    assert_eq!((stats.requests, stats.faults_by_kind.get("hang")), (2, Some(&1)), "{stats:?}");
}

/// A client error is sent once and reported with its status and LaunchDarkly's body.
fn assert_fails_at_once(
    emulator: &ldsync_emulator::Emulator,
    requests_before: u64,
    result: Result<impl std::fmt::Debug, Error>,
    status: u16,
    code: &str,
) {
    let error = result.unwrap_err();
    assert_eq!(error.status(), Some(status), "{error:?}");
    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(
        error.domain(),
        if status == 400 { ErrorDomain::Internal } else { ErrorDomain::Config }
    );
    let message = error.to_string();
    assert!(message.contains(&format!("answered {status}")), "{message}");
    assert!(message.contains(code), "the body excerpt is in the message: {message}");
    assert_eq!(emulator.stats().requests - requests_before, 1, "{status} is not retried");
}

#[tokio::test]
async fn client_errors_fail_at_once_with_status_and_body() {
    let limited = "it-limited-token";
    let emulator = ldsync_emulator::Emulator::start(
        EmulatorConfig::default()
            .with_token(TOKEN)
            .with_limited_token(TokenSpec::limited(limited, ["createSegment"])),
    )
    .await
    .unwrap();
    let client = client(&emulator, RetryPolicy::immediate(5));
    let mut standard = big_segment("standard", "user");
    standard.unbounded = false;
    client.create_big_segment(PROJECT, ENVIRONMENT, &standard).await.unwrap();
    client.create_big_segment(PROJECT, ENVIRONMENT, &big_segment("big", "user")).await.unwrap();

    // 400: big-segment targets on a standard segment.
    let before = emulator.stats().requests;
    let result =
        client.update_members(PROJECT, ENVIRONMENT, "standard", MemberChange::Add, &["u"]).await;
    assert_fails_at_once(&emulator, before, result, 400, "invalid_request");

    // 401: an unknown token.
    let before = emulator.stats().requests;
    let stranger = LaunchDarklyClient::new(options(
        &emulator.api_url(),
        "not-a-token",
        RetryPolicy::immediate(5),
    ))
    .unwrap();
    let result = stranger.get_environment(PROJECT, ENVIRONMENT).await;
    assert_fails_at_once(&emulator, before, result, 401, "unauthorized");

    // 403: a token without `updateIncluded`.
    let before = emulator.stats().requests;
    let reader =
        LaunchDarklyClient::new(options(&emulator.api_url(), limited, RetryPolicy::immediate(5)))
            .unwrap();
    let result =
        reader.update_members(PROJECT, ENVIRONMENT, "big", MemberChange::Add, &["u"]).await;
    assert_fails_at_once(&emulator, before, result, 403, "forbidden");

    // 404: an environment that does not exist.
    let before = emulator.stats().requests;
    let result = client.get_environment(PROJECT, "staging").await;
    assert_fails_at_once(&emulator, before, result, 404, "not_found");
}

#[tokio::test]
async fn a_spent_retry_budget_says_how_many_attempts_failed() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(4));
    emulator.set_faults(vec!["503".parse().unwrap()]);

    let error = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap_err();

    assert!(matches!(error, Error::Exhausted { attempts: 4, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("failed after 4 attempts in "), "{message}");
    assert!(message.contains("503"), "the last failure is named: {message}");
    assert!(error.is_retryable(), "a later run may succeed");
    assert_eq!(emulator.stats().requests, 4);
}

#[tokio::test]
async fn spent_budget_on_transport_errors_says_so_too() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(3));
    emulator.set_faults(vec!["reset".parse().unwrap()]);

    let error = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap_err();

    assert!(matches!(error, Error::Exhausted { attempts: 3, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("failed after 3 attempts in "), "{message}");
    // The cause, not just "cannot reach LaunchDarkly" (a fixed bug: `{:#}` dropped it).
    assert!(message.to_lowercase().contains("reset"), "{message}");
    assert_eq!(emulator.stats().requests, 3);
}

#[tokio::test]
async fn a_spent_budget_on_hangs_says_they_timed_out() {
    let emulator = emulator().await;
    let mut options = options(&emulator.api_url(), TOKEN, RetryPolicy::immediate(2));
    options.request_timeout = Duration::from_millis(200);
    let client = LaunchDarklyClient::new(options).unwrap();
    emulator.set_faults(vec!["hang".parse().unwrap()]);

    let error = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap_err();

    assert!(matches!(error, Error::Exhausted { attempts: 2, .. }), "{error:?}");
    assert!(error.to_string().contains("timed out"), "{error}");
    assert_eq!(emulator.stats().requests, 2);
}

#[tokio::test]
async fn not_implemented_is_not_retried() {
    // The emulator injects 500, 502, 503 and 504 only: the stub answers the 501.
    let stub = Stub::start(|_, _| {
        Reply::json(501, r#"{"code":"not_implemented","message":"Not implemented"}"#)
    })
    .await;
    let client =
        LaunchDarklyClient::new(options(&stub.url(), TOKEN, RetryPolicy::immediate(5))).unwrap();

    let error = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap_err();

    assert_eq!(error.status(), Some(501), "{error:?}");
    assert!(error.to_string().contains("not_implemented"), "{error}");
    assert_eq!(stub.requests().len(), 1);
}

/// Records what the client reports, as `/metrics` would count it.
#[derive(Debug, Default)]
struct Recorder {
    attempts: std::sync::Mutex<Vec<(String, Option<u16>)>>,
    retries: std::sync::atomic::AtomicU64,
}

impl ldsync_launchdarkly::RequestObserver for Recorder {
    fn attempt(&self, route: &str, status: Option<u16>) {
        self.attempts.lock().unwrap().push((route.to_owned(), status));
    }

    fn retry(&self, _route: &str, _delay: std::time::Duration) {
        self.retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_observer_hears_every_attempt_and_retry() {
    let emulator = crate::emulator().await;
    emulator
        .set_faults(vec!["503@route=GET /api/v2/projects/*/environments/*,nth=1".parse().unwrap()]);
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut options = crate::options(
        &emulator.api_url(),
        crate::TOKEN,
        ldsync_launchdarkly::RetryPolicy::immediate(3),
    );
    options.observer = Some(recorder.clone());
    let client = ldsync_launchdarkly::LaunchDarklyClient::new(options).unwrap();
    client.get_environment(crate::PROJECT, crate::ENVIRONMENT).await.unwrap();
    let route = ldsync_launchdarkly::Route::GET_ENVIRONMENT.name();
    assert_eq!(
        *recorder.attempts.lock().unwrap(),
        [(route.clone(), Some(503)), (route, Some(200))]
    );
    assert_eq!(recorder.retries.load(std::sync::atomic::Ordering::SeqCst), 1);
}
