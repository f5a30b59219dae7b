//! The state store of ldsync: the journal and commit steps of the pipeline.
//!
//! Per sync it keeps the committed snapshot, the journal of planned and acknowledged batches,
//! run history and rejected records, and a lock so that two processes never run one sync at
//! once. The embedded store lives in one local folder ([`StateDir`], `.ldsync/` beside
//! `ldsync.toml` by default), created readable by its owner only. A folder written by another
//! format version, or one that is not an ldsync state folder, is refused: never half-used.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! use ldsync_core::SyncName;
//! use ldsync_state::StateDir;
//!
//! let state = StateDir::open(dir.path().join(".ldsync"))?;
//! let sync: SyncName = "beta-testers".parse()?;
//! let lock = state.lock_sync(&sync)?;
//! assert!(state.lock_sync(&sync).is_err(), "a second run of the same sync is refused");
//! drop(lock);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dir;
mod error;
mod events;
mod history;
mod journal;
mod lock;
mod remote;

pub use dir::{StateDir, FORMAT_VERSION};
pub use error::{Error, Result};
pub use events::{
    sort_by_uniform_key, BackfillProgress, EventLedger, EventsState, IdentityIndex, Prepared,
    UniformSort, DAY_MS,
};
pub use history::{History, Rejection, RunRecord};
pub use journal::{create_private_dir, sync_dir, write_atomically, Journal, Plan};
pub use lock::{LockHolder, SyncLock};
pub use remote::{is_local_only, shared_files, Remote};
