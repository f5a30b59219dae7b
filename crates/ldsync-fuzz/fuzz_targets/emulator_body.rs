//! One request body, query string or upload, sent to the emulator route the first byte picks.
//!
//! Where `emulator_request` searches for whole requests, this target keeps the method, path and
//! headers valid and puts the fuzzer's bytes where untrusted input lands: JSON bodies, JSON
//! Patch and semantic patch documents, gzip event payloads, CSV import files inside a valid
//! multipart body (and whole multipart bodies), filter and paging query strings.

#![no_main]

use std::fmt::Write as _;
use std::io::Write as _;

use axum::body::Body;
use axum::http::Request;
use ldsync_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

const SEGMENTS: &str = "/api/v2/segments/default/production";
const JSON: &str = "application/json";
const SEMANTIC: &str = "application/json; domain-model=launchdarkly.semanticpatch";
const BOUNDARY: &str = "fuzzboundary";

/// What the rest of the input becomes, chosen by its first byte.
#[derive(Clone, Copy)]
enum Route {
    CreateSegment,
    JsonPatch(&'static str),
    SemanticPatch(&'static str),
    UpdateTargets(&'static str),
    CreateMetric,
    PatchMetric,
    Events,
    EventsGzipBytes,
    EventsGzipped,
    ImportCsv,
    ImportMultipart,
    EmulatorConfig,
    ListSegments,
    ListMetrics,
}

const ROUTES: [Route; 17] = [
    Route::CreateSegment,
    Route::JsonPatch("std"),
    Route::JsonPatch("big"),
    Route::SemanticPatch("std"),
    Route::SemanticPatch("big"),
    Route::UpdateTargets("contexts"),
    Route::UpdateTargets("users"),
    Route::CreateMetric,
    Route::PatchMetric,
    Route::Events,
    Route::EventsGzipBytes,
    Route::EventsGzipped,
    Route::ImportCsv,
    Route::ImportMultipart,
    Route::EmulatorConfig,
    Route::ListSegments,
    Route::ListMetrics,
];

fn request(method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("the target's requests are valid")
}

fn events(body: Vec<u8>, gzip: bool) -> Request<Body> {
    let mut request = request("POST", "/v2/event-data-import/default/production", JSON, body);
    let headers = request.headers_mut();
    headers.insert("x-launchdarkly-event-schema", "4".parse().expect("valid"));
    headers.insert("x-launchdarkly-payload-id", "fuzz-payload".parse().expect("valid"));
    if gzip {
        headers.insert("content-encoding", "gzip".parse().expect("valid"));
    }
    request
}

/// Every byte that is not a letter or digit, `=` or `&`, percent-encoded.
fn query(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b == b'=' || b == b'&' {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").expect("writing to a String");
        }
    }
    out
}

fn build(route: Route, data: &[u8]) -> Request<Body> {
    let body = data.to_vec();
    match route {
        Route::CreateSegment => request("POST", SEGMENTS, JSON, body),
        Route::JsonPatch(key) => request("PATCH", &format!("{SEGMENTS}/{key}"), JSON, body),
        Route::SemanticPatch(key) => request("PATCH", &format!("{SEGMENTS}/{key}"), SEMANTIC, body),
        Route::UpdateTargets(part) => {
            request("POST", &format!("{SEGMENTS}/big/{part}"), JSON, body)
        }
        Route::CreateMetric => request("POST", "/api/v2/metrics/default", JSON, body),
        Route::PatchMetric => request("PATCH", "/api/v2/metrics/default/revenue", JSON, body),
        Route::Events => events(body, false),
        Route::EventsGzipBytes => events(body, true),
        Route::EventsGzipped => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data).expect("writing to memory");
            events(encoder.finish().expect("writing to memory"), true)
        }
        Route::ImportCsv => {
            let mut multipart = format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nmerge\r\n\
                 --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"keys.csv\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .into_bytes();
            multipart.extend_from_slice(data);
            multipart.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            import(multipart)
        }
        Route::ImportMultipart => import(body),
        Route::EmulatorConfig => request("PUT", "/_emulator/config", JSON, body),
        Route::ListSegments => request("GET", &format!("{SEGMENTS}?{}", query(data)), JSON, vec![]),
        Route::ListMetrics => {
            request("GET", &format!("/api/v2/metrics/default?{}", query(data)), JSON, vec![])
        }
    }
}

fn import(body: Vec<u8>) -> Request<Body> {
    request(
        "POST",
        &format!("{SEGMENTS}/big/imports"),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let route = ROUTES[usize::from(selector) % ROUTES.len()];
    let mut harness = Harness::new();
    harness.send(build(route, rest));
    // Whatever the request stored must still read back.
    harness.send(request("GET", "/_emulator/state", JSON, vec![]));
    harness.send(request("GET", SEGMENTS, JSON, vec![]));
});
