//! Metric events against the emulator: incremental rounds with late rows, a run that dies
//! half-way and the run that finishes it, and a backfill in windows; every event stored once.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use ldsync_config::{MetricEventsSpec, Query};
use ldsync_core::{BatchStream, ContextKind, RowBatch, Secret, Source, SyncName, Value};
use ldsync_emulator::{Emulator, EmulatorConfig, FaultKind, FaultSpec};
use ldsync_engine::{
    events::{Backfill, EventsReport, EventsSync},
    RunOutcome,
};
use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient, RetryPolicy};
use ldsync_state::StateDir;

use crate::{
    scripted::{Proxy, Reply},
    WarehouseError,
};

const PROJECT: &str = "default";
const ENVIRONMENT: &str = "production";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2024-11-25T00:00:00Z.
const T0: i64 = 1_732_492_800_000;
const COLUMNS: [&str; 5] = ["event_id", "event_key", "context_key", "occurred_at", "metric_value"];

/// A warehouse in memory that honours the cursor: it returns the rows with
/// `occurred_at >= $1`, as `where occurred_at >= $1` would.
#[derive(Debug, Default)]
struct Warehouse {
    rows: Mutex<Vec<Vec<Value>>>,
}

impl Source for Warehouse {
    type Error = WarehouseError;

    async fn healthcheck(&self) -> Result<(), WarehouseError> {
        Ok(())
    }

    fn fetch<'a>(
        &'a self,
        _sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> BatchStream<'a, WarehouseError> {
        let Some(Value::TimestampMillis(cursor)) = params.first() else {
            panic!("`$1` must be bound to a timestamp, got {params:?}");
        };
        let rows: Vec<Vec<Value>> = self
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|row| matches!(row[3], Value::TimestampMillis(at) if at >= *cursor))
            .cloned()
            .collect();
        let columns: Arc<[String]> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
        let batches: Vec<_> = rows
            .chunks(batch_rows.clamp(1, 3)) // several batches per query, as a real source
            .map(|chunk| Ok(RowBatch { columns: columns.clone(), rows: chunk.to_vec() }))
            .collect();
        Box::pin(futures_util::stream::iter(batches))
    }
}

impl Warehouse {
    /// Adds an order: `id` (or no `event_id` when `None`), by `user`, at `at`, worth `value`.
    fn order(&self, id: Option<&str>, user: &str, at: i64, value: f64) {
        self.rows.lock().unwrap().push(vec![
            id.map_or(Value::Null, |id| Value::Text(id.to_owned())),
            Value::Text("checkout-completed".to_owned()),
            Value::Text(user.to_owned()),
            Value::TimestampMillis(at),
            Value::Float(value),
        ]);
    }
}

struct Harness {
    emulator: Emulator,
    client: LaunchDarklyClient,
    warehouse: Warehouse,
    spec: MetricEventsSpec,
    name: SyncName,
    _dir: tempfile::TempDir,
    state: StateDir,
}

impl Harness {
    async fn start(initial_ms: i64, batch_size: u32) -> Self {
        let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut options = ClientOptions::new(
            emulator.api_url(),
            emulator.events_url(),
            Secret::new(emulator.token()),
        );
        options.retry = RetryPolicy::immediate(2);
        let client = LaunchDarklyClient::new(options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join(".ldsync")).unwrap();
        let spec = MetricEventsSpec {
            context_kind: ContextKind::user(),
            lookback: Duration::from_hours(1),
            identity_retention: Duration::from_hours(24 * 400),
            initial_cursor: DateTime::from_timestamp_millis(initial_ms).unwrap(),
            batch_size,
            query: "select order_id as event_id, 'checkout-completed' as event_key, user_id as context_key, placed_at as occurred_at, total as metric_value from orders where placed_at >= $1"
                .parse::<Query>()
                .unwrap(),
        };
        Self {
            emulator,
            client,
            warehouse: Warehouse::default(),
            spec,
            name: "checkouts".parse().unwrap(),
            _dir: dir,
            state,
        }
    }

    fn sync(&self) -> EventsSync<'_, Warehouse> {
        EventsSync {
            name: &self.name,
            spec: &self.spec,
            source: &self.warehouse,
            client: &self.client,
            project: PROJECT,
            environment: ENVIRONMENT,
            state: &self.state,
        }
    }

    /// The events the emulator stored, as (user, occurred_at) pairs; fails on a duplicate.
    fn stored_once(&self) -> BTreeSet<(String, i64)> {
        let snapshot = self.emulator.snapshot();
        let mut stored = BTreeSet::new();
        for event in snapshot.events_in(PROJECT, ENVIRONMENT) {
            assert_eq!(event["kind"], "custom");
            assert_eq!(event["key"], "checkout-completed");
            let user = event["contextKeys"]["user"].as_str().unwrap().to_owned();
            let at = event["creationDate"].as_i64().unwrap();
            assert!(stored.insert((user.clone(), at)), "event ({user}, {at}) stored twice");
        }
        stored
    }

    /// The path of a file of the sync's pending journal.
    fn pending_file(&self, name: &str) -> std::path::PathBuf {
        self.state.path().join("syncs").join(self.name.as_str()).join("pending").join(name)
    }
}

fn faults_on_imports(nth: &[u64]) -> Vec<FaultSpec> {
    let mut fault = FaultSpec::new(FaultKind::InternalServerError)
        .on_route("POST /v2/event-data-import/*/*")
        .unwrap();
    for n in nth {
        fault = fault.nth(*n);
    }
    vec![fault]
}

fn assert_counts(report: &EventsReport, events: u64, duplicates: u64, batches: u64) {
    assert_eq!(
        (report.events, report.duplicates, report.batches),
        (events, duplicates, batches),
        "{report:#?}"
    );
}

#[tokio::test]
async fn incremental_rounds_send_late_rows_once() {
    let h = Harness::start(T0, 2).await;
    let sync = h.sync();
    for (n, minutes) in [10, 20, 30, 40, 50].into_iter().enumerate() {
        h.warehouse.order(Some(&format!("o-{n}")), &format!("u-{n}"), T0 + minutes * MINUTE, 10.0);
    }
    // A plan sends nothing and writes nothing.
    let plan = sync.plan().await.unwrap();
    assert_counts(&plan, 5, 0, 3);
    assert_eq!(plan.samples.len(), 5);
    assert!(h.emulator.snapshot().events.is_empty());
    assert_eq!(plan.cursor_before, None);

    // Round 1: everything since the initial cursor.
    let first = sync.run().await.unwrap();
    assert_counts(&first, 5, 0, 3);
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    assert_eq!(first.read_from.timestamp_millis(), T0);
    assert_eq!(first.cursor_after.unwrap().timestamp_millis(), T0 + 50 * MINUTE);

    // Round 2: a new order, and a late one inside the lookback.
    h.warehouse.order(Some("o-5"), "u-5", T0 + 2 * HOUR, 10.0);
    h.warehouse.order(Some("o-6"), "u-6", T0 + 25 * MINUTE, 10.0);
    let second = sync.run().await.unwrap();
    // `$1` = cursor (T0+50m) - 1h, but never before the initial cursor.
    assert_eq!(second.read_from.timestamp_millis(), T0);
    assert_counts(&second, 2, 5, 1);
    assert_eq!(second.cursor_after.unwrap().timestamp_millis(), T0 + 2 * HOUR);

    // Round 3: late rows inside the new lookback (T0+1h), one without an `event_id`; and a
    // row that repeats an order already sent under a new position in the result.
    h.warehouse.order(Some("o-7"), "u-7", T0 + 90 * MINUTE, 10.0);
    h.warehouse.order(None, "u-8", T0 + 100 * MINUTE, 12.5);
    h.warehouse.order(Some("o-5"), "u-5", T0 + 2 * HOUR, 10.0);
    let third = sync.run().await.unwrap();
    assert_eq!(third.read_from.timestamp_millis(), T0 + HOUR);
    assert_counts(&third, 2, 2, 1);

    // Round 4: the hashed row again (the warehouse returns it every time): not sent.
    h.warehouse.order(None, "u-8", T0 + 100 * MINUTE, 12.5);
    let fourth = sync.run().await.unwrap();
    assert_counts(&fourth, 0, 5, 0);
    assert_eq!(fourth.outcome, RunOutcome::Unchanged);

    let stored = h.stored_once();
    assert_eq!(stored.len(), 9);
    assert!(stored.contains(&("u-6".to_owned(), T0 + 25 * MINUTE)), "the late row arrived");
    assert_eq!(h.emulator.stats().repeated_payload_ids, 0);
    let history = h.state.history(&h.name).unwrap().recent(10).unwrap();
    let outcomes: Vec<_> = history.iter().map(|r| (r.outcome.as_str(), r.adds)).collect();
    assert_eq!(outcomes, [("succeeded", 5), ("succeeded", 2), ("succeeded", 2), ("unchanged", 0)]);
}

#[tokio::test]
async fn a_run_that_dies_half_way_is_finished_with_the_same_payload_ids() {
    let h = Harness::start(T0, 2).await;
    let sync = h.sync();
    let orders: Vec<(String, i64)> =
        (0..9).map(|n| (format!("u-{n}"), T0 + (n + 1) * MINUTE)).collect();
    for (n, (user, at)) in orders.iter().enumerate() {
        h.warehouse.order(Some(&format!("o-{n}")), user, *at, 1.0);
    }
    // The 3rd import and its retry fail: batches 0 and 1 are accepted, then the run stops.
    h.emulator.set_faults(faults_on_imports(&[3, 4]));
    let error = sync.run().await.unwrap_err();
    assert!(error.to_string().contains("metric-event batch `events/2`"), "{error}");
    assert_eq!(h.stored_once().len(), 4);

    // The failed run left its plan and its five batches in the journal.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.pending_file("plan.json")).unwrap()).unwrap();
    let files: Vec<_> =
        (0..6).map(|n| h.pending_file(&format!("files/events-{n:06}.batch")).exists()).collect();
    assert_eq!(files, [true, true, true, true, true, false]);
    let accepted_before: Vec<String> = h
        .emulator
        .snapshot()
        .events
        .iter()
        .map(|payload| payload.payload_id.clone().unwrap())
        .collect();
    assert_eq!(accepted_before.len(), 2);
    // The answer to batch 1 was lost in the crash: LaunchDarkly has it, the journal does not.
    let acks = std::fs::read_to_string(h.pending_file("acks.log")).unwrap();
    let first_ack = acks.lines().find(|line| !line.is_empty()).unwrap();
    std::fs::write(h.pending_file("acks.log"), format!("{first_ack}\n")).unwrap();

    // The plan shows what finishing would take, and sends nothing.
    let plan_report = sync.plan().await.unwrap();
    assert_eq!(plan_report.resumed_batches, 4);
    assert_counts(&plan_report, 0, 9, 0);

    // Meanwhile a new order comes in; the next run finishes the plan first, then sends it.
    h.emulator.set_faults(Vec::new());
    h.warehouse.order(Some("o-9"), "u-9", T0 + 10 * MINUTE, 1.0);
    let report = sync.run().await.unwrap();
    assert_eq!(report.resumed.as_deref(), Some(plan["run_id"].as_str().unwrap()));
    assert_eq!(report.resumed_batches, 4);
    assert_counts(&report, 1, 9, 1);

    // Every order once; batch 1 was sent again under its payload ID and not stored twice.
    let stored = h.stored_once();
    assert_eq!(stored.len(), 10);
    assert_eq!(h.emulator.stats().repeated_payload_ids, 1);
    let snapshot = h.emulator.snapshot();
    let sent_ids: Vec<String> =
        snapshot.events.iter().map(|payload| payload.payload_id.clone().unwrap()).collect();
    assert_eq!(sent_ids.len(), 6);
    assert_eq!(sent_ids[..2], accepted_before[..], "the accepted batches were not stored again");
    let unique: HashSet<_> = sent_ids.iter().collect();
    assert_eq!(unique.len(), 6, "a new plan has new payload IDs");
    assert!(!h.pending_file("plan.json").exists(), "the journal is committed");
}

#[tokio::test]
async fn a_backfill_sends_a_past_range_in_windows_resumably_and_once() {
    // Incremental runs start at D0 + 2.5 days; the backfill covers [D0, D0 + 3 days).
    let d0 = T0 - 10 * DAY;
    let h = Harness::start(d0 + 2 * DAY + 12 * HOUR, 2).await;
    let sync = h.sync();
    let mut rows = Vec::new();
    for day in 0..4 {
        for hour in [1, 6, 13, 20] {
            rows.push((format!("u-{day}-{hour}"), d0 + day * DAY + hour * HOUR));
        }
    }
    rows.push(("u-before".to_owned(), d0 - HOUR)); // before the range: never sent
    for (n, (user, at)) in rows.iter().enumerate() {
        h.warehouse.order(Some(&format!("o-{n}")), user, *at, 2.0);
    }
    // The incremental run sends day 2 from 12:00 on, and day 3: 2 + 4 events.
    let incremental = sync.run().await.unwrap();
    assert_counts(&incremental, 6, 0, 3);

    let range = Backfill::new(
        DateTime::<Utc>::from_timestamp_millis(d0).unwrap(),
        DateTime::<Utc>::from_timestamp_millis(d0 + 3 * DAY).unwrap(),
    );
    let plan = sync.plan_backfill(range).await.unwrap();
    assert_eq!(plan.windows.len(), 3);
    let per_window: Vec<_> = plan.windows.iter().map(|w| (w.events, w.duplicates)).collect();
    assert_eq!(per_window, [(4, 0), (4, 0), (2, 2)]);
    assert_eq!(h.stored_once().len(), 6, "a plan sends nothing");

    // Window 2's first import fails twice: window 1 is committed, window 2 left in the journal.
    h.emulator.set_faults(faults_on_imports(&[3, 4]));
    let error = sync.backfill(range).await.unwrap_err();
    assert!(error.to_string().contains("events/0"), "{error}");
    h.emulator.set_faults(Vec::new());

    let resumed = sync.backfill(range).await.unwrap();
    assert!(resumed.resumed.is_some());
    assert_eq!(resumed.resumed_batches, 2);
    let done: Vec<_> = resumed.windows.iter().map(|w| (w.already_done, w.events)).collect();
    assert_eq!(done, [(true, 0), (true, 0), (false, 2)]);
    assert_eq!(resumed.read_from.timestamp_millis(), d0);
    assert_eq!(
        resumed.cursor_after, incremental.cursor_after,
        "a backfill does not move the cursor"
    );

    let stored = h.stored_once();
    assert_eq!(stored.len(), 16, "every order in the range and after it, once");
    assert!(!stored.iter().any(|(user, _)| user == "u-before"));

    // The same backfill again: everything is known (days 0 and 1 from the identity archive).
    let again = sync.backfill(range).await.unwrap();
    assert_counts(&again, 0, 12, 0);
    assert!(again.windows.iter().all(|w| !w.already_done));
    assert_eq!(again.outcome, RunOutcome::Unchanged);
    assert_eq!(h.stored_once().len(), 16);
    assert_eq!(h.emulator.stats().repeated_payload_ids, 0);

    // And incremental runs go on unaffected.
    assert_eq!(sync.run().await.unwrap().events, 0);
    let users: HashSet<_> = stored.into_iter().map(|(user, _)| user).collect();
    assert!(users.contains("u-0-1") && users.contains("u-3-20"));
}

/// A harness whose events host is a scripted proxy in front of the emulator.
async fn start_scripted(initial_ms: i64, batch_size: u32) -> (Harness, Proxy) {
    let mut h = Harness::start(initial_ms, batch_size).await;
    let proxy = Proxy::start(&h.emulator.events_url()).await;
    let mut options =
        ClientOptions::new(h.emulator.api_url(), proxy.url(), Secret::new(h.emulator.token()));
    options.retry = RetryPolicy::immediate(2);
    h.client = LaunchDarklyClient::new(options).unwrap();
    (h, proxy)
}

/// Review gap A of issue 5: a batch LaunchDarkly refuses with a `400` must not block the
/// journal. The accepted batches are committed, the refused batch's events become rejected
/// records with LaunchDarkly's reason, and the next run sends them, each once.
#[tokio::test]
async fn a_batch_refused_with_400_is_rejected_and_never_blocks_the_next_runs() {
    let (h, proxy) = start_scripted(T0, 2).await;
    let sync = h.sync();
    for n in 0..6 {
        h.warehouse.order(Some(&format!("o-{n}")), &format!("u-{n}"), T0 + (n + 1) * MINUTE, 1.0);
    }
    // The second import is refused: the body is not what LaunchDarkly takes.
    let imports = Arc::new(AtomicUsize::new(0));
    let counted = imports.clone();
    proxy.script(move |method, path| {
        let import = method == "POST" && path.starts_with("/v2/event-data-import/");
        (import && counted.fetch_add(1, Ordering::SeqCst) == 1)
            .then(|| Reply::error(400, "invalid_request", "event 1 has no contextKeys"))
    });
    let report = sync.run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!((report.events, report.rejected, report.batches), (4, 2, 3), "{report:#?}");
    assert_eq!(report.refused_batches, 1);
    assert_eq!(report.rejections.len(), 2);
    for rejection in &report.rejections {
        for needle in ["400", "invalid_request", "no contextKeys", "events/1"] {
            assert!(rejection.reason.contains(needle), "{needle}: {}", rejection.reason);
        }
    }
    let keys: Vec<_> = report.rejections.iter().map(|r| (r.row, r.key.clone().unwrap())).collect();
    assert_eq!(keys, [(3, "o-2".to_owned()), (4, "o-3".to_owned())]);
    // Only the accepted batches arrived, and nothing is left in the journal.
    assert_eq!(h.stored_once().len(), 4);
    assert!(!h.pending_file("plan.json").exists(), "the refused batch does not block the journal");
    let history = h.state.history(&h.name).unwrap();
    let last = history.recent(1).unwrap().remove(0);
    assert_eq!((last.outcome.as_str(), last.adds, last.rejected), ("succeeded", 4, 2));
    assert!(last.error.as_deref().unwrap().contains("400"), "{last:?}");
    assert_eq!(history.rejected().unwrap().len(), 2);

    // LaunchDarkly takes them now: the next run sends the two refused events, and only them.
    proxy.forward_all();
    h.warehouse.order(Some("o-6"), "u-6", T0 + 7 * MINUTE, 1.0);
    let next = sync.run().await.unwrap();
    assert_eq!((next.events, next.duplicates, next.rejected), (3, 4, 0), "{next:#?}");
    assert_eq!(h.stored_once().len(), 7);
    assert!(h.state.history(&h.name).unwrap().rejected().unwrap().is_empty());
    assert_eq!(h.emulator.stats().repeated_payload_ids, 0);
}

/// A `401` (or `403`, `404`, `406`) is not the batch's fault: the run fails with the status,
/// and the plan stays in the journal until the token is fixed, then goes with its payload IDs.
#[tokio::test]
async fn a_token_refused_with_401_fails_the_run_and_the_plan_waits() {
    let (h, proxy) = start_scripted(T0, 2).await;
    let sync = h.sync();
    for n in 0..3 {
        h.warehouse.order(Some(&format!("o-{n}")), "u", T0 + (n + 1) * MINUTE, 1.0);
    }
    proxy.script(|method, _| {
        (method == "POST").then(|| Reply::error(401, "unauthorized", "token lacks importEventData"))
    });
    let error = sync.run().await.unwrap_err();
    assert!(crate_chain(&error).contains("401"), "{}", crate_chain(&error));
    assert!(h.pending_file("plan.json").exists());
    proxy.forward_all();
    let report = sync.run().await.unwrap();
    assert_eq!((report.resumed_batches, report.events, report.duplicates), (2, 0, 3));
    assert_eq!(h.stored_once().len(), 3);
}

fn crate_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Review gap B of issue 5: an `event_id` that comes back with another `occurred_at`, after
/// its first delivery left the lookback, is still recognised and never sent again.
#[tokio::test]
async fn an_event_id_re_emitted_with_a_new_time_after_the_lookback_is_not_resent() {
    let h = Harness::start(T0, 10).await;
    let sync = h.sync();
    h.warehouse.order(Some("o-1"), "u-1", T0 + 10 * MINUTE, 5.0);
    assert_eq!(sync.run().await.unwrap().events, 1);
    // Hours later the cursor has moved far past the lookback (1 h) of o-1's first time.
    h.warehouse.order(Some("o-2"), "u-2", T0 + 2 * DAY, 5.0);
    assert_eq!(sync.run().await.unwrap().events, 1);
    // The warehouse corrects o-1's time into the current window: same event, not sent again.
    h.warehouse.rows.lock().unwrap()[0][3] = Value::TimestampMillis(T0 + 2 * DAY + MINUTE);
    let report = sync.run().await.unwrap();
    assert_eq!((report.events, report.duplicates), (0, 2), "{report:#?}");
    // A backfill over the day it now says also knows it.
    let range = Backfill::new(
        DateTime::<Utc>::from_timestamp_millis(T0 + DAY).unwrap(),
        DateTime::<Utc>::from_timestamp_millis(T0 + 3 * DAY).unwrap(),
    );
    assert_eq!(sync.backfill(range).await.unwrap().events, 0);
    assert_eq!(h.stored_once().len(), 2);
}
