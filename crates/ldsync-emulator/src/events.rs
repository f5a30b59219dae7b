//! Metric-event import: `POST /v2/event-data-import/{projectKey}/{environmentKey}`.
//!
//! Like the events host, the import answers once it has checked the payload, and keeps the
//! events to process later: the JSON array as it arrived, which becomes values only when the
//! state is read ([`StoredPayload`]). Checking walks the JSON without building it, so a payload
//! of 50 000 events costs its decompression and one pass, not a million allocations.

use std::fmt;
use std::io::Read;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use bytes::Bytes;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::api_error::{ApiError, ApiResult};
use crate::server::{AppState, Caller};
use crate::snapshot::EventPayload;
use crate::state::now_ms;

/// Largest request body the events host accepts (also after gunzip).
pub const MAX_EVENT_BODY_BYTES: usize = 10 * 1024 * 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Accepts a JSON array of `custom` events (gzip allowed), deduplicated on the payload ID.
pub(crate) async fn import(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    if !caller.0.allows("importEventData") {
        // The events host answers 401, not 403, when the token lacks the action.
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The access token does not allow `importEventData`",
        ));
    }
    match header(&headers, "x-launchdarkly-event-schema") {
        Some("4") => {}
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!(
                    "Unsupported event schema `{}`: send `X-LaunchDarkly-Event-Schema: 4`",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let too_large = || ApiError::too_large("The request body is larger than 10 MB");
    let raw = axum::body::to_bytes(body, MAX_EVENT_BODY_BYTES).await.map_err(|_| too_large())?;
    let (unzipped, kept) = match header(&headers, "content-encoding") {
        None | Some("" | "identity") => (None, Kept::Plain(raw)),
        Some(enc) if enc.eq_ignore_ascii_case("gzip") => {
            let out = gunzip(&raw, MAX_EVENT_BODY_BYTES)
                .map_err(|e| ApiError::bad_request(format!("Invalid gzip body: {e}")))?;
            if out.len() > MAX_EVENT_BODY_BYTES {
                return Err(too_large());
            }
            // Kept as it came: a tenth of the memory, unzipped again when the state is read.
            (Some(out), Kept::Gzip(raw))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("Unsupported Content-Encoding `{other}`")));
        }
    };
    let data: &[u8] = match (&unzipped, &kept) {
        (Some(out), _) => out,
        (None, Kept::Plain(raw) | Kept::Gzip(raw)) => raw,
    };
    match check(data).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))? {
        Checked::Events => {}
        Checked::NotAnArray => {
            return Err(ApiError::bad_request("The body must be a JSON array of events"))
        }
        Checked::NotCustom(i) => {
            return Err(ApiError::bad_request(format!("Event {i} is not of kind `custom`")))
        }
    }
    let payload_id =
        header(&headers, "x-launchdarkly-payload-id").filter(|s| !s.is_empty()).map(str::to_owned);
    let sent_bytes = match &kept {
        Kept::Plain(body) | Kept::Gzip(body) => body.len() as u64,
    };
    let mut inner = shared.lock();
    let env = inner.model.env_mut(&p, &e).ok_or_else(ApiError::not_found)?;
    if let Some(id) = &payload_id {
        if !env.payload_ids.insert(id.clone()) {
            inner.stats.repeated_payload_ids += 1;
            inner.stats.event_import_bytes += sent_bytes;
            return Ok(StatusCode::ACCEPTED);
        }
    }
    inner.stats.event_import_bytes += sent_bytes;
    inner.model.payloads.push(StoredPayload {
        project: p,
        environment: e,
        payload_id,
        received_at: now_ms(),
        json: kept,
    });
    inner.dirty = true;
    Ok(StatusCode::ACCEPTED)
}

/// One accepted payload, its events kept as the JSON array that arrived (checked to be an
/// array of `custom` events). The state file holds it as an [`EventPayload`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "EventPayload", from = "EventPayload")]
pub(crate) struct StoredPayload {
    pub(crate) project: String,
    pub(crate) environment: String,
    pub(crate) payload_id: Option<String>,
    pub(crate) received_at: u64,
    pub(crate) json: Kept,
}

/// A payload's JSON array, as it arrived.
#[derive(Debug, Clone)]
pub(crate) enum Kept {
    /// Uncompressed.
    Plain(Bytes),
    /// Gzip, checked to unzip within the size limit.
    Gzip(Bytes),
}

/// `body` unzipped, reading at most one byte past `limit` (the caller refuses more).
fn gunzip(body: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    // The gzip trailer ends with the size of the data (modulo 4 GiB): room for all of it at
    // once, rather than a buffer grown (and faulted in) step by step.
    let size =
        body.last_chunk::<4>().map_or(0, |size| u32::from_le_bytes(*size) as usize).min(limit + 1);
    let mut out = Vec::with_capacity(size);
    let limit = u64::try_from(limit).expect("fits") + 1;
    flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out)?;
    Ok(out)
}

impl StoredPayload {
    /// The payload with its events as values, as the state shows it.
    pub(crate) fn to_payload(&self) -> EventPayload {
        let unzipped;
        let json: &[u8] = match &self.json {
            Kept::Plain(json) => json,
            Kept::Gzip(body) => {
                unzipped = gunzip(body, MAX_EVENT_BODY_BYTES)
                    .expect("a stored payload unzipped within the limit when it arrived");
                &unzipped
            }
        };
        let events = serde_json::from_slice(json)
            .expect("a stored payload was checked to be a JSON array when it arrived");
        EventPayload {
            project: self.project.clone(),
            environment: self.environment.clone(),
            payload_id: self.payload_id.clone(),
            received_at: self.received_at,
            events,
        }
    }
}

impl From<StoredPayload> for EventPayload {
    fn from(stored: StoredPayload) -> Self {
        stored.to_payload()
    }
}

impl From<EventPayload> for StoredPayload {
    fn from(payload: EventPayload) -> Self {
        let json = serde_json::to_vec(&payload.events).expect("JSON values always serialise");
        Self {
            project: payload.project,
            environment: payload.environment,
            payload_id: payload.payload_id,
            received_at: payload.received_at,
            json: Kept::Plain(Bytes::from(json)),
        }
    }
}

/// What checking a body found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// A JSON array of objects of `kind` `custom`.
    Events,
    /// Valid JSON, but not an array.
    NotAnArray,
    /// The first element that is not an object of `kind` `custom`.
    NotCustom(usize),
}

/// Checks that `json` is an array of `custom` events, without building its values; `Err` when
/// it is not JSON at all.
fn check(json: &[u8]) -> serde_json::Result<Checked> {
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
        Ok(first_other.map_or(Checked::Events, Checked::NotCustom))
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// What reading the body into a value and looking at it says.
    fn by_value(json: &[u8]) -> Result<Checked, ()> {
        let value: Value = serde_json::from_slice(json).map_err(|_| ())?;
        let Value::Array(events) = value else { return Ok(Checked::NotAnArray) };
        Ok(events
            .iter()
            .position(|ev| ev.get("kind").and_then(Value::as_str) != Some("custom"))
            .map_or(Checked::Events, Checked::NotCustom))
    }

    #[test]
    fn checking_agrees_with_reading_the_values() {
        let bodies: [&[u8]; 24] = [
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
        ];
        for body in bodies {
            assert_eq!(
                check(body).map_err(|_| ()),
                by_value(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_stored_payload_reads_back_as_its_events() {
        let json = br#"[{"kind":"custom","key":"buy","metricValue":1.5}]"#;
        let stored = StoredPayload {
            project: "p".into(),
            environment: "e".into(),
            payload_id: Some("id".into()),
            received_at: 7,
            json: Kept::Plain(Bytes::from_static(json)),
        };
        let payload = stored.to_payload();
        assert_eq!(payload.events, serde_json::from_slice::<Vec<Value>>(json).unwrap());
        // The state file holds the values, and gives the same payload back.
        let saved = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<EventPayload>(&saved).unwrap(), payload);
        let loaded: StoredPayload = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded.to_payload(), payload);
        // A gzip body is kept as it came, and reads back as the same events.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, json).unwrap();
        let zipped = StoredPayload {
            json: Kept::Gzip(Bytes::from(encoder.finish().unwrap())),
            ..stored.clone()
        };
        assert_eq!(zipped.to_payload(), payload);
    }

    #[test]
    fn gunzip_stops_one_byte_past_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &[b' '; 5_000]).unwrap();
        let body = encoder.finish().unwrap();
        assert_eq!(gunzip(&body, 10_000).unwrap().len(), 5_000);
        assert_eq!(gunzip(&body, 1_000).unwrap().len(), 1_001);
        assert!(gunzip(b"not gzip", 1_000).is_err());
    }
}
