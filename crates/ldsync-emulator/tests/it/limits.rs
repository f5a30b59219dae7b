//! Rate limits: budgets, headers, 429s and the exhausted-window count.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ldsync_emulator::{EmulatorConfig, RateLimitSpec};
use serde_json::json;

use crate::common::Harness;

#[tokio::test]
async fn route_and_global_budgets() {
    let limits = vec![
        "global=5/10s".parse().unwrap(),
        "POST /api/v2/segments/*/*/*/contexts=2/10s,retry-after".parse::<RateLimitSpec>().unwrap(),
    ];
    let h = Harness::with(EmulatorConfig::default().with_rate_limits(limits)).await;
    h.big_segment("beta").await; // global 4 left
    let path = "/api/v2/segments/default/production/beta/contexts";
    let body = json!({"included": {"add": ["a"]}});
    let r = h.post(path, &body).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-ratelimit-route-remaining"), Some("1"));
    assert_eq!(r.header("x-ratelimit-global-remaining"), Some("3"));
    let now_ms =
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset > now_ms && reset <= now_ms + 10_500, "reset {reset} vs now {now_ms}");
    assert_eq!(h.post(path, &body).await.header("x-ratelimit-route-remaining"), Some("0"));
    let limited = h.post(path, &body).await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(limited.header("x-ratelimit-reset").is_some());
    h.post(path, &body).await.assert_error(429, "rate_limited");
    // Other routes still have global budget: 2 left, then exhausted.
    assert_eq!(
        h.get("/api/v2/segments/default/production").await.header("x-ratelimit-global-remaining"),
        Some("1")
    );
    assert_eq!(h.get("/api/v2/segments/default/production").await.status, 200);
    h.get("/api/v2/segments/default/production").await.assert_error(429, "rate_limited");
    // The events path is outside the global budget.
    assert_eq!(h.import_events(&json!([]), None).await.status, 202);
    let stats = h.emu.stats();
    assert_eq!(stats.rate_limited, 3);
    assert_eq!(stats.requests_into_exhausted_windows, 3);
}

#[tokio::test]
async fn windows_reset_and_run_time_changes() {
    let h = Harness::start().await;
    assert!(h.get("/api/v2/versions").await.header("x-ratelimit-global-remaining").is_none());
    h.emu.set_rate_limits(vec![RateLimitSpec::global(1, Duration::from_millis(200))]);
    assert_eq!(h.get("/api/v2/versions").await.status, 200);
    h.get("/api/v2/versions").await.assert_error(429, "rate_limited");
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert_eq!(h.get("/api/v2/versions").await.status, 200);
    h.emu.set_rate_limits(vec!["GET /api/v2/versions=1/10s,no-headers".parse().unwrap()]);
    let r = h.get("/api/v2/versions").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-route-remaining").is_none());
    let r = h.get("/api/v2/versions").await;
    assert_eq!(r.status, 429);
    assert!(r.header("x-ratelimit-reset").is_none());
    // A 429 on a budget that never reported `Remaining: 0` is not into an exhausted window.
    assert_eq!(h.emu.stats().requests_into_exhausted_windows, 1);
}
