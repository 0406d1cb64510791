//! Arbitrary bytes as the edge filter's JSON configuration: `on_configure`
//! hands them to `Config::parse`, and a panic there would trap the proxy's
//! VM. What is accepted is used the way `on_configure` uses it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_wasm_filter::config::Config;
use modelgate_wasm_filter::stats::VersionStats;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Config::parse(data) {
        assert!(config.canary_basis_points() <= 10_000);
        let stats = VersionStats::new(&config.stats_prefix, config.max_versions);
        let _ = stats.name(
            &config.baseline_version,
            modelgate_wasm_filter::stats::MetricKind::Counter,
        );
    }
});
