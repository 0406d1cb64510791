//! The `modelgate` binary: parse the command line, start logging, then hand
//! over to one function per subcommand. The collector is the
//! `modelgate-collector` library; the client tools and what they print are
//! this crate's library (`modelgate::gate`, `::replay`, `::analyze`,
//! `::loadgen`). Nothing here renders a table or judges anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use modelgate::replay::{ReplayOptions, Scenario};
use modelgate::{analyze, gate, loadgen, replay};
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
  queue_batches), extract (version_attributes, timeout, dimensions, logs:
  duration_field, duration_unit, version_field, endpoint_field,
  status_field, service_field, timeout_values, error_values), aggregate (window,
  baseline_horizon, slot, max_series, series_idle_timeout, max_pending_traces),
  judge (evaluation_interval, baselines, sla, relative, errors, alerts),
  emit (otlp_endpoint, otlp_interval, histogram_buckets_ms), admin (listen,
  history_points, history_series, history_regressions), snapshot (dir,
  interval; unset dir: no snapshots).
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
    Replay(ReplayArgs),
    /// Print the effective configuration as YAML.
    Config,
    /// Judge JSON log files offline (the lending incident's format); exits 1
    /// when a version regressed.
    Analyze(AnalyzeArgs),
    /// Release gate: ask a running collector for its verdict on a candidate
    /// version; exits 0 pass, 1 regression, 2 inconclusive (too little
    /// traffic within --wait, unknown candidate, collector unreachable).
    Gate(GateArgs),
    /// Send pre-encoded OTLP batches to a collector and report throughput.
    Loadgen(LoadgenArgs),
}

#[derive(Debug, Args)]
struct ReplayArgs {
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
}

#[derive(Debug, Args)]
struct AnalyzeArgs {
    /// Files of JSON lines: log lines (one request each, mapped by
    /// extract.logs) or OTLP/JSON exports (the collector file exporter's
    /// format), mixed freely.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// `table` or `json`.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

#[derive(Debug, Args)]
struct GateArgs {
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
    sla: Option<Duration>,
    /// Requests each rule needs (on each side) instead of the collector's
    /// min_samples.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    min_samples: Option<u64>,
    /// How long to keep asking while the verdict is inconclusive.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// The collector's gRPC (query API) address.
    #[arg(long, default_value = gate::DEFAULT_URL)]
    url: String,
    /// `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Debug, Args)]
struct LoadgenArgs {
    /// OTLP/gRPC endpoint of the collector.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Spans per second over all connections (default: as fast as answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Spans per Export call.
    #[arg(long, default_value_t = 512)]
    batch: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("modelgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr, filtered by `MODELGATE_LOG` (default `info`), in colour
/// only on a terminal.
fn init_tracing() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MODELGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let config_file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let mut config = Config::load(config_file)?;
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
            print!("{}", Config::load(config_file)?.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Analyze(args) => run_analyze(args, Config::load(config_file)?),
        Command::Gate(args) => Ok(run_gate(args, &runtime)),
        Command::Loadgen(args) => run_loadgen(args, &runtime),
        Command::Replay(args) => run_replay(args, &runtime),
    }
}

/// `modelgate analyze`: exit 1 when a version regressed.
fn run_analyze(args: AnalyzeArgs, config: Config) -> anyhow::Result<ExitCode> {
    let mut analysis = analyze::Analysis::default();
    let progress = analyze::render::progress(&args.files);
    for file in &args.files {
        analysis
            .read_file(file, &config.extract, &mut |n| progress.inc(n))
            .with_context(|| format!("reading {}", file.display()))?;
    }
    progress.finish_and_clear();
    eprint!("{}", analyze::render::skipped(&analysis));
    let reports = analyze::judge(&analysis, &analyze::offline_judge(config.judge));
    if args.format == "json" {
        println!("{}", analyze::render::json(&analysis, &reports));
    } else {
        print!("{}", analyze::render::text(&analysis, &reports));
    }
    Ok(exit_if(analyze::any_regression(&reports)))
}

/// `modelgate gate`: the verdict printed, its decision as the exit code.
fn run_gate(args: GateArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let options = gate::GateOptions {
        url: args.url,
        service: args.service,
        candidate: args.candidate,
        baseline: args.baseline,
        endpoint: args.endpoint,
        sla: args.sla,
        min_samples: args.min_samples,
        wait: args.wait,
        poll_interval: gate::POLL_INTERVAL,
    };
    let result = runtime.block_on(gate::run(&options));
    if args.format == "json" {
        println!("{}", gate::render::json(&options, &result));
    } else if let Ok(report) = &result {
        print!("{}", gate::render::text(report));
    }
    match &result {
        Err(error) => eprintln!("modelgate gate: inconclusive: {error}"),
        Ok(report) => {
            if let Some(reason) = &report.reason {
                eprintln!("modelgate gate: inconclusive: {reason}");
            }
        }
    }
    ExitCode::from(gate::exit_code(&result))
}

/// `modelgate loadgen`: exit 1 when an Export call failed.
fn run_loadgen(args: LoadgenArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let options = loadgen::LoadOptions {
        endpoint: args.endpoint,
        connections: args.connections,
        duration: args.duration,
        rate: args.rate,
        batch_spans: args.batch,
        ..Default::default()
    };
    let report = runtime.block_on(loadgen::run(&options))?;
    print!("{}", loadgen::render::report(&options, &report));
    Ok(exit_if(report.calls_failed > 0))
}

/// `modelgate replay`: exit 1 when spans could not be exported.
fn run_replay(args: ReplayArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.scenario)?;
    let options = ReplayOptions {
        endpoint: args.endpoint,
        rate: args.rate,
        seed: args.seed,
    };
    print!("{}", replay::render::header(&scenario, &options));
    let report = runtime.block_on(replay::replay(&scenario, &options))?;
    print!("{}", replay::render::summary(&report));
    Ok(exit_if(report.failed > 0))
}

/// 1 when `failed`, else 0.
fn exit_if(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
