//! The batches of a run: new events → request bodies, each with its payload ID, and the
//! journal file that promises each one.
//!
//! A batch is journaled as one file of the pending plan ([`ldsync_state::Journal::write_pending`]),
//! written before it is sent: its payload ID, the identity hash of each of its events, the row
//! and shown key of its first events (what a refusal can report), and its gzip body. A resumed run resends the very bytes the crashed run promised
//! under the same payload ID (nothing is rebuilt, so no change of code between the crash and the
//! resume can alter a payload that LaunchDarkly may already have counted). The file is binary
//! and checksummed: 16 bytes of identity per event rather than JSON text.
//!
//! Building and sealing are two steps, on two threads: [`BatchBuilder::push`] writes each
//! event's JSON into a piece of a few hundred kilobytes and hands pieces over as they fill
//! ([`Part::Json`]), then the batch when it closes ([`Part::Batch`]); a [`Sealer`] compresses
//! the pieces as they come and gives their buffers back ([`BatchBuilder::recycle`]). A batch's
//! JSON (megabytes) is so never held whole: each piece is compressed while it is still in the
//! processor's caches, and the same few buffers serve the whole run.

use std::io::Write as _;

use bytes::Bytes;
use flate2::{write::DeflateEncoder, Compression, Crc};

/// What a batch file starts with: rows and shown texts for the first events only, the rows and
/// the texts' lengths as varints. Versions 1 and 2, which held them for every event (2 as
/// varints), are still read.
const MAGIC: &[u8; 8] = b"LDEVBAT3";
/// Version 2: rows and the lengths of the shown texts as varints, for every event.
const MAGIC_V2: &[u8; 8] = b"LDEVBAT2";
/// Version 1: rows as 8 bytes, the lengths of the shown texts as 4.
const MAGIC_V1: &[u8; 8] = b"LDEVBAT1";

/// The file of batch `index` in the pending plan.
pub(crate) fn file_name(index: usize) -> String {
    format!("events-{index:06}.batch")
}

/// The id of batch `index` in the journal's acknowledgements.
pub(crate) fn batch_id(index: usize) -> String {
    format!("events/{index}")
}

/// One request: its events and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Its position in the plan.
    pub(crate) index: usize,
    /// The plan it belongs to.
    pub(crate) plan_id: String,
    /// `X-LaunchDarkly-Payload-ID`: a UUID v4 drawn when the batch is built, the same on every
    /// send of the batch.
    pub(crate) payload_id: String,
    /// The identity hash of each event.
    pub(crate) hashes: Vec<u128>,
    /// The position in the query result of each of the first [`SHOWN_EVENTS`] events (a
    /// refusal reports no more).
    pub(crate) rows: Vec<u64>,
    /// What a rejection shows of each of the same events (its `event_id`, else its event key).
    pub(crate) shown: Shown,
    /// The length of the uncompressed JSON array.
    pub(crate) json_bytes: usize,
    /// The JSON array, gzip-compressed: the request body.
    pub(crate) body: Bytes,
}

impl Batch {
    /// The batch's id in the journal.
    pub(crate) fn id(&self) -> String {
        batch_id(self.index)
    }

    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The journal file's bytes.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Writes the journal file's bytes into `out` (emptied first; reused from batch to batch).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let shown = self.len() + self.shown.text.len();
        out.reserve(64 + self.len() * 18 + shown + self.body.len() + self.plan_id.len());
        out.extend_from_slice(MAGIC);
        put_str(out, &self.plan_id);
        put_str(out, &self.payload_id);
        out.extend_from_slice(&u64::try_from(self.index).expect("fits").to_le_bytes());
        out.extend_from_slice(&u64::try_from(self.json_bytes).expect("fits").to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.len()).expect("a batch is small").to_le_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(&hash.to_le_bytes());
        }
        out.extend_from_slice(
            &u32::try_from(self.rows.len()).expect("a batch is small").to_le_bytes(),
        );
        // Rows ascend within a batch: each is written as the step from the one before.
        let mut previous = 0_u64;
        for &row in &self.rows {
            put_varint(out, row.wrapping_sub(previous));
            previous = row;
        }
        for shown in self.shown.iter() {
            put_varint(out, shown.len() as u64);
            out.extend_from_slice(shown.as_bytes());
        }
        out.extend_from_slice(&u64::try_from(self.body.len()).expect("fits").to_le_bytes());
        out.extend_from_slice(&self.body);
        append_checksum(out);
    }

    /// A journal file's batch; `Err` names what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (content, sum) = bytes
            .split_last_chunk::<8>()
            .ok_or_else(|| "the batch file is cut short".to_owned())?;
        if xxhash_rust::xxh3::xxh3_64(content) != u64::from_le_bytes(*sum) {
            return Err("the batch file's checksum does not match".to_owned());
        }
        let mut reader = Reader(content);
        let version = match reader.take(MAGIC.len())? {
            magic if magic == MAGIC => 3,
            magic if magic == MAGIC_V2 => 2,
            magic if magic == MAGIC_V1 => 1,
            _ => return Err("not a metric-event batch file".to_owned()),
        };
        let plan_id = reader.string()?;
        let payload_id = reader.string()?;
        let index = usize::try_from(reader.u64()?).map_err(|e| e.to_string())?;
        let json_bytes = usize::try_from(reader.u64()?).map_err(|e| e.to_string())?;
        let count = reader.u32()? as usize;
        let hashes = (0..count)
            .map(|_| Ok(u128::from_le_bytes(reader.take(16)?.try_into().expect("16 bytes"))))
            .collect::<Result<_, String>>()?;
        let mut shown = Shown::default();
        let count = if version == 3 { reader.u32()? as usize } else { count };
        let rows = if version == 1 {
            let rows = (0..count).map(|_| reader.u64()).collect::<Result<_, String>>()?;
            for _ in 0..count {
                let len = reader.u32()? as usize;
                shown.push(reader.text(len)?);
            }
            rows
        } else {
            let mut previous = 0_u64;
            let rows = (0..count)
                .map(|_| {
                    previous = previous.wrapping_add(reader.varint()?);
                    Ok(previous)
                })
                .collect::<Result<_, String>>()?;
            for _ in 0..count {
                let len = usize::try_from(reader.varint()?).map_err(|e| e.to_string())?;
                shown.push(reader.text(len)?);
            }
            rows
        };
        let body_len = usize::try_from(reader.u64()?).map_err(|e| e.to_string())?;
        let body = Bytes::copy_from_slice(reader.take(body_len)?);
        if !reader.0.is_empty() {
            return Err("the batch file has bytes past its body".to_owned());
        }
        Ok(Self { index, plan_id, payload_id, hashes, rows, shown, json_bytes, body })
    }
}

/// What a rejection shows of each event of a batch, in one buffer: a batch holds tens of
/// thousands of events, and a `String` each would cost an allocation per event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shown {
    /// The texts, one after the other.
    text: String,
    /// Where each text ends in `text`.
    ends: Vec<usize>,
}

impl Shown {
    /// Adds the text of the next event.
    pub(crate) fn push(&mut self, shown: &str) {
        self.text.push_str(shown);
        self.ends.push(self.text.len());
    }

    /// The texts, in the order of the events.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.text[start..end])
    }
}

/// Ends a batch file with the checksum of all before it.
fn append_checksum(out: &mut Vec<u8>) {
    let sum = xxhash_rust::xxh3::xxh3_64(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// `value` as unsigned LEB128: seven bits a byte, the high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).expect("seven bits") | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).expect("below 0x80"));
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).expect("a short text").to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the batch file is cut short".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        self.text(len).map(str::to_owned)
    }

    fn text(&mut self, len: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.take(len)?).map_err(|e| e.to_string())
    }

    /// An unsigned LEB128 number ([`put_varint`]).
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("the batch file holds a number too long".to_owned())
    }
}

/// The events of a batch whose row and shown key it keeps: a refusal reports at most this many
/// rejections in all, and keeping them for every event would write and sync a few bytes an
/// event for nothing.
pub(crate) const SHOWN_EVENTS: usize = super::stage::KEPT_REJECTIONS;

/// Bytes of JSON in a piece before it is handed over: well inside the processor's caches.
const PIECE_BYTES: usize = 256 * 1024;

/// What the builder hands over, in order.
#[derive(Debug)]
pub(crate) enum Part {
    /// The next bytes of the open batch's JSON array.
    Json(Vec<u8>),
    /// The batch the pieces handed over since the one before make up, its body still empty.
    Batch(Batch),
}

/// Compresses the pieces of each batch as they come, into its body: a gzip stream at the
/// fastest level, written around one deflate state kept from batch to batch. (Event JSON
/// compresses about as well at level 1 as at 6: its repeats are short-range.) A new encoder
/// for each batch allocated its window and tables, a few hundred KiB faulted in every time.
#[derive(Debug)]
pub(crate) struct Sealer {
    /// Writes into the open batch's body, after its header.
    deflate: DeflateEncoder<Vec<u8>>,
    /// The CRC-32 and length of the open batch's JSON, for the gzip trailer.
    crc: Crc,
    /// Whether a batch is open: its body has its header, and `deflate` writes into it.
    open: bool,
    /// The size of the last body: room for the next one.
    last_body: usize,
}

/// A gzip header without a name or a time: deflate, no flags, the fastest level (`XFL` 4), an
/// unknown system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

impl Default for Sealer {
    fn default() -> Self {
        Self {
            deflate: DeflateEncoder::new(Vec::new(), Compression::fast()),
            crc: Crc::new(),
            open: false,
            last_body: 0,
        }
    }
}

impl Sealer {
    /// Compresses the next piece of the open batch; gives its buffer back, emptied.
    pub(crate) fn piece(&mut self, mut json: Vec<u8>) -> Vec<u8> {
        self.open();
        self.crc.update(&json);
        self.deflate.write_all(&json).expect("writing into memory cannot fail");
        json.clear();
        json
    }

    /// `batch` with its body: the pieces since the batch before, compressed.
    pub(crate) fn seal(&mut self, batch: Batch) -> Batch {
        self.open();
        // Ends the stream, and leaves the state reset for the next batch's.
        let mut body = self.deflate.reset(Vec::new()).expect("writing into memory cannot fail");
        body.extend_from_slice(&self.crc.sum().to_le_bytes());
        body.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.open = false;
        self.last_body = body.len();
        Batch { body: Bytes::from(body), ..batch }
    }

    /// Starts the next batch's body, unless one is open.
    fn open(&mut self) {
        if std::mem::replace(&mut self.open, true) {
            return;
        }
        let mut body = Vec::with_capacity((self.last_body + self.last_body / 8).max(64 * 1024));
        body.extend_from_slice(&GZIP_HEADER);
        // The state was reset when the last batch was sealed (or is new): nothing is written
        // into the empty buffer this replaces.
        *self.deflate.get_mut() = body;
        self.crc.reset();
    }
}

/// Builds batches as events arrive: at most `max_events` events and `max_bytes` of
/// uncompressed JSON each.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    plan_id: String,
    max_events: usize,
    max_bytes: usize,
    next_index: usize,
    /// The part of the open batch's JSON not yet handed over.
    piece: Vec<u8>,
    /// Bytes of the open batch's JSON already handed over.
    shipped: usize,
    /// Buffers of pieces compressed, for the next ones.
    spares: Vec<Vec<u8>>,
    hashes: Vec<u128>,
    rows: Vec<u64>,
    shown: Shown,
}

impl BatchBuilder {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            plan_id: uuid::Uuid::new_v4().to_string(),
            max_events: max_events.max(1),
            max_bytes,
            next_index: 0,
            piece: Vec::new(),
            shipped: 0,
            spares: Vec::new(),
            hashes: Vec::new(),
            rows: Vec::new(),
            shown: Shown::default(),
        }
    }

    /// The plan the batches belong to.
    pub(crate) fn plan_id(&self) -> &str {
        &self.plan_id
    }

    /// Batches finished so far.
    pub(crate) fn finished(&self) -> usize {
        self.next_index
    }

    /// Adds an event, its JSON written by `write` straight into the open batch; hands over
    /// to `out` the pieces that filled and the batches that closed: the one before, when this
    /// event does not fit in it, or the one it fills to `max_events`. `false`: the event alone
    /// is over `max_bytes`, and cannot be sent (it is not added).
    pub(crate) fn push(
        &mut self,
        hash: u128,
        row: u64,
        shown: &str,
        write: &dyn Fn(&mut Vec<u8>),
        out: &mut Vec<Part>,
    ) -> bool {
        let start = self.piece.len();
        self.piece.push(if self.hashes.is_empty() { b'[' } else { b',' });
        write(&mut self.piece);
        // `[` and `]` around it.
        if self.piece.len() - start + 1 > self.max_bytes {
            self.piece.truncate(start);
            return false;
        }
        // With the closing `]`, over the limit: the event opens the next batch instead.
        if !self.hashes.is_empty() && self.shipped + self.piece.len() + 1 > self.max_bytes {
            let mut next = self.spare();
            next.push(b'[');
            next.extend_from_slice(&self.piece[start + 1..]);
            self.piece.truncate(start);
            self.close(next, out);
        }
        self.hashes.push(hash);
        if self.rows.len() < SHOWN_EVENTS {
            self.rows.push(row);
            self.shown.push(shown);
        }
        if self.hashes.len() >= self.max_events {
            let next = self.spare();
            self.close(next, out);
        } else if self.piece.len() >= PIECE_BYTES {
            let next = self.spare();
            let piece = std::mem::replace(&mut self.piece, next);
            self.shipped += piece.len();
            out.push(Part::Json(piece));
        }
        true
    }

    /// Closes the open batch, if it has events.
    pub(crate) fn finish(&mut self, out: &mut Vec<Part>) {
        if !self.hashes.is_empty() {
            let next = self.spare();
            self.close(next, out);
        }
    }

    /// A buffer for the next piece.
    fn spare(&mut self) -> Vec<u8> {
        self.spares.pop().unwrap_or_else(|| Vec::with_capacity(PIECE_BYTES + 4096))
    }

    /// Closes the open batch (it has events), the next one to be built in `next`.
    fn close(&mut self, next: Vec<u8>, out: &mut Vec<Part>) {
        self.piece.push(b']');
        let index = self.next_index;
        self.next_index += 1;
        // The next batch is about as large as this one.
        let events = self.hashes.len();
        let piece = std::mem::replace(&mut self.piece, next);
        let json_bytes = std::mem::take(&mut self.shipped) + piece.len();
        out.push(Part::Json(piece));
        out.push(Part::Batch(Batch {
            index,
            plan_id: self.plan_id.clone(),
            payload_id: uuid::Uuid::new_v4().to_string(),
            hashes: std::mem::replace(&mut self.hashes, Vec::with_capacity(events)),
            rows: std::mem::replace(&mut self.rows, Vec::with_capacity(events.min(SHOWN_EVENTS))),
            shown: std::mem::take(&mut self.shown),
            json_bytes,
            body: Bytes::new(),
        }));
    }

    /// Takes back the buffer of a piece compressed, to build a later one in.
    pub(crate) fn recycle(&mut self, mut json: Vec<u8>) {
        /// Buffers kept: about as many as pieces wait to be compressed.
        const KEPT: usize = 32;
        if self.spares.len() < KEPT {
            json.clear();
            self.spares.push(json);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        out
    }

    fn event(n: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"custom","key":"buy","creationDate":{n},"contextKeys":{{"user":"u"}}}}"#
        )
        .into_bytes()
    }

    fn build(builder: &mut BatchBuilder, events: u64) -> Vec<Batch> {
        let mut parts = Vec::new();
        for n in 0..events {
            let json = event(n);
            let write = |out: &mut Vec<u8>| out.extend_from_slice(&json);
            assert!(builder.push(u128::from(n), n + 1, &format!("o-{n}"), &write, &mut parts));
        }
        builder.finish(&mut parts);
        seal_all(builder, parts)
    }

    /// The batches of `parts`, sealed; the pieces' buffers go back to `builder`.
    fn seal_all(builder: &mut BatchBuilder, parts: Vec<Part>) -> Vec<Batch> {
        seal_with(&mut Sealer::default(), builder, parts)
    }

    /// [`seal_all`] by `sealer`, which may hold a batch's first pieces already.
    fn seal_with(sealer: &mut Sealer, builder: &mut BatchBuilder, parts: Vec<Part>) -> Vec<Batch> {
        let mut batches = Vec::new();
        for part in parts {
            match part {
                Part::Json(json) => {
                    let spare = sealer.piece(json);
                    assert!(spare.is_empty());
                    builder.recycle(spare);
                }
                Part::Batch(batch) => batches.push(sealer.seal(batch)),
            }
        }
        batches
    }

    #[test]
    fn batches_respect_the_event_count_and_carry_fresh_payload_ids() {
        let mut builder = BatchBuilder::new(2, 10_000);
        let batches = build(&mut builder, 5);
        let shape: Vec<_> = batches.iter().map(|b| (b.id(), b.len())).collect();
        assert_eq!(
            shape,
            [("events/0".to_owned(), 2), ("events/1".to_owned(), 2), ("events/2".to_owned(), 1)]
        );
        assert_eq!(batches[1].hashes, [2, 3]);
        assert_eq!(batches[1].rows, [3, 4]);
        assert_eq!(batches[1].shown.iter().collect::<Vec<_>>(), ["o-2", "o-3"]);
        assert_ne!(batches[0].payload_id, batches[1].payload_id);
        let json: Vec<serde_json::Value> =
            serde_json::from_slice(&gunzip(&batches[1].body)).unwrap();
        assert_eq!(json.len(), 2);
        assert_eq!(json[0]["creationDate"], 2);
        assert_eq!(batches[1].json_bytes, gunzip(&batches[1].body).len());
        assert!(batches.iter().all(|b| b.plan_id == builder.plan_id()));
        let mut none = Vec::new();
        BatchBuilder::new(2, 100).finish(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let one = event(10).len();
        let limit = one * 4 + 5; // four events, three commas and the brackets fit exactly
        let mut builder = BatchBuilder::new(1_000, limit);
        let batches = build(&mut builder, 50);
        assert!(batches.iter().all(|b| b.json_bytes <= limit), "{batches:?}");
        assert_eq!(batches[1].len(), 4);
        assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 50);
    }

    #[test]
    fn an_event_alone_over_the_byte_limit_is_refused_and_the_batch_goes_on() {
        let one = event(10).len();
        let mut builder = BatchBuilder::new(1_000, one * 2 + 3);
        let mut full = Vec::new();
        let small = |out: &mut Vec<u8>| out.extend_from_slice(&event(1));
        let large = |out: &mut Vec<u8>| out.extend_from_slice(&[b' '; 1_000]);
        assert!(builder.push(1, 1, "a", &small, &mut full));
        assert!(!builder.push(2, 2, "b", &large, &mut full));
        assert!(builder.push(3, 3, "c", &small, &mut full));
        assert!(full.is_empty());
        builder.finish(&mut full);
        let batch = seal_all(&mut builder, full).remove(0);
        assert_eq!((batch.hashes, batch.rows), (vec![1, 3], vec![1, 3]));
        let events: Vec<serde_json::Value> = serde_json::from_slice(&gunzip(&batch.body)).unwrap();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_batch_of_many_pieces_is_one_json_array_and_its_pieces_are_built_in_again() {
        // About 1 KiB an event: a batch of 1 000 spans four pieces.
        let write = |n: u64| {
            move |out: &mut Vec<u8>| {
                let padding = "x".repeat(1_000);
                out.extend_from_slice(format!(r#"{{"n":{n},"pad":"{padding}"}}"#).as_bytes());
            }
        };
        let mut builder = BatchBuilder::new(1_000, 10_000_000);
        let (mut parts, mut batches, mut sealer) = (Vec::new(), Vec::new(), Sealer::default());
        for n in 0..3_500 {
            assert!(builder.push(u128::from(n), n, "x", &write(n), &mut parts));
            // Sealed as they come, so that their buffers serve the next pieces.
            batches.extend(seal_with(&mut sealer, &mut builder, std::mem::take(&mut parts)));
        }
        builder.finish(&mut parts);
        batches.extend(seal_with(&mut sealer, &mut builder, parts));
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), [1_000, 1_000, 1_000, 500]);
        let mut next = 0;
        for batch in &batches {
            let json = gunzip(&batch.body);
            assert_eq!(json.len(), batch.json_bytes);
            let events: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
            for event in events {
                assert_eq!(event["n"], next);
                next += 1;
            }
        }
        assert_eq!(next, 3_500);
        // The few buffers of the pieces served the whole run.
        assert!(builder.spares.len() <= 2, "{}", builder.spares.len());
    }

    #[test]
    fn a_batch_file_reads_back_and_a_damaged_one_is_refused() {
        let mut builder = BatchBuilder::new(3, 10_000);
        let batch = build(&mut builder, 3).remove(0);
        let bytes = batch.encode();
        assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(Batch::decode(&damaged).unwrap_err().contains("checksum"));
        assert!(Batch::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A batch file of version 1 (written before an upgrade, read by the resumed run).
    fn encode_v1(batch: &Batch) -> Vec<u8> {
        let mut out = MAGIC_V1.to_vec();
        put_str(&mut out, &batch.plan_id);
        put_str(&mut out, &batch.payload_id);
        out.extend_from_slice(&(batch.index as u64).to_le_bytes());
        out.extend_from_slice(&(batch.json_bytes as u64).to_le_bytes());
        out.extend_from_slice(&u32::try_from(batch.len()).unwrap().to_le_bytes());
        for hash in &batch.hashes {
            out.extend_from_slice(&hash.to_le_bytes());
        }
        for row in &batch.rows {
            out.extend_from_slice(&row.to_le_bytes());
        }
        for shown in batch.shown.iter() {
            put_str(&mut out, shown);
        }
        out.extend_from_slice(&(batch.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&batch.body);
        append_checksum(&mut out);
        out
    }

    #[test]
    fn a_batch_keeps_the_rows_and_shown_keys_a_refusal_can_report() {
        let mut builder = BatchBuilder::new(5_000, 10_000_000);
        let batch = build(&mut builder, 1_500).remove(0);
        assert_eq!((batch.len(), batch.rows.len()), (1_500, SHOWN_EVENTS));
        assert_eq!(batch.shown.iter().nth(999), Some("o-999"));
        assert_eq!(Batch::decode(&batch.encode()).unwrap(), batch);
    }

    /// A batch file of version 2: version 3 without the count of rows (it had one per event).
    fn encode_v2(batch: &Batch) -> Vec<u8> {
        assert_eq!(batch.rows.len(), batch.len());
        let mut out = batch.encode();
        out.truncate(out.len() - 8);
        out[..8].copy_from_slice(MAGIC_V2);
        let at = 8 + 4 + batch.plan_id.len() + 4 + batch.payload_id.len() + 8 + 8 + 4;
        out.drain(at + 16 * batch.len()..at + 16 * batch.len() + 4);
        append_checksum(&mut out);
        out
    }

    #[test]
    fn batch_files_of_versions_1_and_2_read_back() {
        let mut builder = BatchBuilder::new(3, 10_000);
        let batch = build(&mut builder, 3).remove(0);
        assert_eq!(Batch::decode(&encode_v1(&batch)).unwrap(), batch);
        assert_eq!(Batch::decode(&encode_v2(&batch)).unwrap(), batch);
    }

    proptest::proptest! {
        /// Rows in any order and of any size, and any shown texts, read back as written.
        #[test]
        fn rows_and_shown_texts_read_back(
            events in proptest::collection::vec((proptest::prelude::any::<u64>(), ".{0,20}"), 0..50),
        ) {
            let mut shown = Shown::default();
            for (_, text) in &events {
                shown.push(text);
            }
            let batch = Batch {
                index: 7,
                plan_id: "plan".to_owned(),
                payload_id: "payload".to_owned(),
                hashes: (0..events.len() as u128).collect(),
                rows: events.iter().map(|(row, _)| *row).collect(),
                shown,
                json_bytes: 2,
                body: Bytes::from_static(b"[]"),
            };
            proptest::prop_assert_eq!(Batch::decode(&batch.encode()).unwrap(), batch.clone());
            proptest::prop_assert_eq!(Batch::decode(&encode_v2(&batch)).unwrap(), batch.clone());
            proptest::prop_assert_eq!(Batch::decode(&encode_v1(&batch)).unwrap(), batch);
        }
    }
}
