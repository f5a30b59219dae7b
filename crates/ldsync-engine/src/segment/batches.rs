//! The batches of a segment's changes: a pure function of the committed snapshot, the target
//! and the plan, so that a resumed run computes exactly the batches the crashed run promised.

use ldsync_diff::KeySet;
use ldsync_launchdarkly::{ImportMode, MemberChange, MAX_IMPORT_BYTES, MAX_IMPORT_KEYS};

/// One request's worth of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Batch<'a> {
    /// Add or remove these members.
    Members {
        /// The batch's id in the journal.
        id: String,
        /// Add or remove.
        change: MemberChange,
        /// The keys.
        keys: Vec<&'a str>,
    },
    /// Upload these members as one CSV import.
    Import {
        /// The batch's id in the journal.
        id: String,
        /// Replace (the first file) or merge (the rest).
        mode: ImportMode,
        /// The keys.
        keys: Vec<&'a str>,
    },
}

impl Batch<'_> {
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Members { id, .. } | Self::Import { id, .. } => id,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Members { keys, .. } | Self::Import { keys, .. } => keys.len(),
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
    adds: &'a KeySet,
    removes: &'a KeySet,
    batch_size: usize,
) -> Vec<Batch<'a>> {
    let adds: Vec<&str> = adds.iter().map(text).collect();
    let removes: Vec<&str> = removes.iter().map(text).collect();
    let mut batches = Vec::new();
    for (change, keys, word) in
        [(MemberChange::Add, adds, "add"), (MemberChange::Remove, removes, "remove")]
    {
        for (index, chunk) in keys.chunks(batch_size.max(1)).enumerate() {
            batches.push(Batch::Members {
                id: format!("{segment}/{word}/{index}"),
                change,
                keys: chunk.to_vec(),
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
    target: impl Iterator<Item = &'a [u8]>,
) -> Vec<Batch<'a>> {
    let mut batches = Vec::new();
    let mut keys = Vec::new();
    let mut bytes = 0;
    let flush = |keys: &mut Vec<&'a str>, batches: &mut Vec<Batch<'a>>| {
        let index = batches.len();
        let mode = if index == 0 { ImportMode::Replace } else { ImportMode::Merge };
        batches.push(Batch::Import {
            id: format!("{segment}/import/{index}"),
            mode,
            keys: std::mem::take(keys),
        });
    };
    let mut by_api = Vec::new();
    for key in target {
        if !fits_csv(text(key)) {
            by_api.push(text(key));
            continue;
        }
        let line = csv_line_len(text(key));
        if !keys.is_empty() && (keys.len() == MAX_IMPORT_KEYS || bytes + line > MAX_IMPORT_BYTES) {
            flush(&mut keys, &mut batches);
            bytes = 0;
        }
        keys.push(text(key));
        bytes += line;
    }
    if !keys.is_empty() || batches.is_empty() {
        flush(&mut keys, &mut batches);
    }
    // After the replace, never before it: the replace would drop them again.
    for (index, chunk) in by_api.chunks(MEMBER_BATCH_AFTER_IMPORT).enumerate() {
        batches.push(Batch::Members {
            id: format!("{segment}/import-add/{index}"),
            change: MemberChange::Add,
            keys: chunk.to_vec(),
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
pub(crate) fn csv(keys: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.iter().map(|k| k.len() + 1).sum());
    for key in keys {
        out.extend_from_slice(csv_field(key).as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_batches_are_chunked_and_stable() {
        let adds = KeySet::from_keys(["d", "e", "f"]);
        let removes = KeySet::from_keys(["a", "b"]);
        let batches = member_batches("s", &adds, &removes, 2);
        let shape: Vec<_> = batches.iter().map(|b| (b.id().to_owned(), b.len())).collect();
        assert_eq!(shape, [("s/add/0".into(), 2), ("s/add/1".into(), 1), ("s/remove/0".into(), 2)]);
        assert_eq!(batches, member_batches("s", &adds, &removes, 2));
    }

    #[test]
    fn imports_split_at_the_key_limit_and_replace_first() {
        let keys: Vec<String> = (0..MAX_IMPORT_KEYS + 5).map(|i| format!("k{i}")).collect();
        let target = KeySet::from_keys(&keys);
        let batches = import_batches("s", target.iter());
        assert_eq!(batches.len(), 2);
        assert!(
            matches!(&batches[0], Batch::Import { mode: ImportMode::Replace, keys, .. } if keys.len() == MAX_IMPORT_KEYS)
        );
        assert!(
            matches!(&batches[1], Batch::Import { mode: ImportMode::Merge, keys, .. } if keys.len() == 5)
        );
        // An empty target still replaces the membership, emptying it.
        assert_eq!(import_batches("s", KeySet::default().iter()).len(), 1);
    }

    #[test]
    fn keys_with_line_breaks_follow_the_import_through_the_contexts_api() {
        let target = KeySet::from_keys(["a", "new\nline", "b", "cr\rkey"]);
        let batches = import_batches("s", target.iter());
        assert_eq!(batches.len(), 2);
        assert!(
            matches!(&batches[0], Batch::Import { mode: ImportMode::Replace, keys, .. } if keys.len() == 2)
        );
        let Batch::Members { change: MemberChange::Add, keys, id } = &batches[1] else {
            panic!("{batches:?}")
        };
        assert_eq!(id, "s/import-add/0");
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn csv_quotes_what_it_must() {
        assert_eq!(
            csv(&["a", "b,c", "say \"hi\"", " x"]),
            b"a\n\"b,c\"\n\"say \"\"hi\"\"\"\n\" x\"\n"
        );
    }
}
