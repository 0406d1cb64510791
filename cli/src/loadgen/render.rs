//! What `modelgate loadgen` prints: a Markdown table (pasted as it is into
//! `BENCHMARKS.md`), one `loadgen: key=value` line for scripts to grep, and
//! on stderr why calls failed.

use std::fmt::Write as _;

use super::{LoadOptions, LoadReport};

/// The table and the summary line.
pub fn report(options: &LoadOptions, report: &LoadReport) -> String {
    let q = |q| report.latency_ms.quantile(q).unwrap_or(0.0);
    let mut out = String::from("| measure | value |\n|---|---|\n");
    let _ = writeln!(
        out,
        "| connections x batch | {} x {} spans ({} bytes) |",
        options.connections, options.batch_spans, report.batch_bytes
    );
    let _ = writeln!(out, "| duration | {:.1} s |", report.elapsed.as_secs_f64());
    let _ = writeln!(
        out,
        "| export calls ok / failed | {} / {} |",
        report.calls_ok, report.calls_failed
    );
    let _ = writeln!(
        out,
        "| spans accepted / rejected | {} / {} |",
        report.spans_accepted, report.spans_rejected
    );
    let _ = writeln!(
        out,
        "| export latency p50 / p99 | {:.2} / {:.2} ms |",
        q(0.5),
        q(0.99)
    );
    let _ = writeln!(
        out,
        "loadgen: spans_per_s={:.0} export_p50_ms={:.2} export_p99_ms={:.2}",
        report.spans_per_second(),
        q(0.5),
        q(0.99)
    );
    out
}

/// For stderr: how many Export calls failed and why the first did; empty
/// when none did.
pub fn failures(report: &LoadReport) -> String {
    match (&report.first_failure, report.calls_failed) {
        (Some(first), failed) if failed > 0 => {
            format!("loadgen: {failed} export calls failed; the first: {first}\n")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use modelgate_collector::aggregate::Sketch;

    use super::*;

    #[test]
    fn table_and_the_line_scripts_read() {
        let mut latency_ms = Sketch::new();
        latency_ms.record(2.0);
        let out = report(
            &LoadOptions {
                connections: 2,
                batch_spans: 100,
                ..LoadOptions::default()
            },
            &LoadReport {
                spans_accepted: 1000,
                spans_rejected: 0,
                calls_failed: 1,
                calls_ok: 10,
                batch_bytes: 4096,
                elapsed: Duration::from_secs(2),
                latency_ms,
                first_failure: None,
            },
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "| measure | value |");
        assert_eq!(
            lines[2],
            "| connections x batch | 2 x 100 spans (4096 bytes) |"
        );
        assert_eq!(lines[4], "| export calls ok / failed | 10 / 1 |");
        assert!(
            lines[7].starts_with("loadgen: spans_per_s=500 export_p50_ms=2.0"),
            "{out}"
        );
    }

    #[test]
    fn failures_name_the_first_reason() {
        let mut report = LoadReport {
            spans_accepted: 0,
            spans_rejected: 0,
            calls_failed: 0,
            calls_ok: 3,
            batch_bytes: 1,
            elapsed: Duration::from_secs(1),
            latency_ms: Sketch::new(),
            first_failure: None,
        };
        assert_eq!(failures(&report), "");
        report.calls_failed = 2;
        report.first_failure = Some(crate::client::ClientError::Unreachable {
            url: "http://127.0.0.1:4317".into(),
            message: "connection reset".into(),
        });
        assert_eq!(
            failures(&report),
            "loadgen: 2 export calls failed; the first: collector unreachable at http://127.0.0.1:4317: connection reset\n"
        );
    }
}
