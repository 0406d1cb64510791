//! Extract: one OTLP span -> at most one [`Sample`], as `DESIGN.md` defines it.
//!
//! This stage is pure: it reads a decoded export request and appends samples
//! to a buffer; it never touches time, locks or the network, so the receiver
//! can call it inline and the tests can call it with literals. It must never
//! drop a span silently: every span is either a sample, deliberately ignored
//! (an internal or non-database client span), or rejected with a reason that
//! goes back to the sender in `partial_success`.
//!
//! [`logs`] does the same for log records and JSON log lines that carry a
//! request's duration, [`metrics`] for the data points of histogram metrics
//! (many requests each), and [`template`] makes endpoints of raw paths.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};

use serde::{Deserialize, Serialize};

use crate::config::{EndpointTemplates, ExtractConfig};

pub mod genai;
pub mod intern;
pub mod logs;
pub mod metrics;
pub mod template;
pub mod wire;

pub use crate::phase::{InputBand, Phase};
pub use intern::{Interner, SeriesName};

/// The version label of spans that carry none of the configured version
/// attributes: they still count, under this name.
pub const UNKNOWN_VERSION: &str = "unknown";

/// The endpoint name of a version's judgement across all its endpoints
/// (`endpoint="*"` in metrics and the API); a span's own endpoint never is
/// (`endpoint_name` makes it `/*`).
pub const ALL_ENDPOINTS: &str = "*";

/// The endpoint that holds a service's requests beyond its endpoint cap
/// (`extract.endpoints.max_per_service`): judged like any other, so a slow
/// version is still caught there.
pub const OVERFLOW_ENDPOINT: &str = "{overflow}";

/// `service.name` of resources that have none, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The attribute keys the rules read, besides the configured version
/// attributes and dimensions. [`wire`] keeps only attributes that are one
/// of these or a configured one, so a rule must name its keys here. They
/// are statics, not constants, so that every use is the same address
/// (which the wire reader's lookup compares first).
pub(crate) mod keys {
    /// The resource's service.
    pub(crate) static SERVICE_NAME: &str = "service.name";
    /// Any of these on a CLIENT span makes it a database call.
    pub(crate) static DB_SYSTEM: [&str; 2] = ["db.system", "db.system.name"];
    /// The endpoint as a template: first choice.
    pub(crate) static ROUTE: &str = "http.route";
    /// A raw path, made a template ([`super::template`]) when there is no
    /// route; the first non-empty one wins (else the span name).
    pub(crate) static RAW_PATH: [&str; 2] = ["url.path", "http.target"];
    /// The HTTP status code, new name first.
    pub(crate) static STATUS_CODE: [&str; 2] = ["http.response.status_code", "http.status_code"];
    /// A timeout when it names one.
    pub(crate) static ERROR_TYPE: &str = "error.type";
    /// A timeout when it is 4 (DEADLINE_EXCEEDED).
    pub(crate) static GRPC_STATUS: &str = "rpc.grpc.status_code";

    /// Every key above.
    pub(crate) fn all() -> impl Iterator<Item = &'static str> {
        [SERVICE_NAME, ROUTE, ERROR_TYPE, GRPC_STATUS]
            .into_iter()
            .chain(DB_SYSTEM)
            .chain(RAW_PATH)
            .chain(STATUS_CODE)
    }
}

/// How many rejection reasons are spelled out in one `partial_success`
/// message; the rest are only counted, so one bad batch cannot produce a
/// megabyte of error text.
const MAX_REASONS: usize = 3;

/// What one series is: the endpoint of a service (plus any configured extra
/// dimensions), the phase of its requests it measures, and the version
/// that served it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    /// `service.name` of the span's resource.
    pub service: String,
    /// `http.route`, else `url.path` / `http.target`, else the span name.
    pub endpoint: String,
    /// Values of the configured extra dimensions, in configuration order
    /// (empty string where a span lacks one).
    pub dims: Vec<String>,
    /// The whole request, or one phase of a generative model's
    /// ([`genai`]): each phase is a series of its own.
    pub phase: Phase,
    /// The band of input tokens of a time-to-first-token series read from
    /// spans that carry the input size; `None` for every other series.
    /// Each band is a series of its own; the judge compares band with band
    /// and judges the endpoint's first token as one ([`crate::judge`]).
    pub input: Option<InputBand>,
}

impl EndpointKey {
    /// The same endpoint, measuring `phase` (of every input size).
    pub fn with_phase(&self, phase: Phase) -> EndpointKey {
        EndpointKey {
            phase,
            input: None,
            ..self.clone()
        }
    }

    /// The same series but for the input band: the bands of one
    /// endpoint's phase (and its unbanded series) are one subject.
    pub fn same_subject(&self, other: &EndpointKey) -> bool {
        self.phase == other.phase
            && self.endpoint == other.endpoint
            && self.service == other.service
            && self.dims == other.dims
    }

    /// The endpoint's series of every input size: the key its judgements
    /// and alerts name (a band is a stratum of it, never an alert's
    /// subject).
    pub fn unbanded(&self) -> EndpointKey {
        EndpointKey {
            input: None,
            ..self.clone()
        }
    }
}

/// How a request ended, as the judge's error and timeout rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Neither an error nor a timeout.
    Ok,
    /// Span status ERROR or HTTP 5xx (other than 504).
    Error,
    /// `error.type` names a timeout, HTTP 408/504, gRPC DEADLINE_EXCEEDED, or
    /// the duration reached the configured timeout.
    Timeout,
}

impl Outcome {
    /// Every outcome, in the order used for per-outcome arrays.
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Timeout];

    /// Index into per-outcome arrays.
    pub const fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Timeout => 2,
        }
    }

    /// The `outcome` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// What a measured span, log record or histogram point is.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleKind {
    /// A request (SERVER or CONSUMER span, a root span, or a mapped log
    /// record) and its latency.
    Request {
        /// End minus start.
        duration: Duration,
        /// How it ended.
        outcome: Outcome,
    },
    /// A database call (CLIENT span with `db.system` or `db.system.name`),
    /// attributed to the request of the same trace and service.
    DbCall,
    /// Many requests at once: one histogram data point of a mapped metric,
    /// its buckets in milliseconds ([`metrics`]). Boxed: a span's sample
    /// stays as small as before.
    Histogram(Box<metrics::Point>),
}

/// One span, log record or histogram point, reduced to what the
/// aggregator needs: the one shape every reader hands over. Its series is named by a shared
/// [`SeriesName`] (see [`intern`]), so a sample owns no string of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Service, endpoint, dimensions and version. A database call's name
    /// has its service and version only (empty endpoint, no dimensions).
    pub series: Arc<SeriesName>,
    /// The trace, to join database calls to their request.
    pub trace_id: [u8; 16],
    /// When it happened, unix milliseconds: the span's end, the log
    /// record's time, the end of a histogram point's interval. 0 when the
    /// sender gave none: the aggregator then takes the arrival time.
    pub time_ms: u64,
    /// Request, database call, or a histogram point's requests.
    pub kind: SampleKind,
}

impl Sample {
    /// A request of `version` on `endpoint`, with a series name of its own
    /// (not interned: for tests, benchmarks and offline tools).
    pub fn request(
        endpoint: EndpointKey,
        version: &str,
        duration: Duration,
        outcome: Outcome,
        time_ms: u64,
    ) -> Self {
        Self {
            series: Arc::new(SeriesName {
                endpoint,
                version: version.to_owned(),
            }),
            trace_id: [0; 16],
            time_ms,
            kind: SampleKind::Request { duration, outcome },
        }
    }

    /// A database call of `service` in trace `trace_id` (see
    /// [`Sample::request`]).
    pub fn db_call(service: &str, trace_id: [u8; 16], time_ms: u64) -> Self {
        Self {
            series: Arc::new(SeriesName {
                endpoint: EndpointKey {
                    service: service.to_owned(),
                    endpoint: String::new(),
                    dims: Vec::new(),
                    phase: Phase::Request,
                    input: None,
                },
                version: UNKNOWN_VERSION.to_owned(),
            }),
            trace_id,
            time_ms,
            kind: SampleKind::DbCall,
        }
    }

    /// The same sample in trace `trace_id`.
    pub fn in_trace(mut self, trace_id: [u8; 16]) -> Self {
        self.trace_id = trace_id;
        self
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.series.endpoint.service
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.series.version
    }
}

/// What extraction made of one export request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractReport {
    /// Spans turned into samples.
    pub samples: u64,
    /// Spans that are neither requests nor database calls (internal work,
    /// non-database client calls): accepted, not measured.
    pub ignored: u64,
    /// Spans that cannot be used; reported back in `partial_success`.
    pub rejected: u64,
    /// Of `rejected`, those refused for a duration outside
    /// `extract.min_duration..=extract.max_duration`.
    pub implausible: u64,
    /// Attribute values naming a series that were cut to
    /// `extract.max_name_length`.
    pub truncated: u64,
    /// The first few rejection reasons, for the `partial_success` message.
    pub message: String,
}

/// A [`Sample`] before its series is named: every string borrowed from
/// the request. What every reader produces ([`extract`] on a decoded
/// message, [`wire::scan`] on the protobuf bytes, [`logs`] on log records,
/// [`metrics`] on histogram points), so the rules exist once;
/// [`Interner::intern`] turns it into a [`Sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRef<'a> {
    /// `service.name` of the span's resource.
    pub service: &'a str,
    /// What of the request it measures ([`genai`]).
    pub phase: Phase,
    /// See [`EndpointKey::input`].
    pub input: Option<InputBand>,
    /// `http.route`, else `url.path` / `http.target` as a template, else
    /// the span name; empty for a database call.
    pub endpoint: Cow<'a, str>,
    /// Values of the configured extra dimensions (owned only when a value
    /// is not a string attribute); empty for a database call.
    pub dims: Vec<Cow<'a, str>>,
    /// The version, or [`UNKNOWN_VERSION`].
    pub version: &'a str,
    /// The trace, to join database calls to their request.
    pub trace_id: [u8; 16],
    /// See [`Sample::time_ms`].
    pub time_ms: u64,
    /// See [`Sample::kind`].
    pub kind: SampleKind,
}

impl<'a> SampleRef<'a> {
    /// Cuts every name (service, endpoint, version, dimensions) to at most
    /// `max` bytes, at a character boundary; how many were cut.
    pub(crate) fn bound_names(&mut self, max: usize) -> u64 {
        let mut cut = 0;
        for name in [&mut self.service, &mut self.version] {
            if name.len() > max {
                *name = truncate_bytes(name, max);
                cut += 1;
            }
        }
        for dim in std::iter::once(&mut self.endpoint).chain(&mut self.dims) {
            if dim.len() > max {
                *dim = match std::mem::take(dim) {
                    Cow::Borrowed(s) => Cow::Borrowed(truncate_bytes(s, max)),
                    Cow::Owned(s) => Cow::Owned(truncate_bytes(&s, max).to_owned()),
                };
                cut += 1;
            }
        }
        cut
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An attribute value as the rules read it, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Bytes, arrays, key-value lists, or no value: never read by the rules.
    Other,
}

/// A list of attributes: `find` is the value of the FIRST attribute named
/// `key` (`None` when there is none, `Some(Val::Other)` when it has no usable
/// value), the lookup every rule uses.
pub(crate) trait Attrs<'a> {
    fn find(&self, key: &str) -> Option<Val<'a>>;

    /// False only when the list surely holds none of `extract.genai`'s
    /// names ([`genai`] then looks none up); a reader that cannot tell
    /// cheaply says true.
    fn may_carry_phases(&self) -> bool {
        true
    }

    fn find_str(&self, key: &str) -> Option<&'a str> {
        match self.find(key)? {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'a> Attrs<'a> for &'a [KeyValue] {
    fn find(&self, key: &str) -> Option<Val<'a>> {
        let kv = self.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Val::Str(s),
            Some(Value::IntValue(i)) => Val::Int(*i),
            Some(Value::DoubleValue(d)) => Val::Double(*d),
            Some(Value::BoolValue(b)) => Val::Bool(*b),
            _ => Val::Other,
        })
    }
}

/// The fields of one span the rules read, borrowed from either reader.
#[derive(Debug, Clone)]
pub(crate) struct SpanFields<'a, A> {
    /// The raw `SpanKind` number.
    pub(crate) kind: i32,
    pub(crate) name: &'a str,
    pub(crate) has_parent: bool,
    pub(crate) start_time_unix_nano: u64,
    pub(crate) end_time_unix_nano: u64,
    /// Status present with code ERROR.
    pub(crate) status_error: bool,
    pub(crate) trace_id: &'a [u8],
    pub(crate) attributes: A,
}

impl<'a> SpanFields<'a, &'a [KeyValue]> {
    fn of(span: &'a Span) -> Self {
        Self {
            kind: span.kind,
            name: &span.name,
            has_parent: !span.parent_span_id.is_empty(),
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            status_error: span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32),
            trace_id: &span.trace_id,
            attributes: span.attributes.as_slice(),
        }
    }
}

/// Why a span or log record cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// It breaks the data model (no timestamps, ends before it starts).
    Invalid(&'static str),
    /// Its duration is outside `extract.min_duration..=extract.max_duration`.
    Implausible,
}

impl Unusable {
    /// The reason, for `partial_success`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Unusable::Invalid(reason) => reason,
            Unusable::Implausible => {
                "duration outside extract.min_duration..extract.max_duration (implausible)"
            }
        }
    }
}

/// Counts what became of each span of one request: the one place the
/// report is written, for both readers.
#[derive(Debug)]
pub(crate) struct Tally {
    report: ExtractReport,
    max_name_length: usize,
}

impl Tally {
    pub(crate) fn new(config: &ExtractConfig) -> Self {
        Self {
            report: ExtractReport::default(),
            max_name_length: config.max_name_length,
        }
    }

    /// Counts one span's outcome; the sample when there is one, its names
    /// cut to `extract.max_name_length`.
    pub(crate) fn count<'a, A>(
        &mut self,
        span: &SpanFields<'a, A>,
        result: Result<Option<SampleRef<'a>>, Unusable>,
    ) -> Option<SampleRef<'a>> {
        match result {
            Ok(Some(mut sample)) => {
                self.report.samples += 1;
                self.report.truncated += sample.bound_names(self.max_name_length);
                Some(sample)
            }
            Ok(None) => {
                self.report.ignored += 1;
                None
            }
            Err(unusable) => {
                self.report.implausible += u64::from(unusable == Unusable::Implausible);
                self.report.reject(format_args!(
                    "span {:?} (trace {}): {}",
                    truncate(span.name, 64),
                    hex(span.trace_id),
                    unusable.reason()
                ));
                None
            }
        }
    }

    pub(crate) fn finish(self) -> ExtractReport {
        self.report.finish()
    }
}

impl ExtractReport {
    /// Counts one item that cannot be used; the first [`MAX_REASONS`]
    /// reasons are spelled out for `partial_success`.
    pub(crate) fn reject(&mut self, why: std::fmt::Arguments<'_>) {
        self.rejected += 1;
        if self.rejected as usize > MAX_REASONS {
            return;
        }
        if !self.message.is_empty() {
            self.message.push_str("; ");
        }
        let _ = self.message.write_fmt(why);
    }

    /// The report, with how many reasons were left out.
    pub(crate) fn finish(mut self) -> Self {
        if self.rejected as usize > MAX_REASONS {
            let _ = write!(
                self.message,
                "; and {} more",
                self.rejected as usize - MAX_REASONS
            );
        }
        self
    }
}

/// Appends one [`Sample`] per usable span of `request` to `out`.
///
/// The reference reader: [`wire::scan`] must agree with it on every request
/// (a property test checks it); the JSON paths use it.
pub fn extract(
    request: &ExportTraceServiceRequest,
    config: &ExtractConfig,
    interner: &mut Interner,
    out: &mut Vec<Sample>,
) -> ExtractReport {
    let mut tally = Tally::new(config);
    for resource_spans in &request.resource_spans {
        let resource_attrs: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let service = service_of(&resource_attrs);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let fields = SpanFields::of(span);
                let result = sample_of(&fields, service, &resource_attrs, config);
                if let Some(sample) = tally.count(&fields, result) {
                    genai::phases(&fields.attributes, &sample, config, |phase| {
                        out.push(interner.intern(phase));
                    });
                    out.push(interner.intern(sample));
                }
            }
        }
    }
    tally.finish()
}

/// `service.name` of a resource, or [`UNKNOWN_SERVICE`].
pub(crate) fn service_of<'a>(resource_attrs: &impl Attrs<'a>) -> &'a str {
    resource_attrs
        .find_str(keys::SERVICE_NAME)
        .unwrap_or(UNKNOWN_SERVICE)
}

/// The sample of one span: `Ok(None)` when the span is not measured,
/// `Err(reason)` when it cannot be used. The rules of `DESIGN.md`, once.
pub(crate) fn sample_of<'a, A: Attrs<'a>, R: Attrs<'a>>(
    span: &SpanFields<'a, A>,
    service: &'a str,
    resource_attrs: &R,
    config: &ExtractConfig,
) -> Result<Option<SampleRef<'a>>, Unusable> {
    let attrs = &span.attributes;
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let is_request = matches!(kind, SpanKind::Server | SpanKind::Consumer) || !span.has_parent;
    let is_db_call =
        kind == SpanKind::Client && keys::DB_SYSTEM.iter().any(|key| attrs.find(key).is_some());
    if !is_request && !is_db_call {
        return Ok(None);
    }
    if span.start_time_unix_nano == 0 || span.end_time_unix_nano == 0 {
        return Err(Unusable::Invalid(
            "missing start_time_unix_nano or end_time_unix_nano",
        ));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(Unusable::Invalid(
            "end_time_unix_nano is before start_time_unix_nano",
        ));
    }
    let trace_id = span.trace_id.try_into().unwrap_or([0; 16]);
    let version = config
        .version_attributes
        .iter()
        .find_map(|key| attrs.find_str(key).or_else(|| resource_attrs.find_str(key)))
        .filter(|v| !v.is_empty())
        .unwrap_or(UNKNOWN_VERSION);
    let time_ms = span.end_time_unix_nano / 1_000_000;
    if !is_request {
        return Ok(Some(SampleRef {
            service,
            phase: Phase::Request,
            input: None,
            endpoint: Cow::Borrowed(""),
            dims: Vec::new(),
            version,
            trace_id,
            time_ms,
            kind: SampleKind::DbCall,
        }));
    }
    let duration = Duration::from_nanos(span.end_time_unix_nano - span.start_time_unix_nano);
    if !config.plausible(duration) {
        return Err(Unusable::Implausible);
    }
    let dims = if config.dimensions.is_empty() {
        // Not even the call that collects nothing, once per span.
        Vec::new()
    } else {
        config
            .dimensions
            .iter()
            .map(|key| {
                attrs
                    .find(key)
                    .or_else(|| resource_attrs.find(key))
                    .map(value_string)
                    .unwrap_or_default()
            })
            .collect()
    };
    Ok(Some(SampleRef {
        service,
        phase: Phase::Request,
        input: None,
        endpoint: endpoint_of(span, &config.endpoints),
        dims,
        version,
        trace_id,
        time_ms,
        kind: SampleKind::Request {
            duration,
            outcome: outcome_of(attrs, span.status_error, duration, config.timeout),
        },
    }))
}

fn endpoint_of<'a, A: Attrs<'a>>(
    span: &SpanFields<'a, A>,
    templates: &EndpointTemplates,
) -> Cow<'a, str> {
    let attrs = &span.attributes;
    let found = |key: &str| attrs.find_str(key).filter(|v| !v.is_empty());
    if let Some(route) = found(keys::ROUTE) {
        return Cow::Borrowed(endpoint_name(route));
    }
    match keys::RAW_PATH.iter().find_map(|key| found(key)) {
        Some(path) => templated(path, templates),
        None => Cow::Borrowed(endpoint_name(span.name)),
    }
}

/// A raw path's endpoint: its template ([`template::template`]), named as
/// series name endpoints ([`endpoint_name`]).
pub(crate) fn templated<'a>(path: &'a str, templates: &EndpointTemplates) -> Cow<'a, str> {
    match template::template(path, templates) {
        Cow::Borrowed(path) => Cow::Borrowed(endpoint_name(path)),
        owned => owned,
    }
}

/// An endpoint as series name it: `*` (an `OPTIONS *` request's target)
/// is `/*`, since `*` names a version's judgement across all its endpoints.
pub(crate) fn endpoint_name(endpoint: &str) -> &str {
    if endpoint == ALL_ENDPOINTS {
        "/*"
    } else {
        endpoint
    }
}

fn outcome_of<'a>(
    attrs: &impl Attrs<'a>,
    status_error: bool,
    duration: Duration,
    timeout: Option<Duration>,
) -> Outcome {
    let status_code = keys::STATUS_CODE
        .iter()
        .find_map(|key| attrs.find(key).and_then(value_int));
    let error_type_is_timeout = attrs.find_str(keys::ERROR_TYPE).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("timeout") || t.contains("timed out") || t.contains("deadline")
    });
    // gRPC status 4 is DEADLINE_EXCEEDED.
    let grpc_deadline = attrs.find(keys::GRPC_STATUS).and_then(value_int) == Some(4);
    if error_type_is_timeout
        || matches!(status_code, Some(408 | 504))
        || grpc_deadline
        || timeout.is_some_and(|limit| duration >= limit)
    {
        return Outcome::Timeout;
    }
    if status_error || status_code.is_some_and(|c| (500..600).contains(&c)) {
        return Outcome::Error;
    }
    Outcome::Ok
}

fn value_int(value: Val<'_>) -> Option<i64> {
    match value {
        Val::Int(i) => Some(i),
        // Some instrumentations send the status code as a string.
        Val::Str(s) => s.trim().parse().ok(),
        Val::Double(d) if d.fract() == 0.0 => Some(d as i64),
        _ => None,
    }
}

fn value_string(value: Val<'_>) -> Cow<'_, str> {
    match value {
        Val::Str(s) => Cow::Borrowed(s),
        Val::Int(i) => Cow::Owned(i.to_string()),
        Val::Double(d) => Cow::Owned(d.to_string()),
        Val::Bool(b) => Cow::Owned(b.to_string()),
        Val::Other => Cow::Borrowed(""),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_fixture::{attr_int, attr_str, SpanSpec};

    fn config() -> ExtractConfig {
        ExtractConfig::default()
    }

    fn extract_with(
        request: &ExportTraceServiceRequest,
        config: &ExtractConfig,
        out: &mut Vec<Sample>,
    ) -> ExtractReport {
        extract(request, config, &mut Interner::new(64), out)
    }

    fn one(spec: SpanSpec) -> (ExtractReport, Vec<Sample>) {
        let mut out = Vec::new();
        let report = extract_with(&spec.into_request(), &config(), &mut out);
        (report, out)
    }

    fn request_of(sample: &Sample) -> (&EndpointKey, Duration, Outcome) {
        match sample.kind {
            SampleKind::Request { duration, outcome } => {
                (&sample.series.endpoint, duration, outcome)
            }
            _ => panic!("expected a request, got {sample:?}"),
        }
    }

    #[test]
    fn server_span_becomes_a_request_sample() {
        let (report, out) = one(SpanSpec::server("lending-api", "POST /risk-score", 120)
            .attr(attr_str("http.route", "/risk-score"))
            .attr(attr_str("model.version", "v1.2")));
        assert_eq!(report.samples, 1);
        let (endpoint, duration, outcome) = request_of(&out[0]);
        assert_eq!(endpoint.service, "lending-api");
        assert_eq!(endpoint.endpoint, "/risk-score");
        assert_eq!(out[0].version(), "v1.2");
        assert_eq!(duration, Duration::from_millis(120));
        assert_eq!(outcome, Outcome::Ok);
    }

    #[test]
    fn version_lookup_follows_the_configured_order_span_before_resource() {
        // service.version on the resource loses to a model attribute on the span.
        let spec = SpanSpec::server("svc", "op", 5)
            .resource_attr(attr_str("service.version", "2.0.0"))
            .attr(attr_str("gen_ai.request.model", "gpt-x"));
        assert_eq!(one(spec).1[0].version(), "gpt-x");
        // model.version on the resource wins over gen_ai.* on the span: the
        // list's order decides, the span only breaks ties for one key.
        let spec = SpanSpec::server("svc", "op", 5)
            .resource_attr(attr_str("model.version", "m7"))
            .attr(attr_str("gen_ai.request.model", "gpt-x"));
        assert_eq!(one(spec).1[0].version(), "m7");
        let spec = SpanSpec::server("svc", "op", 5)
            .resource_attr(attr_str("model.version", "m7"))
            .attr(attr_str("model.version", "m8"));
        assert_eq!(one(spec).1[0].version(), "m8");
    }

    #[test]
    fn span_without_version_counts_as_unknown() {
        let (report, out) = one(SpanSpec::server("svc", "op", 5));
        assert_eq!(report.samples, 1);
        assert_eq!(out[0].version(), UNKNOWN_VERSION);
    }

    #[test]
    fn endpoint_falls_back_from_route_to_path_to_name() {
        let spec = SpanSpec::server("svc", "GET", 5).attr(attr_str("url.path", "/a/b"));
        assert_eq!(request_of(&one(spec).1[0]).0.endpoint, "/a/b");
        let spec = SpanSpec::server("svc", "GET", 5).attr(attr_str("http.target", "/t?x=1"));
        assert_eq!(request_of(&one(spec).1[0]).0.endpoint, "/t");
        // A raw path is a template; a route is kept as it is.
        let spec = SpanSpec::server("svc", "GET", 5).attr(attr_str("url.path", "/users/18273"));
        assert_eq!(request_of(&one(spec).1[0]).0.endpoint, "/users/{id}");
        let spec = SpanSpec::server("svc", "GET", 5)
            .attr(attr_str("url.path", "/users/18273"))
            .attr(attr_str("http.route", "/users/:user"));
        assert_eq!(request_of(&one(spec).1[0]).0.endpoint, "/users/:user");
        let spec = SpanSpec::server("svc", "GET /x", 5);
        assert_eq!(request_of(&one(spec).1[0]).0.endpoint, "GET /x");
    }

    #[test]
    fn outcomes_follow_design() {
        let cases = [
            (
                SpanSpec::server("s", "o", 5).attr(attr_str("error.type", "TimeoutError")),
                Outcome::Timeout,
            ),
            (
                SpanSpec::server("s", "o", 5).attr(attr_int("http.response.status_code", 504)),
                Outcome::Timeout,
            ),
            (
                SpanSpec::server("s", "o", 5).attr(attr_int("http.status_code", 408)),
                Outcome::Timeout,
            ),
            (
                SpanSpec::server("s", "o", 5).attr(attr_int("rpc.grpc.status_code", 4)),
                Outcome::Timeout,
            ),
            (
                SpanSpec::server("s", "o", 5).attr(attr_int("http.response.status_code", 503)),
                Outcome::Error,
            ),
            (SpanSpec::server("s", "o", 5).status_error(), Outcome::Error),
            (
                SpanSpec::server("s", "o", 5).attr(attr_int("http.response.status_code", 404)),
                Outcome::Ok,
            ),
        ];
        for (spec, want) in cases {
            let (_, out) = one(spec);
            assert_eq!(request_of(&out[0]).2, want, "{out:?}");
        }
    }

    #[test]
    fn duration_reaching_the_configured_timeout_is_a_timeout() {
        let config = ExtractConfig {
            timeout: Some(Duration::from_millis(750)),
            ..ExtractConfig::default()
        };
        let mut out = Vec::new();
        extract_with(
            &SpanSpec::server("s", "o", 750).into_request(),
            &config,
            &mut out,
        );
        extract_with(
            &SpanSpec::server("s", "o", 749).into_request(),
            &config,
            &mut out,
        );
        assert_eq!(request_of(&out[0]).2, Outcome::Timeout);
        assert_eq!(request_of(&out[1]).2, Outcome::Ok);
    }

    #[test]
    fn only_requests_and_database_calls_are_measured() {
        let internal_child = SpanSpec::internal("svc", "compute", 3);
        let http_client = SpanSpec::client("svc", "GET upstream", 3);
        let db_client =
            SpanSpec::client("svc", "SELECT", 3).attr(attr_str("db.system", "postgresql"));
        let db_client_new =
            SpanSpec::client("svc", "SELECT", 3).attr(attr_str("db.system.name", "mysql"));
        let root_internal = SpanSpec::internal("svc", "job", 3).root();
        let (r, out) = one(internal_child);
        assert_eq!((r.samples, r.ignored), (0, 1));
        assert!(out.is_empty());
        assert_eq!(one(http_client).0.ignored, 1);
        assert_eq!(one(db_client).1[0].kind, SampleKind::DbCall);
        assert_eq!(one(db_client_new).1[0].kind, SampleKind::DbCall);
        assert!(matches!(
            one(root_internal).1[0].kind,
            SampleKind::Request { .. }
        ));
    }

    #[test]
    fn unusable_spans_are_rejected_with_a_reason() {
        let (report, out) = one(SpanSpec::server("svc", "backwards", 5).end_before_start());
        assert_eq!((report.samples, report.rejected), (0, 1));
        assert!(out.is_empty());
        assert!(report.message.contains("backwards"), "{}", report.message);
        assert!(
            report.message.contains("before start"),
            "{}",
            report.message
        );
        let (report, _) = one(SpanSpec::server("svc", "no-time", 5).no_timestamps());
        assert_eq!(report.rejected, 1);
        assert!(report.message.contains("missing"), "{}", report.message);
    }

    #[test]
    fn implausible_durations_are_refused_and_counted_apart() {
        // A day is the default limit: 1e12 ms (31 years) is refused.
        let (report, out) = one(SpanSpec::server("svc", "absurd", 1_000_000_000_000));
        assert_eq!(
            (report.samples, report.rejected, report.implausible),
            (0, 1, 1)
        );
        assert!(out.is_empty());
        assert!(
            report.message.contains("extract.max_duration"),
            "{}",
            report.message
        );
        let (report, _) = one(SpanSpec::server("svc", "a day", 86_400_000));
        assert_eq!((report.samples, report.implausible), (1, 0));
        // The wire reader agrees.
        let bytes = prost::Message::encode_to_vec(
            &SpanSpec::server("svc", "absurd", 1_000_000_000_000).into_request(),
        );
        let report = wire::scan(&bytes, &config(), |_| {}).unwrap();
        assert_eq!((report.rejected, report.implausible), (1, 1));
    }

    #[test]
    fn names_are_cut_to_the_configured_length_and_counted() {
        let long = "é".repeat(200);
        let (report, out) = one(SpanSpec::server(&long, "op", 5)
            .attr(attr_str("http.route", &format!("/{long}")))
            .attr(attr_str("model.version", "v1")));
        assert_eq!(report.truncated, 2);
        let name = &out[0].series.endpoint;
        assert!(name.service.len() <= 256 && name.service.len() >= 254);
        assert!(name.endpoint.starts_with("/é") && name.endpoint.len() <= 256);
        assert_eq!(out[0].version(), "v1");
    }

    #[test]
    fn rejection_message_stays_short_for_many_bad_spans() {
        let request = modelgate_fixture::request_of(
            (0..50).map(|i| SpanSpec::server("svc", &format!("bad{i}"), 5).end_before_start()),
        );
        let mut out = Vec::new();
        let report = extract_with(&request, &config(), &mut out);
        assert_eq!(report.rejected, 50);
        assert!(
            report.message.ends_with("and 47 more"),
            "{}",
            report.message
        );
    }

    #[test]
    fn extra_dimensions_are_read_in_order() {
        let config = ExtractConfig {
            dimensions: vec!["region".into(), "tier".into()],
            ..ExtractConfig::default()
        };
        let spec = SpanSpec::server("s", "o", 5)
            .resource_attr(attr_str("region", "eu"))
            .attr(attr_int("tier", 2));
        let mut out = Vec::new();
        extract_with(&spec.into_request(), &config, &mut out);
        assert_eq!(
            request_of(&out[0]).0.dims,
            vec!["eu".to_owned(), "2".to_owned()]
        );
    }

    #[test]
    fn missing_service_name_is_unknown_service() {
        let mut request = SpanSpec::server("x", "o", 5).into_request();
        request.resource_spans[0].resource = None;
        let mut out = Vec::new();
        extract_with(&request, &config(), &mut out);
        assert_eq!(out[0].service(), UNKNOWN_SERVICE);
    }
}
