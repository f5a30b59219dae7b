//! Pure retry decisions: what to do with one answer, given the attempt number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How persistent the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Time in all, after which no new attempt starts.
    pub max_elapsed: Duration,
    /// The first backoff; each retry doubles it.
    pub base_delay: Duration,
    /// The longest single wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_elapsed: Duration::from_mins(5),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy that never waits, for tests.
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            max_elapsed: Duration::from_mins(1),
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// The exponential backoff ceiling for `attempt` (1-based); the wait is drawn below it.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What to do after one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// The request succeeded.
    Done,
    /// Try again after this long (before jitter for a backoff: see [`Wait`]).
    Retry(Wait),
    /// Do not try again.
    Fail,
}

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until a time LaunchDarkly gave (`X-Ratelimit-Reset` or `Retry-After`): wait this long,
    /// plus a little jitter so that clients do not all return at once.
    Until(Duration),
    /// Exponential backoff with full jitter: wait a random time up to this ceiling.
    Backoff(Duration),
}

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer.
    Status {
        /// The status code.
        status: u16,
        /// `X-Ratelimit-Reset`, epoch milliseconds.
        reset_epoch_ms: Option<u64>,
        /// `Retry-After`, seconds.
        retry_after_secs: Option<u64>,
    },
    /// No answer: a connection error, a reset, or a timeout.
    Transport,
}

/// Decides what to do after `outcome` of attempt `attempt` (1-based), at time `now`.
pub fn retry_action(
    policy: &RetryPolicy,
    outcome: Outcome,
    attempt: u32,
    now: SystemTime,
) -> RetryAction {
    let backoff = Wait::Backoff(policy.backoff_ceiling(attempt));
    let action = match outcome {
        Outcome::Status { status, .. } if (200..300).contains(&status) => return RetryAction::Done,
        Outcome::Status { status: 429, reset_epoch_ms, retry_after_secs } => {
            let now_ms = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let until_reset = reset_epoch_ms
                .filter(|reset| *reset > now_ms)
                .map(|reset| Duration::from_millis(reset - now_ms));
            let retry_after = retry_after_secs.map(Duration::from_secs);
            // Wait for whichever the server asks to be longer; a reset in the past (it
            // happens) falls back to exponential backoff.
            match until_reset.max(retry_after) {
                Some(wait) => RetryAction::Retry(Wait::Until(wait)),
                None => RetryAction::Retry(backoff),
            }
        }
        Outcome::Status { status, .. } if status >= 500 && status != 501 => {
            RetryAction::Retry(backoff)
        }
        Outcome::Transport => RetryAction::Retry(backoff),
        Outcome::Status { .. } => RetryAction::Fail,
    };
    if attempt >= policy.max_attempts {
        RetryAction::Fail
    } else {
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Outcome {
        Outcome::Status { status, reset_epoch_ms: None, retry_after_secs: None }
    }

    const NOW_MS: u64 = 1_700_000_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    #[test]
    fn success_is_done_and_client_errors_fail_at_once() {
        let policy = RetryPolicy::default();
        assert_eq!(retry_action(&policy, status(204), 1, now()), RetryAction::Done);
        for code in [400, 401, 403, 404, 406, 409, 422, 501] {
            assert_eq!(retry_action(&policy, status(code), 1, now()), RetryAction::Fail, "{code}");
        }
    }

    #[test]
    fn server_errors_and_transport_back_off_exponentially() {
        let policy = RetryPolicy::default();
        for outcome in [status(500), status(502), status(503), status(504), Outcome::Transport] {
            assert_eq!(
                retry_action(&policy, outcome, 1, now()),
                RetryAction::Retry(Wait::Backoff(Duration::from_millis(250)))
            );
            assert_eq!(
                retry_action(&policy, outcome, 3, now()),
                RetryAction::Retry(Wait::Backoff(Duration::from_secs(1)))
            );
        }
        assert_eq!(policy.backoff_ceiling(30), policy.max_delay);
    }

    #[test]
    fn rate_limits_wait_for_the_reset_or_retry_after() {
        let policy = RetryPolicy::default();
        let at_reset = Outcome::Status {
            status: 429,
            reset_epoch_ms: Some(NOW_MS + 1_500),
            retry_after_secs: None,
        };
        assert_eq!(
            retry_action(&policy, at_reset, 1, now()),
            RetryAction::Retry(Wait::Until(Duration::from_millis(1_500)))
        );
        let both = Outcome::Status {
            status: 429,
            reset_epoch_ms: Some(NOW_MS + 1_500),
            retry_after_secs: Some(3),
        };
        assert_eq!(
            retry_action(&policy, both, 1, now()),
            RetryAction::Retry(Wait::Until(Duration::from_secs(3)))
        );
        let past = Outcome::Status {
            status: 429,
            reset_epoch_ms: Some(NOW_MS - 10),
            retry_after_secs: None,
        };
        assert_eq!(
            retry_action(&policy, past, 2, now()),
            RetryAction::Retry(Wait::Backoff(Duration::from_millis(500)))
        );
    }

    #[test]
    fn the_last_attempt_fails() {
        let policy = RetryPolicy::immediate(3);
        assert!(matches!(retry_action(&policy, status(503), 2, now()), RetryAction::Retry(_)));
        assert_eq!(retry_action(&policy, status(503), 3, now()), RetryAction::Fail);
    }
}
