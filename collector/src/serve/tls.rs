//! TLS for the three listeners, with rustls and its `ring` provider.
//!
//! [`Tls::load`] reads the PEM files of the `tls` section once, at start, and
//! checks them (a certificate is there, a key is there, the key belongs to the
//! certificate, the client CAs parse), so a bad file stops the start with its
//! key and path named rather than failing the first handshake. The gRPC
//! listener gets tonic's own TLS acceptor ([`Tls::grpc`], ALPN `h2`); the two
//! axum listeners get a [`TlsListener`], which runs each handshake in its own
//! task (bounded by [`HANDSHAKE_TIMEOUT`]) so a slow or silent client never
//! holds up the others, and hands finished connections to the HTTP server.
//!
//! This module never decides who may do what: that is [`crate::auth`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::socket::{Connections, Tracked};

use crate::config::TlsConfig;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to take them.
const READY_CONNECTIONS: usize = 64;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {key} file {}: {source}", path.display())]
    Read {
        /// The setting naming the file, e.g. `tls.cert`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but is not what the setting needs.
    #[error("{key} file {}: {problem}", path.display())]
    Invalid {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Checked TLS settings for every listener.
#[derive(Clone)]
pub struct Tls {
    /// For the axum listeners (ALPN `http/1.1`).
    http: Arc<ServerConfig>,
    /// For tonic, which builds its own rustls configuration from the PEM.
    grpc: ServerTlsConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn invalid(key: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            path,
            "no certificate in it (expected a PEM `CERTIFICATE` block)",
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Reads and checks the files of `config`.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let cert_pem = read("tls.cert", &config.cert)?;
        let key_pem = read("tls.key", &config.key)?;
        let certs = certificates("tls.cert", &config.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            invalid(
                "tls.key",
                &config.key,
                format!("no usable private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls.cert", &config.cert, e.to_string()))?;
        let mut grpc = ServerTlsConfig::new()
            .identity(Identity::from_pem(&cert_pem, &key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_pem = read("tls.client_ca", path)?;
                let mut roots = RootCertStore::empty();
                for cert in certificates("tls.client_ca", path, &ca_pem)? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid("tls.client_ca", path, e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| invalid("tls.client_ca", path, e.to_string()))?;
                grpc = grpc.client_ca_root(Certificate::from_pem(&ca_pem));
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut http = builder.with_single_cert(certs, key).map_err(|e| {
            invalid(
                "tls.key",
                &config.key,
                format!(
                    "cannot be used with tls.cert {}: {e}",
                    config.cert.display()
                ),
            )
        })?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            http: Arc::new(http),
            grpc,
        })
    }

    /// tonic's TLS settings for the gRPC listener.
    pub fn grpc(&self) -> ServerTlsConfig {
        self.grpc.clone()
    }

    /// `listener`, with TLS, its connections admitted by `connections`.
    pub(crate) fn listener(
        &self,
        listener: TcpListener,
        connections: Arc<Connections>,
    ) -> std::io::Result<TlsListener> {
        TlsListener::new(listener, TlsAcceptor::from(self.http.clone()), connections)
    }
}

/// A TLS connection, watched by [`Connections`].
pub(crate) type TlsConnection = TlsStream<Tracked<TcpStream>>;

/// A TLS listener: a task accepts TCP connections and spawns one handshake
/// task each; finished ones wait in a small queue. The task ends when the
/// listener is dropped (the server stopped).
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsConnection, SocketAddr)>,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        connections: Arc<Connections>,
    ) -> std::io::Result<Self> {
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        tokio::spawn(accept_loop(listener, acceptor, tx, connections));
        Ok(Self { ready })
    }

    /// The next connection whose handshake finished.
    pub(crate) async fn accept(&mut self) -> TlsConnection {
        match self.ready.recv().await {
            Some((connection, _)) => connection,
            // The accept task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsConnection, SocketAddr)>,
    connections: Arc<Connections>,
) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, as axum does.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        super::socket::no_delay(&tcp);
        let Some(tcp) = connections.admit(tcp) else {
            continue;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // A closed channel means the server stopped meanwhile.
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, cert: &str, key: &str) -> TlsConfig {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        TlsConfig {
            cert: cert_path,
            key: key_path,
            client_ca: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("modelgate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_files_are_named_with_their_key() {
        let err = Tls::load(&TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls.cert"), "{err}");
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn files_without_pem_blocks_are_refused() {
        let dir = temp_dir("garbage");
        let err = Tls::load(&config(&dir, "not a certificate", "not a key"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls.cert") && err.contains("cert.pem"),
            "{err}"
        );
        assert!(err.contains("no certificate"), "{err}");
    }

    #[test]
    fn a_certificate_where_the_key_belongs_is_refused() {
        // Well-formed PEM of the wrong kind: a certificate block, no key.
        let dir = temp_dir("wrong-kind");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
        let err = Tls::load(&config(&dir, pem, pem)).unwrap_err().to_string();
        assert!(err.contains("tls.key") && err.contains("key.pem"), "{err}");
    }
}
