//! The journal of one sync: the plan a run promised to deliver, and what LaunchDarkly
//! acknowledged of it.
//!
//! A run writes its target snapshots into `pending/`, then the plan (`plan.json`, atomically),
//! then delivers, appending one line to `acks.log` per acknowledged batch, and finally commits:
//! each target replaces its committed snapshot (an atomic rename), then the plan goes, then the
//! rest of `pending/`. A run that finds a plan finishes it first; files without a plan (a run that
//! died before promising anything, or while clearing up) are never taken for work, and the next
//! plan starts without their acknowledgements.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use crate::{error::io, remote::Publisher, Error, Result};

const PLAN: &str = "plan.json";
const ACKS: &str = "acks.log";

/// A plan as written: the run that made it, and what the engine planned.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan<T> {
    /// The run that made the plan.
    pub run_id: String,
    /// When the plan was written (RFC 3339).
    pub created_at: String,
    /// The engine's plan.
    pub body: T,
}

/// The pending work of one sync.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    snapshots: PathBuf,
    scratch: PathBuf,
    /// The shared store each promise is published to, when the state has one.
    publisher: Option<Publisher>,
}

impl Journal {
    pub(crate) fn new(sync_dir: &Path) -> Self {
        Self {
            dir: sync_dir.join("pending"),
            snapshots: sync_dir.join("snapshots"),
            scratch: sync_dir.join("scratch"),
            publisher: None,
        }
    }

    pub(crate) fn publishing_to(mut self, publisher: Option<Publisher>) -> Self {
        self.publisher = publisher;
        self
    }

    /// Publishes the sync's folder to the shared store, if there is one: a promise is kept
    /// only once whoever takes the sync over next can read it.
    fn publish(&self) -> Result<()> {
        self.publisher.as_ref().map_or(Ok(()), Publisher::publish)
    }

    /// Where a target snapshot of the pending plan is written before the plan.
    pub fn target_path(&self, name: &str) -> Result<PathBuf> {
        let targets = self.dir.join("targets");
        create_private_dir(&targets)?;
        Ok(targets.join(format!("{}.keys", file_name(name))))
    }

    /// Writes the target called `name` of the pending plan, durably and atomically, readable by
    /// its owner only; write targets before [`Journal::begin`].
    pub fn write_target(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomically(&self.target_path(name)?, bytes)
    }

    /// A folder for one run's scratch files (keys spilled to disk), unique to this process
    /// and call; it is not created here, and the run removes it when done. Scratch files are
    /// never part of a plan: a plan keeps what it needs under its own name.
    pub fn scratch_dir(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.scratch.join(format!("{}-{call}", std::process::id()))
    }

    /// Removes the scratch folders of processes that are gone (killed mid-run); those of
    /// live processes (a `plan` running beside the run) stay.
    pub fn clear_scratch(&self) -> Result<()> {
        let entries = match fs::read_dir(&self.scratch) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io(&self.scratch)(error)),
        };
        for entry in entries {
            let path = entry.map_err(io(&self.scratch))?.path();
            let owner = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive = owner.is_some_and(|pid| {
                pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
            });
            if !alive {
                match fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io(&path)(error)),
                }
            }
        }
        Ok(())
    }

    /// Where the committed snapshot called `name` lives (it may not exist yet).
    pub fn snapshot_path(&self, name: &str) -> PathBuf {
        self.snapshots.join(format!("{}.keys", file_name(name)))
    }

    /// The folder of the committed snapshot called `name`, for a snapshot made of several
    /// files (it may not exist yet).
    pub fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.snapshots.join(file_name(name))
    }

    /// The names of the committed snapshots kept as folders.
    pub fn snapshot_dirs(&self) -> Result<Vec<String>> {
        self.snapshot_entries(|path| {
            let name = path.file_name().and_then(|name| name.to_str())?;
            path.is_dir().then(|| name.replace("%2F", "/"))
        })
    }

    /// The names of the committed snapshots.
    pub fn snapshot_names(&self) -> Result<Vec<String>> {
        self.snapshot_entries(|path| {
            let stem = path.file_stem().and_then(|stem| stem.to_str())?;
            path.extension().is_some_and(|ext| ext == "keys").then(|| stem.to_owned())
        })
    }

    /// The names `name_of` gives the entries of the snapshots folder, sorted.
    fn snapshot_entries(&self, name_of: impl Fn(&Path) -> Option<String>) -> Result<Vec<String>> {
        crate::error::list_dir(&self.snapshots, name_of)
    }

    /// The pending plan, if a run promised one and did not commit it. Reading changes
    /// nothing: `plan` and `status` may look while a run (holding the sync's lock) writes.
    /// Files in `pending/` without a plan are a run that died before promising anything; the
    /// next [`Journal::begin`] and commit clear them.
    pub fn pending<T: DeserializeOwned>(&self) -> Result<Option<Plan<T>>> {
        let path = self.dir.join(PLAN);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| Error::Corrupt {
                path,
                reason: format!("the pending plan cannot be read: {err}"),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(&path)(error)),
        }
    }

    /// Promises `plan`: from here on, a crash is repaired by finishing it. Call it holding the
    /// sync's lock, after writing the plan's targets and files.
    pub fn begin<T: Serialize>(&self, plan: &Plan<T>) -> Result<()> {
        create_private_dir(&self.dir)?;
        // Acknowledgements left by a run that died while committing belong to its plan, never
        // to this one: with the same batch ids they would mark this plan's batches delivered.
        remove_if_present(&self.dir.join(ACKS))?;
        // The targets' and files' names must be durable before the plan that promises them: a
        // plan whose target vanished would be taken for one already committed.
        for written in [self.dir.join("targets"), self.dir.join("files")] {
            if written.exists() {
                sync_dir(&written)?;
            }
        }
        sync_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(plan)
            .map_err(|err| Error::Corrupt { path: self.dir.join(PLAN), reason: err.to_string() })?;
        write_atomically(&self.dir.join(PLAN), &bytes)?;
        self.publish()
    }

    /// Records that LaunchDarkly accepted batch `id`; durable when this returns.
    pub fn acknowledge(&self, id: &str) -> Result<()> {
        self.append_acknowledgement(id, true)?;
        self.publish()
    }

    /// Records that LaunchDarkly accepted batch `id`, without waiting for the disk: for batches
    /// that are harmless to send twice (segment members), so that a crash of the machine at
    /// worst sends one again. A crash of the process loses nothing: the line is written.
    pub fn acknowledge_lazily(&self, id: &str) -> Result<()> {
        self.append_acknowledgement(id, false)
    }

    fn append_acknowledgement(&self, id: &str, durable: bool) -> Result<()> {
        let path = self.dir.join(ACKS);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // The leading newline ends a line torn by a crash, so it cannot swallow this one.
        let line = format!("\n{id} {:016x}\n", xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
        file.write_all(line.as_bytes()).map_err(io(&path))?;
        if durable {
            file.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// The batches acknowledged so far. A torn last line (a crash while writing it) is not
    /// counted: its checksum does not match.
    pub fn acknowledged(&self) -> Result<HashSet<String>> {
        let path = self.dir.join(ACKS);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(error) => return Err(io(&path)(error)),
        };
        let mut acked = HashSet::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else { continue };
            let Ok(line) = std::str::from_utf8(line) else { continue };
            if let Some((id, sum)) = line.rsplit_once(' ') {
                if format!("{:016x}", xxhash_rust::xxh3::xxh3_64(id.as_bytes())) == sum {
                    acked.insert(id.to_owned());
                }
            }
        }
        Ok(acked)
    }

    /// Commits the plan: every target named in `names` replaces its snapshot, then the pending
    /// folder goes. A target already moved (a commit interrupted half-way) is skipped.
    pub fn commit(&self, names: &[String]) -> Result<()> {
        create_private_dir(&self.snapshots)?;
        for name in names {
            let target = self.dir.join("targets").join(format!("{}.keys", file_name(name)));
            if target.exists() {
                let snapshot = self.snapshot_path(name);
                fs::rename(&target, &snapshot).map_err(io(&snapshot))?;
            }
        }
        sync_dir(&self.snapshots)?;
        self.discard()
    }

    /// Drops a commit's snapshot `name` (a segment the query no longer returns, once emptied).
    pub fn forget_snapshot(&self, name: &str) -> Result<()> {
        let path = self.snapshot_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io(&path)(error)),
        }
    }

    /// Writes `name`, a file the pending plan will refer to (such as a request body), durably
    /// and atomically; write it before [`Journal::begin`]. It goes with the plan at commit.
    pub fn write_pending(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let files = self.dir.join("files");
        create_private_dir(&files)?;
        write_atomically(&files.join(file_name(name)), bytes)?;
        self.publish()
    }

    /// Reads `name`, a file written with [`Journal::write_pending`]; `None` when it is missing.
    pub fn read_pending(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join("files").join(file_name(name));
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(&path)(error)),
        }
    }

    /// Gives up the pending plan without committing it: its target never becomes the snapshot.
    /// Safe only where delivering again is harmless (segment members): the next run diffs
    /// against the unchanged snapshot and sends every change again.
    pub fn abandon(&self) -> Result<()> {
        self.discard()
    }

    fn discard(&self) -> Result<()> {
        // The plan goes first, durably: a crash while the rest is removed leaves files without
        // a plan, which no run mistakes for work to finish.
        remove_if_present(&self.dir.join(PLAN))?;
        if self.dir.exists() {
            sync_dir(&self.dir)?;
        }
        remove_files_in_two(&self.dir.join("files"));
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io(&self.dir)(error)),
        }
    }
}

/// Removes the files of `dir` on two threads, the first half on one, the rest on this one; what
/// fails is left to the `remove_dir_all` after. Removing a file frees its pages, and a plan's
/// batch files are tens of megabytes: on one thread, half of a commit's time.
fn remove_files_in_two(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let paths: Vec<PathBuf> = entries.filter_map(|entry| Some(entry.ok()?.path())).collect();
    // A thread is worth it only for a plan of several files.
    let (first, second) = paths.split_at(if paths.len() < 8 { 0 } else { paths.len() / 2 });
    let remove = |paths: &[PathBuf]| {
        for path in paths {
            let _ = fs::remove_file(path);
        }
    };
    std::thread::scope(|scope| {
        if !first.is_empty() {
            scope.spawn(|| remove(first));
        }
        remove(second);
    });
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io(path)(error)),
    }
}

/// A name made safe as a file name (segment keys are letters, digits, `.`, `_` and `-`
/// already; the escape guards against anything else).
fn file_name(name: &str) -> String {
    name.replace('/', "%2F")
}

/// Creates a folder (and its parents) readable by its owner only, durably.
pub fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io(path))?;
    // A new folder's name lives in its parent: make it durable with the files it will hold.
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Writes a file so that a reader sees the old contents or the new, never a mix, readable by
/// its owner only and flushed to disk with its folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    fs::rename(&temporary, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Flushes a folder's entries (new, renamed and removed names) to disk.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|dir| dir.sync_all()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_of_dead_processes_is_cleared_and_of_live_ones_kept() {
        let temp = tempfile::tempdir().unwrap();
        let journal = Journal::new(temp.path());
        journal.clear_scratch().unwrap(); // nothing there yet
        let mine = journal.scratch_dir();
        assert_ne!(mine, journal.scratch_dir(), "each call has a folder of its own");
        // No process has the largest pid there is.
        let dead = temp.path().join(format!("scratch/{}-0", u32::MAX));
        for dir in [&mine, &dead] {
            fs::create_dir_all(dir.join("0")).unwrap();
            fs::write(dir.join("0/run-0.keys"), b"keys").unwrap();
        }
        journal.clear_scratch().unwrap();
        assert!(mine.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn a_plan_survives_until_committed() {
        let temp = tempfile::tempdir().unwrap();
        let journal = Journal::new(temp.path());
        assert!(journal.pending::<Vec<u32>>().unwrap().is_none());

        fs::write(journal.target_path("beta").unwrap(), b"target").unwrap();
        let plan = Plan { run_id: "r1".into(), created_at: "now".into(), body: vec![1, 2] };
        journal.begin(&plan).unwrap();
        journal.acknowledge("beta/0").unwrap();
        journal.acknowledge("beta/1").unwrap();

        let again = Journal::new(temp.path());
        assert_eq!(again.pending::<Vec<u32>>().unwrap(), Some(plan));
        let acked = again.acknowledged().unwrap();
        assert!(acked.contains("beta/0") && acked.contains("beta/1") && acked.len() == 2);

        again.commit(&["beta".to_owned()]).unwrap();
        assert_eq!(fs::read(again.snapshot_path("beta")).unwrap(), b"target");
        assert!(again.pending::<Vec<u32>>().unwrap().is_none());
        assert!(again.acknowledged().unwrap().is_empty());
        assert_eq!(again.snapshot_names().unwrap(), ["beta"]);
    }

    #[test]
    fn a_torn_acknowledgement_is_not_counted() {
        let temp = tempfile::tempdir().unwrap();
        let journal = Journal::new(temp.path());
        journal.begin(&Plan { run_id: "r".into(), created_at: "t".into(), body: () }).unwrap();
        journal.acknowledge("beta/12").unwrap();
        let acks = temp.path().join("pending").join(ACKS);
        let mut bytes = fs::read(&acks).unwrap();
        bytes.extend_from_slice(b"beta/1");
        fs::write(&acks, &bytes).unwrap();
        let acked = journal.acknowledged().unwrap();
        assert_eq!(acked.into_iter().collect::<Vec<_>>(), ["beta/12"]);
        // The next acknowledgement after the torn line still counts.
        journal.acknowledge("beta/13").unwrap();
        let mut acked: Vec<_> = journal.acknowledged().unwrap().into_iter().collect();
        acked.sort();
        assert_eq!(acked, ["beta/12", "beta/13"]);
    }

    #[test]
    fn files_without_a_plan_are_no_plan_and_a_reader_leaves_them() {
        let temp = tempfile::tempdir().unwrap();
        let journal = Journal::new(temp.path());
        fs::write(journal.target_path("beta").unwrap(), b"half").unwrap();
        assert!(journal.pending::<()>().unwrap().is_none());
        // A run may be writing them right now, under its lock: a reader must not remove them.
        assert!(journal.target_path("beta").unwrap().exists());
    }

    #[test]
    fn a_new_plan_never_inherits_acknowledgements() {
        let temp = tempfile::tempdir().unwrap();
        let journal = Journal::new(temp.path());
        journal.begin(&Plan { run_id: "old".into(), created_at: "t".into(), body: () }).unwrap();
        journal.acknowledge("beta/add/0").unwrap();
        // The old run died while committing: its plan is gone, its acknowledgements are not.
        fs::remove_file(temp.path().join("pending").join(PLAN)).unwrap();
        assert!(journal.pending::<()>().unwrap().is_none());
        journal.begin(&Plan { run_id: "new".into(), created_at: "t".into(), body: () }).unwrap();
        assert!(journal.acknowledged().unwrap().is_empty());
    }
}
