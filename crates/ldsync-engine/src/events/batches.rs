//! The batches of a run: staged events → request bodies, each with its payload ID.
//!
//! The journal keeps each batch's gzip body as a file of the pending plan
//! ([`ldsync_state::Journal::write_pending`]) rather than the events in `plan.json`: a resumed
//! run resends the very bytes the crashed run promised under the same payload ID (nothing is
//! rebuilt, so no change of code between the crash and the resume can alter a payload that
//! LaunchDarkly may already have counted), and gzip keeps the pending plan small. `plan.json`
//! holds what the commit needs: payload IDs, file names and the identities each batch carries.

use ldsync_launchdarkly::{event_payloads, CustomEvent, EventPayload, MAX_EVENT_PAYLOAD_BYTES};
use serde::{Deserialize, Serialize};

use super::stage::StagedEvent;

/// One request of a plan, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedBatch {
    /// The batch's id in the journal's acknowledgements.
    pub(crate) id: String,
    /// `X-LaunchDarkly-Payload-ID`: a UUID v4 drawn when the batch is planned, the same on
    /// every send of the batch.
    pub(crate) payload_id: String,
    /// The journal file holding the gzip body.
    pub(crate) file: String,
    /// The identities of the events the batch carries, each with its `occurred_at`.
    pub(crate) identities: Vec<(String, i64)>,
}

impl PlannedBatch {
    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.identities.len()
    }
}

/// The batches of `events` (already sorted), at most `batch_size` events and 10 MB each, with
/// their bodies. Payload IDs are fresh: call once per plan.
pub(crate) fn plan_batches(
    events: &[StagedEvent],
    batch_size: usize,
) -> Vec<(PlannedBatch, EventPayload)> {
    let wire: Vec<CustomEvent> = events.iter().map(|staged| staged.event.clone()).collect();
    event_payloads(&wire, batch_size, MAX_EVENT_PAYLOAD_BYTES)
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let batch = PlannedBatch {
                id: format!("events/{index}"),
                payload_id: uuid::Uuid::new_v4().to_string(),
                file: format!("events-{index:06}.json.gz"),
                identities: events[payload.events.clone()]
                    .iter()
                    .map(|staged| (staged.identity.clone(), staged.event.creation_date))
                    .collect(),
            };
            (batch, payload)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn staged(n: i64) -> StagedEvent {
        StagedEvent {
            identity: format!("id:{n}"),
            event: CustomEvent {
                key: "buy".into(),
                creation_date: n,
                metric_value: None,
                context_keys: BTreeMap::from([("user".into(), format!("u-{n}"))]),
                data: None,
            },
        }
    }

    #[test]
    fn batches_carry_their_events_identities_and_fresh_payload_ids() {
        let events: Vec<_> = (0..5).map(staged).collect();
        let planned = plan_batches(&events, 2);
        let shape: Vec<_> = planned
            .iter()
            .map(|(batch, payload)| (batch.id.as_str(), batch.len(), payload.events.clone()))
            .collect();
        assert_eq!(shape, [("events/0", 2, 0..2), ("events/1", 2, 2..4), ("events/2", 1, 4..5)]);
        assert_eq!(planned[1].0.identities, [("id:2".to_owned(), 2), ("id:3".to_owned(), 3)]);
        assert_ne!(planned[0].0.payload_id, planned[1].0.payload_id);
        let again = plan_batches(&events, 2);
        assert_ne!(planned[0].0.payload_id, again[0].0.payload_id, "a new plan is a new payload");
        assert_eq!(planned[0].1.body, again[0].1.body, "but the same events give the same body");
        assert!(plan_batches(&[], 2).is_empty());
    }
}
