//! Why a client tool got no answer, in words that say what to fix, and the
//! reading of a failed gRPC call into one of those reasons.

use std::error::Error as StdError;
use std::path::PathBuf;

use tokio_rustls::rustls;
use tonic::Code;

use super::grpc_only::NotGrpc;
use crate::exit::{message as chain, Exit};

/// Where the gRPC query API and the OTLP/gRPC receiver listen.
const GRPC_PORT_HINT: &str = "the OTLP/gRPC port (receiver.grpc_listen, 4317 by default)";

/// A client tool's failure to talk to a collector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The URL is not one a client can dial.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A credential or trust file could not be used.
    #[error("{flag} {}: {problem}", path.display())]
    File {
        /// The flag (or the variable's flag) that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// One half of a pair was given without the other.
    #[error("{0} needs {1} too")]
    Incomplete(&'static str, &'static str),
    /// An environment variable could not be read.
    #[error("{var}: {problem}")]
    Variable {
        /// Its name.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// TLS could not be set up before dialing (e.g. no system CA found).
    #[error("TLS setup: {0} (give the collector's CA with --ca-file)")]
    TlsSetup(String),
    /// No answer: refused, timed out, reset, or a proxy's 502/503/504.
    #[error("collector unreachable at {url}: {message}")]
    Unreachable {
        /// Where the client dialed.
        url: String,
        /// The last transport error, with its causes.
        message: String,
    },
    /// The TLS handshake failed: an untrusted certificate, a plaintext
    /// server on an `https://` URL (or the other way round), a client
    /// certificate refused.
    #[error("TLS with {url} failed: {message}")]
    Tls {
        /// Where the client dialed.
        url: String,
        /// The handshake error, with a hint.
        message: String,
    },
    /// Something answered, but not the collector's gRPC API: the admin
    /// port, the OTLP/HTTP port, another gRPC server.
    #[error("{url} is not the collector's gRPC API: {detail}")]
    WrongService {
        /// Where the client dialed.
        url: String,
        /// What answered instead, and where to point instead.
        detail: String,
    },
    /// The collector refused the credentials.
    #[error("the collector at {url} refused the request: {message}; {hint}")]
    Unauthenticated {
        /// Where the client dialed.
        url: String,
        /// The collector's words.
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The collector refused the request itself (a bad override, say).
    #[error("the collector refused the request: {0}")]
    Refused(String),
}

impl ClientError {
    /// The exit code this failure means.
    pub const fn exit(&self) -> Exit {
        match self {
            ClientError::Url { .. } | ClientError::Refused(_) => Exit::Usage,
            ClientError::File { .. }
            | ClientError::Incomplete(..)
            | ClientError::Variable { .. }
            | ClientError::TlsSetup(_) => Exit::Configuration,
            ClientError::Unreachable { .. }
            | ClientError::Tls { .. }
            | ClientError::WrongService { .. } => Exit::Connection,
            ClientError::Unauthenticated { .. } => Exit::Authentication,
        }
    }

    /// Worth asking again within the wait: the collector may be starting,
    /// restarting with the release, or behind a proxy that is.
    pub const fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// What a failed call to `url` says about the setup; `token_sent` tells
    /// a missing token from a wrong one.
    pub fn from_status(status: &tonic::Status, url: &str, token_sent: bool) -> Self {
        let url = url.to_owned();
        if let Some(not_grpc) = status.source().and_then(find::<NotGrpc>) {
            return not_grpc.to_error(url);
        }
        let said = || format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => ClientError::Unauthenticated {
                url,
                message: said(),
                hint: if status.code() == Code::PermissionDenied {
                    "the token is accepted but not allowed this"
                } else if token_sent {
                    "check the token in --token-file against the collector's auth.token_file"
                } else {
                    "it requires a token: pass --token-file"
                },
            },
            Code::Unimplemented => ClientError::WrongService {
                url,
                detail: format!(
                    "a gRPC server without modelgate's API answered ({}); point at {GRPC_PORT_HINT}",
                    status.message()
                ),
            },
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => ClientError::Refused(said()),
            _ => match status.source() {
                Some(source) => Self::from_transport(source, &url),
                None => ClientError::Unreachable {
                    url,
                    message: said(),
                },
            },
        }
    }

    /// What a failure to connect to `url` (or a call's transport error)
    /// says: a client certificate refused, a failed TLS handshake, or the
    /// collector out of reach.
    pub fn from_transport(error: &(dyn StdError + 'static), url: &str) -> Self {
        let url = url.to_owned();
        match tls_failure(error) {
            Some(e) if refuses_client_certificate(e) => ClientError::Unauthenticated {
                url,
                message: chain(error),
                hint: "the collector wants a client certificate it trusts: --client-cert and --client-key",
            },
            Some(_) => ClientError::Tls {
                message: tls_hint(error),
                url,
            },
            None => ClientError::Unreachable {
                message: chain(error),
                url,
            },
        }
    }
}

/// The first error of type `T` in `error`'s chain (itself included). An
/// `io::Error`'s `source` skips the error it wraps (rustls' among them), so
/// that one is looked at too.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        if let Some(found) = wrapped.and_then(|w| w.downcast_ref::<T>()) {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The rustls error in the chain, if the failure was the TLS handshake.
fn tls_failure<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    find::<rustls::Error>(error)
}

/// The server's alert says it wants a (different) client certificate.
fn refuses_client_certificate(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        error,
        rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::AccessDenied
        )
    )
}

/// The handshake error and what usually causes it.
fn tls_hint(error: &(dyn StdError + 'static)) -> String {
    use rustls::{AlertDescription, Error};
    let hint = match tls_failure(error) {
        // webpki refuses a CA certificate as a server's own, which is what
        // `openssl req -x509` makes unless told `basicConstraints=CA:FALSE`.
        Some(Error::InvalidCertificate(e)) if format!("{e:?}").contains("CaUsedAsEndEntity") => {
            "the collector's certificate is a CA certificate (basicConstraints CA:TRUE), which TLS clients built on rustls refuse as a server certificate: give the collector a leaf certificate (openssl req -x509 ... -addext basicConstraints=critical,CA:FALSE, or one issued by a CA)"
        }
        Some(Error::InvalidCertificate(_)) => {
            "the collector's certificate is not trusted: give its CA with --ca-file"
        }
        Some(Error::AlertReceived(AlertDescription::NoApplicationProtocol)) => {
            "the server does not speak HTTP/2 (gRPC): is this the admin or OTLP/HTTP port? Point at the OTLP/gRPC port (receiver.grpc_listen, 4317 by default)"
        }
        Some(Error::InvalidMessage(_)) => {
            "the server does not speak TLS: use http:// if the collector has no tls section"
        }
        _ => "check the URL's scheme and the certificates",
    };
    format!("{}; {hint}", chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_name_what_to_fix() {
        let refused = ClientError::from_status(
            &tonic::Status::invalid_argument("sla_limit_ms: bad"),
            "u",
            false,
        );
        assert!(!refused.is_transient());
        assert!(
            refused.to_string().contains("sla_limit_ms: bad"),
            "{refused}"
        );
        let down = ClientError::from_status(
            &tonic::Status::unavailable("connection refused"),
            "u",
            false,
        );
        assert!(down.is_transient());
        assert!(
            down.to_string().starts_with("collector unreachable at u"),
            "{down}"
        );
        let no_token = ClientError::from_status(
            &tonic::Status::unauthenticated("this needs a bearer token"),
            "u",
            false,
        );
        assert!(
            no_token.to_string().contains("pass --token-file"),
            "{no_token}"
        );
        let wrong =
            ClientError::from_status(&tonic::Status::unauthenticated("wrong token"), "u", true);
        assert!(wrong.to_string().contains("check the token"), "{wrong}");
        let other = ClientError::from_status(&tonic::Status::unimplemented(""), "u", false);
        assert!(matches!(other, ClientError::WrongService { .. }), "{other}");
        assert!(other.to_string().contains("4317"), "{other}");
    }

    #[test]
    fn tls_failures_are_found_in_the_chain_and_explained() {
        let e = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let boxed: Box<dyn StdError> = Box::new(e);
        assert!(tls_failure(boxed.as_ref()).is_some());
        assert!(tls_hint(boxed.as_ref()).contains("--ca-file"));
        let e = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol,
        ));
        let boxed: Box<dyn StdError> = Box::new(e);
        assert!(tls_hint(boxed.as_ref()).contains("admin"));
        let e = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        let refused = ClientError::from_transport(&e, "u");
        assert_eq!(refused.exit(), crate::exit::Exit::Authentication);
        assert!(refused.to_string().contains("--client-cert"), "{refused}");
    }
}
