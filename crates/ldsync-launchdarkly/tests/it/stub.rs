//! A tiny scripted HTTP/1.1 server on 127.0.0.1 that records every request it receives: for
//! what the emulator does not expose (request headers) or cannot answer (a `501`).
//!
//! Each connection serves one request and is closed (`Connection: close`), so every attempt of
//! the client is a new connection and a new recorded request.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// `METHOD /path HTTP/1.1`.
    pub(crate) request_line: String,
    /// Header names lowercased, values as sent, in order (repeats kept).
    pub(crate) headers: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of header `name`.
    pub(crate) fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// What the stub answers.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// A JSON answer.
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.to_owned(),
        }
    }

    /// A `204 No Content`.
    pub(crate) fn no_content() -> Self {
        Self { status: 204, headers: Vec::new(), body: String::new() }
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Responder = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

/// The running stub; dropping it stops it.
pub(crate) struct Stub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Stub {
    /// Starts a stub that answers request number `n` (0-based) with `respond(&request, n)`.
    pub(crate) async fn start(
        respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, seen.clone(), respond.clone()));
            }
        });
        Self { addr, requests, task }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Recorded>>>, respond: Arc<Responder>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // The head.
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let recorded = Recorded { request_line, headers };
    // The body, read in full so that closing the socket does not reset the connection.
    let length = recorded.header_values("content-length").first().and_then(|v| v.parse().ok());
    let chunked = recorded.header_values("transfer-encoding").iter().any(|v| v.contains("chunked"));
    loop {
        let body = &buf[head_end..];
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if complete {
            break;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = {
        let mut seen = seen.lock().unwrap();
        let reply = respond(&recorded, seen.len());
        seen.push(recorded);
        reply
    };
    let mut out = format!("HTTP/1.1 {} Stub\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if reply.status != 204 {
        let _ = write!(out, "content-length: {}\r\n", reply.body.len());
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}
