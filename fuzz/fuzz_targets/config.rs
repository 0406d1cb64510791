//! Arbitrary UTF-8 as the collector's YAML configuration: refusing it is
//! fine, panicking is not. What is accepted must also print back as YAML
//! (`modelgate config`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_collector::config::Config;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::from_yaml(text) {
        let _ = config.to_yaml();
    }
});
