//! `modelgate gate`: a release gate for CI/CD pipelines. It asks a running
//! collector for its verdict on a candidate version, waits (bounded) for
//! enough traffic, prints the verdict with its evidence and maps it to an
//! exit code: 0 pass, 1 regression (at `--fail-on` severity: critical by
//! default, or warning too), 2 inconclusive, and for a gate that
//! got no verdict at all the code of what to fix ([`crate::exit`]): 64 a
//! bad flag or a refused override, 69 no collector's gRPC API at `--url`
//! (down, TLS failed, or the admin port), 77 credentials refused, 78 an
//! unreadable token or certificate file.
//!
//! It must never judge by itself: every outcome and figure it prints comes
//! from the collector's judge. Thresholds the gate overrides (`--sla`,
//! `--min-samples`) travel in the request and are applied by the collector
//! to a copy of its own configuration. It never changes the collector's
//! state, never waits longer than `--wait` (plus one bounded call), and
//! never turns "could not tell" into a pass, nor a broken setup into
//! "inconclusive": too little traffic, an unknown candidate and one without
//! a baseline are inconclusive, an unreachable collector is a connection
//! error. A regression milder than `--fail-on` exits 0 but is printed as
//! one (`WARNING`), and only once `--wait` is over: it may still grow into a
//! critical one while traffic comes in.
//!
//! It speaks gRPC (`modelgate.v1.Query/GetVerdict`, the OTLP port) rather
//! than the admin port's JSON: the generated client is already in the
//! binary (no HTTP client added), the messages are typed, and a refused
//! argument (INVALID_ARGUMENT) is told apart from an unreachable collector
//! by its status code instead of by parsing bodies. TLS, the token and
//! client certificates are [`crate::client`]'s; the gate reads no `OTEL_*`
//! variable (they describe a job's own telemetry, not this collector).

use std::future::Future;
use std::time::Duration;

use modelgate_collector::judge::Severity;
use modelgate_collector::query::api::severity_of;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;
use tokio::time::Instant;

use crate::client::{normalize_url, ClientError, ClientOptions, GrpcOnly};
use crate::exit::Exit;

pub mod render;

/// The collector's gRPC address when `--url` is not given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:4317";

/// How often the gate asks again while the verdict is inconclusive.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The longest one question may take (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest time one question is given, even when `--wait` is spent.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What to ask the collector, and how long to keep asking.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOptions {
    /// The collector's gRPC URL (`http://host:port`, `https://` for TLS).
    pub url: String,
    /// `service.name` of the service released.
    pub service: String,
    /// The version under test.
    pub candidate: String,
    /// Compare with this version; `None`: the collector's baseline.
    pub baseline: Option<String>,
    /// Judge only this endpoint; `None`: every endpoint of the candidate.
    pub endpoint: Option<String>,
    /// The SLA limit to hold the candidate to, instead of the collector's.
    pub sla: Option<Duration>,
    /// Requests needed per rule, instead of the collector's `min_samples`.
    pub min_samples: Option<u64>,
    /// The mildest regression that fails the gate: critical (the default,
    /// what the edge filter rolls back on) or warning.
    pub fail_on: Severity,
    /// How long to keep asking while the verdict is inconclusive.
    pub wait: Duration,
    /// Time between two questions.
    pub poll_interval: Duration,
    /// TLS trust, client certificate and token.
    pub client: ClientOptions,
}

impl GateOptions {
    /// The verdict request these options make.
    pub fn request(&self) -> pb::GetVerdictRequest {
        pb::GetVerdictRequest {
            service: self.service.clone(),
            candidate_version: self.candidate.clone(),
            endpoint: self.endpoint.clone().unwrap_or_default(),
            baseline_version: self.baseline.clone().unwrap_or_default(),
            sla_limit_ms: self.sla.map(|d| d.as_secs_f64() * 1e3),
            min_samples: self.min_samples,
        }
    }
}

/// What the gate concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every rule on every endpoint is clear.
    Pass,
    /// Some rule on some endpoint breached (or its alert is firing) at
    /// `--fail-on` severity or worse.
    Regression,
    /// A regression milder than `--fail-on` (a warning under the default):
    /// reported, not failing.
    Warning,
    /// Not enough evidence within the wait, or the candidate is unknown (a
    /// collector that could not be asked is a [`ClientError`], not this).
    Inconclusive,
}

impl Decision {
    /// The exit code: 0 pass (or a regression below `--fail-on`), 1
    /// regression, 2 inconclusive.
    pub const fn exit(self) -> Exit {
        match self {
            Decision::Pass | Decision::Warning => Exit::Ok,
            Decision::Regression => Exit::Regression,
            Decision::Inconclusive => Exit::Inconclusive,
        }
    }

    /// `pass`, `regression` or `inconclusive`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Regression => "regression",
            Decision::Warning => "warning",
            Decision::Inconclusive => "inconclusive",
        }
    }

    /// The gate's reading of a verdict's outcome when `fail_on` is the
    /// mildest regression that fails it. A regression of unknown severity
    /// (an older collector) fails.
    pub fn of(verdict: &pb::Verdict, fail_on: Severity) -> Self {
        if verdict.endpoints.is_empty() {
            return Decision::Inconclusive;
        }
        match pb::VerdictOutcome::try_from(verdict.outcome) {
            Ok(pb::VerdictOutcome::Pass) => Decision::Pass,
            Ok(pb::VerdictOutcome::Regression) => {
                let severity = pb::Severity::try_from(verdict.severity)
                    .ok()
                    .and_then(severity_of)
                    .unwrap_or(Severity::Critical);
                if severity >= fail_on {
                    Decision::Regression
                } else {
                    Decision::Warning
                }
            }
            _ => Decision::Inconclusive,
        }
    }

    /// Whether asking again cannot change the answer: a pass (it has the
    /// power) or a failing regression. A warning may still become critical.
    const fn is_final(self) -> bool {
        matches!(self, Decision::Pass | Decision::Regression)
    }
}

/// The last verdict the gate read and what it made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    /// The conclusion.
    pub decision: Decision,
    /// Why it is inconclusive; `None` otherwise.
    pub reason: Option<String>,
    /// The collector's verdict, as received.
    pub verdict: pb::Verdict,
    /// Questions asked.
    pub polls: u32,
    /// Time from the first question to the conclusion.
    pub waited: Duration,
}

/// The process exit code of a gate run: the decision's, or the failure's.
pub fn exit(result: &Result<GateReport, ClientError>) -> Exit {
    match result {
        Ok(report) => report.decision.exit(),
        Err(error) => error.exit(),
    }
}

/// Asks the collector at `options.url` until the verdict is final (a pass or
/// a regression at `options.fail_on`) or `options.wait` is over.
pub async fn run(options: &GateOptions) -> Result<GateReport, ClientError> {
    let credentials = options.client.load()?;
    let url = normalize_url(&options.url)?;
    let endpoint = credentials.endpoint(&url)?;
    let client = QueryClient::new(GrpcOnly(
        endpoint
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy(),
    ));
    let request = options.request();
    tracing::info!(
        %url,
        service = %options.service,
        candidate = %options.candidate,
        wait_s = options.wait.as_secs_f64(),
        "asking the collector for a verdict"
    );
    let (credentials, url) = (&credentials, url.as_str());
    poll(
        || {
            let mut client = client.clone();
            let request = credentials.request(request.clone());
            async move {
                match client.get_verdict(request).await {
                    Ok(answer) => Ok(answer.into_inner()),
                    Err(status) => {
                        let error =
                            ClientError::from_status(&status, url, credentials.sends_token());
                        Err(credentials.explain(error, url).await)
                    }
                }
            }
        },
        options,
    )
    .await
}

/// The polling loop of [`run`], with the question as a parameter: asks until
/// the verdict is final, a refusal comes back, or
/// `options.wait` is over (each question bounded too). Transport errors are
/// retried within the wait (the collector may be restarting with the
/// release).
pub async fn poll<F, Fut>(mut ask: F, options: &GateOptions) -> Result<GateReport, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<pb::Verdict, ClientError>>,
{
    let (wait, interval) = (options.wait, options.poll_interval);
    let started = Instant::now();
    let deadline = started + wait;
    let mut polls = 0;
    let mut last_verdict = None;
    let mut last_error = None;
    loop {
        polls += 1;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .clamp(MIN_CALL_TIMEOUT, CALL_TIMEOUT);
        let answer = match tokio::time::timeout(budget, ask()).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Unreachable {
                url: options.url.clone(),
                message: format!("no answer within {}", humantime::format_duration(budget)),
            }),
        };
        match answer {
            Ok(verdict) => {
                let decision = Decision::of(&verdict, options.fail_on);
                tracing::debug!(polls, decision = decision.as_str(), "verdict");
                if decision.is_final() {
                    return Ok(GateReport {
                        decision,
                        reason: None,
                        verdict,
                        polls,
                        waited: started.elapsed(),
                    });
                }
                last_verdict = Some(verdict);
            }
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => {
                tracing::debug!(polls, %error, "no verdict yet");
                last_error = Some(error);
            }
        }
        if Instant::now() + interval > deadline {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    match (last_verdict, last_error) {
        (Some(verdict), _) => {
            let decision = Decision::of(&verdict, options.fail_on);
            let reason = (decision == Decision::Inconclusive)
                .then(|| inconclusive_reason(&verdict, &options.service, &options.candidate, wait));
            Ok(GateReport {
                decision,
                reason,
                verdict,
                polls,
                waited: started.elapsed(),
            })
        }
        (None, Some(error)) => Err(error),
        (None, None) => Err(ClientError::Unreachable {
            url: options.url.clone(),
            message: "no answer".to_owned(),
        }),
    }
}

/// Why a verdict is inconclusive, in one sentence for stderr.
pub fn inconclusive_reason(
    verdict: &pb::Verdict,
    service: &str,
    candidate: &str,
    wait: Duration,
) -> String {
    let wait = humantime::format_duration(wait);
    if verdict.endpoints.is_empty() {
        return format!(
            "candidate {candidate:?} of service {service:?} is unknown to the collector: no traffic of it within {wait}"
        );
    }
    let unbased: Vec<&str> = verdict
        .endpoints
        .iter()
        .filter(|e| e.baseline_version.is_empty())
        .map(|e| e.endpoint.as_str())
        .collect();
    if unbased.len() == verdict.endpoints.len() {
        return format!(
            "no baseline distinct from {candidate:?} on {} (it is the baseline itself, or the only version): name one with --baseline, or wait for the next release",
            unbased.join(", ")
        );
    }
    let undecided: Vec<String> = verdict
        .endpoints
        .iter()
        .flat_map(|e| {
            e.rules
                .iter()
                .filter(|r| r.outcome() != pb::VerdictOutcome::Pass)
                .map(move |r| {
                    let detail = r.evidence.as_ref().map_or("", |e| e.detail.as_str());
                    format!("{} {}: {detail}", e.endpoint, r.rule)
                })
        })
        .collect();
    if undecided.is_empty() {
        format!("no rule could judge {candidate:?} within {wait}")
    } else {
        format!(
            "not enough evidence within {wait}: {}",
            undecided.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    pub(super) fn options() -> GateOptions {
        GateOptions {
            url: DEFAULT_URL.to_owned(),
            service: "lending-api".into(),
            candidate: "v1.3".into(),
            baseline: None,
            endpoint: None,
            sla: Some(Duration::from_millis(150)),
            min_samples: Some(50),
            fail_on: Severity::Critical,
            wait: Duration::from_secs(10),
            poll_interval: POLL_INTERVAL,
            client: ClientOptions::default(),
        }
    }

    pub(super) fn rule(name: &str, outcome: pb::VerdictOutcome, detail: &str) -> pb::RuleResult {
        pb::RuleResult {
            rule: name.into(),
            outcome: outcome as i32,
            state: pb::AlertState::Inactive as i32,
            evidence: Some(pb::Evidence {
                candidate_count: 150,
                baseline_count: if name == "sla" { 0 } else { 350 },
                quantile: 0.95,
                candidate_value: 781.25,
                baseline_value: if name == "sla" { 0.0 } else { 117.5 },
                threshold: 150.0,
                ratio: 5.2,
                p_value: 1e-40,
                unit: "ms".into(),
                detail: detail.into(),
                e_value: 3e30,
                e_threshold: 200.0,
                test: "binomial".into(),
                ..Default::default()
            }),
            severity: if outcome == pb::VerdictOutcome::Regression {
                pb::Severity::Critical as i32
            } else {
                pb::Severity::Unspecified as i32
            },
        }
    }

    pub(super) fn verdict(outcome: pb::VerdictOutcome, rules: Vec<pb::RuleResult>) -> pb::Verdict {
        pb::Verdict {
            service: "lending-api".into(),
            candidate_version: "v1.3".into(),
            outcome: outcome as i32,
            endpoints: vec![pb::EndpointVerdict {
                endpoint: "/risk-score".into(),
                baseline_version: "v1.2".into(),
                outcome: outcome as i32,
                rules,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn request_carries_the_overrides_and_empty_means_the_collectors_choice() {
        let r = options().request();
        assert_eq!(r.sla_limit_ms, Some(150.0));
        assert_eq!(r.min_samples, Some(50));
        assert_eq!(r.baseline_version, "");
        assert_eq!(r.endpoint, "");
        let r = GateOptions {
            sla: None,
            min_samples: None,
            baseline: Some("v1.2".into()),
            endpoint: Some("/risk-score".into()),
            ..options()
        }
        .request();
        assert_eq!((r.sla_limit_ms, r.min_samples), (None, None));
        assert_eq!(r.baseline_version, "v1.2");
        assert_eq!(r.endpoint, "/risk-score");
    }

    #[test]
    fn exit_codes() {
        let report = |decision| GateReport {
            decision,
            reason: None,
            verdict: pb::Verdict::default(),
            polls: 1,
            waited: Duration::ZERO,
        };
        assert_eq!(exit(&Ok(report(Decision::Pass))), Exit::Ok);
        assert_eq!(exit(&Ok(report(Decision::Regression))), Exit::Regression);
        assert_eq!(
            exit(&Ok(report(Decision::Inconclusive))),
            Exit::Inconclusive
        );
        for (error, code) in [
            (ClientError::Refused("x".into()), Exit::Usage),
            (
                ClientError::Url {
                    url: "x".into(),
                    reason: "y".into(),
                },
                Exit::Usage,
            ),
            (
                ClientError::Unreachable {
                    url: DEFAULT_URL.into(),
                    message: "refused".into(),
                },
                Exit::Connection,
            ),
            (
                ClientError::WrongService {
                    url: DEFAULT_URL.into(),
                    detail: "admin port".into(),
                },
                Exit::Connection,
            ),
            (
                ClientError::Unauthenticated {
                    url: DEFAULT_URL.into(),
                    message: "no".into(),
                    hint: "pass --token-file",
                },
                Exit::Authentication,
            ),
            (
                ClientError::Incomplete("--client-cert", "--client-key"),
                Exit::Configuration,
            ),
        ] {
            assert_eq!(exit(&Err(error)), code);
        }
    }

    /// A regression verdict of `severity`.
    fn regression(severity: pb::Severity) -> pb::Verdict {
        pb::Verdict {
            severity: severity as i32,
            ..verdict(pb::VerdictOutcome::Regression, vec![])
        }
    }

    #[test]
    fn decisions_from_verdicts() {
        use pb::VerdictOutcome as O;
        use Severity::Critical;
        let of = |v: &pb::Verdict| Decision::of(v, Critical);
        assert_eq!(of(&verdict(O::Pass, vec![])), Decision::Pass);
        assert_eq!(
            of(&regression(pb::Severity::Critical)),
            Decision::Regression
        );
        // An older collector's regression, without a severity, fails.
        assert_eq!(
            of(&regression(pb::Severity::Unspecified)),
            Decision::Regression
        );
        assert_eq!(
            of(&verdict(O::Inconclusive, vec![])),
            Decision::Inconclusive
        );
        assert_eq!(of(&verdict(O::Unspecified, vec![])), Decision::Inconclusive);
        // No endpoint: the candidate is unknown, whatever the outcome says.
        let unknown = pb::Verdict {
            outcome: O::Pass as i32,
            ..Default::default()
        };
        assert_eq!(of(&unknown), Decision::Inconclusive);
        assert!(
            inconclusive_reason(&unknown, "lending-api", "v9", Duration::from_secs(2))
                .contains("\"v9\" of service \"lending-api\" is unknown")
        );
        let mut alone = verdict(O::Inconclusive, vec![]);
        alone.endpoints[0].baseline_version.clear();
        let reason = inconclusive_reason(&alone, "lending-api", "v1.3", Duration::from_secs(2));
        assert!(
            reason.starts_with("no baseline distinct from \"v1.3\" on /risk-score"),
            "{reason}"
        );
    }

    #[test]
    fn a_warning_fails_only_when_asked_to() {
        let warning = regression(pb::Severity::Warning);
        assert_eq!(
            Decision::of(&warning, Severity::Critical),
            Decision::Warning
        );
        assert_eq!(Decision::Warning.exit(), Exit::Ok);
        assert_eq!(
            Decision::of(&warning, Severity::Warning),
            Decision::Regression
        );
        assert_eq!(
            Decision::of(&regression(pb::Severity::Critical), Severity::Warning),
            Decision::Regression
        );
    }

    /// [`poll`] with `options`, the collector answering its n-th question
    /// (from 1) with `answer(n)`.
    async fn scripted(
        options: GateOptions,
        answer: impl Fn(u32) -> Result<pb::Verdict, ClientError>,
    ) -> Result<GateReport, ClientError> {
        let asked = Cell::new(0);
        poll(
            || {
                asked.set(asked.get() + 1);
                std::future::ready(answer(asked.get()))
            },
            &options,
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_is_watched_until_the_wait_is_over() {
        let warning = |_| Ok(regression(pb::Severity::Warning));
        // A warning stays one: reported when the wait is over, exit 0.
        let three_seconds = GateOptions {
            wait: Duration::from_secs(3),
            ..options()
        };
        let report = scripted(three_seconds, warning).await.unwrap();
        assert_eq!((report.decision, report.polls), (Decision::Warning, 4));
        assert_eq!(report.reason, None);
        // A warning that grows critical fails the gate as soon as it does.
        let report = scripted(options(), |n| {
            Ok(regression(if n < 3 {
                pb::Severity::Warning
            } else {
                pb::Severity::Critical
            }))
        })
        .await
        .unwrap();
        assert_eq!((report.decision, report.polls), (Decision::Regression, 3));
        // --fail-on warning: the first warning fails it.
        let fail_on_warning = GateOptions {
            fail_on: Severity::Warning,
            ..options()
        };
        let report = scripted(fail_on_warning, warning).await.unwrap();
        assert_eq!((report.decision, report.polls), (Decision::Regression, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_conclusive() {
        use pb::VerdictOutcome as O;
        let report = scripted(options(), |n| match n {
            1 => Err(ClientError::Unreachable {
                url: "u".into(),
                message: "starting".into(),
            }),
            2 => Ok(verdict(O::Inconclusive, vec![])),
            _ => Ok(verdict(O::Regression, vec![])),
        })
        .await
        .unwrap();
        assert_eq!(report.decision, Decision::Regression);
        assert_eq!(report.polls, 3);
        assert_eq!(report.waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_inconclusive_when_the_wait_is_over() {
        use pb::VerdictOutcome as O;
        let report = poll(
            || async {
                Ok(verdict(
                    O::Inconclusive,
                    vec![rule(
                        "sla",
                        O::Inconclusive,
                        "inconclusive: 5 requests, 50 needed",
                    )],
                ))
            },
            &GateOptions {
                wait: Duration::from_secs(3),
                ..options()
            },
        )
        .await
        .unwrap();
        assert_eq!(report.decision, Decision::Inconclusive);
        assert_eq!(report.polls, 4);
        let reason = report.reason.unwrap();
        assert!(
            reason.contains("within 3s: /risk-score sla: inconclusive: 5 requests, 50 needed"),
            "{reason}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_and_refused() {
        let started = Instant::now();
        let err = poll(
            || async {
                Err(ClientError::Unreachable {
                    url: "u".into(),
                    message: "connection refused".into(),
                })
            },
            &GateOptions {
                wait: Duration::from_secs(2),
                ..options()
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_transient());
        assert!(started.elapsed() <= Duration::from_secs(2));
        let asked = Cell::new(0);
        let err = poll(
            || {
                asked.set(asked.get() + 1);
                async { Err(ClientError::Refused("sla_limit_ms: bad".into())) }
            },
            &GateOptions {
                wait: Duration::from_secs(60),
                ..options()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(asked.get(), 1, "a refusal is not retried");
        assert!(matches!(err, ClientError::Refused(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_collector_is_bounded() {
        let started = Instant::now();
        let err = poll(
            std::future::pending::<Result<pb::Verdict, ClientError>>,
            &GateOptions {
                wait: Duration::from_secs(1),
                ..options()
            },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(2));
    }
}
