use std::collections::HashMap;

use super::*;
use crate::exit::Exit;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), "  s3cret-token\n").unwrap();
        std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

#[test]
fn urls() {
    assert_eq!(
        normalize_url("127.0.0.1:4317").unwrap(),
        "http://127.0.0.1:4317"
    );
    assert_eq!(
        normalize_url("https://collector:4317").unwrap(),
        "https://collector:4317"
    );
    assert_eq!(
        normalize_url(" http://127.0.0.1:4317 ").unwrap(),
        "http://127.0.0.1:4317"
    );
    for bad in ["ftp://x", "http://", "https://"] {
        let error = normalize_url(bad).unwrap_err();
        assert!(matches!(error, ClientError::Url { .. }), "{bad}: {error}");
        assert_eq!(error.exit(), Exit::Usage);
    }
}

#[test]
fn token_ca_and_client_certificate_are_read_and_checked() {
    let files = Files::new();
    let credentials = ClientOptions {
        ca_file: Some(files.path("ca.pem")),
        client_cert: Some(files.path("ca.pem")),
        client_key: Some(files.path("key.pem")),
        token_file: Some(files.path("token")),
        headers: vec![("x-tenant".into(), "a".into())],
    }
    .load()
    .unwrap();
    assert!(credentials.sends_token());
    let metadata = credentials.metadata();
    assert_eq!(
        metadata.get("authorization").unwrap(),
        "Bearer s3cret-token"
    );
    assert_eq!(metadata.get("x-tenant").unwrap(), "a");
    assert_eq!(credentials.token_metadata().len(), 1);
    let request = credentials.request(());
    assert_eq!(
        request.metadata().get("authorization").unwrap(),
        "Bearer s3cret-token"
    );
    assert!(credentials.tls_for("https://localhost:4317").is_some());
    assert!(credentials.tls_for("http://localhost:4317").is_none());
    assert!(credentials.endpoint("https://localhost:4317").is_ok());
    assert!(credentials.endpoint("localhost:4317").is_ok());
}

#[test]
fn an_unusable_file_is_named_with_its_flag() {
    let files = Files::new();
    let cases = [
        (
            ClientOptions {
                token_file: Some(files.path("missing")),
                ..ClientOptions::default()
            },
            "--token-file",
        ),
        (
            ClientOptions {
                ca_file: Some(files.path("garbage.pem")),
                ..ClientOptions::default()
            },
            "--ca-file",
        ),
        (
            ClientOptions {
                client_cert: Some(files.path("ca.pem")),
                client_key: Some(files.path("ca.pem")),
                ..ClientOptions::default()
            },
            "--client-key",
        ),
        (
            ClientOptions {
                client_cert: Some(files.path("ca.pem")),
                ..ClientOptions::default()
            },
            "--client-cert needs --client-key",
        ),
    ];
    for (options, named) in cases {
        let error = options.load().unwrap_err();
        assert!(error.to_string().starts_with(named), "{error}");
        assert_eq!(error.exit(), Exit::Configuration, "{error}");
    }
    for (text, problem) in [
        ("\n \n", "empty"),
        ("two words", "one word"),
        ("é", "visible ASCII"),
    ] {
        std::fs::write(files.path("token"), text).unwrap();
        let error = ClientOptions {
            token_file: Some(files.path("token")),
            ..ClientOptions::default()
        }
        .load()
        .unwrap_err();
        assert!(error.to_string().contains(problem), "{text:?}: {error}");
    }
    std::fs::write(files.path("token"), vec![b'a'; 70_000]).unwrap();
    let error = ClientOptions {
        token_file: Some(files.path("token")),
        ..ClientOptions::default()
    }
    .load()
    .unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[test]
fn otlp_variables_fill_what_flags_left_unset_traces_first() {
    let options = ClientOptions::default()
        .with_otlp_env(env(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/generic/key.pem"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc , x-tenant=blue,",
            ),
        ]))
        .unwrap();
    assert_eq!(options.ca_file, Some(PathBuf::from("/traces/ca.pem")));
    assert_eq!(options.client_key, Some(PathBuf::from("/generic/key.pem")));
    assert_eq!(options.client_cert, None);
    assert_eq!(
        options.headers,
        vec![
            ("authorization".to_owned(), "Bearer abc".to_owned()),
            ("x-tenant".to_owned(), "blue".to_owned()),
        ]
    );
    // A flag wins over the variable.
    let options = ClientOptions {
        ca_file: Some("/flag/ca.pem".into()),
        ..ClientOptions::default()
    }
    .with_otlp_env(env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem")]))
    .unwrap();
    assert_eq!(options.ca_file, Some(PathBuf::from("/flag/ca.pem")));
    // The traces signal's headers replace the generic ones, as in the SDKs.
    let options = ClientOptions::default()
        .with_otlp_env(env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
        ]))
        .unwrap();
    assert_eq!(options.headers, vec![("b".to_owned(), "2".to_owned())]);
}

#[test]
fn the_token_file_wins_over_an_authorization_header() {
    let files = Files::new();
    let credentials = ClientOptions {
        token_file: Some(files.path("token")),
        headers: vec![("authorization".into(), "Bearer from-env".into())],
        ..ClientOptions::default()
    }
    .load()
    .unwrap();
    let values: Vec<_> = credentials
        .metadata()
        .get_all("authorization")
        .iter()
        .collect();
    assert_eq!(values[0], "Bearer s3cret-token");
    assert_eq!(
        credentials.metadata().get("authorization").unwrap(),
        "Bearer s3cret-token"
    );
}

#[test]
fn bad_header_lists_are_named_with_the_variable_and_entry() {
    for (list, problem) in [
        ("novalue", "entry 1: `key=value` expected"),
        ("a=1,b c=2", "entry 2: \"b c\" is not a header name"),
        ("a=%FF", "entry 1 (a): not UTF-8"),
        ("a=line%0Abreak", "entry 1 (a): the value is not usable"),
    ] {
        let error = ClientOptions::default()
            .with_otlp_env(env(&[("OTEL_EXPORTER_OTLP_HEADERS", list)]))
            .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("OTEL_EXPORTER_OTLP_HEADERS: "), "{text}");
        assert!(text.contains(problem), "{list}: {text}");
        assert_eq!(error.exit(), Exit::Configuration);
    }
}
