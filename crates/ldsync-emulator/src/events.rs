//! Metric-event import: `POST /v2/event-data-import/{projectKey}/{environmentKey}`.
//!
//! Like the events host, the import answers once it has checked the payload, and keeps the
//! events to process later: the JSON array as it arrived, which becomes values only when the
//! state is read ([`StoredPayload`]). The check is one pass over the bytes
//! ([`crate::event_check`]).

use std::{io::Read, sync::Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api_error::{ApiError, ApiResult};
use crate::event_check::{check, Checked};
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
    let events =
        match check(data).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))? {
            Checked::Events(events) => u64::try_from(events).unwrap_or(u64::MAX),
            Checked::NotAnArray => {
                return Err(ApiError::bad_request("The body must be a JSON array of events"))
            }
            Checked::NotCustom(i) => {
                return Err(ApiError::bad_request(format!("Event {i} is not of kind `custom`")))
            }
        };
    // Its buffer goes back for the next request.
    drop(unzipped);
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
    *inner.stats.events_stored.entry(format!("{p}/{e}")).or_default() += events;
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

/// Buffers of unzipped bodies, kept between requests: a body is megabytes, and a fresh
/// buffer for each costs its zeroing and page faults (a tenth of the emulator's time in a run
/// of a million events).
static SPARE_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Spare buffers kept: about as many as requests are handled at once.
const KEPT_BUFFERS: usize = 4;

/// An unzipped body, in a buffer lent by [`SPARE_BUFFERS`] and given back when dropped.
#[derive(Debug)]
struct Unzipped {
    /// Written (initialised) throughout; the body is its first `len` bytes.
    buffer: Vec<u8>,
    len: usize,
}

impl std::ops::Deref for Unzipped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Unzipped {
    fn drop(&mut self) {
        let mut spares = SPARE_BUFFERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if spares.len() < KEPT_BUFFERS {
            spares.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// `body` unzipped, reading at most one byte past `limit` (the caller refuses more).
fn gunzip(body: &[u8], limit: usize) -> std::io::Result<Unzipped> {
    let most = limit + 1;
    // The gzip trailer ends with the size of the data (modulo 4 GiB): room for all of it at
    // once, rather than a buffer grown (and faulted in) step by step.
    let size = body.last_chunk::<4>().map_or(0, |size| u32::from_le_bytes(*size) as usize);
    let spare = SPARE_BUFFERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
    let mut unzipped = Unzipped { buffer: spare.unwrap_or_default(), len: 0 };
    let buffer = &mut unzipped.buffer;
    // Reading into bytes already written, rather than into spare capacity, which `Read`
    // would zero first.
    if buffer.len() < size.clamp(1, most) {
        buffer.resize(size.clamp(1, most), 0);
    }
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut len = 0;
    while len < most {
        if len == buffer.len() {
            buffer.resize((len * 2).clamp(8_192, most), 0);
        }
        let end = buffer.len().min(most);
        match decoder.read(&mut buffer[len..end]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    unzipped.len = len;
    Ok(unzipped)
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

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
