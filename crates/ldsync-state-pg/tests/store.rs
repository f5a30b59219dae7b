//! The shared state store against a throwaway PostgreSQL: leases, fencing, publishing and
//! checking out sync folders, schedule claims, and the schema's version check.

use std::{fs, path::Path, sync::Arc, time::Duration};

use chrono::{TimeZone, Utc};
use ldsync_core::SyncName;
use ldsync_state::{Error, Remote, StateDir};
use ldsync_state_pg::{PgStateStore, StoreOptions};

/// A new database on the shared test server, and its connection string.
async fn database(prefix: &str) -> (String, String) {
    let server = ldsync_test_support::postgres::shared();
    let db = server.create_unique_database(prefix).await.unwrap();
    let url = server.url_for(&db);
    (db, url)
}

fn options() -> StoreOptions {
    // Small pieces, so that files span several.
    StoreOptions { chunk_bytes: 1000, ..StoreOptions::default() }
}

fn sync(name: &str) -> SyncName {
    name.parse().unwrap()
}

/// Every file under `dir` but the lock, with its contents, for comparisons.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ldsync_state::shared_files(dir)
        .unwrap()
        .into_iter()
        .map(|path| {
            let bytes = fs::read(dir.join(&path)).unwrap();
            (path, bytes)
        })
        .collect()
}

/// Ends a lease now, as if its holder had died without renewing it.
async fn expire(db: &str, name: &str) {
    let client = ldsync_test_support::postgres::shared().connect_to(db).await.unwrap();
    let ended = client
        .execute(
            "update ldsync.leases set expires_at = now() - interval '1 second' where sync = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(ended, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_a_lost_lease_stops_publishing() {
    let (db, url) = database("leases").await;
    let first = PgStateStore::connect(&url, options()).unwrap();
    let second = PgStateStore::connect(&url, options()).unwrap();
    let beta = sync("beta");
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("runs.jsonl"), b"{}\n").unwrap();

    first.acquire(&beta).unwrap();
    let refused = second.acquire(&beta).unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, Error::Locked { .. }), "{message}");
    assert!(message.contains(first.holder()), "the holder is named: {message}");
    assert!(message.contains("lease in the shared state store runs until"), "{message}");
    first.publish(&beta, work.path()).unwrap();

    // Another sync is free meanwhile.
    second.acquire(&sync("gamma")).unwrap();

    // The first holder stops renewing (it hangs, or its machine is cut off): once the lease
    // expires, the second takes over, and the first may no longer write.
    expire(&db, "beta").await;
    second.acquire(&beta).unwrap();
    fs::write(work.path().join("runs.jsonl"), b"{}\n{}\n").unwrap();
    let fenced = first.publish(&beta, work.path()).unwrap_err();
    assert!(matches!(fenced, Error::LeaseLost { .. }), "{fenced}");

    // What the second holder sees is what the first published before it lost the lease.
    let seen = tempfile::tempdir().unwrap();
    second.check_out(&beta, seen.path()).unwrap();
    assert_eq!(contents(seen.path()), [("runs.jsonl".to_owned(), b"{}\n".to_vec())]);

    // Given back, the lease is free at once.
    second.release(&beta);
    first.acquire(&beta).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_published_is_checked_out_exactly() {
    let (_db, url) = database("files").await;
    let writer = PgStateStore::connect(&url, options()).unwrap();
    let reader = PgStateStore::connect(&url, options()).unwrap();
    let beta = sync("beta");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    fs::create_dir_all(dir.join("snapshots/beta")).unwrap();
    fs::create_dir_all(dir.join("pending/files")).unwrap();
    let large: Vec<u8> = (0..10_000u32).flat_map(u32::to_le_bytes).collect();
    fs::write(dir.join("snapshots/beta/base-1.keys"), &large).unwrap();
    fs::write(dir.join("snapshots/beta/manifest.json"), b"{\"base\":1}").unwrap();
    fs::write(dir.join("pending/files/empty"), b"").unwrap();
    fs::write(dir.join("lock"), b"pid 1").unwrap();
    fs::write(dir.join("pending/plan.tmp"), b"half-written").unwrap();

    writer.acquire(&beta).unwrap();
    writer.publish(&beta, dir).unwrap();
    let copy = tempfile::tempdir().unwrap();
    fs::write(copy.path().join("stale.json"), b"left by someone").unwrap();
    reader.check_out(&beta, copy.path()).unwrap();
    assert_eq!(contents(copy.path()), contents(dir));
    assert!(!copy.path().join("lock").exists() && !copy.path().join("stale.json").exists());
    assert_eq!(contents(dir).len(), 3, "the lock and the temporary file stay local");

    // Changes, removals and additions all arrive; unchanged files are not sent again.
    fs::remove_file(dir.join("pending/files/empty")).unwrap();
    fs::write(dir.join("snapshots/beta/manifest.json"), b"{\"base\":2}").unwrap();
    fs::write(dir.join("snapshots/beta/base-2.keys"), &large[..4_321]).unwrap();
    writer.publish(&beta, dir).unwrap();
    reader.check_out(&beta, copy.path()).unwrap();
    assert_eq!(contents(copy.path()), contents(dir));

    // Another sync's folder is its own.
    let other = tempfile::tempdir().unwrap();
    reader.check_out(&sync("gamma"), other.path()).unwrap();
    assert!(contents(other.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn state_folders_share_runs_through_the_store() {
    let (_db, url) = database("dirs").await;
    let beta = sync("beta");
    let here: Arc<dyn Remote> = Arc::new(PgStateStore::connect(&url, options()).unwrap());
    let there: Arc<dyn Remote> = Arc::new(PgStateStore::connect(&url, options()).unwrap());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let machine_a = StateDir::open(a.path().join("cache")).unwrap().with_remote(here);
    let machine_b = StateDir::open(b.path().join("cache")).unwrap().with_remote(there);

    let lock = machine_a.lock_sync(&beta).unwrap();
    let journal = machine_a.journal(&beta).unwrap();
    journal.write_target("beta", b"members").unwrap();
    let plan = ldsync_state::Plan { run_id: "r1".into(), created_at: "t".into(), body: 7 };
    journal.begin(&plan).unwrap();
    // The other machine cannot run the sync meanwhile.
    let refused = machine_b.lock_sync(&beta).unwrap_err();
    assert!(matches!(refused, Error::Locked { .. }), "{refused}");
    drop(lock);

    // The promise reached the store: the other machine finishes it.
    let _lock = machine_b.lock_sync(&beta).unwrap();
    let pending = machine_b.journal(&beta).unwrap().pending::<u32>().unwrap();
    assert_eq!(pending, Some(plan));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_due_time_is_claimed_once() {
    let (_db, url) = database("claims").await;
    let first = PgStateStore::connect(&url, options()).unwrap();
    let second = PgStateStore::connect(&url, options()).unwrap();
    let beta = sync("beta");
    let at = |second: u32| Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, second).unwrap();
    assert!(first.claim(&beta, at(1)).unwrap());
    assert!(!second.claim(&beta, at(1)).unwrap());
    assert!(second.claim(&beta, at(2)).unwrap());
    assert!(!first.claim(&beta, at(2)).unwrap());
    assert!(!first.claim(&beta, at(1)).unwrap(), "an earlier time is never run again");
    assert!(first.claim(&sync("gamma"), at(1)).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let (db, url) = database("schema").await;
    // Processes starting together create the schema once.
    let connecting: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStateStore::connect(&url, options()).map(|_| ()))
        })
        .collect();
    for handle in connecting {
        handle.join().unwrap().unwrap();
    }
    let client = ldsync_test_support::postgres::shared().connect_to(&db).await.unwrap();
    let version: String = client
        .query_one("select value from ldsync.meta where key = 'schema_version'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, ldsync_state_pg::SCHEMA_VERSION.to_string());

    client
        .execute("update ldsync.meta set value = '99' where key = 'schema_version'", &[])
        .await
        .unwrap();
    let refused = PgStateStore::connect(&url, options()).unwrap_err().to_string();
    assert!(refused.contains("schema is version 99, newer than this ldsync's 1"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_is_a_clear_error_without_the_password() {
    let port = ldsync_test_support::free_port().unwrap();
    let url = format!("postgres://ldsync:hunter2-secret@127.0.0.1:{port}/state");
    let options = StoreOptions { timeout: Duration::from_secs(5), ..options() };
    let error = PgStateStore::connect(&url, options).unwrap_err().to_string();
    assert!(error.starts_with("the shared state store could not connect"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}
