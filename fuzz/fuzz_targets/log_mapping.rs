//! Arbitrary bytes as JSON log lines: each line through the lending mapping
//! and a custom one, then the whole input through `modelgate analyze`'s
//! reader (log lines and OTLP/JSON exports mixed) and its judgement.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::analyze::{self, Analysis};
use modelgate_collector::config::{ExtractConfig, JudgeConfig};
use modelgate_collector::extract::logs::{DurationUnit, LogMapping};

fn custom() -> LogMapping {
    LogMapping {
        duration_field: "latency".into(),
        duration_unit: DurationUnit::Ns,
        version_field: "build".into(),
        endpoint_field: "route".into(),
        status_field: "code".into(),
        service_field: Some("app".into()),
        timeout_values: vec!["504".into()],
        error_values: vec!["500".into(), "true".into()],
    }
}

fuzz_target!(|data: &[u8]| {
    let mappings = [LogMapping::lending(), custom()];
    for line in data.split(|b| *b == b'\n') {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
            for mapping in &mappings {
                let _ = mapping.map_json(&value);
            }
        }
    }
    let mut analysis = Analysis::default();
    let config = ExtractConfig::default();
    // Invalid UTF-8 is an I/O error of the reader, not a panic.
    let _ = analysis.read("fuzz", data, &config, &mut |_| {});
    let judge = analyze::offline_judge(JudgeConfig::default());
    let reports = analyze::judge(&analysis, &judge);
    let _ = analyze::any_regression(&reports);
});
