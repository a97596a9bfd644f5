//! Byte streams to clients and to PostgreSQL: plain TCP or TLS over it.
//!
//! One enum rather than a boxed trait object, so the session's I/O loop is
//! monomorphic and polls the socket directly in the common plain-TCP case.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::auth::scram;
use crate::config::{ListenTls, UpstreamTlsMode};

/// A connection to a client or to PostgreSQL.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// No socket: the plain one has been handed to the TLS handshake. Every
    /// operation fails.
    Detached,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// Whether the socket's other end is on this machine. Behind a load
    /// balancer that is the balancer, whatever client its PROXY protocol
    /// header names.
    pub fn connected_over_loopback(&self) -> bool {
        let socket = match self {
            Stream::Plain(tcp) => tcp,
            Stream::ServerTls(tls) => tls.get_ref().0,
            Stream::ClientTls(tls) => tls.get_ref().0,
            Stream::Detached => return false,
        };
        socket
            .peer_addr()
            .is_ok_and(|address| address.ip().to_canonical().is_loopback())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: std::path::PathBuf },
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// What sluice serves clients that ask for TLS: the acceptor, and the
/// `tls-server-end-point` channel-binding data of its certificate (`None`
/// when RFC 5929 gives no hash for it, Ed25519: then SCRAM-SHA-256-PLUS is
/// not offered).
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub end_point: Option<Vec<u8>>,
}

/// The acceptor for clients that ask for TLS, and its certificate's
/// channel-binding data, computed once here.
pub fn server_acceptor(files: &ListenTls) -> Result<ServerTls, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    // The first certificate in the file is the one sent first: the
    // server's own, the one clients hash.
    let end_point = match certs
        .first()
        .map(|cert| scram::tls_server_end_point(cert.as_ref()))
    {
        Some(Ok(end_point)) => Some(end_point),
        Some(Err(error)) => {
            tracing::warn!(
                path = %files.cert.display(),
                %error,
                "clients cannot use SCRAM channel binding: SCRAM-SHA-256-PLUS is not offered"
            );
            None
        }
        None => None,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

/// The `tls-server-end-point` channel-binding data of the certificate
/// the server presented on `stream`, a TLS connection to PostgreSQL.
pub fn peer_end_point(stream: &Stream) -> Result<Vec<u8>, scram::Error> {
    let Stream::ClientTls(tls) = stream else {
        return Err(scram::Error::Certificate("the connection is not tls"));
    };
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(scram::Error::Certificate(
            "the server presented no certificate",
        ))?;
    scram::tls_server_end_point(certificate.as_ref())
}

/// The connector for the upstream link, or `None` when TLS is disabled.
pub fn upstream_connector(
    mode: UpstreamTlsMode,
    ca_file: Option<&std::path::Path>,
) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            // Never a connection that verifies nothing: the config insists
            // on the CA, and so does this.
            let ca_file = ca_file.ok_or_else(|| {
                TlsError::Rustls(rustls::Error::General(
                    "tls = \"verify-full\" needs a CA file".to_owned(),
                ))
            })?;
            return verifying_connector(ca_file).map(Some);
        }
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
}

/// A client connector that trusts the certificates in `ca_file` (PEM)
/// alone, and checks the server's chain and host name against them.
pub fn verifying_connector(
    ca_file: &std::path::Path,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The host name to present and check for the upstream server.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::Rustls(rustls::Error::General(format!("bad server name {host}"))))
}

/// `tls = "require"`: encrypt, but accept any certificate, as libpq's
/// `sslmode=require` does. Signatures are still checked so the handshake is
/// sound; only the chain of trust is skipped.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
