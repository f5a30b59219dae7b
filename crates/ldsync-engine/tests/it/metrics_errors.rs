//! LaunchDarkly refusing a metric (`422`, `400`), through a scripted proxy in front of the
//! emulator: the metric is rejected with the status and reason, the other metrics are
//! delivered, the run succeeds, and the next run tries the metric again.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use ldsync_emulator::{Emulator, EmulatorConfig, DEFAULT_PROJECT};
use ldsync_engine::{metrics::MetricsOptions, RunOutcome};
use serde_json::json;

use crate::{
    metrics::{orders, pricing, revenue, Harness},
    scripted::{Proxy, Reply, Seen},
};

/// A harness whose client goes through a scripted proxy to the emulator.
async fn start() -> (Harness, Proxy) {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let proxy = Proxy::start(&emulator.api_url()).await;
    (Harness::over(emulator, &proxy.url(), Duration::from_secs(30)), proxy)
}

fn path(key: Option<&str>) -> String {
    let list = format!("/api/v2/metrics/{DEFAULT_PROJECT}");
    key.map_or_else(|| list.clone(), |key| format!("{list}/{key}"))
}

/// `(method, path, status, scripted)`.
fn seen(method: &str, key: Option<&str>, status: u16, scripted: bool) -> Seen {
    Seen { method: method.to_owned(), path: path(key), status, scripted }
}

#[tokio::test]
async fn a_patch_answered_422_rejects_that_metric_and_the_next_run_patches_it() {
    let (h, proxy) = start().await;
    let options = MetricsOptions::default();
    h.warehouse.set(&[orders("Orders"), revenue("USD"), pricing()]);
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.creates.len(), 3, "{report:?}");
    proxy.take();

    // Every metric changes; LaunchDarkly answers every patch of `revenue` with a 422.
    let rows = vec![orders("Orders placed"), revenue("EUR"), {
        let mut pricing = pricing();
        pricing["description"] = json!("Views of the pricing page");
        pricing
    }];
    h.warehouse.set(&rows);
    let refused = path(Some("revenue"));
    proxy.script(move |method, path| {
        (method == "PATCH" && path == refused)
            .then(|| Reply::error(422, "patch_failed", "unit cannot be changed on this metric"))
    });
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert_eq!(report.patches.len(), 3, "{report:?}");
    assert_eq!(report.rejected, 1, "{report:?}");
    let rejection = &report.rejections[0];
    assert_eq!(rejection.key.as_deref(), Some("revenue"));
    assert_eq!(rejection.row, 2);
    for needle in ["422", "patch_failed", "unit cannot be changed", "revenue"] {
        assert!(rejection.reason.contains(needle), "{needle}: {}", rejection.reason);
    }
    // The planned patch, then (it may no longer apply) a fresh read and a recomputed patch,
    // refused again; the other two patches are delivered.
    assert_eq!(
        proxy.take(),
        [
            seen("GET", None, 200, false),
            seen("PATCH", Some("orders"), 200, false),
            seen("PATCH", Some("revenue"), 422, true),
            seen("GET", Some("revenue"), 200, false),
            seen("PATCH", Some("revenue"), 422, true),
            seen("PATCH", Some("pricing-views"), 200, false),
        ]
    );
    h.assert_mirrors(&[rows[0].clone(), rows[2].clone()]);
    assert_eq!(h.metric("revenue").unwrap()["unit"], json!("USD"));
    let history = h.state.history(&h.name).unwrap();
    assert_eq!(history.recent(1).unwrap()[0].outcome, "succeeded");
    let rejected = history.rejected().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].key.as_deref(), Some("revenue"));

    // LaunchDarkly answers normally again: the next run patches `revenue`, and only it.
    proxy.forward_all();
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert!(report.rejections.is_empty(), "{report:?}");
    assert_eq!(report.patches.len(), 1, "{report:?}");
    assert_eq!(report.patches[0].key, "revenue");
    // Not delivered before, so LaunchDarkly's value is not drift.
    assert!(!report.patches[0].is_drift(), "{report:?}");
    assert_eq!(
        proxy.take(),
        [seen("GET", None, 200, false), seen("PATCH", Some("revenue"), 200, false)]
    );
    h.assert_mirrors(&rows);
    assert!(h.state.history(&h.name).unwrap().rejected().unwrap().is_empty());
}

#[tokio::test]
async fn a_create_answered_400_rejects_that_metric_and_the_next_run_creates_it() {
    let (h, proxy) = start().await;
    let options = MetricsOptions::default();
    h.warehouse.set(&[orders("Orders")]);
    h.run(false, options).await;
    proxy.take();

    // One patch and two creates; LaunchDarkly refuses the create of `pricing-views`.
    let rows = vec![pricing(), orders("Orders placed"), revenue("USD")];
    h.warehouse.set(&rows);
    // The script sees no body: it counts the creates.
    let creates = Arc::new(AtomicUsize::new(0));
    let counted = creates.clone();
    proxy.script(move |method, path| {
        if method != "POST" || path != self::path(None) {
            return None;
        }
        // `pricing-views` is the first row, so the first create.
        (counted.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| Reply::error(400, "invalid_request", "urls[0].substring is not allowed"))
    });
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert_eq!(report.creates.len(), 2, "{report:?}");
    assert_eq!(report.patches.len(), 1, "{report:?}");
    assert_eq!(report.rejected, 1, "{report:?}");
    let rejection = &report.rejections[0];
    assert_eq!(rejection.key.as_deref(), Some("pricing-views"));
    assert_eq!(rejection.row, 1);
    for needle in ["400", "invalid_request", "substring is not allowed", "create"] {
        assert!(rejection.reason.contains(needle), "{needle}: {}", rejection.reason);
    }
    assert_eq!(creates.load(Ordering::SeqCst), 2);
    assert_eq!(
        proxy.take(),
        [
            seen("GET", None, 200, false),
            seen("POST", None, 400, true),
            seen("PATCH", Some("orders"), 200, false),
            seen("POST", None, 201, false),
        ]
    );
    assert!(h.metric("pricing-views").is_none());
    h.assert_mirrors(&rows[1..]);
    assert_eq!(h.state.history(&h.name).unwrap().recent(1).unwrap()[0].outcome, "succeeded");

    // The next run creates it; being created by ldsync, it is archived once it leaves the
    // query (with `archive_removed`), unlike a metric ldsync never created.
    proxy.forward_all();
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert!(report.rejections.is_empty(), "{report:?}");
    assert_eq!(report.creates.len(), 1, "{report:?}");
    assert_eq!(report.creates[0].key, "pricing-views");
    assert_eq!(proxy.take(), [seen("GET", None, 200, false), seen("POST", None, 201, false)]);
    h.assert_mirrors(&rows);

    h.warehouse.set(&rows[1..]);
    let (report, _) = h.run(true, options).await;
    assert_eq!(report.archives, ["pricing-views"], "{report:?}");
}

#[tokio::test]
async fn a_patch_answered_422_once_is_recomputed_and_delivered() {
    // A 422 may mean the planned patch no longer applies (the metric changed since the list):
    // the engine reads it afresh and sends what still differs, without rejecting it.
    let (h, proxy) = start().await;
    let options = MetricsOptions::default();
    h.warehouse.set(&[orders("Orders")]);
    h.run(false, options).await;
    proxy.take();

    let rows = vec![orders("Orders placed")];
    h.warehouse.set(&rows);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    proxy.script(move |method, _| {
        (method == "PATCH" && count.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| Reply::error(422, "patch_failed", "test operation failed"))
    });
    let (report, _) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert!(report.rejections.is_empty(), "{report:?}");
    assert_eq!(
        proxy.take(),
        [
            seen("GET", None, 200, false),
            seen("PATCH", Some("orders"), 422, true),
            seen("GET", Some("orders"), 200, false),
            seen("PATCH", Some("orders"), 200, false),
        ]
    );
    h.assert_mirrors(&rows);
}
