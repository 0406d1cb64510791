//! The `modelgate` binary: parse the command line, load the configuration,
//! start logging, then run the collector (or a replay) until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use modelgate::replay::{self, ReplayOptions, Scenario};
use modelgate_collector::config::Config;
use tracing_subscriber::EnvFilter;

const AFTER_HELP: &str = "\
CONFIGURATION
  Defaults work without a file. Settings are layered, later wins:
    1. built-in defaults          (print them: modelgate config)
    2. the YAML file of --config  (or MODELGATE_CONFIG)
    3. environment variables      MODELGATE_<SECTION>__<KEY>, e.g.
                                  MODELGATE_JUDGE__SLA__LIMIT=200ms
                                  MODELGATE_RECEIVER__GRPC_LISTEN=0.0.0.0:4317
    4. the --grpc-listen / --http-listen / --admin-listen flags
  Sections: receiver (grpc_listen, http_listen, max_message_bytes,
  queue_batches, max_bytes_in_flight, header_timeout, body_timeout,
  idle_timeout, write_timeout, max_connections, max_concurrent_streams,
  memory_limit), extract (version_attributes, timeout, min_duration,
  max_duration, max_name_length, dimensions, logs:
  duration_field, duration_unit, version_field, endpoint_field,
  status_field, service_field, timeout_values, error_values), aggregate (window,
  baseline_horizon, slot, max_series, service_share, evict_below,
  series_idle_timeout, max_pending_traces),
  judge (evaluation_interval, baselines, sla, relative, errors, alerts),
  emit (otlp_endpoint, otlp_interval, histogram_buckets_ms), admin (listen,
  history_points, history_series, history_regressions, metrics_interval,
  metrics_max_bytes), snapshot (dir, interval, max_bytes; unset dir: no
  snapshots).
  A bad key or value is refused with its name and the problem.

ENDPOINTS (defaults)
  127.0.0.1:4317  OTLP/gRPC TraceService/Export and the modelgate.v1.Query API
  127.0.0.1:4318  OTLP/HTTP /v1/traces and /v1/logs (protobuf or JSON, gzip)
  127.0.0.1:9464  / (dashboard), /metrics, /api/v1/{versions,verdict,regressions,alerts},
                  /api/v1/history (the dashboard's data), /healthz, /readyz

EXAMPLES
  modelgate                                   run on the defaults
  modelgate --config modelgate.yaml           run with a file
  modelgate replay lending                    replay the lending incident
  modelgate analyze incident.jsonl            judge a JSON log file offline
  modelgate gate --service lending-api --candidate v1.3 --sla 150ms \
      --min-samples 200 --wait 5m            release gate: exit 0 pass,
                                              1 regression, 2 inconclusive
  modelgate gate --service lending-api --candidate v1.3 --format json \
      --url http://collector:4317            the verdict as JSON for CI
  curl -s localhost:9464/api/v1/regressions   see what fires";

/// Catch a slow new model or service version from its OpenTelemetry spans.
///
/// modelgate receives OTLP, keeps per-version latency for every service and
/// endpoint, judges each new version against its baseline (sla, relative,
/// errors rules) and emits regression alerts as metrics and a query API.
#[derive(Debug, Parser)]
#[command(name = "modelgate", version, after_help = AFTER_HELP)]
struct Cli {
    /// YAML configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "MODELGATE_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// OTLP/gRPC listen address (overrides receiver.grpc_listen).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,

    /// OTLP/HTTP listen address (overrides receiver.http_listen).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,

    /// Admin HTTP listen address (overrides admin.listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (the default).
    Run,
    /// Send a scenario's traffic to a collector, time-compressed.
    Replay {
        /// A built-in scenario (lending, aa) or a scenario YAML file.
        scenario: String,
        /// OTLP/gRPC endpoint of the collector.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Requests per second (overrides the scenario's rate).
        #[arg(long)]
        rate: Option<f64>,
        /// Random seed (overrides the scenario's seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print the effective configuration as YAML.
    Config,
    /// Judge JSON log files offline (the lending incident's format); exits 1
    /// when a version regressed.
    Analyze {
        /// Files of JSON lines: log lines (one request each, mapped by
        /// extract.logs) or OTLP/JSON exports (the collector file exporter's
        /// format), mixed freely.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Release gate: ask a running collector for its verdict on a candidate
    /// version; exits 0 pass, 1 regression, 2 inconclusive (too little
    /// traffic within --wait, unknown candidate, collector unreachable).
    Gate {
        /// `service.name` of the service released.
        #[arg(long)]
        service: String,
        /// The version under test.
        #[arg(long)]
        candidate: String,
        /// Compare with this version (default: the collector's baseline of
        /// each endpoint).
        #[arg(long)]
        baseline: Option<String>,
        /// Judge only this endpoint (default: every endpoint of the candidate).
        #[arg(long)]
        endpoint: Option<String>,
        /// Hold the candidate to this SLA limit (e.g. 150ms) instead of the
        /// collector's judge.sla.limit.
        #[arg(long, value_parser = humantime::parse_duration)]
        sla: Option<std::time::Duration>,
        /// Requests each rule needs (on each side) instead of the collector's
        /// min_samples.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        min_samples: Option<u64>,
        /// How long to keep asking while the verdict is inconclusive.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// The collector's gRPC (query API) address.
        #[arg(long, default_value = modelgate::gate::DEFAULT_URL)]
        url: String,
        /// `text` or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Send pre-encoded OTLP batches to a collector and report throughput.
    Loadgen {
        /// OTLP/gRPC endpoint of the collector.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// How long to send, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Spans per second over all connections (default: as fast as answered).
        #[arg(long)]
        rate: Option<f64>,
        /// Spans per Export call.
        #[arg(long, default_value_t = 512)]
        batch: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MODELGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("modelgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(addr) = cli.grpc_listen {
                config.receiver.grpc_listen = addr;
            }
            if let Some(addr) = cli.http_listen {
                config.receiver.http_listen = addr;
            }
            if let Some(addr) = cli.admin_listen {
                config.admin.listen = addr;
            }
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config => {
            print!("{}", Config::load(cli.config.as_deref())?.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Analyze { files, format } => {
            let config = Config::load(cli.config.as_deref())?;
            let mut analysis = modelgate::analyze::Analysis::new(&config);
            let progress = analyze_progress(&files);
            for file in &files {
                analysis
                    .read_file(file, &mut |n| progress.inc(n))
                    .with_context(|| format!("reading {}", file.display()))?;
            }
            progress.finish_and_clear();
            for m in &analysis.malformed {
                eprintln!("{}:{}: skipped: {}", m.file, m.line, m.reason);
            }
            let done = analysis.finish();
            if format == "json" {
                println!("{}", done.render_json());
            } else {
                print!("{}", done.render_text());
            }
            let critical = modelgate_collector::judge::Severity::Critical;
            Ok(if done.regressed(critical) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Gate {
            service,
            candidate,
            baseline,
            endpoint,
            sla,
            min_samples,
            wait,
            url,
            format,
        } => {
            use modelgate::gate;
            let options = gate::GateOptions {
                url,
                service,
                candidate,
                baseline,
                endpoint,
                sla,
                min_samples,
                wait,
                poll_interval: gate::POLL_INTERVAL,
            };
            let result = runtime.block_on(gate::run(&options));
            if format == "json" {
                println!("{}", gate::render_json(&options, &result));
            } else if let Ok(report) = &result {
                print!("{}", gate::render_text(report));
            }
            match &result {
                Err(error) => eprintln!("modelgate gate: inconclusive: {error}"),
                Ok(report) => {
                    if let Some(reason) = &report.reason {
                        eprintln!("modelgate gate: inconclusive: {reason}");
                    }
                }
            }
            Ok(ExitCode::from(gate::exit_code(&result)))
        }
        Command::Loadgen {
            endpoint,
            connections,
            duration,
            rate,
            batch,
        } => {
            let options = modelgate::loadgen::LoadOptions {
                endpoint,
                connections,
                duration,
                rate,
                batch_spans: batch,
                ..Default::default()
            };
            let report = runtime.block_on(modelgate::loadgen::run(&options))?;
            let q = |q| report.latency_ms.quantile(q).unwrap_or(0.0);
            println!("| measure | value |");
            println!("|---|---|");
            println!(
                "| connections x batch | {connections} x {batch} spans ({} bytes) |",
                report.batch_bytes
            );
            println!("| duration | {:.1} s |", report.elapsed.as_secs_f64());
            println!(
                "| export calls ok / failed | {} / {} |",
                report.calls_ok, report.calls_failed
            );
            println!(
                "| spans accepted / rejected | {} / {} |",
                report.spans_accepted, report.spans_rejected
            );
            println!(
                "| export latency p50 / p99 | {:.2} / {:.2} ms |",
                q(0.5),
                q(0.99)
            );
            println!(
                "loadgen: spans_per_s={:.0} export_p50_ms={:.2} export_p99_ms={:.2}",
                report.spans_per_second(),
                q(0.5),
                q(0.99)
            );
            Ok(if report.calls_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Replay {
            scenario,
            endpoint,
            rate,
            seed,
        } => {
            let scenario = Scenario::load(&scenario)?;
            let options = ReplayOptions {
                endpoint,
                rate,
                seed,
            };
            println!(
                "replaying {:?} ({}): {} requests to {} at {}/s",
                scenario.name,
                scenario.description,
                scenario.total_requests(),
                options.endpoint,
                options.rate.unwrap_or(scenario.rate)
            );
            let report = runtime.block_on(replay::replay(&scenario, &options))?;
            for (phase, version, n, timeouts, errors) in &report.per_version {
                println!("  {phase:<32} {version:<10} {n:>7} requests {timeouts:>6} timeouts {errors:>6} errors");
            }
            println!(
                "sent {} requests ({} database spans) in {:.1}s, {} spans failed",
                report.requests,
                report.db_spans,
                report.elapsed.as_secs_f64(),
                report.failed
            );
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// A progress bar on stderr for inputs large enough to wait for (hidden
/// when stderr is not a terminal, so logs and pipes stay clean).
fn analyze_progress(files: &[PathBuf]) -> indicatif::ProgressBar {
    const LARGE_INPUT_BYTES: u64 = 16 * 1024 * 1024;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total < LARGE_INPUT_BYTES {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} analyzing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = modelgate_collector::serve::start(config).await?;
    running
        .run_until(async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
