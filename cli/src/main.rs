//! The `modelgate` binary: parse the command line, start logging, then hand
//! over to one function per subcommand. The collector is the
//! `modelgate-collector` library; the client tools and what they print are
//! this crate's library (`modelgate::gate`, `::replay`, `::analyze`,
//! `::loadgen`). Nothing here renders a table or judges anything; every
//! failure leaves with the exit code of [`modelgate::exit`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use modelgate::client::{ClientError, ClientOptions};
use modelgate::exit::{self, Exit};
use modelgate::replay::{ReplayError, ReplayOptions, Scenario};
use modelgate::{analyze, gate, loadgen, replay};
use modelgate_collector::auth::Auth;
use modelgate_collector::config::{Config, ConfigError};
use modelgate_collector::judge::Severity;
use modelgate_collector::serve::tls::Tls;
use modelgate_collector::serve::ServeError;
use tracing_subscriber::EnvFilter;

const AFTER_HELP: &str = "\
CONFIGURATION
  Defaults work without a file. Settings are layered, later wins:
    1. built-in defaults          (print them: modelgate config)
    2. the YAML file of --config  (or MODELGATE_CONFIG)
    3. environment variables      MODELGATE_<SECTION>__<KEY>, e.g.
                                  MODELGATE_JUDGE__SLA__LIMIT=200ms
                                  MODELGATE_RECEIVER__GRPC_LISTEN=0.0.0.0:4317
    4. the --grpc-listen / --http-listen / --admin-listen flags (before or
       after run, config and validate)
{SETTINGS}  A bad key or value is refused with its name and the problem; check a
  setup without starting: modelgate validate. The variables Kubernetes
  injects for a Service named modelgate (MODELGATE_PORT,
  MODELGATE_SERVICE_HOST, MODELGATE_PORT_4317_TCP_ADDR, ...) are not
  settings and are ignored.

ENDPOINTS (defaults)
  127.0.0.1:4317  OTLP/gRPC Trace, Logs and MetricsService/Export and the
                  modelgate.v1.Query API
  127.0.0.1:4318  OTLP/HTTP /v1/traces, /v1/logs and /v1/metrics (protobuf or
                  JSON, gzip)
  127.0.0.1:9464  / (dashboard; /?service=S&endpoint=E&version=V&q=SEARCH
                  opens a selection), /metrics, /api/v1/{versions,verdict,
                  regressions,alerts}, /api/v1/history (the dashboard's
                  data; ?since=MS for newer points only), /healthz, /readyz;
                  gzip when Accept-Encoding asks

EXAMPLES
  modelgate                                   run on the defaults
  modelgate --config modelgate.yaml           run with a file
  modelgate validate --config modelgate.yaml  check file, variables and flags
  modelgate replay lending                    replay the lending incident
  modelgate analyze incident.jsonl            judge a JSON log file offline
  modelgate gate --service lending-api --candidate v1.3 --sla 150ms \\
      --min-samples 200 --wait 5m            release gate (exit codes below)
  modelgate gate --service lending-api --candidate v1.3 --format json \\
      --url https://collector:4317 --ca-file ca.pem --token-file token
                                              the verdict as JSON for CI, over
                                              TLS with the collector's token
  curl -s localhost:9464/api/v1/regressions   see what fires";

/// Every section and its keys, from the defaults themselves (so the help
/// never lists a setting that is gone or misses a new one), wrapped for
/// the help's indentation.
fn settings() -> String {
    // TLS is off by default; its keys are listed all the same.
    let shown = Config {
        tls: Some(modelgate_collector::config::TlsConfig {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: None,
        }),
        ..Config::default()
    };
    let defaults = serde_yaml_ng::to_value(shown).unwrap_or_default();
    let mut sections = Vec::new();
    if let serde_yaml_ng::Value::Mapping(top) = defaults {
        for (section, value) in top {
            let name = section.as_str().unwrap_or("?").to_owned();
            let keys: Vec<String> = match value {
                serde_yaml_ng::Value::Mapping(keys) => keys
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let k = k.as_str()?.to_owned();
                        Some(if v.is_mapping() { format!("{k}.*") } else { k })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            sections.push(if keys.is_empty() {
                name
            } else {
                // Kept on one line with its first key (see below).
                format!("{name}\u{a0}({})", keys.join(", "))
            });
        }
    }
    let mut out = String::from("  Sections (every key with its default: modelgate config):\n");
    let mut line = String::from("  ");
    for (i, section) in sections.iter().enumerate() {
        let word = if i + 1 < sections.len() {
            format!("{section}; ")
        } else {
            format!("{section}.")
        };
        for piece in word.split_inclusive(' ') {
            if line.chars().count() + piece.chars().count() > 76 {
                out.push_str(line.trim_end());
                out.push('\n');
                line = String::from("  ");
            }
            line.push_str(piece);
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out.replace('\u{a0}', " ")
}

/// Shown by `replay --help` and `loadgen --help`.
const EXPORTER_HELP: &str = "\
CREDENTIALS
  For a collector with tls and auth: an https:// endpoint, --token-file, and
  --ca-file unless the system trusts its certificate. As an OTLP exporter it
  also reads OTEL_EXPORTER_OTLP_TRACES_* / OTEL_EXPORTER_OTLP_* CERTIFICATE,
  CLIENT_CERTIFICATE, CLIENT_KEY and HEADERS (e.g.
  OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>); flags win.";

/// Shown by `gate --help`.
const GATE_HELP: &str = "\
CREDENTIALS
  For a collector with tls and auth: an https:// --url, --token-file, and
  --ca-file unless the system trusts its certificate. The gate reads no
  OTEL_* variable: those belong to the job's own telemetry.";

/// Catch a slow new model or service version from its OpenTelemetry spans.
///
/// modelgate receives OTLP, keeps per-version latency for every service and
/// endpoint, judges each new version against its baseline (sla, relative,
/// errors rules) and emits regression alerts as metrics and a query API.
#[derive(Debug, Parser)]
#[command(name = "modelgate", version)]
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

    #[command(flatten)]
    listen: ListenArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The listen flags: valid before the subcommand and after `run`, `config`
/// and `validate`; after wins.
#[derive(Debug, Clone, Default, Args)]
struct ListenArgs {
    /// OTLP/gRPC listen address (overrides receiver.grpc_listen).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,

    /// OTLP/HTTP listen address (overrides receiver.http_listen).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,

    /// Admin HTTP listen address (overrides admin.listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
}

impl ListenArgs {
    /// Each address of `self`, else of `before` (the flags given before
    /// the subcommand).
    fn or(self, before: ListenArgs) -> ListenArgs {
        ListenArgs {
            grpc_listen: self.grpc_listen.or(before.grpc_listen),
            http_listen: self.http_listen.or(before.http_listen),
            admin_listen: self.admin_listen.or(before.admin_listen),
        }
    }

    /// The configuration with the addresses given applied.
    fn apply(&self, mut config: Config) -> Config {
        if let Some(addr) = self.grpc_listen {
            config.receiver.grpc_listen = addr;
        }
        if let Some(addr) = self.http_listen {
            config.receiver.http_listen = addr;
        }
        if let Some(addr) = self.admin_listen {
            config.admin.listen = addr;
        }
        config
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (the default).
    Run(ListenArgs),
    /// Print the effective configuration (file, variables and flags) as YAML.
    Config(ListenArgs),
    /// Check the configuration (file, variables, flags, and the tls and auth
    /// files it names) without starting; exit 0, or 78 naming the problem.
    Validate(ListenArgs),
    /// Send a scenario's traffic to a collector, time-compressed.
    #[command(after_help = EXPORTER_HELP)]
    Replay(ReplayArgs),
    /// Judge JSON log files offline (the lending incident's format); exits 1
    /// when a version regressed (critical, or --fail-on warning).
    Analyze(AnalyzeArgs),
    /// Release gate: ask a running collector for its verdict on a candidate
    /// version; exits 0 pass, 1 regression (critical, or --fail-on warning),
    /// 2 inconclusive (too little traffic within --wait, an unknown candidate
    /// or no baseline), and 64, 69, 77 or 78
    /// when it got no verdict (see EXIT CODES).
    Gate(GateArgs),
    /// Send pre-encoded OTLP batches to a collector and report throughput.
    #[command(after_help = EXPORTER_HELP)]
    Loadgen(LoadgenArgs),
}

/// How a client tool reaches a collector with `tls` and `auth` on.
#[derive(Debug, Args)]
struct ClientArgs {
    /// File holding the collector's bearer token (its auth.token_file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for an https:// URL instead of the
    /// system's (the collector's tls.cert, if self-signed).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for a collector that requires one
    /// (tls.client_ca).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl ClientArgs {
    /// The options the flags give.
    fn options(self) -> ClientOptions {
        ClientOptions {
            ca_file: self.ca_file,
            client_cert: self.client_cert,
            client_key: self.client_key,
            token_file: self.token_file,
            headers: Vec::new(),
        }
    }

    /// The flags, then the OTLP exporter variables for what they left unset.
    fn exporter_options(self) -> Result<ClientOptions, ClientError> {
        self.options()
            .with_otlp_env(|name| std::env::var(name).ok())
    }
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// A built-in scenario (lending, aa, ecommerce) or a scenario YAML file.
    scenario: String,
    /// OTLP/gRPC endpoint of the collector (https:// for TLS).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Requests per second (overrides the scenario's rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Random seed (overrides the scenario's seed).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
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
    /// The mildest regression that exits 1: critical or warning.
    #[arg(long, default_value = "critical")]
    fail_on: Severity,
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
    /// The mildest regression that fails the gate: critical (what the edge
    /// filter rolls back on) or warning. A milder one is printed and exits 0.
    #[arg(long, default_value = "critical")]
    fail_on: Severity,
    /// How long to keep asking while the verdict is inconclusive (or only a
    /// regression milder than --fail-on).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// The collector's gRPC (query API) address: its OTLP/gRPC port, not the
    /// admin port (https:// for TLS).
    #[arg(long, default_value = gate::DEFAULT_URL)]
    url: String,
    /// `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct LoadgenArgs {
    /// OTLP/gRPC endpoint of the collector (https:// for TLS).
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
    #[command(flatten)]
    client: ClientArgs,
}

/// A command that could not do its job: what to print, and the exit code.
struct Failure {
    exit: Exit,
    error: anyhow::Error,
}

impl Failure {
    fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Failure::new(Exit::Configuration, error)
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::new(error.exit(), error)
    }
}

impl From<ReplayError> for Failure {
    fn from(error: ReplayError) -> Self {
        Failure::new(error.exit(), error)
    }
}

impl From<loadgen::LoadError> for Failure {
    fn from(error: loadgen::LoadError) -> Self {
        Failure::new(error.exit(), error)
    }
}

impl From<ServeError> for Failure {
    fn from(error: ServeError) -> Self {
        let exit = match error {
            ServeError::Tls(_)
            | ServeError::Auth(_)
            | ServeError::Otlp(_)
            | ServeError::Forward(_)
            // Another instance holds snapshot.dir, or it cannot be read.
            | ServeError::Snapshot(_) => Exit::Configuration,
            ServeError::Bind { .. } | ServeError::Server { .. } | ServeError::Task { .. } => {
                Exit::Failure
            }
        };
        Failure::new(exit, error)
    }
}

/// The command line, with the exit codes in the help of the binary and of
/// the commands that talk to a collector.
fn command() -> clap::Command {
    Cli::command()
        .after_help(format!(
            "{}\n\n{}",
            AFTER_HELP.replace("{SETTINGS}", &settings()),
            exit::HELP
        ))
        .mut_subcommand("gate", |c| {
            c.after_help(format!("{GATE_HELP}\n\n{}", exit::HELP))
        })
}

fn main() -> ExitCode {
    // clap's own exit would be 2, which the gate means as inconclusive.
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    init_tracing();
    match dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("modelgate: {}", exit::message(failure.error.as_ref()));
            failure.exit.into()
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

fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    let config_file = cli.config;
    let load = |listen: ListenArgs| -> Result<Config, Failure> {
        Ok(listen
            .or(cli.listen.clone())
            .apply(Config::load(config_file.as_deref())?))
    };
    match cli.command.unwrap_or(Command::Run(ListenArgs::default())) {
        Command::Run(listen) => run_collector(load(listen)?),
        Command::Config(listen) => {
            print!("{}", load(listen)?.to_yaml());
            Ok(Exit::Ok)
        }
        Command::Validate(listen) => validate(load(listen)?),
        Command::Analyze(args) => run_analyze(args, load(ListenArgs::default())?),
        Command::Gate(args) => run_gate(args),
        Command::Loadgen(args) => run_loadgen(args),
        Command::Replay(args) => run_replay(args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::new(Exit::Failure, e))
}

/// `modelgate` / `modelgate run`: serve until SIGINT or SIGTERM.
fn run_collector(config: Config) -> Result<Exit, Failure> {
    runtime()?.block_on(serve(config))?;
    Ok(Exit::Ok)
}

/// `modelgate validate`: what `run` checks before it binds a port.
fn validate(config: Config) -> Result<Exit, Failure> {
    if let Some(tls) = &config.tls {
        Tls::load(tls).map_err(ServeError::from)?;
    }
    let auth = Auth::load(&config.auth).map_err(ServeError::from)?;
    println!(
        "configuration valid: OTLP/gRPC {}, OTLP/HTTP {}, admin {}{}{}",
        config.receiver.grpc_listen,
        config.receiver.http_listen,
        config.admin.listen,
        if config.tls.is_some() { ", TLS" } else { "" },
        if auth.enabled() {
            ", token required"
        } else {
            ""
        },
    );
    Ok(Exit::Ok)
}

/// `modelgate analyze`: exit 1 when a version regressed at `--fail-on`.
fn run_analyze(args: AnalyzeArgs, config: Config) -> Result<Exit, Failure> {
    let mut analysis = analyze::Analysis::new(&config);
    let progress = analyze::render::progress(&args.files);
    for file in &args.files {
        analysis
            .read_file(file, &mut |n| progress.inc(n))
            .map_err(|e| {
                Failure::new(
                    Exit::Failure,
                    anyhow::Error::from(e).context(format!("reading {}", file.display())),
                )
            })?;
    }
    progress.finish_and_clear();
    let done = analysis.finish();
    eprint!("{}", done.render_skipped());
    if args.format == "json" {
        println!("{}", done.render_json());
    } else {
        print!("{}", done.render_text());
    }
    Ok(Exit::regression_if(done.regressed(args.fail_on)))
}

/// `modelgate gate`: the verdict printed, its decision (or why there is
/// none) as the exit code.
fn run_gate(args: GateArgs) -> Result<Exit, Failure> {
    let options = gate::GateOptions {
        url: args.url,
        service: args.service,
        candidate: args.candidate,
        baseline: args.baseline,
        endpoint: args.endpoint,
        sla: args.sla,
        min_samples: args.min_samples,
        fail_on: args.fail_on,
        wait: args.wait,
        poll_interval: gate::POLL_INTERVAL,
        client: args.client.options(),
    };
    let result = runtime()?.block_on(gate::run(&options));
    if args.format == "json" {
        println!("{}", gate::render::json(&options, &result));
    } else if let Ok(report) = &result {
        print!("{}", gate::render::text(report));
    }
    match &result {
        Err(error) => eprintln!("modelgate gate: {error}"),
        Ok(report) => {
            if let Some(reason) = &report.reason {
                eprintln!("modelgate gate: inconclusive: {reason}");
            }
        }
    }
    Ok(gate::exit(&result))
}

/// `modelgate loadgen`: exit 1 when an Export call failed.
fn run_loadgen(args: LoadgenArgs) -> Result<Exit, Failure> {
    let options = loadgen::LoadOptions {
        endpoint: args.endpoint,
        connections: args.connections,
        duration: args.duration,
        rate: args.rate,
        batch_spans: args.batch,
        client: args.client.exporter_options()?,
        ..Default::default()
    };
    let report = runtime()?.block_on(loadgen::run(&options))?;
    print!("{}", loadgen::render::report(&options, &report));
    eprint!("{}", loadgen::render::failures(&report));
    Ok(Exit::regression_if(report.calls_failed > 0))
}

/// `modelgate replay`: exit 1 when spans could not be exported.
fn run_replay(args: ReplayArgs) -> Result<Exit, Failure> {
    let scenario = Scenario::load(&args.scenario)?;
    let options = ReplayOptions {
        endpoint: args.endpoint,
        rate: args.rate,
        seed: args.seed,
        client: args.client.exporter_options()?,
    };
    print!("{}", replay::render::header(&scenario, &options));
    let report = runtime()?.block_on(replay::replay(&scenario, &options))?;
    print!("{}", replay::render::summary(&report));
    Ok(Exit::regression_if(report.failed > 0))
}

async fn serve(config: Config) -> Result<(), ServeError> {
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
