//! A second look at a TLS connection that closed without saying why.
//!
//! Under TLS 1.3 a server judges the client's certificate after the
//! handshake: a collector that requires one (`tls.client_ca`) sends its
//! `certificate_required` (or `unknown_ca`) alert then, and tonic's HTTP/2
//! client reports only "connection closed", which reads like a collector
//! away. This module dials once more with rustls itself, with the same
//! trust and certificate, and reads what the server says after the
//! handshake. It sends nothing but a handshake, reads at most one record,
//! and is bounded by [`PROBE_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;

use super::{ClientError, Credentials};

/// The whole second look: connect, handshake, wait for an alert.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an accepted connection is watched for a late alert.
const ALERT_WAIT: Duration = Duration::from_millis(500);

/// Why the collector at `url` (`https://`) closes these credentials'
/// connections, when its TLS says so; `None` when it does not.
pub(super) async fn tls_refusal(credentials: &Credentials, url: &str) -> Option<ClientError> {
    let uri: Uri = url.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let config = Arc::new(client_config(credentials)?);
    let name = ServerName::try_from(host.clone()).ok()?;
    let look = async move {
        let tcp = TcpStream::connect((host.as_str(), port)).await.ok()?;
        let mut tls = match TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return told(&e, url),
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(ALERT_WAIT, tls.read(&mut byte)).await {
            Ok(Err(e)) => told(&e, url),
            _ => None,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, look)
        .await
        .ok()
        .flatten()
}

/// The error when TLS itself told why.
fn told(error: &std::io::Error, url: &str) -> Option<ClientError> {
    match ClientError::from_transport(error, url) {
        ClientError::Unreachable { .. } => None,
        explained => Some(explained),
    }
}

/// The rustls equivalent of what tonic dials with: the same roots, the same
/// client certificate, ALPN `h2`.
fn client_config(credentials: &Credentials) -> Option<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match &credentials.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                let _ = roots.add(cert);
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
    let mut config = match &credentials.identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(key).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(config)
}
