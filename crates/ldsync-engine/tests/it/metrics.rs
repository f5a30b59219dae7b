//! Metric definitions as code, against the emulator: update or create with minimal patches,
//! drift restored, kind changes, archiving, and a create that races another writer.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ldsync_config::{MetricsSpec, Query};
use ldsync_core::{BatchStream, RowBatch, Secret, Source, SyncName, Value};
use ldsync_emulator::{Emulator, EmulatorConfig, FaultKind, FaultSpec, DEFAULT_PROJECT};
use ldsync_engine::{
    metrics::{MetricsOptions, MetricsReport, MetricsSync},
    RunOutcome,
};
use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient, MetricPost, PatchOp, RetryPolicy};
use ldsync_state::StateDir;
use serde_json::{json, Value as Json};

use crate::WarehouseError;

const LIST: &str = "GET /api/v2/metrics/{projectKey}";
const CREATE: &str = "POST /api/v2/metrics/{projectKey}";
const GET: &str = "GET /api/v2/metrics/{projectKey}/{metricKey}";
const PATCH: &str = "PATCH /api/v2/metrics/{projectKey}/{metricKey}";
const DELETE: &str = "DELETE /api/v2/metrics/{projectKey}/{metricKey}";

/// A warehouse in memory: the query's result is whatever rows the test set last.
#[derive(Debug, Default)]
pub(crate) struct Warehouse {
    batch: Mutex<Option<RowBatch>>,
}

impl Source for Warehouse {
    type Error = WarehouseError;

    async fn healthcheck(&self) -> Result<(), WarehouseError> {
        Ok(())
    }

    fn fetch<'a>(
        &'a self,
        _sql: &'a str,
        _params: &'a [Value],
        _batch_rows: usize,
    ) -> BatchStream<'a, WarehouseError> {
        let batch = self.batch.lock().unwrap().clone();
        Box::pin(futures_util::stream::iter(batch.into_iter().map(Ok)))
    }
}

impl Warehouse {
    /// Sets the rows, each a JSON object from column to value; every row has every column.
    pub(crate) fn set(&self, rows: &[Json]) {
        let columns: Vec<String> = rows.first().map_or_else(
            || vec!["key".to_owned()],
            |row| row.as_object().unwrap().keys().cloned().collect(),
        );
        let rows = rows
            .iter()
            .map(|row| columns.iter().map(|column| value(&row[column.as_str()])).collect())
            .collect();
        *self.batch.lock().unwrap() = Some(RowBatch { columns: Arc::from(columns), rows });
    }
}

fn value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(flag) => Value::Bool(*flag),
        Json::Number(number) => Value::Int(number.as_i64().unwrap()),
        Json::String(text) => Value::Text(text.clone()),
        other => Value::Json(other.clone()),
    }
}

/// The API field of each column.
const COLUMNS: [(&str, &str); 13] = [
    ("name", "name"),
    ("description", "description"),
    ("tags", "tags"),
    ("event_key", "eventKey"),
    ("is_numeric", "isNumeric"),
    ("unit", "unit"),
    ("success_criteria", "successCriteria"),
    ("unit_aggregation_type", "unitAggregationType"),
    ("analysis_type", "analysisType"),
    ("percentile_value", "percentileValue"),
    ("randomization_units", "randomizationUnits"),
    ("urls", "urls"),
    ("selector", "selector"),
];

pub(crate) struct Harness {
    pub(crate) emulator: Emulator,
    pub(crate) client: LaunchDarklyClient,
    pub(crate) state: StateDir,
    pub(crate) warehouse: Warehouse,
    pub(crate) name: SyncName,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(EmulatorConfig::default(), Duration::from_secs(30)).await
    }

    async fn start_with(config: EmulatorConfig, timeout: Duration) -> Self {
        let emulator = Emulator::start(config).await.unwrap();
        let api_url = emulator.api_url();
        Self::over(emulator, &api_url, timeout)
    }

    /// A harness whose client reaches the emulator's API at `api_url` (the emulator's own, or
    /// a proxy in front of it).
    pub(crate) fn over(emulator: Emulator, api_url: &str, timeout: Duration) -> Self {
        let mut options =
            ClientOptions::new(api_url, emulator.events_url(), Secret::new(emulator.token()));
        options.retry = RetryPolicy::immediate(4);
        options.request_timeout = timeout;
        let client = LaunchDarklyClient::new(options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join(".ldsync")).unwrap();
        Self {
            emulator,
            client,
            state,
            warehouse: Warehouse::default(),
            name: "metric-definitions".parse().unwrap(),
            _dir: dir,
        }
    }

    pub(crate) fn spec(archive_removed: bool) -> MetricsSpec {
        MetricsSpec {
            archive_removed,
            query: "select * from ld.metric_definitions".parse::<Query>().unwrap(),
        }
    }

    pub(crate) fn sync<'a>(&'a self, spec: &'a MetricsSpec) -> MetricsSync<'a, Warehouse> {
        MetricsSync {
            name: &self.name,
            spec,
            source: &self.warehouse,
            client: &self.client,
            project: DEFAULT_PROJECT,
            state: &self.state,
        }
    }

    /// Runs once and returns the report with the requests it sent, by route.
    pub(crate) async fn run(
        &self,
        archive_removed: bool,
        options: MetricsOptions,
    ) -> (MetricsReport, BTreeMap<String, u64>) {
        let before = self.emulator.stats().requests_by_route;
        let spec = Self::spec(archive_removed);
        let report = self.sync(&spec).run(options).await.unwrap();
        (report, self.requests_since(&before))
    }

    fn requests_since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.emulator
            .stats()
            .requests_by_route
            .into_iter()
            .filter_map(|(route, count)| {
                let sent = count - before.get(&route).copied().unwrap_or(0);
                (sent > 0).then_some((route, sent))
            })
            .collect()
    }

    pub(crate) fn metric(&self, key: &str) -> Option<Json> {
        self.emulator.snapshot().metric(DEFAULT_PROJECT, key).cloned()
    }

    /// Asserts that LaunchDarkly holds exactly the warehouse's values of every managed field.
    pub(crate) fn assert_mirrors(&self, rows: &[Json]) {
        for row in rows {
            let key = row["key"].as_str().unwrap();
            let held = self.metric(key).unwrap_or_else(|| panic!("metric `{key}` is missing"));
            assert_eq!(held["kind"], row.get("kind").cloned().unwrap_or(json!("custom")), "{key}");
            for (column, api) in COLUMNS {
                let Some(wanted) = row.get(column) else { continue };
                let held = held.get(api).cloned().unwrap_or(Json::Null);
                match (column, wanted) {
                    ("name", Json::Null) => assert_eq!(held, json!(key)),
                    ("tags", Json::Null) => assert_eq!(held, json!([])),
                    ("tags", Json::String(text)) => {
                        let mut tags: Vec<&str> =
                            text.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
                        tags.sort_unstable();
                        assert_eq!(held, json!(tags), "{key}.{api}");
                    }
                    _ => assert_eq!(&held, wanted, "{key}.{api}"),
                }
            }
            assert_ne!(held["archived"], json!(true), "{key} is archived");
        }
    }
}

pub(crate) fn routes(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(route, count)| ((*route).to_owned(), *count)).collect()
}

pub(crate) fn orders(name: &str) -> Json {
    json!({
        "key": "orders", "kind": "custom", "name": name, "description": "Orders placed",
        "tags": "warehouse-sync, growth", "event_key": "Order placed", "is_numeric": false,
        "unit": null, "success_criteria": null, "urls": null, "selector": null,
    })
}

pub(crate) fn revenue(unit: &str) -> Json {
    json!({
        "key": "revenue", "kind": "custom", "name": "Revenue", "description": null,
        "tags": "warehouse-sync", "event_key": "purchase", "is_numeric": true,
        "unit": unit, "success_criteria": "HigherThanBaseline", "urls": null, "selector": null,
    })
}

pub(crate) fn pricing() -> Json {
    json!({
        "key": "pricing-views", "kind": "pageview", "name": "Pricing views",
        "description": "Views of /pricing", "tags": null, "event_key": null, "is_numeric": null,
        "unit": null, "success_criteria": null,
        "urls": [{"kind": "substring", "substring": "/pricing"}], "selector": null,
    })
}

fn signup() -> Json {
    json!({
        "key": "signup-clicks", "kind": "click", "name": "Sign-up clicks", "description": null,
        "tags": "web", "event_key": null, "is_numeric": null, "unit": null,
        "success_criteria": null,
        "urls": [{"kind": "exact", "url": "https://example.com/"}], "selector": ".signup",
    })
}

#[tokio::test]
async fn definitions_are_created_patched_minimally_and_drift_is_restored() {
    let h = Harness::start().await;
    let options = MetricsOptions::default();

    // 1. A first run creates every metric, and only creates.
    let rows = vec![orders("Orders"), revenue("USD"), pricing()];
    h.warehouse.set(&rows);
    let (report, sent) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.creates.len(), 3, "{report:?}");
    assert_eq!(sent, routes(&[(LIST, 1), (CREATE, 3)]));
    h.assert_mirrors(&rows);

    // 2. Nothing changed: the list, and nothing else.
    let (report, sent) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Unchanged);
    assert_eq!(report.unchanged, 3);
    assert_eq!(sent, routes(&[(LIST, 1)]));

    // 3. The warehouse changes two metrics; someone edits two managed fields and one
    //    unmanaged field in LaunchDarkly.
    let rows = vec![orders("Orders placed"), revenue("EUR"), pricing()];
    h.warehouse.set(&rows);
    let edit = |key: &'static str, path: &'static str, value: Json| {
        let client = h.client.clone();
        async move {
            client
                .patch_metric(
                    DEFAULT_PROJECT,
                    key,
                    &[PatchOp::Replace { path: path.into(), value }],
                )
                .await
                .unwrap();
        }
    };
    edit("pricing-views", "/description", json!("edited in the UI")).await;
    edit("orders", "/tags", json!(["manual"])).await;
    edit("revenue", "/randomizationUnits", json!(["organization"])).await;

    let spec = Harness::spec(false);
    let plan = h.sync(&spec).plan(options).await.unwrap();
    let changed: BTreeMap<&str, Vec<(&str, bool)>> = plan
        .patches
        .iter()
        .map(|patch| {
            let fields = patch.changes.iter().map(|c| (c.field.as_str(), c.drift)).collect();
            (patch.key.as_str(), fields)
        })
        .collect();
    assert_eq!(
        changed,
        BTreeMap::from([
            ("orders", vec![("name", false), ("tags", true)]),
            ("pricing-views", vec![("description", true)]),
            ("revenue", vec![("unit", false)]),
        ])
    );
    assert_eq!(plan.drifted(), 2);
    let description = &plan.patches.iter().find(|p| p.key == "pricing-views").unwrap().changes[0];
    assert_eq!(description.old, Some(json!("edited in the UI")));
    assert_eq!(description.new, Some(json!("Views of /pricing")));

    let (report, sent) = h.run(false, options).await;
    assert_eq!(report.patches.len(), 3);
    assert_eq!(sent, routes(&[(LIST, 1), (PATCH, 3)]));
    h.assert_mirrors(&rows);
    // The unmanaged field keeps LaunchDarkly's value.
    assert_eq!(h.metric("revenue").unwrap()["randomizationUnits"], json!(["organization"]));

    // 4. A NULL clears a field LaunchDarkly holds: a `remove`.
    let mut no_description = pricing();
    no_description["description"] = Json::Null;
    let rows = vec![orders("Orders placed"), revenue("EUR"), no_description, signup()];
    h.warehouse.set(&rows);
    let (report, sent) = h.run(false, options).await;
    assert_eq!(report.creates.len(), 1);
    assert_eq!(report.patches.len(), 1);
    assert_eq!(report.patches[0].changes[0].new, None);
    assert_eq!(sent, routes(&[(LIST, 1), (CREATE, 1), (PATCH, 1)]));
    h.assert_mirrors(&rows);
    assert!(h.metric("pricing-views").unwrap().get("description").is_none());

    // 5. A row leaves the query: without `archive_removed`, its metric is left alone.
    let rows = vec![orders("Orders placed"), revenue("EUR"), signup()];
    h.warehouse.set(&rows);
    let (report, sent) = h.run(false, options).await;
    assert_eq!(report.outcome, RunOutcome::Unchanged);
    assert_eq!(sent, routes(&[(LIST, 1)]));
    assert_eq!(h.metric("pricing-views").unwrap()["archived"], json!(false));

    // 6. A backfill re-sends every definition.
    let before = h.emulator.stats().requests_by_route;
    let backfill = h.sync(&spec).backfill(options).await.unwrap();
    assert_eq!(backfill.patches.len(), 3);
    assert_eq!(h.requests_since(&before), routes(&[(LIST, 1), (PATCH, 3)]));
    h.assert_mirrors(&rows);

    let history = h.state.history(&h.name).unwrap().recent(10).unwrap();
    assert_eq!(history.len(), 6);
    assert_eq!(history.last().unwrap().command, "backfill");
}

#[tokio::test]
async fn bad_rows_are_rejected_and_the_rest_proceed() {
    let h = Harness::start().await;
    let mut numeric_without_unit = revenue("USD");
    numeric_without_unit["unit"] = Json::Null;
    let mut click_without_selector = signup();
    click_without_selector["selector"] = Json::Null;
    let mut bad_key = orders("Bad");
    bad_key["key"] = json!("not a key");
    let rows = vec![
        orders("Orders"),
        numeric_without_unit,
        click_without_selector,
        bad_key,
        orders("Again"),
    ];
    h.warehouse.set(&rows);
    let (report, sent) = h.run(false, MetricsOptions::default()).await;
    assert_eq!(report.creates.len(), 1);
    assert_eq!(report.rejected, 4);
    let reasons: Vec<(u64, &str)> =
        report.rejections.iter().map(|r| (r.row, r.reason.as_str())).collect();
    assert!(reasons[0].1.contains("needs `unit`"), "{reasons:?}");
    assert!(reasons[1].1.contains("needs `selector`"), "{reasons:?}");
    assert!(reasons[2].1.contains("invalid metric key"), "{reasons:?}");
    assert_eq!(reasons[3].0, 5);
    assert!(reasons[3].1.contains("row 1 already defines it"), "{reasons:?}");
    assert_eq!(sent, routes(&[(LIST, 1), (CREATE, 1)]));
    assert_eq!(h.metric("orders").unwrap()["name"], json!("Orders"));
    let rejected = h.state.history(&h.name).unwrap().rejected().unwrap();
    assert_eq!(rejected.len(), 4);
}

#[tokio::test]
async fn a_kind_change_is_refused_without_allow_recreate() {
    let h = Harness::start().await;
    h.warehouse.set(&[orders("Orders")]);
    h.run(false, MetricsOptions::default()).await;

    let mut as_pageview = pricing();
    as_pageview["key"] = json!("orders");
    h.warehouse.set(&[as_pageview.clone()]);
    let (report, sent) = h.run(false, MetricsOptions::default()).await;
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(report.refused[0].reason.contains("--allow-recreate"));
    assert_eq!(report.outcome, RunOutcome::Refused);
    assert_eq!(sent, routes(&[(LIST, 1)]));
    assert_eq!(h.metric("orders").unwrap()["kind"], json!("custom"));

    let (report, sent) = h.run(false, MetricsOptions { allow_recreate: true }).await;
    assert_eq!(report.recreates.len(), 1);
    assert_eq!(sent, routes(&[(LIST, 1), (DELETE, 1), (CREATE, 1)]));
    h.assert_mirrors(&[as_pageview]);
}

#[tokio::test]
async fn archive_removed_archives_only_the_metrics_ldsync_created() {
    let h = Harness::start().await;
    // Someone else's metric, which the warehouse also declares for a while.
    h.client
        .create_metric(
            DEFAULT_PROJECT,
            &MetricPost {
                key: "revenue".into(),
                kind: "custom".into(),
                is_numeric: Some(true),
                event_key: Some("purchase".into()),
                unit: Some("USD".into()),
                success_criteria: Some("HigherThanBaseline".into()),
                ..MetricPost::default()
            },
        )
        .await
        .unwrap();
    h.warehouse.set(&[orders("Orders"), revenue("USD"), pricing()]);
    let (report, _) = h.run(true, MetricsOptions::default()).await;
    assert_eq!(report.creates.len(), 2);
    assert_eq!(report.patches.len(), 1, "revenue gets its name and tags");

    // Two leave the query: only the one ldsync created is archived.
    h.warehouse.set(&[pricing()]);
    let (report, sent) = h.run(true, MetricsOptions::default()).await;
    assert_eq!(report.archives, ["orders"]);
    assert_eq!(sent, routes(&[(LIST, 1), (PATCH, 1)]));
    assert_eq!(h.metric("orders").unwrap()["archived"], json!(true));
    assert_eq!(h.metric("revenue").unwrap()["archived"], json!(false));

    // Archived once: not again.
    let (_, sent) = h.run(true, MetricsOptions::default()).await;
    assert_eq!(sent, routes(&[(LIST, 1)]));

    // Back in the query: brought back.
    h.warehouse.set(&[pricing(), orders("Orders")]);
    let (report, sent) = h.run(true, MetricsOptions::default()).await;
    assert_eq!(report.patches.len(), 1);
    assert_eq!(sent, routes(&[(LIST, 1), (PATCH, 1)]));
    h.assert_mirrors(&[pricing(), orders("Orders")]);
}

#[tokio::test]
async fn a_create_that_races_another_writer_becomes_a_patch() {
    // The first create hangs until the client gives up; meanwhile someone else creates the
    // metric. The retry answers 409, and ldsync patches what differs instead.
    let config = EmulatorConfig {
        faults: vec![FaultSpec::new(FaultKind::Hang)
            .on_route("POST /api/v2/metrics/*")
            .unwrap()
            .nth(1)],
        ..EmulatorConfig::default()
    };
    let h = Harness::start_with(config, Duration::from_millis(700)).await;
    h.warehouse.set(&[orders("Orders")]);
    let other = h.client.clone();
    let stats = {
        let emulator = &h.emulator;
        move || emulator.stats().faults_injected
    };
    let race = async {
        while stats() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other
            .create_metric(
                DEFAULT_PROJECT,
                &MetricPost {
                    key: "orders".into(),
                    kind: "custom".into(),
                    name: Some("Theirs".into()),
                    is_numeric: Some(false),
                    event_key: Some("Order placed".into()),
                    ..MetricPost::default()
                },
            )
            .await
            .unwrap();
    };
    let before = h.emulator.stats().requests_by_route;
    let spec = Harness::spec(true);
    let sync = h.sync(&spec);
    let (report, ()) = tokio::join!(sync.run(MetricsOptions::default()), race);
    let report = report.unwrap();
    assert_eq!(report.creates.len(), 1);
    // The hung create, the other writer's create, the 409, a read, and one patch.
    assert_eq!(h.requests_since(&before), routes(&[(LIST, 1), (CREATE, 3), (GET, 1), (PATCH, 1)]));
    h.assert_mirrors(&[orders("Orders")]);

    // Not created by ldsync: never archived.
    h.warehouse.set(&[]);
    let (report, _) = h.run(true, MetricsOptions::default()).await;
    assert!(report.archives.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_failed_run_is_finished_by_the_next_one() {
    let h = Harness::start().await;
    h.warehouse.set(&[orders("Orders")]);
    h.run(false, MetricsOptions::default()).await;

    // The next run creates one metric, then its patch keeps failing until the retries run out.
    let failing = FaultSpec::new(FaultKind::InternalServerError)
        .on_route("PATCH /api/v2/metrics/*/*")
        .unwrap();
    h.emulator.set_faults(vec![FaultSpec { max: Some(4), ..failing }]);
    let rows = vec![pricing(), orders("Orders placed")];
    h.warehouse.set(&rows);
    let spec = Harness::spec(false);
    let error = h.sync(&spec).run(MetricsOptions::default()).await.unwrap_err();
    assert!(ldsync_engine::chain(&error).contains("metric `orders`"), "{error}");
    assert!(h.metric("pricing-views").is_some());

    // The next run finishes the journaled plan first: the create is not sent again.
    let (report, sent) = h.run(false, MetricsOptions::default()).await;
    assert!(report.resumed.is_some());
    assert_eq!(report.outcome, RunOutcome::Unchanged);
    assert_eq!(sent, routes(&[(LIST, 1), (GET, 1), (PATCH, 1)]));
    h.assert_mirrors(&rows);
    let history = h.state.history(&h.name).unwrap().recent(10).unwrap();
    assert_eq!(history[1].outcome, "failed");
}
