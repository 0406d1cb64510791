//! The query API (`modelgate.v1.Query`): versions, verdicts, regressions and
//! a stream of alert events.
//!
//! The view builders are pure functions of the aggregator and the judge, run
//! by the pipeline task when asked; the gRPC service here and the JSON routes
//! in [`super::admin`] only forward questions to it and answer with what
//! comes back. Nothing here mutates state: the two write operations
//! (`SetBaseline`, `AcknowledgeAlert`) are carried out by the pipeline task
//! on its [`Judge`], and reach this service only with the token
//! ([`crate::auth`]).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_server::Query;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::aggregate::Aggregator;
use crate::config::{JudgeOverrides, OverrideError};
use crate::extract::{EndpointKey, Outcome};
use crate::judge::{
    ActionError, AlertKey, AlertState, Condition, Evidence, Judge, Judgement, RuleResult,
};
use crate::pipeline::{PipelineHandle, QueryError};

/// An alert state in API terms.
pub fn alert_state(state: AlertState) -> pb::AlertState {
    match state {
        AlertState::Inactive => pb::AlertState::Inactive,
        AlertState::Pending => pb::AlertState::Pending,
        AlertState::Firing => pb::AlertState::Firing,
        AlertState::Resolved => pb::AlertState::Resolved,
    }
}

fn evidence(e: &Evidence) -> pb::Evidence {
    pb::Evidence {
        candidate_count: e.candidate_count,
        baseline_count: e.baseline_count,
        quantile: e.quantile,
        candidate_value: e.candidate_value,
        baseline_value: e.baseline_value,
        threshold: e.threshold,
        ratio: e.ratio,
        p_value: e.p_value,
        unit: e.unit.to_owned(),
        detail: e.detail.clone(),
        e_value: e.e_value,
        e_threshold: e.e_threshold,
        test: e.test.to_owned(),
        candidate_events: e.candidate_events,
        baseline_events: e.baseline_events,
        has_shift: e.shift.is_some(),
        shift_ms: e.shift.map_or(0.0, |s| s.estimate),
        shift_low_ms: e.shift.map_or(0.0, |s| s.low),
        shift_high_ms: e.shift.map_or(0.0, |s| s.high),
    }
}

/// One alert in API terms; `acknowledged` as [`Judge::is_acknowledged`] says.
pub fn regression(key: &AlertKey, judgement: &Judgement, acknowledged: bool) -> pb::Regression {
    pb::Regression {
        service: key.endpoint.service.clone(),
        endpoint: key.endpoint.endpoint.clone(),
        candidate_version: key.candidate.clone(),
        baseline_version: key.baseline.clone(),
        rule: key.rule.as_str().to_owned(),
        state: alert_state(judgement.alert.state) as i32,
        since_unix_ms: judgement.alert.since_ms as i64,
        evidence: Some(evidence(&judgement.result.evidence)),
        acknowledged,
    }
}

/// Every version of every endpoint matching the filter.
pub fn versions(
    agg: &Aggregator,
    judge: &Judge,
    request: &pb::ListVersionsRequest,
    now_ms: u64,
) -> pb::ListVersionsResponse {
    let mut endpoints: Vec<pb::EndpointVersions> = agg
        .endpoints()
        .filter(|(k, _)| {
            matches(&request.service, &k.service) && matches(&request.endpoint, &k.endpoint)
        })
        .map(|(key, versions)| {
            let baseline = judge.baseline(key).unwrap_or_default();
            pb::EndpointVersions {
                service: key.service.clone(),
                endpoint: key.endpoint.clone(),
                baseline_version: baseline.to_owned(),
                versions: versions
                    .iter()
                    .map(|(version, series)| {
                        let w = agg.window(series, now_ms);
                        let q = |q| w.latency.quantile(q).unwrap_or(0.0);
                        pb::VersionStats {
                            version: version.clone(),
                            count: w.count(),
                            mean_ms: w.latency.mean().unwrap_or(0.0),
                            p50_ms: q(0.5),
                            p95_ms: q(0.95),
                            p99_ms: q(0.99),
                            timeout_rate: w.rate(Outcome::Timeout),
                            error_rate: w.rate(Outcome::Error),
                            db_calls_per_request: w.db_calls_per_request(),
                            is_baseline: version == baseline,
                            first_seen_unix_ms: series.first_seen_ms as i64,
                            last_seen_unix_ms: series.last_seen_ms as i64,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
    pb::ListVersionsResponse { endpoints }
}

fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

/// Firing alerts matching the filter.
pub fn regressions(
    judge: &Judge,
    request: &pb::ListRegressionsRequest,
) -> pb::ListRegressionsResponse {
    let mut regressions: Vec<pb::Regression> = judge
        .judgements()
        .filter(|(k, j)| {
            j.alert.state == AlertState::Firing && matches(&request.service, &k.endpoint.service)
        })
        .map(|(k, j)| regression(k, j, judge.is_acknowledged(k)))
        .collect();
    regressions.sort_by(|a, b| {
        (&a.service, &a.endpoint, &a.candidate_version, &a.rule).cmp(&(
            &b.service,
            &b.endpoint,
            &b.candidate_version,
            &b.rule,
        ))
    });
    pb::ListRegressionsResponse { regressions }
}

/// Worst first: REGRESSION over INCONCLUSIVE over PASS.
fn worst(a: pb::VerdictOutcome, b: pb::VerdictOutcome) -> pb::VerdictOutcome {
    let rank = |o: pb::VerdictOutcome| match o {
        pb::VerdictOutcome::Regression => 3,
        pb::VerdictOutcome::Inconclusive | pb::VerdictOutcome::Unspecified => 2,
        pb::VerdictOutcome::Pass => 1,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

fn rule_outcome(result: &RuleResult, state: AlertState) -> pb::VerdictOutcome {
    match (state, result.condition) {
        (AlertState::Firing, _) | (_, Condition::Breach) => pb::VerdictOutcome::Regression,
        (_, Condition::Clear) => pb::VerdictOutcome::Pass,
        (_, Condition::Marginal | Condition::Inconclusive) => pb::VerdictOutcome::Inconclusive,
    }
}

/// The threshold overrides of a verdict request, checked; the error names
/// the offending field.
pub fn overrides(
    request: &pb::GetVerdictRequest,
) -> Result<JudgeOverrides, (&'static str, OverrideError)> {
    JudgeOverrides::new(request.sla_limit_ms, request.min_samples).map_err(|e| {
        let field = match e {
            OverrideError::SlaLimit(_) => "sla_limit_ms",
            OverrideError::MinSamples => "min_samples",
        };
        (field, e)
    })
}

/// The verdict on one candidate: per endpoint, each rule's outcome. With a
/// baseline given that differs from the judge's own, or with `overrides`,
/// the rules are applied on the spot (no alert history: state INACTIVE),
/// the latter by a judge with a copy of the configuration, overridden.
pub fn verdict(
    agg: &Aggregator,
    judge: &Judge,
    request: &pb::GetVerdictRequest,
    overrides: &JudgeOverrides,
    now_ms: u64,
) -> pb::Verdict {
    let adhoc = (!overrides.is_empty()).then(|| judge.with_config(overrides.apply(judge.config())));
    let rules = adhoc.as_ref().unwrap_or(judge);
    let mut endpoints = Vec::new();
    let mut keys: Vec<&EndpointKey> = agg
        .endpoints()
        .filter(|(k, v)| {
            k.service == request.service
                && matches(&request.endpoint, &k.endpoint)
                && v.contains_key(&request.candidate_version)
        })
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    for key in keys {
        let Some(versions) = agg.versions(key) else {
            continue;
        };
        let own_baseline = judge.baseline(key).unwrap_or_default();
        let baseline = if request.baseline_version.is_empty() {
            own_baseline
        } else {
            request.baseline_version.as_str()
        };
        let compared = (baseline != request.candidate_version).then_some(baseline);
        let stored: Vec<(RuleResult, AlertState)> = judge
            .judgements()
            .filter(|(k, _)| {
                k.endpoint == *key
                    && k.candidate == request.candidate_version
                    && k.baseline == compared.unwrap_or_default()
            })
            .map(|(_, j)| (j.result.clone(), j.alert.state))
            .collect();
        let results = if adhoc.is_none() && !stored.is_empty() && baseline == own_baseline {
            stored
        } else {
            // Like the judge: the window stretches back for enough requests.
            let cand = versions
                .get(&request.candidate_version)
                .map(|s| agg.recent(s, now_ms, rules.min_requests()))
                .unwrap_or_default();
            let base = compared
                .and_then(|b| versions.get(b))
                .map(|s| agg.horizon(s, now_ms))
                .unwrap_or_default();
            rules
                .judge_pair(&cand, compared.map(|b| (b, &base)))
                .into_iter()
                .map(|r| (r, AlertState::Inactive))
                .collect()
        };
        let mut outcome = pb::VerdictOutcome::Pass;
        let mut rules: Vec<pb::RuleResult> = results
            .iter()
            .map(|(result, state)| {
                let o = rule_outcome(result, *state);
                outcome = worst(outcome, o);
                pb::RuleResult {
                    rule: result.rule.as_str().to_owned(),
                    outcome: o as i32,
                    state: alert_state(*state) as i32,
                    evidence: Some(evidence(&result.evidence)),
                }
            })
            .collect();
        rules.sort_by(|a, b| a.rule.cmp(&b.rule));
        if rules.is_empty() {
            outcome = pb::VerdictOutcome::Inconclusive;
        }
        endpoints.push(pb::EndpointVerdict {
            endpoint: key.endpoint.clone(),
            baseline_version: compared.unwrap_or_default().to_owned(),
            outcome: outcome as i32,
            rules,
        });
    }
    let outcome = endpoints
        .iter()
        .map(|e| {
            pb::VerdictOutcome::try_from(e.outcome).unwrap_or(pb::VerdictOutcome::Inconclusive)
        })
        .reduce(worst)
        .unwrap_or(pb::VerdictOutcome::Inconclusive);
    pb::Verdict {
        service: request.service.clone(),
        candidate_version: request.candidate_version.clone(),
        outcome: outcome as i32,
        endpoints,
    }
}

/// The `modelgate.v1.Query` gRPC service.
#[derive(Debug, Clone)]
pub struct QueryService {
    pipeline: PipelineHandle,
}

impl QueryService {
    /// A service answering from `pipeline`.
    pub fn new(pipeline: PipelineHandle) -> Self {
        Self { pipeline }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        Status::unavailable(error.to_string())
    }
}

/// The gRPC status of a refused operator action.
fn action_status(e: ActionError) -> Status {
    match e {
        ActionError::NoSuchAlert { .. } => Status::not_found(e.to_string()),
        ActionError::Missing(_) | ActionError::UnknownRule(_) => {
            Status::invalid_argument(e.to_string())
        }
    }
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

/// Alert events for `service` (all when empty) from now on, until the
/// servers stop; a subscriber that falls behind skips what it missed rather
/// than stalling the judge.
pub fn alert_events(
    pipeline: &PipelineHandle,
    service: String,
) -> impl Stream<Item = pb::AlertEvent> + Send + 'static {
    let stopping = pipeline.stopping().clone().cancelled_owned();
    BroadcastStream::new(pipeline.subscribe_alerts())
        .take_until(stopping)
        .filter_map(move |event| {
            let keep = match event {
                Ok(e) => e
                    .regression
                    .as_ref()
                    .is_some_and(|r| service.is_empty() || r.service == service)
                    .then_some(e),
                Err(lagged) => {
                    tracing::warn!(%lagged, "alert stream subscriber fell behind");
                    None
                }
            };
            std::future::ready(keep)
        })
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        Ok(Response::new(
            self.pipeline.versions(request.into_inner()).await?,
        ))
    }

    async fn get_verdict(
        &self,
        request: Request<pb::GetVerdictRequest>,
    ) -> Result<Response<pb::Verdict>, Status> {
        let request = request.into_inner();
        if request.service.is_empty() || request.candidate_version.is_empty() {
            return Err(Status::invalid_argument(
                "service and candidate_version are required",
            ));
        }
        let overrides = overrides(&request)
            .map_err(|(field, e)| Status::invalid_argument(format!("{field}: {e}")))?;
        Ok(Response::new(
            self.pipeline.verdict(request, overrides).await?,
        ))
    }

    async fn list_regressions(
        &self,
        request: Request<pb::ListRegressionsRequest>,
    ) -> Result<Response<pb::ListRegressionsResponse>, Status> {
        Ok(Response::new(
            self.pipeline.regressions(request.into_inner()).await?,
        ))
    }

    async fn set_baseline(
        &self,
        request: Request<pb::SetBaselineRequest>,
    ) -> Result<Response<pb::SetBaselineResponse>, Status> {
        // Authorization was checked by `auth::Authenticated` before this.
        let answer = self.pipeline.set_baseline(request.into_inner()).await?;
        answer.map(Response::new).map_err(action_status)
    }

    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertResponse>, Status> {
        // Authorization was checked by `auth::Authenticated` before this.
        let answer = self.pipeline.acknowledge(request.into_inner()).await?;
        answer.map(Response::new).map_err(action_status)
    }

    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let events = alert_events(&self.pipeline, request.into_inner().service);
        Ok(Response::new(Box::pin(events.map(Ok))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_overrides_name_their_field() {
        let request = |sla_limit_ms, min_samples| pb::GetVerdictRequest {
            service: "s".into(),
            candidate_version: "c".into(),
            sla_limit_ms,
            min_samples,
            ..Default::default()
        };
        assert!(overrides(&request(None, None)).unwrap().is_empty());
        let o = overrides(&request(Some(150.0), Some(20))).unwrap();
        assert_eq!(o.sla_limit, Some(std::time::Duration::from_millis(150)));
        assert_eq!(o.min_samples, Some(20));
        assert_eq!(
            overrides(&request(Some(-5.0), None)).unwrap_err().0,
            "sla_limit_ms"
        );
        assert_eq!(
            overrides(&request(None, Some(0))).unwrap_err().0,
            "min_samples"
        );
    }
}
