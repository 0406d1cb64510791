//! Support for the end-to-end tests: start the real `modelgate` binary on
//! ephemeral localhost ports, talk to it, read its metrics.
//!
//! The binary is the release build, `cargo build --release -p modelgate`
//! (`scripts/test` builds it before running the tests), so the tests hold it
//! to production figures such as 100,000 series. It is found in the
//! workspace's target directory or at `$MODELGATE_BIN`, and always started
//! through [`modelgate_command`], with none of the caller's `MODELGATE_*`
//! variables: a test sets the configuration it means. Every wait here is
//! bounded in time.
//!
//! A collector started with [`Collector::start_tls`] is reached over TLS
//! (https, gRPC over TLS) trusting the given CA; [`Collector::set_token`]
//! makes every helper here send `authorization: Bearer <token>`.
//!
//! [`otelcol`] runs the real OpenTelemetry Collector (the project's own
//! build) and `telemetrygen`; [`sdk`] sends through the OpenTelemetry SDK;
//! [`prometheus`] runs a real Prometheus scraping modelgates; [`fleet`]
//! feeds one many services at once.

// Test support: a panic with a message is exactly the failure report wanted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod fleet;
pub mod otelcol;
pub mod prometheus;
pub mod sdk;

/// How long the binary may take to bind its ports.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Ephemeral localhost ports for all three listeners (gRPC, HTTP, admin).
pub const EPHEMERAL: [SocketAddr; 3] =
    [SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0); 3];

/// The `modelgate` binary under test, run on `cpu` with `taskset` when
/// given (for benchmarks that give the collector and the load one core
/// each). The caller's `MODELGATE_*` and `OTEL_EXPORTER_OTLP_*` variables
/// are removed: the collector refuses unknown ones (`MODELGATE_BIN` is this
/// harness's), the client tools read the OTLP exporter's, and a developer's
/// own settings must not change what a test measures.
pub fn modelgate_command(cpu: Option<usize>) -> std::process::Command {
    program_command(&modelgate_bin(), cpu)
}

/// [`modelgate_command`] of the binary at `program` (another build, the
/// "before" of an A/B benchmark).
pub fn program_command(program: &Path, cpu: Option<usize>) -> std::process::Command {
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = std::process::Command::new("taskset");
            taskset.arg("-c").arg(cpu.to_string()).arg(program);
            taskset
        }
        None => std::process::Command::new(program),
    };
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("MODELGATE_") || key_text.starts_with("OTEL_EXPORTER_OTLP_") {
            command.env_remove(key);
        }
    }
    command
}

fn modelgate_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MODELGATE_BIN") {
        return PathBuf::from(path);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join("release").join("modelgate");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --release -p modelgate` (scripts/test does), or set MODELGATE_BIN",
        path.display()
    );
    path
}

/// Debian's Chromium, as `scripts/install-test-deps` installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The flags every headless Chromium of the tests runs with: no sandbox
/// (tests run as root in containers), no GPU, nothing fetched in the
/// background, no first-run or sync machinery.
pub const CHROMIUM_HEADLESS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// A running `modelgate` child process; killed on drop.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// OTLP/gRPC and query API address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub http_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    /// The CA the TLS clients trust, PEM.
    ca_pem: Option<String>,
    /// Sent as a bearer token when set.
    token: Option<String>,
}

impl Collector {
    /// Starts the binary with `env` added to its environment and waits until
    /// it listens.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_command(modelgate_command(None).into(), env, EPHEMERAL).await
    }

    /// [`Collector::start`] of the binary at `program` (another build).
    pub async fn start_program(program: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_command(program_command(program, None).into(), env, EPHEMERAL).await
    }

    /// [`Collector::start`] on given addresses (gRPC, HTTP, admin): to
    /// start an instance again where its peers (a load balancer, a
    /// Prometheus) know it, e.g. on the addresses of one it replaces.
    pub async fn start_at(listen: [SocketAddr; 3], env: &[(&str, &str)]) -> Self {
        Self::start_command(modelgate_command(None).into(), env, listen).await
    }

    /// [`Collector::start`] with `args` before the listen flags, e.g.
    /// `["run"]` to put them after the subcommand.
    pub async fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command: Command = modelgate_command(None).into();
        command.args(args);
        Self::start_command(command, env, EPHEMERAL).await
    }

    /// [`Collector::start`] for a collector serving TLS (configured through
    /// `env`) with a certificate that `ca_pem` (PEM) issued or is.
    pub async fn start_tls(env: &[(&str, &str)], ca_pem: &str) -> Self {
        let mut collector = Self::start(env).await;
        collector.scheme = "https";
        collector.ca_pem = Some(ca_pem.to_owned());
        collector.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        collector
    }

    /// The bearer token the helpers send from now on (`None`: none).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_owned);
    }

    /// The HTTP client the helpers use (trusting the test CA under TLS).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// URL of `path` on the admin port (`http` or `https`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.admin)
    }

    /// URL of `path` on the OTLP/HTTP port (`http` or `https`).
    pub fn http_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.http_addr)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A channel to the gRPC port: TLS (trusting the test CA, server name
    /// `localhost`) when started with [`Collector::start_tls`].
    pub async fn grpc_channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.grpc_url())?
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca_pem {
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )?;
        }
        endpoint.connect().await
    }

    /// `message` as a request carrying the token, if one is set.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    /// POST of a JSON body on the admin port: (status, body).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let response = self
            .authorized(self.http.post(self.admin_url(path)).json(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// [`Collector::start`], pinned to one CPU with `taskset` (for
    /// benchmarks that give the collector and the load one core each).
    pub async fn start_pinned(cpu: usize, env: &[(&str, &str)]) -> Self {
        Self::start_command(modelgate_command(Some(cpu)).into(), env, EPHEMERAL).await
    }

    async fn start_command(
        mut command: Command,
        env: &[(&str, &str)],
        [grpc, http, admin]: [SocketAddr; 3],
    ) -> Self {
        command
            .arg("--grpc-listen")
            .arg(grpc.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("MODELGATE_LOG", "info,h2=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn modelgate");
        let (log, rx) = read_log(child.stderr.take().expect("piped stderr"), "listening");
        let line = tokio::time::timeout(START_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("modelgate did not start; log:\n{}", log.lock().unwrap()))
            .unwrap_or_else(|_| panic!("modelgate exited; log:\n{}", log.lock().unwrap()));
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        Self {
            grpc: addr("otlp_grpc="),
            http_addr: addr("otlp_http="),
            admin: addr("admin="),
            child,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            scheme: "http",
            ca_pem: None,
            token: None,
        }
    }

    /// URL of the gRPC port (`http://`, or `https://` under TLS).
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }

    /// GET on the admin port: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .authorized(self.http.get(self.admin_url(path)))
            .send()
            .await
            .unwrap_or_else(|e| {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "GET {path}: {e:?}; last log lines, newest first:\n{}",
                    tail.join("\n")
                )
            });
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// POST to the OTLP/HTTP port: (status, content type, body).
    pub async fn post_otlp(
        &self,
        path: &str,
        content_type: &str,
        content_encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        let mut request = self
            .authorized(self.http.post(self.http_url(path)))
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = content_encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        (status, content_type, body)
    }

    /// GET JSON on the admin port.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// What the binary logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The addresses it listens on (gRPC, HTTP, admin), for
    /// [`Collector::start_at`].
    pub fn listen(&self) -> [SocketAddr; 3] {
        [self.grpc, self.http_addr, self.admin]
    }

    /// The collector's process id (under `taskset` too: it execs).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident memory of the collector, KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        rss_kib(pid)
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would (no
    /// shutdown, no last snapshot), waits (bounded) until it is gone and
    /// returns what it logged. Start another with the same environment
    /// (e.g. the same `MODELGATE_SNAPSHOT__DIR`) to restart it.
    pub async fn kill9(mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.child.kill())
            .await
            .expect("modelgate still running 10 s after SIGKILL")
            .expect("kill");
        // Let the stderr reader take the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log()
    }

    /// Stops it with SIGTERM and waits (bounded) for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("modelgate did not stop within 20 s of SIGTERM")
            .expect("wait")
    }
}

/// Collects a child's stderr, line by line, into the returned log, and
/// sends the first line containing `marker` once that line is in the log
/// (a test may read the log as soon as it has the line).
pub fn read_log(
    stderr: tokio::process::ChildStderr,
    marker: &'static str,
) -> (Arc<Mutex<String>>, tokio::sync::oneshot::Receiver<String>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sink = log.clone();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if line.contains(marker) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    (log, rx)
}

/// A finished command's stdout and stderr, one after the other; a failed
/// command fails the test with them.
pub fn output_text(what: &str, output: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The series counts a bench runs at: the comma-separated list in the
/// environment variable `var`, else `default` (the same form).
pub fn series_counts(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: series counts, multiples of 200, got {s:?}"))
        })
        .collect()
}

/// A free localhost address: bound, noted, let go. For programs that take
/// a port but cannot report the one they bound (the Collector, Prometheus);
/// another process could take it in between, which on a test machine
/// practically never happens.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// VmRSS of a process, KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The peak resident set of process `pid` (`VmHWM`), KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of process `pid` so far (`/proc/PID/stat`),
/// every thread of it.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The value of the sample `name{labels...}` in Prometheus text, where every
/// given label matches (others may be present).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A finished `modelgate` command.
#[derive(Debug)]
pub struct Run {
    /// Its exit code (-1: killed by a signal).
    pub code: i32,
    /// What it printed.
    pub stdout: String,
    /// What it logged.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:.1}s\n--- stdout\n{}--- stderr\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `modelgate <args>` with `env` added to completion; panics if it
/// takes longer than `limit`.
pub async fn run_modelgate(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let started = Instant::now();
    let mut command = Command::from(modelgate_command(None));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("spawn modelgate");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("modelgate {args:?} ran over {limit:?}"))
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The sum of every line of `name` with `labels` in a Prometheus text
/// (`None` when there is none): a family split by an attribute the caller
/// does not name, such as `modelgate_receiver_accepted_total{signal}`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with('{') || rest.starts_with(' '))
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use modelgate::loadgen::send_raw;
