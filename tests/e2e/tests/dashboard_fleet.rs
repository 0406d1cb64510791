//! The dashboard at fleet size, in a real browser: the release binary fed
//! 100 services x 5 endpoints x 2 versions (1,000 series, [`fleet`]) while
//! headless Chromium, driven over the Chrome DevTools protocol, loads `/`.
//!
//! It checks what an on-call engineer relies on at that size: services
//! grouped by severity with regressions first (the five critical services,
//! then the ten warnings, in order), the search box narrowing the list and
//! landing in the address, a selection opened from an address (as an
//! alert's link opens it) and a click selecting a service; the history
//! sent gzip-compressed, in full on the first load and only the new points
//! on each refresh after it. It prints the page's transfer per refresh and
//! its render time (BENCHMARKS.md, "Dashboard at 100 services").
//!
//! The DevTools client is the few lines below over `tokio-tungstenite`:
//! the test needs six protocol methods and three events, and the crates
//! that wrap the whole protocol (`chromiumoxide`, `headless_chrome`) would
//! compile its generated bindings, minutes on this 2-core CI, for them.
//!
//! `DASHBOARD_FILL_SECONDS=<n>` lets the history grow for `n` more seconds
//! before the page opens (360 fills the default ring of
//! `admin.history_points`: the figures of a page opened on a collector that
//! has run a while); by default it opens as soon as the fleet is judged.
//!
//! Chromium comes from `scripts/install-test-deps`. Where it is missing the
//! test fails naming that script, unless Debian offers no Chromium package
//! on this machine at all: then it prints that it is skipped, and why.
//! Every wait is bounded; the browser runs in its own process group and is
//! killed with it; its profile directory is removed.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use modelgate_e2e::fleet::{self, Fleet, Health};
use modelgate_e2e::{eventually, Collector, CHROMIUM, CHROMIUM_HEADLESS};

const SERVICES: usize = 100;
const ENDPOINTS: usize = 5;
/// The page's refresh period (dashboard.js `REFRESH_MS`).
const REFRESH: Duration = Duration::from_secs(3);
/// Refreshes measured after the first load.
const REFRESHES: usize = 3;
const JUDGED_TIMEOUT: Duration = Duration::from_secs(90);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether Debian offers Chromium here (`apt-cache policy` names a
/// candidate); `None` without apt at all.
fn chromium_installable() -> Option<bool> {
    let out = std::process::Command::new("apt-cache")
        .args(["policy", "chromium"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)")),
    )
}

/// A fresh directory, removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "modelgate-dashboard-fleet-{}-{}",
            std::process::id(),
            fleet::now_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium with a DevTools port; its process group is killed on
/// drop.
struct Browser {
    child: tokio::process::Child,
    /// `ws://127.0.0.1:<port>/devtools/browser/<id>`.
    ws: String,
    _profile: TempDir,
}

impl Browser {
    async fn start() -> Self {
        let profile = TempDir::new();
        let mut child = tokio::process::Command::new(CHROMIUM)
            .args(CHROMIUM_HEADLESS)
            .args([
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let ws = tokio::time::timeout(STEP_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    return Some(ws.trim().to_owned());
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("chromium printed no DevTools address:\n{seen}"));
        // Keep reading its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            ws,
            _profile: profile,
        }
    }

    /// The DevTools WebSocket of the page Chromium opened.
    async fn page_socket(&self) -> String {
        let port = self
            .ws
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .unwrap()
            .to_owned();
        let list: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {list}"))
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol session on one page: commands answered in order,
/// events kept until taken.
struct Cdp {
    socket: Socket,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("DevTools {url}: {e}"));
        Self {
            socket,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Reads one message into `events`, or returns it if it answers `id`.
    async fn read(&mut self, id: Option<u64>) -> Option<Value> {
        let message = tokio::time::timeout(STEP_TIMEOUT, self.socket.next())
            .await
            .expect("DevTools message within the step timeout")
            .expect("DevTools socket open")
            .expect("DevTools message");
        let Message::Text(text) = message else {
            return None;
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if id.is_some() && value["id"].as_u64() == id {
            return Some(value);
        }
        if value.get("method").is_some() {
            self.events.push(value);
        }
        None
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(request)).await.unwrap();
        loop {
            if let Some(answer) = self.read(Some(id)).await {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// `expression`'s value in the page (awaited if a promise).
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true`, within `limit`.
    async fn until(&mut self, expression: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(expression).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not true within {limit:?}: {expression}");
    }

    /// Reads events for `time`.
    async fn listen(&mut self, time: Duration) {
        let end = tokio::time::Instant::now() + time;
        while tokio::time::timeout_at(end, self.read(None)).await.is_ok() {}
    }

    async fn navigate(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({ "url": url })).await;
    }
}

/// One fetch the page made: its URL, wire bytes (headers and the gzip
/// body), decoded body bytes and content encoding.
#[derive(Debug)]
struct Fetch {
    url: String,
    wire: u64,
    body: u64,
    encoding: String,
}

/// The page's finished fetches among `events`, in order.
fn fetches(events: &[Value]) -> Vec<Fetch> {
    let mut found: Vec<(String, Fetch)> = Vec::new();
    for e in events {
        let p = &e["params"];
        let id = p["requestId"].as_str().unwrap_or_default().to_owned();
        match e["method"].as_str() {
            Some("Network.responseReceived") => {
                let headers = &p["response"]["headers"];
                let encoding = headers
                    .as_object()
                    .and_then(|h| {
                        h.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-encoding"))
                    })
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or("identity")
                    .to_owned();
                found.push((
                    id,
                    Fetch {
                        url: p["response"]["url"].as_str().unwrap_or_default().to_owned(),
                        wire: 0,
                        body: 0,
                        encoding,
                    },
                ));
            }
            Some("Network.dataReceived") => {
                if let Some((_, f)) = found.iter_mut().find(|(i, _)| *i == id) {
                    f.body += p["dataLength"].as_u64().unwrap_or(0);
                }
            }
            Some("Network.loadingFinished") => {
                if let Some((_, f)) = found.iter_mut().find(|(i, _)| *i == id) {
                    f.wire = p["encodedDataLength"].as_f64().unwrap_or(0.0) as u64;
                }
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f.wire > 0)
        .collect()
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_at_100_services_and_1000_series() {
    if !Path::new(CHROMIUM).is_file() {
        match chromium_installable() {
            Some(true) => panic!(
                "{CHROMIUM} is missing but Debian offers it here: run scripts/install-test-deps"
            ),
            _ => {
                eprintln!(
                    "SKIPPED dashboard_at_100_services_and_1000_series: {CHROMIUM} is missing and \
                     this machine's package manager offers no Chromium to install \
                     (scripts/install-test-deps installs it where Debian does)"
                );
                return;
            }
        }
    }

    let collector = Collector::start(&[]).await;
    let fleet = Fleet {
        services: SERVICES,
        endpoints: ENDPOINTS,
        per_series: 12,
        outcomes: 1,
    };
    assert_eq!(fleet.series(), 1000);
    // A round a second for the whole test: the history grows while the
    // page is open, as it does in production.
    let feeder = {
        let grpc = collector.grpc_url();
        tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(grpc)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(channel)
                .max_encoding_message_size(16 << 20);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for round in 0..600 {
                tick.tick().await;
                for request in fleet.round(round, fleet::now_nanos(), 5_000) {
                    client.export(request).await.expect("export accepted");
                }
            }
        })
    };

    // The judge has found what the fleet holds: five critical services
    // and ten warnings, every one on its candidate.
    let history = eventually(JUDGED_TIMEOUT, || async {
        let h = collector.json("/api/v1/history").await;
        let firing = |severity: &str| {
            let mut services: Vec<String> = h["active"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["severity"] == severity)
                .map(|r| r["service"].as_str().unwrap().to_owned())
                .collect();
            services.sort();
            services.dedup();
            services.len()
        };
        let series: usize = h["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["versions"].as_array().unwrap().len())
            .sum();
        (series == 1000
            && firing("critical") == fleet::CRITICAL
            && firing("warning") >= fleet::WARNING)
            .then_some(h)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "fleet not judged within {JUDGED_TIMEOUT:?}; log:\n{}",
            collector.log()
        )
    });
    // The API itself: `since` keeps only newer points; a bad one is named.
    let newest = history["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["versions"].as_array().unwrap())
        .filter_map(|v| v["points"].as_array().unwrap().last())
        .map(|p| p["unix_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let newer = collector
        .json(&format!("/api/v1/history?since={}", newest - 1))
        .await;
    assert_eq!(newer["since_unix_ms"], json!(newest - 1));
    let mut kept = 0;
    for v in newer["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["versions"].as_array().unwrap())
    {
        for p in v["points"].as_array().unwrap() {
            assert!(p["unix_ms"].as_u64().unwrap() >= newest, "{p}");
            kept += 1;
        }
    }
    assert!(
        (1000..=3000).contains(&kept),
        "{kept} points newer than {newest}"
    );
    let (status, body) = collector.get("/api/v1/history?since=soon").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("since"), "{body}");
    assert!(
        history["verdicts"].as_array().unwrap().iter().any(|v| {
            v["service"] == "svc-000"
                && v["candidate_version"] == "v2"
                && v["verdict"] == "regression"
        }),
        "{}",
        history["verdicts"]
    );

    let fill = std::env::var("DASHBOARD_FILL_SECONDS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("DASHBOARD_FILL_SECONDS: whole seconds")
        })
        .unwrap_or(0);
    assert!(
        fill <= 480,
        "DASHBOARD_FILL_SECONDS: the feeder runs 10 minutes"
    );
    tokio::time::sleep(Duration::from_secs(fill)).await;
    let history = if fill > 0 {
        collector.json("/api/v1/history").await
    } else {
        history
    };
    let full_json = serde_json::to_vec(&history).unwrap().len();

    let browser = Browser::start().await;
    let mut page = Cdp::connect(&browser.page_socket().await).await;
    page.call("Network.enable", json!({})).await;
    page.call("Page.enable", json!({})).await;
    page.call("Network.setCacheDisabled", json!({ "cacheDisabled": true }))
        .await;
    let base = format!("http://{}/", collector.admin);

    // First load: the page, its assets and the whole history.
    page.navigate(&base).await;
    page.until(
        "document.querySelectorAll('tr.service-row').length === 100",
        STEP_TIMEOUT,
    )
    .await;
    page.listen(Duration::from_millis(300)).await;
    let first = fetches(&page.events);
    let first_history: Vec<&Fetch> = first
        .iter()
        .filter(|f| f.url.contains("/api/v1/history"))
        .collect();
    assert_eq!(first_history.len(), 1, "{first:?}");
    assert!(
        !first_history[0].url.contains("since="),
        "the first load asks for everything: {first:?}"
    );
    assert_eq!(first_history[0].encoding, "gzip", "{first:?}");
    let first_wire: u64 = first.iter().map(|f| f.wire).sum();
    let first_render = page
        .eval("performance.getEntriesByName('modelgate-render')[0].duration")
        .await
        .as_f64()
        .unwrap();
    let first_ready = page
        .eval(
            "(() => { const m = performance.getEntriesByName('modelgate-render')[0]; \
             return m.startTime + m.duration; })()",
        )
        .await
        .as_f64()
        .unwrap();

    // Grouping: severities in order, regressions first, exactly the
    // fleet's critical and warning services at the top.
    let rows = page
        .eval("[...document.querySelectorAll('tr.service-row')].map(r => [r.dataset.service, r.dataset.severity])")
        .await;
    let rows: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rank = |s: &str| {
        ["critical", "warning", "inconclusive", "pass"]
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("severity {s}"))
    };
    assert!(
        rows.windows(2).all(|w| rank(&w[0].1) <= rank(&w[1].1)),
        "not sorted by severity: {rows:?}"
    );
    for (i, (service, severity)) in rows.iter().enumerate() {
        let index: usize = service.trim_start_matches("svc-").parse().unwrap();
        let want = match fleet::health(index) {
            Health::Critical => "critical",
            Health::Warning => "warning",
            Health::Inconclusive | Health::Pass => continue,
        };
        assert_eq!(severity, want, "row {i}: {rows:?}");
    }
    assert!(
        rows[..fleet::CRITICAL].iter().all(|(_, s)| s == "critical"),
        "{rows:?}"
    );
    for (service, severity) in &rows {
        let index: usize = service.trim_start_matches("svc-").parse().unwrap();
        if fleet::health(index) == Health::Inconclusive {
            assert_eq!(severity, "inconclusive", "{service}: {rows:?}");
        }
    }

    // Incremental refreshes: only points after the newest held, gzip.
    page.events.clear();
    let renders_before = page
        .eval("performance.getEntriesByName('modelgate-render').length")
        .await
        .as_u64()
        .unwrap();
    page.listen(REFRESH * REFRESHES as u32 + Duration::from_millis(500))
        .await;
    let refreshes: Vec<Fetch> = fetches(&page.events)
        .into_iter()
        .filter(|f| f.url.contains("/api/v1/history"))
        .collect();
    assert!(refreshes.len() >= REFRESHES, "{refreshes:?}");
    for f in &refreshes {
        assert!(
            f.url.contains("?since="),
            "a refresh asks for new points only: {f:?}"
        );
        assert_eq!(f.encoding, "gzip", "{f:?}");
    }
    let renders: Vec<f64> = page
        .eval("performance.getEntriesByName('modelgate-render').map(m => m.duration)")
        .await
        .as_array()
        .unwrap()
        .iter()
        .skip(renders_before as usize)
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(!renders.is_empty());
    // What the refreshes merged is drawn: a click selects a service, its
    // five endpoints charted with both versions' lines, the address set.
    page.eval("document.querySelector('tr.service-row[data-service=\"svc-042\"]').click()")
        .await;
    page.until(
        "location.search === '?service=svc-042' && \
         document.querySelectorAll('article.endpoint').length === 5 && \
         [...document.querySelectorAll('article.endpoint')].every(a => \
           a.querySelectorAll('svg.chart')[0].querySelectorAll('path').length === 2)",
        STEP_TIMEOUT,
    )
    .await;
    // Back: the whole fleet again.
    page.eval("history.back()").await;
    page.until(
        "location.search === '' && document.querySelectorAll('tr.service-row').length === 100",
        STEP_TIMEOUT,
    )
    .await;

    // Search: one service left, in the address.
    page.eval(
        "(() => { const s = document.getElementById('search'); s.value = 'svc-007'; \
         s.dispatchEvent(new Event('input')); })()",
    )
    .await;
    page.until(
        "document.querySelectorAll('tr.service-row').length === 1 && \
         document.querySelector('tr.service-row').dataset.service === 'svc-007' && \
         location.search === '?q=svc-007'",
        STEP_TIMEOUT,
    )
    .await;

    // A selection opened from its address, as an alert links to it.
    page.navigate(&format!(
        "{base}?service=svc-001&endpoint=%2Fapi%2Fop2&version=v2"
    ))
    .await;
    page.until(
        "document.querySelectorAll('article.endpoint').length === 1 && \
         document.querySelector('article.endpoint').dataset.service === 'svc-001' && \
         document.querySelector('article.endpoint').dataset.endpoint === '/api/op2' && \
         document.querySelector('article.endpoint svg') !== null && \
         document.querySelector('table.versions tr.selected').dataset.version === 'v2' && \
         document.querySelector('tr.service-row.selected').dataset.service === 'svc-001' && \
         document.querySelector('#active .alert-group') !== null && \
         [...document.querySelectorAll('#active .alert-group')].every(g => g.dataset.service === 'svc-001')",
        STEP_TIMEOUT,
    )
    .await;

    let refresh_wire: Vec<u64> = refreshes.iter().map(|f| f.wire).collect();
    let refresh_body: Vec<u64> = refreshes.iter().map(|f| f.body).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "dashboard at {SERVICES} services / {} series, {} points per series held:",
        fleet.series(),
        history["endpoints"][0]["versions"][0]["points"]
            .as_array()
            .unwrap()
            .len()
    );
    println!(
        "  first load: {} transferred (page, assets, history); history {} gzip of {} JSON (the API's full answer was {}); \
         render {first_render:.1} ms; data drawn {first_ready:.0} ms after navigation start",
        kib(first_wire),
        kib(first_history[0].wire),
        kib(first_history[0].body),
        kib(full_json as u64),
    );
    println!(
        "  per refresh ({} refreshes, every {REFRESH:?}): history {} transferred ({} JSON), render {} ms (mean {:.1} ms)",
        refreshes.len(),
        refresh_wire.iter().map(|b| kib(*b)).collect::<Vec<_>>().join(", "),
        refresh_body.iter().map(|b| kib(*b)).collect::<Vec<_>>().join(", "),
        renders.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(", "),
        mean(&renders),
    );

    feeder.abort();
    drop(page);
    drop(browser);
    collector.stop().await;
}
