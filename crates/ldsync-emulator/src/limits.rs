//! Rate limits on demand: per-route and global request budgets over fixed windows.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::route::RoutePattern;

/// LaunchDarkly's rate-limit window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// One request budget: at most `limit` requests per `window`, globally or for one route.
///
/// Text form (the `--rate-limit` flag): `SCOPE=LIMIT[/WINDOW][,OPTION...]` where `SCOPE` is
/// `global` or a route pattern (see [`RoutePattern`]), `LIMIT` a request count, `WINDOW` a
/// duration such as `10s`, `500ms` or `1m` (default `10s`), and the options are `retry-after`
/// (send `Retry-After` on 429) and `no-headers` (send no `X-Ratelimit-*` headers, as the events
/// host does). Examples: `global=100/10s`, `POST /api/v2/segments/*/*/*/contexts=20/10s,retry-after`.
///
/// JSON form (in `/_emulator/config`): either that text, or
/// `{"route": "POST /api/…" | null, "limit": 20, "window_ms": 10000, "retry_after": false,
/// "headers": true}` (a missing or null `route` means global).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateLimitJson", into = "RateLimitObject")]
pub struct RateLimitSpec {
    /// The route the budget covers; `None` is the global (account-wide) budget.
    pub route: Option<RoutePattern>,
    /// Requests allowed per window.
    pub limit: u32,
    /// Window length.
    pub window: Duration,
    /// Whether a 429 carries `Retry-After` (seconds, rounded up).
    pub retry_after: bool,
    /// Whether responses carry the `X-Ratelimit-*` headers.
    pub headers: bool,
}

impl RateLimitSpec {
    /// A global budget of `limit` requests per `window`.
    pub fn global(limit: u32, window: Duration) -> Self {
        Self { route: None, limit, window, retry_after: false, headers: true }
    }

    /// A budget of `limit` requests per `window` for the routes matching `pattern`.
    pub fn route(pattern: &str, limit: u32, window: Duration) -> Result<Self, Error> {
        let route = pattern
            .parse()
            .map_err(|reason| Error::InvalidRateLimit { input: pattern.to_owned(), reason })?;
        Ok(Self { route: Some(route), limit, window, retry_after: false, headers: true })
    }

    /// The same budget, sending `Retry-After` on 429.
    #[must_use]
    pub fn with_retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }
}

impl fmt::Display for RateLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Some(r) => write!(f, "{r}")?,
            None => f.write_str("global")?,
        }
        write!(f, "={}/{}ms", self.limit, self.window.as_millis())?;
        if self.retry_after {
            f.write_str(",retry-after")?;
        }
        if !self.headers {
            f.write_str(",no-headers")?;
        }
        Ok(())
    }
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) =
        s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as `10s`"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}` is not a duration: use `ms`, `s` or `m`")),
    }
}

impl FromStr for RateLimitSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| Error::InvalidRateLimit { input: s.to_owned(), reason };
        let (scope, rest) = s
            .split_once('=')
            .ok_or_else(|| err("expected `SCOPE=LIMIT/WINDOW`, e.g. `global=100/10s`".into()))?;
        let route = match scope.trim() {
            "global" => None,
            pattern => Some(pattern.parse::<RoutePattern>().map_err(err)?),
        };
        let mut parts = rest.split(',');
        let budget = parts.next().unwrap_or_default().trim();
        let (limit, window) = match budget.split_once('/') {
            Some((l, w)) => (l, parse_duration(w).map_err(err)?),
            None => (budget, DEFAULT_WINDOW),
        };
        let limit = limit
            .trim()
            .parse::<u32>()
            .map_err(|_| err(format!("`{limit}` is not a request count")))?;
        if window.is_zero() {
            return Err(err("the window must be longer than zero".into()));
        }
        let mut spec = Self { route, limit, window, retry_after: false, headers: true };
        for opt in parts {
            match opt.trim() {
                "retry-after" => spec.retry_after = true,
                "no-headers" => spec.headers = false,
                other => {
                    return Err(err(format!(
                        "unknown option `{other}`: use `retry-after` or `no-headers`"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateLimitJson {
    Text(String),
    Object(RateLimitObject),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitObject {
    #[serde(default)]
    route: Option<String>,
    limit: u32,
    #[serde(default = "default_window_ms")]
    window_ms: u64,
    #[serde(default)]
    retry_after: bool,
    #[serde(default = "yes")]
    headers: bool,
}

fn default_window_ms() -> u64 {
    10_000
}

fn yes() -> bool {
    true
}

impl TryFrom<RateLimitJson> for RateLimitSpec {
    type Error = Error;

    fn try_from(value: RateLimitJson) -> Result<Self, Error> {
        match value {
            RateLimitJson::Text(t) => t.parse(),
            RateLimitJson::Object(o) => {
                let route =
                    match o.route {
                        Some(r) if r != "global" => Some(r.parse().map_err(|reason| {
                            Error::InvalidRateLimit { input: r.clone(), reason }
                        })?),
                        _ => None,
                    };
                if o.window_ms == 0 {
                    return Err(Error::InvalidRateLimit {
                        input: "window_ms: 0".into(),
                        reason: "the window must be longer than zero".into(),
                    });
                }
                Ok(Self {
                    route,
                    limit: o.limit,
                    window: Duration::from_millis(o.window_ms),
                    retry_after: o.retry_after,
                    headers: o.headers,
                })
            }
        }
    }
}

impl From<RateLimitSpec> for RateLimitObject {
    fn from(s: RateLimitSpec) -> Self {
        Self {
            route: s.route.map(|r| r.to_string()),
            limit: s.limit,
            window_ms: u64::try_from(s.window.as_millis()).unwrap_or(u64::MAX),
            retry_after: s.retry_after,
            headers: s.headers,
        }
    }
}

/// A budget and its current window.
#[derive(Debug)]
struct Budget {
    spec: RateLimitSpec,
    window_start: Option<Instant>,
    window_end_ms: u64,
    used: u32,
    reported_exhausted: bool,
}

/// The outcome of counting one request against the budgets.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Whether the request is refused with 429.
    pub(crate) limited: bool,
    /// Whether a budget it hit had already been reported exhausted in this window.
    pub(crate) into_exhausted_window: bool,
    /// `X-Ratelimit-Route-Remaining`.
    pub(crate) route_remaining: Option<u32>,
    /// `X-Ratelimit-Global-Remaining`.
    pub(crate) global_remaining: Option<u32>,
    /// `X-Ratelimit-Reset`, epoch milliseconds.
    pub(crate) reset_ms: Option<u64>,
    /// `Retry-After`, seconds.
    pub(crate) retry_after_secs: Option<u64>,
}

/// All budgets with their windows.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    budgets: Vec<Budget>,
}

impl Limiter {
    pub(crate) fn new(specs: Vec<RateLimitSpec>) -> Self {
        Self {
            budgets: specs
                .into_iter()
                .map(|spec| Budget {
                    spec,
                    window_start: None,
                    window_end_ms: 0,
                    used: 0,
                    reported_exhausted: false,
                })
                .collect(),
        }
    }

    pub(crate) fn specs(&self) -> Vec<RateLimitSpec> {
        self.budgets.iter().map(|b| b.spec.clone()).collect()
    }

    /// Counts one request. `api` tells whether the request is on the REST API, which the global
    /// budget covers (the events host has its own limiter).
    pub(crate) fn check(
        &mut self,
        method: &str,
        path: &str,
        api: bool,
        now: Instant,
        now_ms: u64,
    ) -> Decision {
        let applicable: Vec<usize> = self
            .budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| match &b.spec.route {
                Some(r) => r.matches(method, path),
                None => api,
            })
            .map(|(i, _)| i)
            .collect();
        let mut d = Decision::default();
        if applicable.is_empty() {
            return d;
        }
        for &i in &applicable {
            let b = &mut self.budgets[i];
            let expired = b.window_start.is_none_or(|start| now >= start + b.spec.window);
            if expired {
                b.window_start = Some(now);
                // Rounded up: `now_ms` is truncated, and a client must never be told a reset
                // earlier than the window's real end.
                b.window_end_ms =
                    now_ms + 1 + u64::try_from(b.spec.window.as_millis()).unwrap_or(u64::MAX / 2);
                b.used = 0;
                b.reported_exhausted = false;
            }
        }
        let exhausted: Vec<usize> = applicable
            .iter()
            .copied()
            .filter(|&i| self.budgets[i].used >= self.budgets[i].spec.limit)
            .collect();
        if exhausted.is_empty() {
            for &i in &applicable {
                let b = &mut self.budgets[i];
                b.used += 1;
                if b.used >= b.spec.limit && b.spec.headers {
                    b.reported_exhausted = true;
                }
            }
        } else {
            d.limited = true;
            d.into_exhausted_window = exhausted.iter().any(|&i| self.budgets[i].reported_exhausted);
            for &i in &exhausted {
                self.budgets[i].reported_exhausted = true;
            }
        }
        // Headers come from the budgets that send them; the reset time is the one of the
        // tightest budget (on 429: the latest reset among the exhausted ones).
        let mut tightest: Option<(u32, u64)> = None;
        for &i in &applicable {
            let b = &self.budgets[i];
            if !b.spec.headers {
                continue;
            }
            let remaining = b.spec.limit.saturating_sub(b.used);
            let slot = if b.spec.route.is_some() {
                &mut d.route_remaining
            } else {
                &mut d.global_remaining
            };
            *slot = Some(slot.map_or(remaining, |r| r.min(remaining)));
            let better = match tightest {
                None => true,
                Some((r, end)) => remaining < r || (remaining == r && b.window_end_ms > end),
            };
            if better {
                tightest = Some((remaining, b.window_end_ms));
            }
        }
        d.reset_ms = tightest.map(|(_, end)| end);
        if d.limited {
            let wants_retry_after = exhausted.iter().any(|&i| self.budgets[i].spec.retry_after);
            let end =
                exhausted.iter().map(|&i| self.budgets[i].window_end_ms).max().unwrap_or(now_ms);
            if wants_retry_after {
                d.retry_after_secs = Some(end.saturating_sub(now_ms).div_ceil(1000).max(1));
            }
            if exhausted.iter().any(|&i| self.budgets[i].spec.headers) {
                d.reset_ms = Some(end);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Limiter, RateLimitSpec};

    #[test]
    fn parses_text_form() {
        let g: RateLimitSpec = "global=100/10s".parse().unwrap();
        assert_eq!(g, RateLimitSpec::global(100, Duration::from_secs(10)));
        let r: RateLimitSpec =
            "POST /api/v2/segments/*/*/*/contexts=20/500ms,retry-after".parse().unwrap();
        assert_eq!(r.limit, 20);
        assert_eq!(r.window, Duration::from_millis(500));
        assert!(r.retry_after);
        assert!(r.route.unwrap().matches("POST", "/api/v2/segments/a/b/c/contexts"));
        assert!("global".parse::<RateLimitSpec>().is_err());
        assert!("global=x/10s".parse::<RateLimitSpec>().is_err());
        assert!("global=1/0s".parse::<RateLimitSpec>().is_err());
        assert!("global=1/10s,bogus".parse::<RateLimitSpec>().is_err());
        let round: RateLimitSpec = "global=3/2s,no-headers".parse().unwrap();
        assert_eq!(round.to_string().parse::<RateLimitSpec>().unwrap(), round);
    }

    #[test]
    fn json_forms_agree() {
        let a: RateLimitSpec = serde_json::from_str(r#""global=5/1s""#).unwrap();
        let b: RateLimitSpec = serde_json::from_str(r#"{"limit":5,"window_ms":1000}"#).unwrap();
        assert_eq!(a, b);
        let back: RateLimitSpec =
            serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn windows_roll_and_exhaust() {
        let mut l = Limiter::new(vec![RateLimitSpec::global(2, Duration::from_secs(10))]);
        let t0 = Instant::now();
        let d = l.check("GET", "/api/v2/x", true, t0, 1_000);
        assert_eq!(
            (d.limited, d.global_remaining, d.reset_ms),
            (false, Some(1), Some(11_001)),
            "the reset is rounded up"
        );
        let d = l.check("GET", "/api/v2/x", true, t0, 1_000);
        assert_eq!((d.limited, d.global_remaining), (false, Some(0)));
        let d = l.check("GET", "/api/v2/x", true, t0, 1_000);
        assert!(d.limited && d.into_exhausted_window);
        let d = l.check("POST", "/v2/event-data-import/p/e", false, t0, 1_000);
        assert!(!d.limited, "the global budget covers the REST API only");
        let d = l.check("GET", "/api/v2/x", true, t0 + Duration::from_secs(10), 11_000);
        assert_eq!((d.limited, d.global_remaining), (false, Some(1)));
    }
}
