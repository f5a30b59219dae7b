//! The stage step of a metric-events sync: rows → events, checked against the query contract,
//! kept to the range the run reads, and stripped of what was already delivered.
//!
//! The contract: `event_key` (text), `context_key` (text or integer, of the sync's
//! `context_kind`) or `context_keys` (a JSON object, kind → key), `occurred_at` (a timestamp,
//! or epoch milliseconds), and optionally `metric_value` (a number), `event_id` (text or
//! integer) and `data` (a JSON object). A missing column fails the run; a bad row is rejected
//! with its reason and the others go on.

use std::{
    collections::{BTreeMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

use ldsync_core::{Cell, CellBatch, CellRow, ContextKind};
use ldsync_launchdarkly::CustomEvent;
use ldsync_state::{IdentityIndex, Rejection, UniformSort};

use super::{identity, seen::SeenSet};
use crate::{Error, Result};

/// The most rejections kept with their reasons; the rest are counted.
pub(crate) const KEPT_REJECTIONS: usize = 1_000;

/// Rows a run reads before it checks them against the delivered identities: one sorted pass
/// over the identity files per chunk, rather than one read per row. A chunk's checked rows
/// (about 160 bytes each) are held until it is staged: at 65 536 rows they no longer stayed
/// in the processor's caches, and staging took 5-8 % longer; at 8 192, checking a million
/// known identities took a third longer (more reads of the identity files, each for fewer
/// rows).
pub(crate) const CHUNK_ROWS: usize = 16_384;

/// Rows of a run's first chunk, doubled up to [`CHUNK_ROWS`]: staging starts as soon as the
/// query's first rows arrive.
pub(crate) const FIRST_CHUNK_ROWS: usize = 8_192;

/// What a run reads: the query, `$1`, the range of `occurred_at` it keeps, and what it knows.
pub(crate) struct Reading<'a> {
    /// The sync, for errors.
    pub(crate) sync: &'a str,
    /// The query.
    pub(crate) query: &'a str,
    /// The context kind of `context_key`.
    pub(crate) context_kind: &'a ContextKind,
    /// The start of the range, inclusive: also `$1`.
    pub(crate) from_ms: i64,
    /// The end of the range, exclusive; `None` for no end.
    pub(crate) until_ms: Option<i64>,
    /// The latest `occurred_at` taken: a day past the run's clock (a clock skew, not a typo
    /// in the year).
    pub(crate) future_limit_ms: i64,
}

/// What staging counted.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Rows read.
    pub(crate) rows: u64,
    /// New events handed to the batches.
    pub(crate) events: u64,
    /// Rows already delivered (by an earlier run, or earlier in this result).
    pub(crate) duplicates: u64,
    /// Rows outside the range the run reads (the query returned more than `$1` asked for).
    pub(crate) outside: u64,
    /// Rows rejected, in all.
    pub(crate) rejected: u64,
    /// The first rejections, with reasons.
    pub(crate) rejections: Vec<Rejection>,
    /// The latest `occurred_at` among the new events.
    pub(crate) latest_ms: Option<i64>,
    /// The first new events, as LaunchDarkly receives them.
    pub(crate) samples: Vec<CustomEvent>,
}

impl Counts {
    pub(crate) fn reject(&mut self, row: u64, key: Option<String>, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < KEPT_REJECTIONS {
            self.rejections.push(Rejection { row, key, reason });
        }
    }
}

/// A hasher for identity hashes, which are uniform already: their low 64 bits are the hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    #[expect(clippy::cast_possible_truncation, reason = "the low 64 bits of a uniform hash")]
    fn write_u128(&mut self, value: u128) {
        self.0 ^= value as u64;
    }
}

/// A set of identity hashes.
pub(crate) type HashSet128 = HashSet<u128, BuildHasherDefault<IdentityHasher>>;

/// One new event, ready for a batch.
pub(crate) struct NewEvent<'a> {
    /// Its identity's hash.
    pub(crate) hash: u128,
    /// Its position in the query result (1-based).
    pub(crate) row: u64,
    /// What a rejection shows: its `event_id`, else its event key.
    pub(crate) shown: &'a str,
    /// Writes its JSON, exactly as it goes into a payload, at the end of a buffer.
    pub(crate) json: &'a dyn Fn(&mut Vec<u8>),
}

/// Turns rows into new events, chunk by chunk: checks each row, drops the rows outside the
/// range and those already delivered (in the identity files, in `extra`, or earlier in this
/// run), and hands each new event to a callback in the order of the result. The callback
/// writes the event's JSON where it goes (a batch), and refuses an event too large to send.
pub(crate) struct Stager<'a> {
    reading: &'a Reading<'a>,
    known: &'a IdentityIndex,
    extra: &'a HashSet128,
    layout: Option<Columns>,
    seen: SeenSet,
    /// Reused buffers: an identity's text, and a chunk's candidates, their hash order,
    /// probes and answers (fresh ones would cost their page faults every chunk).
    identity: identity::EventIdBuffer,
    owned: Owned,
    candidates: Vec<Candidate<'static>>,
    order: Vec<(u128, u32)>,
    sort: UniformSort<(u128, u32)>,
    probes: Vec<u128>,
    found: Vec<bool>,
    new: Vec<bool>,
    heads: Heads,
    pub(crate) counts: Counts,
}

/// A checked row: its identity hash, its position in the result, and what it holds.
type Candidate<'r> = (u128, u64, Parsed<'r>);

/// An empty buffer of candidates with the room of `buffer`, for rows of another lifetime
/// (`collect` reuses the allocation of an iterator over a `Vec` of a type of the same layout).
fn recycle<'y>(mut buffer: Vec<Candidate<'_>>) -> Vec<Candidate<'y>> {
    buffer.clear();
    buffer.into_iter().map(|_| unreachable!("the buffer is empty")).collect()
}

impl<'a> Stager<'a> {
    pub(crate) fn new(
        reading: &'a Reading<'a>,
        known: &'a IdentityIndex,
        extra: &'a HashSet128,
    ) -> Self {
        Self {
            reading,
            known,
            extra,
            layout: None,
            seen: SeenSet::default(),
            identity: identity::EventIdBuffer::default(),
            owned: Owned::default(),
            candidates: Vec::new(),
            order: Vec::new(),
            sort: UniformSort::default(),
            probes: Vec::new(),
            found: Vec::new(),
            new: Vec::new(),
            heads: Heads::new(reading.context_kind.as_str()),
            counts: Counts::default(),
        }
    }

    /// The identities staged so far (each new event's, and those of events rejected for
    /// their size), leaving the stager an empty set.
    pub(crate) fn take_seen(&mut self) -> SeenSet {
        std::mem::take(&mut self.seen)
    }

    /// Stages the rows of `chunk`, calling `new_event` for each new event; an event it
    /// refuses (`false`: alone, larger than a request may be) is rejected.
    pub(crate) fn chunk(
        &mut self,
        chunk: &[CellBatch],
        mut new_event: impl FnMut(NewEvent<'_>) -> bool,
    ) -> Result<()> {
        let Some(first) = chunk.first() else { return Ok(()) };
        if self.layout.is_none() {
            self.layout = Some(columns(self.reading.sync, first)?);
        }
        let layout = self.layout.as_ref().expect("set from the first batch");
        // 1. Check each row, and hash the identity of each good one.
        // The hashes to look up are noted as the rows are checked: a chunk's checked rows are
        // megabytes, read again only once, in order, to hand the new events over.
        let rows = chunk.iter().map(CellBatch::len).sum();
        let mut candidates: Vec<Candidate<'_>> = recycle(std::mem::take(&mut self.candidates));
        candidates.reserve(rows);
        let order = &mut self.order;
        order.clear();
        for row in chunk.iter().flat_map(CellBatch::rows) {
            self.counts.rows += 1;
            match parse(row, layout, self.reading, &mut self.owned) {
                Ok(None) => self.counts.outside += 1,
                Ok(Some(parsed)) => {
                    let hash = parsed.identity(&mut self.identity, &self.owned);
                    if self.extra.is_empty() || !self.extra.contains(&hash) {
                        let index = u32::try_from(candidates.len()).expect("a chunk is small");
                        order.push((hash, index));
                    }
                    candidates.push((hash, self.counts.rows, parsed));
                }
                Err((key, reason)) => self.counts.reject(self.counts.rows, key, reason),
            }
        }
        // 2. Ask the identity files about all of them at once, in hash order, and add the ones
        // they do not know to the identities of this run, in the same order (see `SeenSet`):
        // a row repeated in the result is new once, at its first position.
        self.sort.sort(order, |(hash, _)| *hash);
        self.probes.clear();
        self.probes.extend(order.iter().map(|(hash, _)| *hash));
        self.found.clear();
        self.found.resize(order.len(), false);
        self.known
            .find_sorted(&self.probes, &mut self.found)
            .map_err(|source| Error::State { sync: self.reading.sync.to_owned(), source })?;
        self.new.clear();
        self.new.resize(candidates.len(), false);
        self.seen.reserve(order.len());
        for (&(hash, index), &found) in order.iter().zip(&self.found) {
            self.new[index as usize] = !found && self.seen.insert(hash);
        }
        // 3. The new ones, in the order of the result.
        for ((hash, row, parsed), &new) in candidates.iter().zip(&self.new) {
            if !new {
                self.counts.duplicates += 1;
                continue;
            }
            let (owned, heads) = (&self.owned, self.heads.with_key(parsed.key));
            let json = |out: &mut Vec<u8>| parsed.write_json(out, owned, heads);
            let shown = parsed.shown();
            if !new_event(NewEvent { hash: *hash, row: *row, shown, json: &json }) {
                self.counts.reject(
                    *row,
                    Some(shown.to_owned()),
                    "the event is larger than the 10 MB LaunchDarkly takes in one request (shrink `data`)"
                        .to_owned(),
                );
                continue;
            }
            self.counts.events += 1;
            self.counts.latest_ms = self.counts.latest_ms.max(Some(parsed.at));
            if self.counts.samples.len() < SAMPLES {
                self.counts.samples.push(parsed.event(&self.owned));
            }
        }
        self.candidates = recycle(candidates);
        self.owned.clear();
        Ok(())
    }
}

/// How many sample events a report shows.
pub(crate) const SAMPLES: usize = 5;

/// Where the contract's columns are in the result.
struct Columns {
    event_key: usize,
    contexts: Contexts,
    occurred_at: usize,
    metric_value: Option<usize>,
    event_id: Option<usize>,
    data: Option<usize>,
}

enum Contexts {
    One(usize),
    Many(usize),
}

fn columns(sync: &str, batch: &CellBatch) -> Result<Columns> {
    let contract = |message: String| Error::Contract { sync: sync.to_owned(), message };
    let found = || {
        if batch.columns.is_empty() {
            "it returned no columns".to_owned()
        } else {
            let names: Vec<_> = batch.columns.iter().map(|c| format!("`{c}`")).collect();
            format!("it returned {}", names.join(", "))
        }
    };
    let event_key = batch.column_index("event_key");
    let occurred_at = batch.column_index("occurred_at");
    let contexts = match (batch.column_index("context_key"), batch.column_index("context_keys")) {
        (Some(_), Some(_)) => {
            return Err(contract(
                "the query returns both `context_key` and `context_keys`: return `context_key` for the sync's context kind, or `context_keys` (a JSON object, kind → key), not both".to_owned(),
            ))
        }
        (Some(one), None) => Some(Contexts::One(one)),
        (None, Some(many)) => Some(Contexts::Many(many)),
        (None, None) => None,
    };
    let (Some(event_key), Some(contexts), Some(occurred_at)) = (event_key, contexts, occurred_at)
    else {
        let mut missing = Vec::new();
        if event_key.is_none() {
            missing.push("`event_key`");
        }
        if batch.column_index("context_key").is_none()
            && batch.column_index("context_keys").is_none()
        {
            missing.push("`context_key` (or `context_keys`)");
        }
        if occurred_at.is_none() {
            missing.push("`occurred_at`");
        }
        return Err(contract(format!(
            "the query must return `event_key`, `context_key` (or `context_keys`) and `occurred_at`, and is missing {}; {}",
            missing.join(", "),
            found()
        )));
    };
    Ok(Columns {
        event_key,
        contexts,
        occurred_at,
        metric_value: batch.column_index("metric_value"),
        event_id: batch.column_index("event_id"),
        data: batch.column_index("data"),
    })
}

/// A key as text: borrowed from the row, or an integer's decimal digits, held inline (an
/// allocation per integer key was a tenth of staging's time).
#[derive(Debug, Clone, Copy)]
enum KeyText<'r> {
    Borrowed(&'r str),
    /// The digits are `bytes[start..]`.
    Digits {
        start: u8,
        bytes: [u8; 20],
    },
}

impl KeyText<'_> {
    fn digits(number: i64) -> Self {
        let mut bytes = [0; 20];
        let mut at = bytes.len();
        let mut rest = number.unsigned_abs();
        loop {
            at -= 1;
            bytes[at] = b'0' + u8::try_from(rest % 10).expect("a digit");
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if number < 0 {
            at -= 1;
            bytes[at] = b'-';
        }
        Self::Digits { start: u8::try_from(at).expect("at most 20"), bytes }
    }
}

impl std::ops::Deref for KeyText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Borrowed(text) => text,
            Self::Digits { start, bytes } => {
                std::str::from_utf8(&bytes[usize::from(*start)..]).expect("ASCII digits")
            }
        }
    }
}

/// A key column as text, or why the row is rejected.
fn key_text<'r>(value: Cell<'r>, column: &str) -> Result<KeyText<'r>, String> {
    match value {
        Cell::Text("") => Err(format!("`{column}` is empty")),
        Cell::Text(text) => Ok(KeyText::Borrowed(text)),
        Cell::Int(number) => Ok(KeyText::digits(number)),
        Cell::Null => Err(format!("`{column}` is NULL")),
        other => Err(format!("`{column}` is a {}, expected text", other.type_name())),
    }
}

/// A JSON object column: JSON, or text holding JSON (DuckDB hands `JSON` over as text).
fn json_object(
    value: Cell<'_>,
    column: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let json: serde_json::Value = match value {
        Cell::Null => return Ok(None),
        Cell::Json(text) | Cell::Text(text) => serde_json::from_str(text)
            .map_err(|err| format!("`{column}` is not valid JSON: {err}"))?,
        other => {
            return Err(format!("`{column}` is a {}, expected a JSON object", other.type_name()))
        }
    };
    match json {
        serde_json::Value::Object(map) => Ok(Some(map)),
        serde_json::Value::Null => Ok(None),
        other => Err(format!("`{column}` is {}, expected a JSON object", json_type(&other))),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The contexts of one event.
#[derive(Clone, Copy)]
enum EventContexts<'r> {
    /// `context_key`, of the sync's kind.
    One(&'r str, KeyText<'r>),
    /// `context_keys`, kind → key, sorted by kind: its place in [`Owned::contexts`].
    Many(u32),
}

/// What checked rows own (`context_keys` and `data` objects, both rare), kept aside for the
/// chunk, so that a checked row is plain data: a chunk's 16 384 of them are let go without a
/// pass over them (a pass that was a twentieth of staging), and take less room.
#[derive(Default)]
struct Owned {
    contexts: Vec<BTreeMap<String, String>>,
    data: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Owned {
    fn clear(&mut self) {
        self.contexts.clear();
        self.data.clear();
    }
}

/// The place of the next item pushed onto `items`.
fn place<T>(items: &[T]) -> u32 {
    u32::try_from(items.len()).expect("a chunk holds fewer than 2^32 rows")
}

fn context_keys<'r>(
    value: Cell<'r>,
    kind: &'r ContextKind,
    contexts: &Contexts,
    owned: &mut Owned,
) -> Result<EventContexts<'r>, String> {
    match contexts {
        Contexts::One(_) => Ok(EventContexts::One(kind.as_str(), key_text(value, "context_key")?)),
        Contexts::Many(_) => {
            let map = json_object(value, "context_keys")?
                .ok_or_else(|| "`context_keys` is NULL".to_owned())?;
            if map.is_empty() {
                return Err("`context_keys` is empty: expected at least one kind → key".to_owned());
            }
            let mut keys = BTreeMap::new();
            for (kind, key) in map {
                ContextKind::new(kind.as_str())
                    .map_err(|err| format!("`context_keys` has an {err}"))?;
                let key = match key {
                    serde_json::Value::String(text) if !text.is_empty() => text,
                    serde_json::Value::Number(number) if number.is_i64() || number.is_u64() => {
                        number.to_string()
                    }
                    other => {
                        return Err(format!(
                            "`context_keys` gives kind `{kind}` {}, expected a non-empty string",
                            if other.as_str() == Some("") {
                                "an empty key"
                            } else {
                                json_type(&other)
                            }
                        ))
                    }
                };
                keys.insert(kind, key);
            }
            let at = place(&owned.contexts);
            owned.contexts.push(keys);
            Ok(EventContexts::Many(at))
        }
    }
}

/// How far past the clock an `occurred_at` may lie: a clock skew, not a typo in the year.
pub(crate) const FUTURE_TOLERANCE_MS: i64 = 24 * 3_600 * 1_000;

fn occurred_at(value: Cell<'_>, future_limit_ms: i64) -> Result<i64, String> {
    match value {
        // An event from the future would move the cursor past every late row still to come.
        Cell::TimestampMillis(ms) | Cell::Int(ms) if ms > future_limit_ms => Err(format!(
            "`occurred_at` {} is more than a day in the future",
            chrono::DateTime::from_timestamp_millis(ms)
                .map_or_else(|| format!("{ms} ms"), |at| at.to_rfc3339())
        )),
        Cell::TimestampMillis(ms) | Cell::Int(ms) => Ok(ms),
        Cell::Null => Err("`occurred_at` is NULL".to_owned()),
        other => Err(format!(
            "`occurred_at` is a {}, expected a timestamp or epoch milliseconds",
            other.type_name()
        )),
    }
}

fn metric_value(value: Cell<'_>) -> Result<Option<f64>, String> {
    #[expect(clippy::cast_precision_loss, reason = "a metric value is a JSON number, an f64")]
    let number = match value {
        Cell::Null => return Ok(None),
        Cell::Int(number) => number as f64,
        Cell::Float(number) => number,
        other => {
            return Err(format!("`metric_value` is a {}, expected a number", other.type_name()))
        }
    };
    if number.is_finite() {
        Ok(Some(number))
    } else {
        Err(format!("`metric_value` is {number}, expected a finite number"))
    }
}

/// One checked row, borrowing from it; plain data (`Copy`), so that a chunk of them is let go
/// at once.
#[derive(Clone, Copy)]
pub(crate) struct Parsed<'r> {
    key: &'r str,
    at: i64,
    value: Option<f64>,
    contexts: EventContexts<'r>,
    /// Its place in [`Owned::data`].
    data: Option<u32>,
    event_id: Option<KeyText<'r>>,
}

/// `text` as a JSON string, byte for byte as serde_json writes it. Keys and ids rarely hold a
/// character to escape, and copying them as they are is most of the cost of an event's JSON.
fn write_str(out: &mut Vec<u8>, text: &str) {
    if is_plain(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to memory cannot fail");
    }
}

/// Whether serde_json writes `bytes` as they are: no control character, `"` or `\\` (it
/// escapes those and nothing else). Eight bytes at a time.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A high bit set where a byte of `word` is below `n` (exact for the word as a whole).
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5c), 1) != 0
        {
            return false;
        }
    }
    words.remainder().iter().all(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
}

/// The decimal digits of 0 to 99, two bytes each.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n: u8 = 0;
    while n < 100 {
        let at = 2 * n as usize;
        pairs[at] = b'0' + n / 10;
        pairs[at + 1] = b'0' + n % 10;
        n += 1;
    }
    pairs
};

/// A `creationDate` (Unix milliseconds) as JSON. The times of 2001 to 2286 have 13 digits,
/// written at once into a fixed array (`itoa`'s digits of any length, copied after, were a
/// twentieth of staging); others are written by `itoa`.
fn write_millis(out: &mut Vec<u8>, millis: i64) {
    const THIRTEEN_DIGITS: std::ops::Range<i64> = 1_000_000_000_000..10_000_000_000_000;
    if !THIRTEEN_DIGITS.contains(&millis) {
        out.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes());
        return;
    }
    let millis = millis.unsigned_abs();
    let four = |digits: &mut [u8], value: u64| {
        let (high, low) = (value / 100 * 2, value % 100 * 2);
        let pair = |at: u64| {
            let at = usize::try_from(at).expect("below 200");
            [DIGIT_PAIRS[at], DIGIT_PAIRS[at + 1]]
        };
        digits[..2].copy_from_slice(&pair(high));
        digits[2..4].copy_from_slice(&pair(low));
    };
    let (high, low) = (millis / 100_000_000, millis % 100_000_000);
    let mut digits = [0; 13];
    digits[0] = b'0' + u8::try_from(high / 10_000).expect("one digit");
    four(&mut digits[1..5], high % 10_000);
    four(&mut digits[5..9], low / 10_000);
    four(&mut digits[9..], low % 10_000);
    out.extend_from_slice(&digits);
}

/// `value` as serde_json writes it. Metric values are mostly amounts with a few decimals,
/// such as `12.5`; those are written from their integer digits, and anything else (or
/// anything close to where serde_json switches to an exponent) by serde_json.
fn write_f64(out: &mut Vec<u8>, value: f64) {
    const POWERS: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];
    let magnitude = value.abs();
    if (1e-3..1e15).contains(&magnitude) {
        for (decimals, power) in POWERS.iter().enumerate() {
            let scaled = (magnitude * power).round();
            // The shortest decimals that read back as `value`: what serde_json writes too.
            if (scaled / power).to_bits() == magnitude.to_bits() && scaled < 9_007_199_254_740_992.0
            {
                #[expect(clippy::cast_possible_truncation, reason = "a whole number below 2^53")]
                #[expect(clippy::cast_sign_loss, reason = "the magnitude is positive")]
                let digits = scaled as u64;
                #[expect(clippy::cast_possible_truncation, reason = "a power of ten up to 10^4")]
                #[expect(clippy::cast_sign_loss, reason = "a power of ten is positive")]
                let unit = *power as u64;
                if value < 0.0 {
                    out.push(b'-');
                }
                let mut buffer = itoa::Buffer::new();
                out.extend_from_slice(buffer.format(digits / unit).as_bytes());
                out.push(b'.');
                if decimals == 0 {
                    out.push(b'0');
                } else {
                    let fraction = buffer.format(digits % unit + unit).as_bytes();
                    // `unit` added and its leading `1` dropped: the fraction's leading zeros.
                    out.extend_from_slice(&fraction[1..]);
                }
                return;
            }
        }
    }
    serde_json::to_writer(&mut *out, &value).expect("writing to memory cannot fail");
}

impl Parsed<'_> {
    /// What a rejection shows: the `event_id`, else the event key.
    fn shown(&self) -> &str {
        self.event_id.as_deref().unwrap_or(self.key)
    }

    /// The hash of the identity: the `event_id` within its event key, or the content.
    fn identity(&self, buffer: &mut identity::EventIdBuffer, owned: &Owned) -> u128 {
        match &self.event_id {
            Some(id) => identity::hash_event_id(buffer, self.key, id),
            None => identity::hash(&identity::from_content(&self.event(owned))),
        }
    }

    /// The event as LaunchDarkly takes it, owned.
    fn event(&self, owned: &Owned) -> CustomEvent {
        CustomEvent {
            key: self.key.to_owned(),
            creation_date: self.at,
            metric_value: self.value,
            context_keys: match &self.contexts {
                EventContexts::One(kind, key) => {
                    BTreeMap::from([((*kind).to_owned(), (**key).to_owned())])
                }
                EventContexts::Many(at) => owned.contexts[*at as usize].clone(),
            },
            data: self.data.map(|at| owned.data[at as usize].clone()),
        }
    }

    /// The event's JSON, the same bytes as [`CustomEvent::to_json`], written without building
    /// the event; `heads` holds its first bytes (for its event key) and those before a key of
    /// the sync's context kind.
    fn write_json(&self, out: &mut Vec<u8>, owned: &Owned, heads: &Heads) {
        debug_assert_eq!(heads.key, self.key, "the heads are for the event's key");
        out.extend_from_slice(&heads.event);
        write_millis(out, self.at);
        if let Some(value) = self.value {
            out.extend_from_slice(br#","metricValue":"#);
            write_f64(out, value);
        }
        match &self.contexts {
            EventContexts::One(kind, key) => {
                debug_assert_eq!(*kind, heads.kind, "`context_key` is of the sync's kind");
                out.extend_from_slice(&heads.context);
                write_str(out, key);
            }
            EventContexts::Many(at) => {
                out.extend_from_slice(br#","contextKeys":{"#);
                for (index, (kind, key)) in owned.contexts[*at as usize].iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_str(out, kind);
                    out.push(b':');
                    write_str(out, key);
                }
            }
        }
        out.push(b'}');
        if let Some(at) = self.data {
            out.extend_from_slice(br#","data":"#);
            serde_json::to_writer(&mut *out, &owned.data[at as usize])
                .expect("writing to memory cannot fail");
        }
        out.push(b'}');
    }
}

/// The bytes that open every event's JSON up to its `creationDate`, for one event key, and
/// those that open its `contextKeys` for a key of the sync's context kind: written once
/// rather than for each event (a query's events mostly share one key), they are a third of
/// the copies an event's JSON takes.
struct Heads {
    /// The event key `event` is for.
    key: String,
    /// `{"kind":"custom","key":KEY,"creationDate":`
    event: Vec<u8>,
    /// The sync's context kind.
    kind: String,
    /// `,"contextKeys":{KIND:`
    context: Vec<u8>,
}

impl Heads {
    fn new(kind: &str) -> Self {
        let mut context = br#","contextKeys":{"#.to_vec();
        write_str(&mut context, kind);
        context.push(b':');
        let mut heads =
            Self { key: String::new(), event: Vec::new(), kind: kind.to_owned(), context };
        heads.write_event_head();
        heads
    }

    /// The heads for events of `key`.
    fn with_key(&mut self, key: &str) -> &Self {
        if self.key != key {
            key.clone_into(&mut self.key);
            self.write_event_head();
        }
        self
    }

    fn write_event_head(&mut self) {
        self.event.clear();
        self.event.extend_from_slice(br#"{"kind":"custom","key":"#);
        write_str(&mut self.event, &self.key);
        self.event.extend_from_slice(br#","creationDate":"#);
    }
}

/// One row → a checked event, or why it is rejected. `Ok(None)`: outside the range.
fn parse<'r>(
    row: CellRow<'r>,
    layout: &Columns,
    reading: &'r Reading<'_>,
    owned: &mut Owned,
) -> Result<Option<Parsed<'r>>, (Option<String>, String)> {
    let at = occurred_at(row.get(layout.occurred_at), reading.future_limit_ms)
        .map_err(|reason| (None, reason))?;
    if at < reading.from_ms || reading.until_ms.is_some_and(|until| at >= until) {
        return Ok(None);
    }
    let event_id = match layout.event_id.map(|column| row.get(column)) {
        None | Some(Cell::Null) => None,
        Some(value) => Some(key_text(value, "event_id").map_err(|reason| (None, reason))?),
    };
    let owned_id = || event_id.as_ref().map(|id| (**id).to_owned());
    let key = match row.get(layout.event_key) {
        Cell::Text("") => return Err((owned_id(), "`event_key` is empty".to_owned())),
        Cell::Text(text) => text,
        Cell::Null => return Err((owned_id(), "`event_key` is NULL".to_owned())),
        other => {
            return Err((
                owned_id(),
                format!("`event_key` is a {}, expected text", other.type_name()),
            ))
        }
    };
    let shown = || owned_id().or_else(|| Some(key.to_owned()));
    let column = match layout.contexts {
        Contexts::One(column) | Contexts::Many(column) => column,
    };
    let contexts = context_keys(row.get(column), reading.context_kind, &layout.contexts, owned)
        .map_err(|reason| (shown(), reason))?;
    let value = match layout.metric_value {
        Some(column) => metric_value(row.get(column)).map_err(|reason| (shown(), reason))?,
        None => None,
    };
    let data = match layout.data {
        // An empty object says nothing: it is the same event as no `data`.
        Some(column) => json_object(row.get(column), "data")
            .map_err(|reason| (shown(), reason))?
            .filter(|map| !map.is_empty())
            .map(|map| {
                let at = place(&owned.data);
                owned.data.push(map);
                at
            }),
        None => None,
    };
    Ok(Some(Parsed { key, at, value, contexts, data, event_id }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use ldsync_core::{RowBatch, Value};
    use ldsync_launchdarkly::MAX_EVENT_PAYLOAD_BYTES;
    use ldsync_state::StateDir;

    use super::*;
    use crate::events::batches::{Batch, BatchBuilder, Part};

    fn batch(columns: &[&str], rows: Vec<Vec<Value>>) -> RowBatch {
        let columns: Arc<[String]> = columns.iter().map(|c| (*c).to_owned()).collect();
        RowBatch { columns, rows }
    }

    /// What staging made of some rows: its counts, and each new event's hash, row and JSON.
    #[derive(Debug)]
    struct Staged {
        counts: Counts,
        events: Vec<(u128, u64, serde_json::Value)>,
    }

    /// `run` given a stager of sync `checkouts` (context kind `user`, from 1 000 ms to
    /// `until_ms`) with an empty state, `known` identities in hand.
    fn with_stager<T>(
        known: &[String],
        until_ms: Option<i64>,
        run: impl FnOnce(&mut Stager<'_>) -> T,
    ) -> T {
        let kind = ContextKind::user();
        let reading = Reading {
            sync: "checkouts",
            query: "select …",
            context_kind: &kind,
            from_ms: 1_000,
            until_ms,
            future_limit_ms: chrono::Utc::now().timestamp_millis() + FUTURE_TOLERANCE_MS,
        };
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("state")).unwrap();
        let index =
            state.event_ledger(&"checkouts".parse().unwrap()).unwrap().identities().unwrap();
        let extra: HashSet128 = known.iter().map(|identity| identity::hash(identity)).collect();
        run(&mut Stager::new(&reading, &index, &extra))
    }

    fn staged(rows: &RowBatch, known: &[String], until_ms: Option<i64>) -> Result<Staged> {
        with_stager(known, until_ms, |stager| staged_by(stager, rows))
    }

    fn staged_by(stager: &mut Stager<'_>, rows: &RowBatch) -> Result<Staged> {
        // The events go into batches as in a run, one batch for all.
        let mut builder = BatchBuilder::new(usize::MAX, MAX_EVENT_PAYLOAD_BYTES);
        let mut full = Vec::new();
        // Two chunks, so that a row repeated across chunks is seen as such.
        let (first, second) = rows.rows.split_at(rows.rows.len() / 2);
        for part in [first, second] {
            let chunk = RowBatch { columns: rows.columns.clone(), rows: part.to_vec() };
            stager.chunk(&[CellBatch::from_rows(&chunk)], |event| {
                builder.push(event.hash, event.row, event.shown, event.json, &mut full)
            })?;
        }
        builder.finish(&mut full);
        let (mut events, mut json) = (Vec::new(), Vec::new());
        for part in full {
            let Batch { hashes, rows, .. } = match part {
                Part::Json(piece) => {
                    json.extend_from_slice(&piece);
                    continue;
                }
                Part::Batch(batch) => batch,
            };
            let values: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
            json.clear();
            events.extend(hashes.into_iter().zip(rows).zip(values).map(|((h, r), v)| (h, r, v)));
        }
        Ok(Staged { counts: std::mem::take(&mut stager.counts), events })
    }

    fn text(value: &str) -> Value {
        Value::Text(value.to_owned())
    }

    #[test]
    fn events_of_keys_in_turn_are_written_byte_for_byte_as_their_events() {
        let keys = ["buy", "buy", "a\"b", "buy", "日本", "view", "view", "buy"];
        let events: Vec<CustomEvent> = keys
            .iter()
            .zip(1_u32..)
            .map(|(key, i)| CustomEvent {
                key: (*key).to_owned(),
                creation_date: 2_000 + i64::from(i),
                metric_value: (i % 3 != 0).then_some(f64::from(i) * 1.5),
                context_keys: BTreeMap::from([("user".to_owned(), format!("u\\{i}"))]),
                data: None,
            })
            .collect();
        let rows = batch(
            &["event_key", "context_key", "occurred_at", "metric_value"],
            events
                .iter()
                .map(|event| {
                    vec![
                        Value::Text(event.key.clone()),
                        Value::Text(event.context_keys["user"].clone()),
                        Value::TimestampMillis(event.creation_date),
                        event.metric_value.map_or(Value::Null, Value::Float),
                    ]
                })
                .collect(),
        );
        let mut written = Vec::new();
        with_stager(&[], None, |stager| {
            stager.chunk(&[CellBatch::from_rows(&rows)], |event| {
                let mut json = Vec::new();
                (event.json)(&mut json);
                written.push(json);
                true
            })
        })
        .unwrap();
        let expected: Vec<Vec<u8>> = events.iter().map(CustomEvent::to_json).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in [
            "",
            "user-1",
            "é ü 日本",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{7f}\u{1f}",
            "</script>",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    proptest! {
        /// Checking eight bytes at a time finds what a byte at a time finds.
        #[test]
        fn plain_text_is_found_as_byte_by_byte(
            text in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0_u8..0x20, 0x20_u8..0x7f, 0x80_u8..=0xff],
                0..40,
            ),
        ) {
            let expected = text.iter().all(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
            prop_assert_eq!(is_plain(&text), expected);
        }

        /// A `creationDate` is written as serde_json writes the number, at the edges of the
        /// thirteen-digit range and anywhere.
        #[test]
        fn millis_are_written_as_serde_json_writes_them(
            millis in prop_oneof![
                any::<i64>(),
                999_999_999_990_i64..1_000_000_000_010,
                9_999_999_999_990_i64..10_000_000_000_010,
                1_000_000_000_000_i64..10_000_000_000_000,
            ],
        ) {
            let mut out = b"[".to_vec();
            write_millis(&mut out, millis);
            let expected = serde_json::to_vec(&millis).unwrap();
            prop_assert_eq!(&out[1..], expected.as_slice());
        }
    }

    #[test]
    fn missing_columns_fail_the_run_naming_what_was_found() {
        let rows = batch(&["event_key", "user_id"], vec![]);
        let err = staged(&rows, &[], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sync `checkouts`: the query must return `event_key`, `context_key` (or `context_keys`) and `occurred_at`, and is missing `context_key` (or `context_keys`), `occurred_at`; it returned `event_key`, `user_id`"
        );
        let both = batch(&["event_key", "context_key", "context_keys", "occurred_at"], vec![]);
        assert!(staged(&both, &[], None).is_err());
    }

    #[test]
    fn bad_rows_are_rejected_with_their_reason_and_the_rest_go_on() {
        let columns =
            ["event_id", "event_key", "context_key", "occurred_at", "metric_value", "data"];
        let good = || {
            vec![
                Value::Null,
                text("buy"),
                text("u-1"),
                Value::TimestampMillis(2_000),
                Value::Float(3.5),
                Value::Null,
            ]
        };
        let with = |index: usize, value: Value| {
            let mut row = good();
            row[index] = value;
            row
        };
        let rows = batch(
            &columns,
            vec![
                good(),
                with(1, text("")),
                with(1, Value::Null),
                with(2, Value::Null),
                with(3, Value::Null),
                with(3, text("yesterday")),
                with(4, text("12")),
                with(4, Value::Float(f64::NAN)),
                with(5, Value::Json(serde_json::json!([1]))),
                with(5, text("{not json")),
                with(0, text("")),
                with(3, Value::Int(5_000)), // epoch milliseconds are fine
                with(5, text(r#"{"plan": "pro"}"#)),
                with(
                    5,
                    Value::Json(serde_json::json!({"blob": "x".repeat(MAX_EVENT_PAYLOAD_BYTES)})),
                ),
            ],
        );
        let staged = staged(&rows, &[], None).unwrap();
        let reasons: Vec<_> =
            staged.counts.rejections.iter().map(|r| (r.row, r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (2, "`event_key` is empty"),
                (3, "`event_key` is NULL"),
                (4, "`context_key` is NULL"),
                (5, "`occurred_at` is NULL"),
                (6, "`occurred_at` is a text, expected a timestamp or epoch milliseconds"),
                (7, "`metric_value` is a text, expected a number"),
                (8, "`metric_value` is NaN, expected a finite number"),
                (9, "`data` is an array, expected a JSON object"),
                (10, "`data` is not valid JSON: key must be a string at line 1 column 2"),
                (11, "`event_id` is empty"),
                (14, "the event is larger than the 10 MB LaunchDarkly takes in one request (shrink `data`)"),
            ]
        );
        assert_eq!(staged.counts.rejections[0].key.as_deref(), None);
        assert_eq!(staged.counts.rejections[2].key.as_deref(), Some("buy"));
        assert_eq!((staged.counts.rows, staged.counts.rejected, staged.events.len()), (14, 11, 3));
        let with_data = staged.events.iter().find_map(|(.., json)| json.get("data")).unwrap();
        assert_eq!(with_data["plan"], "pro");
        assert_eq!(staged.counts.latest_ms, Some(5_000));
        // The JSON written by hand is the JSON of the event, byte for byte.
        assert_eq!(staged.counts.samples.len(), 3);
        for ((.., json), sample) in staged.events.iter().zip(&staged.counts.samples) {
            assert_eq!(serde_json::to_vec(json).unwrap().len(), sample.to_json().len());
            assert_eq!(
                json,
                &serde_json::from_slice::<serde_json::Value>(&sample.to_json()).unwrap()
            );
        }
    }

    #[test]
    fn several_context_kinds_come_as_a_json_object() {
        let rows = batch(
            &["event_key", "context_keys", "occurred_at"],
            vec![
                vec![
                    text("buy"),
                    Value::Json(serde_json::json!({"user": "u-1", "organization": 7})),
                    Value::Int(2_000),
                ],
                vec![text("buy"), text(r#"{"user": "u-2"}"#), Value::Int(2_000)],
                vec![text("buy"), Value::Json(serde_json::json!({})), Value::Int(2_000)],
                vec![
                    text("buy"),
                    Value::Json(serde_json::json!({"multi": "x"})),
                    Value::Int(2_000),
                ],
                vec![text("buy"), Value::Json(serde_json::json!({"user": ""})), Value::Int(2_000)],
            ],
        );
        let staged = staged(&rows, &[], None).unwrap();
        assert_eq!(staged.events.len(), 2);
        let keys = staged
            .events
            .iter()
            .map(|(.., json)| &json["contextKeys"])
            .find(|keys| keys.as_object().unwrap().len() == 2)
            .unwrap();
        assert_eq!(keys["organization"], "7");
        let rejections = &staged.counts.rejections;
        assert_eq!(staged.counts.rejected, 3);
        assert!(rejections[1].reason.contains("reserved"), "{rejections:?}");
        assert!(rejections[2].reason.contains("empty key"), "{rejections:?}");
    }

    #[test]
    fn known_and_repeated_rows_are_skipped_and_the_range_is_kept() {
        let columns = ["event_id", "event_key", "context_key", "occurred_at"];
        let row =
            |id: Value, at: i64| vec![id, text("buy"), text("u-1"), Value::TimestampMillis(at)];
        let rows = batch(
            &columns,
            vec![
                row(text("o-1"), 2_000),
                row(text("o-2"), 2_000),
                row(text("o-2"), 2_000), // the same order twice in the result
                row(Value::Null, 3_000),
                row(Value::Null, 3_000), // the same content twice, no id
                row(text("o-3"), 500),   // before `$1`: the query read too much
                row(text("o-4"), 9_000), // at the end of the range
            ],
        );
        let known = [identity::from_event_id("buy", "o-1")];
        let staged = staged(&rows, &known, Some(9_000)).unwrap();
        let ids: Vec<_> = staged.events.iter().map(|(hash, row, _)| (*hash, *row)).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], (identity::hash(&identity::from_event_id("buy", "o-2")), 2));
        assert_eq!(ids[1].1, 4);
        let content = serde_json::from_value(staged.events[1].2.clone()).unwrap();
        assert_eq!(ids[1].0, identity::hash(&identity::from_content(&content)));
        let counts = &staged.counts;
        assert_eq!((counts.duplicates, counts.outside, counts.rejected), (3, 2, 0));
    }

    proptest! {
        /// Metric values are written byte for byte as serde_json writes them: amounts with
        /// a few decimals by the fast path, anything else by serde_json.
        #[test]
        fn metric_values_are_written_as_serde_json_writes_them(
            value in prop_oneof![
                (any::<i64>(), 0_u32..8).prop_map(|(units, decimals)| {
                    format!("{}e-{decimals}", units % 10_i64.pow(15)).parse().unwrap()
                }),
                (0_i64..100_000, 0_u32..6).prop_map(|(units, decimals)| {
                    format!("{units}e-{decimals}").parse().unwrap()
                }),
                any::<f64>().prop_filter("finite", |v| v.is_finite()),
                prop::sample::select(vec![
                    0.0, -0.0, 1e-3, 9.999e-4, 1e15, 999_999_999_999_999.9, 1e16, 0.1, 0.2, 0.3,
                    12.5, -12.5, 1e14 + 0.5, 4_503_599_627_370_496.5, 2.0_f64.powi(53), 1e-7,
                ]),
            ],
        ) {
            let mut fast = Vec::new();
            write_f64(&mut fast, value);
            prop_assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{:?}", value
            );
        }
    }
}
