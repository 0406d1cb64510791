//! Arbitrary bytes as what the edge filter reads from outside: its JSON
//! configuration (`on_configure` hands it to `Config::parse`), the
//! collector's answer to either poll question (`verdict::read`), and the
//! rollback record other workers left in shared data (`Record::decode`). A
//! panic in any of them would trap the proxy's VM. What is accepted is used
//! the way the filter uses it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_wasm_filter::config::Config;
use modelgate_wasm_filter::rollback::Record;
use modelgate_wasm_filter::stats::VersionStats;
use modelgate_wasm_filter::verdict::{self, Question};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Config::parse(data) {
        assert!(config.canary_basis_points() <= 10_000);
        let stats = VersionStats::new(&config.stats_prefix, config.max_versions);
        let _ = stats.name(
            &config.baseline_version,
            modelgate_wasm_filter::stats::MetricKind::Counter,
        );
    }
    for question in [Question::Regressions, Question::Verdict] {
        let _ = verdict::read(question, data, "lending-api", "v1.3");
    }
    if let Some(record) = Record::decode(data) {
        assert_eq!(Record::decode(record.encode().as_bytes()), Some(record));
    }
});
