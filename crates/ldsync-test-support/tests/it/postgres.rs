//! The throwaway PostgreSQL server, started for real.

use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ldsync_test_support::postgres::{self, PostgresServer};

/// Set in the child process of `shared_server_is_cleaned_up_when_the_process_exits`: the file to
/// write the shared server's data directory and port to.
const CHILD_REPORT_ENV: &str = "LDSYNC_TEST_SUPPORT_CHILD_REPORT";

fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn starts_answers_queries_and_cleans_up_on_drop() {
    let started = Instant::now();
    let server = PostgresServer::start().unwrap();
    // A measurement, not an assertion: tests never judge time.
    eprintln!("PostgreSQL started in {:?}", started.elapsed());
    assert_eq!(server.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", server.port()));
    assert!(server.bin_dir().join("pg_ctl").is_file());

    let client = server.connect().await.unwrap();
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    client
        .batch_execute(
            "create table accounts (id bigint primary key, plan text not null);
             insert into accounts values (1, 'free'), (2, 'pro'), (3, 'pro');",
        )
        .await
        .unwrap();
    let rows = client
        .query("select id, plan from accounts where plan = $1 order by id", &[&"pro"])
        .await
        .unwrap();
    let read: Vec<(i64, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(read, [(2, "pro".to_owned()), (3, "pro".to_owned())]);
    let encoding: String = client.query_one("show server_encoding", &[]).await.unwrap().get(0);
    assert_eq!(encoding, "UTF8");

    let data_dir = server.data_dir().to_path_buf();
    let port = server.port();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(client);
    drop(server);
    assert!(!data_dir.exists(), "`{}` still exists", data_dir.display());
    assert!(!data_dir.parent().unwrap().exists());
    assert!(!accepts_tcp(port), "port {port} still accepts connections");
}

#[test]
fn starts_from_a_synchronous_test_and_runs_unprivileged() {
    let server = PostgresServer::start().unwrap();
    assert!(accepts_tcp(server.port()));
    let pid_file = server.data_dir().join("postmaster.pid");
    assert_ne!(std::fs::metadata(pid_file).unwrap().uid(), 0, "the server runs as root");
}

#[tokio::test]
async fn creates_databases() {
    let server = PostgresServer::start().unwrap();
    server.create_database("orders").await.unwrap();
    let client = server.connect_to("orders").await.unwrap();
    let name: String = client.query_one("select current_database()", &[]).await.unwrap().get(0);
    assert_eq!(name, "orders");

    let error = server.create_database("Bad-Name").await.unwrap_err();
    assert!(error.to_string().contains("invalid database name `Bad-Name`"), "{error}");
}

#[tokio::test]
async fn shared_returns_one_server_with_a_database_per_test() {
    let first = postgres::shared();
    let second = postgres::shared();
    assert!(std::ptr::eq(first, second));

    let a = first.create_unique_database("shared").await.unwrap();
    let b = second.create_unique_database("shared").await.unwrap();
    assert_ne!(a, b);
    let client = first.connect_to(&a).await.unwrap();
    client.batch_execute("create table t (x int); insert into t values (7)").await.unwrap();
    let x: i32 = client.query_one("select x from t", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);
    let other = first.connect_to(&b).await.unwrap();
    assert!(other.query("select x from t", &[]).await.is_err(), "databases are not separate");
}

#[tokio::test]
async fn restart_immediate_breaks_connections_and_keeps_committed_data() {
    let server = PostgresServer::start().unwrap();
    let before = server.connect().await.unwrap();
    before.batch_execute("create table kept (x int); insert into kept values (42)").await.unwrap();

    server.restart_immediate().unwrap();

    assert!(before.query("select 1", &[]).await.is_err(), "the old connection survived");
    let after = server.connect().await.unwrap();
    let x: i32 = after.query_one("select x from kept", &[]).await.unwrap().get(0);
    assert_eq!(x, 42);
}

#[tokio::test]
async fn stop_then_start_again() {
    let server = PostgresServer::start().unwrap();
    server.stop().unwrap();
    assert!(!accepts_tcp(server.port()));
    assert!(server.connect().await.is_err());
    server.start_again().unwrap();
    let client = server.connect().await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
}

/// Runs this binary again with only `shared_server_child_process`, which starts the shared
/// server and exits without dropping it; the watchdog must then stop it and delete its files.
#[test]
fn shared_server_is_cleaned_up_when_the_process_exits() {
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report");
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["postgres::shared_server_child_process", "--exact", "--ignored", "--quiet"])
        .env(CHILD_REPORT_ENV, &report)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child process failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let text = std::fs::read_to_string(&report).unwrap();
    let (data_dir, port) = text.trim().split_once('\n').unwrap();
    let data_dir = PathBuf::from(data_dir);
    let port: u16 = port.parse().unwrap();
    wait_until("the shared server has stopped", Duration::from_secs(30), || !accepts_tcp(port));
    wait_until("the shared server's directory is gone", Duration::from_secs(30), || {
        !Path::new(&data_dir).exists()
    });
}

#[test]
#[ignore = "run by `shared_server_is_cleaned_up_when_the_process_exits` in a child process"]
fn shared_server_child_process() {
    let Some(report) = std::env::var_os(CHILD_REPORT_ENV) else { return };
    let server = postgres::shared();
    assert!(accepts_tcp(server.port()));
    let text = format!("{}\n{}\n", server.data_dir().display(), server.port());
    std::fs::write(report, text).unwrap();
}
