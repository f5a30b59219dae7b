//! `get_environment` and `check_environment`: the connection check of `validate`.

use ldsync_core::{Classify, ErrorDomain};
use ldsync_launchdarkly::{Error, LaunchDarklyClient, RetryPolicy};

use crate::{client, emulator, options, ENVIRONMENT, PROJECT, TOKEN};

#[tokio::test]
async fn the_environment_id_is_the_emulators_client_side_id() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    let expected = emulator.snapshot().environment(PROJECT, ENVIRONMENT).unwrap().id.clone();

    let environment = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap();

    assert_eq!(environment.id, expected);
    assert_eq!((environment.key.as_str(), environment.name.as_str()), (ENVIRONMENT, "Production"));
    let checked = client.check_environment(PROJECT, ENVIRONMENT, Some(&expected)).await.unwrap();
    assert_eq!(checked, environment);
    assert_eq!(client.check_environment(PROJECT, ENVIRONMENT, None).await.unwrap(), environment);
}

#[tokio::test]
async fn a_wrong_client_side_id_is_a_mismatch() {
    let emulator = emulator().await;
    let client = client(&emulator, RetryPolicy::immediate(2));
    let actual = emulator.snapshot().environment(PROJECT, ENVIRONMENT).unwrap().id.clone();
    // The ID of the other environment: a real ID, of the wrong environment.
    let other = emulator.snapshot().environment(PROJECT, "test").unwrap().id.clone();
    assert_ne!(actual, other);

    let error = client.check_environment(PROJECT, ENVIRONMENT, Some(&other)).await.unwrap_err();

    match &error {
        Error::ClientSideIdMismatch { project, environment, expected, actual: got } => {
            assert_eq!((project.as_str(), environment.as_str()), (PROJECT, ENVIRONMENT));
            assert_eq!((expected, got), (&other, &actual));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_eq!(error.domain(), ErrorDomain::Config);
    assert!(!error.is_retryable());
    assert!(error.to_string().contains(&other) && error.to_string().contains(&actual), "{error}");
}

#[tokio::test]
async fn a_bad_token_is_401_and_never_printed() {
    let emulator = emulator().await;
    let bad_token = "it-bad-token-d41d8cd98f";
    let client =
        LaunchDarklyClient::new(options(&emulator.api_url(), bad_token, RetryPolicy::immediate(3)))
            .unwrap();

    let error = client.check_environment(PROJECT, ENVIRONMENT, None).await.unwrap_err();

    assert_eq!(error.status(), Some(401), "{error:?}");
    assert_eq!(error.domain(), ErrorDomain::Config);
    assert_eq!(emulator.stats().unauthorized, 1, "sent once, not retried");
    for shown in
        [error.to_string(), format!("{error:#}"), format!("{error:?}"), format!("{client:?}")]
    {
        assert!(!shown.contains(bad_token), "the token leaked: {shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    assert!(error.to_string().contains("unauthorized"), "{error}");
}

#[tokio::test]
async fn an_unreachable_host_never_prints_the_token_either() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = LaunchDarklyClient::new(options(
        &format!("http://127.0.0.1:{port}"),
        TOKEN,
        RetryPolicy::immediate(2),
    ))
    .unwrap();

    let error = client.get_environment(PROJECT, ENVIRONMENT).await.unwrap_err();

    assert!(matches!(error, Error::Exhausted { attempts: 2, .. }), "{error:?}");
    assert!(error.to_string().to_lowercase().contains("refused"), "{error}");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
    }
}
