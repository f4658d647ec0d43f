//! TLS on the `--listen` listener (rustls with the ring provider): the certificate and key
//! read at start, and the handshake each connection does in its own task before the
//! session starts. The frames inside are the same as on a plaintext listener
//! (docs/protocol.md, 1.1); there is no STARTTLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A connection's read side, plaintext or TLS. Boxed so the session code is one for both;
/// a plaintext connection boxes its `TcpStream` half itself, with no lock between halves.
pub type ConnRead = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's write side; writes must be flushed (TLS holds them until then).
pub type ConnWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The acceptor for `--tls-cert CERT --tls-key KEY` (PEM): the certificate chain, leaf
/// first, and its private key (PKCS#8, PKCS#1 or SEC1). Errors name the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = certificates(cert, "--tls-cert")?;
    let key_der = private_key(key, "--tls-key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "--tls-cert {} with --tls-key {}: not a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificates of the PEM file `path` (given as `flag`), at least one.
fn certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} {}: not a PEM certificate", path.display()))?;
    if chain.is_empty() {
        bail!(
            "{flag} {}: no certificate in it (a PEM \"BEGIN CERTIFICATE\" block is expected)",
            path.display()
        );
    }
    Ok(chain)
}

/// The private key of the PEM file `path` (given as `flag`).
fn private_key(path: &Path, flag: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{flag} {}: no private key in it ({e}; a PEM \"BEGIN PRIVATE KEY\", \
             \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block is expected)",
            path.display()
        )
    })
}

/// TLS for the peer link (`--peer-tls-cert CERT --peer-tls-key KEY --peer-tls-ca CA`):
/// this node shows its certificate both as listener and as dialer, and takes only peers
/// whose certificate the CA signed.
pub fn peer_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<mom_raft::net::PeerTls> {
    let chain = certificates(cert, "--peer-tls-cert")?;
    let key_der = private_key(key, "--peer-tls-key")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca, "--peer-tls-ca")? {
        roots
            .add(c)
            .with_context(|| format!("--peer-tls-ca {}: not a usable CA", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = || {
        format!(
            "--peer-tls-cert {} with --peer-tls-key {}: not a usable pair",
            cert.display(),
            key.display()
        )
    };
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .with_context(|| format!("--peer-tls-ca {}", ca.display()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key_der.clone_key())
        .with_context(pair)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .with_context(pair)?;
    Ok(mom_raft::net::PeerTls::new(server, client))
}

/// Do the server side of the handshake within [`HANDSHAKE_TIMEOUT`]; the split halves on
/// success, else why not (for a debug log: a port scan or a plaintext client is no error).
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<(ConnRead, ConnWrite), String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => Err(format!(
            "no TLS handshake in {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Ok(Ok(tls)) => {
            let (rd, wr) = tokio::io::split(tls);
            Ok((Box::new(rd), Box::new(wr)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = acceptor(&cert, &key).err().expect("no files").to_string();
        assert!(e.contains("--tls-cert") && e.contains("cert.pem"), "{e}");

        std::fs::write(&cert, "not pem").expect("write");
        let e = format!("{:#}", acceptor(&cert, &key).err().expect("bad cert"));
        assert!(e.contains("no certificate"), "{e}");
    }
}
