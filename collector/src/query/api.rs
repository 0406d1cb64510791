//! The query API (`modelgate.v1.Query`): versions, verdicts, regressions,
//! a stream of alert events, and the operator's writes.
//!
//! Each call asks the pipeline task a question ([`PipelineHandle::ask`])
//! whose answer is a pure view ([`crate::emit::views`]) mapped here to the
//! protobuf messages; the gRPC service below and the JSON routes of
//! [`super::admin`] both go through the `answer_*` functions, so the two
//! transports cannot drift. Nothing here holds state. The write operations
//! (`SetBaseline`, `AcknowledgeAlert`, `ResetVerdict`) run on the pipeline
//! task on its [`crate::judge::Judge`], and reach this service only with
//! the token ([`crate::auth`]).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_server::Query;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::config::{JudgeOverrides, OverrideError};
use crate::emit::views::{self, RegressionView, RuleView, ScopeVerdict, VerdictQuery, VerdictView};
use crate::judge::{ActionError, AlertState, Evidence, Resolution, Rule, Severity, Verdict};
use crate::phase::Phase;
use crate::pipeline::{AlertEvent, PipelineHandle, QueryError};

/// An alert state in API terms.
pub fn alert_state(state: AlertState) -> pb::AlertState {
    match state {
        AlertState::Inactive => pb::AlertState::Inactive,
        AlertState::Pending => pb::AlertState::Pending,
        AlertState::Firing => pb::AlertState::Firing,
        AlertState::Resolved => pb::AlertState::Resolved,
    }
}

/// A severity in API terms.
pub fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// A severity from the API (`None`: unspecified).
pub fn severity_of(s: pb::Severity) -> Option<Severity> {
    match s {
        pb::Severity::Unspecified => None,
        pb::Severity::Warning => Some(Severity::Warning),
        pb::Severity::Critical => Some(Severity::Critical),
    }
}

fn resolution(r: Option<Resolution>) -> pb::Resolution {
    match r {
        None => pb::Resolution::Unspecified,
        Some(Resolution::Cleared) => pb::Resolution::Cleared,
        Some(Resolution::NoTraffic) => pb::Resolution::NoTraffic,
        Some(Resolution::Retired) => pb::Resolution::Retired,
    }
}

/// A verdict in API terms: the outcome and, for a regression, its severity.
fn outcome(v: Verdict) -> (pb::VerdictOutcome, pb::Severity) {
    match v {
        Verdict::Pass => (pb::VerdictOutcome::Pass, pb::Severity::Unspecified),
        Verdict::Inconclusive => (pb::VerdictOutcome::Inconclusive, pb::Severity::Unspecified),
        Verdict::Regression(s) => (pb::VerdictOutcome::Regression, severity(s)),
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
        unit: e.unit.as_str().to_owned(),
        detail: e.detail.clone(),
        e_value: e.e_value,
        e_threshold: e.e_threshold,
        test: e.test.as_str().to_owned(),
        candidate_events: e.candidate_events,
        baseline_events: e.baseline_events,
        has_shift: e.shift.is_some(),
        shift_ms: e.shift.map_or(0.0, |s| s.estimate),
        shift_low_ms: e.shift.map_or(0.0, |s| s.low),
        shift_high_ms: e.shift.map_or(0.0, |s| s.high),
        difference: e.difference,
        has_share_beyond_p95: e.share_beyond_p95.is_some(),
        share_beyond_p95: e.share_beyond_p95.unwrap_or(0.0),
        power: e.power.map(|p| pb::Power {
            effect: p.effect,
            candidate_needed: p.candidate_needed,
            baseline_needed: p.baseline_needed,
            sufficient: p.sufficient,
        }),
        binned_requests: e.binned,
        binned_error: e.binned_error,
    }
}

/// One alert (one severity of it) in API terms.
pub fn regression(r: &RegressionView) -> pb::Regression {
    pb::Regression {
        service: r.key.endpoint.service.clone(),
        endpoint: r.key.endpoint.endpoint.clone(),
        candidate_version: r.key.candidate.clone(),
        baseline_version: r.key.baseline.clone(),
        rule: r.key.rule.as_str().to_owned(),
        state: alert_state(r.alert.state) as i32,
        since_unix_ms: r.alert.since_ms as i64,
        evidence: Some(evidence(&r.result.evidence)),
        acknowledged: r.acknowledged,
        severity: severity(r.severity) as i32,
        resolution: resolution(r.alert.resolution) as i32,
        phase: r.key.endpoint.phase.as_str().to_owned(),
    }
}

/// An alert event in API terms.
pub fn alert_event(e: &AlertEvent) -> pb::AlertEvent {
    let view = RegressionView {
        key: e.key.clone(),
        severity: e.severity,
        alert: e.judgement.alert(e.severity).clone(),
        result: e.judgement.result.clone(),
        acknowledged: e.acknowledged,
    };
    pb::AlertEvent {
        time_unix_ms: e.time_ms as i64,
        previous_state: alert_state(e.previous) as i32,
        regression: Some(regression(&view)),
    }
}

/// One endpoint's versions in API terms.
pub fn endpoint_versions(v: &views::EndpointVersions) -> pb::EndpointVersions {
    pb::EndpointVersions {
        service: v.key.service.clone(),
        endpoint: v.key.endpoint.clone(),
        baseline_version: v
            .baseline
            .as_ref()
            .map(|(b, _)| b.clone())
            .unwrap_or_default(),
        baseline_source: v
            .baseline
            .as_ref()
            .map(|(_, s)| s.as_str().to_owned())
            .unwrap_or_default(),
        baseline_distrust: v.distrust.clone().unwrap_or_default(),
        phase: v.key.phase.as_str().to_owned(),
        input_tokens: v
            .key
            .input
            .map(|b| b.as_str().to_owned())
            .unwrap_or_default(),
        versions: v
            .versions
            .iter()
            .map(|s| pb::VersionStats {
                version: s.version.clone(),
                count: s.count,
                mean_ms: s.mean_ms,
                p50_ms: s.p50_ms,
                p95_ms: s.p95_ms,
                p99_ms: s.p99_ms,
                timeout_rate: s.timeout_rate,
                error_rate: s.error_rate,
                db_calls_per_request: s.db_calls_per_request,
                is_baseline: s.is_baseline,
                first_seen_unix_ms: s.first_seen_ms as i64,
                last_seen_unix_ms: s.last_seen_ms as i64,
            })
            .collect(),
    }
}

fn rule_result(r: &RuleView) -> pb::RuleResult {
    let (o, s) = outcome(r.verdict);
    pb::RuleResult {
        rule: r.result.rule.as_str().to_owned(),
        outcome: o as i32,
        state: alert_state(r.state) as i32,
        evidence: Some(evidence(&r.result.evidence)),
        severity: s as i32,
    }
}

fn scope_verdict(s: &ScopeVerdict) -> pb::EndpointVerdict {
    let (o, sev) = outcome(s.verdict);
    pb::EndpointVerdict {
        endpoint: s.endpoint.clone(),
        baseline_version: s.baseline.clone(),
        outcome: o as i32,
        rules: s.rules.iter().map(rule_result).collect(),
        severity: sev as i32,
        baseline_source: s
            .baseline_source
            .map(|b| b.as_str().to_owned())
            .unwrap_or_default(),
        phase: s.phase.as_str().to_owned(),
    }
}

/// A verdict in API terms.
pub fn verdict(v: &VerdictView) -> pb::Verdict {
    let (o, s) = outcome(v.verdict);
    pb::Verdict {
        service: v.service.clone(),
        candidate_version: v.candidate.clone(),
        outcome: o as i32,
        endpoints: v.endpoints.iter().map(scope_verdict).collect(),
        severity: s as i32,
        version_wide: v.version_wide.as_ref().map(scope_verdict),
        endpoints_regressed: v.endpoints_regressed,
        endpoints_judged: v.endpoints_judged,
        summary: v.summary.clone(),
        held: v.held,
        last_traffic_unix_ms: v.last_traffic_ms as i64,
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

/// A refused request, as either transport says it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; names the field.
    #[error("{0}")]
    Invalid(String),
    /// An operator action was refused.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The pipeline is not running.
    #[error(transparent)]
    Unavailable(#[from] QueryError),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::Action(
                a @ (ActionError::NoSuchAlert { .. } | ActionError::NoSuchVerdict { .. }),
            ) => Status::not_found(a.to_string()),
            ApiError::Action(a) => Status::invalid_argument(a.to_string()),
            ApiError::Unavailable(q) => Status::unavailable(q.to_string()),
        }
    }
}

/// `ListVersions`.
pub async fn answer_versions(
    pipeline: &PipelineHandle,
    r: pb::ListVersionsRequest,
) -> Result<pb::ListVersionsResponse, ApiError> {
    Ok(pipeline
        .ask(move |s, now| pb::ListVersionsResponse {
            endpoints: views::versions(&s.aggregator, &s.judge, &r.service, &r.endpoint, now)
                .iter()
                .map(endpoint_versions)
                .collect(),
        })
        .await?)
}

/// `GetVerdict`.
pub async fn answer_verdict(
    pipeline: &PipelineHandle,
    r: pb::GetVerdictRequest,
) -> Result<pb::Verdict, ApiError> {
    if r.service.is_empty() || r.candidate_version.is_empty() {
        return Err(ApiError::Invalid(
            "service and candidate_version are required".into(),
        ));
    }
    let overrides =
        overrides(&r).map_err(|(field, e)| ApiError::Invalid(format!("{field}: {e}")))?;
    let query = VerdictQuery {
        service: r.service,
        candidate: r.candidate_version,
        endpoint: r.endpoint,
        baseline: r.baseline_version,
    };
    Ok(pipeline
        .ask(move |s, now| {
            let adhoc = (!overrides.is_empty())
                .then(|| s.judge.with_config(overrides.apply(s.judge.config())));
            verdict(&views::verdict(
                &s.aggregator,
                &s.judge,
                &query,
                adhoc.as_ref(),
                now,
            ))
        })
        .await?)
}

/// `ListRegressions`.
pub async fn answer_regressions(
    pipeline: &PipelineHandle,
    r: pb::ListRegressionsRequest,
) -> Result<pb::ListRegressionsResponse, ApiError> {
    let min = pb::Severity::try_from(r.min_severity)
        .ok()
        .and_then(severity_of)
        .unwrap_or(Severity::Warning);
    Ok(pipeline
        .ask(move |s, _| {
            let found = views::regressions(&s.judge, &r.service, min);
            pb::ListRegressionsResponse {
                regressions: found.firing.iter().map(regression).collect(),
                held: found
                    .held
                    .iter()
                    .map(|h| pb::HeldVerdict {
                        service: h.service.clone(),
                        candidate_version: h.candidate.clone(),
                        severity: severity(h.severity) as i32,
                        last_traffic_unix_ms: h.last_traffic_ms as i64,
                    })
                    .collect(),
                revision: s.revision,
            }
        })
        .await?)
}

/// `SetBaseline`: pins it and judges its service at once, so the answer
/// (the endpoints now known under that baseline) and every later question
/// already see it.
pub async fn answer_set_baseline(
    pipeline: &PipelineHandle,
    r: pb::SetBaselineRequest,
) -> Result<pb::SetBaselineResponse, ApiError> {
    let answer = pipeline
        .ask(move |s, now| {
            let endpoint = (!r.endpoint.is_empty()).then_some(r.endpoint.as_str());
            s.set_baseline(&r.service, endpoint, &r.version, now)?;
            let endpoints = views::versions(&s.aggregator, &s.judge, &r.service, &r.endpoint, now);
            Ok(pb::SetBaselineResponse {
                endpoints: endpoints.iter().map(endpoint_versions).collect(),
            })
        })
        .await?;
    answer.map_err(ApiError::Action)
}

/// `AcknowledgeAlert`.
pub async fn answer_acknowledge(
    pipeline: &PipelineHandle,
    r: pb::AcknowledgeAlertRequest,
) -> Result<pb::AcknowledgeAlertResponse, ApiError> {
    if r.rule.is_empty() {
        return Err(ActionError::Missing("rule").into());
    }
    let rule = Rule::named(&r.rule).ok_or_else(|| ActionError::UnknownRule(r.rule.clone()))?;
    let phase = match r.phase.as_str() {
        "" => Phase::Request,
        name => Phase::named(name).ok_or_else(|| ActionError::UnknownPhase(r.phase.clone()))?,
    };
    let answer = pipeline
        .ask(move |s, _| {
            let acked: Vec<_> = s
                .judge
                .acknowledge(&r.service, &r.endpoint, &r.candidate_version, phase, rule)?
                .into_iter()
                .map(|(k, j)| (k.clone(), j.clone()))
                .collect();
            let judge = &s.judge;
            let regressions = acked
                .iter()
                .flat_map(|(k, j)| {
                    Severity::ALL
                        .into_iter()
                        .filter(|sev| j.alert(*sev).state != AlertState::Inactive)
                        .map(move |sev| RegressionView::of(k, j, sev, judge))
                })
                .map(|v| regression(&v))
                .collect();
            Ok(pb::AcknowledgeAlertResponse { regressions })
        })
        .await?;
    answer.map_err(ApiError::Action)
}

/// `ResetVerdict`.
pub async fn answer_reset_verdict(
    pipeline: &PipelineHandle,
    r: pb::ResetVerdictRequest,
) -> Result<pb::ResetVerdictResponse, ApiError> {
    let answer = pipeline
        .ask(move |s, _| s.judge.reset_verdict(&r.service, &r.candidate_version))
        .await?;
    let dropped = answer?;
    Ok(pb::ResetVerdictResponse {
        dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
    })
}

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
                Ok(e) => (service.is_empty() || e.key.endpoint.service == service)
                    .then(|| alert_event(&e)),
                Err(lagged) => {
                    tracing::warn!(%lagged, "alert stream subscriber fell behind");
                    None
                }
            };
            std::future::ready(keep)
        })
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

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        Ok(Response::new(
            answer_versions(&self.pipeline, request.into_inner()).await?,
        ))
    }

    async fn get_verdict(
        &self,
        request: Request<pb::GetVerdictRequest>,
    ) -> Result<Response<pb::Verdict>, Status> {
        Ok(Response::new(
            answer_verdict(&self.pipeline, request.into_inner()).await?,
        ))
    }

    async fn list_regressions(
        &self,
        request: Request<pb::ListRegressionsRequest>,
    ) -> Result<Response<pb::ListRegressionsResponse>, Status> {
        Ok(Response::new(
            answer_regressions(&self.pipeline, request.into_inner()).await?,
        ))
    }

    async fn set_baseline(
        &self,
        request: Request<pb::SetBaselineRequest>,
    ) -> Result<Response<pb::SetBaselineResponse>, Status> {
        // Authorization was checked by `auth::Authenticated` before this.
        Ok(Response::new(
            answer_set_baseline(&self.pipeline, request.into_inner()).await?,
        ))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertResponse>, Status> {
        // Authorization was checked by `auth::Authenticated` before this.
        Ok(Response::new(
            answer_acknowledge(&self.pipeline, request.into_inner()).await?,
        ))
    }

    async fn reset_verdict(
        &self,
        request: Request<pb::ResetVerdictRequest>,
    ) -> Result<Response<pb::ResetVerdictResponse>, Status> {
        // Authorization was checked by `auth::Authenticated` before this.
        Ok(Response::new(
            answer_reset_verdict(&self.pipeline, request.into_inner()).await?,
        ))
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
