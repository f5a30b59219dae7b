//! `make bench`: PRODUCT.md's segment scenarios, each measured as a ratio against a baseline
//! taken in the same run on the same machine.
//!
//! Baselines: the fastest plain extraction of the sync's query out of PostgreSQL (`psql -c
//! "\copy (query) to '/dev/null'"`, text or binary, whichever is faster: a process of its own,
//! like `ldsync run`), and DuckDB's `EXCEPT` diff of the same keys. Scenarios:
//! a first load, a sync with no changes, a sync with 1 % churn (each an `ldsync run` child
//! process against a throwaway PostgreSQL and the emulator, with its peak memory), the diff
//! step alone, and the requests sent against ⌈changes / batch⌉; then a metric-events run
//! against the plain extraction of its query. `BENCH_ROWS` sets the size (default 1 000 000),
//! `BENCH_ONLY=segments` or `BENCH_ONLY=events` runs one group of scenarios (to iterate on
//! one part faster); the binary prints a Markdown table.

#![expect(clippy::cast_precision_loss, reason = "ratios of counts and bytes need no exact digits")]

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use futures_util::{pin_mut, TryStreamExt};
use ldsync_diff::{Committed, Delta, KeySet, MappedKeySet};
use ldsync_emulator::{
    Emulator, EmulatorConfig, ProjectSpec, Stats, DEFAULT_ENVIRONMENTS, DEFAULT_PROJECT,
};
use ldsync_test_support::PostgresServer;

/// What the bench measured, as rows of a Markdown table.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, scenario: &str, measured: String, ratio: String, bar: &str) {
        eprintln!("{scenario}: {measured} ({ratio}; bar {bar})");
        self.rows.push([scenario.to_owned(), measured, ratio, bar.to_owned()]);
    }

    fn markdown(&self) -> String {
        let mut out =
            String::from("| scenario | measured | ratio | bar |\n| --- | --- | --- | --- |\n");
        for [a, b, c, d] in &self.rows {
            let _ = writeln!(out, "| {a} | {b} | {c} | {d} |");
        }
        out
    }
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2} ×", a.as_secs_f64() / b.as_secs_f64())
}

/// Runs of each scenario whose best counts (the baseline is the best of four).
const ROUNDS: u64 = 3;

/// The key of row `i`: 20 bytes, like the product's benchmark keys.
fn key(i: u64) -> String {
    format!("user-{i:015}")
}

/// Runs `ldsync run` in `dir`, returning its wall time and peak resident memory (bytes).
fn ldsync_run(ldsync: &Path, dir: &Path, token: &str) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(ldsync)
        .arg("run")
        .current_dir(dir)
        .env("LD_ACCESS_TOKEN", token)
        .env("LDSYNC_LOG", std::env::var("LDSYNC_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ldsync starts");
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib * 1024);
            }
        }
        if let Some(status) = child.try_wait().expect("ldsync can be waited on") {
            assert!(status.success(), "ldsync run failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (started.elapsed(), peak)
}

/// Drains `COPY (query) TO STDOUT` in `format`, returning the time and the bytes read.
async fn copy_out(client: &tokio_postgres::Client, query: &str, binary: bool) -> (Duration, u64) {
    let format = if binary { " (format binary)" } else { "" };
    let started = Instant::now();
    let stream = client.copy_out(&format!("copy ({query}) to stdout{format}")).await.unwrap();
    pin_mut!(stream);
    let mut bytes = 0;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        bytes += chunk.len() as u64;
    }
    (started.elapsed(), bytes)
}

/// Runs `psql -c "\copy (query) to '/dev/null'"` (PRODUCT.md's baseline), returning its wall
/// time: process start, connection and the drained result, as for `ldsync run`.
fn psql_copy(server: &PostgresServer, query: &str, binary: bool) -> Duration {
    let format = if binary { " with (format binary)" } else { "" };
    let started = Instant::now();
    let status = Command::new(server.bin_dir().join("psql"))
        .args(["-X", "-q", "-d", &server.url(), "-c"])
        .arg(format!("\\copy ({query}) to '/dev/null'{format}"))
        .status()
        .expect("psql starts");
    assert!(status.success(), "psql failed: {status}");
    started.elapsed()
}

/// The fastest of four `psql` extractions (text, binary, text, binary).
fn extraction_baseline(server: &PostgresServer, query: &str) -> Duration {
    [false, true, false, true]
        .into_iter()
        .map(|binary| psql_copy(server, query, binary))
        .min()
        .expect("four runs")
}

fn contexts_requests(emulator: &Emulator) -> u64 {
    emulator
        .stats()
        .requests_by_route
        .iter()
        .filter(|(route, _)| route.ends_with("/contexts"))
        .map(|(_, n)| *n)
        .sum()
}

/// Metric events: an incremental run sending `rows` events, against the plain extraction of the
/// same query.
async fn bench_events(
    ldsync: &Path,
    server: &PostgresServer,
    emulator: &Emulator,
    token: &str,
    rows: u64,
    table: &mut Table,
) {
    let client = server.connect().await.unwrap();
    client
        .batch_execute(&format!(
            "create table events (id text, user_id text, value float8, at timestamptz);
             insert into events select 'e' || i, 'user-' || (i % 100000), i * 0.5,
                 timestamptz '2026-01-01 00:00:00+00' + i * interval '10 milliseconds'
             from generate_series(1, {rows}) i;"
        ))
        .await
        .unwrap();
    client.batch_execute("vacuum analyze events").await.unwrap();
    let query = "select id as event_id, 'bench-event' as event_key, user_id as context_key, value as metric_value, at as occurred_at from events where at >= $1";
    let literal = query.replace("$1", "timestamptz '2025-12-31 00:00:00+00'");
    // Best of three runs, against the best of four extractions taken between them (text,
    // binary, text, binary: one before each run and one after the last), so that a slow
    // spell of the machine weighs on both alike. Each run sends every event, from a state of
    // its own into an environment of its own.
    let mut extractions = Vec::new();
    let mut runs = Vec::new();
    let mut dir = None;
    for round in 1..=EVENT_RUNS {
        extractions.push(psql_copy(server, &literal, round % 2 == 0));
        let environment = format!("events-{round}");
        let project_dir = project(server, emulator, &environment, "events", &format!("warehouse = \"pg\"\nenvironment = \"e\"\n[metric_events]\ninitial_cursor = \"2025-12-31\"\nlookback = \"1h\"\nquery = \"{query}\"\n"));
        let before = emulator.stats();
        let (run, peak) = ldsync_run(ldsync, project_dir.path(), token);
        let after = emulator.stats();
        let requests = import_requests(&after) - import_requests(&before);
        // The request bodies as sent (gzip), per event.
        let per_event = (after.event_import_bytes - before.event_import_bytes) as f64 / rows as f64;
        let stored = after.events_stored.get(&format!("default/{environment}")).copied();
        assert_eq!(stored, Some(rows), "every event arrived once, in run {round}");
        runs.push((run, peak, requests, per_event));
        dir = Some(project_dir);
    }
    extractions.push(psql_copy(server, &literal, true));
    let extraction = extractions.iter().copied().min().expect("four extractions");
    table.row(
        "events: plain extraction of the query (`psql \\copy`, best of 4)",
        secs(extraction),
        "1.00 × (baseline)".into(),
        "—",
    );
    let dir = dir.expect("at least one run");
    let (run, peak, requests, per_event) =
        runs.iter().copied().min_by_key(|(run, ..)| *run).expect("at least one run");
    let each: Vec<String> = runs.iter().map(|(run, ..)| secs(*run)).collect();
    table.row(
        "events: incremental run sending every event (best of 3)",
        format!(
            "{} ({}), {requests} requests, {per_event:.1} B sent per event, peak {} MiB (highest of the runs: {} MiB)",
            secs(run),
            each.join(", "),
            peak >> 20,
            runs.iter().map(|(_, peak, ..)| *peak).max().unwrap_or(0) >> 20
        ),
        ratio(run, extraction),
        "≤ 1.35 ×",
    );
    let (again, _) = ldsync_run(ldsync, dir.path(), token);
    table.row("events: the next run, nothing new", secs(again), ratio(again, extraction), "—");
}

/// Incremental events runs measured, each from a state of its own: the best counts.
const EVENT_RUNS: usize = 3;

/// Metric-import requests received so far.
fn import_requests(stats: &Stats) -> u64 {
    stats
        .requests_by_route
        .iter()
        .filter(|(route, _)| route.contains("event-data-import"))
        .map(|(_, n)| *n)
        .sum()
}

/// A project in a new folder: the throwaway PostgreSQL as warehouse `pg`, the emulator's
/// `environment` as `e`, and one sync `syncs/NAME.toml` whose body is `sync`.
fn project(
    server: &PostgresServer,
    emulator: &Emulator,
    environment: &str,
    name: &str,
    sync: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ldsync.toml"),
        format!(
            "[limits]\n# PRODUCT.md's scenarios deliver to the emulator without a rate limit.\nrequests_per_second = 100000\nroute_requests_per_second = 100000\n\n[warehouses.pg]\npostgres = \"{}\"\n\n[environments.e]\ntoken = \"${{LD_ACCESS_TOKEN}}\"\nproject = \"default\"\nenvironment = \"{environment}\"\napi_url = \"{}\"\nevents_url = \"{}\"\n",
            server.url(),
            emulator.api_url(),
            emulator.events_url()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    std::fs::write(dir.path().join(format!("syncs/{name}.toml")), sync).unwrap();
    dir
}

/// Which groups of scenarios `BENCH_ONLY` asks for.
#[derive(Clone, Copy)]
struct Groups {
    segments: bool,
    events: bool,
}

impl Groups {
    /// From `BENCH_ONLY`: `segments`, `events`, or unset for both.
    fn from_env() -> Self {
        match std::env::var("BENCH_ONLY").as_deref() {
            Err(_) | Ok("") => Self { segments: true, events: true },
            Ok("segments") => Self { segments: true, events: false },
            Ok("events") => Self { segments: false, events: true },
            Ok(other) => panic!("BENCH_ONLY=`{other}`: use `segments` or `events`"),
        }
    }
}

/// The segment scenarios: baselines, first load, no change, churn, requests, the diff step.
#[expect(clippy::too_many_lines, reason = "one scenario after another, in the order of the table")]
async fn bench_segments(
    ldsync: &Path,
    server: &PostgresServer,
    emulator: &Emulator,
    token: &str,
    rows: u64,
    table: &mut Table,
) {
    let churn = rows / 200; // 0.5 % leave and 0.5 % join: 1 % churn
    eprintln!("segments: {rows} rows, {} changes per churn run", 2 * churn);
    let client = server.connect().await.unwrap();
    client
        .batch_execute(&format!(
            "create table users (id text primary key);
             insert into users select 'user-' || lpad(i::text, 15, '0') from generate_series(0, {}) i;",
            rows - 1
        ))
        .await
        .unwrap();
    // VACUUM cannot share a batch (an implicit transaction) with other statements.
    client.batch_execute("vacuum analyze users").await.unwrap();
    let query = "select id as context_key from users";

    // Baseline: the fastest plain extraction, warm.
    let extraction = extraction_baseline(server, query);
    table.row(
        "plain extraction (`psql -c \"\\copy (query) to '/dev/null'\"`, best of text/binary)",
        secs(extraction),
        "1.00 × (baseline)".into(),
        "—",
    );
    let mut in_process = Duration::MAX;
    for binary in [false, true, false, true] {
        in_process = in_process.min(copy_out(&client, query, binary).await.0);
    }
    table.row(
        "for reference: the same `COPY` drained by an open connection in this process",
        secs(in_process),
        ratio(in_process, extraction),
        "—",
    );

    // The project: the throwaway PostgreSQL → the emulator.
    let dir = project(server, emulator, "production", "bench", &format!("warehouse = \"pg\"\nenvironment = \"e\"\n[segment]\nkey = \"bench\"\nbatch_size = 1000\nquery = \"{query}\"\n"));

    // First load: through CSV imports.
    let (first, first_peak) = ldsync_run(ldsync, dir.path(), token);
    let imports = emulator.snapshot().environment("default", "production").unwrap().imports.len();
    table.row(
        "first load (CSV imports)",
        format!("{} in {imports} import file(s), peak {} MiB", secs(first), first_peak >> 20),
        ratio(first, extraction),
        "imports, not ⌈n/1000⌉ requests",
    );

    // No change: the best of three runs, as the baseline is the best of four.
    let mut unchanged = Duration::MAX;
    let mut unchanged_peak = 0;
    for _ in 0..ROUNDS {
        let (wall, peak) = ldsync_run(ldsync, dir.path(), token);
        unchanged = unchanged.min(wall);
        unchanged_peak = unchanged_peak.max(peak);
    }
    table.row(
        "sync with no changes (best of 3)",
        secs(unchanged),
        ratio(unchanged, extraction),
        "≤ 1.25 ×",
    );
    let raw = rows * 20;
    let memory_bar = raw * 3 / 2 + (64 << 20);
    table.row(
        "peak memory, no-change sync",
        format!("{} MiB", unchanged_peak >> 20),
        format!("{:.2} × the bar", unchanged_peak as f64 / memory_bar as f64),
        &format!("≤ 1.5 × raw keys ({} MiB) + 64 MiB = {} MiB", raw >> 20, memory_bar >> 20),
    );

    // 1 % churn, three rounds: each drops the lowest 0.5 % of the keys and adds 0.5 % new ones.
    let mut churned = Duration::MAX;
    let mut churn_peak = 0;
    let mut requests = Vec::new();
    for round in 0..ROUNDS {
        let first_new = rows + round * churn;
        client
            .batch_execute(&format!(
                "delete from users where id in (select id from users order by id limit {churn});
                 insert into users select 'user-' || lpad(i::text, 15, '0') from generate_series({first_new}, {}) i;",
                first_new + churn - 1
            ))
            .await
            .unwrap();
        let before = contexts_requests(emulator);
        let (wall, peak) = ldsync_run(ldsync, dir.path(), token);
        requests.push(contexts_requests(emulator) - before);
        churned = churned.min(wall);
        churn_peak = churn_peak.max(peak);
    }
    table.row(
        "sync with 1 % churn (best of 3 rounds)",
        format!("{}, peak {} MiB", secs(churned), churn_peak >> 20),
        ratio(churned, extraction),
        "≤ 1.35 ×",
    );
    let expected = 2 * churn.div_ceil(1000);
    table.row(
        "requests for 1 % churn, per round",
        format!("{requests:?}"),
        format!(
            "{:.2} × ⌈changes / batch⌉ = {expected}",
            requests.iter().max().copied().unwrap_or(0) as f64 / expected as f64
        ),
        "= ⌈changes / batch⌉ per direction",
    );
    let members =
        emulator.snapshot().segment("default", "production", "bench").unwrap().included.len()
            as u64;
    assert_eq!(members, rows, "the emulator holds every member");

    // The diff step alone, against DuckDB's EXCEPT on the same keys: ldsync's is mapping the
    // committed snapshot, indexing it, probing every current key and ordering the delta.
    let previous: Vec<String> = (0..rows).map(key).collect();
    let current: Vec<String> = (churn..rows + churn).map(key).collect();
    let snapshot_dir = tempfile::tempdir().unwrap();
    let snapshot = snapshot_dir.path().join("base.keys");
    KeySet::from_keys(&previous).write_file(&snapshot).unwrap();
    drop(previous);
    let started = Instant::now();
    let committed = Committed::new(MappedKeySet::open(&snapshot).unwrap(), Delta::default());
    let mut probe = committed.into_probe();
    probe.offer_many(current.iter().map(String::as_bytes));
    let (_, delta) = probe.finish().unwrap();
    let ours = started.elapsed();
    assert_eq!(delta.len() as u64, 2 * churn);

    let duck = duckdb::Connection::open_in_memory().unwrap();
    duck.execute_batch(&format!(
        "create table prev as select 'user-' || lpad(i::varchar, 15, '0') as k from range(0, {rows}) t(i);
         create table cur as select 'user-' || lpad(i::varchar, 15, '0') as k from range({churn}, {}) t(i);",
        rows + churn
    ))
    .unwrap();
    let started = Instant::now();
    let duck_changes: i64 = duck
        .query_row(
            "select (select count(*) from (select k from cur except select k from prev)) + (select count(*) from (select k from prev except select k from cur))",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let theirs = started.elapsed();
    assert_eq!(duck_changes.cast_unsigned(), 2 * churn);
    table.row(
        "diff step alone (map + index the snapshot, probe every key, order the delta)",
        format!("{} vs DuckDB EXCEPT {}", secs(ours), secs(theirs)),
        ratio(ours, theirs),
        "≤ 1.0 × DuckDB (stretch 0.6 ×)",
    );
}

#[tokio::main]
async fn main() {
    let rows: u64 =
        std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let ldsync =
        PathBuf::from(std::env::args().nth(1).expect("usage: ldsync-bench PATH/TO/ldsync"));
    let groups = Groups::from_env();
    let mut table = Table::default();
    eprintln!("ldsync bench: {rows} rows");
    // A throwaway PostgreSQL and the emulator, with no rate limit.
    let server = PostgresServer::start().expect("PostgreSQL starts");
    let token = "bench-token";
    // The default environments, and one for each measured events run.
    let environments = DEFAULT_ENVIRONMENTS
        .iter()
        .map(|env| (*env).to_owned())
        .chain((1..=EVENT_RUNS).map(|round| format!("events-{round}")));
    let config = EmulatorConfig::default()
        .with_token(token)
        .with_projects(vec![ProjectSpec::new(DEFAULT_PROJECT, environments)]);
    let emulator = Emulator::start(config).await.unwrap();
    if groups.segments {
        bench_segments(&ldsync, &server, &emulator, token, rows, &mut table).await;
    }
    if groups.events {
        bench_events(&ldsync, &server, &emulator, token, rows, &mut table).await;
    }

    // The report is this binary's output.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "Measured with {rows} rows of 20-byte keys on this machine ({} cores).\n\n{}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        table.markdown()
    );
}
