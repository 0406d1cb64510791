//! How the client tools (`gate`, `replay`, `loadgen`) reach a collector
//! that serves TLS, wants a bearer token or a client certificate, and what a
//! failed call says about the setup.
//!
//! [`ClientOptions`] is what the user said (flags, and for the OTLP
//! exporters `replay` and `loadgen` the standard `OTEL_EXPORTER_OTLP_*`
//! variables); [`ClientOptions::load`] reads and checks the files once, into
//! [`Credentials`]; [`Credentials::endpoint`] makes a URL's endpoint with
//! them, and [`GrpcOnly`] around its channel turns an answer that is not
//! gRPC (the admin port's) into an error that says so. A failure is a
//! [`ClientError`] whose [`exit`](ClientError::exit) names what to fix: the
//! command line, the credentials, or the collector's address.
//!
//! The token goes wherever the URL says, plaintext included (a collector
//! behind a mesh's mTLS has no `tls` section of its own), as every gRPC
//! client does. This module must never read a variable the caller did not
//! ask for (the gate reads no `OTEL_*` variable: those describe a job's own
//! telemetry, and their headers must not reach another address), never
//! read an unbounded file, and never guess: a connection closed for a
//! reason it cannot read stays "unreachable".

use std::io::Read as _;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

mod diagnose;
mod error;
mod grpc_only;

pub use error::ClientError;
pub use grpc_only::{GrpcOnly, NotGrpc};

/// Largest token file read: a token is a line, not a document.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Largest certificate or key file read (a full CA bundle is about 250 KB).
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The credentials and trust a client was given, as paths and values; read
/// by [`ClientOptions::load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// CA certificates (PEM) trusted for `https://` instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for a collector that requires mutual
    /// TLS (`tls.client_ca`); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// A file holding the bearer token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// Further gRPC metadata, from `OTEL_EXPORTER_OTLP_HEADERS`: sent after
    /// the token, so an `authorization` given by `token_file` wins.
    pub headers: Vec<(String, String)>,
}

/// Standard OTLP exporter variables, the traces signal's first, then the
/// generic one.
const OTLP_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const OTLP_CLIENT_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const OTLP_CLIENT_KEY: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];
const OTLP_HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

impl ClientOptions {
    /// What the flags left unset, from the standard OTLP exporter variables
    /// (`var` looks one up; the process environment in the binary): the
    /// `…_CERTIFICATE`, `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` files and
    /// the `…_HEADERS` list, each the `OTEL_EXPORTER_OTLP_TRACES_` variable
    /// first, then the `OTEL_EXPORTER_OTLP_` one, as an OTLP trace exporter
    /// reads them. Only for the tools that are OTLP exporters.
    pub fn with_otlp_env(
        mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientError> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        for (slot, names) in [
            (&mut self.ca_file, OTLP_CERTIFICATE),
            (&mut self.client_cert, OTLP_CLIENT_CERTIFICATE),
            (&mut self.client_key, OTLP_CLIENT_KEY),
        ] {
            if slot.is_none() {
                *slot = first(names).map(|(_, v)| PathBuf::from(v.trim()));
            }
        }
        if let Some((name, list)) = first(OTLP_HEADERS) {
            self.headers.extend(parse_headers(name, &list)?);
        }
        Ok(self)
    }

    /// Reads and checks every file named: the credentials ready to dial with.
    pub fn load(&self) -> Result<Credentials, ClientError> {
        let certificates =
            |pem: &[u8]| CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
        let ca_pem = self
            .ca_file
            .as_deref()
            .map(|path| read_pem("--ca-file", path, certificates))
            .transpose()?;
        let identity = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = read_pem("--client-cert", cert, certificates)?;
                let key = read_pem("--client-key", key, |pem| {
                    PrivateKeyDer::from_pem_slice(pem).map(|k| vec![k])
                })?;
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(ClientError::Incomplete("--client-cert", "--client-key"))
            }
            (None, Some(_)) => {
                return Err(ClientError::Incomplete("--client-key", "--client-cert"))
            }
        };
        let mut metadata = MetadataMap::new();
        let token = self.token_file.as_deref().map(read_token).transpose()?;
        if let Some(token) = &token {
            metadata.insert("authorization", token.clone());
        }
        for (key, value) in &self.headers {
            // Checked by `parse_headers` (or given by the caller): a bad one
            // is skipped rather than sent mangled.
            if let (Ok(key), Ok(value)) = (
                key.parse::<AsciiMetadataKey>(),
                value.parse::<AsciiMetadataValue>(),
            ) {
                metadata.append(key, value);
            }
        }
        Ok(Credentials {
            ca_pem,
            identity,
            token,
            metadata,
        })
    }
}

/// Credentials read and checked. None at all (the default): plaintext, or
/// the system's roots for `https://`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The CA certificates trusted instead of the system's, PEM.
    ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and its key, PEM.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    token: Option<AsciiMetadataValue>,
    metadata: MetadataMap,
}

impl Credentials {
    /// Whether a bearer token is sent (to tell "no token" from "a wrong one").
    pub const fn sends_token(&self) -> bool {
        self.token.is_some()
    }

    /// The metadata every call carries: the token, then the extra headers.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Only the token, as metadata (for the OpenTelemetry SDK's exporter,
    /// which reads `OTEL_EXPORTER_OTLP_HEADERS` itself).
    pub fn token_metadata(&self) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(token) = &self.token {
            metadata.insert("authorization", token.clone());
        }
        metadata
    }

    /// `message` as a request carrying [`Credentials::metadata`].
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }

    /// The TLS settings for `url`: `Some` for `https://` only.
    pub fn tls_for(&self, url: &str) -> Option<ClientTlsConfig> {
        let https = url.starts_with("https://");
        if !https && (self.ca_pem.is_some() || self.identity.is_some()) {
            tracing::warn!(
                %url,
                "a CA or client certificate was given but the URL is plaintext: they are not used (use https://)"
            );
        }
        if !https {
            return None;
        }
        let tls = match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        Some(match &self.identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
            None => tls,
        })
    }

    /// `error` of a call to `url`, explained when it can be: a TLS
    /// connection that closed without a reason is dialed once more to read
    /// the collector's alert (see [`diagnose`]).
    pub async fn explain(&self, error: ClientError, url: &str) -> ClientError {
        if !(error.is_transient() && url.starts_with("https://")) {
            return error;
        }
        diagnose::tls_refusal(self, url).await.unwrap_or(error)
    }

    /// An endpoint for `url` (see [`normalize_url`]) with TLS for `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let url = normalize_url(url)?;
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| ClientError::Url {
            url: url.clone(),
            reason: crate::exit::message(&e),
        })?;
        match self.tls_for(&url) {
            // The files were parsed by `load`; what is left to fail here is
            // the system's roots (none found) or a certificate rustls refuses.
            Some(tls) => endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::TlsSetup(crate::exit::message(&e))),
            None => Ok(endpoint),
        }
    }
}

/// A URL tonic can dial: `host:port` gets `http://`; only `http://` and
/// `https://` are accepted.
pub fn normalize_url(url: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url.trim();
    let full = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else if url.contains("://") {
        return Err(invalid("the scheme must be http:// or https://"));
    } else {
        format!("http://{url}")
    };
    if full
        .split_once("://")
        .is_none_or(|(_, rest)| rest.is_empty())
    {
        return Err(invalid("no host"));
    }
    Ok(full)
}

/// A file's first `limit` bytes; more is an error (not a truncation).
fn read_bounded(flag: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, ClientError> {
    let file_error = |problem: String| ClientError::File {
        flag,
        path: path.to_owned(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(file_error(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// A PEM file checked by `parse` (at least one item, each well-formed);
/// its text, which tonic parses again when it dials.
fn read_pem<T>(
    flag: &'static str,
    path: &Path,
    parse: impl Fn(&[u8]) -> Result<Vec<T>, rustls_pki_types::pem::Error>,
) -> Result<Vec<u8>, ClientError> {
    let pem = read_bounded(flag, path, MAX_PEM_BYTES)?;
    let problem = match parse(&pem) {
        Ok(items) if !items.is_empty() => return Ok(pem),
        Ok(_) => "no PEM item of the expected kind in it".to_owned(),
        Err(e) => format!("not valid PEM: {e:?}"),
    };
    Err(ClientError::File {
        flag,
        path: path.to_owned(),
        problem,
    })
}

/// The token of a token file, as an `authorization` value.
fn read_token(path: &Path) -> Result<AsciiMetadataValue, ClientError> {
    let bytes = read_bounded("--token-file", path, MAX_TOKEN_BYTES)?;
    let problem = |problem: &str| ClientError::File {
        flag: "--token-file",
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| problem("not UTF-8 text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(problem("empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(problem(
            "a token is one word of visible ASCII characters (no spaces or line breaks inside)",
        ));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| problem("not usable in an HTTP header"))
}

/// `key=value,key=value` as the OTLP exporters read it (W3C baggage style:
/// values percent-decoded, surrounding spaces ignored); `var` names the
/// variable in errors.
fn parse_headers(var: &'static str, list: &str) -> Result<Vec<(String, String)>, ClientError> {
    let bad = |problem: String| ClientError::Variable { var, problem };
    list.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .enumerate()
        .map(|(i, pair)| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("entry {}: `key=value` expected", i + 1)))?;
            let key = key.trim().to_ascii_lowercase();
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| bad(format!("entry {} ({key}): not UTF-8 once decoded", i + 1)))?
                .into_owned();
            if key.parse::<AsciiMetadataKey>().is_err() {
                return Err(bad(format!(
                    "entry {}: {key:?} is not a header name",
                    i + 1
                )));
            }
            if value.parse::<AsciiMetadataValue>().is_err() {
                return Err(bad(format!(
                    "entry {} ({key}): the value is not usable in a header",
                    i + 1
                )));
            }
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests;
