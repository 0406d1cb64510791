//! A real Prometheus (`/usr/bin/prometheus`, installed from Debian by
//! `scripts/install-test-deps`) started by a test on an ephemeral localhost
//! port, never as a system service: it scrapes the given modelgates every
//! second, evaluates the given rules every second, keeps its TSDB in a
//! temporary directory and is killed when dropped. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_addr;

/// How long Prometheus may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A tool the tests drive; missing means the machine was not prepared.
pub fn tool(name: &str) -> PathBuf {
    let found = ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run scripts/install-test-deps (it apt-installs prometheus and prometheus-alertmanager)")
    })
}

/// A running Prometheus: killed, waited for and its directory (config, TSDB,
/// log) removed on drop, whatever path the test takes.
pub struct Prometheus {
    child: Child,
    /// Where its web UI and API listen.
    pub addr: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
    // Dropped after `drop` below killed the process.
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (modelgate admin addresses, job
    /// `modelgate`) every second with `rules` loaded, evaluating every
    /// second, and waits (bounded) until it is ready.
    pub async fn start(targets: &[SocketAddr], rules: &Path) -> Self {
        let bin = tool("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("modelgate-e2e-prometheus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: modelgate\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Self {
            child,
            addr,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        };
        let started = Instant::now();
        let url = format!("http://{addr}/-/ready");
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            let ready = prometheus.http.get(&url).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "prometheus not ready within {READY_TIMEOUT:?}:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "prometheus ready on {} in {:.1} s",
            prometheus.addr,
            started.elapsed().as_secs_f64()
        );
        prometheus
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; the `data` of a `success` answer.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("GET {path} {query:?}: {body}"))
        }
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts Prometheus holds (pending and firing).
    pub async fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts", &[])
            .await
            .map(|data| data["alerts"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The value of label `name` of an alert or a series (`""` when absent).
pub fn label<'a>(item: &'a Value, name: &str) -> &'a str {
    let labels = if item["labels"].is_object() {
        &item["labels"]
    } else {
        &item["metric"]
    };
    labels[name].as_str().unwrap_or("")
}
