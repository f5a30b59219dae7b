//! What `serve` tells monitoring: `/metrics`, read by a Prometheus text parser, agrees with the
//! runs that `status` lists.

use std::{collections::BTreeMap, collections::BTreeSet, process::Stdio, time::Duration};

use prometheus_parse::{Scrape, Value};

use crate::{
    describe, ldsync,
    segments::{DuckDbWarehouse, Project, SEGMENT_SYNC, TOKEN},
};

/// The samples of one scrape: `(metric, sync label, result label) → value`, with a
/// histogram's count as its value.
fn scrape(body: &str) -> BTreeMap<(String, String, String), f64> {
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let scrape = Scrape::parse(lines).expect("the exposition parses");
    let mut samples = BTreeMap::new();
    for sample in scrape.samples {
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => continue,
        };
        let label = |name: &str| sample.labels.get(name).unwrap_or_default().to_owned();
        samples.insert((sample.metric.clone(), label("sync"), label("result")), value);
    }
    samples
}

fn get(samples: &BTreeMap<(String, String, String), f64>, metric: &str, result: &str) -> f64 {
    samples
        .get(&(metric.to_owned(), "members".to_owned(), result.to_owned()))
        .copied()
        .unwrap_or_else(|| panic!("no sample {metric}{{result={result:?}}}: {samples:#?}"))
}

/// Starts `ldsync serve ARGS` (on a free loopback port, with `vars` too) in `project`; returns
/// the process, with its stderr piped, and the address it serves on.
pub(crate) fn start_serve(
    project: &Project,
    vars: &[(&str, &str)],
    args: &[&str],
) -> (tokio::process::Child, String) {
    let port = ldsync_test_support::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![("LD_ACCESS_TOKEN", TOKEN)];
    all.extend_from_slice(vars);
    let mut command = tokio::process::Command::from(ldsync(project.path(), &all));
    command.args(["serve", "--listen", &listen]).args(args).kill_on_drop(true);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    (command.spawn().unwrap(), listen)
}

/// Sends SIGTERM to `child` and waits for it to exit, at most `bound`; it must exit 0.
pub(crate) async fn stop_with_sigterm(
    child: tokio::process::Child,
    bound: Duration,
) -> std::process::Output {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let output = tokio::time::timeout(bound, child.wait_with_output())
        .await
        .expect("serve stopped within its shutdown bound")
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    output
}

#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "Prometheus carries counters as floats; these are small whole numbers, exact in f64"
)]
async fn metrics_parse_and_agree_with_status() {
    // Every four seconds: a scrape right after a run is seconds away from the next one.
    let sync = format!("schedule = \"*/4 * * * * *\"\n{SEGMENT_SYNC}");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..30).map(|i| format!("p{i}")).collect();
    warehouse.set(&members).await;
    let (child, listen) = start_serve(&project, &[], &[]);
    let url = format!("http://{listen}/metrics");

    // Run 1 adds every member; run 2 removes ten and adds two; run 3 finds nothing to do.
    let mut samples = BTreeMap::new();
    for runs in 1..=3 {
        for _ in 0..150 {
            if let Ok(response) = reqwest::get(&url).await {
                let text = response.text().await.unwrap();
                samples = scrape(&text);
                if get(&samples, "ldsync_run_duration_seconds", "") >= f64::from(runs) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(get(&samples, "ldsync_run_duration_seconds", ""), f64::from(runs));
        if runs == 1 {
            let fewer: BTreeSet<String> =
                members.iter().skip(10).cloned().chain(["q1".into(), "q2".into()]).collect();
            warehouse.set(&fewer).await;
        }
    }
    // Right after the third run, before the fourth: the history holds the same three runs.
    let status = project.ldsync(&["status", "members", "--output", "json"]).await;
    assert!(status.status.success(), "{}", describe(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let runs = status[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{status:#}");
    for result in ["succeeded", "unchanged", "refused", "failed"] {
        let in_history = runs.iter().filter(|run| run["outcome"] == result).count();
        assert_eq!(get(&samples, "ldsync_runs_total", result), in_history as f64, "{result}");
    }
    let total =
        |field: &str| runs.iter().map(|run| run[field].as_u64().unwrap()).sum::<u64>() as f64;
    assert_eq!(get(&samples, "ldsync_segment_members_added_total", ""), total("adds"));
    assert_eq!(get(&samples, "ldsync_segment_members_removed_total", ""), total("removes"));
    assert_eq!(get(&samples, "ldsync_rows_read_total", ""), total("rows"));
    assert_eq!((total("adds"), total("removes")), (32.0, 10.0));
    assert_eq!(get(&samples, "ldsync_runs_total", "unchanged"), 1.0);
    assert!(get(&samples, "ldsync_last_success_timestamp_seconds", "") > 1.7e9);

    stop_with_sigterm(child, Duration::from_secs(30)).await;
}

/// Starts `serve` on a project whose one sync is due every second and whose 1 000 members go
/// out at two requests a second, waits until the first run is part-way through its delivery,
/// and sends SIGTERM; returns the process's output and the members the warehouse holds.
async fn stop_mid_delivery(
    shutdown_timeout: &str,
) -> (Project, std::process::Output, BTreeSet<String>) {
    let sync = format!("schedule = \"* * * * * *\"\n{SEGMENT_SYNC}");
    let project = Project::new("duckdb = \"warehouse.duckdb\"", &sync).await;
    let warehouse = DuckDbWarehouse::new(project.path()).await;
    let members: BTreeSet<String> = (0..1_000).map(|i| format!("t{i}")).collect();
    warehouse.set(&members).await;
    project.emulator.set_rate_limits(vec!["POST /api/v2/segments/*/*/*/contexts=2/1s"
        .parse::<ldsync_emulator::RateLimitSpec>()
        .unwrap()]);
    let (child, _) = start_serve(&project, &[], &["--shutdown-timeout", shutdown_timeout]);
    for _ in 0..300 {
        let delivered = project.members("members").len();
        if delivered >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = project.members("members").len();
    assert!((200..1_000).contains(&delivered), "part-way through: {delivered} members");
    let output = stop_with_sigterm(child, Duration::from_secs(40)).await;
    (project, output, members)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_run_in_flight_finish() {
    let (project, output, members) = stop_mid_delivery("30s").await;
    assert_eq!(project.members("members"), members, "{}", describe(&output));
    let status = project.ldsync(&["status", "members", "--output", "json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status[0]["interrupted_run"].is_null(), "{status:#}");
    let runs = status[0]["runs"].as_array().unwrap();
    assert_eq!((runs.len(), runs[0]["outcome"].as_str()), (1, Some("succeeded")), "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_bound_leaves_a_plan_the_next_run_finishes() {
    let (project, output, members) = stop_mid_delivery("1s").await;
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("the next run finishes their plans"), "{logs}");
    assert!(project.members("members").len() < members.len(), "the run was stopped part-way");
    project.emulator.set_rate_limits(Vec::new());
    let run = project.ldsync(&["run"]).await;
    assert!(run.status.success(), "{}", describe(&run));
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("finished the interrupted run"),
        "{}",
        describe(&run)
    );
    assert_eq!(project.members("members"), members);
}
