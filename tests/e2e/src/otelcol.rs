//! The real OpenTelemetry Collector in the end-to-end tests: the project's
//! own build (`tests/otelcol`, every Collector module at one release) and the
//! Collector's load generator `telemetrygen`, both built by
//! `scripts/build-otelcol` (which `scripts/install-test-deps` runs) into
//! `target/otelcol/`, or named by `OTELCOL_BIN` and `TELEMETRYGEN_BIN`.
//!
//! [`Otelcol`] runs one Collector on a configuration file, with its
//! settings in environment variables (the example configurations take
//! their addresses from there), and waits until it is ready;
//! [`DebugText`] reads what a Collector's `debug` exporter wrote at
//! `verbosity: detailed`, so a test can count every span, log record and
//! metric data point a backend Collector received, per service, and find
//! any received twice.
//! Every wait here is bounded in time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{output_text, read_log, repo};

/// How long a Collector may take to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The line a Collector logs once every pipeline runs.
const READY: &str = "Everything is ready";

fn built(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join("otelcol").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with scripts/build-otelcol (scripts/install-test-deps runs it), or set {var}",
        path.display()
    );
    path
}

/// The project's OpenTelemetry Collector build.
pub fn otelcol_bin() -> PathBuf {
    built("OTELCOL_BIN", "otelcol-modelgate")
}

/// The Collector's load generator, `telemetrygen`.
pub fn telemetrygen_bin() -> PathBuf {
    built("TELEMETRYGEN_BIN", "telemetrygen")
}

/// A running Collector; killed on drop.
#[derive(Debug)]
pub struct Otelcol {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Otelcol {
    /// Starts the Collector on `config` with `env` added to its environment
    /// and waits until it is ready (it logs so at level info).
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let (collector, ready) = Self::launch(config, env);
        match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(_)) => collector,
            Ok(Err(_)) => panic!(
                "the Collector on {} exited; log:\n{}",
                config.display(),
                collector.log()
            ),
            Err(_) => panic!(
                "the Collector on {} was not ready within {START_TIMEOUT:?}; log:\n{}",
                config.display(),
                collector.log()
            ),
        }
    }

    /// [`Otelcol::start`] without the wait, for a configuration that logs
    /// only warnings: the caller watches for what the Collector does.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(config, env).0
    }

    /// [`Otelcol::start`] on processor `cpu` only (`taskset`), for
    /// benchmarks that give it and its load one core each.
    pub async fn start_pinned(cpu: usize, config: &Path, env: &[(&str, &str)]) -> Self {
        let (collector, ready) = Self::launch_on(Some(cpu), config, env);
        match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(_)) => collector,
            _ => panic!(
                "the Collector on {} did not start; log:\n{}",
                config.display(),
                collector.log()
            ),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn launch(
        config: &Path,
        env: &[(&str, &str)],
    ) -> (Self, tokio::sync::oneshot::Receiver<String>) {
        Self::launch_on(None, config, env)
    }

    fn launch_on(
        cpu: Option<usize>,
        config: &Path,
        env: &[(&str, &str)],
    ) -> (Self, tokio::sync::oneshot::Receiver<String>) {
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu.to_string()).arg(otelcol_bin());
                taskset
            }
            None => Command::new(otelcol_bin()),
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the OpenTelemetry Collector");
        let (log, rx) = read_log(child.stderr.take().expect("piped stderr"), READY);
        (Self { child, log }, rx)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops it with SIGTERM, as an orchestrator would: it stops its
    /// receivers and drains its exporters' queues first. Waits (bounded)
    /// for the exit and returns the log.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the Collector did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                )
            })
            .expect("wait");
        // Let the stderr reader take the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = self.log();
        assert!(
            status.success(),
            "the Collector exited with {status}; log:\n{log}"
        );
        log
    }
}

/// Runs `telemetrygen` with `args` to the end (bounded) and returns what it
/// printed; a failed run fails the test.
pub async fn telemetrygen(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(telemetrygen_bin())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("telemetrygen {args:?} still running after 60 s"))
    .expect("run telemetrygen");
    output_text(&format!("telemetrygen {args:?}"), &output)
}

/// A signal as the debug exporter writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// `Span #n` blocks.
    Traces,
    /// `LogRecord #n` blocks.
    Logs,
    /// `...DataPoints #n` blocks (`NumberDataPoints`, `HistogramDataPoints`,
    /// `ExponentialHistogramDataPoints`, `SummaryDataPoints`).
    Metrics,
}

/// What a Collector's `debug` exporter wrote (`verbosity: detailed`): every
/// item's service and identity, in the order written.
#[derive(Debug, Default, Clone)]
pub struct DebugText {
    /// (signal, `service.name` of its resource, identity): a span is its
    /// trace and span id; a log record is its whole detailed text (time
    /// stamps to the nanosecond, body, attributes, ids); a data point is its
    /// metric's name and its whole detailed text.
    pub items: Vec<(Signal, String, String)>,
}

impl DebugText {
    /// Reads the exporter's output file (empty if not written yet).
    pub fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parses the detailed text.
    pub fn parse(text: &str) -> Self {
        let mut items = Vec::new();
        let mut service = String::new();
        let mut in_resource = false;
        // The item being read: (signal, identity).
        let mut current: Option<(Signal, String)> = None;
        // The metric whose data points are being read, by its name.
        let mut metric = String::new();
        let mut flush = |current: &mut Option<(Signal, String)>, service: &str| {
            if let Some((signal, id)) = current.take() {
                items.push((signal, service.to_owned(), id));
            }
        };
        for line in text.lines() {
            let head = line.trim_start();
            if head.starts_with("ResourceSpans #")
                || head.starts_with("ResourceLog #")
                || head.starts_with("ResourceMetrics #")
            {
                flush(&mut current, &service);
                service.clear();
                in_resource = true;
            } else if head.starts_with("ScopeSpans #")
                || head.starts_with("ScopeLogs #")
                || head.starts_with("ScopeMetrics #")
            {
                flush(&mut current, &service);
                in_resource = false;
            } else if head.starts_with("Metric #") {
                flush(&mut current, &service);
                metric.clear();
            } else if let Some(name) = head.strip_prefix("-> Name: ").filter(|_| current.is_none())
            {
                name.clone_into(&mut metric);
            } else if head.contains("DataPoints #") {
                flush(&mut current, &service);
                current = Some((Signal::Metrics, format!("{metric}\n")));
            } else if head.starts_with("Span #") {
                flush(&mut current, &service);
                current = Some((Signal::Traces, String::new()));
            } else if head.starts_with("LogRecord #") {
                flush(&mut current, &service);
                current = Some((Signal::Logs, String::new()));
            } else if in_resource {
                if let Some(name) = head
                    .strip_prefix("-> service.name: Str(")
                    .and_then(|v| v.strip_suffix(')'))
                {
                    name.clone_into(&mut service);
                }
            } else if let Some((signal, id)) = &mut current {
                match signal {
                    Signal::Traces => {
                        let field = |key: &str| {
                            line.split_once(':')
                                .filter(|(k, _)| k.trim() == key)
                                .map(|(_, v)| v.trim().to_owned())
                        };
                        if let Some(v) = field("Trace ID").or_else(|| field("ID")) {
                            id.push_str(&v);
                            id.push('/');
                        }
                    }
                    Signal::Logs | Signal::Metrics => {
                        id.push_str(line);
                        id.push('\n');
                    }
                }
            }
        }
        flush(&mut current, &service);
        Self { items }
    }

    /// How many items of `signal` were written for each service.
    pub fn counts(&self, signal: Signal) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (s, service, _) in &self.items {
            if *s == signal {
                *counts.entry(service.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Items of `signal` written more than once (the first of each).
    pub fn duplicates(&self, signal: Signal) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.items
            .iter()
            .filter(|(s, _, _)| *s == signal)
            .filter(|(_, _, id)| !seen.insert(id.as_str()))
            .map(|(_, _, id)| id.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(checkout)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope sdk 
Span #0
    Trace ID       : 0102
    Parent ID      : 
    ID             : 1112
    Name           : operationA
Attributes:
     -> service.name: Str(not-the-resource)
Span #1
    Trace ID       : 0102
    Parent ID      : 1112
    ID             : 1113
ResourceLog #0
Resource attributes:
     -> service.name: Str(lending)
ScopeLogs #0
LogRecord #0
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Body: Str(one)
LogRecord #1
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Body: Str(one)
ResourceMetrics #0
Resource attributes:
     -> service.name: Str(quotes)
ScopeMetrics #0
InstrumentationScope sdk
Metric #0
Descriptor:
     -> Name: http.server.request.duration
     -> DataType: Histogram
HistogramDataPoints #0
Data point attributes:
     -> http.route: Str(/quote)
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Count: 3
HistogramDataPoints #1
Data point attributes:
     -> http.route: Str(/other)
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Count: 3
Metric #1
Descriptor:
     -> Name: gen
NumberDataPoints #0
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Value: 0
ResourceSpans #0
Resource attributes:
     -> service.name: Str(checkout)
ScopeSpans #0
Span #0
    Trace ID       : 0102
    Parent ID      : 
    ID             : 1112
";

    #[test]
    fn items_are_counted_per_service_and_repeats_found() {
        let text = DebugText::parse(TEXT);
        assert_eq!(
            text.counts(Signal::Traces),
            BTreeMap::from([("checkout".to_owned(), 3)])
        );
        assert_eq!(
            text.counts(Signal::Logs),
            BTreeMap::from([("lending".to_owned(), 2)])
        );
        assert_eq!(
            text.counts(Signal::Metrics),
            BTreeMap::from([("quotes".to_owned(), 3)])
        );
        assert_eq!(text.duplicates(Signal::Traces), vec!["0102/1112/"]);
        assert_eq!(text.duplicates(Signal::Logs).len(), 1);
        assert!(text.duplicates(Signal::Metrics).is_empty());
        assert!(DebugText::parse("").items.is_empty());
    }
}
