//! What the fuzz targets share: an in-process emulator and the text form of its requests.
//!
//! The targets live in `fuzz_targets/`; `make fuzz` runs each for a minute, and
//! `docs/reliability.md` says what they cover and what the last run measured.

use std::sync::LazyLock;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use ldsync_emulator::{EmulatorConfig, TokenSpec, DEFAULT_TOKEN};
use tower::ServiceExt;

/// A token the harness's emulator accepts for a few actions only, so `403` paths run too.
pub const LIMITED_TOKEN: &str = "fuzz-limited";

/// Separates the requests of one input in the text form read by [`parse_requests`].
pub const REQUEST_SEPARATOR: &[u8] = b"\n%%\n";

/// The most requests one input sends, so that an input stays fast.
const MAX_REQUESTS: usize = 16;

/// The requests every input starts from: a standard segment, a big segment and a metric, so
/// that patches, target updates and imports reach the code behind "not found".
const PRELUDE: [(&str, &str, &str); 3] = [
    (
        "POST",
        "/api/v2/segments/default/production",
        r#"{"key":"std","name":"Standard","tags":["a"]}"#,
    ),
    (
        "POST",
        "/api/v2/segments/default/production",
        r#"{"key":"big","name":"Big","unbounded":true,"unboundedContextKind":"user"}"#,
    ),
    (
        "POST",
        "/api/v2/metrics/default",
        r#"{"key":"revenue","name":"Revenue","kind":"custom","isNumeric":true,"eventKey":"purchase","unit":"USD","successCriteria":"HigherThanBaseline"}"#,
    ),
];

/// One runtime for every input: building one per input would cost more than most inputs.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
});

/// Whether to print each request and its answer (`LDSYNC_FUZZ_TRACE=1`), to check the seeds
/// or read what a crashing input did.
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("LDSYNC_FUZZ_TRACE").is_some());

/// A fresh emulator with the prelude's objects, driven in-process.
pub struct Harness {
    app: Router,
    /// Whether an input changed the emulator's faults, after which `5xx` answers are expected.
    faults_possible: bool,
}

impl Harness {
    /// An emulator with the default project, a full and a limited token, imports that complete
    /// at once, and the prelude's segments and metric.
    pub fn new() -> Self {
        let config =
            EmulatorConfig { import_delay: std::time::Duration::ZERO, ..EmulatorConfig::default() }
                .with_limited_token(TokenSpec::limited(
                    LIMITED_TOKEN,
                    ["createSegment", "updateIncluded"],
                ));
        let mut harness = Self { app: ldsync_emulator::app(&config), faults_possible: false };
        for (method, path, body) in PRELUDE {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::AUTHORIZATION, DEFAULT_TOKEN)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .expect("the prelude's requests are valid");
            let (status, body) = harness.send(request);
            assert_eq!(status, StatusCode::CREATED, "prelude {path}: {body:?}");
        }
        harness
    }

    /// Sends one request and reads the whole answer; panics on a `5xx` the input did not ask
    /// for, since bad input must get a `4xx`.
    pub fn send(&mut self, mut request: Request<Body>) -> (StatusCode, Bytes) {
        if request.uri().path().starts_with("/_emulator/config") {
            self.faults_possible = true;
        }
        if !request.headers().contains_key(header::AUTHORIZATION) {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static(DEFAULT_TOKEN));
        }
        let description = format!("{} {}", request.method(), request.uri());
        let (status, body) = RUNTIME.block_on(async {
            let response = self.app.clone().oneshot(request).await.expect("Router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the emulator's answers are in memory");
            (status, body)
        });
        if *TRACE {
            eprintln!("{description} -> {status} {}", String::from_utf8_lossy(&body));
        }
        assert!(
            self.faults_possible || !status.is_server_error(),
            "{description} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        (status, body)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads requests in a small text form, one per chunk between [`REQUEST_SEPARATOR`]s:
///
/// ```text
/// POST /api/v2/segments/default/production?limit=5
/// content-type: application/json
///
/// {"key":"a","name":"A"}
/// ```
///
/// A request line or header that HTTP would refuse is skipped, not reported: the fuzzer is
/// after the emulator's handling, not `http`'s builder. Without an `authorization` header the
/// full-access token is sent.
pub fn parse_requests(data: &[u8]) -> Vec<Request<Body>> {
    split(data, REQUEST_SEPARATOR).take(MAX_REQUESTS).filter_map(parse_request).collect()
}

fn parse_request(chunk: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match find(chunk, b"\n\n") {
        Some(at) => (&chunk[..at], &chunk[at + 2..]),
        None => (chunk, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let (method, target) = match request_line.iter().position(|&b| b == b' ') {
        Some(at) => (&request_line[..at], &request_line[at + 1..]),
        None => (&b"GET"[..], request_line),
    };
    let mut builder = Request::builder().method(Method::from_bytes(method).ok()?).uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The parts of `data` between occurrences of `separator`.
pub fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        let Some(at) = find(current, separator) else {
            rest = None;
            return Some(current);
        };
        rest = Some(&current[at + separator.len()..]);
        Some(&current[..at])
    })
}
