//! Sessions that tokio-postgres opens and then hands back: the socket, past the startup.
//!
//! tokio-postgres turns every `DataRow` of a result into a `Row` (a message parsed twice, a
//! vector of ranges, a reference-counted buffer), passed from its connection task to the
//! caller: a third of the CPU of reading a million small rows. A reader that wants the bytes
//! can have them: [`PgConnect::connect_detachable`] opens a socket itself, lets tokio-postgres
//! do the startup (TLS, authentication, parameters) over it, and [`Detachable::drive`] runs a
//! piece of work on the client (setting the session up, preparing a statement) before it takes
//! the socket back, positioned between two messages with the session idle. What follows on
//! the socket is the caller's to speak.
//!
//! tokio-postgres never sees the socket itself, only a [`Shared`] handle to it: the handle
//! kept here takes it out once the connection is dropped. Dropping the connection before the
//! client writes nothing (the client's `Terminate` goes through the connection), so the server
//! sees the session go on.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Connection};

use crate::{PgConnect, RustlsConnect, RustlsStream};

/// A stream with two handles: one that tokio-postgres reads and writes through, and one kept
/// to take the stream out when tokio-postgres is done with it.
pub struct Shared<S>(Arc<Mutex<Option<S>>>);

impl<S> Shared<S> {
    fn pair(stream: S) -> (Self, Self) {
        let shared = Arc::new(Mutex::new(Some(stream)));
        (Self(Arc::clone(&shared)), Self(shared))
    }

    /// The stream, once; later reads and writes through the other handle fail.
    fn take(&self) -> Option<S> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn with<T>(
        &self,
        use_it: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(stream) => use_it(Pin::new(stream)),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the session's socket was taken back",
            ))),
        }
    }
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|stream| stream.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|stream| stream.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|stream| stream.poll_shutdown(cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Shared<RustlsStream<S>> {
    fn channel_binding(&self) -> ChannelBinding {
        // As `RustlsStream` reports: SCRAM authenticates without `-PLUS`.
        ChannelBinding::none()
    }
}

/// A socket to the server: TCP, or a Unix socket.
#[derive(Debug)]
pub enum ServerSocket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
}

/// Implements tokio's `AsyncRead` and `AsyncWrite` for an enum of two streams, each call
/// passed to the variant's stream.
macro_rules! either_stream {
    ($ty:ident, $a:ident, $b:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::$a(stream) => Pin::new(stream).poll_read(cx, buf),
                    $ty::$b(stream) => Pin::new(stream).poll_read(cx, buf),
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::$a(stream) => Pin::new(stream).poll_write(cx, buf),
                    $ty::$b(stream) => Pin::new(stream).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::$a(stream) => Pin::new(stream).poll_flush(cx),
                    $ty::$b(stream) => Pin::new(stream).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::$a(stream) => Pin::new(stream).poll_shutdown(cx),
                    $ty::$b(stream) => Pin::new(stream).poll_shutdown(cx),
                }
            }
        }
    };
}

either_stream!(ServerSocket, Tcp, Unix);

/// The TLS stream of a detachable session, as tokio-postgres holds it.
type SharedTls = Shared<RustlsStream<Shared<ServerSocket>>>;

/// Where the TLS handshake leaves the handle kept for the session.
type TlsSlot = Arc<Mutex<Option<SharedTls>>>;

/// The TLS handshake of a detachable session: rustls's, with the TLS stream shared.
struct DetachTls {
    inner: RustlsConnect,
    slot: TlsSlot,
}

impl TlsConnect<Shared<ServerSocket>> for DetachTls {
    type Stream = SharedTls;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SharedTls>> + Send>>;

    fn connect(self, stream: Shared<ServerSocket>) -> Self::Future {
        Box::pin(async move {
            let tls = self.inner.connect(stream).await?;
            let (kept, given) = Shared::pair(tls);
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
            Ok(given)
        })
    }
}

/// A session past its startup, its socket the caller's: plain, or TLS.
#[derive(Debug)]
pub enum SessionStream {
    /// No TLS.
    Plain(ServerSocket),
    /// TLS over the socket.
    Tls(Box<RustlsStream<Shared<ServerSocket>>>),
}

either_stream!(SessionStream, Plain, Tls);

/// Why a detachable session could not be opened or taken back.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// No host could be reached (the last host's error).
    #[error("cannot reach {host}: {source}")]
    Unreachable {
        /// The host and port, or the socket's path.
        host: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server refused the session, or the work on the client failed.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// A connection whose socket can be taken back; see [`Detachable::drive`].
pub struct Detachable {
    connection: Connection<Shared<ServerSocket>, SharedTls>,
    socket: Shared<ServerSocket>,
    tls: TlsSlot,
}

impl std::fmt::Debug for Detachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detachable").finish_non_exhaustive()
    }
}

impl Detachable {
    /// Runs `work` on the client while the connection is driven, then drops the connection
    /// and gives the socket back, with what `work` returned.
    ///
    /// `work` must leave the session idle: every request answered, nothing dropped that
    /// sends a message on its way out (keep a prepared `Statement` until after this returns).
    /// Drop the client only after this returns.
    pub async fn drive<T, W>(self, work: W) -> Result<(T, SessionStream), DetachError>
    where
        W: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let Self { mut connection, socket, tls } = self;
        let mut work = std::pin::pin!(work);
        let done = tokio::select! {
            biased;
            done = &mut work => done?,
            ended = &mut connection => {
                drop(connection);
                // The client's requests fail now that the connection is gone; the
                // connection's own error says more.
                let failed = work.await;
                ended?;
                failed?;
                return Err(DetachError::Unreachable {
                    host: "the server".to_owned(),
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "the session closed"),
                });
            }
        };
        drop(connection);
        let kept = tls.lock().unwrap_or_else(PoisonError::into_inner).take();
        let stream = match kept {
            Some(tls) => tls.take().map(|tls| SessionStream::Tls(Box::new(tls))),
            None => socket.take().map(SessionStream::Plain),
        };
        let stream = stream.ok_or_else(|| DetachError::Unreachable {
            host: "the server".to_owned(),
            source: io::Error::new(io::ErrorKind::NotConnected, "the socket was already taken"),
        })?;
        Ok((done, stream))
    }
}

impl PgConnect {
    /// Whether [`connect_detachable`](Self::connect_detachable) handles this configuration:
    /// hosts named, tried in order, with no session attributes to check.
    pub fn can_detach(&self) -> bool {
        !self.config.get_hosts().is_empty()
            && self.config.get_target_session_attrs() == TargetSessionAttrs::Any
            && self.config.get_load_balance_hosts() == LoadBalanceHosts::Disable
    }

    /// Opens a session whose socket [`Detachable::drive`] gives back: each host in turn, as
    /// [`connect`](Self::connect) does, over a socket opened here.
    pub async fn connect_detachable(&self) -> Result<(Client, Detachable), DetachError> {
        let config = &self.config;
        let hosts = config.get_hosts();
        let mut last = None;
        for (index, host) in hosts.iter().enumerate() {
            let port = match config.get_ports() {
                [] => 5432,
                [one] => *one,
                ports => ports.get(index).copied().unwrap_or(5432),
            };
            let (socket, name) = match self.open_socket(index, host, port).await {
                Ok(opened) => opened,
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            };
            let (kept, given) = Shared::pair(socket);
            let slot = TlsSlot::default();
            let mut make = self.tls.clone();
            let inner =
                <_ as MakeTlsConnect<Shared<ServerSocket>>>::make_tls_connect(&mut make, &name)
                    .map_err(|source| DetachError::Unreachable { host: name.clone(), source })?;
            let tls = DetachTls { inner, slot: Arc::clone(&slot) };
            match config.connect_raw(given, tls).await {
                Ok((client, connection)) => {
                    return Ok((client, Detachable { connection, socket: kept, tls: slot }))
                }
                Err(error) => last = Some(DetachError::Postgres(error)),
            }
        }
        Err(last.unwrap_or_else(|| DetachError::Unreachable {
            host: "no host".to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the connection names no host"),
        }))
    }

    /// A socket to host `index`, and the host's name for TLS.
    async fn open_socket(
        &self,
        index: usize,
        host: &Host,
        port: u16,
    ) -> Result<(ServerSocket, String), DetachError> {
        let config = &self.config;
        let timeout = config.get_connect_timeout().copied();
        match host {
            Host::Unix(dir) => {
                let path: PathBuf = dir.join(format!(".s.PGSQL.{port}"));
                let shown = path.display().to_string();
                let socket = limited(timeout, UnixStream::connect(&path))
                    .await
                    .map_err(|source| DetachError::Unreachable { host: shown, source })?;
                Ok((ServerSocket::Unix(socket), String::new()))
            }
            Host::Tcp(name) => {
                let shown = format!("{name}:{port}");
                let socket = match config.get_hostaddrs().get(index) {
                    Some(addr) => limited(timeout, TcpStream::connect((*addr, port))).await,
                    None => limited(timeout, TcpStream::connect((name.as_str(), port))).await,
                }
                .map_err(|source| DetachError::Unreachable { host: shown.clone(), source })?;
                socket
                    .set_nodelay(true)
                    .map_err(|source| DetachError::Unreachable { host: shown.clone(), source })?;
                if config.get_keepalives() {
                    let mut keepalive =
                        socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                    if let Some(interval) = config.get_keepalives_interval() {
                        keepalive = keepalive.with_interval(interval);
                    }
                    if let Some(retries) = config.get_keepalives_retries() {
                        keepalive = keepalive.with_retries(retries);
                    }
                    socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive).map_err(
                        |source| DetachError::Unreachable { host: shown.clone(), source },
                    )?;
                }
                if let Some(limit) = config.get_tcp_user_timeout() {
                    socket2::SockRef::from(&socket)
                        .set_tcp_user_timeout(Some(*limit))
                        .map_err(|source| DetachError::Unreachable { host: shown, source })?;
                }
                Ok((ServerSocket::Tcp(socket), name.clone()))
            }
        }
    }
}

/// `connect`, failed with a timeout error past `limit`.
async fn limited<T>(
    limit: Option<std::time::Duration>,
    connect: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, connect).await.unwrap_or_else(|_| {
            Err(io::Error::new(io::ErrorKind::TimedOut, "the connection timed out"))
        }),
        None => connect.await,
    }
}
