//! The check of a metric-event import ([`check`]): one hand-written pass over the bytes that
//! builds nothing, so a payload of 50 000 events costs its decompression and that pass, not a
//! million allocations. It accepts exactly the bodies serde_json reads into values (the same
//! syntax, UTF-8, escapes, paired surrogates, number range and nesting limit), so a stored
//! payload always reads back, and says whether each element is an object of `kind` `custom`.
//! Plain ASCII in strings is skipped eight bytes at a time, non-ASCII runs are checked as
//! UTF-8 where they occur, and a number is only converted to a float when it might be out of
//! range.

/// What checking a body found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// A JSON array of this many objects of `kind` `custom`.
    Events(usize),
    /// Valid JSON, but not an array.
    NotAnArray,
    /// The first element that is not an object of `kind` `custom`.
    NotCustom(usize),
}

/// Why a body is not JSON that reads into values, and the byte where the check found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub(crate) struct InvalidJson {
    /// What is wrong, in a few words.
    reason: &'static str,
    /// Where in the body (after gunzip) the check noticed it.
    offset: usize,
}

/// Checks that `json` is an array of `custom` events, without building its values; `Err` when
/// it is not JSON that reads into values.
///
/// One pass over the bytes, with the rules serde_json applies when it reads the body into
/// values: the same syntax, UTF-8 in strings and keys, escapes (a `\u` surrogate must be
/// paired), numbers (one that reads as an infinite float is refused) and nesting limit. An
/// event's `kind` is its last `kind` key, compared (like the value) after unescaping.
pub(crate) fn check(json: &[u8]) -> Result<Checked, InvalidJson> {
    let mut reader = Reader::new(json);
    match reader.body() {
        Ok(checked) => Ok(checked),
        Err(Stop::Invalid) => Err(reader.invalid),
        Err(Stop::RawValueKey) => by_reading(json),
    }
}

/// The answer for a body holding [`RAW_VALUE_KEY`], found by reading it into values: serde_json
/// turns an object whose first key is that one into the JSON its string holds, so only
/// reading it says what the stored payload becomes. Such bodies are never real events.
#[cold]
fn by_reading(json: &[u8]) -> Result<Checked, InvalidJson> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| InvalidJson {
        reason: "the body does not read as JSON values",
        offset: offset_of(json, e.line(), e.column()),
    })?;
    let serde_json::Value::Array(events) = value else { return Ok(Checked::NotAnArray) };
    Ok(events
        .iter()
        .position(|ev| ev.get("kind").and_then(serde_json::Value::as_str) != Some("custom"))
        .map_or(Checked::Events(events.len()), Checked::NotCustom))
}

/// The byte offset of a serde_json error position (1-based line, column in bytes; line 0 when
/// it has none).
fn offset_of(json: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 => return 0,
        1 => 0,
        n => json
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(n - 2)
            .map_or(json.len(), |(i, _)| i + 1),
    };
    (line_start + column).min(json.len())
}

/// The key serde_json's values treat as a marker when it comes first in an object (its raw
/// value support, which axum turns on): the object reads as the JSON text of its string.
const RAW_VALUE_KEY: &[u8] = b"$serde_json::private::RawValue";

/// How many arrays and objects serde_json lets be open at once, plus one: it refuses the
/// 128th.
const DEPTH_LIMIT: u32 = 128;

/// Why the reader stopped before the end of the body.
#[derive(Debug)]
enum Stop {
    /// The body is not JSON that reads into values (the reader's `invalid` says why).
    Invalid,
    /// A key was [`RAW_VALUE_KEY`]: the body must be read into values to be judged.
    RawValueKey,
}

/// What the reader's steps return.
type Step<T> = Result<T, Stop>;

/// A string read by the reader: where its content lies in the body, as written.
#[derive(Clone, Copy)]
struct Text {
    /// The first byte after the opening quote.
    start: usize,
    /// The closing quote.
    end: usize,
    /// Whether the content holds a `\` escape (else it is its own value).
    escaped: bool,
}

/// Eight copies of the byte 0x01.
const ONES: u64 = u64::MAX / 255;

/// Eight copies of the byte 0x80.
const HIGH_BITS: u64 = ONES << 7;

/// The bytes of `word` (eight string bytes, little-endian) that end a run of plain ASCII: the
/// high bit set in each byte that is `"`, `\`, a control character or not ASCII. The lowest
/// set bit is always right; bits above it may be set by borrows, which do not matter.
#[inline]
fn stop_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash | word) & HIGH_BITS
}

/// Whether `b` ends a run of plain ASCII string bytes (see [`stop_bytes`]).
const fn is_stop(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20 || b >= 0x80
}

/// The first byte at or after `from` that ends a run of plain ASCII string bytes (or the end
/// of `bytes`), skipping eight bytes at a time.
#[inline]
fn plain_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let stops = stop_bytes(u64::from_le_bytes(*chunk));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| !is_stop(b)) {
        i += 1;
    }
    i
}

/// The value of the hex digit `b`.
fn hex_digit(b: u8) -> Option<u16> {
    let value = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => return None,
    };
    Some(u16::from(value))
}

/// The code unit written by the four hex digits at `at`, `None` when they are not four hex
/// digits.
fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at + 4)?.iter().try_fold(0, |unit, &b| Some(unit << 4 | hex_digit(b)?))
}

/// Whether the content of a string, as written between its quotes (already checked), means
/// `target` once its escapes are undone.
#[cold]
fn unescaped_is(raw: &[u8], target: &[u8]) -> bool {
    let mut rest = target;
    let mut at = 0;
    let mut utf8 = [0; 4];
    while at < raw.len() {
        let (piece, used) = unescape_one(raw, at, &mut utf8);
        match rest.strip_prefix(piece) {
            Some(after) => rest = after,
            None => return false,
        }
        at += used;
    }
    rest.is_empty()
}

/// The bytes meant by the byte or escape at `at` in a checked string's content, and how many
/// bytes of the content it takes.
fn unescape_one<'b>(raw: &'b [u8], at: usize, utf8: &'b mut [u8; 4]) -> (&'b [u8], usize) {
    if raw[at] != b'\\' {
        return (&raw[at..=at], 1);
    }
    let byte = match raw[at + 1] {
        b'u' => {
            let unit = |at| u32::from(hex4(raw, at).expect("a checked `\\u` escape"));
            let high = unit(at + 2);
            let (code, used) = if (0xD800..0xDC00).contains(&high) {
                (0x1_0000 + ((high - 0xD800) << 10 | (unit(at + 8) - 0xDC00)), 12)
            } else {
                (high, 6)
            };
            let ch = char::from_u32(code).expect("a checked `\\u` escape is a character");
            return (ch.encode_utf8(utf8).as_bytes(), used);
        }
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        other => other,
    };
    utf8[0] = byte;
    (&utf8[..1], 2)
}

/// A cursor over a body, reading it as serde_json reads JSON into values.
struct Reader<'a> {
    /// The body.
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Why the body is refused, once a step has answered [`Stop::Invalid`].
    invalid: InvalidJson,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, invalid: InvalidJson { reason: "", offset: 0 } }
    }

    /// Records that the body is refused for `reason` at byte `offset`.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, reason: &'static str, offset: usize) -> Stop {
        self.invalid = InvalidJson { reason, offset };
        Stop::Invalid
    }

    /// Records a missing or unexpected byte at the cursor, where `wanted` says what belongs.
    #[cold]
    #[inline(never)]
    fn unexpected(&mut self, wanted: &'static str) -> Stop {
        if self.pos >= self.bytes.len() {
            self.fail("unexpected end of the body", self.pos)
        } else {
            self.fail(wanted, self.pos)
        }
    }

    /// The whole body: an array whose elements are checked one by one, or any other value,
    /// followed by nothing but whitespace.
    fn body(&mut self) -> Step<Checked> {
        let checked = if self.peek() == Some(b'[') {
            self.events()?
        } else {
            self.value(0)?;
            Checked::NotAnArray
        };
        if self.peek().is_some() {
            return Err(self.fail("trailing characters after the JSON value", self.pos));
        }
        Ok(checked)
    }

    /// The next byte that is not whitespace (the cursor moves to it), `None` at the end.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// The top-level array (the cursor on its `[`): whether each element is a `custom` event.
    fn events(&mut self) -> Step<Checked> {
        self.pos += 1;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Checked::Events(0));
        }
        let mut first_other = None;
        let mut index = 0;
        loop {
            let custom = if self.peek() == Some(b'{') {
                self.event()?
            } else {
                self.value(1)?;
                false
            };
            if !custom && first_other.is_none() {
                first_other = Some(index);
            }
            index += 1;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(first_other.map_or(Checked::Events(index), Checked::NotCustom));
                }
                _ => return Err(self.unexpected("expected `,` or `]` after an array element")),
            }
        }
    }

    /// An object in the top-level array (the cursor on its `{`): whether its last `kind` is
    /// the string `custom`.
    fn event(&mut self) -> Step<bool> {
        self.pos += 1;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(false);
        }
        let mut custom = false;
        loop {
            let is_kind = match self.known_key() {
                Some(is_kind) => is_kind,
                None => self.key()?,
            };
            if is_kind {
                custom = if self.bytes[self.pos..].starts_with(b"\"custom\"") {
                    self.pos += 8;
                    true
                } else if self.peek() == Some(b'"') {
                    let kind = self.string()?;
                    self.text_is(kind, b"custom")
                } else {
                    self.value(2)?;
                    false
                };
            } else {
                self.value(2)?;
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(custom);
                }
                _ => return Err(self.unexpected("expected `,` or `}` after an object member")),
            }
        }
    }

    /// An event's key as LaunchDarkly's clients write it (a plain string and its colon, no
    /// space between), recognised whole (the cursor moves past the colon): whether it is
    /// `kind`. `None` for any other key, or one written otherwise, which [`Reader::key`] reads.
    #[inline]
    fn known_key(&mut self) -> Option<bool> {
        self.peek();
        let rest = &self.bytes[self.pos..];
        let (key, is_kind): (&[u8], bool) = match rest.get(1) {
            Some(b'k') if rest.starts_with(b"\"kind\":") => (b"\"kind\":", true),
            Some(b'k') => (b"\"key\":", false),
            Some(b'c') if rest.starts_with(b"\"creationDate\":") => (b"\"creationDate\":", false),
            Some(b'c') => (b"\"contextKeys\":", false),
            Some(b'm') => (b"\"metricValue\":", false),
            Some(b'd') => (b"\"data\":", false),
            _ => return None,
        };
        rest.starts_with(key).then(|| {
            self.pos += key.len();
            is_kind
        })
    }

    /// Any value, inside `depth` open arrays and objects: a string or number at once, the
    /// rest by [`Reader::nested`].
    #[inline]
    fn value(&mut self, depth: u32) -> Step<()> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.nested(depth),
        }
    }

    /// Any value, inside `depth` open arrays and objects. Nested values are followed with a
    /// stack of bits (one for each array or object opened here, set for an object), not by
    /// recursion: the depth limit keeps it within 128 bits.
    fn nested(&mut self, depth: u32) -> Step<()> {
        let mut objects: u128 = 0;
        let mut level = 0;
        loop {
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth + level + 1 >= DEPTH_LIMIT {
                        let at = self.pos;
                        return Err(self.fail("arrays and objects nested more than 127 deep", at));
                    }
                    self.pos += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        if open == b'{' {
                            objects |= 1 << level;
                            self.key()?;
                        } else {
                            objects &= !(1 << level);
                        }
                        level += 1;
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: close what ends here, up to where the next value goes.
            loop {
                if level == 0 {
                    return Ok(());
                }
                let in_object = (objects >> (level - 1)) & 1 == 1;
                match (self.peek(), in_object) {
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.key()?;
                        break;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        level -= 1;
                    }
                    (_, true) => {
                        return Err(self.unexpected("expected `,` or `}` after an object member"))
                    }
                    (_, false) => {
                        return Err(self.unexpected("expected `,` or `]` after an array element"))
                    }
                }
            }
        }
    }

    /// A string, number, `true`, `false` or `null` at the cursor.
    fn scalar(&mut self) -> Step<()> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            _ => Err(self.unexpected("expected a JSON value")),
        }
    }

    /// The literal `word` at the cursor.
    fn word(&mut self, word: &[u8]) -> Step<()> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(word) {
            self.pos += word.len();
            return Ok(());
        }
        // Point at the first byte that differs, as a byte-by-byte read would.
        self.pos += rest.iter().zip(word).take_while(|(a, b)| a == b).count();
        Err(self.unexpected("expected a JSON value"))
    }

    /// An object key and the colon after it (the cursor before the key): whether the key is
    /// `kind`; `Stop::RawValueKey` for [`RAW_VALUE_KEY`].
    #[inline]
    fn key(&mut self) -> Step<bool> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("expected a string key"));
        }
        let key = self.string()?;
        if self.text_is(key, RAW_VALUE_KEY) {
            return Err(Stop::RawValueKey);
        }
        if self.peek() != Some(b':') {
            return Err(self.unexpected("expected `:` after an object key"));
        }
        self.pos += 1;
        Ok(self.text_is(key, b"kind"))
    }

    /// Whether `text` means `target` once its escapes are undone.
    #[inline]
    fn text_is(&self, text: Text, target: &[u8]) -> bool {
        let raw = &self.bytes[text.start..text.end];
        if text.escaped {
            unescaped_is(raw, target)
        } else {
            raw == target
        }
    }

    /// A string (the cursor on its opening quote), checked as serde_json checks it for a
    /// string value: escapes, paired surrogates, no control characters, UTF-8. Plain ASCII
    /// to the closing quote is the fast way; anything else goes on in [`Reader::string_rest`].
    #[inline]
    fn string(&mut self) -> Step<Text> {
        let start = self.pos + 1;
        let end = plain_end(self.bytes, start);
        let escaped = if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            false
        } else {
            self.string_rest(end)?
        };
        Ok(Text { start, end: self.pos - 1, escaped })
    }

    /// The rest of a string from `at`, a byte that ends a run of plain ASCII: the cursor moves
    /// past the closing quote, and the answer says whether the string holds an escape.
    #[inline(never)]
    fn string_rest(&mut self, mut at: usize) -> Step<bool> {
        let mut escaped = false;
        loop {
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.pos = at + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    at = self.escape_end(at)?;
                }
                Some(&b) if b >= 0x80 => at = self.utf8_end(at)?,
                Some(_) => return Err(self.fail("control character in a string", at)),
                None => return Err(self.fail("unexpected end of the body in a string", at)),
            }
            at = plain_end(self.bytes, at);
        }
    }

    /// Past the escape whose `\` is at `at` in a string, when serde_json accepts it in a
    /// string value (a `\u` surrogate must be a high one followed by a `\u` low one).
    fn escape_end(&mut self, at: usize) -> Step<usize> {
        let bytes = self.bytes;
        let unit = |reader: &mut Self, at: usize| match hex4(bytes, at) {
            Some(unit) => Ok(unit),
            None if at + 4 > bytes.len() => {
                Err(reader.fail("unexpected end of the body in a string", at))
            }
            None => Err(reader.fail("invalid `\\u` escape", at)),
        };
        let unpaired = "unpaired surrogate in a `\\u` escape";
        match bytes.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
            Some(b'u') => match unit(self, at + 2)? {
                0xD800..=0xDBFF => {
                    if bytes.get(at + 6..at + 8) != Some(b"\\u".as_slice()) {
                        return Err(self.fail(unpaired, at));
                    }
                    match unit(self, at + 8)? {
                        0xDC00..=0xDFFF => Ok(at + 12),
                        _ => Err(self.fail(unpaired, at)),
                    }
                }
                0xDC00..=0xDFFF => Err(self.fail(unpaired, at)),
                _ => Ok(at + 6),
            },
            Some(_) => Err(self.fail("invalid escape", at)),
            None => Err(self.fail("unexpected end of the body in a string", at + 1)),
        }
    }

    /// Past the run of non-ASCII bytes that starts at `at` in a string, when it is UTF-8
    /// (ASCII bytes are whole characters, so each such run must be whole characters too).
    fn utf8_end(&mut self, at: usize) -> Step<usize> {
        let len = self.bytes[at..].iter().take_while(|&&b| b >= 0x80).count();
        match std::str::from_utf8(&self.bytes[at..at + len]) {
            Ok(_) => Ok(at + len),
            Err(e) => Err(self.fail("invalid UTF-8 in a string", at + e.valid_up_to())),
        }
    }

    /// A number at the cursor. The common ones (an integer part of up to 300 digits, maybe a
    /// fraction, no exponent) cannot be out of range and are only scanned; anything else is
    /// left to [`Reader::number_in_full`].
    #[inline]
    fn number(&mut self) -> Step<()> {
        let bytes = self.bytes;
        let int_start = self.pos + usize::from(bytes[self.pos] == b'-');
        let mut end = digits_end(bytes, int_start);
        let int_digits = end - int_start;
        if int_digits == 0 || int_digits > 300 || (int_digits > 1 && bytes[int_start] == b'0') {
            return self.number_in_full();
        }
        if bytes.get(end) == Some(&b'.') {
            let fraction_end = digits_end(bytes, end + 1);
            if fraction_end == end + 1 {
                return self.number_in_full();
            }
            end = fraction_end;
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            return self.number_in_full();
        }
        self.pos = end;
        Ok(())
    }

    /// A number at the cursor, checked as serde_json checks it: JSON's syntax, and not so
    /// large that it reads as an infinite float.
    #[cold]
    #[inline(never)]
    fn number_in_full(&mut self) -> Step<()> {
        let bytes = self.bytes;
        let start = self.pos;
        let int_start = start + usize::from(bytes[start] == b'-');
        let mut i = match bytes.get(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits_end(bytes, int_start + 1),
            Some(_) => return Err(self.fail("invalid number", int_start)),
            None => return Err(self.fail("unexpected end of the body in a number", int_start)),
        };
        if bytes[int_start] == b'0' && bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(self.fail("invalid number: leading zero", i));
        }
        // Only an exponent or a very long integer part can reach infinity: see `out_of_range`.
        let mut may_overflow = i - int_start > 300;
        if bytes.get(i) == Some(&b'.') {
            let end = digits_end(bytes, i + 1);
            if end == i + 1 {
                return Err(self.digits_missing(end));
            }
            i = end;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits_end(bytes, i);
            if end == i {
                return Err(self.digits_missing(end));
            }
            i = end;
            may_overflow = true;
        }
        if may_overflow && out_of_range(&bytes[start..i]) {
            return Err(self.fail("number out of range", start));
        }
        self.pos = i;
        Ok(())
    }

    /// Records a number whose fraction or exponent lacks digits at `at`.
    fn digits_missing(&mut self, at: usize) -> Stop {
        if at >= self.bytes.len() {
            self.fail("unexpected end of the body in a number", at)
        } else {
            self.fail("invalid number", at)
        }
    }
}

/// The first byte at or after `from` that is not an ASCII digit (or the end of `bytes`).
#[inline]
fn digits_end(bytes: &[u8], from: usize) -> usize {
    from + bytes[from.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Whether serde_json refuses `number` (valid JSON) as out of range when it reads it into a
/// value. It does not parse the decimal exactly: it keeps the leading digits that fit in a
/// `u64` (a further integer digit adds one to the power of ten, a further fraction digit is
/// dropped), converts them to `f64` and multiplies by a power of ten, refusing the number
/// when that is infinite, when the power is above 308, or when the exponent itself does not
/// fit in an `i32`, unless the digits kept are all zero. This follows the same steps, so its
/// answer is the same even for numbers at the very edge of `f64`'s range.
#[cold]
fn out_of_range(number: &[u8]) -> bool {
    let number = number.strip_prefix(b"-").unwrap_or(number);
    let mut digits = number.iter().copied().peekable();
    let mut significand: u64 = 0;
    let mut exponent: i32 = 0;
    let push = |significand: u64, digit: u8| {
        significand.checked_mul(10).and_then(|s| s.checked_add(u64::from(digit - b'0')))
    };
    let mut full = false;
    while let Some(digit) = digits.next_if(u8::is_ascii_digit) {
        if let Some(next) = push(significand, digit).filter(|_| !full) {
            significand = next;
        } else {
            full = true;
            exponent = exponent.saturating_add(1);
        }
    }
    if digits.next_if_eq(&b'.').is_some() {
        let mut dropping = false;
        while let Some(digit) = digits.next_if(u8::is_ascii_digit) {
            if let Some(next) = push(significand, digit).filter(|_| !dropping) {
                significand = next;
                exponent -= 1;
            } else {
                dropping = true;
            }
        }
    }
    if digits.next_if(|&b| b == b'e' || b == b'E').is_some() {
        let negative = digits.next_if(|&b| b == b'+' || b == b'-') == Some(b'-');
        let mut power: i32 = 0;
        for digit in digits {
            match power.checked_mul(10).and_then(|p| p.checked_add(i32::from(digit - b'0'))) {
                Some(next) => power = next,
                None => return significand != 0 && !negative,
            }
        }
        exponent =
            if negative { exponent.saturating_sub(power) } else { exponent.saturating_add(power) };
    }
    if significand == 0 || exponent < 0 {
        return false;
    }
    // Below 10^289 even the largest u64 stays far from f64::MAX.
    match exponent {
        ..=288 => false,
        289..=308 => {
            let power = format!("1e{exponent}").parse::<f64>().expect("a power of ten");
            #[allow(clippy::cast_precision_loss)] // rounded as serde_json rounds it
            let value = significand as f64 * power;
            value.is_infinite()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use serde_json::Value;

    use super::*;

    /// What reading the body into a value and looking at it says.
    fn by_value(json: &[u8]) -> Result<Checked, ()> {
        let value: Value = serde_json::from_slice(json).map_err(|_| ())?;
        let Value::Array(events) = value else { return Ok(Checked::NotAnArray) };
        Ok(events
            .iter()
            .position(|ev| ev.get("kind").and_then(Value::as_str) != Some("custom"))
            .map_or(Checked::Events(events.len()), Checked::NotCustom))
    }

    /// Asserts that checking `body` answers as reading it into values does.
    fn assert_agrees(body: &[u8]) {
        assert_eq!(
            check(body).map_err(|_| ()),
            by_value(body),
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    /// Bodies, valid and not, each a case where checking could go wrong.
    const BODIES: &[&[u8]] = &[
        b"[]",
        br#"[{"kind":"custom","key":"k","contextKeys":{"user":"u"},"data":{"a":[1,{"kind":"x"}]}}]"#,
        br#"[{"kind":"custom"},{"kind":"feature"},{"kind":"identify"}]"#,
        br#"[{"key":"no kind"}]"#,
        br#"[{"kind":"feature","kind":"custom"}]"#,
        br#"[{"kind":"custom","kind":"feature"}]"#,
        br#"[{"kind":"custom"}]"#,
        br#"[{"kind":["custom"]}]"#,
        br#"[{"kind":{"kind":"custom"}}]"#,
        br#"[1, "custom", null, true, 2.5, -3, [{"kind":"custom"}]]"#,
        br#"{"kind":"custom"}"#,
        br#""custom""#,
        b"null",
        br#"[{"kind":"custom"}] x"#,
        br#"[{"kind":"custom"}"#,
        b"{",
        br#" [ { "kind" : "custom" } ] "#,
        br#"[{"kind":"custom","data":{"big":1e400}}]"#,
        br#"[{"kind":"custom","data":{"s":"\ud800"}}]"#,
        br#"[{"kind":"custom","data":{"\ud800":1}}]"#,
        br#"[{"kind":"custom","data":["ok \u00e9 \ud83d\ude00"]}]"#,
        b"[{\"kind\":\"custom\",\"data\":{\"s\":\"\xff\"}}]",
        b"[{\"kind\":\"custom\",\"\xc3\":1}]",
        br#"[{"kind":"custom","n":-0.0,"m":18446744073709551616}]"#,
        // Syntax.
        b"",
        b" \n\t\r",
        b"[]\n\t\r ",
        b"[] []",
        b"[]/",
        b"[1,]",
        b"[,1]",
        b"[1 2]",
        br#"{"a":1,}"#,
        br#"{"a" 1}"#,
        br"{1:1}",
        br#"{"a":1 "b":2}"#,
        br#"[{"kind":"custom",}]"#,
        br#"[{"kind":"custom"]"#,
        b"[tru]",
        b"[nul]",
        b"[falsy]",
        b"[true false]",
        b"[NaN, Infinity]",
        b"[\"a\"",
        b"[\"a",
        b"\"a\\",
        // Numbers.
        b"[0, -0, 0.0, -0.0, 1E+2, 1e-2, 12.5e0, 0e0]",
        b"[01]",
        b"[-01]",
        b"[00]",
        b"[-]",
        b"[-a]",
        b"[1.]",
        b"[1.e5]",
        b"[1e]",
        b"[1e+]",
        b"[.5]",
        b"[+1]",
        b"[0x1]",
        b"1.",
        b"-",
        b"[1e308, -1e308, 1e-400, 1e-99999999999, 0e99999999999, 0.0e400, -0e400]",
        b"[1e309]",
        b"[-1e309]",
        b"[1e99999999999]",
        b"[1.7976931348623157e308]",
        b"[1.7976931348623158e308]",
        b"[1.7976931348623159e308]",
        b"[17976931348623157e292]",
        b"[18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]",
        b"[18446744073709551616.5e288, 184467440737095516159e288]",
        // Escapes and surrogates.
        br#"["\" \\ \/ \b \f \n \r \t \u0000 \uFFFF \uabcd"]"#,
        br#"["\x"]"#,
        br#"["\u12"]"#,
        br#"["\u12g4"]"#,
        br#"["\uD83D"]"#,
        br#"["\uD83Dx"]"#,
        br#"["\uD83D\n"]"#,
        br#"["\uD83D\uD83D"]"#,
        br#"["\uD83D\u0041"]"#,
        br#"["\uDE00"]"#,
        br#"["\uD83D\uDE00", "\uDBFF\uDFFF", "\ud800\udc00"]"#,
        br#"["\uD83D\uDE0"]"#,
        br#"["\uD83D\"#,
        // Control characters and UTF-8.
        b"[\"a\tb\"]",
        b"[\"\x1f\"]",
        b"[\"\x00\"]",
        b"[\"\x7f\"]",
        b"[\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"]",
        b"[\"\xc3\"]",
        b"[\"\xe2\x82\"]",
        b"[\"\xc0\x80\"]",
        b"[\"\xed\xa0\x80\"]",
        b"[\"\xf4\x90\x80\x80\"]",
        b"[\"\x80\"]",
        b"[\"\xc3\\u00a9\"]",
        b"[\"\xc3\xa9\xa9\"]",
        b"[{\"\xc3\xa9\":1, \"kind\":\"custom\"}]",
        b"\xef\xbb\xbf[]",
        // A kind compared after unescaping.
        br#"[{"\u006bind":"custom"}]"#,
        br#"[{"kin\u0064":"\u0063ustom"}]"#,
        br#"[{"kind":"cust\u006fm"}]"#,
        br#"[{"kind":"custom\u0000"}]"#,
        br#"[{"kind":"custom\/"}]"#,
        br#"[{"kind":"\ud83d\ude00"}]"#,
        br#"[{"kind\u0000":"custom"}]"#,
        br#"[{"kind":"\u0063ustom","kind":"\u0063ustoM"}]"#,
        // serde_json's raw-value marker key.
        br#"[{"$serde_json::private::RawValue":"{\"kind\":\"custom\"}"}]"#,
        br#"[{"$serde_json::private::RawValue":"{\"kind\":\"feature\"}"}]"#,
        br#"[{"$serde_json::private::RawValue":"not json"}]"#,
        br#"[{"$serde_json::private::RawValue":1}]"#,
        br#"[{"$serde_json::private::RawValue":"1","kind":"custom"}]"#,
        br#"[{"kind":"custom","$serde_json::private::RawValue":"1"}]"#,
        br#"[{"\u0024serde_json::private::RawValue":"{\"kind\":\"custom\"}"}]"#,
        br#"{"$serde_json::private::RawValue":"[{\"kind\":\"feature\"}]"}"#,
        br#"[{"$serde_json::private::RawValue":"{\"kind\":\"custom\"}"}] x"#,
    ];

    #[test]
    fn checking_agrees_with_reading_the_values() {
        let long_integer = format!("[{{\"kind\":\"custom\",\"n\":{}}}]", "9".repeat(309));
        let longer_integer = format!("[{}]", "9".repeat(310));
        let long_fraction = format!("[0.{}1e330, 1{}e-20]", "0".repeat(340), "0".repeat(330));
        let computed = [long_integer, longer_integer, long_fraction];
        for body in BODIES.iter().copied().chain(computed.iter().map(String::as_bytes)) {
            assert_agrees(body);
        }
    }

    #[test]
    fn nesting_agrees_with_reading_the_values() {
        for depth in 120..=130 {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let events = format!(
                "[{{\"kind\":\"custom\",\"d\":{}{}}}]",
                "[".repeat(depth - 2),
                "]".repeat(depth - 2)
            );
            let elements = format!("[1,{}{}]", "[".repeat(depth - 1), "]".repeat(depth - 1));
            let unclosed = "[".repeat(depth);
            for body in [arrays, objects, events, elements, unclosed] {
                assert_agrees(body.as_bytes());
            }
        }
        // Deep nesting is refused without exhausting the stack.
        assert!(check("[".repeat(1_000_000).as_bytes()).is_err());
    }

    #[test]
    fn numbers_at_the_edge_of_the_range_agree() {
        for last in 0..100 {
            for number in [
                format!("1.79769313486231{last:02}e308"),
                format!("17976931348623{last:02}e295"),
                format!("1797693134862315{last:02}e291"),
                format!("0.0179769313486231{last:02}e310"),
                format!("179769313486231{last:02}{}", "0".repeat(293)),
                format!("184467440737095516{last:02}e288"),
            ] {
                assert_agrees(format!("[{number}]").as_bytes());
            }
        }
    }

    #[test]
    fn an_error_says_what_and_where() {
        let err = check(b"[{\"kind\":\"custom\"},\n {\"kind\":\"cu\x01\"}]").unwrap_err();
        assert_eq!(err.to_string(), "control character in a string at byte 32");
        let err = check(br#"[{"$serde_json::private::RawValue":"nope"}]"#).unwrap_err();
        assert!(err.to_string().starts_with("the body does not read as JSON values at byte "));
    }

    /// Pieces of string content: plain text, every escape, non-ASCII text.
    const PIECES: &[&str] = &[
        "kind",
        "custom",
        "a",
        " ",
        "key",
        "é",
        "😀",
        "日本",
        "0123456789abcdef",
        r#"\""#,
        r"\\",
        r"\/",
        r"\b",
        r"\f",
        r"\n",
        r"\r",
        r"\t",
        r"\u006b",
        r"\u0063",
        r"\u00e9",
        r"\u20AC",
        r"\ud83d\ude00",
        r"\uDBFF\uDFFF",
        r"\u0000",
    ];

    /// Numbers that sit on an edge: signs, zeros, `u64` and `i64` limits, `f64` range.
    const EDGE_NUMBERS: &[&str] = &[
        "0",
        "-0",
        "-0.0",
        "12.5",
        "1767225600000",
        "1e308",
        "1e309",
        "-1e400",
        "1e-400",
        "0e999999999999",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
    ];

    /// A JSON string made of [`PIECES`].
    fn string() -> impl Strategy<Value = String> {
        prop::collection::vec(select(PIECES), 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// A JSON number: integers, floats, written-out forms and edge cases.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            select(EDGE_NUMBERS).prop_map(str::to_owned),
        ]
    }

    /// What goes between array elements or object members.
    fn separator() -> impl Strategy<Value = &'static str> {
        select(&[",", ", ", " ,\n  ", "\t,\r\n"][..])
    }

    /// An object key, often `kind`.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just("\"kind\"".to_owned()),
            1 => Just(r#""\u006bind""#.to_owned()),
            3 => string(),
        ]
    }

    /// Any JSON value, nested a few levels.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            select(&["null", "true", "false"][..]).prop_map(str::to_owned),
            number(),
            string(),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..5), separator())
                    .prop_map(|(items, sep)| format!("[{}]", items.join(sep))),
                (prop::collection::vec((key(), inner), 0..5), separator())
                    .prop_map(|(members, sep)| object(&members, sep)),
            ]
        })
    }

    /// The object with `members`, separated by `sep`.
    fn object(members: &[(String, String)], sep: &str) -> String {
        let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", members.join(sep))
    }

    /// An element of an events body: mostly objects, often with a `custom` kind.
    fn event() -> impl Strategy<Value = String> {
        let kind_or_value = prop_oneof![
            3 => Just("\"custom\"".to_owned()),
            1 => select(&[r#""\u0063ustom""#, r#""feature""#, r#""custom ""#, "null"][..])
                .prop_map(str::to_owned),
            2 => value(),
        ];
        let members = prop::collection::vec((key(), kind_or_value), 0..5);
        prop_oneof![
            4 => (members, any::<bool>(), separator()).prop_map(|(mut members, custom, sep)| {
                if custom {
                    members.push(("\"kind\"".to_owned(), "\"custom\"".to_owned()));
                }
                object(&members, sep)
            }),
            1 => value(),
        ]
    }

    /// A body: mostly an array of events, sometimes any value.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => (prop::collection::vec(event(), 0..6), separator())
                .prop_map(|(events, sep)| format!("[{}]", events.join(sep))),
            1 => value(),
        ]
        .prop_map(String::into_bytes)
    }

    /// Bytes a mutation inserts: quotes, escapes, bits of UTF-8, syntax.
    const INSERTS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"\\udc00",
        b"\xff",
        b"\xc3",
        b"\x80",
        b"\xed\xa0\x80",
        b"\x01",
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b":",
        b"0",
        b"e999",
        b".",
        b"-",
        b" ",
    ];

    /// One change to a body.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// The byte at the index becomes the given one.
        Set(Index, u8),
        /// The body ends before the index.
        Truncate(Index),
        /// The bytes go in before the index.
        Insert(Index, &'static [u8]),
        /// The byte at the index goes.
        Remove(Index),
    }

    /// Any [`Mutation`], with bytes that matter to JSON more likely.
    fn mutation() -> impl Strategy<Value = Mutation> {
        let byte = prop_oneof![
            any::<u8>(),
            select(
                &b"\"\\{}[]:,0-.eEu \x00\x1f\x7f\x80\xbf\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff"[..]
            ),
        ];
        prop_oneof![
            (any::<Index>(), byte).prop_map(|(at, b)| Mutation::Set(at, b)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), select(INSERTS)).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            any::<Index>().prop_map(Mutation::Remove),
        ]
    }

    /// `body` after `mutations`.
    fn mutated(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for mutation in mutations {
            let len = body.len();
            match mutation {
                Mutation::Insert(at, bytes) => {
                    let at = at.index(len + 1);
                    body.splice(at..at, bytes.iter().copied());
                }
                _ if len == 0 => {}
                Mutation::Set(at, b) => body[at.index(len)] = *b,
                Mutation::Truncate(at) => body.truncate(at.index(len)),
                Mutation::Remove(at) => {
                    body.remove(at.index(len));
                }
            }
        }
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn checking_agrees_on_generated_bodies(body in body()) {
            let checked = check(&body).map_err(|_| ());
            prop_assert_eq!(&checked, &by_value(&body));
            prop_assert_eq!(checked, serde_walk::check(&body).map_err(|_| ()));
        }

        #[test]
        fn checking_agrees_on_mutated_bodies(
            body in body(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let body = mutated(body, &mutations);
            let checked = check(&body).map_err(|_| ());
            prop_assert_eq!(&checked, &by_value(&body), "{}", String::from_utf8_lossy(&body));
            prop_assert_eq!(checked, serde_walk::check(&body).map_err(|_| ()));
        }

        #[test]
        fn checking_agrees_on_numbers_near_the_range_limit(
            number in "-?[1-9][0-9]{0,21}(\\.[0-9]{1,21})?[eE]\\+?(2[89][0-9]|3[01][0-9])",
            long in "[1-9][0-9]{295,330}",
        ) {
            for body in [format!("[{number}]"), format!("[{long}]"), format!("[{long}.5e-3]")] {
                prop_assert_eq!(check(body.as_bytes()).map_err(|_| ()), by_value(body.as_bytes()));
            }
        }
    }

    /// A body of `count` events like those of a real import.
    fn bench_body(count: usize) -> Vec<u8> {
        let events: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    r#"{{"kind":"custom","key":"bench-event","contextKeys":{{"user":"user-{:06}"}},"creationDate":1767225600000,"metricValue":12.5,"eventId":"{}"}}"#,
                    100_000 + i % 900_000,
                    uuid::Uuid::new_v4()
                )
            })
            .collect();
        format!("[{}]", events.join(",")).into_bytes()
    }

    /// The shortest of `runs` timings of `f` on `body`.
    fn best_of(runs: usize, body: &[u8], f: fn(&[u8]) -> bool) -> Duration {
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                assert!(f(std::hint::black_box(body)));
                start.elapsed()
            })
            .min()
            .expect("at least one run")
    }

    /// A way to check a body, by name.
    type Way = (&'static str, fn(&[u8]) -> bool);

    #[test]
    #[allow(clippy::cast_precision_loss)] // sizes far below 2^52
    #[ignore = "a timing comparison to run by hand: --release -- --ignored --nocapture"]
    fn timing_of_the_check() {
        const EVENTS: usize = 50_000;
        let body = bench_body(EVENTS);
        let ways: [Way; 3] = [
            ("serde_json visitors (before)", |b| serde_walk::check(b).is_ok()),
            ("hand-written reader (now)", |b| matches!(check(b), Ok(Checked::Events(_)))),
            ("serde_json::Value (reading)", |b| matches!(by_value(b), Ok(Checked::Events(_)))),
        ];
        println!("{EVENTS} events, {} bytes", body.len());
        for (name, f) in ways {
            let best = best_of(30, &body, f);
            let per_event = best.as_secs_f64() * 1e9 / EVENTS as f64;
            let mb_per_s = body.len() as f64 / best.as_secs_f64() / 1e6;
            println!("{name:30} {per_event:8.1} ns/event {mb_per_s:8.0} MB/s");
        }
    }

    /// The check as it was before the hand-written reader, walking the body with serde_json
    /// visitors: the reference the reader is compared with and timed against.
    mod serde_walk {
        use std::fmt;

        use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
        use serde::Deserializer;

        use super::Checked;

        /// Checks that `json` is an array of `custom` events, without building its values.
        pub(super) fn check(json: &[u8]) -> serde_json::Result<Checked> {
            let mut deserializer = serde_json::Deserializer::from_slice(json);
            let checked = deserializer.deserialize_any(BodyVisitor)?;
            deserializer.end()?;
            Ok(checked)
        }

        /// The arms of a visitor that answers `$answer` for every boolean, number and null (a number
        /// is still read in full, so one that does not fit is an error, as reading a value makes it).
        macro_rules! scalars_answer {
            ($ty:ty, $answer:expr) => {
                fn visit_bool<E>(self, _: bool) -> Result<$ty, E> {
                    Ok($answer)
                }

                fn visit_i64<E>(self, _: i64) -> Result<$ty, E> {
                    Ok($answer)
                }

                fn visit_u64<E>(self, _: u64) -> Result<$ty, E> {
                    Ok($answer)
                }

                fn visit_f64<E>(self, _: f64) -> Result<$ty, E> {
                    Ok($answer)
                }

                fn visit_unit<E>(self) -> Result<$ty, E> {
                    Ok($answer)
                }
            };
        }

        /// The whole body: an array whose elements are checked one by one, or any other value.
        struct BodyVisitor;

        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = Checked;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of events")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                let mut first_other = None;
                let mut index = 0;
                while let Some(custom) = seq.next_element_seed(IsCustomEvent)? {
                    if !custom && first_other.is_none() {
                        first_other = Some(index);
                    }
                    index += 1;
                }
                Ok(first_other.map_or(Checked::Events(index), Checked::NotCustom))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
                Matches("").visit_map(map).map(|_| Checked::NotAnArray)
            }

            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked::NotAnArray)
            }

            scalars_answer!(Checked, Checked::NotAnArray);
        }

        /// One element of the array: whether it is an object whose `kind` is `"custom"` (the last
        /// `kind`, when an object repeats it, as when it is read into a value).
        struct IsCustomEvent;

        impl<'de> DeserializeSeed<'de> for IsCustomEvent {
            type Value = bool;

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
                deserializer.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for IsCustomEvent {
            type Value = bool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut custom = false;
                while let Some(is_kind) = map.next_key_seed(Matches("kind"))? {
                    if is_kind {
                        custom = map.next_value_seed(Matches("custom"))?;
                    } else {
                        map.next_value_seed(Matches(""))?;
                    }
                }
                Ok(custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
                Matches("").visit_seq(seq).map(|_| false)
            }

            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }

            scalars_answer!(bool, false);
        }

        /// Any JSON value: whether it is the string `self.0`. Nothing is built, but every string and
        /// number is read as reading it into a value would (serde's `IgnoredAny` would let invalid
        /// UTF-8, a lone surrogate or `1e400` through, which `serde_json::Value` refuses), so that a
        /// body this accepts always reads back into events.
        struct Matches(&'static str);

        impl<'de> DeserializeSeed<'de> for Matches {
            type Value = bool;

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
                deserializer.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for Matches {
            type Value = bool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_str<E>(self, text: &str) -> Result<bool, E> {
                Ok(text == self.0)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
                while seq.next_element_seed(Matches(""))?.is_some() {}
                Ok(false)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                while map.next_entry_seed(Matches(""), Matches(""))?.is_some() {}
                Ok(false)
            }

            scalars_answer!(bool, false);
        }
    }
}
