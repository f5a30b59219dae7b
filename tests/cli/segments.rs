//! Segment syncs end to end: the `ldsync` binary, a DuckDB file or a throwaway PostgreSQL, and
//! the emulator. After every run the emulator's members must equal the query's keys exactly.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use ldsync_emulator::{Emulator, EmulatorConfig, FaultSpec, RateLimitSpec};
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{describe, ldsync};

/// A project in a temporary folder, writing to an emulator.
pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) emulator: Emulator,
}

pub(crate) const TOKEN: &str = "api-e2e-secret-7d1f";

impl Project {
    /// A project whose warehouse is `warehouse` (a TOML table body) and whose only sync is
    /// `sync` (a `[segment]` table and its options).
    pub(crate) async fn new(warehouse: &str, sync: &str) -> Self {
        Self::with_sync(warehouse, "members", sync).await
    }

    /// A project whose only sync is `syncs/NAME.toml` with `sync` as its object table.
    pub(crate) async fn with_sync(warehouse: &str, name: &str, sync: &str) -> Self {
        let emulator = Emulator::start(EmulatorConfig::default().with_token(TOKEN)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[warehouses.w]\n{warehouse}\n\n[environments.e]\ntoken = \"${{LD_ACCESS_TOKEN}}\"\nproject = \"default\"\nenvironment = \"production\"\napi_url = \"{}\"\nevents_url = \"{}\"\n",
            emulator.api_url(),
            emulator.events_url()
        );
        std::fs::write(dir.path().join("ldsync.toml"), config).unwrap();
        std::fs::create_dir(dir.path().join("syncs")).unwrap();
        std::fs::write(
            dir.path().join(format!("syncs/{name}.toml")),
            format!("warehouse = \"w\"\nenvironment = \"e\"\n\n{sync}"),
        )
        .unwrap();
        Self { dir, emulator }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a SQL script against the project's DuckDB warehouse file.
    pub(crate) async fn duckdb(&self, sql: &str) {
        let path = self.path().join("warehouse.duckdb");
        ldsync_source::DuckDbSource::execute_script(path, sql.to_owned()).await.unwrap();
    }

    /// Starts `ldsync ARGS` and kills it with SIGKILL after `delay` unless it ended before;
    /// returns whether it was killed. Its output is dropped: the tests read the end state.
    pub(crate) async fn run_killed_after(&self, args: &[&str], delay: Duration) -> bool {
        let mut command =
            tokio::process::Command::from(ldsync(self.path(), &[("LD_ACCESS_TOKEN", TOKEN)]));
        command.args(args).kill_on_drop(true);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = command.spawn().unwrap();
        let killed = tokio::time::timeout(delay, child.wait()).await.is_err();
        if killed {
            child.start_kill().unwrap();
        }
        let _ = child.wait().await;
        killed
    }

    /// Runs `ldsync ARGS` in the project; waits at most two minutes.
    pub(crate) async fn ldsync(&self, args: &[&str]) -> Output {
        let mut command = ldsync(self.path(), &[("LD_ACCESS_TOKEN", TOKEN)]);
        command.args(args);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        tokio::time::timeout(Duration::from_mins(2), command.output())
            .await
            .expect("ldsync finished within two minutes")
            .unwrap()
    }

    /// The members of `segment` in the emulator.
    pub(crate) fn members(&self, segment: &str) -> BTreeSet<String> {
        self.emulator
            .snapshot()
            .segment("default", "production", segment)
            .map(|s| s.included.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A DuckDB warehouse file holding `users(id, member)`.
pub(crate) struct DuckDbWarehouse {
    pub(crate) path: PathBuf,
}

impl DuckDbWarehouse {
    pub(crate) async fn new(dir: &Path) -> Self {
        let path = dir.join("warehouse.duckdb");
        Self::exec(&path, "create table users (id varchar, member boolean)").await;
        Self { path }
    }

    async fn exec(path: &Path, sql: &str) {
        ldsync_source::DuckDbSource::execute_script(path.to_path_buf(), sql.to_owned())
            .await
            .unwrap();
    }

    /// Replaces the table with `members` (and a few non-members).
    pub(crate) async fn set(&self, members: &BTreeSet<String>) {
        let mut sql = String::from("delete from users;\n");
        for chunk in members.iter().collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> =
                chunk.iter().map(|k| format!("('{}', true)", k.replace('\'', "''"))).collect();
            sql.push_str("insert into users values ");
            sql.push_str(&values.join(","));
            sql.push_str(";\n");
        }
        sql.push_str("insert into users values ('not-a-member', false);\n");
        Self::exec(&self.path, &sql).await;
    }
}

/// Random churn: drop about `share` of the keys and add as many new ones.
pub(crate) fn churn(
    rng: &mut SmallRng,
    members: &BTreeSet<String>,
    share: f64,
    next: &mut u64,
) -> BTreeSet<String> {
    let mut kept: BTreeSet<String> =
        members.iter().filter(|_| !rng.random_bool(share)).cloned().collect();
    let adds = members.len() - kept.len() + rng.random_range(0..10);
    for _ in 0..adds {
        *next += 1;
        // Unicode, spaces and punctuation are member keys too.
        let key = match *next % 4 {
            0 => format!("user-{next}"),
            1 => format!("Zoë O'Brien #{next}"),
            2 => format!("東京/{next}"),
            _ => format!("acct,{next} \"q\""),
        };
        kept.insert(key);
    }
    kept
}

pub(crate) const SEGMENT_SYNC: &str = "[segment]\nkey = \"members\"\nmax_removal_ratio = 1.0\nbatch_size = 100\nquery = \"select id as context_key from users where member\"\n";

pub(crate) fn assert_success(output: &Output) {
    assert!(output.status.success(), "{}", describe(output));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains(TOKEN), "the token leaked:\n{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_rounds_of_churn_mirror_exactly() {
    let project = Project::new("duckdb = \"warehouse.duckdb\"", SEGMENT_SYNC).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut next = 0;
    let mut members = churn(&mut rng, &BTreeSet::new(), 0.0, &mut next);
    for _ in 0..1_500 {
        next += 1;
        members.insert(format!("user-{next}"));
    }
    for round in 0..4 {
        warehouse.set(&members).await;
        let output = project.ldsync(&["run"]).await;
        assert_success(&output);
        assert_eq!(project.members("members"), members, "round {round}\n{}", describe(&output));
        members = churn(&mut rng, &members, 0.05, &mut next);
    }
    // Pending changes make `plan --detailed-exitcode` exit 2; none, 0.
    warehouse.set(&members).await;
    let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    warehouse.set(&project.members("members")).await;
    let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    // A run with nothing new sends nothing.
    let before = project.emulator.stats().requests;
    let output = project.ldsync(&["run"]).await;
    assert_success(&output);
    assert_eq!(project.emulator.stats().requests, before, "an unchanged run sent requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_sent_are_changes_over_batch_size() {
    let project = Project::new("duckdb = \"warehouse.duckdb\"", SEGMENT_SYNC).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..1_234).map(|i| format!("u{i}")).collect();
    warehouse.set(&members).await;
    assert_success(&project.ldsync(&["run"]).await);
    let stats = project.emulator.stats();
    let contexts = stats
        .requests_by_route
        .iter()
        .filter(|(route, _)| route.ends_with("/contexts"))
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert_eq!(contexts, 1_234_u64.div_ceil(100), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_and_rate_limits_change_nothing_in_the_result() {
    let project = Project::new("duckdb = \"warehouse.duckdb\"", SEGMENT_SYNC).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    project.emulator.set_faults_with_seed(
        vec![
            "503@rate=0.15".parse::<FaultSpec>().unwrap(),
            "reset@rate=0.05".parse::<FaultSpec>().unwrap(),
            "500@rate=0.05".parse::<FaultSpec>().unwrap(),
        ],
        42,
    );
    project.emulator.set_rate_limits(vec![
        "POST /api/v2/segments/*/*/*/contexts=40/1s".parse::<RateLimitSpec>().unwrap(),
        "global=60/1s".parse::<RateLimitSpec>().unwrap(),
    ]);
    let mut rng = SmallRng::seed_from_u64(11);
    let mut next = 0;
    let mut members: BTreeSet<String> = (0..800).map(|i| format!("m{i}")).collect();
    for round in 0..3 {
        warehouse.set(&members).await;
        let output = project.ldsync(&["run"]).await;
        assert_success(&output);
        assert_eq!(project.members("members"), members, "round {round}\n{}", describe(&output));
        members = churn(&mut rng, &members, 0.1, &mut next);
    }
    let stats = project.emulator.stats();
    assert!(stats.faults_injected > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_then_one_run_repairs_everything() {
    let sync = SEGMENT_SYNC.replace("batch_size = 100", "batch_size = 7");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    // A paced emulator keeps each run long enough to be killed in the middle of delivery.
    project.emulator.set_rate_limits(vec!["global=400/1s".parse::<RateLimitSpec>().unwrap()]);
    let mut next = 0;
    let mut members: BTreeSet<String> = (0..300).map(|i| format!("k{i}")).collect();
    for seed in 0..20_u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        members = churn(&mut rng, &members, 0.3, &mut next);
        warehouse.set(&members).await;
        let delay = Duration::from_millis(rng.random_range(0..400));
        let killed = project.run_killed_after(&["run"], delay).await;
        eprintln!("seed {seed}: {} after {delay:?}", if killed { "killed" } else { "finished" });
    }
    let output = project.ldsync(&["run"]).await;
    assert_success(&output);
    assert_eq!(project.members("members"), members, "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rounds_mirror_exactly_and_reject_bad_rows() {
    let server = ldsync_test_support::postgres::shared();
    let db = server.create_unique_database("segments").await.unwrap();
    let client = server.connect_to(&db).await.unwrap();
    client
        .batch_execute("create table users (id text, member boolean); create table orgs (id int8)")
        .await
        .unwrap();
    let warehouse = format!("postgres = \"{}\"", server.url_for(&db));
    let project = Project::new(&warehouse, SEGMENT_SYNC).await;
    let mut rng = SmallRng::seed_from_u64(3);
    let mut next = 0;
    let mut members: BTreeSet<String> = (0..2_000).map(|i| format!("pg-{i}")).collect();
    for round in 0..3 {
        let statement =
            client.prepare("insert into users select unnest($1::text[]), true").await.unwrap();
        client.execute("delete from users", &[]).await.unwrap();
        let keys: Vec<&str> = members.iter().map(String::as_str).collect();
        client.execute(&statement, &[&keys]).await.unwrap();
        // Bad rows: a NULL key and an empty one are rejected; the others go on.
        client.execute("insert into users values (null, true), ('', true)", &[]).await.unwrap();
        let output = project.ldsync(&["run", "--output", "json"]).await;
        assert_success(&output);
        assert_eq!(project.members("members"), members, "round {round}");
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let report = &document["syncs"][0]["report"];
        assert_eq!(report["rejected"], 2, "{document:#}");
        let reasons: Vec<_> = report["rejections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap().to_owned())
            .collect();
        assert!(reasons.contains(&"`context_key` is NULL".to_owned()), "{reasons:?}");
        assert!(reasons.contains(&"`context_key` is empty".to_owned()), "{reasons:?}");
        members = churn(&mut rng, &members, 0.05, &mut next);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let project = Project::new("duckdb = \"warehouse.duckdb\"", SEGMENT_SYNC).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..50).map(|i| format!("b{i}")).collect();
    warehouse.set(&members).await;
    assert_success(&project.ldsync(&["run"]).await);
    let sync_file = project.path().join("syncs/members.toml");
    let original = std::fs::read_to_string(&sync_file).unwrap();

    // A missing column names the sync and the columns found.
    std::fs::write(
        &sync_file,
        original.replace("select id as context_key", "select id as user_id"),
    )
    .unwrap();
    let output = project.ldsync(&["run"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sync `members`: the query must return a `context_key` column"),
        "{stderr}"
    );
    assert!(stderr.contains("it returned `user_id`"), "{stderr}");

    // An SQL error says what the warehouse said.
    std::fs::write(&sync_file, original.replace("from users", "from no_such_table")).unwrap();
    let output = project.ldsync(&["run"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("no_such_table"),
        "{}",
        describe(&output)
    );

    // A guardrail: emptying the segment is refused.
    std::fs::write(&sync_file, original.replace("where member", "where false")).unwrap();
    let output = project.ldsync(&["run"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("refusing to empty it"),
        "{}",
        describe(&output)
    );
    assert_eq!(project.members("members"), members);

    // A revoked token: 401, named, the token never printed.
    std::fs::write(&sync_file, &original).unwrap();
    warehouse.set(&members.iter().skip(1).cloned().collect()).await;
    let mut command = ldsync(project.path(), &[("LD_ACCESS_TOKEN", "api-revoked-0000")]);
    let output = command.arg("run").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("401"), "{all}");
    assert!(!all.contains("api-revoked-0000"), "{all}");
    assert_eq!(project.members("members"), members, "nothing changed");

    // The next good run delivers what the failed one could not.
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.members("members").len(), members.len() - 1);

    // An unreachable warehouse.
    let config = project.path().join("ldsync.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("duckdb = \"warehouse.duckdb\"", "duckdb = \"missing.duckdb\""),
    )
    .unwrap();
    let output = project.ldsync(&["run"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("missing.duckdb` does not exist"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_query_fans_out_into_several_segments() {
    let sync = "[segment]\ncontext_kind = \"organization\"\nmax_removal_ratio = 1.0\nquery = \"select id as context_key, seg as segment_key from orgs\"\n";
    let project = Project::new("duckdb = \"warehouse.duckdb\"", sync).await;
    let path = project.path().join("warehouse.duckdb");
    let exec = |sql: &'static str| {
        ldsync_source::DuckDbSource::execute_script(path.clone(), sql.to_owned())
    };
    exec("create table orgs as select 'o' || i as id, case when i % 2 = 0 then 'even' else 'odd' end as seg from range(10) t(i)").await.unwrap();
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.members("even").len(), 5);
    assert_eq!(project.members("odd").len(), 5);
    let snapshot = project.emulator.snapshot();
    let even = snapshot.segment("default", "production", "even").unwrap();
    assert!(even.unbounded);
    assert_eq!(even.context_kind, "organization");
    // Every odd org leaves: its segment is emptied (the removal ratio allows it).
    exec("update orgs set seg = 'even'").await.unwrap();
    let output = project.ldsync(&["run", "--allow-mass-removal"]).await;
    assert_success(&output);
    assert_eq!(project.members("even").len(), 10);
    assert!(project.members("odd").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn large_first_loads_and_backfills_go_through_csv_imports() {
    let sync = SEGMENT_SYNC.replace("batch_size = 100", "import_threshold = 500");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..1_000).map(|i| format!("imp-{i}")).collect();
    warehouse.set(&members).await;
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.members("members"), members);
    let stats = project.emulator.stats();
    assert!(stats.requests_by_route.keys().any(|route| route.contains("imports")), "{stats:?}");
    // Someone edits the segment behind ldsync's back; a backfill restores the warehouse's truth.
    let smaller: BTreeSet<String> = members.iter().take(900).cloned().collect();
    warehouse.set(&smaller).await;
    let output = project.ldsync(&["backfill", "members"]).await;
    assert_success(&output);
    assert_eq!(project.members("members"), smaller);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_recent_runs_rejections_and_the_next_run() {
    let sync = format!("schedule = \"*/15 * * * *\"\n{SEGMENT_SYNC}");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    project
        .duckdb("create table users (id varchar, member boolean); insert into users values ('a', true), (null, true), ('b', true);")
        .await;
    let output = project.ldsync(&["status"]).await;
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("never run"), "{}", describe(&output));
    assert_success(&project.ldsync(&["run"]).await);
    // A refused run is history too.
    project.duckdb("delete from users").await;
    assert_eq!(project.ldsync(&["run"]).await.status.code(), Some(1));

    let output = project.ldsync(&["status", "members", "--rejected", "--output", "json"]).await;
    assert_success(&output);
    let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = &statuses[0];
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{statuses:#}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert_eq!(runs[0]["adds"], 2);
    assert_eq!(runs[0]["rejected"], 1);
    assert_eq!(runs[1]["outcome"], "refused");
    assert!(runs[1]["error"].as_str().unwrap().contains("refusing to empty it"));
    assert!(status["next_run"].as_str().unwrap().ends_with(":00Z"), "{statuses:#}");
    // The refused run rejected nothing: its rejections replaced the first run's.
    assert_eq!(status["rejected"].as_array().unwrap().len(), 0, "{statuses:#}");

    let output = project.ldsync(&["status"]).await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.lines().any(|l| l.starts_with("members") && l.contains("refused")), "{table}");
}

/// Polls `url` until `ready` holds for its body, for at most 30 seconds.
async fn wait_for(url: &str, ready: impl Fn(&str) -> bool) -> String {
    for _ in 0..300 {
        if let Ok(response) = reqwest::get(url).await {
            let body = response.text().await.unwrap_or_default();
            if ready(&body) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_syncs_on_schedule_serves_metrics_and_stops_on_sigterm() {
    let sync = format!("schedule = \"* * * * * *\"\n{SEGMENT_SYNC}");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..40).map(|i| format!("s{i}")).collect();
    warehouse.set(&members).await;
    let (child, listen) = crate::operations::start_serve(
        &project,
        &[("LDSYNC_LOG", "info")],
        &["--shutdown-timeout", "20s"],
    );

    let base = format!("http://{listen}");
    assert_eq!(wait_for(&format!("{base}/healthz"), |b| b == "ok\n").await, "ok\n");
    let metrics = wait_for(&format!("{base}/metrics"), |b| {
        b.contains("ldsync_runs_total{sync=\"members\",result=\"succeeded\"} 1")
    })
    .await;
    assert!(metrics.contains("# TYPE ldsync_run_duration_seconds histogram"), "{metrics}");
    assert!(
        metrics.contains("ldsync_segment_members_added_total{sync=\"members\"} 40"),
        "{metrics}"
    );
    assert!(metrics.contains("ldsync_launchdarkly_requests_total{"), "{metrics}");
    assert_eq!(project.members("members"), members);

    // A change in the warehouse reaches LaunchDarkly on a later tick.
    let fewer: BTreeSet<String> = members.iter().skip(5).cloned().collect();
    warehouse.set(&fewer).await;
    for _ in 0..100 {
        if project.members("members") == fewer {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(project.members("members"), fewer);

    // SIGHUP with a broken file keeps the old configuration and goes on.
    let config = project.path().join("ldsync.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "this is = not [valid").unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    std::fs::write(&config, good).unwrap();
    wait_for(&format!("{base}/healthz"), |b| b == "ok\n").await;

    let output = crate::operations::stop_with_sigterm(child, Duration::from_secs(30)).await;
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("keeping the old one"), "{logs}");
    assert!(!logs.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_plan_is_abandoned_and_never_blocks_later_runs() {
    let project = Project::new("duckdb = \"warehouse.duckdb\"", SEGMENT_SYNC).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..30).map(|i| format!("r{i}")).collect();
    warehouse.set(&members).await;
    // Someone made `members` a standard segment: ldsync cannot write big-segment members to it.
    let segments = format!("{}/api/v2/segments/default/production", project.emulator.api_url());
    #[expect(clippy::disallowed_methods, reason = "the test plays a person editing LaunchDarkly")]
    let http = reqwest::Client::new();
    let created = http
        .post(&segments)
        .header("Authorization", TOKEN)
        .json(&serde_json::json!({"key": "members", "name": "Members"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let output = project.ldsync(&["run"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("standard segment"),
        "{}",
        describe(&output)
    );
    let status = project.ldsync(&["status", "--output", "json"]).await;
    let statuses: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        statuses[0]["interrupted_run"].is_null(),
        "the refused plan was abandoned: {statuses:#}"
    );

    // Once the segment is fixed, the next run delivers everything.
    let deleted = http
        .delete(format!("{segments}/members"))
        .header("Authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{deleted:?}");
    assert_success(&project.ldsync(&["run"]).await);
    assert_eq!(project.members("members"), members);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_keys_arrive_exactly_through_batches_and_imports() {
    let long = "x".repeat(10_000);
    let hostile: BTreeSet<String> = [
        "Zoë O'Brien".to_owned(),
        "東京/渋谷 👋".to_owned(),
        "tab\there".to_owned(),
        "new\nline".to_owned(),
        "carriage\rreturn".to_owned(),
        "quote \"inside\", and comma".to_owned(),
        "  leading and trailing spaces  ".to_owned(),
        "back\\slash".to_owned(),
        "nul-free \u{7f} delete".to_owned(),
        long,
    ]
    .into_iter()
    .collect();
    for (name, extra) in [("batches", ""), ("imports", "import_threshold = 1\n")] {
        let sync = SEGMENT_SYNC.replace("[segment]\n", &format!("[segment]\n{extra}"));
        let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
        let warehouse = DuckDbWarehouse::new(project.path()).await;
        warehouse.set(&hostile).await;
        let output = project.ldsync(&["run"]).await;
        assert_success(&output);
        assert_eq!(project.members("members"), hostile, "through {name}\n{}", describe(&output));
        // Nothing left to send: the snapshot holds exactly what LaunchDarkly holds.
        let output = project.ldsync(&["plan", "--detailed-exitcode"]).await;
        assert_eq!(output.status.code(), Some(0), "through {name}\n{}", describe(&output));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_past_the_memory_budget_spill_to_disk_and_survive_kill_9() {
    // The smallest budget (64 MiB) spills past 1 MiB of new members: 150 000 keys of 33 bytes
    // make five runs or more, and a churn of 45 000 keys spills too.
    let sync = SEGMENT_SYNC.replace("batch_size = 100", "batch_size = 1000");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let config = project.path().join("ldsync.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[limits]\nmemory_budget_mib = 64\n");
    std::fs::write(&config, text).unwrap();
    DuckDbWarehouse::new(project.path()).await;
    let members = |start: u64| -> BTreeSet<String> {
        (start..start + 150_000).map(|i| format!("spill-member-{i:020}")).collect()
    };
    let set = |start: u64| {
        format!(
            "delete from users; insert into users select 'spill-member-' || lpad(i::varchar, 20, '0'), true from range({start}, {}) t(i);",
            start + 150_000
        )
    };
    let scratch = project.path().join(".ldsync/syncs/members/scratch");
    let mut rng = SmallRng::seed_from_u64(5);
    for seed in 0..6_u64 {
        project.duckdb(&set(seed * 45_000)).await;
        let delay = Duration::from_millis(rng.random_range(50..1_500));
        let killed = project.run_killed_after(&["run"], delay).await;
        eprintln!("seed {seed}: {} after {delay:?}", if killed { "killed" } else { "finished" });
    }
    let output = project.ldsync(&["run"]).await;
    assert_success(&output);
    assert_eq!(project.members("members"), members(5 * 45_000), "{}", describe(&output));
    // A clean run leaves no scratch files, and clears those of killed runs.
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    // Spilled or not, the next run diffs against what was committed.
    project.duckdb(&set(6 * 45_000)).await;
    let output = project.ldsync(&["run"]).await;
    assert_success(&output);
    assert_eq!(project.members("members"), members(6 * 45_000), "{}", describe(&output));
}
