//! What a diff decides to send: members to add and to remove, per segment.

use crate::{ContextKey, SegmentKey};

/// One change to a segment's membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "op", content = "key", rename_all = "snake_case")]
pub enum SegmentChange {
    /// The context appeared in the query result: include it.
    Add(ContextKey),
    /// The context left the query result: remove it.
    Remove(ContextKey),
}

impl SegmentChange {
    /// The context the change is about.
    pub fn key(&self) -> &ContextKey {
        match self {
            Self::Add(key) | Self::Remove(key) => key,
        }
    }
}

/// The adds and removes for one segment, as the diff produced them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeSet {
    segment: SegmentKey,
    adds: Vec<ContextKey>,
    removes: Vec<ContextKey>,
}

impl ChangeSet {
    /// An empty change set for `segment`.
    pub fn new(segment: SegmentKey) -> Self {
        Self { segment, adds: Vec::new(), removes: Vec::new() }
    }

    /// The segment the changes apply to.
    pub fn segment(&self) -> &SegmentKey {
        &self.segment
    }

    /// Records a member to add.
    pub fn add(&mut self, key: ContextKey) {
        self.adds.push(key);
    }

    /// Records a member to remove.
    pub fn remove(&mut self, key: ContextKey) {
        self.removes.push(key);
    }

    /// The members to add, in the order the diff found them.
    pub fn adds(&self) -> &[ContextKey] {
        &self.adds
    }

    /// The members to remove, in the order the diff found them.
    pub fn removes(&self) -> &[ContextKey] {
        &self.removes
    }

    /// How many changes there are in all.
    pub fn len(&self) -> usize {
        self.adds.len() + self.removes.len()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every change, adds first.
    pub fn iter(&self) -> impl Iterator<Item = SegmentChange> + '_ {
        let adds = self.adds.iter().cloned().map(SegmentChange::Add);
        adds.chain(self.removes.iter().cloned().map(SegmentChange::Remove))
    }
}
