//! The chaos suite: a segment, an events and a metrics sync run together through the `ldsync`
//! binary against a throwaway PostgreSQL and the emulator, while everything that can go wrong
//! does: kill -9 at random moments; 429 storms, 5xx bursts, resets, hangs and slow bodies from
//! LaunchDarkly; PostgreSQL killed and restarted, or its sessions terminated mid-query; a full
//! disk under the state folder; a damaged snapshot between runs.
//!
//! After each seed's faults stop, one clean run (a backfill where a damaged snapshot was
//! refused) must leave the emulator holding exactly the warehouse's truth: every member, every
//! event once, every metric definition. Each seed prints what it did, so a failure can be
//! replayed with `CHAOS_SEEDS=1 CHAOS_FIRST_SEED=N`. `make test` runs 50 seeds;
//! `make chaos SEEDS=500` a long run.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use ldsync_emulator::FaultSpec;
use ldsync_test_support::PostgresServer;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{
    describe,
    segments::{assert_success, Project},
};

const SEGMENT: &str = r#"[segment]
key = "chaos-members"
batch_size = 40
import_threshold = 1000000
max_removal_ratio = 1.0
query = "select id as context_key from members where active"
"#;

const EVENTS: &str = r#"[metric_events]
lookback = "2h"
initial_cursor = "2026-01-01T00:00:00Z"
batch_size = 60
query = """
select id as event_id, 'chaos-event' as event_key, user_id as context_key,
       value as metric_value, at as occurred_at
from events where at >= $1
"""
"#;

const METRICS: &str = r#"[metrics]
query = "select key, name, 'custom' as kind, event_key, false as is_numeric from defs"
"#;

/// A tmpfs mounted under the project for its state, so that a seed can fill the disk; unmounted
/// when dropped. `None` where mounting is not allowed (not root, or a container without it).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self { path: path.to_path_buf() })
    }

    /// Fills the disk but for `room` bytes.
    fn fill(&self, room: u64) {
        use std::io::Write as _;

        let ballast = self.path.join("ballast");
        let _ = std::fs::write(&ballast, b"");
        let stat = free_bytes(&self.path);
        let size = stat.saturating_sub(room);
        let file = std::fs::OpenOptions::new().write(true).open(&ballast).unwrap();
        // Written, not merely sized: a tmpfs counts the pages a file really holds.
        let chunk = vec![0_u8; 1 << 20];
        let mut left = size;
        let mut writer = std::io::BufWriter::new(file);
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            #[expect(clippy::cast_possible_truncation, reason = "at most a MiB")]
            if writer.write_all(&chunk[..n as usize]).is_err() {
                break;
            }
            left -= n;
        }
        let _ = writer.into_inner();
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.path.join("ballast"));
    }
}

/// Free bytes on the file system holding `path`, from `df`.
fn free_bytes(path: &Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The warehouse's truth, as the checks compare it with the emulator.
struct Truth {
    members: BTreeSet<String>,
    events: BTreeSet<(String, i64)>,
    names: BTreeMap<String, String>,
}

struct Chaos {
    server: std::sync::Arc<PostgresServer>,
    db: String,
    project: Project,
    disk: Option<SmallDisk>,
    next_event: u64,
    next_member: u64,
}

impl Chaos {
    async fn new() -> Self {
        // A server of its own: the suite kills and restarts it.
        let server = std::sync::Arc::new(PostgresServer::start().unwrap());
        let db = server.create_unique_database("chaos").await.unwrap();
        let client = server.connect_to(&db).await.unwrap();
        client
            .batch_execute(
                "create table members (id text, active bool);
                 insert into members select 'member-' || i, true from generate_series(1, 300) i;
                 create table events (id text, user_id text, value float8, at timestamptz);
                 create table defs (key text, name text, event_key text);
                 insert into defs select 'chaos-metric-' || i, 'Metric ' || i, 'chaos-event-' || i from generate_series(1, 6) i;",
            )
            .await
            .unwrap();
        let url = server.url_for(&db);
        let project = Project::with_sync(
            &format!("postgres = \"{url}\"\nstatement_timeout = \"20s\""),
            "members",
            SEGMENT,
        )
        .await;
        for (name, body) in [("events", EVENTS), ("definitions", METRICS)] {
            std::fs::write(
                project.path().join(format!("syncs/{name}.toml")),
                format!("warehouse = \"w\"\nenvironment = \"e\"\n\n{body}"),
            )
            .unwrap();
        }
        // The state lives on a small disk of its own where the machine allows mounting one.
        let disk = SmallDisk::mount(&project.path().join("state"));
        if disk.is_some() {
            let config = project.path().join("ldsync.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, format!("[state]\npath = \"state/ldsync\"\n\n{text}")).unwrap();
        } else {
            eprintln!("chaos: cannot mount a tmpfs here; the full-disk fault is left out");
        }
        Self { server, db, project, disk, next_event: 0, next_member: 301 }
    }

    /// Runs `ldsync ARGS`; a run still going after `limit` is killed (`None`).
    /// A killed run is waited for: until it has exited it still holds its sync's lock, and
    /// the next run would be told the sync is running.
    async fn run_within(&self, args: &[&str], limit: Duration) -> Option<Output> {
        use tokio::io::AsyncReadExt as _;
        let mut command =
            crate::ldsync(self.project.path(), &[("LD_ACCESS_TOKEN", crate::segments::TOKEN)]);
        command.args(args);
        let mut command = tokio::process::Command::from(command);
        command
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let finished = tokio::time::timeout(limit, async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            let status = child.wait().await.unwrap();
            Output { status, stdout: out, stderr: err }
        })
        .await;
        if finished.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        finished.ok()
    }

    async fn sql(&self, sql: &str) {
        let client = self.server.connect_to(&self.db).await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }

    /// Random changes to all three objects' data.
    async fn change(&mut self, rng: &mut SmallRng) {
        let leave = rng.random_range(0..15);
        let join = rng.random_range(0..15);
        let first = self.next_member;
        self.next_member += join;
        let events = rng.random_range(20..120);
        let first_event = self.next_event;
        self.next_event += events;
        let renamed = rng.random_range(1..=6);
        self.sql(&format!(
            "update members set active = false where id in (select id from members where active order by random() limit {leave});
             insert into members select 'member-' || i, true from generate_series({first}, {}) i;
             insert into events select 'e' || i, 'u' || i, i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
               from generate_series({first_event}, {}) i;
             update defs set name = 'Metric {renamed} at event {first_event}' where key = 'chaos-metric-{renamed}';",
            first + join - 1,
            first_event + events - 1,
        ))
        .await;
    }

    async fn truth(&self) -> Truth {
        let client = self.server.connect_to(&self.db).await.unwrap();
        let members = client
            .query("select id from members where active", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        let events = client
            .query("select user_id, (extract(epoch from at) * 1000)::int8 from events", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect();
        let names = client
            .query("select key, name from defs", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
            .collect();
        Truth { members, events, names }
    }

    /// Checks the emulator against the warehouse.
    async fn check(&self, seed: u64) {
        let truth = self.truth().await;
        assert_eq!(self.project.members("chaos-members"), truth.members, "seed {seed}: members");
        let snapshot = self.project.emulator.snapshot();
        let mut stored: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for event in snapshot.events_in("default", "production") {
            let user = event["contextKeys"]["user"].as_str().unwrap().to_owned();
            let at = event["creationDate"].as_i64().unwrap();
            *stored.entry((user, at)).or_insert(0) += 1;
        }
        let twice: Vec<_> = stored.iter().filter(|(_, &n)| n > 1).collect();
        assert!(twice.is_empty(), "seed {seed}: events stored twice: {twice:?}");
        let stored: BTreeSet<_> = stored.into_keys().collect();
        assert_eq!(stored.len(), truth.events.len(), "seed {seed}: events");
        assert_eq!(stored, truth.events, "seed {seed}: events");
        for (key, name) in &truth.names {
            let metric = snapshot
                .metric("default", key)
                .unwrap_or_else(|| panic!("seed {seed}: metric {key} missing"));
            assert_eq!(metric["name"], name.as_str(), "seed {seed}: metric {key}");
        }
    }

    fn snapshot_files(&self) -> Vec<PathBuf> {
        let root = if self.disk.is_some() {
            self.project.path().join("state/ldsync")
        } else {
            self.project.path().join(".ldsync")
        };
        let dir = root.join("syncs/members/snapshots/chaos-members");
        // Only the files the manifest names: a leftover of an interrupted commit is unused.
        let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) else {
            return Vec::new();
        };
        let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut files = Vec::new();
        if let Some(generation) = manifest["base"].as_u64() {
            files.push(dir.join(format!("base-{generation}.keys")));
        }
        if let Some(generation) = manifest["delta"].as_u64() {
            files.push(dir.join(format!("adds-{generation}.keys")));
            files.push(dir.join(format!("removes-{generation}.keys")));
        }
        files
    }
}

/// The LaunchDarkly faults of one seed.
fn faults(rng: &mut SmallRng) -> Vec<FaultSpec> {
    let menu = [
        "500@rate=0.15",
        "503@rate=0.15",
        "502@rate=0.1",
        "reset@rate=0.1",
        "hang@rate=0.02",
        "trickle@rate=0.1",
    ];
    menu.iter().filter(|_| rng.random_bool(0.4)).map(|spec| spec.parse().unwrap()).collect()
}

fn seeds() -> std::ops::Range<u64> {
    let count = std::env::var("CHAOS_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let first = std::env::var("CHAOS_FIRST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    first..first + count
}

/// One fault while a run goes on, chosen by `rng`; says what it did.
async fn one_fault(chaos: &Chaos, rng: &mut SmallRng, seed: u64) -> String {
    match rng.random_range(0..10) {
        0 | 1 => {
            // PostgreSQL killed and restarted while the run goes on.
            let delay = rng.random_range(0..300);
            let server = std::sync::Arc::clone(&chaos.server);
            let restart = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(delay));
                server.restart_immediate().unwrap();
            });
            let output = chaos.run_within(&["run"], Duration::from_secs(3)).await;
            restart.await.unwrap();
            format!("postgres restarted after {delay} ms, run {}", outcome(output.as_ref()))
        }
        2 => {
            // Sessions terminated while the run queries.
            let url = chaos.server.url_for(&chaos.db);
            let delay = rng.random_range(0..200);
            let killer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and datname = current_database()")
                        .await;
                }
            });
            let output = chaos.run_within(&["run"], Duration::from_secs(3)).await;
            let _ = killer.await;
            format!("sessions terminated after {delay} ms, run {}", outcome(output.as_ref()))
        }
        3 if chaos.disk.is_some() => {
            let room = rng.random_range(0..64) * 1024;
            let disk = chaos.disk.as_ref().unwrap();
            disk.fill(room);
            let output = chaos.run_within(&["run"], Duration::from_secs(3)).await;
            disk.empty();
            if let Some(output) = &output {
                assert!(
                    output.status.code() != Some(101),
                    "seed {seed}: a full disk made ldsync panic\n{}",
                    describe(output)
                );
            }
            format!("disk full but {room} bytes, run {}", outcome(output.as_ref()))
        }
        _ => {
            let delay = Duration::from_millis(rng.random_range(0..700));
            let killed = chaos.project.run_killed_after(&["run"], delay).await;
            format!("{} after {delay:?}", if killed { "kill -9" } else { "ran" })
        }
    }
}

fn outcome(output: Option<&Output>) -> &'static str {
    match output {
        None => "killed after 3 s",
        Some(output) if output.status.success() => "succeeded",
        Some(_) => "failed cleanly",
    }
}

fn failed_with(output: &Output, words: &str) -> bool {
    !output.status.success() && String::from_utf8_lossy(&output.stderr).contains(words)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_once_then_one_clean_run_holds_the_truth() {
    let started = Instant::now();
    let mut chaos = Chaos::new().await;
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in seeds() {
        let mut rng = SmallRng::seed_from_u64(seed);
        chaos.change(&mut rng).await;
        let faults = faults(&mut rng);
        let mut described: Vec<String> = faults.iter().map(ToString::to_string).collect();
        chaos.project.emulator.set_faults_with_seed(faults, seed);
        // 429 storms: a tight limit, with or without the headers that let the client pace.
        if rng.random_bool(0.4) {
            let limit = ["global=6/1s", "global=4/1s,no-headers"][rng.random_range(0..2)];
            chaos.project.emulator.set_rate_limits(vec![limit.parse().unwrap()]);
            described.push(format!("429s over {limit}"));
        }
        let mut did = vec![format!("faults [{}]", described.join(", "))];
        for _ in 0..rng.random_range(1..=2) {
            did.push(one_fault(&chaos, &mut rng, seed).await);
        }
        chaos.project.emulator.set_faults(Vec::new());
        chaos.project.emulator.set_rate_limits(Vec::new());
        // A damaged snapshot is refused with the file's name; a backfill repairs it.
        if rng.random_bool(0.1) {
            let files = chaos.snapshot_files();
            if !files.is_empty() {
                let file = &files[rng.random_range(0..files.len())];
                let mut bytes = std::fs::read(file).unwrap();
                let at = rng.random_range(0..bytes.len());
                // A flipped bit, or a file cut short.
                let damage = if rng.random_bool(0.5) {
                    bytes[at] ^= 0x40;
                    format!("byte {at} flipped")
                } else {
                    bytes.truncate(at);
                    format!("cut to {at} bytes")
                };
                std::fs::write(file, &bytes).unwrap();
                let output = chaos.project.ldsync(&["run", "members"]).await;
                assert!(
                    failed_with(&output, "corrupt"),
                    "seed {seed}: a damaged snapshot was used\n{}",
                    describe(&output)
                );
                assert!(
                    String::from_utf8_lossy(&output.stderr)
                        .contains(&*file.file_name().unwrap().to_string_lossy()),
                    "seed {seed}: the error names the file\n{}",
                    describe(&output)
                );
                assert_success(&chaos.project.ldsync(&["backfill", "members"]).await);
                did.push(format!(
                    "damaged {} ({damage}), refused, backfilled",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        let output = chaos.project.ldsync(&["run"]).await;
        assert!(
            output.status.success(),
            "seed {seed} ({}): the clean run failed\n{}",
            did.join("; "),
            describe(&output)
        );
        chaos.check(seed).await;
        for step in &did {
            let kind = step.split_whitespace().next().unwrap_or("");
            *tally
                .entry(match kind {
                    "faults" => "seeds",
                    "postgres" => "postgres restarts",
                    "sessions" => "sessions terminated",
                    "disk" => "full disks",
                    "kill" => "kill -9",
                    "damaged" => "damaged snapshots",
                    _ => "runs left alone",
                })
                .or_default() += 1;
        }
        eprintln!("chaos seed {seed}: {}", did.join("; "));
    }
    let stats = chaos.project.emulator.stats();
    eprintln!(
        "chaos: {} seeds in {:.0?}: {tally:?}; the emulator answered {} requests, {} rate-limited, {} faults injected",
        seeds().count(),
        started.elapsed(),
        stats.requests,
        stats.rate_limited,
        stats.faults_injected
    );
}
