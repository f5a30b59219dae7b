//! The batches of a segment's changes: a pure function of the committed snapshot, the target
//! and the plan, so that a resumed run computes exactly the batches the crashed run promised.

use std::ops::Range;

use ldsync_diff::{applied, applied_from, AppliedAt, Delta, KeySet, MappedKeySet};
use ldsync_launchdarkly::{ImportMode, MemberChange, MAX_IMPORT_BYTES, MAX_IMPORT_KEYS};

/// One request's worth of changes. A batch says where its keys are, not what they are: a plan
/// of ten million members holds a few numbers per batch, and each batch's keys are read when
/// it is sent ([`Batch::keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Batch<'a> {
    /// Add or remove these members.
    Members {
        /// The batch's id in the journal.
        id: String,
        /// Add or remove.
        change: MemberChange,
        /// The keys.
        keys: MemberKeys<'a>,
    },
    /// Upload these members as one CSV import.
    Import {
        /// The batch's id in the journal.
        id: String,
        /// Replace (the first file) or merge (the rest).
        mode: ImportMode,
        /// Where the file's first key is in the target membership.
        from: AppliedAt,
        /// How many keys the file holds (keys no CSV line can hold are passed over).
        count: usize,
    },
}

/// The keys of a member batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberKeys<'a> {
    /// Keys `range` of the plan's adds (for an add) or removes (for a remove).
    Delta(Range<usize>),
    /// These keys (members of an import that no CSV line can hold).
    Listed(Vec<&'a str>),
}

/// What a batch's keys are read from: the plan's membership, its delta and, for an import,
/// the target membership as a delta against the base.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub(crate) base: &'a MappedKeySet,
    pub(crate) delta: &'a Delta,
    pub(crate) target: Option<&'a Delta>,
}

impl<'a> Batch<'a> {
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Members { id, .. } | Self::Import { id, .. } => id,
        }
    }

    /// The batch's keys, read from the plan.
    ///
    /// # Panics
    ///
    /// When `sources` are not those the batch was made from (an import without a target).
    pub(crate) fn keys<'s>(&'s self, sources: Sources<'s>) -> Vec<&'s str>
    where
        'a: 's,
    {
        match self {
            Self::Members { keys: MemberKeys::Listed(keys), .. } => keys.clone(),
            Self::Members { keys: MemberKeys::Delta(range), change, .. } => {
                let set = match change {
                    MemberChange::Add => &sources.delta.adds,
                    MemberChange::Remove => &sources.delta.removes,
                };
                range.clone().map(|index| text(set.key(index))).collect()
            }
            Self::Import { .. } => self.import_keys(sources).collect(),
        }
    }

    /// The keys of an import file, read from the target as it is scanned.
    fn import_keys<'s>(&'s self, sources: Sources<'s>) -> impl Iterator<Item = &'s str> + 's {
        let (from, count) = match self {
            Self::Import { from, count, .. } => (*from, *count),
            Self::Members { .. } => (AppliedAt::default(), 0),
        };
        let target = sources.target.expect("an import batch is read from its target");
        applied_from(sources.base, target, from)
            .map(|(_, key)| text(key))
            .filter(|key| fits_csv(key))
            .take(count)
    }

    /// The CSV file of an import batch (see [`csv`]), written as the target is scanned: each
    /// key is read once, and the scan lets the pages of a target on disk go behind it.
    pub(crate) fn csv(&self, sources: Sources<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        for key in self.import_keys(sources) {
            push_csv_line(&mut out, key);
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Members { keys: MemberKeys::Listed(keys), .. } => keys.len(),
            Self::Members { keys: MemberKeys::Delta(range), .. } => range.len(),
            Self::Import { count, .. } => *count,
        }
    }
}

/// The key as text; snapshots only ever hold keys staged from text.
fn text(key: &[u8]) -> &str {
    std::str::from_utf8(key).expect("staged keys are UTF-8 text")
}

/// Member batches: adds first, then removes, each chunked by `batch_size`.
pub(crate) fn member_batches<'a>(
    segment: &str,
    adds: &KeySet,
    removes: &KeySet,
    batch_size: usize,
) -> Vec<Batch<'a>> {
    let size = batch_size.max(1);
    let mut batches = Vec::new();
    for (change, count, word) in
        [(MemberChange::Add, adds.len(), "add"), (MemberChange::Remove, removes.len(), "remove")]
    {
        for (index, start) in (0..count).step_by(size).enumerate() {
            batches.push(Batch::Members {
                id: format!("{segment}/{word}/{index}"),
                change,
                keys: MemberKeys::Delta(start..(start + size).min(count)),
            });
        }
    }
    batches
}

/// Whether a key can travel in a CSV import file. A line break inside a key is quoted by
/// RFC 4180, but LaunchDarkly documents its import only as "one key per line": such keys go
/// through the contexts API instead, where JSON carries them exactly.
fn fits_csv(key: &str) -> bool {
    !key.contains(['\n', '\r'])
}

/// Import batches of the whole target: files of at most a million keys and 40 MB, the first
/// replacing the membership and the rest merging into it; then member batches for the keys no
/// CSV line can hold.
pub(crate) fn import_batches<'a>(
    segment: &str,
    base: &'a MappedKeySet,
    target: &'a Delta,
) -> Vec<Batch<'a>> {
    let mut batches = Vec::new();
    // The open file: where its first key is, how many keys and bytes it holds.
    let mut open: Option<(AppliedAt, usize)> = None;
    let mut bytes = 0;
    let flush = |open: &mut Option<(AppliedAt, usize)>, batches: &mut Vec<Batch<'a>>| {
        let index = batches.len();
        let mode = if index == 0 { ImportMode::Replace } else { ImportMode::Merge };
        let (from, count) = open.take().unwrap_or_default();
        batches.push(Batch::Import { id: format!("{segment}/import/{index}"), mode, from, count });
    };
    let mut by_api = Vec::new();
    let mut scan = applied(base, target);
    loop {
        let at = scan.at();
        let Some((_, key)) = scan.next() else { break };
        let key = text(key);
        if !fits_csv(key) {
            by_api.push(key);
            continue;
        }
        let line = csv_line_len(key);
        if let Some((_, count)) = open {
            if count == MAX_IMPORT_KEYS || bytes + line > MAX_IMPORT_BYTES {
                flush(&mut open, &mut batches);
                bytes = 0;
            }
        }
        open.get_or_insert((at, 0)).1 += 1;
        bytes += line;
    }
    if open.is_some() || batches.is_empty() {
        flush(&mut open, &mut batches);
    }
    // After the replace, never before it: the replace would drop them again.
    for (index, chunk) in by_api.chunks(MEMBER_BATCH_AFTER_IMPORT).enumerate() {
        batches.push(Batch::Members {
            id: format!("{segment}/import-add/{index}"),
            change: MemberChange::Add,
            keys: MemberKeys::Listed(chunk.to_vec()),
        });
    }
    batches
}

/// Keys per member batch for the keys an import cannot carry.
const MEMBER_BATCH_AFTER_IMPORT: usize = 1_000;

/// A CSV field, quoted when it must be (RFC 4180).
pub(crate) fn csv_field(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains([',', '"', '\n', '\r']) || key.starts_with(' ') || key.ends_with(' ') {
        format!("\"{}\"", key.replace('"', "\"\"")).into()
    } else {
        key.into()
    }
}

fn csv_line_len(key: &str) -> usize {
    csv_field(key).len() + 1
}

/// The CSV file of an import batch: one key per line, no header.
#[cfg(test)]
pub(crate) fn csv(keys: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.iter().map(|k| k.len() + 1).sum());
    for key in keys {
        push_csv_line(&mut out, key);
    }
    out
}

fn push_csv_line(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(csv_field(key).as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources<'a>(base: &'a MappedKeySet, delta: &'a Delta, target: &'a Delta) -> Sources<'a> {
        Sources { base, delta, target: Some(target) }
    }

    fn adding(keys: &KeySet) -> Delta {
        Delta { adds: keys.clone(), removes: KeySet::default() }
    }

    #[test]
    fn member_batches_are_chunked_and_stable() {
        let delta = Delta {
            adds: KeySet::from_keys(["d", "e", "f"]),
            removes: KeySet::from_keys(["a", "b"]),
        };
        let batches = member_batches("s", &delta.adds, &delta.removes, 2);
        let shape: Vec<_> = batches.iter().map(|b| (b.id().to_owned(), b.len())).collect();
        assert_eq!(shape, [("s/add/0".into(), 2), ("s/add/1".into(), 1), ("s/remove/0".into(), 2)]);
        assert_eq!(batches, member_batches("s", &delta.adds, &delta.removes, 2));
        let base = MappedKeySet::empty();
        let read = Sources { base: &base, delta: &delta, target: None };
        let keys: Vec<Vec<&str>> = batches.iter().map(|batch| batch.keys(read)).collect();
        let adds: Vec<&str> = delta.adds.iter().map(text).collect();
        let removes: Vec<&str> = delta.removes.iter().map(text).collect();
        assert_eq!(keys, [adds[..2].to_vec(), adds[2..].to_vec(), removes]);
    }

    #[test]
    fn imports_split_at_the_key_limit_and_replace_first() {
        let keys: Vec<String> = (0..MAX_IMPORT_KEYS + 5).map(|i| format!("k{i}")).collect();
        let target = adding(&KeySet::from_keys(&keys));
        let base = MappedKeySet::empty();
        let batches = import_batches("s", &base, &target);
        assert_eq!(batches.len(), 2);
        assert!(
            matches!(&batches[0], Batch::Import { mode: ImportMode::Replace, count, .. } if *count == MAX_IMPORT_KEYS)
        );
        assert!(
            matches!(&batches[1], Batch::Import { mode: ImportMode::Merge, count, .. } if *count == 5)
        );
        // Read back, the files hold the target in order, each key once.
        let read = sources(&base, &target, &target);
        let sent: Vec<&str> = batches.iter().flat_map(|batch| batch.keys(read)).collect();
        let wanted: Vec<&str> = target.adds.iter().map(text).collect();
        assert_eq!(sent, wanted);
        // An empty target still replaces the membership, emptying it.
        let empty = Delta::default();
        let batches = import_batches("s", &base, &empty);
        assert_eq!(batches.len(), 1);
        assert!(batches[0].keys(sources(&base, &empty, &empty)).is_empty());
    }

    #[test]
    fn import_files_read_back_the_membership_with_the_delta_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.keys");
        let members: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
        KeySet::from_keys(&members).write_file(&path).unwrap();
        let base = MappedKeySet::open(&path).unwrap();
        let target = Delta {
            adds: KeySet::from_keys((0..700).map(|i| format!("new{i}"))),
            removes: KeySet::from_keys(members.iter().step_by(3)),
        };
        let wanted: Vec<&str> = applied(&base, &target).map(|(_, key)| text(key)).collect();
        let batches = import_batches("s", &base, &target);
        let read = sources(&base, &target, &target);
        let sent: Vec<&str> = batches.iter().flat_map(|batch| batch.keys(read)).collect();
        assert_eq!(sent, wanted);
        for batch in &batches {
            assert_eq!(batch.csv(read), csv(&batch.keys(read)));
        }
    }

    #[test]
    fn keys_with_line_breaks_follow_the_import_through_the_contexts_api() {
        let target = adding(&KeySet::from_keys(["a", "new\nline", "b", "cr\rkey"]));
        let base = MappedKeySet::empty();
        let batches = import_batches("s", &base, &target);
        assert_eq!(batches.len(), 2);
        assert!(
            matches!(&batches[0], Batch::Import { mode: ImportMode::Replace, count, .. } if *count == 2)
        );
        let mut first = batches[0].keys(sources(&base, &target, &target));
        first.sort_unstable();
        assert_eq!(first, ["a", "b"]);
        let Batch::Members { change: MemberChange::Add, keys, id } = &batches[1] else {
            panic!("{batches:?}")
        };
        assert_eq!(id, "s/import-add/0");
        assert!(matches!(keys, MemberKeys::Listed(keys) if keys.len() == 2));
    }

    #[test]
    fn csv_quotes_what_it_must() {
        assert_eq!(
            csv(&["a", "b,c", "say \"hi\"", " x"]),
            b"a\n\"b,c\"\n\"say \"\"hi\"\"\"\n\" x\"\n"
        );
    }
}
