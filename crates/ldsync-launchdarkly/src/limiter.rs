//! One limiter per route and one for the account, shared by every sync of the process.
//!
//! The governor quotas keep a steady pace; LaunchDarkly's `X-Ratelimit-*-Remaining` headers
//! pause a route (or everything) until `X-Ratelimit-Reset` once a window is used up, so that no
//! request is sent into a window already reported exhausted.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Jitter, Quota};
use tokio::time::Instant;

/// How long after a window's reported reset an exhausted route or account resumes.
pub(crate) const RESET_MARGIN: Duration = Duration::from_millis(20);
/// The pace of the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterOptions {
    /// Requests per second to the whole account.
    pub account_per_second: NonZeroU32,
    /// Requests per second to one route.
    pub route_per_second: NonZeroU32,
    /// The most jitter added to each wait, so that waiting tasks do not wake at once.
    pub max_jitter: Duration,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            account_per_second: NonZeroU32::new(50).expect("50 is not zero"),
            route_per_second: NonZeroU32::new(20).expect("20 is not zero"),
            max_jitter: Duration::from_millis(50),
        }
    }
}

/// The rate limiter shared by every request of a process.
#[derive(Debug)]
pub struct Limiter {
    account: DefaultDirectRateLimiter,
    routes: DefaultKeyedRateLimiter<String>,
    /// Until when a route (`Some`) or the whole account (`None`) is reported exhausted.
    paused: Mutex<HashMap<Option<String>, Instant>>,
    max_jitter: Duration,
}

/// What LaunchDarkly's rate-limit headers said about a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `X-Ratelimit-Route-Remaining`.
    pub route_remaining: Option<u64>,
    /// `X-Ratelimit-Global-Remaining`.
    pub global_remaining: Option<u64>,
    /// `X-Ratelimit-Reset`, epoch milliseconds.
    pub reset_epoch_ms: Option<u64>,
}

impl Limiter {
    /// A limiter with the given pace.
    pub fn new(options: LimiterOptions) -> Self {
        Self {
            account: DefaultDirectRateLimiter::direct(Quota::per_second(
                options.account_per_second,
            )),
            routes: DefaultKeyedRateLimiter::keyed(Quota::per_second(options.route_per_second)),
            paused: Mutex::new(HashMap::new()),
            max_jitter: options.max_jitter,
        }
    }

    /// Waits until a request to `route` may be sent.
    pub async fn until_ready(&self, route: &str) {
        loop {
            let resume = {
                let paused = self.paused.lock().expect("the pause table is never poisoned");
                let now = Instant::now();
                [paused.get(&None), paused.get(&Some(route.to_owned()))]
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|until| *until > now)
                    .max()
            };
            match resume {
                Some(until) => tokio::time::sleep_until(until).await,
                None => break,
            }
        }
        let jitter = Jitter::up_to(self.max_jitter);
        self.routes.until_key_ready_with_jitter(&route.to_owned(), jitter).await;
        self.account.until_ready_with_jitter(jitter).await;
    }

    /// Records what an answer's headers said, pausing exhausted windows until their reset
    /// (plus a margin of 20 ms).
    pub fn observe(&self, route: &str, headers: RateLimitHeaders) {
        let Some(reset) = headers.reset_epoch_ms else { return };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if reset <= now_ms {
            return;
        }
        // A reset time is whole milliseconds, and the server's clock is not ours: come back a
        // little after it rather than a little before.
        let until = Instant::now() + Duration::from_millis(reset - now_ms) + RESET_MARGIN;
        let mut paused = self.paused.lock().expect("the pause table is never poisoned");
        if headers.route_remaining == Some(0) {
            paused.insert(Some(route.to_owned()), until);
        }
        if headers.global_remaining == Some(0) {
            paused.insert(None, until);
        }
    }

    /// Pauses `route` for `wait`, after a 429 that named no reset time.
    pub fn pause(&self, route: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused.lock().expect("the pause table is never poisoned");
        let slot = paused.entry(Some(route.to_owned())).or_insert(until);
        *slot = (*slot).max(until);
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LimiterOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch_ms_in(wait: Duration) -> u64 {
        let at = SystemTime::now() + wait;
        u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_route_waits_for_its_reset() {
        let limiter = Limiter::default();
        limiter.until_ready("GET /a").await;
        let headers = RateLimitHeaders {
            route_remaining: Some(0),
            global_remaining: Some(10),
            reset_epoch_ms: Some(epoch_ms_in(Duration::from_secs(5))),
        };
        limiter.observe("GET /a", headers);
        let start = Instant::now();
        limiter.until_ready("GET /b").await;
        assert!(start.elapsed() < Duration::from_secs(1), "other routes go on");
        limiter.until_ready("GET /a").await;
        assert!(start.elapsed() >= Duration::from_millis(4_900), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_account_pauses_every_route() {
        let limiter = Limiter::default();
        let headers = RateLimitHeaders {
            route_remaining: Some(3),
            global_remaining: Some(0),
            reset_epoch_ms: Some(epoch_ms_in(Duration::from_secs(2))),
        };
        limiter.observe("GET /a", headers);
        let start = Instant::now();
        limiter.until_ready("GET /b").await;
        assert!(start.elapsed() >= Duration::from_millis(1_900), "{:?}", start.elapsed());
    }
}
