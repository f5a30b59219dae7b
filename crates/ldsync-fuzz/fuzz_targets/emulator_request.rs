//! Whole requests, in the text form of `ldsync_fuzz::parse_requests`: any method, path, query,
//! headers and body, several per input against one emulator, so that one request can set up
//! the state the next one reads.

#![no_main]

use axum::body::Body;
use axum::http::Request;
use ldsync_fuzz::{parse_requests, Harness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let requests = parse_requests(data);
    if requests.is_empty() {
        return;
    }
    let mut harness = Harness::new();
    for request in requests {
        harness.send(request);
    }
    // Whatever the requests stored must still read back.
    let state = Request::get("/_emulator/state").body(Body::empty()).expect("valid");
    harness.send(state);
});
