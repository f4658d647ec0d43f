//! TLS for the client (rustls with the ring provider), used when `tls_ca` or `tls_insecure`
//! is set: the same frames inside TLS 1.2/1.3 (docs/protocol.md, 1.1). Also the errors that
//! say which side speaks what, when a plaintext client meets a TLS port or the reverse.

use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
pub(crate) use tokio_rustls::TlsConnector;

use super::ConnectOptions;

pub(crate) type ConnRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type ConnWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What a plaintext client is told when a TLS server answers it.
pub const SERVER_SPEAKS_TLS: &str =
    "the server speaks TLS: give --tls-ca FILE (or --tls-insecure for testing)";

/// Say once per process, on stderr, that certificates go unchecked. A program that owns the
/// terminal (momtui) calls it before taking the screen, so the later call prints nothing.
pub fn warn_insecure() {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "momctl".into());
        eprintln!(
            "{program}: warning: --tls-insecure: the server's certificate is not checked; anyone on the \
             way can read and change this connection (use --tls-ca FILE outside tests)"
        );
    });
}

/// Does a connection whose first bytes from the server are `first` speak TLS? A TLS record
/// starts with its type (0x15 alert, 0x16 handshake) and the major version 3; a mom frame
/// starts with a length far below the 350 MB those bytes would mean.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, ..])
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Open a connection to `addr`: TCP, then TLS with `tls` when given (true in the result
/// then), each step within `limit`.
pub(crate) async fn open(
    addr: &str,
    tls: Option<&TlsConnector>,
    limit: std::time::Duration,
) -> Result<(ConnRead, ConnWrite, bool), String> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no answer in {limit:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let Some(connector) = tls else {
        let (rd, wr) = stream.into_split();
        return Ok((Box::new(rd), Box::new(wr), false));
    };
    let name = server_name(addr)?;
    let (rd, wr) = tokio::time::timeout(limit, handshake(connector, name, stream))
        .await
        .map_err(|_| "no TLS handshake from the server".to_string())??;
    Ok((rd, wr, true))
}

/// The connector for `opts`, or `None` for plaintext: made once for all the servers of a
/// list (a CA file that cannot be read is no server's fault).
pub(crate) fn connector(opts: &ConnectOptions) -> Result<Option<TlsConnector>, String> {
    if opts.tls_ca.is_none() && !opts.tls_insecure && !opts.tls {
        return Ok(None);
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if opts.tls_insecure {
        warn_insecure();
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let system = if opts.tls_ca.is_none() {
            Some(system_bundle()?)
        } else {
            None
        };
        if let Some(path) = opts.tls_ca.as_ref().or(system.as_ref()) {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| format!("--tls-ca {shown}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--tls-ca {shown}: not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!(
                    "--tls-ca {shown}: no certificate in it (a PEM \"BEGIN CERTIFICATE\" block \
                     is expected)"
                ));
            }
            // A system bundle may hold a few odd ones: those are skipped, as curl does.
            let (_, ignored) = roots.add_parsable_certificates(certs);
            if roots.is_empty() {
                return Err(format!(
                    "--tls-ca {shown}: none of its {ignored} certificates can be used"
                ));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// The system's CA certificates: `SSL_CERT_FILE`, else the first bundle found where Linux
/// distributions and BSDs keep it (the places OpenSSL and curl look).
fn system_bundle() -> Result<std::path::PathBuf, String> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return Ok(f.into());
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| {
        "--tls: no system CA bundle found (set SSL_CERT_FILE, or give --tls-ca FILE)".to_string()
    })
}

/// The name the server's certificate must carry: the host part of `addr` (HOST:PORT or
/// [IPV6]:PORT); an IP address is matched against the certificate's IP addresses.
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))
}

/// The client side of the handshake, split for the reader and writer tasks.
async fn handshake(
    connector: &TlsConnector,
    name: ServerName<'static>,
    stream: TcpStream,
) -> Result<(ConnRead, ConnWrite), String> {
    match connector.connect(name, stream).await {
        Ok(tls) => {
            let (rd, wr) = tokio::io::split(tls);
            Ok((Box::new(EndWithoutCloseNotify(rd)), Box::new(wr)))
        }
        Err(e) => Err(handshake_error(&e)),
    }
}

/// Reads a server that went away without TLS's close_notify (killed, or a network that
/// broke) as the end of the stream, as on plaintext TCP, rather than as an error with a URL
/// in it. A truncation cannot pass for data: a cut frame is still an incomplete frame.
struct EndWithoutCloseNotify<R>(R);

impl<R: AsyncRead + Unpin> AsyncRead for EndWithoutCloseNotify<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Why the handshake failed, in the terms of what to do about it.
fn handshake_error(e: &std::io::Error) -> String {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        // A mom frame (or anything else) where a TLS record should be.
        Some(E::InvalidMessage(_)) => "the server does not speak TLS (it answered the TLS \
                                       handshake with something else): drop --tls-ca and \
                                       --tls-insecure, or check the port"
            .into(),
        Some(E::InvalidCertificate(c)) => certificate_error(c),
        Some(other) => format!("TLS handshake failed: {other}"),
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) =>
        {
            "the server closed the connection during the TLS handshake (does it speak TLS on \
             this port?)"
                .into()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

fn certificate_error(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "the server's certificate is not signed by a CA in --tls-ca".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("the server's certificate is not for the address given to -s: {c}")
        }
        // webpki's error type is not ours to name; its name is stable enough to say why.
        C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "the server's certificate is a CA certificate (self-signed?): momd needs one \
             signed by a CA, and momctl --tls-ca that CA"
                .into()
        }
        _ => format!("the server's certificate is not trusted: {c}"),
    }
}

/// `--tls-insecure`: any certificate is taken, but the handshake's signatures are still
/// checked against it, so the connection is at least with the holder of that key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("127.0.0.1:7878").as_deref(), Ok("127.0.0.1"));
        assert_eq!(name("[::1]:7878").as_deref(), Ok("::1"));
        assert_eq!(name("broker.example:7878").as_deref(), Ok("broker.example"));
        assert!(matches!(
            server_name("10.0.0.5:7878"),
            Ok(ServerName::IpAddress(_))
        ));
    }

    #[test]
    fn tls_records_are_told_from_mom_frames() {
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(&[0x00, 0x00, 0x00, 0x2a]));
        assert!(!looks_like_tls(&[0x15]));
        assert!(!looks_like_tls(&[]));
    }
}
