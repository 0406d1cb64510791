//! Arbitrary bytes as an OTLP export request, traces and logs, protobuf and
//! JSON, through the extractors the receivers call. Decoding may fail;
//! extraction must never panic on anything that decodes.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use modelgate::config::ExtractConfig;
use modelgate::extract::{extract, logs::extract_logs};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn configs() -> [ExtractConfig; 2] {
    [
        ExtractConfig::default(),
        // Extra dimensions and a timeout exercise the remaining branches.
        ExtractConfig {
            timeout: Some(Duration::from_millis(750)),
            dimensions: vec!["region".into(), "http.route".into()],
            ..ExtractConfig::default()
        },
    ]
}

fn traces(request: &ExportTraceServiceRequest) {
    for config in &configs() {
        let mut out = Vec::new();
        let report = extract(request, config, &mut out);
        assert_eq!(report.samples, out.len() as u64);
    }
}

fn logs(request: &ExportLogsServiceRequest) {
    for config in &configs() {
        let mut out = Vec::new();
        let report = extract_logs(request, config, &mut out);
        assert_eq!(report.samples, out.len() as u64);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        traces(&request);
    }
    if let Ok(request) = ExportLogsServiceRequest::decode(data) {
        logs(&request);
    }
    if let Ok(request) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        traces(&request);
    }
    if let Ok(request) = serde_json::from_slice::<ExportLogsServiceRequest>(data) {
        logs(&request);
    }
});
