//! Arbitrary bytes as an OTLP export request, traces and logs, protobuf and
//! JSON, through the extractors the receivers call. Decoding may fail;
//! extraction must never panic on anything that decodes. The receivers'
//! zero-copy reader (`extract::wire::scan`) reads the same bytes: it must
//! never panic, and wherever the full decode succeeds it must give exactly
//! the samples and report of `extract` on the decoded message.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use modelgate_collector::config::ExtractConfig;
use modelgate_collector::extract::{extract, logs::extract_logs, wire};
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

/// The wire reader on the raw bytes; `decoded` is the full decode, if any.
fn wire_traces(data: &[u8], decoded: Option<&ExportTraceServiceRequest>) {
    for config in &configs() {
        let mut scanned = Vec::new();
        let report = wire::scan(data, config, |s| scanned.push(s.to_sample()));
        if let Some(request) = decoded {
            let mut out = Vec::new();
            let reference = extract(request, config, &mut out);
            assert_eq!(report, Ok(reference), "wire scan disagrees with the full decode");
            assert_eq!(scanned, out, "wire samples differ from the full decode's");
        }
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
    let decoded = ExportTraceServiceRequest::decode(data).ok();
    if let Some(request) = &decoded {
        traces(request);
    }
    wire_traces(data, decoded.as_ref());
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
