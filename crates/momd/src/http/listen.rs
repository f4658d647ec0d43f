//! The HTTP listener: accepts at most `max_connections` connections at once, does each TLS
//! handshake (the `--tls-cert`/`--tls-key` of `--listen`) in a task of its own so a silent
//! client never holds up the accept loop, and hands ready connections to axum.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tls::HANDSHAKE_TIMEOUT;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connection, plaintext or TLS, holding its place among `max_connections`.
pub struct Conn {
    io: Box<dyn Stream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Ready connections, for `axum::serve`.
pub struct HttpListener {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl HttpListener {
    /// Start accepting on `tcp`; TLS when `tls` is given (the certificate a SIGHUP loaded
    /// last).
    pub fn start(
        tcp: TcpListener,
        tls: Option<crate::server::TlsSlot>,
        max_connections: usize,
        shutdown: CancellationToken,
    ) -> io::Result<HttpListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            tcp,
            tls,
            Arc::new(Semaphore::new(max_connections.max(1))),
            tx,
            shutdown,
        ));
        Ok(HttpListener { ready, local })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): wait for axum's graceful shutdown to stop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<crate::server::TlsSlot>,
    limit: Arc<Semaphore>,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, addr) = tokio::select! {
            a = tcp.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let conn = Conn {
                    io: Box::new(stream),
                    _permit: permit,
                };
                if ready.send((conn, addr)).await.is_err() {
                    break;
                }
            }
            Some(slot) => {
                let acceptor: TlsAcceptor = crate::server::current(slot);
                let ready = ready.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn = Conn {
                                io: Box::new(s),
                                _permit: permit,
                            };
                            let _ = ready.send((conn, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "HTTP TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "no HTTP TLS handshake in time"),
                    }
                });
            }
        }
    }
}
