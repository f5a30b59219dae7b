//! The shared state store of ldsync, in PostgreSQL (`[state] url`).
//!
//! Several `ldsync` processes, on several machines, share one store. It keeps:
//!
//! - **each sync's files** (`ldsync.files` and `ldsync.chunks`): the same folder the embedded
//!   store keeps, published as a whole in one transaction. A process works on a local copy of
//!   the folder and publishes it at every promise the journal makes (see
//!   [`ldsync_state::Remote`]), so the shared copy is always a state a crash could have left;
//! - **leases** (`ldsync.leases`): a process runs a sync only while it holds its lease, renews
//!   it in the background, and publishes only if it still holds it. A lease that is not renewed
//!   expires (after `[state] lease`, 60 s by default), and another process may take the sync
//!   over and finish what the dead one promised. Expiry is judged by the database's clock, so
//!   the machines' clocks do not matter;
//! - **schedule claims** (`ldsync.slots`): for each sync, the latest scheduled time a process
//!   claimed, so that of several `ldsync serve` processes exactly one runs each due time.
//!
//! ldsync creates the schema `ldsync` and migrates it itself, under an advisory lock, and
//! refuses a schema newer than it knows.
//!
//! The store is blocking (the journal and the lock it serves are): its calls go to one thread
//! that owns the connection, reconnects when it was lost, and bounds every call in time.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, Instant, SystemTime},
};

use chrono::{DateTime, Utc};
use ldsync_core::SyncName;
use ldsync_pgtls::PgConnect;
use ldsync_state::{create_private_dir, shared_files, write_atomically, Error, Remote, Result};
use tokio_postgres::{types::ToSql, Client};

mod schema;

pub use schema::SCHEMA_VERSION;

/// How a store behaves; [`StoreOptions::default`] is what `[state] url` uses unless told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a lease lasts without renewal; it is renewed every third of this.
    pub lease: Duration,
    /// The longest any one call to the database may take.
    pub timeout: Duration,
    /// The size of the pieces a file is stored in (PostgreSQL's `bytea` holds at most 1 GB).
    pub chunk_bytes: usize,
}

impl Default for StoreOptions {
    /// A 60 s lease, 120 s per call, files in 32 MiB pieces.
    fn default() -> Self {
        Self {
            lease: Duration::from_mins(1),
            timeout: Duration::from_mins(2),
            chunk_bytes: 32 << 20,
        }
    }
}

/// A connection to the shared state store; cheap to share behind an `Arc`.
pub struct PgStateStore {
    jobs: mpsc::Sender<Job>,
    holder: String,
    options: StoreOptions,
}

impl fmt::Debug for PgStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string stays out: it may hold a password.
        f.debug_struct("PgStateStore")
            .field("holder", &self.holder)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

impl PgStateStore {
    /// Connects to the store at `url` (a URL or `key=value` pairs, with libpq's `sslmode`),
    /// creating or migrating its schema; blocks until connected.
    pub fn connect(url: &str, options: StoreOptions) -> Result<Self> {
        let connect = ldsync_pgtls::parse(url).map_err(|err| Error::Shared {
            operation: "read its connection string".into(),
            // The parser's messages name parameters, never the string itself.
            message: ldsync_core::error_chain(&err),
        })?;
        let holder = holder_name();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::sync_channel(1);
        let worker_holder = holder.clone();
        std::thread::Builder::new()
            .name("ldsync-state-pg".into())
            .spawn(move || {
                let worker = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| shared("start its thread", &err))
                    .map(|runtime| Worker::new(runtime, connect, worker_holder, options))
                    .and_then(|mut worker| worker.migrate().map(|()| worker));
                match worker {
                    Ok(worker) => {
                        let _ = ready.send(Ok(()));
                        worker.serve(&queue);
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                    }
                }
            })
            .map_err(|err| shared("start its thread", &err))?;
        started.recv().map_err(|_| gone())??;
        Ok(Self { jobs, holder, options })
    }

    /// Who this process is, as leases and claims name it: `pid N on HOST since T`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The options the store was opened with.
    pub fn options(&self) -> StoreOptions {
        self.options
    }

    /// Claims the run of `sync` due at `due` for this process: `true` when no process claimed
    /// that time (or a later one) before. Of several `serve` processes, exactly one gets each.
    pub fn claim(&self, sync: &SyncName, due: DateTime<Utc>) -> Result<bool> {
        let sync = sync.to_string();
        self.call(move |worker| worker.claim(&sync, due))
    }

    /// Runs `job` on the store's thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |worker| {
                let _ = reply.send(job(worker));
            }))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Remote for PgStateStore {
    fn acquire(&self, sync: &SyncName) -> Result<()> {
        let sync = sync.clone();
        self.call(move |worker| worker.acquire(&sync))
    }

    fn check_out(&self, sync: &SyncName, dir: &Path) -> Result<()> {
        let (sync, dir) = (sync.clone(), dir.to_path_buf());
        self.call(move |worker| worker.check_out(&sync, &dir))
    }

    fn publish(&self, sync: &SyncName, dir: &Path) -> Result<()> {
        let (sync, dir) = (sync.clone(), dir.to_path_buf());
        self.call(move |worker| worker.publish(&sync, &dir))
    }

    fn release(&self, sync: &SyncName) {
        let sync = sync.clone();
        if let Err(error) = self.call(move |worker| worker.release(&sync)) {
            // The lease expires on its own; another process waits at most that long.
            tracing::warn!(error = %ldsync_core::error_chain(&error), "Could not give a lease back.");
        }
    }
}

/// The thread that owns the connection, the leases held and what was published.
struct Worker {
    runtime: tokio::runtime::Runtime,
    connect: PgConnect,
    client: Option<Arc<Client>>,
    holder: String,
    options: StoreOptions,
    /// The token of each lease this process holds, by sync.
    leases: HashMap<SyncName, String>,
    /// The shared copy of each sync whose lease is held, as last checked out or published:
    /// each file's hash, by path.
    known: HashMap<SyncName, BTreeMap<String, [u8; 16]>>,
    /// The hash of each local file, with what it was computed from.
    stamps: HashMap<PathBuf, Stamp>,
}

/// A local file's hash and the metadata it was computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
    hash: [u8; 16],
}

impl Worker {
    fn new(
        runtime: tokio::runtime::Runtime,
        connect: PgConnect,
        holder: String,
        options: StoreOptions,
    ) -> Self {
        Self {
            runtime,
            connect,
            client: None,
            holder,
            options,
            leases: HashMap::new(),
            known: HashMap::new(),
            stamps: HashMap::new(),
        }
    }

    /// Answers jobs until the store is dropped, renewing the leases held on the way.
    fn serve(mut self, queue: &mpsc::Receiver<Job>) {
        let every = self.options.lease / 3;
        let mut renew_at = Instant::now() + every;
        loop {
            match queue.recv_timeout(renew_at.saturating_duration_since(Instant::now())) {
                Ok(job) => job(&mut self),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= renew_at {
                self.renew();
                renew_at = Instant::now() + every;
            }
        }
        for sync in self.leases.keys().cloned().collect::<Vec<_>>() {
            let _ = self.release(&sync);
        }
    }

    /// Runs `op` on the connection (connecting first when needed), within the call timeout,
    /// in a transaction when `transaction`; retried once on a new connection when the old one
    /// was lost (the server restarted, say).
    fn run<T, F, Fut>(&mut self, operation: &str, transaction: bool, op: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = self.client(operation)?;
            let timeout = self.options.timeout;
            let result = self.runtime.block_on(async {
                let work = async {
                    if transaction {
                        client.batch_execute("begin").await?;
                    }
                    let value = op(Arc::clone(&client)).await?;
                    if transaction {
                        client.batch_execute("commit").await?;
                    }
                    Ok(value)
                };
                match tokio::time::timeout(timeout, work).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::TimedOut),
                }
            });
            match result {
                Ok(value) => return Ok(value),
                Err(Failure::Db(error)) if error.is_closed() && attempt == 1 => {
                    tracing::warn!(operation, "The state store connection was lost; reconnecting.");
                    self.client = None;
                }
                Err(failure) => {
                    // A transaction left open (or a connection in doubt) is never reused.
                    self.client = None;
                    return Err(failure.into_error(operation));
                }
            }
        }
    }

    fn client(&mut self, operation: &str) -> Result<Arc<Client>> {
        if let Some(client) = self.client.as_ref().filter(|client| !client.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let timeout = self.options.timeout;
        let connect = &self.connect;
        let connected = self.runtime.block_on(async {
            tokio::time::timeout(timeout, connect.connect())
                .await
                .map_err(|_| Failure::TimedOut)?
                .map_err(Failure::Db)
        });
        let (client, connection) = connected
            .map_err(|failure| failure.into_error(&format!("connect (to {operation})")))?;
        self.runtime.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "The state store connection closed.");
            }
        });
        let client = Arc::new(client);
        self.client = Some(Arc::clone(&client));
        Ok(client)
    }

    fn migrate(&mut self) -> Result<()> {
        let found = self.run("create or migrate its schema", true, |client| async move {
            schema::migrate(&client).await
        })?;
        if let Some(from) = found.filter(|&from| from < SCHEMA_VERSION) {
            tracing::info!(from, to = SCHEMA_VERSION, "Migrated the state store's schema.");
        }
        Ok(())
    }

    fn acquire(&mut self, sync: &SyncName) -> Result<()> {
        let token = uuid::Uuid::new_v4().to_string();
        let lease_ms = millis(self.options.lease);
        let (name, holder, token_arg) = (sync.to_string(), self.holder.clone(), token.clone());
        let outcome = self.run("take a lease", true, |client| {
            let (name, holder, token) = (name.clone(), holder.clone(), token_arg.clone());
            async move {
                let before = client
                    .query_opt(
                        "select holder, expires_at <= now() from ldsync.leases where sync = $1",
                        &[&name],
                    )
                    .await?
                    .map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)));
                let inserted = client
                    .execute(
                        "insert into ldsync.leases (sync, holder, token, acquired_at, expires_at)
                         values ($1, $2, $3, now(), now() + $4 * interval '1 millisecond')
                         on conflict (sync) do update
                           set holder = excluded.holder, token = excluded.token,
                               acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                           where ldsync.leases.expires_at <= now()",
                        &[&name, &holder, &token, &lease_ms],
                    )
                    .await?;
                if inserted == 1 {
                    return Ok(Ok(before.filter(|(_, expired)| *expired).map(|(who, _)| who)));
                }
                let row = client
                    .query_one(
                        "select holder, to_char(expires_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         from ldsync.leases where sync = $1",
                        &[&name],
                    )
                    .await?;
                Ok(Err(format!(
                    "{}; its lease in the shared state store runs until {}",
                    row.get::<_, String>(0),
                    row.get::<_, String>(1)
                )))
            }
        })?;
        match outcome {
            Ok(previous) => {
                if let Some(previous) = previous {
                    tracing::warn!(
                        sync = %sync,
                        previous = %previous,
                        "Took the sync over: its previous holder's lease expired."
                    );
                }
                self.leases.insert(sync.clone(), token);
                Ok(())
            }
            Err(holder) => Err(Error::Locked { sync: sync.to_string(), holder }),
        }
    }

    fn renew(&mut self) {
        let lease_ms = millis(self.options.lease);
        for (sync, token) in self.leases.clone() {
            let name = sync.to_string();
            let renewed = self.run("renew a lease", false, |client| {
                let (name, token) = (name.clone(), token.clone());
                async move {
                    Ok(client
                        .execute(
                            "update ldsync.leases set expires_at = now() + $3 * interval '1 millisecond'
                             where sync = $1 and token = $2",
                            &[&name, &token, &lease_ms],
                        )
                        .await?)
                }
            });
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::error!(
                        sync = %sync,
                        "This process's lease on the sync expired and was taken; it stops writing the sync's state."
                    );
                    self.leases.remove(&sync);
                    self.known.remove(&sync);
                }
                // The lease may still be renewed in time on the next tick.
                Err(error) => tracing::warn!(
                    sync = %sync,
                    error = %ldsync_core::error_chain(&error),
                    "Could not renew a lease; trying again."
                ),
            }
        }
    }

    fn release(&mut self, sync: &SyncName) -> Result<()> {
        self.known.remove(sync);
        let Some(token) = self.leases.remove(sync) else { return Ok(()) };
        let name = sync.to_string();
        self.run("give a lease back", false, |client| {
            let (name, token) = (name.clone(), token.clone());
            async move {
                client
                    .execute(
                        "delete from ldsync.leases where sync = $1 and token = $2",
                        &[&name, &token],
                    )
                    .await?;
                Ok(())
            }
        })
    }

    fn claim(&mut self, sync: &str, due: DateTime<Utc>) -> Result<bool> {
        let (name, holder) = (sync.to_owned(), self.holder.clone());
        self.run("claim a scheduled run", false, |client| {
            let (name, holder) = (name.clone(), holder.clone());
            async move {
                let claimed = client
                    .execute(
                        "insert into ldsync.slots (sync, due, holder, claimed_at)
                         values ($1, $2, $3, now())
                         on conflict (sync) do update
                           set due = excluded.due, holder = excluded.holder,
                               claimed_at = excluded.claimed_at
                           where ldsync.slots.due < excluded.due",
                        &[&name, &due, &holder],
                    )
                    .await?;
                Ok(claimed == 1)
            }
        })
    }

    /// The shared copy's files of `sync`: each one's hash, by path.
    fn remote_files(&mut self, sync: &SyncName) -> Result<BTreeMap<String, [u8; 16]>> {
        let name = sync.to_string();
        self.run("list a sync's files", false, |client| {
            let name = name.clone();
            async move {
                let rows = client
                    .query("select path, hash from ldsync.files where sync = $1", &[&name])
                    .await?;
                let mut files = BTreeMap::new();
                for row in rows {
                    let hash: Vec<u8> = row.get(1);
                    let hash = <[u8; 16]>::try_from(hash.as_slice())
                        .map_err(|_| Failure::Damaged("a file hash is not 16 bytes".into()))?;
                    files.insert(row.get::<_, String>(0), hash);
                }
                Ok(files)
            }
        })
    }

    fn check_out(&mut self, sync: &SyncName, dir: &Path) -> Result<()> {
        let remote = self.remote_files(sync)?;
        let local = self.local_files(dir)?;
        let wanted: Vec<String> = remote
            .iter()
            .filter(|(path, hash)| local.get(*path) != Some(hash))
            .map(|(path, _)| path.clone())
            .collect();
        if !wanted.is_empty() {
            let name = sync.to_string();
            let contents = self.run("read a sync's files", false, |client| {
                let (name, wanted) = (name.clone(), wanted.clone());
                async move {
                    let rows = client
                        .query(
                            "select path, content from ldsync.chunks
                             where sync = $1 and path = any($2) order by path, seq",
                            &[&name, &wanted],
                        )
                        .await?;
                    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                    for row in rows {
                        let piece: &[u8] = row.get(1);
                        contents.entry(row.get(0)).or_default().extend_from_slice(piece);
                    }
                    Ok(contents)
                }
            })?;
            for path in &wanted {
                let bytes = contents.get(path).map_or(&[][..], Vec::as_slice);
                if hash(bytes) != remote[path] {
                    return Err(Error::Shared {
                        operation: format!("check out sync `{sync}`"),
                        message: format!("file `{path}` does not match its hash"),
                    });
                }
                let target = local_path(dir, path)?;
                if let Some(parent) = target.parent() {
                    create_private_dir(parent)?;
                }
                write_atomically(&target, bytes)?;
            }
        }
        for path in local.keys().filter(|path| !remote.contains_key(*path)) {
            let target = dir.join(path);
            match std::fs::remove_file(&target) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::Io { path: target, source: error });
                }
            }
        }
        if self.leases.contains_key(sync) {
            self.known.insert(sync.clone(), remote);
        }
        Ok(())
    }

    fn publish(&mut self, sync: &SyncName, dir: &Path) -> Result<()> {
        let Some(token) = self.leases.get(sync).cloned() else {
            return Err(Error::LeaseLost { sync: sync.to_string() });
        };
        let known = match self.known.get(sync) {
            Some(known) => known.clone(),
            None => self.remote_files(sync)?,
        };
        let local = self.local_files(dir)?;
        let changed: Vec<String> = local
            .iter()
            .filter(|(path, hash)| known.get(*path) != Some(hash))
            .map(|(path, _)| path.clone())
            .collect();
        let removed: Vec<String> =
            known.keys().filter(|path| !local.contains_key(*path)).cloned().collect();
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let mut files = Vec::with_capacity(changed.len());
        for path in changed {
            let source = dir.join(&path);
            let bytes = std::fs::read(&source)
                .map_err(|source_error| Error::Io { path: source.clone(), source: source_error })?;
            // Read again: a file replaced since it was hashed is published as read now.
            files.push((path, hash(&bytes), bytes));
        }
        let files = Arc::new(files);
        let (name, lease_ms, chunk) =
            (sync.to_string(), millis(self.options.lease), self.options.chunk_bytes.max(1));
        let published = self.run("publish a sync's files", true, |client| {
            let (name, token, files, removed) =
                (name.clone(), token.clone(), Arc::clone(&files), removed.clone());
            async move {
                // The fence: only the lease's holder writes, and nobody takes it meanwhile.
                let held = client
                    .execute(
                        "update ldsync.leases set expires_at = now() + $3 * interval '1 millisecond'
                         where sync = $1 and token = $2",
                        &[&name, &token, &lease_ms],
                    )
                    .await?;
                if held != 1 {
                    return Ok(false);
                }
                for (path, digest, bytes) in files.iter() {
                    client
                        .execute(
                            "delete from ldsync.chunks where sync = $1 and path = $2",
                            &[&name, path],
                        )
                        .await?;
                    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
                    client
                        .execute(
                            "insert into ldsync.files (sync, path, hash, size, updated_at)
                             values ($1, $2, $3, $4, now())
                             on conflict (sync, path) do update
                               set hash = excluded.hash, size = excluded.size,
                                   updated_at = excluded.updated_at",
                            &[&name, path, &&digest[..], &size],
                        )
                        .await?;
                    for (seq, piece) in bytes.chunks(chunk).enumerate() {
                        let seq = i32::try_from(seq).unwrap_or(i32::MAX);
                        let params: [&(dyn ToSql + Sync); 4] = [&name, path, &seq, &piece];
                        client
                            .execute(
                                "insert into ldsync.chunks (sync, path, seq, content)
                                 values ($1, $2, $3, $4)",
                                &params,
                            )
                            .await?;
                    }
                }
                if !removed.is_empty() {
                    client
                        .execute(
                            "delete from ldsync.files where sync = $1 and path = any($2)",
                            &[&name, &removed],
                        )
                        .await?;
                }
                Ok(true)
            }
        })?;
        if !published {
            self.leases.remove(sync);
            self.known.remove(sync);
            return Err(Error::LeaseLost { sync: sync.to_string() });
        }
        let mut now = known;
        for path in &removed {
            now.remove(path);
        }
        for (path, digest, _) in files.iter() {
            now.insert(path.clone(), *digest);
        }
        self.known.insert(sync.clone(), now);
        Ok(())
    }

    /// The files of a local sync folder that belong in the shared copy, with their hashes
    /// (computed again only for files whose size, time or inode changed).
    fn local_files(&mut self, dir: &Path) -> Result<BTreeMap<String, [u8; 16]>> {
        let mut files = BTreeMap::new();
        for relative in shared_files(dir)? {
            let path = dir.join(&relative);
            let metadata = match std::fs::metadata(&path) {
                Ok(metadata) => metadata,
                // Removed since it was listed: it is not part of the folder any more.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(Error::Io { path, source: error }),
            };
            let (len, modified, inode) = {
                use std::os::unix::fs::MetadataExt;
                (
                    metadata.len(),
                    metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    metadata.ino(),
                )
            };
            let known = self
                .stamps
                .get(&path)
                .filter(|s| s.len == len && s.modified == modified && s.inode == inode);
            let digest = if let Some(stamp) = known {
                stamp.hash
            } else {
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(Error::Io { path, source: error }),
                };
                let digest = hash(&bytes);
                self.stamps.insert(path.clone(), Stamp { len, modified, inode, hash: digest });
                digest
            };
            files.insert(relative, digest);
        }
        Ok(files)
    }
}

/// Why a call to the database failed.
#[derive(Debug)]
enum Failure {
    Db(tokio_postgres::Error),
    TimedOut,
    Damaged(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

impl Failure {
    fn into_error(self, operation: &str) -> Error {
        match self {
            Self::Db(error) => {
                let message = match error.as_db_error() {
                    Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    None => ldsync_core::error_chain(&error),
                };
                Error::Shared { operation: operation.to_owned(), message }
            }
            Self::TimedOut => Error::Shared {
                operation: operation.to_owned(),
                message: "the database did not answer in time".into(),
            },
            Self::Damaged(message) => Error::Shared { operation: operation.to_owned(), message },
        }
    }
}

fn shared(operation: &str, error: &dyn std::error::Error) -> Error {
    Error::Shared { operation: operation.to_owned(), message: ldsync_core::error_chain(error) }
}

fn gone() -> Error {
    Error::Shared {
        operation: "answer".into(),
        message: "its thread stopped (see the errors logged before)".into(),
    }
}

/// A shared file's path inside a local folder; a path that would leave the folder is refused.
fn local_path(dir: &Path, relative: &str) -> Result<PathBuf> {
    let safe = !relative.is_empty()
        && relative.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !safe {
        return Err(Error::Shared {
            operation: "check out a sync".into(),
            message: format!("the stored file name `{relative}` is not a relative path"),
        });
    }
    Ok(dir.join(relative))
}

fn hash(bytes: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this host".to_owned(), |name| name.trim().to_owned());
    format!(
        "pid {} on {host} since {}",
        std::process::id(),
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}
