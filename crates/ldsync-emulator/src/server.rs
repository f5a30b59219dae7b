//! The server: binding, the request gate (auth, rate limits, faults), start and stop.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api_error::ApiError;
use crate::config::{EmulatorConfig, ProjectSpec, TokenSpec};
use crate::error::{Error, Result};
use crate::faults::{FaultEngine, FaultKind, FaultSpec, Injection};
use crate::limits::{Decision, Limiter, RateLimitSpec};
use crate::snapshot::{Snapshot, Stats};
use crate::state::{now_ms, Model};
use crate::{environments, events, imports, introspection, metrics, segments};

/// What the handlers share.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) tokens: Vec<TokenSpec>,
    pub(crate) projects: Vec<ProjectSpec>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Everything behind the one lock. It is never held across an `.await`.
pub(crate) struct Inner {
    pub(crate) model: Model,
    pub(crate) stats: Stats,
    pub(crate) limiter: Limiter,
    pub(crate) faults: FaultEngine,
    pub(crate) import_delay: Duration,
    pub(crate) dirty: bool,
    /// The latest requests as received, for tests that check what a client sends.
    pub(crate) requests: std::collections::VecDeque<LoggedRequest>,
}

/// The most requests [`Emulator::request_log`] keeps (the oldest go first).
pub const REQUEST_LOG_LEN: usize = 2_000;
/// The most bytes of a body the request log keeps.
pub const REQUEST_LOG_BODY: usize = 1 << 20;

/// One request as the emulator received it: everything a client sent, for checks such as
/// "the token appears in the `Authorization` header and nowhere else".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The method.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// Every header, in order, as (name, value); values that are not text are shown lossily.
    pub headers: Vec<(String, String)>,
    /// The body as sent (its first [`REQUEST_LOG_BODY`] bytes).
    pub body: Vec<u8>,
}

pub(crate) type AppState = Arc<Shared>;

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler cannot leave the model half-changed in a way later requests
        // depend on, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new(config: &EmulatorConfig, model: Model, shutdown: watch::Receiver<bool>) -> AppState {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                model,
                stats: Stats::default(),
                limiter: Limiter::new(config.rate_limits.clone()),
                faults: FaultEngine::new(config.faults.clone(), config.seed),
                import_delay: config.import_delay,
                dirty: false,
                requests: std::collections::VecDeque::new(),
            }),
            tokens: config.tokens.clone(),
            projects: config.projects.clone(),
            shutdown,
        })
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.model = Model::new(&self.projects);
        inner.stats = Stats::default();
        inner.requests.clear();
        inner.limiter = Limiter::new(inner.limiter.specs());
        let (specs, seed) = (inner.faults.specs(), inner.faults.seed());
        inner.faults = FaultEngine::new(specs, seed);
        inner.dirty = true;
    }
}

/// The caller of a request, once its token is known.
#[derive(Clone)]
pub(crate) struct Caller(pub(crate) Arc<TokenSpec>);

impl Caller {
    /// `403` unless the token may perform `action`.
    pub(crate) fn require(&self, action: &str) -> Result<(), ApiError> {
        if self.0.allows(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(action))
        }
    }
}

/// One accepted connection, reachable from its requests so a fault can reset it.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    reset: Arc<AtomicBool>,
}

/// A TCP listener whose connections can be reset from a handler.
struct ResettableListener(TcpListener);

/// A TCP stream that fails with a reset, and sends one, once its flag is set.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableStream {
    fn check(&self) -> io::Result<()> {
        if self.reset.load(Ordering::Acquire) {
            // With SO_LINGER 0 closing the socket sends RST instead of FIN; the error makes
            // hyper drop the connection now.
            let _ = self.inner.set_zero_linger();
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "fault: connection reset"));
        }
        Ok(())
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let reset = Arc::new(AtomicBool::new(false));
                    return (
                        ResettableStream { inner: stream, reset: reset.clone() },
                        ConnHandle { reset },
                    );
                }
                Err(error) => {
                    tracing::debug!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| ConnHandle { reset: Arc::new(AtomicBool::new(false)) })
    }
}

impl Connected<IncomingStream<'_, ResettableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The emulated routes, as the statistics name them.
const ROUTES: [&str; 13] = [
    "/api/v2/caller-identity",
    "/api/v2/versions",
    "/api/v2/projects/{projectKey}/environments/{environmentKey}",
    "/api/v2/segments/{projectKey}/{environmentKey}",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/contexts",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/users",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/contexts/{contextKey}",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/users/{userKey}",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports",
    "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports/{importID}",
    "/api/v2/metrics/{projectKey}",
    "/api/v2/metrics/{projectKey}/{metricKey}",
];

/// The route template a concrete path belongs to (`{…}` segments match any one segment).
fn route_template(path: &str) -> String {
    const EVENTS: &str = "/v2/event-data-import/{projectKey}/{environmentKey}";
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES
        .iter()
        .chain(std::iter::once(&EVENTS))
        .find(|t| {
            let tparts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
            tparts.len() == parts.len()
                && tparts.iter().zip(&parts).all(|(t, p)| t.starts_with('{') || t == p)
        })
        .map_or_else(|| path.to_owned(), |t| (*t).to_owned())
}

fn router(shared: AppState) -> Router {
    let api = Router::new()
        .route("/api/v2/caller-identity", get(environments::caller_identity))
        .route("/api/v2/versions", get(environments::versions))
        .route("/api/v2/projects/{project}/environments/{env}", get(environments::get_environment))
        .route("/api/v2/segments/{project}/{env}", get(segments::list).post(segments::create))
        .route(
            "/api/v2/segments/{project}/{env}/{segment}",
            get(segments::get).patch(segments::patch).delete(segments::delete),
        )
        .route(
            "/api/v2/segments/{project}/{env}/{segment}/contexts",
            post(segments::update_targets),
        )
        .route("/api/v2/segments/{project}/{env}/{segment}/users", post(segments::update_targets))
        .route(
            "/api/v2/segments/{project}/{env}/{segment}/contexts/{key}",
            get(segments::membership),
        )
        .route("/api/v2/segments/{project}/{env}/{segment}/users/{key}", get(segments::membership))
        .route("/api/v2/segments/{project}/{env}/{segment}/imports", post(imports::create))
        .route("/api/v2/segments/{project}/{env}/{segment}/imports/{id}", get(imports::get))
        .route("/api/v2/metrics/{project}", get(metrics::list).post(metrics::create))
        .route(
            "/api/v2/metrics/{project}/{metric}",
            get(metrics::get).patch(metrics::patch).delete(metrics::delete),
        )
        .route("/v2/event-data-import/{project}/{env}", post(events::import))
        .route_layer(from_fn_with_state(shared.clone(), gate));
    Router::new()
        .merge(api)
        .merge(introspection::router())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
        })
        // Handlers cap their own bodies (10 MB events, 40 MB CSV files, JSON) with
        // LaunchDarkly's error bodies.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn rate_headers(resp: &mut Response, d: &Decision) {
    let h = resp.headers_mut();
    let mut put = |name: &'static str, v: Option<u64>| {
        if let Some(v) = v {
            h.insert(name, HeaderValue::from(v));
        }
    };
    put("x-ratelimit-route-remaining", d.route_remaining.map(u64::from));
    put("x-ratelimit-global-remaining", d.global_remaining.map(u64::from));
    put("x-ratelimit-reset", d.reset_ms);
    put("retry-after", d.retry_after_secs);
}

/// Runs before every emulated route: counts, authenticates, rate-limits and injects faults.
async fn gate(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    // The body is read once here, logged, and handed on unchanged.
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::bad_request("the request body could not be read").into_response();
    };
    let logged = LoggedRequest {
        method: parts.method.as_str().to_owned(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
        body: bytes[..bytes.len().min(REQUEST_LOG_BODY)].to_vec(),
    };
    {
        let mut inner = shared.lock();
        if inner.requests.len() == REQUEST_LOG_LEN {
            inner.requests.pop_front();
        }
        inner.requests.push_back(logged);
    }
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let template = route_template(&path);
    let caller = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| shared.tokens.iter().find(|s| s.token == t.trim()))
        .cloned();
    let (decision, injection) = {
        let mut inner = shared.lock();
        inner.stats.requests += 1;
        *inner.stats.requests_by_route.entry(format!("{method} {template}")).or_default() += 1;
        if caller.is_none() {
            inner.stats.unauthorized += 1;
            return ApiError::unauthorized().into_response();
        }
        let d = inner.limiter.check(
            &method,
            &path,
            path.starts_with("/api/"),
            Instant::now(),
            now_ms(),
        );
        if d.limited {
            inner.stats.rate_limited += 1;
            if d.into_exhausted_window {
                inner.stats.requests_into_exhausted_windows += 1;
            }
        }
        let injection = if d.limited { None } else { inner.faults.decide(&method, &path) };
        if let Some(i) = injection {
            inner.stats.faults_injected += 1;
            *inner.stats.faults_by_kind.entry(i.kind.as_str().to_owned()).or_default() += 1;
        }
        (d, injection)
    };
    if decision.limited {
        let mut resp = ApiError::rate_limited().into_response();
        rate_headers(&mut resp, &decision);
        return resp;
    }
    if let Some(injection) = injection {
        let conn = req.extensions().get::<ConnectInfo<ConnHandle>>().map(|c| c.0.clone());
        return fault_response(injection, conn, shared.shutdown.clone()).await;
    }
    req.extensions_mut().insert(Caller(Arc::new(caller.expect("checked above"))));
    let mut resp = next.run(req).await;
    match resp.status() {
        StatusCode::FORBIDDEN => shared.lock().stats.forbidden += 1,
        StatusCode::UNAUTHORIZED => shared.lock().stats.unauthorized += 1,
        _ => {}
    }
    rate_headers(&mut resp, &decision);
    resp
}

async fn fault_response(
    injection: Injection,
    conn: Option<ConnHandle>,
    mut shutdown: watch::Receiver<bool>,
) -> Response {
    let (status, code, message) = match injection.kind {
        FaultKind::InternalServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", "Internal server error")
        }
        FaultKind::BadGateway => (StatusCode::BAD_GATEWAY, "bad_gateway", "Bad gateway"),
        FaultKind::GatewayTimeout => {
            (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", "Gateway timeout")
        }
        FaultKind::ServiceUnavailable | FaultKind::Trickle | FaultKind::Hang => {
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "Service unavailable")
        }
        FaultKind::ConnectionReset => {
            if let Some(conn) = conn {
                conn.reset.store(true, Ordering::Release);
            }
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", "Connection reset")
        }
    };
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    match injection.kind {
        FaultKind::Hang => {
            // Answer only when the emulator stops (the client normally times out first).
            let _ = shutdown.wait_for(|stop| *stop).await;
            (status, body).into_response()
        }
        FaultKind::Trickle => {
            let delay = injection.delay;
            let stream = futures_util::stream::unfold(
                (body.into_bytes(), 0usize, shutdown),
                move |(bytes, at, mut shutdown)| async move {
                    if at >= bytes.len() {
                        return None;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                    let chunk = bytes::Bytes::copy_from_slice(&bytes[at..=at]);
                    Some((Ok::<_, io::Error>(chunk), (bytes, at + 1, shutdown)))
                },
            );
            let mut resp = Response::new(axum::body::Body::from_stream(stream));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ => {
            let mut resp = (status, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
    }
}

/// The emulator's routes as a service, without a listener: to drive it in-process with
/// `tower::ServiceExt::oneshot`, as the fuzz targets do.
///
/// Its state starts empty (`config.state_file` is not read or written) and lives as long as the
/// router. With no server to stop, the `hang` fault answers at once, `trickle` sends an empty
/// body, and `reset` answers `500` with no connection to reset; the address fields of `config`
/// are unused.
pub fn app(config: &EmulatorConfig) -> Router {
    // The sender is dropped at once: to the faults that wait for it, the emulator has stopped.
    let (_, shutdown) = watch::channel(false);
    router(Shared::new(config, Model::new(&config.projects), shutdown))
}

/// A running emulator. Dropping it stops the server (and saves the state file, if any).
pub struct Emulator {
    shared: AppState,
    addr: SocketAddr,
    events_addr: SocketAddr,
    state_file: Option<PathBuf>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("events_addr", &self.events_addr)
            .finish_non_exhaustive()
    }
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_string(), source })
}

fn load_state(path: &Path) -> Result<Option<Model>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::StateFileParse { path: path.to_owned(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::StateFileIo { action: "read", path: path.to_owned(), source }),
    }
}

fn save_state(path: &Path, model: &Model) -> Result<()> {
    let bytes = serde_json::to_vec(model).map_err(Error::Serialise)?;
    let tmp = path.with_extension("tmp");
    let io_err = |source| Error::StateFileIo { action: "write", path: path.to_owned(), source };
    std::fs::write(&tmp, bytes).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}

fn url_of(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Emulator {
    /// Binds, loads the state file if it exists, and starts serving in the background.
    pub async fn start(config: EmulatorConfig) -> Result<Self> {
        let mut model = Model::new(&config.projects);
        if let Some(path) = &config.state_file {
            if let Some(saved) = load_state(path)? {
                model = saved;
                // Projects added to the configuration since the save exist too.
                for (key, project) in Model::new(&config.projects).projects {
                    let existing = model.projects.entry(key).or_insert_with(|| project.clone());
                    for (ekey, env) in project.environments {
                        existing.environments.entry(ekey).or_insert(env);
                    }
                }
            }
        }
        let (stop, shutdown) = watch::channel(false);
        let shared = Shared::new(&config, model, shutdown);
        let mut listeners = vec![bind(config.host, config.port).await?];
        if let Some(port) = config.events_port {
            listeners.push(bind(config.host, port).await?);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .map_err(|source| Error::Bind { addr: config.host.to_string(), source })
            })
            .collect::<Result<_>>()?;
        let mut tasks = Vec::new();
        for listener in listeners {
            let app = router(shared.clone()).into_make_service_with_connect_info::<ConnHandle>();
            let mut rx = shared.shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                if let Err(error) = axum::serve(ResettableListener(listener), app)
                    .with_graceful_shutdown(signal)
                    .await
                {
                    tracing::error!(%error, "Emulator server failed.");
                }
            }));
        }
        if let Some(path) = config.state_file.clone() {
            let shared = shared.clone();
            let mut rx = shared.shutdown.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = rx.wait_for(|stop| *stop) => return,
                    }
                    let model = {
                        let mut inner = shared.lock();
                        if !inner.dirty {
                            continue;
                        }
                        inner.dirty = false;
                        inner.model.clone()
                    };
                    if let Err(error) = save_state(&path, &model) {
                        tracing::warn!(%error, "Could not save the emulator state.");
                    }
                }
            }));
        }
        Ok(Self {
            shared,
            addr: addrs[0],
            events_addr: *addrs.last().expect("at least one listener"),
            state_file: config.state_file,
            stop,
            tasks,
            stopped: false,
        })
    }

    /// The address of the REST API.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the REST API, e.g. `http://127.0.0.1:8765` (paths start with `/api/v2`).
    pub fn api_url(&self) -> String {
        url_of(self.addr)
    }

    /// The base URL of metric import (`/v2/event-data-import/…`); the API's unless a separate
    /// events port was configured.
    pub fn events_url(&self) -> String {
        url_of(self.events_addr)
    }

    /// The full-access token (the first configured).
    pub fn token(&self) -> &str {
        self.shared.tokens.first().map_or("", |t| t.token.as_str())
    }

    /// The whole state: segments with sorted members, metrics, events in arrival order.
    pub fn snapshot(&self) -> Snapshot {
        let mut inner = self.shared.lock();
        inner.model.advance_all_imports(now_ms());
        inner.model.snapshot()
    }

    /// Alias of [`Emulator::snapshot`].
    pub fn state(&self) -> Snapshot {
        self.snapshot()
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// The latest requests received (at most [`REQUEST_LOG_LEN`]), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Replaces the rate limits; every window starts afresh.
    pub fn set_rate_limits(&self, limits: Vec<RateLimitSpec>) {
        self.shared.lock().limiter = Limiter::new(limits);
    }

    /// Replaces the fault rules (keeping the seed); their counters start afresh.
    pub fn set_faults(&self, faults: Vec<FaultSpec>) {
        let mut inner = self.shared.lock();
        let seed = inner.faults.seed();
        inner.faults = FaultEngine::new(faults, seed);
    }

    /// Replaces the fault rules and the seed.
    pub fn set_faults_with_seed(&self, faults: Vec<FaultSpec>, seed: u64) {
        self.shared.lock().faults = FaultEngine::new(faults, seed);
    }

    /// Sets how long imports stay `in_progress`.
    pub fn set_import_delay(&self, delay: Duration) {
        self.shared.lock().import_delay = delay;
    }

    /// Empties segments, metrics, imports and events, and zeroes the statistics and the
    /// limit and fault counters; the projects, limits and faults stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Serves until `signal` completes, then stops as [`Emulator::shutdown`] does.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        signal.await;
        self.shutdown().await
    }

    /// Stops serving, waits for open requests to end, and saves the state file if any.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stopped = true;
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
        self.save()
    }

    fn save(&self) -> Result<()> {
        match &self.state_file {
            Some(path) => {
                let model = self.shared.lock().model.clone();
                save_state(path, &model)
            }
            None => Ok(()),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self.stop.send(true);
        if let Err(error) = self.save() {
            tracing::warn!(%error, "Could not save the emulator state.");
        }
    }
}

/// Starts an emulator, logs its URLs, and serves until `signal` completes; what
/// `ldsync emulator` runs. Use [`Emulator::start`] and [`Emulator::run_until`] to print the URLs
/// yourself.
pub async fn serve_until(config: EmulatorConfig, signal: impl Future<Output = ()>) -> Result<()> {
    let emulator = Emulator::start(config).await?;
    tracing::info!(api_url = %emulator.api_url(), events_url = %emulator.events_url(), "Emulator listening.");
    emulator.run_until(signal).await
}
