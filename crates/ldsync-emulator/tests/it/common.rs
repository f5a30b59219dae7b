//! A started emulator with a client, and short ways to call it.

use ldsync_emulator::{Emulator, EmulatorConfig};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// An answer: status, headers and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a LaunchDarkly error body with this status and code.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.body["code"], code, "{:?}", self.body);
        assert!(self.body["message"].is_string(), "{:?}", self.body);
    }
}

pub(crate) struct Harness {
    pub(crate) emu: Emulator,
    pub(crate) http: reqwest::Client,
    pub(crate) token: String,
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::with(EmulatorConfig::default()).await
    }

    pub(crate) async fn with(config: EmulatorConfig) -> Self {
        let emu = Emulator::start(config).await.unwrap();
        let token = emu.token().to_owned();
        Self { emu, http: client(), token }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.api_url())
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).header("Authorization", &self.token)
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        send(req).await
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub(crate) async fn semantic_patch(&self, path: &str, body: &Value) -> Resp {
        send(
            self.request(Method::PATCH, path)
                .header("Content-Type", "application/json; domain-model=launchdarkly.semanticpatch")
                .body(body.to_string()),
        )
        .await
    }

    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a big segment in `default`/`production`.
    pub(crate) async fn big_segment(&self, key: &str) -> Resp {
        let r = self
            .post(
                "/api/v2/segments/default/production",
                &serde_json::json!({"key": key, "name": key, "unbounded": true, "unboundedContextKind": "user"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r
    }

    /// Sends events to the metric import with the required headers.
    pub(crate) async fn import_events(&self, body: &Value, payload_id: Option<&str>) -> Resp {
        let mut req = self
            .http
            .post(format!("{}/v2/event-data-import/default/production", self.emu.events_url()))
            .header("Authorization", &self.token)
            .header("X-LaunchDarkly-Event-Schema", "4")
            .header("User-Agent", "MetricImport-ldsync-int/0.1.0")
            .json(body);
        if let Some(id) = payload_id {
            req = req.header("X-LaunchDarkly-Payload-ID", id);
        }
        send(req).await
    }
}

pub(crate) async fn send(req: reqwest::RequestBuilder) -> Resp {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Resp { status, headers, body }
}
