//! Unit tests of the metrics sync: the checks per kind, the diff and its minimal patch, and
//! the plan.

use std::collections::{BTreeMap, BTreeSet};

use ldsync_core::{BatchStream, Classify, ErrorDomain, RowBatch, Source, Value};
use ldsync_launchdarkly::{MetricRep, PatchOp};
use serde_json::{json, Value as Json};

use super::{
    definition::{string_list, Definition, Layout, MetricKind},
    diff, plan, MetricsOptions, MetricsReport, MetricsState, Mode, Op, Staged,
};
use crate::{RunId, RunOutcome};

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

fn batch(columns: &[&str], rows: Vec<Vec<Value>>) -> RowBatch {
    RowBatch { columns: columns.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>().into(), rows }
}

/// Checks one row of `columns`.
fn check(columns: &[&str], row: Vec<Value>) -> Result<Definition, String> {
    let batch = batch(columns, vec![row]);
    Layout::of(&batch).unwrap().definition(&batch.rows[0], 1)
}

fn rep(value: Json) -> MetricRep {
    serde_json::from_value(value).unwrap()
}

/// A row from a JSON array: strings are text, arrays and objects JSON.
fn row(values: &Json) -> Vec<Value> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|value| match value {
            Json::Null => Value::Null,
            Json::Bool(flag) => Value::Bool(*flag),
            Json::Number(number) => Value::Int(number.as_i64().unwrap()),
            Json::String(text) => Value::Text(text.clone()),
            other => Value::Json(other.clone()),
        })
        .collect()
}

#[test]
fn rows_are_checked_per_kind() {
    let columns = [
        "key",
        "kind",
        "event_key",
        "is_numeric",
        "unit",
        "success_criteria",
        "analysis_type",
        "percentile_value",
        "urls",
        "selector",
    ];
    let urls = json!([{"kind": "substring", "substring": "/pricing"}]);
    let exact = json!([{"kind": "exact"}]);
    // (row, expected: Ok or a fragment of the reason)
    #[rustfmt::skip]
    let table: Vec<(Json, Result<(), &str>)> = vec![
        // custom conversion: needs event_key
        (json!(["orders", "custom", "Order placed", false, null, null, null, null, null, null]), Ok(())),
        (json!(["orders", null, null, false, null, null, null, null, null, null]), Err("a custom metric needs `event_key`")),
        (json!(["orders", "custom", " ", null, null, null, null, null, null, null]), Err("needs `event_key`")),
        // custom numeric: also unit and success_criteria
        (json!(["revenue", "custom", "buy", true, "USD", "HigherThanBaseline", null, null, null, null]), Ok(())),
        (json!(["revenue", "custom", "buy", true, null, "HigherThanBaseline", null, null, null, null]), Err("a numeric custom metric needs `unit`")),
        (json!(["revenue", "custom", "buy", true, "USD", null, null, null, null, null]), Err("needs `success_criteria`")),
        (json!(["revenue", "custom", "buy", true, "USD", "Higher", null, null, null, null]), Err("`success_criteria` `Higher` is not one of")),
        // percentile analysis: percentile_value in 0–100
        (json!(["latency", "custom", "load", true, "ms", "LowerThanBaseline", "percentile", 95, null, null]), Ok(())),
        (json!(["latency", "custom", "load", true, "ms", "LowerThanBaseline", "percentile", null, null, null]), Err("`percentile_value` (0–100) is required")),
        (json!(["latency", "custom", "load", true, "ms", "LowerThanBaseline", "percentile", 101, null, null]), Err("from 0 to 100")),
        (json!(["latency", "custom", "load", true, "ms", "LowerThanBaseline", "median", null, null, null]), Err("`analysis_type` `median` is not one of")),
        // pageview: urls
        (json!(["pricing", "pageview", null, null, null, null, null, null, urls, null]), Ok(())),
        (json!(["pricing", "pageview", null, null, null, null, null, null, null, null]), Err("a pageview metric needs `urls`")),
        (json!(["pricing", "pageview", null, null, null, null, null, null, [], null]), Err("needs `urls`")),
        (json!(["pricing", "pageview", null, null, null, null, null, null, exact, null]), Err("a `exact` matcher needs `url`")),
        (json!(["pricing", "pageview", null, null, null, null, null, null, "not json", null]), Err("`urls` is not JSON")),
        // click: selector and urls
        (json!(["signup", "click", null, null, null, null, null, null, urls, ".signup"]), Ok(())),
        (json!(["signup", "click", null, null, null, null, null, null, urls, null]), Err("a click metric needs `selector`")),
        (json!(["signup", "click", null, null, null, null, null, null, null, ".signup"]), Err("a click metric needs `urls`")),
        // keys, kinds and types
        (json!(["beta users", null, "e", null, null, null, null, null, null, null]), Err("invalid metric key")),
        (json!([null, null, "e", null, null, null, null, null, null, null]), Err("`key` is NULL")),
        (json!(["m", "funnel", "e", null, null, null, null, null, null, null]), Err("`kind` `funnel` is not one of")),
        (json!(["m", null, "e", "maybe", null, null, null, null, null, null]), Err("`is_numeric` `maybe` is not a boolean")),
    ];
    for (values, expected) in table {
        match (check(&columns, row(&values)), expected) {
            (Ok(_), Ok(())) => {}
            (Err(reason), Err(fragment)) => {
                assert!(reason.contains(fragment), "{values}: `{reason}` lacks `{fragment}`");
            }
            (got, want) => panic!("{values}: got {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn fields_that_do_not_apply_to_the_kind_are_not_sent() {
    let columns = ["key", "kind", "event_key", "is_numeric", "unit", "urls", "selector", "name"];
    let urls = Value::Json(json!([{"kind": "exact", "url": "https://example.com/"}]));
    let pageview = check(
        &columns,
        vec![
            text("home"),
            text("pageview"),
            text("e"),
            Value::Bool(true),
            text("USD"),
            urls,
            text(".x"),
            text("Home"),
        ],
    )
    .unwrap();
    assert_eq!(pageview.fields.keys().collect::<Vec<_>>(), ["name", "urls"]);
    // A conversion does not send `unit`; it does send `isNumeric` and `eventKey`.
    let conversion = check(
        &columns,
        vec![
            text("orders"),
            Value::Null,
            text("Order placed"),
            Value::Bool(false),
            text("USD"),
            Value::Null,
            Value::Null,
            Value::Null,
        ],
    )
    .unwrap();
    assert_eq!(conversion.kind, MetricKind::Custom);
    assert_eq!(conversion.fields.keys().collect::<Vec<_>>(), ["eventKey", "isNumeric", "name"]);
    // A NULL name is LaunchDarkly's default: the key.
    assert_eq!(conversion.fields["name"], json!("orders"));
    assert_eq!(
        Json::Object(conversion.create_body()),
        json!({"key": "orders", "kind": "custom", "eventKey": "Order placed", "isNumeric": false, "name": "orders"})
    );
}

#[test]
fn tags_come_as_arrays_json_or_comma_separated_text() {
    let cases = [
        (Value::Json(json!(["b", "a", "b"])), vec!["a", "b"]),
        (text("growth, warehouse-sync ,,"), vec!["growth", "warehouse-sync"]),
        (text(r#"["x", "y"]"#), vec!["x", "y"]),
        (text(""), vec![]),
    ];
    for (value, expected) in cases {
        let definition =
            check(&["key", "event_key", "tags"], vec![text("m"), text("e"), value.clone()])
                .unwrap();
        assert_eq!(definition.fields["tags"], json!(expected), "{value:?}");
    }
    // NULL tags are no tags (LaunchDarkly always holds a list).
    let definition =
        check(&["key", "event_key", "tags"], vec![text("m"), text("e"), Value::Null]).unwrap();
    assert_eq!(definition.fields["tags"], json!([]));
    assert!(string_list("tags", &Value::Int(3)).is_err());
    assert!(string_list("tags", &Value::Json(json!([1, 2]))).is_err());
    assert!(check(&["key", "event_key", "tags"], vec![text("m"), text("e"), text("[1")]).is_err());
}

#[test]
fn the_query_must_return_key() {
    let err = Layout::of(&batch(&["name"], vec![])).unwrap_err();
    assert!(err.contains("must return a `key` column") && err.contains("`name`"), "{err}");
}

#[test]
fn a_diff_patches_only_the_managed_fields_that_differ() {
    let columns = [
        "key",
        "name",
        "description",
        "tags",
        "event_key",
        "unit",
        "is_numeric",
        "success_criteria",
    ];
    let definition = check(
        &columns,
        vec![
            text("revenue"),
            text("Revenue (warehouse)"),
            Value::Null,
            text("b,a"),
            text("purchase"),
            text("USD"),
            Value::Bool(true),
            text("HigherThanBaseline"),
        ],
    )
    .unwrap();
    let held = rep(json!({
        "key": "revenue", "kind": "custom", "name": "Revenue", "description": "old text",
        "tags": ["a", "b"], "eventKey": "purchase", "isNumeric": true,
        "successCriteria": "HigherThanBaseline", "maintainerId": "someone",
        "randomizationUnits": ["user"], "archived": false,
    }));
    let changes = diff::changes(&definition, &held, None);
    // tags are equal as sets; randomizationUnits and maintainerId are not managed.
    assert_eq!(
        diff::patch(&changes),
        vec![
            PatchOp::Remove { path: "/description".into() },
            PatchOp::Replace { path: "/name".into(), value: json!("Revenue (warehouse)") },
            PatchOp::Add { path: "/unit".into(), value: json!("USD") },
        ]
    );
    assert!(changes.iter().all(|change| !change.drift));
    assert_eq!(changes[1].old, Some(json!("Revenue")));

    // Equal: no request.
    let equal = rep(json!({
        "key": "revenue", "kind": "custom", "name": "Revenue (warehouse)", "tags": ["b", "a"],
        "eventKey": "purchase", "isNumeric": true, "unit": "USD",
        "successCriteria": "HigherThanBaseline", "description": null,
    }));
    assert!(diff::changes(&definition, &equal, None).is_empty());
}

#[test]
fn unmanaged_fields_are_never_touched() {
    // The query manages only names: nothing else is compared, even when LaunchDarkly differs.
    let definition = check(&["key", "name"], vec![text("orders"), text("Orders")]).unwrap();
    assert_eq!(definition.fields.keys().collect::<Vec<_>>(), ["name"]);
    let held = rep(json!({
        "key": "orders", "kind": "custom", "name": "Orders", "tags": ["x"],
        "eventKey": "something else", "isNumeric": false, "description": "kept",
    }));
    assert!(diff::changes(&definition, &held, None).is_empty());
    // It can patch, but not create: creating a custom metric needs `event_key`.
    let reason = definition.cannot_create().unwrap();
    assert!(reason.contains("needs `event_key`, which the query does not return"), "{reason}");
}

#[test]
fn drift_is_a_launchdarkly_edit_of_a_delivered_value() {
    let definition =
        check(&["key", "event_key", "name"], vec![text("m"), text("e"), text("New")]).unwrap();
    let held = rep(json!({"key": "m", "kind": "custom", "eventKey": "e", "name": "Edited in LD"}));
    let delivered: BTreeMap<String, Json> =
        [("name".to_owned(), json!("New")), ("eventKey".to_owned(), json!("e"))].into();
    let changes = diff::changes(&definition, &held, Some(&delivered));
    assert_eq!(changes.len(), 1);
    assert!(changes[0].drift, "the warehouse still says what was delivered");
    let older: BTreeMap<String, Json> = [("name".to_owned(), json!("Old"))].into();
    assert!(!diff::changes(&definition, &held, Some(&older))[0].drift);
}

fn report() -> MetricsReport {
    MetricsReport {
        sync: "metrics".into(),
        run_id: RunId::new(),
        outcome: RunOutcome::Unchanged,
        rows: 0,
        rejected: 0,
        rejections: Vec::new(),
        creates: Vec::new(),
        patches: Vec::new(),
        recreates: Vec::new(),
        archives: Vec::new(),
        refused: Vec::new(),
        unchanged: 0,
        requests: 0,
        resumed: None,
    }
}

fn staged(definitions: Vec<Definition>) -> Staged {
    Staged {
        seen: definitions.iter().map(|d| d.key.clone()).collect(),
        definitions,
        ..Staged::default()
    }
}

#[test]
fn a_kind_change_is_refused_unless_recreating_is_allowed() {
    let urls = Value::Json(json!([{"kind": "substring", "substring": "/pricing"}]));
    let definition =
        check(&["key", "kind", "urls"], vec![text("pricing"), text("pageview"), urls]).unwrap();
    let held: BTreeMap<String, MetricRep> = [(
        "pricing".to_owned(),
        rep(json!({"key": "pricing", "kind": "custom", "eventKey": "e", "isNumeric": false})),
    )]
    .into();
    let staged = staged(vec![definition]);
    let state = MetricsState::default();

    let mut refused = report();
    let plan_ = plan(
        &staged,
        &held,
        &state,
        false,
        MetricsOptions::default(),
        Mode::Incremental,
        &mut refused,
    );
    assert!(plan_.ops.is_empty());
    assert_eq!(refused.refused.len(), 1);
    assert!(refused.refused[0].reason.contains("--allow-recreate"), "{:?}", refused.refused);

    let mut allowed = report();
    let options = MetricsOptions { allow_recreate: true };
    let plan_ = plan(&staged, &held, &state, false, options, Mode::Incremental, &mut allowed);
    assert!(matches!(plan_.ops.as_slice(), [Op::Recreate { .. }]));
    assert_eq!(allowed.requests, 2);
}

#[test]
fn only_owned_metrics_that_left_the_query_are_archived() {
    let kept = check(&["key", "event_key"], vec![text("kept"), text("e")]).unwrap();
    let custom = |key: &str| {
        rep(
            json!({"key": key, "kind": "custom", "eventKey": "e", "isNumeric": false, "archived": false}),
        )
    };
    let held: BTreeMap<String, MetricRep> = ["kept", "ours", "theirs", "ours-archived"]
        .into_iter()
        .map(|key| (key.to_owned(), custom(key)))
        .chain([(
            "ours-archived".to_owned(),
            rep(json!({"key": "ours-archived", "kind": "custom", "archived": true})),
        )])
        .collect();
    let state = MetricsState {
        owned: ["kept", "ours", "ours-archived", "ours-deleted"].map(str::to_owned).into(),
        delivered: BTreeMap::new(),
    };
    let staged = staged(vec![kept]);
    let options = MetricsOptions::default();

    let mut without = report();
    let quiet = plan(&staged, &held, &state, false, options, Mode::Incremental, &mut without);
    assert!(quiet.ops.is_empty() && without.archives.is_empty());

    let mut with = report();
    let plan_ = plan(&staged, &held, &state, true, options, Mode::Incremental, &mut with);
    assert_eq!(with.archives, ["ours"]);
    assert_eq!(
        plan_.ops,
        vec![Op::Archive {
            key: "ours".into(),
            ops: vec![PatchOp::Replace { path: "/archived".into(), value: json!(true) }]
        }]
    );
    // A metric deleted in LaunchDarkly is owned no more.
    let owned: BTreeSet<&str> = plan_.next.owned.iter().map(String::as_str).collect();
    assert_eq!(owned, ["kept", "ours", "ours-archived"].into());
}

#[test]
fn a_backfill_sends_every_managed_field() {
    let definition = check(
        &["key", "event_key", "name", "description"],
        vec![text("m"), text("e"), text("M"), Value::Null],
    )
    .unwrap();
    let held = rep(
        json!({"key": "m", "kind": "custom", "eventKey": "e", "name": "M", "isNumeric": false}),
    );
    let changes = diff::all_fields(&definition, &held);
    assert_eq!(
        diff::patch(&changes),
        vec![
            PatchOp::Replace { path: "/eventKey".into(), value: json!("e") },
            PatchOp::Replace { path: "/name".into(), value: json!("M") },
        ]
    );
}

/// The error of a source that never fails.
#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Classify for Never {
    fn domain(&self) -> ErrorDomain {
        ErrorDomain::Internal
    }
    fn is_retryable(&self) -> bool {
        false
    }
}

/// A warehouse in memory.
struct Rows(RowBatch);

impl Source for Rows {
    type Error = Never;
    async fn healthcheck(&self) -> Result<(), Never> {
        Ok(())
    }
    fn fetch<'a>(&'a self, _: &'a str, _: &'a [Value], _: usize) -> BatchStream<'a, Never> {
        Box::pin(futures_util::stream::iter([Ok(self.0.clone())]))
    }
}

/// A crash after the create was sent (its answer lost) and after a patch was applied but
/// before either was acknowledged: the next run finishes the plan without changing anything
/// twice, and still knows the created metric as its own.
#[tokio::test]
async fn a_crashed_plan_is_finished_idempotently() {
    use ldsync_config::MetricsSpec;
    use ldsync_core::Secret;
    use ldsync_emulator::{Emulator, EmulatorConfig, DEFAULT_PROJECT};
    use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient, RetryPolicy};
    use ldsync_state::{Plan, StateDir};

    use super::{ack_id, post, MetricsPlan, MetricsSync};

    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut options = ClientOptions::new(
        emulator.api_url(),
        emulator.events_url(),
        Secret::new(emulator.token()),
    );
    options.retry = RetryPolicy::immediate(2);
    let client = LaunchDarklyClient::new(options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path().join("state")).unwrap();
    let name = "defs".parse().unwrap();
    let spec = MetricsSpec { archive_removed: true, query: "select 1".parse().unwrap() };
    // "patched" exists with a description the warehouse clears; "created" does not exist.
    client
        .create_metric(
            DEFAULT_PROJECT,
            &serde_json::from_value(json!({"key": "patched", "kind": "custom", "isNumeric": false,
                "eventKey": "e", "description": "to remove"}))
            .unwrap(),
        )
        .await
        .unwrap();
    let rows = Rows(batch(
        &["key", "event_key", "description"],
        vec![
            vec![text("created"), text("c"), Value::Null],
            vec![text("patched"), text("e"), Value::Null],
        ],
    ));
    let sync = MetricsSync {
        name: &name,
        spec: &spec,
        source: &rows,
        client: &client,
        project: DEFAULT_PROJECT,
        state: &state,
    };

    // The crashed run: it planned, journaled, sent both requests, and died before the acks.
    let journal = state.journal(&name).unwrap();
    let (_, planned) =
        sync.stage_and_plan(&journal, MetricsOptions::default(), Mode::Incremental).await.unwrap();
    let [Op::Create { definition }, Op::Patch { ops, .. }] = planned.ops.as_slice() else {
        panic!("unexpected plan {:?}", planned.ops);
    };
    assert_eq!(ops, &[PatchOp::Remove { path: "/description".into() }]);
    journal
        .begin(&Plan { run_id: "crashed".into(), created_at: "then".into(), body: planned.clone() })
        .unwrap();
    journal.acknowledge(&ack_id(0, "created", "sent")).unwrap();
    client.create_metric(DEFAULT_PROJECT, &post(definition)).await.unwrap();
    client.patch_metric(DEFAULT_PROJECT, "patched", ops).await.unwrap();
    assert!(journal.pending::<MetricsPlan>().unwrap().is_some());

    let before = emulator.stats().requests_by_route;
    let report = sync.run(MetricsOptions::default()).await.unwrap();
    assert_eq!(report.resumed.as_deref(), Some("crashed"));
    assert_eq!(report.outcome, RunOutcome::Unchanged, "{report:?}");
    let sent: BTreeMap<String, u64> = emulator
        .stats()
        .requests_by_route
        .into_iter()
        .filter_map(|(route, n)| {
            let n = n - before.get(&route).copied().unwrap_or(0);
            (n > 0).then_some((route, n))
        })
        .collect();
    // The create answers 409 and is verified by a read; the patch is recomputed from a read
    // and is empty; then the new run lists. No PATCH is sent twice.
    assert_eq!(
        sent,
        BTreeMap::from([
            ("GET /api/v2/metrics/{projectKey}".to_owned(), 1),
            ("GET /api/v2/metrics/{projectKey}/{metricKey}".to_owned(), 2),
            ("POST /api/v2/metrics/{projectKey}".to_owned(), 1),
        ])
    );
    let committed = MetricsState::read(&journal).unwrap();
    assert_eq!(committed.owned, BTreeSet::from(["created".to_owned()]));
    assert!(journal.pending::<MetricsPlan>().unwrap().is_none());
}
