//! The scale-out deployment of `examples/otel-collector/loadbalanced/`, run
//! unchanged on real processes: a Collector tier with the load-balancing
//! exporter (`routing_key: service`, static resolver) in front of three
//! modelgates running the example's `modelgate.yaml` (snapshots on), and
//! one real Prometheus scraping all three (and the address a fourth takes
//! when it joins) with `examples/prometheus/rules.yml`.
//!
//! The applications are the OpenTelemetry SDK: nine services, each with a
//! baseline v1 and a candidate v2 on two endpoints, v2 six times slower in
//! five of them. What must hold: every service is judged by exactly one
//! instance (its spans all reach that one, no other has a series of it);
//! each regression fires on that instance only, and Prometheus sees every
//! alert once; an instance killed with SIGKILL and started again on its
//! snapshot directory has its alerts firing at once and Prometheus sees
//! them once again.
//!
//! Then the backend set changes twice, the tier restarted on the new list
//! each time (as a rollout of its configuration does) while the services
//! keep sending: a fourth instance joins (services move only to it), then
//! the instance judging the most regressions leaves the set (it stays up
//! and scraped, as a drained instance does until it is stopped; only its
//! services move). The test measures what happens to the moved services'
//! state: when their new owner fires, how long the old owner keeps the
//! alert, what Prometheus shows meanwhile. It prints the figures; the
//! README beside the example writes them down. Every wait is bounded.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_e2e::otelcol::Otelcol;
use modelgate_e2e::prometheus::{label, Prometheus};
use modelgate_e2e::sdk::{self, Request};
use modelgate_e2e::{eventually, free_addr, metric_sum, repo, Collector, EPHEMERAL};

use serde_json::Value;

const SERVICES: [&str; 9] = [
    "accounts", "billing", "catalog", "checkout", "delivery", "fraud", "lending", "search",
    "support",
];
const ENDPOINTS: [&str; 2] = ["/quote", "/submit"];
/// The rules a 6x slower candidate (p95 over the 150 ms SLA) fires.
const RULES: [&str; 2] = ["sla", "relative"];
/// Requests per endpoint and round: baseline, candidate.
const V1_REQUESTS: usize = 60;
const V2_REQUESTS: usize = 30;
/// `snapshot.interval` for the test (the example's 5 s, shortened).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// How long an alert may take to fire in Prometheus: the rule's `for: 15s`,
/// scrapes and evaluations every second, room for a busy machine.
const PROMETHEUS_FIRE: Duration = Duration::from_secs(60);
/// modelgate's time scales, shortened for the test (the example keeps the
/// defaults: window 5m, baseline horizon and series idle timeout 30m,
/// sequential epoch 30m). A firing alert stays firing without traffic ("no
/// traffic is no proof of a fix") until its series idles out: what a moved
/// service leaves on its old owner lasts `IDLE_TIMEOUT`.
const WINDOW: &str = "20s";
const SLOT: &str = "2s";
const IDLE_TIMEOUT: &str = "30s";
/// The applications send a round this often, all along.
const ROUND_EVERY: Duration = Duration::from_secs(2);
/// How long a backend set change is watched at most.
const MEASURE_FOR: Duration = Duration::from_secs(50);

/// Whether `service`'s candidate regressed.
fn regressed(service: &str) -> bool {
    SERVICES.iter().position(|s| *s == service).unwrap() % 2 == 0
}

/// (service, endpoint, rule, candidate): one alert.
type AlertKey = (String, String, String, String);

/// Every alert that must fire: the regressed services, both endpoints, both rules.
fn expected_alerts() -> BTreeSet<AlertKey> {
    let mut keys = BTreeSet::new();
    for service in SERVICES.iter().filter(|s| regressed(s)) {
        // Each endpoint, and the version across them ("*").
        for endpoint in ENDPOINTS.iter().copied().chain(["*"]) {
            for rule in RULES {
                keys.insert((
                    (*service).to_owned(),
                    endpoint.to_owned(),
                    rule.to_owned(),
                    "v2".to_owned(),
                ));
            }
        }
    }
    keys
}

fn example(file: &str) -> PathBuf {
    repo()
        .join("examples/otel-collector/loadbalanced")
        .join(file)
}

/// One modelgate of the deployment and its own snapshot directory.
struct Instance {
    modelgate: Collector,
    snapshots: tempfile::TempDir,
}

impl Instance {
    /// A new instance with a snapshot directory of its own, on `listen`.
    async fn start_at(listen: [SocketAddr; 3]) -> Self {
        let snapshots = tempfile::tempdir().unwrap();
        let modelgate = Self::run(listen, &snapshots).await;
        Self {
            modelgate,
            snapshots,
        }
    }

    async fn run(listen: [SocketAddr; 3], snapshots: &tempfile::TempDir) -> Collector {
        let env = env(snapshots);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Collector::start_at(listen, &env).await
    }

    /// Kills it with SIGKILL (no last snapshot) and starts it again on the
    /// same addresses and snapshot directory.
    async fn kill9_and_restart(self) -> Self {
        let Self {
            modelgate,
            snapshots,
        } = self;
        let listen = modelgate.listen();
        modelgate.kill9().await;
        Self {
            modelgate: Self::run(listen, &snapshots).await,
            snapshots,
        }
    }
}

fn env(snapshots: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    vec![
        (
            "MODELGATE_CONFIG",
            example("modelgate.yaml").display().to_string(),
        ),
        (
            "MODELGATE_SNAPSHOT__DIR",
            snapshots.path().display().to_string(),
        ),
        (
            "MODELGATE_SNAPSHOT__INTERVAL",
            format!("{}s", SNAPSHOT_INTERVAL.as_secs()),
        ),
        ("MODELGATE_AGGREGATE__WINDOW", WINDOW.to_owned()),
        ("MODELGATE_AGGREGATE__SLOT", SLOT.to_owned()),
        (
            "MODELGATE_AGGREGATE__BASELINE_HORIZON",
            IDLE_TIMEOUT.to_owned(),
        ),
        (
            "MODELGATE_AGGREGATE__SERIES_IDLE_TIMEOUT",
            IDLE_TIMEOUT.to_owned(),
        ),
        (
            "MODELGATE_JUDGE__SEQUENTIAL__EPOCH",
            IDLE_TIMEOUT.to_owned(),
        ),
    ]
}

/// The tier: the example's collector.yaml routing to `backends` (gRPC).
async fn start_tier(listen: SocketAddr, backends: &[&Instance]) -> Otelcol {
    let list: Vec<String> = backends
        .iter()
        .map(|b| b.modelgate.grpc.to_string())
        .collect();
    Otelcol::start(
        &example("collector.yaml"),
        &[
            ("MODELGATE_BACKENDS", &format!("[{}]", list.join(", "))),
            ("OTLP_GRPC_ENDPOINT", &listen.to_string()),
            ("OTLP_HTTP_ENDPOINT", &free_addr().to_string()),
            ("OTELCOL_METRICS_PORT", &free_addr().port().to_string()),
        ],
    )
    .await
}

/// One round of traffic through the tier: every service, through its own
/// SDK (an application), both endpoints, v1 then v2. Returns the spans sent.
async fn send_round(tier: SocketAddr) -> usize {
    let endpoint = format!("http://{tier}");
    let mut sent = 0;
    for service in SERVICES {
        let slow = regressed(service);
        let mut requests = Vec::new();
        for route in ENDPOINTS {
            for i in 0..V1_REQUESTS {
                requests.push(Request::new(route, "v1", 50 + (i % 20) as u64));
            }
            for i in 0..V2_REQUESTS {
                let ms = if slow {
                    300 + (i % 120) as u64
                } else {
                    50 + (i % 20) as u64
                };
                requests.push(Request::new(route, "v2", ms));
            }
        }
        sdk::export_spans(&endpoint, service, &requests).await;
        sent += requests.len();
    }
    sent
}

/// The applications, sending a round every [`ROUND_EVERY`] until dropped;
/// [`Traffic::pause`] holds them (e.g. while the tier restarts).
struct Traffic {
    gate: Arc<tokio::sync::Mutex<()>>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(tier: SocketAddr) -> Self {
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let sent = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (gate, sent) = (gate.clone(), sent.clone());
            async move {
                loop {
                    {
                        let _open = gate.lock().await;
                        let n = send_round(tier).await;
                        sent.fetch_add(n, Ordering::Relaxed);
                    }
                    tokio::time::sleep(ROUND_EVERY).await;
                }
            }
        });
        Self { gate, sent, task }
    }

    /// No round runs while the guard lives.
    async fn pause(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// Spans sent so far, in whole rounds.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The services an instance has series of, with when each was last seen
/// (unix ms, the latest of its versions).
async fn services_of(modelgate: &Collector) -> BTreeMap<String, i64> {
    let json = modelgate.json("/api/v1/versions").await;
    let mut services = BTreeMap::new();
    for endpoint in json["endpoints"].as_array().into_iter().flatten() {
        let service = endpoint["service"].as_str().unwrap_or_default().to_owned();
        for version in endpoint["versions"].as_array().into_iter().flatten() {
            let last = &version["last_seen_unix_ms"];
            let last = last
                .as_i64()
                .or_else(|| last.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0);
            let entry = services.entry(service.clone()).or_insert(0);
            *entry = (*entry).max(last);
        }
    }
    services
}

/// The alerts an instance has firing.
async fn firing_of(modelgate: &Collector) -> BTreeSet<AlertKey> {
    let json = modelgate.json("/api/v1/regressions").await;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    json["regressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "ALERT_STATE_FIRING")
        .map(|r| {
            (
                s(&r["service"]),
                s(&r["endpoint"]),
                s(&r["rule"]),
                s(&r["candidate_version"]),
            )
        })
        .collect()
}

/// The firing alerts of every instance, by instance.
async fn firing(instances: &[Instance]) -> Vec<BTreeSet<AlertKey>> {
    let mut all = Vec::new();
    for instance in instances {
        all.push(firing_of(&instance.modelgate).await);
    }
    all
}

/// `ModelgateRegression` alerts firing in Prometheus: how many times each
/// key is seen, and from which scrape targets.
async fn prometheus_firing(prometheus: &Prometheus) -> BTreeMap<AlertKey, Vec<String>> {
    let mut seen: BTreeMap<AlertKey, Vec<String>> = BTreeMap::new();
    for alert in prometheus.alerts().await {
        // The critical alert of each regression: what pages (its warning
        // fires beside it).
        if label(&alert, "alertname") != "ModelgateRegression"
            || alert["state"] != "firing"
            || label(&alert, "severity") != "critical"
        {
            continue;
        }
        let key = (
            label(&alert, "service_name").to_owned(),
            label(&alert, "endpoint").to_owned(),
            label(&alert, "rule").to_owned(),
            label(&alert, "candidate_version").to_owned(),
        );
        seen.entry(key)
            .or_default()
            .push(label(&alert, "instance").to_owned());
    }
    seen
}

/// Waits (bounded) until Prometheus sees every expected alert firing
/// exactly once, from its service's instance (`owner_of`: admin address).
async fn prometheus_sees_each_once(
    prometheus: &Prometheus,
    owner_of: &BTreeMap<String, SocketAddr>,
) {
    let check = || async {
        let seen = prometheus_firing(prometheus).await;
        let keys: BTreeSet<AlertKey> = seen.keys().cloned().collect();
        if keys != expected_alerts() {
            return Err(format!("firing in Prometheus: {seen:?}"));
        }
        for (key, instances) in &seen {
            let owner = owner_of[&key.0].to_string();
            if instances != &vec![owner.clone()] {
                return Err(format!("{key:?} seen from {instances:?}, owner {owner}"));
            }
        }
        Ok(())
    };
    let once = eventually(PROMETHEUS_FIRE, || async { check().await.ok() }).await;
    assert!(once.is_some(), "{:?}", check().await);
}

/// Each service's owner: the one instance that received its spans since
/// `since_ms` (unix ms), once every service has sent some (bounded wait).
async fn owners(instances: &[Instance], since_ms: i64) -> BTreeMap<String, usize> {
    let seen = || async {
        let mut on: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, instance) in instances.iter().enumerate() {
            for (service, last) in services_of(&instance.modelgate).await {
                if last >= since_ms {
                    on.entry(service).or_default().push(i);
                }
            }
        }
        on
    };
    let all = eventually(Duration::from_secs(30), || async {
        let on = seen().await;
        (on.len() == SERVICES.len()).then_some(on)
    })
    .await;
    let Some(all) = all else {
        panic!(
            "not every service sent spans since {since_ms}: {:?}",
            seen().await
        )
    };
    all.into_iter()
        .map(|(service, on)| {
            assert_eq!(on.len(), 1, "{service} judged by instances {on:?}");
            (service, on[0])
        })
        .collect()
}

/// Restarts the tier on `backends` with the traffic paused, as a rollout
/// of its configuration does; returns it and when it took over.
async fn reroute(
    tier: Otelcol,
    tier_addr: SocketAddr,
    backends: &[&Instance],
    traffic: &Traffic,
) -> (Otelcol, Instant, i64) {
    let _paused = traffic.pause().await;
    tier.stop().await;
    let tier = start_tier(tier_addr, backends).await;
    (tier, Instant::now(), unix_ms())
}

fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

fn moved(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> BTreeSet<String> {
    before
        .iter()
        .filter(|(service, owner)| after[*service] != **owner)
        .map(|(service, _)| service.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_modelgates_behind_the_load_balancer_judge_each_service_once() {
    // Three instances, and the addresses a fourth takes when it joins.
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start_at(EPHEMERAL).await);
    }
    let spare = [free_addr(), free_addr(), free_addr()];
    let mut admins: Vec<SocketAddr> = instances.iter().map(|i| i.modelgate.admin).collect();
    admins.push(spare[2]);
    let rules = repo().join("examples/prometheus/rules.yml");
    let prometheus = Prometheus::start(&admins, &rules).await;
    let tier_addr = free_addr();
    let mut tier = start_tier(tier_addr, &instances.iter().collect::<Vec<_>>()).await;
    let started = Instant::now();
    let traffic = Traffic::start(tier_addr);

    // Every regression fires, each on one instance: the one judging its
    // service, the only one that has the service at all.
    let fired = eventually(Duration::from_secs(60), || async {
        let union: BTreeSet<AlertKey> = firing(&instances).await.into_iter().flatten().collect();
        (union == expected_alerts()).then_some(())
    })
    .await;
    assert!(
        fired.is_some(),
        "firing per instance: {:?}\nexpected: {:?}\ntier log:\n{}",
        firing(&instances).await,
        expected_alerts(),
        tier.log()
    );
    println!(
        "{} alerts firing {:.1} s after the first span",
        expected_alerts().len(),
        started.elapsed().as_secs_f64()
    );
    let owner = owners(&instances, 0).await;
    for (i, alerts) in firing(&instances).await.iter().enumerate() {
        for key in alerts {
            assert_eq!(owner[&key.0], i, "{key:?} firing on instance {i}");
        }
    }
    let per_instance: Vec<Vec<&str>> = (0..3)
        .map(|i| {
            SERVICES
                .iter()
                .copied()
                .filter(|s| owner[*s] == i)
                .collect()
        })
        .collect();
    println!("services per instance: {per_instance:?}");
    // Each span reached exactly one instance.
    {
        let _paused = traffic.pause().await;
        let sent = traffic.sent() as f64;
        let accepted = || async {
            let mut sum = 0.0;
            for instance in &instances {
                let metrics = instance.modelgate.metrics().await;
                sum += metric_sum(&metrics, "modelgate_receiver_accepted_total", &[]).unwrap();
            }
            sum
        };
        let counted = eventually(Duration::from_secs(10), || async {
            (accepted().await == sent).then_some(())
        })
        .await;
        assert!(
            counted.is_some(),
            "{sent} spans sent, {} accepted across the three",
            accepted().await
        );
    }

    // One Prometheus scraping all three sees every alert once.
    let owner_admin: BTreeMap<String, SocketAddr> =
        owner.iter().map(|(s, i)| (s.clone(), admins[*i])).collect();
    prometheus_sees_each_once(&prometheus, &owner_admin).await;
    println!(
        "Prometheus sees each of the {} alerts once, {:.1} s after the first span",
        expected_alerts().len(),
        started.elapsed().as_secs_f64()
    );

    // The instance judging the most regressions is killed (SIGKILL: no last
    // snapshot) and started again on its snapshot directory.
    let victim = (0..3)
        .max_by_key(|i| per_instance[*i].iter().filter(|s| regressed(s)).count())
        .unwrap();
    let before = firing_of(&instances[victim].modelgate).await;
    assert!(
        !before.is_empty(),
        "instance {victim} judges a regressed service"
    );
    // A snapshot taken while they fire.
    tokio::time::sleep(2 * SNAPSHOT_INTERVAL).await;
    let killed = Instant::now();
    let instance = instances.remove(victim).kill9_and_restart().await;
    let restarted_ms = unix_ms();
    let after = firing_of(&instance.modelgate).await;
    println!(
        "instance {victim} killed and started again in {} ms, its {} alerts firing at once",
        killed.elapsed().as_millis(),
        after.len()
    );
    assert_eq!(
        after, before,
        "instance {victim}'s alerts after the restart"
    );
    instances.insert(victim, instance);
    // Prometheus scrapes the new process and still sees each alert once.
    let victim_target = admins[victim].to_string();
    let scraped = eventually(Duration::from_secs(20), || async {
        let up = prometheus
            .query(&format!(
                "timestamp(up{{instance=\"{victim_target}\"}} == 1)"
            ))
            .await
            .ok()?;
        let at: f64 = up.first()?["value"][1].as_str()?.parse().ok()?;
        (at * 1e3 > restarted_ms as f64).then_some(())
    })
    .await;
    assert!(
        scraped.is_some(),
        "Prometheus does not scrape the restarted instance"
    );
    prometheus_sees_each_once(&prometheus, &owner_admin).await;
    println!(
        "Prometheus scrapes it again and sees each alert once, {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );

    // A fourth instance joins: consistent hashing moves services to it
    // only, and they start there from nothing.
    instances.push(Instance::start_at(spare).await);
    let (changed, changed_ms);
    (tier, changed, changed_ms) = reroute(
        tier,
        tier_addr,
        &instances.iter().collect::<Vec<_>>(),
        &traffic,
    )
    .await;
    let owner_out = owners(&instances, changed_ms).await;
    let moved_out = moved(&owner, &owner_out);
    assert!(
        moved_out.iter().all(|s| owner_out[s] == 3),
        "{owner:?} -> {owner_out:?}"
    );
    println!(
        "3 -> 4 instances: {} of {} services moved, all to the new one: {moved_out:?}",
        moved_out.len(),
        SERVICES.len(),
    );
    let measured = watch_moved(
        &instances,
        &moved_out,
        &owner,
        &owner_out,
        &admins,
        &prometheus,
        changed,
    )
    .await;
    println!("  {measured}");

    // The instance judging the most regressions leaves the set (up and
    // scraped still, as when it is drained): its services, and only they,
    // move.
    let leaving = (0..4)
        .max_by_key(|i| {
            SERVICES
                .iter()
                .filter(|s| regressed(s) && owner_out[**s] == *i)
                .count()
        })
        .unwrap();
    let remaining: Vec<&Instance> = instances
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaving)
        .map(|(_, instance)| instance)
        .collect();
    let (changed, changed_ms);
    (tier, changed, changed_ms) = reroute(tier, tier_addr, &remaining, &traffic).await;
    let owner_in = owners(&instances, changed_ms).await;
    let moved_in = moved(&owner_out, &owner_in);
    let its: BTreeSet<String> = SERVICES
        .iter()
        .filter(|s| owner_out[**s] == leaving)
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(moved_in, its, "{owner_out:?} -> {owner_in:?}");
    println!(
        "4 -> 3 instances: instance {leaving} leaves, its {} services move: {moved_in:?}",
        moved_in.len(),
    );
    let measured = watch_moved(
        &instances,
        &moved_in,
        &owner_out,
        &owner_in,
        &admins,
        &prometheus,
        changed,
    )
    .await;
    println!("  {measured}");
    // Their new owners judge them from scratch, to the same verdicts; the
    // old owner's alerts go once the series idle out; then Prometheus sees
    // each once again.
    assert!(
        measured.watched > 0,
        "instance {leaving} judged regressions"
    );
    assert!(measured.settled.is_some(), "{measured}");
    drop(traffic);
    tier.stop().await;
}

/// What became of the alerts of services that moved, in time since the
/// backend set changed.
#[derive(Debug, Default)]
struct Moved {
    /// How many alerts moved (those of the regressed services that moved).
    watched: usize,
    /// Every watched alert firing on its new owner.
    new_owner_fires: Option<Duration>,
    /// None of them firing on the old owner any more.
    old_owner_clears: Option<Duration>,
    /// Prometheus: the first firing alert from a new owner.
    prometheus_new: Option<Duration>,
    /// Prometheus: none firing from the old owner any more.
    prometheus_old_gone: Option<Duration>,
    /// Prometheus: some watched alert firing from both, first and last seen.
    prometheus_twice: Option<(Duration, Duration)>,
    /// Prometheus: some watched alert firing from neither, first and last
    /// seen.
    prometheus_none: Option<(Duration, Duration)>,
    /// Settled: every watched alert firing on its new owner only, and seen
    /// once in Prometheus, from there.
    settled: Option<Duration>,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |d: Option<Duration>| {
            d.map_or_else(
                || "not within the watch".to_owned(),
                |d| format!("{:.1} s", d.as_secs_f64()),
            )
        };
        let span = |s: Option<(Duration, Duration)>| {
            s.map_or_else(
                || "never".to_owned(),
                |(a, b)| format!("{:.1} s to {:.1} s", a.as_secs_f64(), b.as_secs_f64()),
            )
        };
        if self.watched == 0 {
            return write!(f, "no regressed service moved");
        }
        write!(
            f,
            "{} alerts moved; after the change (window {WINDOW}, series idle timeout \
             {IDLE_TIMEOUT}, rule for: 15s): new owners fire {}; old owners clear {}; in Prometheus the new \
             owners' alerts appear {}, the old owners' go {}; seen twice {}; seen nowhere {}; \
             settled {}",
            self.watched,
            at(self.new_owner_fires),
            at(self.old_owner_clears),
            at(self.prometheus_new),
            at(self.prometheus_old_gone),
            span(self.prometheus_twice),
            span(self.prometheus_none),
            at(self.settled),
        )
    }
}

/// Watches the alerts of the regressed services among `moved` after a
/// backend set change at `changed`: on their old and new owners and in
/// Prometheus, every half second until all settled or [`MEASURE_FOR`].
async fn watch_moved(
    instances: &[Instance],
    moved: &BTreeSet<String>,
    old: &BTreeMap<String, usize>,
    new: &BTreeMap<String, usize>,
    admins: &[SocketAddr],
    prometheus: &Prometheus,
    changed: Instant,
) -> Moved {
    let watched: Vec<AlertKey> = expected_alerts()
        .into_iter()
        .filter(|k| moved.contains(&k.0))
        .collect();
    let mut m = Moved {
        watched: watched.len(),
        ..Moved::default()
    };
    if watched.is_empty() {
        return m;
    }
    let widen = |span: &mut Option<(Duration, Duration)>, at: Duration| {
        *span = Some(span.map_or((at, at), |(a, _)| (a, at)));
    };
    while changed.elapsed() < MEASURE_FOR {
        let at = changed.elapsed();
        let firing = firing(instances).await;
        let on =
            |owner: &BTreeMap<String, usize>, key: &AlertKey| firing[owner[&key.0]].contains(key);
        if m.new_owner_fires.is_none() && watched.iter().all(|k| on(new, k)) {
            m.new_owner_fires = Some(at);
        }
        if m.old_owner_clears.is_none() && watched.iter().all(|k| !on(old, k)) {
            m.old_owner_clears = Some(at);
        }
        let seen = prometheus_firing(prometheus).await;
        let from = |key: &AlertKey| seen.get(key).cloned().unwrap_or_default();
        let target =
            |owner: &BTreeMap<String, usize>, key: &AlertKey| admins[owner[&key.0]].to_string();
        if m.prometheus_new.is_none() && watched.iter().any(|k| from(k).contains(&target(new, k))) {
            m.prometheus_new = Some(at);
        }
        if m.prometheus_old_gone.is_none()
            && watched.iter().all(|k| !from(k).contains(&target(old, k)))
        {
            m.prometheus_old_gone = Some(at);
        }
        if watched.iter().any(|k| from(k).len() > 1) {
            widen(&mut m.prometheus_twice, at);
        }
        if watched.iter().any(|k| from(k).is_empty()) {
            widen(&mut m.prometheus_none, at);
        }
        let settled = m.new_owner_fires.is_some()
            && m.old_owner_clears.is_some()
            && watched.iter().all(|k| from(k) == vec![target(new, k)]);
        if settled {
            m.settled = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    m
}
