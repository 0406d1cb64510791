//! `modelgate gate`: a release gate for CI/CD pipelines. It asks a running
//! collector for its verdict on a candidate version, waits (bounded) for
//! enough traffic, prints the verdict with its evidence and maps it to an
//! exit code: 0 pass, 1 regression, 2 inconclusive.
//!
//! It must never judge by itself: every outcome and figure it prints comes
//! from the collector's judge. Thresholds the gate overrides (`--sla`,
//! `--min-samples`) travel in the request and are applied by the collector
//! to a copy of its own configuration. It never changes the collector's
//! state, never waits longer than `--wait` (plus one bounded call), and
//! never turns "could not tell" into a pass: too little traffic, an unknown
//! candidate and an unreachable collector are all inconclusive.
//!
//! It speaks gRPC (`modelgate.v1.Query/GetVerdict`, the OTLP port) rather
//! than the admin port's JSON: the generated client is already in the
//! binary (no HTTP client added), the messages are typed, and a refused
//! argument (INVALID_ARGUMENT) is told apart from an unreachable collector
//! by its status code instead of by parsing bodies.

use std::future::Future;
use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;
use tokio::time::Instant;
use tonic::transport::Endpoint;

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
    /// The collector's gRPC URL (`http://host:port`).
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
    /// How long to keep asking while the verdict is inconclusive.
    pub wait: Duration,
    /// Time between two questions.
    pub poll_interval: Duration,
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
    /// Some rule on some endpoint breached (or its alert is firing).
    Regression,
    /// Not enough evidence within the wait, or the candidate is unknown, or
    /// the collector could not be asked.
    Inconclusive,
}

impl Decision {
    /// The process exit code: 0 pass, 1 regression, 2 inconclusive.
    pub const fn exit_code(self) -> u8 {
        match self {
            Decision::Pass => 0,
            Decision::Regression => 1,
            Decision::Inconclusive => 2,
        }
    }

    /// `pass`, `regression` or `inconclusive`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Regression => "regression",
            Decision::Inconclusive => "inconclusive",
        }
    }

    /// The gate's reading of a verdict's outcome.
    pub fn of(verdict: &pb::Verdict) -> Self {
        if verdict.endpoints.is_empty() {
            return Decision::Inconclusive;
        }
        match pb::VerdictOutcome::try_from(verdict.outcome) {
            Ok(pb::VerdictOutcome::Pass) => Decision::Pass,
            Ok(pb::VerdictOutcome::Regression) => Decision::Regression,
            _ => Decision::Inconclusive,
        }
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

/// Why the gate got no verdict at all. Every one of them means exit code 2.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    /// `--url` is not a URL the gate can use.
    #[error("invalid --url {url:?}: {reason}")]
    InvalidUrl {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer from the collector (refused, timed out, not gRPC).
    #[error("collector unreachable at {url}: {message}")]
    Unreachable {
        /// Where the gate asked.
        url: String,
        /// The last transport error.
        message: String,
    },
    /// The collector answered with a refusal (a bad `--sla`, say).
    #[error("the collector refused the request: {0}")]
    Refused(String),
}

impl GateError {
    /// Worth asking again before the wait is over.
    pub const fn is_transient(&self) -> bool {
        matches!(self, GateError::Unreachable { .. })
    }
}

/// The process exit code of a gate run.
pub fn exit_code(result: &Result<GateReport, GateError>) -> u8 {
    match result {
        Ok(report) => report.decision.exit_code(),
        Err(_) => Decision::Inconclusive.exit_code(),
    }
}

/// `--url` as a URL tonic can dial: `host:port` gets `http://`; `https://`
/// is refused (this build has no TLS).
pub fn normalize_url(url: &str) -> Result<String, GateError> {
    let invalid = |reason: &str| GateError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url.trim();
    if url.starts_with("https://") {
        return Err(invalid("https is not supported by this build; use http://"));
    }
    let full = if url.starts_with("http://") {
        url.to_owned()
    } else if url.contains("://") {
        return Err(invalid("the scheme must be http://"));
    } else {
        format!("http://{url}")
    };
    if full.len() <= "http://".len() {
        return Err(invalid("no host"));
    }
    Ok(full)
}

fn classify(status: &tonic::Status, url: &str) -> GateError {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange => Refused(format!("{:?}: {}", status.code(), status.message())),
        _ => GateError::Unreachable {
            url: url.to_owned(),
            message: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}
use GateError::Refused;

/// Asks the collector at `options.url` until the verdict is conclusive or
/// `options.wait` is over.
pub async fn run(options: &GateOptions) -> Result<GateReport, GateError> {
    let url = normalize_url(&options.url)?;
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| GateError::InvalidUrl {
        url: options.url.clone(),
        reason: e.to_string(),
    })?;
    let client = QueryClient::new(
        endpoint
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy(),
    );
    let request = options.request();
    tracing::info!(
        %url,
        service = %options.service,
        candidate = %options.candidate,
        wait_s = options.wait.as_secs_f64(),
        "asking the collector for a verdict"
    );
    poll(
        || {
            let mut client = client.clone();
            let request = request.clone();
            let url = url.clone();
            async move {
                client
                    .get_verdict(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| classify(&status, &url))
            }
        },
        options,
    )
    .await
}

/// The polling loop of [`run`], with the question as a parameter: asks until
/// the verdict is a pass or a regression, a refusal comes back, or
/// `options.wait` is over (each question bounded too). Transport errors are
/// retried within the wait (the collector may be restarting with the
/// release).
pub async fn poll<F, Fut>(mut ask: F, options: &GateOptions) -> Result<GateReport, GateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<pb::Verdict, GateError>>,
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
            Err(_) => Err(GateError::Unreachable {
                url: options.url.clone(),
                message: format!("no answer within {}", humantime::format_duration(budget)),
            }),
        };
        match answer {
            Ok(verdict) => {
                let decision = Decision::of(&verdict);
                tracing::debug!(polls, decision = decision.as_str(), "verdict");
                if decision != Decision::Inconclusive {
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
        (Some(verdict), _) => Ok(GateReport {
            decision: Decision::Inconclusive,
            reason: Some(inconclusive_reason(
                &verdict,
                &options.service,
                &options.candidate,
                wait,
            )),
            verdict,
            polls,
            waited: started.elapsed(),
        }),
        (None, Some(error)) => Err(error),
        (None, None) => Err(GateError::Unreachable {
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
            wait: Duration::from_secs(10),
            poll_interval: POLL_INTERVAL,
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
            }],
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
        assert_eq!(exit_code(&Ok(report(Decision::Pass))), 0);
        assert_eq!(exit_code(&Ok(report(Decision::Regression))), 1);
        assert_eq!(exit_code(&Ok(report(Decision::Inconclusive))), 2);
        for e in [
            GateError::Refused("x".into()),
            GateError::Unreachable {
                url: DEFAULT_URL.into(),
                message: "refused".into(),
            },
            GateError::InvalidUrl {
                url: "x".into(),
                reason: "y".into(),
            },
        ] {
            assert_eq!(exit_code(&Err(e)), 2);
        }
    }

    #[test]
    fn decisions_from_verdicts() {
        use pb::VerdictOutcome as O;
        assert_eq!(Decision::of(&verdict(O::Pass, vec![])), Decision::Pass);
        assert_eq!(
            Decision::of(&verdict(O::Regression, vec![])),
            Decision::Regression
        );
        assert_eq!(
            Decision::of(&verdict(O::Inconclusive, vec![])),
            Decision::Inconclusive
        );
        assert_eq!(
            Decision::of(&verdict(O::Unspecified, vec![])),
            Decision::Inconclusive
        );
        // No endpoint: the candidate is unknown, whatever the outcome says.
        let unknown = pb::Verdict {
            outcome: O::Pass as i32,
            ..Default::default()
        };
        assert_eq!(Decision::of(&unknown), Decision::Inconclusive);
        assert!(
            inconclusive_reason(&unknown, "lending-api", "v9", Duration::from_secs(2))
                .contains("\"v9\" of service \"lending-api\" is unknown")
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("127.0.0.1:4317").unwrap(),
            "http://127.0.0.1:4317"
        );
        assert_eq!(normalize_url(DEFAULT_URL).unwrap(), DEFAULT_URL);
        assert!(matches!(
            normalize_url("https://x:4317"),
            Err(GateError::InvalidUrl { .. })
        ));
        assert!(matches!(
            normalize_url("ftp://x"),
            Err(GateError::InvalidUrl { .. })
        ));
        assert!(matches!(
            normalize_url("http://"),
            Err(GateError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn status_codes_split_refusals_from_unreachable() {
        let refused = classify(&tonic::Status::invalid_argument("sla_limit_ms: bad"), "u");
        assert!(!refused.is_transient());
        assert!(refused.to_string().contains("sla_limit_ms: bad"));
        let down = classify(&tonic::Status::unavailable("connection refused"), "u");
        assert!(down.is_transient());
        assert!(down.to_string().starts_with("collector unreachable at u"));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_conclusive() {
        use pb::VerdictOutcome as O;
        let asked = Cell::new(0);
        let report = poll(
            || {
                asked.set(asked.get() + 1);
                let n = asked.get();
                async move {
                    match n {
                        1 => Err(GateError::Unreachable {
                            url: "u".into(),
                            message: "starting".into(),
                        }),
                        2 => Ok(verdict(O::Inconclusive, vec![])),
                        _ => Ok(verdict(O::Regression, vec![])),
                    }
                }
            },
            &options(),
        )
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
                Err(GateError::Unreachable {
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
                async { Err(GateError::Refused("sla_limit_ms: bad".into())) }
            },
            &GateOptions {
                wait: Duration::from_secs(60),
                ..options()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(asked.get(), 1, "a refusal is not retried");
        assert!(matches!(err, GateError::Refused(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_collector_is_bounded() {
        let started = Instant::now();
        let err = poll(
            std::future::pending::<Result<pb::Verdict, GateError>>,
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
