//! Metrics as latency: one data point of a histogram metric -> one
//! [`Sample`] of many requests.
//!
//! Many services export the standard per-request histograms
//! (`http.server.request.duration`, `rpc.server.duration`,
//! `gen_ai.server.request.duration`, the spanmetrics connector's
//! `traces.span.metrics.duration`) and sample their traces at a few
//! percent; their histograms hold every request. A point of a metric named
//! in `extract.metrics.histograms` is read here: its series from the point's
//! and resource's attributes by the same lookups as a span's (version
//! attributes, dimensions, `http.route` or a raw path made a template), its
//! outcome from the point's attributes as a span's is (`error.type`, the
//! HTTP or gRPC status, the spanmetrics connector's `status.code`), and its
//! buckets in milliseconds ([`Point`]). The aggregator turns the buckets
//! into requests: a cumulative point's increase since its stream's last
//! point, then the buckets onto its sketch (`aggregate::histogram`).
//!
//! Like the other readers this stage is pure and never drops a point
//! silently: a point of another metric, of a metric that is not a
//! histogram, or of a span kind that is not a request is accepted and
//! ignored; one that cannot be read (buckets that do not add up to its
//! count, bounds out of order, negative durations, no time) is rejected
//! with the reason, for `partial_success`.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
};

use super::{
    endpoint_name, keys, outcome_of, templated, value_string, Attrs, ExtractReport, Interner,
    Outcome, Sample, SampleKind, SampleRef, Unusable, UNKNOWN_SERVICE, UNKNOWN_VERSION,
};
use crate::config::{DurationUnit, ExtractConfig, HistogramMetric};

/// At most this many buckets in one point (the SDKs' exponential default
/// is 160): a point's buckets are kept as its stream's reference.
pub const MAX_BUCKETS: usize = 4096;

/// Exponential histogram scales read: the OpenTelemetry SDKs start at 20
/// and go down as the range widens; below -10 one bucket spans 2^1024.
const SCALES: std::ops::RangeInclusive<i32> = -10..=20;

/// The spanmetrics connector's span kind dimension: only server and
/// consumer spans are requests.
const SPAN_KIND: &str = "span.kind";
/// The spanmetrics connector's span status dimension.
const STATUS_CODE: &str = "status.code";
/// Endpoint attributes of metrics beyond those of spans: the spanmetrics
/// connector's span name, the RPC method, the GenAI operation.
const SPAN_NAME: &str = "span.name";
const RPC_SERVICE: &str = "rpc.service";
const RPC_METHOD: &str = "rpc.method";
const GEN_AI_OPERATION: &str = "gen_ai.operation.name";

/// One histogram data point as the aggregator needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// How its requests ended (all of them; those in buckets at or over
    /// `timeout_ms` are timeouts).
    pub outcome: Outcome,
    /// The counts, with bounds in milliseconds.
    pub buckets: Buckets,
    /// `Some` for a cumulative point: the stream it belongs to, whose
    /// previous point the aggregator subtracts.
    pub cumulative: Option<Stream>,
    /// The smallest and largest value, ms, when the point carries them and
    /// they are about its requests (delta points only: a cumulative
    /// point's are about its stream's whole life).
    pub min_ms: Option<f64>,
    /// See `min_ms`.
    pub max_ms: Option<f64>,
    /// `extract.timeout` in ms: requests in a bucket whose every value
    /// reaches it are timeouts.
    pub timeout_ms: Option<f64>,
}

/// A point's bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Buckets {
    /// Bucket `i` holds `(bounds_ms[i-1], bounds_ms[i]]`, the first
    /// everything up to `bounds_ms[0]`, the last everything over the last
    /// bound; `counts.len() == bounds_ms.len() + 1`.
    Explicit {
        /// Strictly ascending, finite.
        bounds_ms: Vec<f64>,
        /// Per bucket.
        counts: Vec<u64>,
    },
    /// The OpenTelemetry base-2 exponential histogram: bucket `offset + i`
    /// holds `(base^(offset+i), base^(offset+i+1)]` of the metric's unit,
    /// `base = 2^(2^-scale)`.
    Exponential {
        /// In [`SCALES`].
        scale: i32,
        /// Milliseconds per unit of the metric.
        unit_ms: f64,
        /// Values at most the zero threshold.
        zero: u64,
        /// Index of the first count.
        offset: i32,
        /// Per bucket.
        counts: Vec<u64>,
    },
}

impl Buckets {
    /// Requests counted.
    pub fn total(&self) -> u64 {
        match self {
            Buckets::Explicit { counts, .. } => counts.iter().fold(0, |a, c| a.saturating_add(*c)),
            Buckets::Exponential { zero, counts, .. } => {
                counts.iter().fold(*zero, |a, c| a.saturating_add(*c))
            }
        }
    }

    /// The least value (ms) the highest bucket that holds requests allows:
    /// some request took at least this long. 0 for none.
    fn surely_reached_ms(&self) -> f64 {
        match self {
            Buckets::Explicit { bounds_ms, counts } => counts
                .iter()
                .rposition(|c| *c > 0)
                .and_then(|k| bounds_ms.get(k.checked_sub(1)?))
                .map_or(0.0, |b| b.max(0.0)),
            Buckets::Exponential {
                scale,
                unit_ms,
                offset,
                counts,
                ..
            } => counts.iter().rposition(|c| *c > 0).map_or(0.0, |i| {
                // base^index, base = 2^(2^-scale).
                let index = f64::from(*offset) + i as f64;
                (index * f64::from(-*scale).exp2()).exp2() * unit_ms
            }),
        }
    }
}

/// Which cumulative stream a point belongs to: the same resource, scope,
/// metric and point attributes make the same stream (the OpenTelemetry
/// data model's identity), hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// The identity's hash.
    pub id: u64,
    /// `start_time_unix_nano`: a new one is a reset (a restarted process).
    pub start_ns: u64,
    /// `time_unix_nano`.
    pub time_ns: u64,
}

/// Appends one [`Sample`] per readable data point of a mapped histogram
/// metric in `request` to `out`.
pub fn extract_metrics(
    request: &ExportMetricsServiceRequest,
    config: &ExtractConfig,
    interner: &mut Interner,
    out: &mut Vec<Sample>,
) -> ExtractReport {
    let mut report = ExtractReport::default();
    for resource_metrics in &request.resource_metrics {
        let resource: &[KeyValue] = resource_metrics
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                let mapping = config.metrics.histogram(&metric.name);
                let (Some(mapping), Some(data)) = (mapping, &metric.data) else {
                    report.ignored += point_count(metric);
                    continue;
                };
                let scope = scope_metrics.scope.as_ref();
                let stream = StreamOf {
                    resource,
                    scope: scope.map_or("", |s| s.name.as_str()),
                    scope_version: scope.map_or("", |s| s.version.as_str()),
                    metric: &metric.name,
                };
                let read = Reader {
                    config,
                    mapping,
                    metric,
                    resource,
                    stream,
                };
                let mut take =
                    |index: usize, attrs, result: Result<Option<Parsed>, String>| match result
                        .and_then(|parsed| read.sample(attrs, parsed))
                    {
                        Ok(Some(mut sample)) => {
                            report.samples += 1;
                            report.truncated += sample.bound_names(config.max_name_length);
                            out.push(interner.intern(sample));
                        }
                        Ok(None) => report.ignored += 1,
                        Err(reason) => {
                            report.implausible +=
                                u64::from(reason == Unusable::Implausible.reason());
                            report.reject(format_args!(
                                "metric {:?} point {index}: {reason}",
                                super::truncate(&metric.name, 64),
                            ));
                        }
                    };
                let unit_ms = read.unit_ms();
                match data {
                    Data::Histogram(h) => {
                        let temporality = h.aggregation_temporality;
                        for (i, p) in h.data_points.iter().enumerate() {
                            take(i, &p.attributes, explicit(p, temporality, unit_ms));
                        }
                    }
                    Data::ExponentialHistogram(h) => {
                        let temporality = h.aggregation_temporality;
                        for (i, p) in h.data_points.iter().enumerate() {
                            take(i, &p.attributes, exponential(p, temporality, unit_ms));
                        }
                    }
                    // A gauge, sum or summary of that name: not requests.
                    _ => report.ignored += point_count(metric),
                }
            }
        }
    }
    report.finish()
}

/// The data points of `metric`, whatever its type.
fn point_count(metric: &Metric) -> u64 {
    let n = match &metric.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    };
    n as u64
}

/// What a point's buckets and times say, before its series is named.
#[derive(Debug)]
struct Parsed {
    buckets: Buckets,
    cumulative: bool,
    start_ns: u64,
    time_ns: u64,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
}

/// Whether `temporality` is cumulative (`Ok(false)`: delta).
fn is_cumulative(temporality: i32) -> Result<bool, String> {
    match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Delta) => Ok(false),
        Ok(AggregationTemporality::Cumulative) => Ok(true),
        _ => Err(format!(
            "aggregation_temporality {temporality} is neither delta (1) nor cumulative (2)"
        )),
    }
}

/// A finite value in the metric's unit, in ms.
fn ms(value: f64, unit_ms: f64) -> Option<f64> {
    let v = value * unit_ms;
    v.is_finite().then_some(v)
}

fn explicit(
    p: &HistogramDataPoint,
    temporality: i32,
    unit_ms: f64,
) -> Result<Option<Parsed>, String> {
    let cumulative = is_cumulative(temporality)?;
    if p.bucket_counts.is_empty() {
        if p.count == 0 {
            return Ok(None);
        }
        return Err(format!(
            "{} requests and no bucket counts: no latency to read",
            p.count
        ));
    }
    if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} bounds (one more count than bounds)",
            p.bucket_counts.len(),
            p.explicit_bounds.len()
        ));
    }
    if p.bucket_counts.len() > MAX_BUCKETS {
        return Err(format!("more than {MAX_BUCKETS} buckets"));
    }
    let bounds_ms = p
        .explicit_bounds
        .iter()
        .map(|b| ms(*b, unit_ms))
        .collect::<Option<Vec<f64>>>()
        .ok_or("a bound is not a finite number")?;
    if bounds_ms.windows(2).any(|w| w[0] >= w[1]) {
        return Err("explicit_bounds are not strictly increasing".into());
    }
    let buckets = Buckets::Explicit {
        bounds_ms,
        counts: p.bucket_counts.clone(),
    };
    check_total(&buckets, p.count)?;
    Ok(Some(Parsed {
        buckets,
        cumulative,
        start_ns: p.start_time_unix_nano,
        time_ns: p.time_unix_nano,
        min_ms: p.min.and_then(|v| ms(v, unit_ms)),
        max_ms: p.max.and_then(|v| ms(v, unit_ms)),
    }))
}

fn exponential(
    p: &ExponentialHistogramDataPoint,
    temporality: i32,
    unit_ms: f64,
) -> Result<Option<Parsed>, String> {
    let cumulative = is_cumulative(temporality)?;
    if !SCALES.contains(&p.scale) {
        return Err(format!(
            "scale {} is outside {}..={}",
            p.scale,
            SCALES.start(),
            SCALES.end()
        ));
    }
    if p.negative
        .as_ref()
        .is_some_and(|n| n.bucket_counts.iter().any(|c| *c > 0))
    {
        return Err("negative buckets hold values: a duration is never negative".into());
    }
    let (offset, counts) = p
        .positive
        .as_ref()
        .map_or((0, Vec::new()), |b| (b.offset, b.bucket_counts.clone()));
    if counts.len() > MAX_BUCKETS {
        return Err(format!("more than {MAX_BUCKETS} buckets"));
    }
    let last = i64::from(offset) + counts.len() as i64;
    if i64::from(offset) < -(1 << 30) || last > 1 << 30 {
        return Err(format!("bucket indexes {offset}..{last} are out of range"));
    }
    let buckets = Buckets::Exponential {
        scale: p.scale,
        unit_ms,
        zero: p.zero_count,
        offset,
        counts,
    };
    check_total(&buckets, p.count)?;
    if buckets.total() == 0 && !cumulative {
        return Ok(None);
    }
    Ok(Some(Parsed {
        buckets,
        cumulative,
        start_ns: p.start_time_unix_nano,
        time_ns: p.time_unix_nano,
        min_ms: p.min.and_then(|v| ms(v, unit_ms)),
        max_ms: p.max.and_then(|v| ms(v, unit_ms)),
    }))
}

/// The buckets must hold exactly the point's count (the data model says
/// so; a point that does not is misread either way).
fn check_total(buckets: &Buckets, count: u64) -> Result<(), String> {
    let total = buckets.total();
    if total != count {
        return Err(format!(
            "the buckets hold {total} requests but count is {count}"
        ));
    }
    Ok(())
}

/// What the stream identity hashes, besides a point's own attributes.
#[derive(Debug, Clone, Copy)]
struct StreamOf<'a> {
    resource: &'a [KeyValue],
    scope: &'a str,
    scope_version: &'a str,
    metric: &'a str,
}

impl StreamOf<'_> {
    /// The stream of a point with `attrs`. `DefaultHasher::new` has fixed
    /// keys: the same stream hashes alike on every receiving thread (a
    /// stream is remembered only as long as this process runs).
    fn id(&self, attrs: &[KeyValue]) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.metric.hash(&mut h);
        self.scope.hash(&mut h);
        self.scope_version.hash(&mut h);
        hash_attributes(self.resource, &mut h);
        hash_attributes(attrs, &mut h);
        h.finish()
    }
}

fn hash_attributes(attrs: &[KeyValue], h: &mut impl Hasher) {
    h.write_usize(attrs.len());
    for kv in attrs {
        kv.key.hash(h);
        hash_value(kv.value.as_ref(), h);
    }
}

fn hash_value(value: Option<&AnyValue>, h: &mut impl Hasher) {
    match value.and_then(|v| v.value.as_ref()) {
        None => h.write_u8(0),
        Some(Value::StringValue(s)) => {
            h.write_u8(1);
            s.hash(h);
        }
        Some(Value::BoolValue(b)) => {
            h.write_u8(2);
            b.hash(h);
        }
        Some(Value::IntValue(i)) => {
            h.write_u8(3);
            i.hash(h);
        }
        Some(Value::DoubleValue(d)) => {
            h.write_u8(4);
            d.to_bits().hash(h);
        }
        Some(Value::BytesValue(b)) => {
            h.write_u8(5);
            b.hash(h);
        }
        Some(Value::ArrayValue(a)) => {
            h.write_u8(6);
            h.write_usize(a.values.len());
            for v in &a.values {
                hash_value(Some(v), h);
            }
        }
        Some(Value::KvlistValue(l)) => {
            h.write_u8(7);
            hash_attributes(&l.values, h);
        }
        Some(Value::StringValueStrindex(i)) => {
            h.write_u8(8);
            i.hash(h);
        }
    }
}

/// Reads the points of one mapped metric.
struct Reader<'a> {
    config: &'a ExtractConfig,
    mapping: &'a HistogramMetric,
    metric: &'a Metric,
    resource: &'a [KeyValue],
    stream: StreamOf<'a>,
}

impl<'a> Reader<'a> {
    /// Milliseconds per unit of the metric's values: its own unit when it
    /// is a time unit, else the mapping's.
    fn unit_ms(&self) -> f64 {
        let unit = match self.metric.unit.as_str() {
            "s" => DurationUnit::S,
            "ms" => DurationUnit::Ms,
            "us" | "\u{b5}s" | "\u{3bc}s" => DurationUnit::Us,
            "ns" => DurationUnit::Ns,
            _ => self.mapping.unit,
        };
        unit.seconds(1e3)
    }

    /// The sample of one point: `Ok(None)` when it is not a request.
    fn sample(
        &self,
        attrs: &'a [KeyValue],
        parsed: Option<Parsed>,
    ) -> Result<Option<SampleRef<'a>>, String> {
        let Some(parsed) = parsed else {
            return Ok(None);
        };
        let point = &attrs;
        let resource = &self.resource;
        if point
            .find_str(SPAN_KIND)
            .is_some_and(|k| !matches!(k, "SPAN_KIND_SERVER" | "SPAN_KIND_CONSUMER"))
        {
            return Ok(None);
        }
        if parsed.time_ns == 0 {
            return Err("no time_unix_nano".into());
        }
        // As for a span: one request of absurd duration (a bucket wholly
        // past extract.max_duration, or such a max) refuses its point, so
        // a lying sender cannot place requests at any latency it likes. A
        // cumulative stream that once did stays refused: its counts keep
        // the lie.
        let max_ms = self.config.max_duration.as_secs_f64() * 1e3;
        if parsed.buckets.surely_reached_ms() > max_ms || parsed.max_ms.is_some_and(|m| m > max_ms)
        {
            return Err(Unusable::Implausible.reason().into());
        }
        // The resource's, as for spans; the spanmetrics connector and
        // modelgate's own histograms may carry it on the point.
        let service = resource
            .find_str(keys::SERVICE_NAME)
            .or_else(|| point.find_str(keys::SERVICE_NAME))
            .filter(|s| !s.is_empty())
            .unwrap_or(UNKNOWN_SERVICE);
        let lookup = |key: &str| point.find(key).or_else(|| resource.find(key));
        let lookup_str = |key: &str| {
            point
                .find_str(key)
                .or_else(|| resource.find_str(key))
                .filter(|v| !v.is_empty())
        };
        let version = self
            .config
            .version_attributes
            .iter()
            .find_map(|key| lookup_str(key))
            .unwrap_or(UNKNOWN_VERSION);
        let dims = self
            .config
            .dimensions
            .iter()
            .map(|key| lookup(key).map(value_string).unwrap_or_default())
            .collect();
        let status_error = point.find_str(STATUS_CODE) == Some("STATUS_CODE_ERROR");
        let outcome = outcome_of(point, status_error, std::time::Duration::ZERO, None);
        let stream = parsed.cumulative.then(|| Stream {
            id: self.stream.id(attrs),
            start_ns: parsed.start_ns,
            time_ns: parsed.time_ns,
        });
        Ok(Some(SampleRef {
            service,
            phase: self.mapping.phase,
            // A histogram carries no input size: its first token is never
            // banded.
            input: None,
            endpoint: self.endpoint(&lookup_str),
            dims,
            version,
            trace_id: [0; 16],
            time_ms: parsed.time_ns / 1_000_000,
            kind: SampleKind::Histogram(Box::new(Point {
                outcome,
                buckets: parsed.buckets,
                cumulative: stream,
                min_ms: parsed.min_ms.filter(|_| !parsed.cumulative),
                max_ms: parsed.max_ms.filter(|_| !parsed.cumulative),
                timeout_ms: self.config.timeout.map(|t| t.as_secs_f64() * 1e3),
            })),
        }))
    }

    /// The endpoint: the mapping's attributes, else a span's lookups and
    /// the metrics' own, else the metric's name.
    fn endpoint(&self, lookup: &impl Fn(&str) -> Option<&'a str>) -> Cow<'a, str> {
        if !self.mapping.endpoint_attributes.is_empty() {
            let found = self
                .mapping
                .endpoint_attributes
                .iter()
                .find_map(|key| lookup(key));
            return Cow::Borrowed(endpoint_name(found.unwrap_or(self.fallback())));
        }
        if let Some(route) = lookup(keys::ROUTE) {
            return Cow::Borrowed(endpoint_name(route));
        }
        if let Some(path) = keys::RAW_PATH.iter().find_map(|key| lookup(key)) {
            return templated(path, &self.config.endpoints);
        }
        if let Some(name) = lookup(SPAN_NAME) {
            return Cow::Borrowed(endpoint_name(name));
        }
        if let Some(method) = lookup(RPC_METHOD) {
            return match lookup(RPC_SERVICE) {
                Some(service) => Cow::Owned(format!("{service}/{method}")),
                None => Cow::Borrowed(endpoint_name(method)),
            };
        }
        let name = lookup(GEN_AI_OPERATION).unwrap_or(self.fallback());
        Cow::Borrowed(endpoint_name(name))
    }

    /// The endpoint of a point no attribute names one of: the mapping's
    /// `endpoint`, else the metric's name.
    fn fallback(&self) -> &'a str {
        self.mapping
            .endpoint
            .as_deref()
            .unwrap_or(&self.metric.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::Phase;
    use modelgate_fixture::{attr_str, metrics_request_of, HistogramSpec, HTTP_SERVER_BOUNDS_S};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, NumberDataPoint};

    fn extract(specs: Vec<HistogramSpec>) -> (ExtractReport, Vec<Sample>) {
        extract_with(&metrics_request_of(specs), &ExtractConfig::default())
    }

    fn extract_with(
        request: &ExportMetricsServiceRequest,
        config: &ExtractConfig,
    ) -> (ExtractReport, Vec<Sample>) {
        let mut out = Vec::new();
        let report = extract_metrics(request, config, &mut Interner::new(64), &mut out);
        (report, out)
    }

    fn point(sample: &Sample) -> &Point {
        match &sample.kind {
            SampleKind::Histogram(p) => p,
            other => panic!("not a histogram point: {other:?}"),
        }
    }

    /// An `http.server.request.duration` point of `version` on `route`.
    fn http(route: &str, version: &str, values_s: &[f64]) -> HistogramSpec {
        HistogramSpec::of_values(
            "lending-api",
            "http.server.request.duration",
            "s",
            &HTTP_SERVER_BOUNDS_S,
            values_s,
        )
        .attr(attr_str("http.route", route))
        .attr(attr_str("model.version", version))
    }

    #[test]
    fn an_http_server_histogram_point_is_the_requests_of_its_series() {
        let (report, out) = extract(vec![http("/risk-score", "v1.3", &[0.76, 0.8, 0.71])]);
        assert_eq!((report.samples, report.rejected), (1, 0), "{report:?}");
        let s = &out[0];
        assert_eq!(s.service(), "lending-api");
        assert_eq!(s.series.endpoint.endpoint, "/risk-score");
        assert_eq!(s.version(), "v1.3");
        assert!(s.time_ms > 0);
        let p = point(s);
        assert_eq!(p.outcome, Outcome::Ok);
        assert!(p.cumulative.is_none());
        let Buckets::Explicit { bounds_ms, counts } = &p.buckets else {
            panic!("{p:?}")
        };
        // Seconds became milliseconds; 0.71 s and 0.76 s and 0.8 s.
        assert_eq!(bounds_ms[5], 100.0);
        assert_eq!(counts[8], 1);
        assert_eq!(counts[9], 2);
    }

    #[test]
    fn the_spanmetrics_connector_point_reads_span_name_kind_and_status() {
        let spanmetrics = |kind: &str, status: &str| {
            HistogramSpec::of_values(
                "checkout",
                "traces.span.metrics.duration",
                "ms",
                &[2.0, 4.0, 100.0, 1000.0],
                &[50.0, 60.0],
            )
            .attr(attr_str("span.name", "POST /pay"))
            .attr(attr_str("span.kind", kind))
            .attr(attr_str("status.code", status))
            .attr(attr_str("service.version", "2.1.0"))
        };
        let (report, out) = extract(vec![
            spanmetrics("SPAN_KIND_SERVER", "STATUS_CODE_ERROR"),
            spanmetrics("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"),
            spanmetrics("SPAN_KIND_CONSUMER", "STATUS_CODE_UNSET"),
        ]);
        // The client span's point is not requests of this service.
        assert_eq!((report.samples, report.ignored), (2, 1), "{report:?}");
        assert_eq!(out[0].series.endpoint.endpoint, "POST /pay");
        assert_eq!(out[0].version(), "2.1.0");
        assert_eq!(point(&out[0]).outcome, Outcome::Error);
        assert_eq!(point(&out[1]).outcome, Outcome::Ok);
    }

    #[test]
    fn endpoints_come_from_routes_paths_rpc_methods_or_the_metric() {
        let one = |spec: HistogramSpec| extract(vec![spec]).1[0].series.endpoint.endpoint.clone();
        let base =
            |name: &str, unit: &str| HistogramSpec::of_values("svc", name, unit, &[1.0], &[0.5]);
        assert_eq!(
            one(base("http.server.request.duration", "s").attr(attr_str("url.path", "/users/1234"))),
            "/users/{id}"
        );
        assert_eq!(
            one(base("rpc.server.duration", "ms")
                .attr(attr_str("rpc.service", "lending.Risk"))
                .attr(attr_str("rpc.method", "Score"))),
            "lending.Risk/Score"
        );
        assert_eq!(
            one(base("gen_ai.server.request.duration", "s")
                .attr(attr_str("gen_ai.operation.name", "chat"))),
            "chat"
        );
        assert_eq!(
            one(base("http.server.request.duration", "s")),
            "http.server.request.duration"
        );
    }

    #[test]
    fn a_model_servers_phase_metrics_are_one_endpoints_phases() {
        // vLLM's histograms through a Collector's Prometheus receiver: no
        // endpoint attribute, the model in `model_name`, seconds.
        let of = |metric: &str| {
            let spec =
                HistogramSpec::of_values("vllm-svc", metric, "", &[0.1, 1.0], &[0.05, 0.5, 0.5])
                    .attr(attr_str("model_name", "llama-3-8b-v2"));
            let (report, out) = extract(vec![spec]);
            assert_eq!(report.samples, 1, "{metric}");
            let name = &out[0].series;
            (
                name.endpoint.phase,
                name.endpoint.endpoint.clone(),
                name.version.clone(),
            )
        };
        let version = || "llama-3-8b-v2".to_owned();
        for (metric, phase) in [
            ("vllm:e2e_request_latency_seconds", Phase::Request),
            ("vllm:request_queue_time_seconds", Phase::Queue),
            ("vllm:time_to_first_token_seconds", Phase::FirstToken),
            ("vllm:inter_token_latency_seconds", Phase::PerOutputToken),
        ] {
            assert_eq!(of(metric), (phase, "vllm".to_owned(), version()));
        }
        // The conventions' server metrics: the operation is the endpoint.
        let spec = HistogramSpec::of_values(
            "gw",
            "gen_ai.server.time_per_output_token",
            "s",
            &[0.01, 0.1],
            &[0.005, 0.005, 0.05],
        )
        .attr(attr_str("gen_ai.operation.name", "chat"))
        .attr(attr_str("gen_ai.response.model", "m2"));
        let (_, out) = extract(vec![spec]);
        let name = &out[0].series;
        assert_eq!(
            (
                name.endpoint.phase,
                name.endpoint.endpoint.as_str(),
                name.version.as_str()
            ),
            (Phase::PerOutputToken, "chat", "m2")
        );
    }

    #[test]
    fn a_configured_metric_reads_its_own_attributes_and_unit() {
        let mut config = ExtractConfig::default();
        config.metrics.histograms.push(HistogramMetric {
            name: "app.latency".into(),
            unit: DurationUnit::Us,
            endpoint_attributes: vec!["handler".into()],
            ..HistogramMetric::default()
        });
        let spec = HistogramSpec::of_values("svc", "app.latency", "", &[1000.0], &[10.0])
            .attr(attr_str("handler", "score"))
            .resource_attr(attr_str("service.version", "7"));
        let (report, out) = extract_with(&spec.into_request(), &config);
        assert_eq!(report.samples, 1);
        assert_eq!(out[0].series.endpoint.endpoint, "score");
        assert_eq!(out[0].version(), "7");
        let Buckets::Explicit { bounds_ms, .. } = &point(&out[0]).buckets else {
            panic!()
        };
        assert_eq!(bounds_ms, &vec![1.0]);
    }

    #[test]
    fn cumulative_points_name_their_stream() {
        let at = |route: &str| http(route, "v1", &[0.1]).cumulative(1_000);
        let (_, out) = extract(vec![at("/a"), at("/a"), at("/b")]);
        let ids: Vec<u64> = out
            .iter()
            .map(|s| point(s).cumulative.unwrap().id)
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert_eq!(point(&out[0]).cumulative.unwrap().start_ns, 1_000);
    }

    #[test]
    fn other_metrics_and_types_are_accepted_and_ignored() {
        let mut request = metrics_request_of([http("/a", "v1", &[0.1])]);
        let metrics = &mut request.resource_metrics[0].scope_metrics[0].metrics;
        metrics.push(Metric {
            name: "http.server.request.duration".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); 2],
            })),
            ..Metric::default()
        });
        metrics.push(Metric {
            name: "process.cpu.time".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); 3],
            })),
            ..Metric::default()
        });
        let (report, out) = extract_with(&request, &ExtractConfig::default());
        assert_eq!((report.samples, report.ignored, report.rejected), (1, 5, 0));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn points_that_cannot_be_read_are_rejected_with_the_reason() {
        let name = "http.server.request.duration";
        let cases: Vec<(HistogramSpec, &str)> = vec![
            (
                HistogramSpec::explicit("s", name, "s", &[0.1, 0.2], &[1, 2]),
                "2 bucket counts for 2 bounds",
            ),
            (
                HistogramSpec::explicit("s", name, "s", &[0.2, 0.1], &[1, 2, 3]),
                "not strictly increasing",
            ),
            (
                HistogramSpec::exponential("s", name, "s", 21, 0, &[1]),
                "scale 21 is outside",
            ),
            (http("/a", "v1", &[0.1]).at(0), "no time_unix_nano"),
        ];
        for (spec, why) in cases {
            let (report, out) = extract(vec![spec]);
            assert_eq!(report.rejected, 1, "{why}: {report:?}");
            assert!(out.is_empty());
            assert!(report.message.contains(why), "{why}: {}", report.message);
            assert!(report.message.contains(name), "{}", report.message);
        }
        // Buckets that do not add up to the count.
        let mut request = http("/a", "v1", &[0.1]).into_request();
        if let Some(Data::Histogram(h)) =
            &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            h.data_points[0].count = 5;
            h.aggregation_temporality = 1;
        }
        let (report, _) = extract_with(&request, &ExtractConfig::default());
        assert!(
            report.message.contains("hold 1 requests but count is 5"),
            "{}",
            report.message
        );
        if let Some(Data::Histogram(h)) =
            &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            h.data_points[0].count = 1;
            h.aggregation_temporality = 0;
        }
        let (report, _) = extract_with(&request, &ExtractConfig::default());
        assert!(
            report.message.contains("aggregation_temporality 0"),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_point_with_a_request_past_max_duration_is_implausible() {
        let name = "http.server.request.duration";
        // A day is the default bound: 2^17 s (36 h) at scale 0 is past it.
        let mut max_lies = http("/a", "v1", &[0.1]).into_request();
        if let Some(Data::Histogram(h)) =
            &mut max_lies.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            h.data_points[0].max = Some(1e9);
        }
        let liars = [
            HistogramSpec::exponential("s", name, "s", 0, 17, &[1]).into_request(),
            HistogramSpec::explicit("s", name, "s", &[0.1, 1e9, 2e9], &[5, 0, 1, 0]).into_request(),
            max_lies,
        ];
        for liar in liars {
            let (report, out) = extract_with(&liar, &ExtractConfig::default());
            assert_eq!(
                (report.rejected, report.implausible, out.len()),
                (1, 1, 0),
                "{report:?}"
            );
        }
        // The same shapes within a day are read.
        let honest = [
            HistogramSpec::exponential("s", name, "s", 0, 16, &[1]),
            HistogramSpec::explicit("s", name, "s", &[0.1, 1e9, 2e9], &[5, 1, 0, 0]),
        ];
        for spec in honest {
            let (report, out) = extract(vec![spec]);
            assert_eq!((report.rejected, out.len()), (0, 1), "{report:?}");
        }
    }
}
