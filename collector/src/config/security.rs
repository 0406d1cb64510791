//! `tls` and `auth`: TLS on every listener and the bearer token.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// TLS for every listener (rustls, TLS 1.2 and 1.3, PEM files). The files
/// are read once, at start; a missing or unusable one stops the start with
/// its key and path named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of `cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; set:
    /// every listener requires a client certificate (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Bearer-token authentication. With a token configured, OTLP exports,
/// the gRPC query API, `/api/*` and `/metrics` need `Authorization: Bearer
/// <token>`; `/healthz`, `/readyz` and the dashboard's static files stay
/// open. Without one, everything but the API's write operations is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token itself (or `MODELGATE_AUTH__TOKEN`); prefer `token_file`,
    /// which keeps it out of the configuration and the process environment.
    pub token: Option<Secret>,
    /// A file holding the token (surrounding whitespace ignored), read at start.
    pub token_file: Option<PathBuf>,
}

/// A string never shown by `Debug` (nor by `modelgate config`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(invalid(
                "auth",
                "set either auth.token or auth.token_file, not both",
            )),
            (Some(t), None) if t.0.trim().is_empty() => {
                Err(invalid("auth.token", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}
