//! The delivery side of a run: each batch the stager closes is sealed (its JSON compressed),
//! journaled and sent on tasks of their own, so that the task reading and staging rows does
//! nothing else.
//!
//! Two tasks, in a chain: the first seals and journals the batches in order, and after the
//! last one journals that the plan read its whole range; the second sends each journaled
//! batch and settles it. A batch is sent only after its journal file is written, and the end
//! of the plan is journaled only after every batch file before it, as when one task did it
//! all. Dropping the [`Pipeline`] (a run cancelled) stops both tasks at their next wait.

use chrono::Utc;
use ldsync_core::SyncName;
use ldsync_launchdarkly::LaunchDarklyClient;
use ldsync_state::{EventLedger, Journal, Plan, Prepared, Rejection};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    batches::{self, Batch, Part, Sealer},
    refuses_batch,
    seen::SeenSet,
    stage, Delivery, EventsPlan, Scope, END_FILE, IN_FLIGHT,
};
use crate::{Error, Result};

/// Pieces of JSON (256 KiB each) waiting to be compressed: 4 MiB, so that staging goes on
/// while a piece is compressed or a batch journaled. Each piece in flight is a buffer of its
/// own, faulted in once: at 48 (two batches of the default size), the buffers were 12 MiB,
/// a third of the run's page faults.
const PIECES_IN_FLIGHT: usize = 16;

/// What a sync sends with, owned, so that its delivery can run on a task of its own.
#[derive(Debug, Clone)]
pub(crate) struct Courier {
    pub(crate) name: SyncName,
    pub(crate) client: LaunchDarklyClient,
    pub(crate) journal: Journal,
    pub(crate) project: String,
    pub(crate) environment: String,
}

impl Courier {
    fn state_error(&self) -> impl Fn(ldsync_state::Error) -> Error + '_ {
        |source| Error::State { sync: self.name.to_string(), source }
    }

    /// Sends one batch and settles it: acknowledged, or refused (its events rejected).
    pub(crate) async fn send(&self, batch: &Batch, delivery: &mut Delivery) -> Result<()> {
        delivery.sent += 1;
        let sent = self
            .client
            .import_events(&self.project, &self.environment, &batch.payload_id, batch.body.clone())
            .await;
        match sent {
            Ok(()) => {
                // Not synced before the next batch goes: an acknowledgement a crash of the
                // machine loses only resends the batch under its payload ID, which LaunchDarkly
                // counts once (as when a crash falls between the answer and this line).
                self.journal.acknowledge_lazily(&batch.id()).map_err(self.state_error())?;
                delivery.accepted.push(batch.index);
                delivery.accepted_events += batch.len() as u64;
                tracing::debug!(sync = %self.name, batch = %batch.id(), events = batch.len(), "Metric-event batch accepted.");
                Ok(())
            }
            Err(source) if refuses_batch(&source) => {
                let error = Error::Events {
                    sync: self.name.to_string(),
                    batch: batch.id(),
                    payload_id: batch.payload_id.clone(),
                    source: Box::new(source),
                };
                let reason = crate::chain(&error);
                tracing::warn!(sync = %self.name, batch = %batch.id(), events = batch.len(), error = %reason, "LaunchDarkly refused a metric-event batch; its events are rejected.");
                delivery.refused_batches += 1;
                delivery.refused_events += batch.len() as u64;
                let room = stage::KEPT_REJECTIONS.saturating_sub(delivery.rejections.len());
                delivery.rejections.extend(
                    batch.rows.iter().zip(batch.shown.iter()).take(room).map(|(row, shown)| {
                        Rejection { row: *row, key: Some(shown.to_owned()), reason: reason.clone() }
                    }),
                );
                delivery.refusal.get_or_insert(reason);
                Ok(())
            }
            Err(source) => Err(Error::Events {
                sync: self.name.to_string(),
                batch: batch.id(),
                payload_id: batch.payload_id.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Starts delivering the batches of `plan`. Once the plan has read its whole range, the
    /// identities its commit adds to `ledger` are written ahead ([`Prepared`], delivered on
    /// `today`) while its last batches are still on their way.
    pub(crate) fn start(self, plan: Plan<EventsPlan>, ledger: EventLedger, today: i64) -> Pipeline {
        let (steps, mut step_receiver) = mpsc::channel::<Step>(PIECES_IN_FLIGHT);
        let (batch_sender, mut batches) = mpsc::channel::<Batch>(IN_FLIGHT);
        let (spare_sender, spares) = std::sync::mpsc::channel();
        let courier = self.clone();
        let plan_id = plan.body.plan_id.clone();
        let prepare = tokio::spawn(async move {
            let mut promises = Promises { journal: &courier.journal, plan, file: Vec::new() };
            let (mut prepared, mut sealer) = (None, Sealer::default());
            while let Some(step) = step_receiver.recv().await {
                match step {
                    Step::Json(json) => {
                        // The builder takes the buffer back, if it is still building.
                        let _ = spare_sender.send(sealer.piece(json));
                    }
                    Step::Batch(batch) => {
                        let batch = sealer.seal(batch);
                        promises.batch(&batch).map_err(courier.state_error())?;
                        if batch_sender.send(batch).await.is_err() {
                            // Delivery stopped: its error is the run's, and the plan did not
                            // read its whole range.
                            break;
                        }
                    }
                    Step::End(scope, written) => {
                        promises.end(scope).map_err(courier.state_error())?;
                        let Some(written) = written.filter(|_| promises.begun()) else { continue };
                        // Without it, the commit writes the identities itself.
                        match written
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|written| written.map_err(|e| ldsync_core::error_chain(&e)))
                        {
                            Ok(written) => prepared = Some(written),
                            Err(error) => {
                                tracing::debug!(sync = %courier.name, error = %error, "The identities could not be written ahead of the commit.");
                            }
                        }
                    }
                }
            }
            Ok((promises.begun(), prepared))
        });
        let deliver = tokio::spawn(async move {
            let mut delivery = Delivery::default();
            while let Some(batch) = batches.recv().await {
                self.send(&batch, &mut delivery).await?;
            }
            Ok(delivery)
        });
        Pipeline {
            steps: Some(steps),
            spares,
            prepare: Task(prepare),
            deliver: Task(deliver),
            ledger,
            plan_id,
            today,
            handed: 0,
        }
    }
}

/// What the stager hands to delivery.
enum Step {
    /// The next piece of the open batch's JSON, to compress.
    Json(Vec<u8>),
    /// A closed batch, to seal (its pieces compressed), journal and send.
    Batch(Batch),
    /// The plan read its whole range: its commit moves `Scope`; the identities it staged,
    /// being written ahead of the commit (when it has batches).
    End(Scope, Option<JoinHandle<ldsync_state::Result<Prepared>>>),
}

/// The delivery of one plan, under way.
pub(crate) struct Pipeline {
    steps: Option<mpsc::Sender<Step>>,
    spares: std::sync::mpsc::Receiver<Vec<u8>>,
    prepare: Task<Result<(bool, Option<Prepared>)>>,
    deliver: Task<Result<Delivery>>,
    /// Where the identities written ahead of the commit go.
    ledger: EventLedger,
    plan_id: String,
    today: i64,
    /// Batches handed over.
    handed: usize,
}

impl Pipeline {
    /// Hands over a piece of JSON or a closed batch; `false` when delivery stopped (its
    /// error is the run's).
    pub(crate) async fn part(&mut self, part: Part) -> bool {
        let Some(steps) = &self.steps else { return false };
        let step = match part {
            Part::Json(json) => Step::Json(json),
            Part::Batch(batch) => {
                self.handed += 1;
                Step::Batch(batch)
            }
        };
        steps.send(step).await.is_ok()
    }

    /// Says the plan read its whole range, after its last batch, and hands over the
    /// identities it staged. They are written ahead of the commit at once, while the last
    /// batches are still sealed, journaled and sent.
    pub(crate) async fn end(&mut self, scope: Scope, seen: SeenSet) {
        if let Some(steps) = self.steps.take() {
            let written = (self.handed > 0).then(|| {
                let (ledger, plan_id, today) =
                    (self.ledger.clone(), self.plan_id.clone(), self.today);
                tokio::task::spawn_blocking(move || {
                    // A part for each core: the other tasks are nearly done.
                    let parts = std::thread::available_parallelism().map_or(1, usize::from);
                    ledger.prepare_sorted_identities(&plan_id, seen.into_sorted_parts(parts), today)
                })
            });
            // A closed channel means delivery stopped; its error is the run's.
            let _ = steps.send(Step::End(scope, written)).await;
        }
    }

    /// The buffer of a piece compressed, to build another piece in.
    pub(crate) fn spare(&self) -> Option<Vec<u8>> {
        self.spares.try_recv().ok()
    }

    /// Waits for both tasks: whether the plan was journaled (it has batches), what the
    /// delivery settled, and the identities written ahead of the commit. A delivery error
    /// comes first: it is why the rest stopped.
    pub(crate) async fn finish(mut self, sync: &str) -> Result<Finished> {
        self.steps = None;
        let delivery = self.deliver.join(sync).await;
        let prepared = self.prepare.join(sync).await;
        let delivery = delivery?;
        let (begun, prepared) = prepared?;
        Ok(Finished { begun, delivery, prepared })
    }
}

/// What the delivery of a plan ended with.
pub(crate) struct Finished {
    /// Whether the plan was journaled (it has batches).
    pub(crate) begun: bool,
    /// What the delivery settled.
    pub(crate) delivery: Delivery,
    /// Every identity the plan staged, written ahead of its commit, when it read its whole
    /// range.
    pub(crate) prepared: Option<Prepared>,
}

/// A spawned task, aborted when dropped (a cancelled run stops its delivery).
struct Task<T>(JoinHandle<T>);

impl<T> Task<Result<T>> {
    async fn join(&mut self, sync: &str) -> Result<T> {
        (&mut self.0).await.map_err(|error| Error::Internal {
            sync: sync.to_owned(),
            message: format!("the delivery task stopped: {error}"),
        })?
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a run promises in the journal, in order: its plan, each batch before it is sent, and
/// at last that it read its whole range.
struct Promises<'a> {
    journal: &'a Journal,
    /// The plan, promised before its first batch (`created_at` is set then, and marks the
    /// plan as promised).
    plan: Plan<EventsPlan>,
    /// The bytes of a batch file, reused from batch to batch.
    file: Vec<u8>,
}

impl Promises<'_> {
    fn begun(&self) -> bool {
        !self.plan.created_at.is_empty()
    }

    /// Journals `batch`, and the plan before the first batch.
    fn batch(&mut self, batch: &Batch) -> ldsync_state::Result<()> {
        if !self.begun() {
            // Files left by a plan that was committed while they were being removed go first:
            // no plan is pending here, so none of them is work.
            self.journal.abandon()?;
            self.plan.created_at = Utc::now().to_rfc3339();
            if let Err(error) = self.journal.begin(&self.plan) {
                self.plan.created_at.clear();
                return Err(error);
            }
        }
        batch.encode_into(&mut self.file);
        self.journal.write_pending(&batches::file_name(batch.index), &self.file)
    }

    /// Journals that the plan read its whole range, and the scope its commit moves.
    fn end(&self, scope: Scope) -> ldsync_state::Result<()> {
        if !self.begun() {
            return Ok(());
        }
        let end = serde_json::to_vec(&scope).expect("a scope always serialises");
        self.journal.write_pending(END_FILE, &end)
    }
}
