//! TLS on the peer link (`--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`): both sides
//! show a certificate signed by the cluster's CA, so a peer connection is encrypted and
//! only nodes holding such a certificate get through. The dialer checks that the listener's
//! certificate names the host it dialed (as written in `--peers` or `cluster join`). The
//! handshake of `net.rs` (identity, secret) then runs inside the TLS connection.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A peer connection's bytes, plaintext or TLS.
pub(crate) trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}
pub(crate) type PeerStream = Box<dyn PeerIo>;

/// Both sides of TLS for the peer link: made by the application from its certificates.
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl PeerTls {
    /// `server` must ask for and verify a client certificate; `client` must present one.
    pub fn new(server: rustls::ServerConfig, client: rustls::ClientConfig) -> PeerTls {
        PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// The host part of `host:port` (`[v6]:port` too), as a TLS server name.
fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{addr}: not a name for TLS ({e})"))
}

/// The dialing side: TLS over `stream` when the node has it, else the stream as it is.
/// The listener's certificate must name the host of `addr`.
pub(crate) async fn dial(
    tls: Option<&PeerTls>,
    stream: TcpStream,
    addr: &str,
) -> Result<PeerStream, String> {
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = server_name(addr)?;
    match tls.connector.connect(name, stream).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => Err(format!(
            "{addr}: TLS handshake failed ({e}): both sides need --peer-tls-cert, \
             --peer-tls-key and --peer-tls-ca of the same CA"
        )),
    }
}

/// The listening side.
pub(crate) async fn accept(tls: Option<&PeerTls>, stream: TcpStream) -> Result<PeerStream, String> {
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    match tls.acceptor.accept(stream).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => Err(format!("TLS handshake failed: {e}")),
    }
}
