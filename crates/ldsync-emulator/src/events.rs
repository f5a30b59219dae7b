//! Metric-event import: `POST /v2/event-data-import/{projectKey}/{environmentKey}`.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use serde_json::Value;

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
    let data = match header(&headers, "content-encoding") {
        None | Some("" | "identity") => raw.to_vec(),
        Some(enc) if enc.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(MAX_EVENT_BODY_BYTES).expect("fits") + 1;
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request(format!("Invalid gzip body: {e}")))?;
            if out.len() > MAX_EVENT_BODY_BYTES {
                return Err(too_large());
            }
            out
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("Unsupported Content-Encoding `{other}`")));
        }
    };
    let parsed: Value = serde_json::from_slice(&data)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let Value::Array(events) = parsed else {
        return Err(ApiError::bad_request("The body must be a JSON array of events"));
    };
    if let Some(i) =
        events.iter().position(|ev| ev.get("kind").and_then(Value::as_str) != Some("custom"))
    {
        return Err(ApiError::bad_request(format!("Event {i} is not of kind `custom`")));
    }
    let payload_id =
        header(&headers, "x-launchdarkly-payload-id").filter(|s| !s.is_empty()).map(str::to_owned);
    let mut inner = shared.lock();
    let env = inner.model.env_mut(&p, &e).ok_or_else(ApiError::not_found)?;
    if let Some(id) = &payload_id {
        if !env.payload_ids.insert(id.clone()) {
            inner.stats.repeated_payload_ids += 1;
            return Ok(StatusCode::ACCEPTED);
        }
    }
    inner.model.payloads.push(EventPayload {
        project: p,
        environment: e,
        payload_id,
        received_at: now_ms(),
        events,
    });
    inner.dirty = true;
    Ok(StatusCode::ACCEPTED)
}
