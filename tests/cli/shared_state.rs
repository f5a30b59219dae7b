//! The PostgreSQL state store (`[state] url`) through the binary: several processes, as on
//! several machines, each with its own working copy, share the syncs' state, claim each
//! scheduled run once, and take over the syncs of a process that died.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Stdio,
    time::Duration,
};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    copy_tree, describe, ldsync,
    segments::{assert_success, Project, TOKEN},
};

/// A project whose warehouse and state store are two new databases of the shared server, with
/// `members(id)` in the warehouse; returns it with a client of the warehouse.
async fn project(sync_options: &str) -> (Project, tokio_postgres::Client, String) {
    let server = ldsync_test_support::postgres::shared();
    let warehouse = server.create_unique_database("shared_wh").await.unwrap();
    let state = server.create_unique_database("shared_state").await.unwrap();
    let client = server.connect_to(&warehouse).await.unwrap();
    client.batch_execute("create table members (id text primary key)").await.unwrap();
    let sync = format!(
        "{sync_options}[segment]\nkey = \"members\"\nmax_removal_ratio = 1.0\nbatch_size = 25\nquery = \"select id as context_key from members, (select pg_sleep(0.3)) as slow\"\n"
    );
    let project =
        Project::new(&format!("postgres = \"{}\"", server.url_for(&warehouse)), &sync).await;
    let config = project.path().join("ldsync.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[state]\nurl = \"${{LDSYNC_STATE_URL}}\"\nlease = \"2s\"\n\n{text}"),
    )
    .unwrap();
    (project, client, server.url_for(&state))
}

async fn set_members(client: &tokio_postgres::Client, members: &BTreeSet<String>) {
    let keys: Vec<&str> = members.iter().map(String::as_str).collect();
    client.execute("delete from members", &[]).await.unwrap();
    client.execute("insert into members select unnest($1::text[])", &[&keys]).await.unwrap();
}

/// Another machine: the same project files in a folder of its own (so a working copy of its
/// own), and nothing else.
fn other_machine(project: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(project.join("ldsync.toml"), dir.path().join("ldsync.toml")).unwrap();
    copy_tree(&project.join("syncs"), &dir.path().join("syncs"));
    dir
}

async fn ldsync_in(dir: &Path, state_url: &str, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::from(ldsync(
        dir,
        &[("LD_ACCESS_TOKEN", TOKEN), ("LDSYNC_STATE_URL", state_url)],
    ));
    command.args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_mins(2), command.output())
        .await
        .expect("ldsync finished within two minutes")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_plans_and_status_share_one_postgresql_state_store() {
    let (project, client, state_url) = project("").await;
    let mut members: BTreeSet<String> = (0..60).map(|i| format!("m{i}")).collect();
    set_members(&client, &members).await;
    assert_success(&ldsync_in(project.path(), &state_url, &["run"]).await);
    assert_eq!(project.members("members"), members);

    // Another machine sees what the first committed: its plan holds only the change, and its
    // run sends only that.
    let machine_b = other_machine(project.path());
    members.retain(|m| m != "m0");
    members.insert("m60".into());
    set_members(&client, &members).await;
    let plan = ldsync_in(machine_b.path(), &state_url, &["plan", "--output", "json"]).await;
    assert!(plan.status.success(), "{}", describe(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let segment = &plan["syncs"][0]["report"]["segments"][0];
    assert_eq!((segment["adds"].as_u64(), segment["removes"].as_u64()), (Some(1), Some(1)));
    let run = ldsync_in(machine_b.path(), &state_url, &["run", "--output", "json"]).await;
    assert_success(&run);
    let run: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let segment = &run["syncs"][0]["report"]["segments"][0];
    assert_eq!((segment["adds"].as_u64(), segment["removes"].as_u64()), (Some(1), Some(1)));
    assert_eq!(project.members("members"), members);

    // Both runs are in the shared history, whichever machine asks.
    let status =
        ldsync_in(project.path(), &state_url, &["status", "members", "--output", "json"]).await;
    assert!(status.status.success(), "{}", describe(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let runs = status[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status:#}");
    assert_eq!((runs[0]["adds"].as_u64(), runs[1]["adds"].as_u64()), (Some(60), Some(1)));

    // An unreachable store is a clear error that does not show the connection string.
    let port = ldsync_test_support::free_port().unwrap();
    let dead = format!("postgres://ldsync:s3cret-pw@127.0.0.1:{port}/state");
    let output = ldsync_in(project.path(), &dead, &["run"]).await;
    assert!(!output.status.success());
    let text = describe(&output);
    assert!(text.contains("cannot open the PostgreSQL state store"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// A `serve` process whose JSON log lines are collected as they come.
struct Server {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Server {
    fn start(dir: &Path, state_url: &str) -> Self {
        let port = ldsync_test_support::free_port().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut command = tokio::process::Command::from(ldsync(
            dir,
            &[("LD_ACCESS_TOKEN", TOKEN), ("LDSYNC_STATE_URL", state_url), ("LDSYNC_LOG", "info")],
        ));
        command
            .args(["--log-format", "json", "serve", "--listen", &listen])
            .args(["--shutdown-timeout", "20s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits up to `within` for a log line with `message`; keeps every line read.
    async fn wait_for(&mut self, message: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = line["message"] == message;
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Every line logged so far.
    fn drain(&mut self) -> &[serde_json::Value] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    fn claims(&mut self) -> Vec<String> {
        self.drain()
            .iter()
            .filter(|line| line["message"] == "Claimed the scheduled run.")
            .map(|line| line["due"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Waits up to 20 s for the emulator's members to be `members`.
async fn wait_for_members(project: &Project, members: &BTreeSet<String>) {
    for _ in 0..200 {
        if project.members("members") == *members {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No two runs of the sync in the shared history overlapped in time, on either machine.
async fn assert_runs_never_overlapped(dir: &Path, state_url: &str) {
    let status =
        ldsync_in(dir, state_url, &["status", "members", "--limit", "1000", "--output", "json"])
            .await;
    assert!(status.status.success(), "{}", describe(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut runs: Vec<(chrono::DateTime<chrono::Utc>, i64)> = status[0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            let start = run["started_at"].as_str().unwrap().parse().unwrap();
            (start, run["duration_ms"].as_i64().unwrap())
        })
        .collect();
    runs.sort();
    assert!(runs.len() >= 5, "{status:#}");
    for pair in runs.windows(2) {
        let end = pair[0].0 + chrono::TimeDelta::milliseconds(pair[0].1);
        assert!(end <= pair[1].0, "runs overlapped: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_serve_processes_run_each_due_time_once_and_take_over_from_a_dead_one() {
    let (project, client, state_url) = project("schedule = \"* * * * * *\"\n").await;
    let mut members: BTreeSet<String> = (0..50).map(|i| format!("s{i}")).collect();
    set_members(&client, &members).await;
    let machine_b = other_machine(project.path());
    let mut a = Server::start(project.path(), &state_url);
    let mut b = Server::start(machine_b.path(), &state_url);

    // Both serve the sync; the members arrive, then each change does.
    for round in 0..4 {
        wait_for_members(&project, &members).await;
        assert_eq!(project.members("members"), members, "round {round}");
        members = members.iter().skip(3).cloned().collect();
        members.extend((0..5).map(|i| format!("r{round}-{i}")));
        set_members(&client, &members).await;
    }

    // A dies in the middle of a run (its query sleeps): B waits for A's lease to expire, then
    // takes the sync over.
    a.drain();
    loop {
        assert!(a.wait_for("Claimed the scheduled run.", Duration::from_secs(30)).await);
        // A claim logged just now, not one read late.
        let logged: chrono::DateTime<chrono::Utc> =
            a.seen.last().unwrap()["timestamp"].as_str().unwrap().parse().unwrap();
        if chrono::Utc::now() - logged < chrono::TimeDelta::milliseconds(100) {
            break;
        }
    }
    // The lease is taken within milliseconds of the claim; the query then sleeps 300 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let killed_at = chrono::Utc::now();
    assert!(
        b.wait_for(
            "Took the sync over: its previous holder's lease expired.",
            Duration::from_secs(30)
        )
        .await,
        "B took the sync over: {:#?}",
        b.drain()
    );
    members.insert("after-takeover".into());
    set_members(&client, &members).await;
    wait_for_members(&project, &members).await;
    assert_eq!(project.members("members"), members, "B alone keeps the mirror exact");

    let pid = b.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let ended = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await;
    assert!(ended.expect("B stopped within the shutdown bound").unwrap().success());

    // Each due time was claimed by one process only, and both took some.
    let (claims_a, claims_b) = (a.claims(), b.claims());
    let mut by_due: BTreeMap<&str, usize> = BTreeMap::new();
    for due in claims_a.iter().chain(&claims_b) {
        *by_due.entry(due).or_default() += 1;
    }
    let twice: Vec<_> = by_due.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "due times claimed twice: {twice:?}");
    assert!(!claims_a.is_empty() && !claims_b.is_empty(), "A {claims_a:?} B {claims_b:?}");
    assert!(
        claims_b
            .iter()
            .any(|due| due.parse::<chrono::DateTime<chrono::Utc>>().unwrap() > killed_at),
        "B kept running the sync after A died"
    );

    assert_runs_never_overlapped(project.path(), &state_url).await;
    // Every run's lines carry its sync and run id, in the span.
    let delivered: Vec<_> = b
        .drain()
        .iter()
        .filter(|line| line["message"] == "Segment sync delivered.")
        .cloned()
        .collect();
    assert!(!delivered.is_empty());
    for line in delivered {
        assert_eq!(line["span"]["sync"], "members", "{line:#}");
        assert_eq!(line["span"]["run_id"], line["run_id"], "{line:#}");
    }
    let logs = format!("{:?}{:?}", a.drain(), b.drain());
    assert!(!logs.contains(TOKEN));
}
