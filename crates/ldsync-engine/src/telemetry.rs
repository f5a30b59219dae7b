//! What `ldsync serve` counts, rendered for Prometheus at `/metrics`.
//!
//! A small registry behind one mutex, held only while a number changes or the text is written,
//! never across an `.await`. [`Telemetry::render`] writes the Prometheus text exposition format
//! 0.0.4 ([`CONTENT_TYPE`]) by hand: every family has its `# HELP` and `# TYPE` lines, even
//! before it has samples, and each sync's series exist (at zero) from its registration or first
//! run, so that `increase()` sees the first failure. [`Telemetry`] is also the LaunchDarkly
//! client's [`RequestObserver`].
//!
//! ```
//! use std::time::Duration;
//! use ldsync_core::SyncName;
//! use ldsync_engine::telemetry::{RunCounts, RunStatus, Telemetry};
//!
//! let telemetry = Telemetry::new();
//! let sync = SyncName::new("beta-users").unwrap();
//! let counts = RunCounts { rows_read: 120, members_added: 3, ..RunCounts::default() };
//! let finished = "2026-01-01T10:00:00Z".parse().unwrap();
//! telemetry.record_run(&sync, RunStatus::Succeeded, Duration::from_secs(2), &counts, finished);
//! let text = telemetry.render();
//! assert!(text.contains("ldsync_runs_total{sync=\"beta-users\",result=\"succeeded\"} 1\n"));
//! assert!(text.contains("ldsync_last_success_timestamp_seconds{sync=\"beta-users\"} 1767261600\n"));
//! ```

use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use ldsync_core::SyncName;
use ldsync_launchdarkly::RequestObserver;

use crate::{events::EventsReport, metrics::MetricsReport, segment::SegmentReport, RunOutcome};

/// The `Content-Type` of [`Telemetry::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upper bounds, in seconds, of the run duration histogram's buckets: from a quick run
/// with nothing to do to an hour-long backfill.
pub const RUN_DURATION_BUCKETS: [f64; 12] =
    [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// How a run ended: the `result` label of `ldsync_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunStatus {
    /// Changes were delivered and committed.
    Succeeded,
    /// Nothing had changed.
    Unchanged,
    /// A guardrail stopped the run before anything was sent.
    Refused,
    /// The run failed.
    Failed,
}

impl RunStatus {
    /// Every status, in the order they are rendered.
    pub const ALL: [RunStatus; 4] =
        [RunStatus::Succeeded, RunStatus::Unchanged, RunStatus::Refused, RunStatus::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    /// Whether the sync is up to date after the run: what `ldsync_last_success_timestamp_seconds`
    /// follows.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::Unchanged)
    }
}

impl From<RunOutcome> for RunStatus {
    fn from(outcome: RunOutcome) -> Self {
        match outcome {
            RunOutcome::Succeeded => Self::Succeeded,
            RunOutcome::Unchanged => Self::Unchanged,
            RunOutcome::Refused => Self::Refused,
            RunOutcome::Failed(_) => Self::Failed,
        }
    }
}

/// What one run read, delivered and rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Rows the query returned.
    pub rows_read: u64,
    /// Segment members added.
    pub members_added: u64,
    /// Segment members removed.
    pub members_removed: u64,
    /// Metric events sent.
    pub events_sent: u64,
    /// Metrics created (re-creations included).
    pub metrics_created: u64,
    /// Metrics patched.
    pub metrics_patched: u64,
    /// Records rejected, by the checks or by LaunchDarkly.
    pub rejected: u64,
}

/// A report's planned changes count as delivered only when its run succeeded; rows read and
/// rejections count whatever the outcome.
impl From<&SegmentReport> for RunCounts {
    fn from(report: &SegmentReport) -> Self {
        let delivered = report.outcome == RunOutcome::Succeeded;
        let sum = |count: fn(&crate::segment::SegmentChanges) -> u64| {
            if delivered {
                report.segments.iter().map(count).sum()
            } else {
                0
            }
        };
        Self {
            rows_read: report.rows,
            members_added: sum(|segment| segment.adds),
            members_removed: sum(|segment| segment.removes),
            rejected: report.rejected,
            ..Self::default()
        }
    }
}

/// Events count as sent only when the run succeeded.
impl From<&EventsReport> for RunCounts {
    fn from(report: &EventsReport) -> Self {
        let delivered = report.outcome == RunOutcome::Succeeded;
        Self {
            rows_read: report.rows,
            events_sent: if delivered { report.events } else { 0 },
            rejected: report.rejected,
            ..Self::default()
        }
    }
}

/// Creates and patches count only when the run succeeded.
impl From<&MetricsReport> for RunCounts {
    fn from(report: &MetricsReport) -> Self {
        let delivered = report.outcome == RunOutcome::Succeeded;
        let count = |n: usize| if delivered { n as u64 } else { 0 };
        Self {
            rows_read: report.rows,
            metrics_created: count(report.creates.len() + report.recreates.len()),
            metrics_patched: count(report.patches.len()),
            rejected: report.rejected,
            ..Self::default()
        }
    }
}

/// The process's counters, shared by the scheduler's runs, the LaunchDarkly client and the
/// `/metrics` handler.
#[derive(Debug, Default)]
pub struct Telemetry {
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    syncs: BTreeMap<SyncName, SyncSeries>,
    /// By route, then status (`"error"` when no answer came).
    requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// `429` answers, by route.
    rate_limited: BTreeMap<String, u64>,
    /// Retries, by route.
    retries: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct SyncSeries {
    /// By [`RunStatus`], in the order of [`RunStatus::ALL`].
    runs: [u64; 4],
    /// Not cumulative: the runs whose duration falls in each bucket and no lower one.
    duration_buckets: [u64; RUN_DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    counts: RunCounts,
    last_success: Option<DateTime<Utc>>,
}

/// A per-sync counter: its name, its help, and the count it shows.
struct SyncCounter {
    name: &'static str,
    help: &'static str,
    count: fn(&RunCounts) -> u64,
}

const SYNC_COUNTERS: [SyncCounter; 7] = [
    SyncCounter {
        name: "ldsync_rows_read_total",
        help: "Rows the queries returned, by sync.",
        count: |c| c.rows_read,
    },
    SyncCounter {
        name: "ldsync_segment_members_added_total",
        help: "Segment members added, by sync.",
        count: |c| c.members_added,
    },
    SyncCounter {
        name: "ldsync_segment_members_removed_total",
        help: "Segment members removed, by sync.",
        count: |c| c.members_removed,
    },
    SyncCounter {
        name: "ldsync_events_sent_total",
        help: "Metric events sent to LaunchDarkly, by sync.",
        count: |c| c.events_sent,
    },
    SyncCounter {
        name: "ldsync_metrics_created_total",
        help: "Metrics created in LaunchDarkly, by sync.",
        count: |c| c.metrics_created,
    },
    SyncCounter {
        name: "ldsync_metrics_patched_total",
        help: "Metrics patched in LaunchDarkly, by sync.",
        count: |c| c.metrics_patched,
    },
    SyncCounter {
        name: "ldsync_rejected_records_total",
        help: "Records rejected by the checks or by LaunchDarkly, by sync.",
        count: |c| c.rejected,
    },
];

impl Registry {
    /// The families labelled by sync.
    fn render_syncs(&self, out: &mut String) {
        family(out, "ldsync_runs_total", "counter", "Runs finished, by sync and result.");
        for (sync, series) in &self.syncs {
            for (status, count) in RunStatus::ALL.iter().zip(series.runs) {
                let labels = [("sync", sync.as_str()), ("result", status.as_str())];
                sample(out, "ldsync_runs_total", &labels, count);
            }
        }

        family(out, "ldsync_run_duration_seconds", "histogram", "How long runs took, by sync.");
        for (sync, series) in &self.syncs {
            let bucket = "ldsync_run_duration_seconds_bucket";
            let mut cumulative = 0;
            for (le, count) in RUN_DURATION_BUCKETS.iter().zip(series.duration_buckets) {
                cumulative += count;
                sample(out, bucket, &[("sync", sync.as_str()), ("le", &float(*le))], cumulative);
            }
            let total = series.duration_count;
            sample(out, bucket, &[("sync", sync.as_str()), ("le", "+Inf")], total);
            let labels = [("sync", sync.as_str())];
            let sum = float(series.duration_sum);
            sample(out, "ldsync_run_duration_seconds_sum", &labels, sum);
            sample(out, "ldsync_run_duration_seconds_count", &labels, total);
        }

        for counter in &SYNC_COUNTERS {
            family(out, counter.name, "counter", counter.help);
            for (sync, series) in &self.syncs {
                let count = (counter.count)(&series.counts);
                sample(out, counter.name, &[("sync", sync.as_str())], count);
            }
        }

        let name = "ldsync_last_success_timestamp_seconds";
        let help =
            "When the last successful run of each sync finished, in seconds since the Unix epoch.";
        family(out, name, "gauge", help);
        for (sync, series) in &self.syncs {
            if let Some(at) = series.last_success {
                sample(out, name, &[("sync", sync.as_str())], float(unix_seconds(at)));
            }
        }
    }

    /// The families about LaunchDarkly requests, labelled by route.
    fn render_requests(&self, out: &mut String) {
        let name = "ldsync_launchdarkly_requests_total";
        let help = "Requests to LaunchDarkly, by route and HTTP status (error: no answer).";
        family(out, name, "counter", help);
        for (route, statuses) in &self.requests {
            for (status, count) in statuses {
                sample(out, name, &[("route", route), ("status", status)], count);
            }
        }
        let name = "ldsync_launchdarkly_rate_limited_total";
        family(out, name, "counter", "LaunchDarkly answers 429 Too Many Requests, by route.");
        for (route, count) in &self.rate_limited {
            sample(out, name, &[("route", route)], count);
        }
        let name = "ldsync_launchdarkly_retries_total";
        family(out, name, "counter", "Requests to LaunchDarkly retried, by route.");
        for (route, count) in &self.retries {
            sample(out, name, &[("route", route)], count);
        }
    }
}

impl Telemetry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a sync's series exist, at zero, before its first run.
    pub fn register_sync(&self, sync: &SyncName) {
        self.lock().syncs.entry(sync.clone()).or_default();
    }

    /// Counts a finished run: its result, how long it took, what it did, and (when it
    /// succeeded) when it finished.
    pub fn record_run(
        &self,
        sync: &SyncName,
        status: RunStatus,
        duration: Duration,
        counts: &RunCounts,
        finished_at: DateTime<Utc>,
    ) {
        let mut registry = self.lock();
        let series = registry.syncs.entry(sync.clone()).or_default();
        let index = RunStatus::ALL.iter().position(|s| *s == status).expect("ALL lists them all");
        series.runs[index] += 1;
        let secs = duration.as_secs_f64();
        if let Some(bucket) = RUN_DURATION_BUCKETS.iter().position(|le| secs <= *le) {
            series.duration_buckets[bucket] += 1;
        }
        series.duration_sum += secs;
        series.duration_count += 1;
        let total = &mut series.counts;
        total.rows_read += counts.rows_read;
        total.members_added += counts.members_added;
        total.members_removed += counts.members_removed;
        total.events_sent += counts.events_sent;
        total.metrics_created += counts.metrics_created;
        total.metrics_patched += counts.metrics_patched;
        total.rejected += counts.rejected;
        if status.is_success() {
            series.last_success =
                Some(series.last_success.map_or(finished_at, |t| t.max(finished_at)));
        }
    }

    /// Counts one LaunchDarkly request on `route` (a method and path template, never a path
    /// with keys in it), answered with `status`, or with no answer (`None`, rendered `error`).
    pub fn record_request(&self, route: &str, status: Option<u16>) {
        let mut registry = self.lock();
        let label = status.map_or_else(|| "error".to_owned(), |code| code.to_string());
        *registry.requests.entry(route.to_owned()).or_default().entry(label).or_default() += 1;
        *registry.rate_limited.entry(route.to_owned()).or_default() +=
            u64::from(status == Some(429));
        registry.retries.entry(route.to_owned()).or_default();
    }

    /// Counts one retry of a request on `route`.
    pub fn record_retry(&self, route: &str) {
        let mut registry = self.lock();
        registry.rate_limited.entry(route.to_owned()).or_default();
        *registry.retries.entry(route.to_owned()).or_default() += 1;
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let registry = self.lock();
        let mut out = String::new();
        registry.render_syncs(&mut out);
        registry.render_requests(&mut out);
        out
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every update leaves the registry consistent, so a panic elsewhere cannot break it.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RequestObserver for Telemetry {
    fn attempt(&self, route: &str, status: Option<u16>) {
        self.record_request(route, status);
    }

    fn retry(&self, route: &str, _delay: Duration) {
        self.record_retry(route);
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP texts are our constants: no `\` or newline to escape.
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}")
        .expect("writing to a String cannot fail");
}

/// Writes one sample line, escaping the label values.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    writeln!(out, " {value}").expect("writing to a String cannot fail");
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the format spells it (`+Inf`, `-Inf`, `NaN`; otherwise the shortest exact form).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// Seconds since the Unix epoch, to the millisecond.
#[expect(
    clippy::cast_precision_loss,
    reason = "milliseconds since 1970 fit f64's 53 bits until the year 287396"
)]
fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        segment::{SegmentChanges, SegmentReport},
        RunId,
    };

    fn sync(name: &str) -> SyncName {
        SyncName::new(name).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        format!("2026-01-01T{text}Z").parse().unwrap()
    }

    #[test]
    fn renders_the_exact_text() {
        let telemetry = Telemetry::new();
        let beta = sync("beta-users");
        let counts = RunCounts {
            rows_read: 120,
            members_added: 3,
            members_removed: 1,
            rejected: 2,
            ..RunCounts::default()
        };
        let secs = Duration::from_secs;
        telemetry.record_run(&beta, RunStatus::Succeeded, secs(2), &counts, at("10:00:00.250"));
        let failed = RunCounts { rows_read: 7, ..RunCounts::default() };
        telemetry.record_run(&beta, RunStatus::Failed, secs(45), &failed, at("10:15:00"));
        let route = "PATCH /api/v2/segments/{projectKey}";
        telemetry.record_request(route, Some(200));
        telemetry.record_request(route, Some(429));
        telemetry.record_request(route, Some(200));
        telemetry.record_request(route, None);
        telemetry.record_retry(route);
        telemetry.record_retry(route);

        let expected = r#"# HELP ldsync_runs_total Runs finished, by sync and result.
# TYPE ldsync_runs_total counter
ldsync_runs_total{sync="beta-users",result="succeeded"} 1
ldsync_runs_total{sync="beta-users",result="unchanged"} 0
ldsync_runs_total{sync="beta-users",result="refused"} 0
ldsync_runs_total{sync="beta-users",result="failed"} 1
# HELP ldsync_run_duration_seconds How long runs took, by sync.
# TYPE ldsync_run_duration_seconds histogram
ldsync_run_duration_seconds_bucket{sync="beta-users",le="0.5"} 0
ldsync_run_duration_seconds_bucket{sync="beta-users",le="1"} 0
ldsync_run_duration_seconds_bucket{sync="beta-users",le="2.5"} 1
ldsync_run_duration_seconds_bucket{sync="beta-users",le="5"} 1
ldsync_run_duration_seconds_bucket{sync="beta-users",le="10"} 1
ldsync_run_duration_seconds_bucket{sync="beta-users",le="30"} 1
ldsync_run_duration_seconds_bucket{sync="beta-users",le="60"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="120"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="300"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="600"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="1800"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="3600"} 2
ldsync_run_duration_seconds_bucket{sync="beta-users",le="+Inf"} 2
ldsync_run_duration_seconds_sum{sync="beta-users"} 47
ldsync_run_duration_seconds_count{sync="beta-users"} 2
# HELP ldsync_rows_read_total Rows the queries returned, by sync.
# TYPE ldsync_rows_read_total counter
ldsync_rows_read_total{sync="beta-users"} 127
# HELP ldsync_segment_members_added_total Segment members added, by sync.
# TYPE ldsync_segment_members_added_total counter
ldsync_segment_members_added_total{sync="beta-users"} 3
# HELP ldsync_segment_members_removed_total Segment members removed, by sync.
# TYPE ldsync_segment_members_removed_total counter
ldsync_segment_members_removed_total{sync="beta-users"} 1
# HELP ldsync_events_sent_total Metric events sent to LaunchDarkly, by sync.
# TYPE ldsync_events_sent_total counter
ldsync_events_sent_total{sync="beta-users"} 0
# HELP ldsync_metrics_created_total Metrics created in LaunchDarkly, by sync.
# TYPE ldsync_metrics_created_total counter
ldsync_metrics_created_total{sync="beta-users"} 0
# HELP ldsync_metrics_patched_total Metrics patched in LaunchDarkly, by sync.
# TYPE ldsync_metrics_patched_total counter
ldsync_metrics_patched_total{sync="beta-users"} 0
# HELP ldsync_rejected_records_total Records rejected by the checks or by LaunchDarkly, by sync.
# TYPE ldsync_rejected_records_total counter
ldsync_rejected_records_total{sync="beta-users"} 2
# HELP ldsync_last_success_timestamp_seconds When the last successful run of each sync finished, in seconds since the Unix epoch.
# TYPE ldsync_last_success_timestamp_seconds gauge
ldsync_last_success_timestamp_seconds{sync="beta-users"} 1767261600.25
# HELP ldsync_launchdarkly_requests_total Requests to LaunchDarkly, by route and HTTP status (error: no answer).
# TYPE ldsync_launchdarkly_requests_total counter
ldsync_launchdarkly_requests_total{route="PATCH /api/v2/segments/{projectKey}",status="200"} 2
ldsync_launchdarkly_requests_total{route="PATCH /api/v2/segments/{projectKey}",status="429"} 1
ldsync_launchdarkly_requests_total{route="PATCH /api/v2/segments/{projectKey}",status="error"} 1
# HELP ldsync_launchdarkly_rate_limited_total LaunchDarkly answers 429 Too Many Requests, by route.
# TYPE ldsync_launchdarkly_rate_limited_total counter
ldsync_launchdarkly_rate_limited_total{route="PATCH /api/v2/segments/{projectKey}"} 1
# HELP ldsync_launchdarkly_retries_total Requests to LaunchDarkly retried, by route.
# TYPE ldsync_launchdarkly_retries_total counter
ldsync_launchdarkly_retries_total{route="PATCH /api/v2/segments/{projectKey}"} 2
"#;
        let text = telemetry.render();
        for (line, (got, want)) in text.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {}", line + 1);
        }
        assert_eq!(text, expected);
    }

    #[test]
    fn an_empty_registry_still_describes_every_family() {
        let text = Telemetry::new().render();
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP ")).count(), 13);
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE ")).count(), 13);
        assert!(text.lines().all(|l| l.starts_with('#')), "no samples yet:\n{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_registered_sync_starts_at_zero_without_a_last_success() {
        let telemetry = Telemetry::new();
        telemetry.register_sync(&sync("trial"));
        let text = telemetry.render();
        assert!(text.contains("ldsync_runs_total{sync=\"trial\",result=\"failed\"} 0\n"));
        assert!(text.contains("ldsync_run_duration_seconds_bucket{sync=\"trial\",le=\"+Inf\"} 0\n"));
        assert!(text.contains("ldsync_run_duration_seconds_sum{sync=\"trial\"} 0\n"));
        assert!(text.contains("ldsync_rows_read_total{sync=\"trial\"} 0\n"));
        assert!(!text.contains("ldsync_last_success_timestamp_seconds{"));
    }

    #[test]
    fn label_values_are_escaped() {
        let telemetry = Telemetry::new();
        telemetry.record_retry("GET /a\"b\\c\nd");
        let text = telemetry.render();
        assert!(
            text.contains("ldsync_launchdarkly_retries_total{route=\"GET /a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        let mut escaped = String::new();
        escape_label_value(&mut escaped, "say \"hi\"\\\n");
        assert_eq!(escaped, r#"say \"hi\"\\\n"#);
    }

    #[test]
    fn slow_runs_land_only_in_the_infinite_bucket_and_failures_keep_the_last_success() {
        let telemetry = Telemetry::new();
        let name = sync("slow");
        let none = RunCounts::default();
        telemetry.record_run(
            &name,
            RunStatus::Unchanged,
            Duration::from_hours(2),
            &none,
            at("09:00:00"),
        );
        telemetry.record_run(
            &name,
            RunStatus::Refused,
            Duration::from_millis(500),
            &none,
            at("11:00:00"),
        );
        let text = telemetry.render();
        assert!(text.contains("ldsync_run_duration_seconds_bucket{sync=\"slow\",le=\"0.5\"} 1\n"));
        assert!(text.contains("ldsync_run_duration_seconds_bucket{sync=\"slow\",le=\"3600\"} 1\n"));
        assert!(text.contains("ldsync_run_duration_seconds_bucket{sync=\"slow\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("ldsync_run_duration_seconds_sum{sync=\"slow\"} 7200.5\n"));
        // Unchanged is up to date; refused is not.
        assert!(text.contains("ldsync_last_success_timestamp_seconds{sync=\"slow\"} 1767258000\n"));
    }

    #[test]
    fn it_observes_the_launchdarkly_client() {
        let telemetry = Telemetry::new();
        let observer: &dyn RequestObserver = &telemetry;
        observer.attempt("POST /bulk", Some(503));
        observer.retry("POST /bulk", Duration::from_secs(1));
        observer.attempt("POST /bulk", Some(202));
        let text = telemetry.render();
        assert!(text.contains(
            "ldsync_launchdarkly_requests_total{route=\"POST /bulk\",status=\"503\"} 1\n"
        ));
        assert!(text.contains(
            "ldsync_launchdarkly_requests_total{route=\"POST /bulk\",status=\"202\"} 1\n"
        ));
        assert!(text.contains("ldsync_launchdarkly_rate_limited_total{route=\"POST /bulk\"} 0\n"));
        assert!(text.contains("ldsync_launchdarkly_retries_total{route=\"POST /bulk\"} 1\n"));
    }

    #[test]
    fn threads_count_together() {
        let telemetry = Arc::new(Telemetry::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let telemetry = Arc::clone(&telemetry);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        telemetry.record_request("GET /x", Some(200));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = telemetry.render();
        assert!(text.contains(
            "ldsync_launchdarkly_requests_total{route=\"GET /x\",status=\"200\"} 8000\n"
        ));
    }

    #[test]
    fn counts_come_from_reports_and_only_delivered_changes_count() {
        let segment = |outcome| SegmentReport {
            sync: "beta-users".to_owned(),
            run_id: RunId::new(),
            outcome,
            rows: 10,
            rejected: 1,
            rejections: Vec::new(),
            segments: vec![SegmentChanges {
                segment: "beta".to_owned(),
                members_before: 5,
                members_after: 9,
                adds: 6,
                removes: 2,
                sample_adds: Vec::new(),
                sample_removes: Vec::new(),
                via_import: false,
                requests: 1,
            }],
            resumed: None,
            refusal: None,
        };
        let delivered = RunCounts::from(&segment(RunOutcome::Succeeded));
        let expected = RunCounts {
            rows_read: 10,
            members_added: 6,
            members_removed: 2,
            rejected: 1,
            ..Default::default()
        };
        assert_eq!(delivered, expected);
        let refused = RunCounts::from(&segment(RunOutcome::Refused));
        assert_eq!(refused, RunCounts { rows_read: 10, rejected: 1, ..Default::default() });
        assert_eq!(RunStatus::from(RunOutcome::Failed(crate::Step::Deliver)), RunStatus::Failed);
    }
}
