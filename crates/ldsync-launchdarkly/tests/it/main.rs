//! Integration tests of the LaunchDarkly client: real HTTP against the emulator on 127.0.0.1
//! (and, where the emulator cannot say what was sent or answer a status it does not emulate, a
//! tiny scripted HTTP stub in `stub`). One module per area.

mod environment;
mod events;
mod headers;
mod rate_limits;
mod retries;
mod segments;
mod stub;

use std::time::Duration;

use ldsync_core::Secret;
use ldsync_emulator::{Emulator, EmulatorConfig};
use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient, NewBigSegment, RetryPolicy};

/// The emulator's full-access token: distinctive, so that a leak into a message is easy to spot.
pub(crate) const TOKEN: &str = "it-token-7f3a9c51e2";
/// The emulator's default project and one of its environments.
pub(crate) const PROJECT: &str = "default";
pub(crate) const ENVIRONMENT: &str = "production";

/// A fresh emulator with [`TOKEN`], on an ephemeral port of 127.0.0.1.
pub(crate) async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default().with_token(TOKEN)).await.unwrap()
}

/// Client options for `url` with short timeouts and `retry`.
pub(crate) fn options(url: &str, token: &str, retry: RetryPolicy) -> ClientOptions {
    let mut options = ClientOptions::new(url, url, Secret::new(token));
    options.retry = retry;
    options.request_timeout = Duration::from_secs(5);
    options.connect_timeout = Duration::from_secs(2);
    options
}

/// A client of `emulator` with its token and `retry`.
pub(crate) fn client(emulator: &Emulator, retry: RetryPolicy) -> LaunchDarklyClient {
    LaunchDarklyClient::new(options(&emulator.api_url(), TOKEN, retry)).unwrap()
}

/// The body of a big segment of context kind `kind`.
pub(crate) fn big_segment(key: &str, kind: &str) -> NewBigSegment {
    NewBigSegment {
        key: key.to_owned(),
        name: format!("Segment {key}"),
        description: None,
        tags: vec!["ldsync".to_owned()],
        unbounded: true,
        unbounded_context_kind: kind.to_owned(),
    }
}

/// How many requests the emulator received for `route` (`METHOD /template`).
pub(crate) fn requests_to(emulator: &Emulator, route: ldsync_launchdarkly::Route) -> u64 {
    emulator.stats().requests_by_route.get(&route.name()).copied().unwrap_or(0)
}

/// The included members of a segment in the emulator, sorted.
pub(crate) fn members(emulator: &Emulator, segment: &str) -> Vec<String> {
    emulator.snapshot().segment(PROJECT, ENVIRONMENT, segment).unwrap().included.clone()
}
