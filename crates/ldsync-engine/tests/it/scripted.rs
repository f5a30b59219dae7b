//! A tiny scripted HTTP/1.1 proxy on 127.0.0.1, in front of the emulator: a script answers the
//! requests it picks (a `422`, a `400`: answers the emulator does not give on demand), and
//! every other request is forwarded to the emulator as it came. Every request is recorded with
//! the status it was answered.
//!
//! Each connection serves one request and is closed (`Connection: close`, both ways), so every
//! attempt of the client is a new connection and a new recorded request.

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

/// One request as received: `method` and `path` (without the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The status it was answered.
    pub(crate) status: u16,
    /// Whether the script answered it (else the emulator did).
    pub(crate) scripted: bool,
}

/// A scripted answer: a status and a JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Reply {
    /// LaunchDarkly's error body, `{"code","message"}`.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        Self { status, body: serde_json::json!({ "code": code, "message": message }).to_string() }
    }
}

type Script = dyn Fn(&str, &str) -> Option<Reply> + Send + Sync;

struct Shared {
    upstream: SocketAddr,
    script: Mutex<Arc<Script>>,
    seen: Mutex<Vec<Seen>>,
}

/// The running proxy; dropping it stops it.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`) that forwards everything.
    pub(crate) async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the emulator listens on an IP address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forward_all: Arc<Script> = Arc::new(|_: &str, _: &str| None);
        let shared =
            Arc::new(Shared { upstream, script: Mutex::new(forward_all), seen: Mutex::default() });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving.clone()));
            }
        });
        Self { addr, shared, task }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, `script(method, path)` answers the requests for which it returns a reply;
    /// the others go to the emulator.
    pub(crate) fn script(
        &self,
        script: impl Fn(&str, &str) -> Option<Reply> + Send + Sync + 'static,
    ) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// From now on, every request goes to the emulator.
    pub(crate) fn forward_all(&self) {
        self.script(|_, _| None);
    }

    /// Takes the requests recorded since the last call.
    pub(crate) fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.shared.seen.lock().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 message head and its `content-length` body (or, chunked, up to the last
/// chunk) from `stream`: the head's lines and the body bytes. `None` when the peer went away.
async fn read_request(stream: &mut TcpStream) -> Option<(Vec<String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    let header = |name: &str| {
        lines.iter().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
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
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((lines, buf[head_end..].to_vec()))
}

/// `lines` without the `connection` and `keep-alive` headers, with `connection: close`.
fn closing(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        let name = line.split_once(':').map_or("", |(n, _)| n.trim());
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        let _ = write!(out, "{line}\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    out
}

/// Sends the request to the emulator and returns its whole answer, with `connection: close`.
async fn forward(upstream: SocketAddr, lines: &[String], body: &[u8]) -> (u16, Vec<u8>) {
    let mut conn = TcpStream::connect(upstream).await.unwrap();
    conn.write_all(closing(lines).as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let head_end = find(&answer, b"\r\n\r\n").expect("the emulator answers HTTP/1.1");
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    let status = lines[0].split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut out = closing(&lines).into_bytes();
    out.extend_from_slice(&answer[head_end + 4..]);
    (status, out)
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some((lines, body)) = read_request(&mut stream).await else { return };
    let mut request_line = lines[0].split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default();
    let path = target.split_once('?').map_or(target, |(path, _)| path).to_owned();
    let script = shared.script.lock().unwrap().clone();
    let (status, scripted, out) = if let Some(reply) = script(&method, &path) {
        let mut out = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            reply.status,
            reply.body.len()
        );
        out.push_str(&reply.body);
        (reply.status, true, out.into_bytes())
    } else {
        let (status, out) = forward(shared.upstream, &lines, &body).await;
        (status, false, out)
    };
    shared.seen.lock().unwrap().push(Seen { method, path, status, scripted });
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
