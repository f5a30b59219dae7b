//! The client: one `send` loop that waits on the limiter before every attempt and lets
//! `retry::retry_action` decide what follows each answer.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use ldsync_core::Secret;
use rand::Rng;
use reqwest::{header::HeaderMap, Method, StatusCode, Url};

use crate::{
    error::excerpt,
    limiter::RateLimitHeaders,
    retry::{retry_action, Outcome, Wait},
    EnvironmentRep, Error, Limiter, Result, RetryAction, RetryPolicy,
};

/// The dated API version every request asks for.
pub const API_VERSION: &str = "20240415";
/// The `User-Agent` of REST requests.
pub const USER_AGENT: &str = concat!("ldsync/", env!("CARGO_PKG_VERSION"));

/// A route: the method and path template LaunchDarkly limits requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path with its parameters named, as in the spec.
    pub template: &'static str,
}

impl Route {
    /// `getEnvironment`.
    pub const GET_ENVIRONMENT: Route = Route {
        method: "GET",
        template: "/api/v2/projects/{projectKey}/environments/{environmentKey}",
    };

    /// The route as `METHOD /template`, the key of its limiter.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

/// How to build a [`LaunchDarklyClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The REST API's base URL, such as `https://app.launchdarkly.com`.
    pub api_url: String,
    /// The event ingestion base URL, such as `https://events.launchdarkly.com`.
    pub events_url: String,
    /// The access token.
    pub token: Secret,
    /// The deadline of one attempt, from sending to the last byte of the body.
    pub request_timeout: Duration,
    /// The deadline of opening a connection.
    pub connect_timeout: Duration,
    /// How persistent retries are.
    pub retry: RetryPolicy,
    /// The limiter; share one between all clients of a process.
    pub limiter: Arc<Limiter>,
    /// Told about every attempt and retry (metrics); `None` tells nobody.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

/// Hears about every request the client makes: what `/metrics` counts.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// One attempt ended: with an HTTP status, or `None` when no answer came.
    fn attempt(&self, route: &str, status: Option<u16>);
    /// The attempt will be retried after `delay`.
    fn retry(&self, route: &str, delay: Duration);
}

impl ClientOptions {
    /// Options with the default timeouts, retries and a limiter of its own.
    pub fn new(api_url: impl Into<String>, events_url: impl Into<String>, token: Secret) -> Self {
        Self {
            api_url: api_url.into(),
            events_url: events_url.into(),
            token,
            request_timeout: Duration::from_mins(1),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            limiter: Arc::new(Limiter::default()),
            observer: None,
        }
    }
}

/// The rate-limited LaunchDarkly client, shared by every sync that writes to one environment.
#[derive(Debug, Clone)]
pub struct LaunchDarklyClient {
    http: reqwest::Client,
    api_url: Url,
    events_url: Url,
    token: Secret,
    retry: RetryPolicy,
    limiter: Arc<Limiter>,
    observer: Option<Arc<dyn RequestObserver>>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl LaunchDarklyClient {
    /// Builds the client; fails only on an invalid base URL or TLS setup.
    pub fn new(options: ClientOptions) -> Result<Self> {
        let parse = |what: &str, url: &str| {
            Url::parse(url.trim_end_matches('/'))
                .map_err(|err| Error::Setup(format!("invalid {what} `{url}`: {err}")))
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|err| Error::Setup(err.to_string()))?;
        Ok(Self {
            http,
            api_url: parse("api_url", &options.api_url)?,
            events_url: parse("events_url", &options.events_url)?,
            token: options.token,
            retry: options.retry,
            limiter: options.limiter,
            observer: options.observer,
        })
    }

    /// The REST base URL.
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// The event ingestion base URL.
    pub fn events_url(&self) -> &Url {
        &self.events_url
    }

    /// The HTTP client, for building requests.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A URL under `base` with each of `segments` percent-encoded as one path segment.
    pub(crate) fn url(base: &Url, segments: &[&str]) -> Url {
        let mut url = base.clone();
        url.path_segments_mut()
            .expect("http(s) base URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Reads an environment: the cheap authenticated call of `validate --check-connections`.
    pub async fn get_environment(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<EnvironmentRep> {
        let route = Route::GET_ENVIRONMENT;
        let url = Self::url(
            &self.api_url,
            &["api", "v2", "projects", project, "environments", environment],
        );
        let answer = self.send(route, || self.http.request(Method::GET, url.clone())).await?;
        decode(route, &answer.body)
    }

    /// Checks the token against an environment and, when given, its client-side ID.
    pub async fn check_environment(
        &self,
        project: &str,
        environment: &str,
        client_side_id: Option<&str>,
    ) -> Result<EnvironmentRep> {
        let rep = self.get_environment(project, environment).await?;
        if let Some(expected) = client_side_id {
            if rep.id != expected {
                return Err(Error::ClientSideIdMismatch {
                    project: project.to_owned(),
                    environment: environment.to_owned(),
                    expected: expected.to_owned(),
                    actual: rep.id,
                });
            }
        }
        Ok(rep)
    }

    /// Sends one request until it succeeds, fails, or the retry budget runs out.
    ///
    /// `build` makes the request afresh for every attempt; the client adds the headers every
    /// request carries.
    pub(crate) async fn send(
        &self,
        route: Route,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer> {
        let name = route.name();
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.until_ready(&name).await;
            let request = build()
                .header("Authorization", self.token.expose())
                .header("LD-API-Version", API_VERSION);
            let (outcome, failure, answer) = match Self::attempt(request).await {
                Ok((status, headers, body)) => {
                    self.limiter.observe(&name, rate_limit_headers(&headers));
                    let outcome = Outcome::Status {
                        status: status.as_u16(),
                        reset_epoch_ms: header_u64(&headers, "x-ratelimit-reset"),
                        retry_after_secs: header_u64(&headers, "retry-after"),
                    };
                    let failure = Error::Status {
                        route: name.clone(),
                        status: status.as_u16(),
                        body: excerpt(&String::from_utf8_lossy(&body)),
                    };
                    (outcome, failure, Some(Answer { headers, body }))
                }
                Err(source) => {
                    (Outcome::Transport, Error::Transport { route: name.clone(), source }, None)
                }
            };
            if let Some(observer) = &self.observer {
                let status = match outcome {
                    Outcome::Status { status, .. } => Some(status),
                    Outcome::Transport => None,
                };
                observer.attempt(&name, status);
            }
            let action = retry_action(&self.retry, outcome, attempt, SystemTime::now());
            let out_of_time = started.elapsed() >= self.retry.max_elapsed;
            match action {
                RetryAction::Done => {
                    return Ok(answer.expect("a success always carries an answer"));
                }
                RetryAction::Retry(wait) if !out_of_time => {
                    let delay = self.delay(wait);
                    if matches!(outcome, Outcome::Status { status: 429, .. }) {
                        self.limiter.pause(&name, delay);
                    }
                    if let Some(observer) = &self.observer {
                        observer.retry(&name, delay);
                    }
                    let status = match outcome {
                        Outcome::Status { status, .. } => status.to_string(),
                        Outcome::Transport => "no answer".to_owned(),
                    };
                    tracing::warn!(
                        route = %name,
                        status = %status,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %with_causes(&failure),
                        "Retrying a LaunchDarkly request."
                    );
                    tokio::time::sleep(delay).await;
                }
                RetryAction::Retry(_) | RetryAction::Fail if failure.is_final_status() => {
                    return Err(failure);
                }
                RetryAction::Retry(_) | RetryAction::Fail => {
                    return Err(Error::Exhausted {
                        route: name,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                        last: with_causes(&failure),
                    });
                }
            }
        }
    }

    /// One attempt: the whole body is read within the request's deadline.
    async fn attempt(
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), reqwest::Error> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok((status, headers, body))
    }

    /// The actual wait for a retry decision, jitter included.
    fn delay(&self, wait: Wait) -> Duration {
        let mut rng = rand::rng();
        match wait {
            Wait::Until(until) => {
                let jitter_ms = rng.random_range(0..=self.retry.base_delay.as_millis().max(1));
                until + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))
            }
            Wait::Backoff(ceiling) => {
                let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rng.random_range(0..=ceiling_ms))
            }
        }
    }
}

impl Error {
    /// Whether this is an answer that retrying could not change (as opposed to a retryable
    /// failure whose budget ran out).
    fn is_final_status(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status != 429 && (*status < 500 || *status == 501))
    }
}

/// `error` followed by its causes, as `error: cause: cause`.
///
/// `format!("{failure:#}")` printed a transport failure as just "cannot reach LaunchDarkly at
/// …": `{:#}` shows no causes for a `thiserror` error, so a spent budget did not say whether
/// the connection was refused, reset or timed out. The causes never hold the token, which
/// travels in a header, not in the URL.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper repeats its cause in its own message; say each thing once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn rate_limit_headers(headers: &HeaderMap) -> RateLimitHeaders {
    RateLimitHeaders {
        route_remaining: header_u64(headers, "x-ratelimit-route-remaining"),
        global_remaining: header_u64(headers, "x-ratelimit-global-remaining"),
        reset_epoch_ms: header_u64(headers, "x-ratelimit-reset"),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(route: Route, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|err| Error::Decode {
        route: route.name(),
        message: format!("{err}: {}", excerpt(&String::from_utf8_lossy(body))),
    })
}
