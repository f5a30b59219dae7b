//! tokio-postgres's TLS traits implemented over tokio-rustls.
//!
//! tokio-postgres asks for a connector per host ([`MakeTlsConnect`]), sends PostgreSQL's
//! `SSLRequest` itself, and hands the socket to [`TlsConnect::connect`] only when the server
//! agreed to TLS; the stream then reports channel binding data ([`TlsStream`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;

/// Makes a rustls connector for each host tokio-postgres connects to.
///
/// Cloning is cheap: the rustls configuration is shared.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl MakeRustls {
    /// Wraps a rustls client configuration, for callers that build their own.
    ///
    /// [`crate::parse`] builds one from the connection string; use that unless you need
    /// something it does not offer.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }
}

impl fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        // tokio-postgres asks for a connector even for Unix sockets (an empty host) and for
        // `sslmode=disable`, so a host that is no valid TLS name fails only if TLS is used.
        let server_name = ServerName::try_from(host.to_owned()).ok();
        Ok(RustlsConnect { config: Arc::clone(&self.config), server_name })
    }
}

/// Performs the TLS handshake with one host.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    /// The host as a DNS name or an IP address; `None` when it is neither.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnect")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let server_name = self.server_name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is neither a DNS name nor an IP address, so TLS cannot check it",
                )
            })?;
            let stream = TlsConnector::from(self.config).connect(server_name, stream).await?;
            Ok(RustlsStream { inner: stream })
        })
    }
}

/// A TLS session with the server.
pub struct RustlsStream<S> {
    inner: tokio_rustls::client::TlsStream<S>,
}

impl<S> fmt::Debug for RustlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, session) = self.inner.get_ref();
        f.debug_struct("RustlsStream")
            .field("protocol_version", &session.protocol_version())
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reports no channel binding: SCRAM then authenticates without `-PLUS`, as it does on a
    /// plain connection, and `channel_binding=require` is refused by tokio-postgres.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S> AsyncRead for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
