//! Metric-event import on the events host: the request builder (events → gzip JSON payloads,
//! pure) and the call that sends one payload.
//!
//! `POST {events_url}/v2/event-data-import/{projectKey}/{environmentKey}` takes a JSON array of
//! `custom` events. Each payload carries an `X-LaunchDarkly-Payload-ID`; LaunchDarkly processes a
//! payload ID once, so a payload resent after a crash or a lost answer is not counted twice.

use std::{collections::BTreeMap, io::Write, ops::Range};

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{LaunchDarklyClient, Result, Route};

/// The largest payload LaunchDarkly accepts, measured on the uncompressed JSON.
pub const MAX_EVENT_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;
/// The event schema the import speaks (`X-LaunchDarkly-Event-Schema`); anything else is a 406.
pub const EVENT_SCHEMA: &str = "4";
/// The `User-Agent` of metric imports: LaunchDarkly asks for `MetricImport-<COMPANY>-int/<VERSION>`.
pub const EVENTS_USER_AGENT: &str = concat!("MetricImport-ldsync-int/", env!("CARGO_PKG_VERSION"));

impl Route {
    /// Metric-event import, on the events host.
    pub const IMPORT_EVENTS: Route =
        Route { method: "POST", template: "/v2/event-data-import/{projectKey}/{environmentKey}" };
}

/// One custom event, as the import takes it (`kind` is always `custom`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomEvent {
    /// The event key: the metric's `eventKey`, not the metric key.
    pub key: String,
    /// When the event happened, Unix epoch milliseconds.
    pub creation_date: i64,
    /// The value of a numeric metric.
    #[serde(default)]
    pub metric_value: Option<f64>,
    /// Context kind → context key; at least one entry.
    pub context_keys: BTreeMap<String, String>,
    /// Extra attributes.
    #[serde(default)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The wire form: `kind` first, optional fields left out when absent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    kind: &'static str,
    key: &'a str,
    creation_date: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_value: Option<f64>,
    context_keys: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Serialize for CustomEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireEvent {
            kind: "custom",
            key: &self.key,
            creation_date: self.creation_date,
            metric_value: self.metric_value,
            context_keys: &self.context_keys,
            data: self.data.as_ref(),
        }
        .serialize(serializer)
    }
}

impl CustomEvent {
    /// The event as JSON, exactly as it goes into a payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event of strings, numbers and JSON always serialises")
    }
}

/// One request's worth of events: which events, and the gzip body that carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPayload {
    /// The positions, in the slice given to [`event_payloads`], of the events it carries.
    pub events: Range<usize>,
    /// The length of the uncompressed JSON array.
    pub json_bytes: usize,
    /// The JSON array, gzip-compressed: the request body.
    pub body: Bytes,
}

/// Cuts `events` into payloads of at most `max_events` events and at most `max_bytes` of
/// uncompressed JSON each, in order, and compresses them.
///
/// An event that alone is larger than `max_bytes` still gets a payload of its own (which
/// LaunchDarkly will refuse): callers reject such events first, with [`CustomEvent::to_json`].
pub fn event_payloads(
    events: &[CustomEvent],
    max_events: usize,
    max_bytes: usize,
) -> Vec<EventPayload> {
    let max_events = max_events.max(1);
    let mut payloads = Vec::new();
    let mut json = Vec::new();
    let mut start = 0;
    for (index, event) in events.iter().enumerate() {
        let encoded = event.to_json();
        let in_payload = index - start;
        // `[` + events + commas + `]`.
        let grown =
            if in_payload == 0 { 2 + encoded.len() } else { json.len() + 1 + encoded.len() };
        if in_payload > 0 && (in_payload == max_events || grown > max_bytes) {
            payloads.push(finish(start..index, &mut json));
            start = index;
        }
        json.push(if json.is_empty() { b'[' } else { b',' });
        json.extend_from_slice(&encoded);
    }
    if start < events.len() {
        payloads.push(finish(start..events.len(), &mut json));
    }
    payloads
}

/// Closes the JSON array and compresses it.
fn finish(events: Range<usize>, json: &mut Vec<u8>) -> EventPayload {
    json.push(b']');
    let payload = EventPayload { events, json_bytes: json.len(), body: gzip(json) };
    json.clear();
    payload
}

/// Gzip with the default level; the header carries no file name and no time, so equal input
/// gives equal bytes.
pub fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    encoder.write_all(bytes).expect("writing into memory cannot fail");
    Bytes::from(encoder.finish().expect("writing into memory cannot fail"))
}

impl LaunchDarklyClient {
    /// Sends one gzip-compressed payload of custom events.
    ///
    /// `payload_id` must be the same on every attempt of one payload, retries and a later run's
    /// resend included: LaunchDarkly dedupes on it. Retries 429, 5xx, timeouts and resets;
    /// fails on any other answer (400 unparsable body, 401 token without `importEventData`,
    /// 406 schema) with its status and body.
    pub async fn import_events(
        &self,
        project: &str,
        environment: &str,
        payload_id: &str,
        body: Bytes,
    ) -> Result<()> {
        let route = Route::IMPORT_EVENTS;
        let url = Self::url(self.events_url(), &["v2", "event-data-import", project, environment]);
        self.send(route, || {
            self.http()
                .request(Method::POST, url.clone())
                // The client's default `User-Agent` is the REST one; reqwest lets a request's
                // own header win over the default.
                .header(reqwest::header::USER_AGENT, EVENTS_USER_AGENT)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .header("X-LaunchDarkly-Event-Schema", EVENT_SCHEMA)
                .header("X-LaunchDarkly-Payload-ID", payload_id)
                .body(body.clone())
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn event(n: usize, data_bytes: usize) -> CustomEvent {
        let mut data = serde_json::Map::new();
        if data_bytes > 0 {
            data.insert("pad".into(), "x".repeat(data_bytes).into());
        }
        CustomEvent {
            key: "checkout".into(),
            creation_date: 1_732_492_800_000 + i64::try_from(n).unwrap(),
            metric_value: n.is_multiple_of(2).then_some(1.5),
            context_keys: BTreeMap::from([("user".into(), format!("user-{n}"))]),
            data: (data_bytes > 0).then_some(data),
        }
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn events_serialise_as_the_import_expects() {
        let json: serde_json::Value = serde_json::from_slice(&event(0, 0).to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "custom", "key": "checkout", "creationDate": 1_732_492_800_000_i64,
                "metricValue": 1.5, "contextKeys": {"user": "user-0"}
            })
        );
        let without: serde_json::Value = serde_json::from_slice(&event(1, 3).to_json()).unwrap();
        assert!(without.get("metricValue").is_none());
        assert_eq!(without["data"], serde_json::json!({"pad": "xxx"}));
    }

    #[test]
    fn payloads_respect_the_event_count() {
        let events: Vec<_> = (0..7).map(|n| event(n, 0)).collect();
        let payloads = event_payloads(&events, 3, MAX_EVENT_PAYLOAD_BYTES);
        let ranges: Vec<_> = payloads.iter().map(|p| p.events.clone()).collect();
        assert_eq!(ranges, [0..3, 3..6, 6..7]);
        let decoded: Vec<serde_json::Value> =
            serde_json::from_slice(&gunzip(&payloads[1].body)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0]["contextKeys"]["user"], "user-3");
        assert_eq!(payloads[1].json_bytes, gunzip(&payloads[1].body).len());
        assert!(event_payloads(&[], 3, 100).is_empty());
    }

    #[test]
    fn payloads_stay_under_the_byte_limit() {
        let events: Vec<_> = (0..50).map(|n| event(n, 1_000)).collect();
        let one = events[0].to_json().len();
        let limit = one * 4 + 5; // four events, three commas and the brackets fit exactly
        let payloads = event_payloads(&events, 1_000, limit);
        assert!(payloads.iter().all(|p| p.json_bytes <= limit), "{payloads:?}");
        assert_eq!(payloads[0].events, 0..4);
        assert_eq!(payloads.iter().map(|p| p.events.len()).sum::<usize>(), 50);
        // At the real limit: ~1 MB events, 10 MB requests.
        let big: Vec<_> = (0..25).map(|n| event(n, 1024 * 1024)).collect();
        let payloads = event_payloads(&big, 5_000, MAX_EVENT_PAYLOAD_BYTES);
        assert!(payloads.iter().all(|p| p.json_bytes <= MAX_EVENT_PAYLOAD_BYTES));
        assert_eq!(payloads.len(), 3);
    }

    #[test]
    fn an_oversized_event_travels_alone() {
        let events = vec![event(0, 0), event(1, 500), event(2, 0)];
        let payloads = event_payloads(&events, 10, 300);
        let ranges: Vec<_> = payloads.iter().map(|p| p.events.clone()).collect();
        assert_eq!(ranges, [0..1, 1..2, 2..3]);
    }

    #[test]
    fn equal_events_give_equal_bodies() {
        let events: Vec<_> = (0..10).map(|n| event(n, 10)).collect();
        assert_eq!(event_payloads(&events, 4, 10_000), event_payloads(&events, 4, 10_000));
    }
}
