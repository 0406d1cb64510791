//! Logs as latency: one log record (OTLP) or one JSON log line -> at most one
//! request [`Sample`], through a configurable [`LogMapping`].
//!
//! Many services never emit spans but log every request with its duration,
//! version and status; the lending incident was found in such logs. A
//! mapping names those fields; the lending format is the default (the
//! built-in preset). A field is looked up in the record's attributes (where
//! the OpenTelemetry Collector's `json_parser` puts a parsed line), then in a
//! map body, then in a body that is itself a JSON object, then in the
//! resource's attributes.
//!
//! Like the span extractor this stage is pure and never drops a record
//! silently: a record that cannot be mapped is rejected with the field that
//! was missing or wrong, and the receiver counts it.

use std::borrow::Cow;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::{
    ExtractReport, Interner, Outcome, Phase, Sample, SampleKind, SampleRef, Unusable,
    UNKNOWN_SERVICE,
};
use crate::config::{ExtractConfig, LogMapping};

/// A field's value as a mapping reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// A string.
    Text(Cow<'a, str>),
    /// A number.
    Number(f64),
}

impl Field<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Field::Text(s) => Cow::Borrowed(s.as_ref()),
            Field::Number(n) => Cow::Owned(n.to_string()),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Field::Number(n) => Some(*n),
            Field::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// One mapped record.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The service, when the mapping's `service_field` found one.
    pub service: Option<String>,
    /// The endpoint.
    pub endpoint: String,
    /// The version.
    pub version: String,
    /// The request's duration.
    pub duration: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// When, unix milliseconds, from the mapping's `time_field` when the
    /// record has it.
    pub time_ms: Option<u64>,
}

impl LogMapping {
    /// Maps one record whose fields `get` looks up, or says which field was
    /// missing or wrong.
    pub fn map<'a>(&self, get: impl Fn(&str) -> Option<Field<'a>>) -> Result<Mapped, String> {
        let text = |name: &str| -> Result<String, String> {
            let value = get(name).ok_or_else(|| format!("no field {name:?}"))?;
            let text = value.text().into_owned();
            if text.is_empty() {
                return Err(format!("field {name:?} is empty"));
            }
            Ok(text)
        };
        let millis = get(&self.duration_field)
            .ok_or_else(|| format!("no field {:?}", self.duration_field))?
            .number()
            .map(|v| self.duration_unit.seconds(v))
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                format!(
                    "field {:?} is not a non-negative number",
                    self.duration_field
                )
            })?;
        let status = get(&self.status_field).map(|s| s.text().into_owned());
        let is = |values: &[String]| {
            status
                .as_deref()
                .is_some_and(|s| values.iter().any(|v| v.eq_ignore_ascii_case(s.trim())))
        };
        let outcome = if is(&self.timeout_values) {
            Outcome::Timeout
        } else if is(&self.error_values) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        let time_ms = match self.time_field.as_deref().and_then(&get) {
            None => None,
            Some(value) => Some(unix_ms(&value).ok_or_else(|| {
                format!(
                    "field {:?} is neither an RFC 3339 time nor a unix time",
                    self.time_field.as_deref().unwrap_or_default()
                )
            })?),
        };
        Ok(Mapped {
            time_ms,
            service: self
                .service_field
                .as_deref()
                .and_then(&get)
                .map(|s| s.text().into_owned())
                .filter(|s| !s.is_empty()),
            endpoint: text(&self.endpoint_field)?,
            version: text(&self.version_field)?,
            duration: millis,
            outcome,
        })
    }

    /// Maps one JSON object (a log line).
    pub fn map_json(&self, value: &serde_json::Value) -> Result<Mapped, String> {
        let object = value.as_object().ok_or("not a JSON object".to_owned())?;
        self.map(|name| json_field(object.get(name)?))
    }
}

/// The request sample of one JSON log line (an object of fields, as the
/// lending incident's log has them), or which field was missing or wrong.
/// Its service is the mapping's `service_field`, else [`UNKNOWN_SERVICE`].
pub fn extract_line(
    line: &serde_json::Value,
    config: &ExtractConfig,
    interner: &mut Interner,
) -> Result<Sample, String> {
    let object = line.as_object().ok_or("not a JSON object".to_owned())?;
    mapped_sample(
        |name: &str| json_field(object.get(name)?),
        None,
        0,
        config,
        interner,
    )
    .map(|(sample, _truncated)| sample)
}

/// The sample of one record whose fields `get` looks up: mapped by
/// `config.logs`, its service the mapping's (else `resource_service`, else
/// [`UNKNOWN_SERVICE`]), its time the mapping's time field, else
/// `record_time_ms` (0: none), its dimensions read the same way; with the
/// number of names cut to `extract.max_name_length`. An implausible
/// duration is refused like a span's.
fn mapped_sample<'a>(
    get: impl Fn(&str) -> Option<Field<'a>>,
    resource_service: Option<&str>,
    record_time_ms: u64,
    config: &ExtractConfig,
    interner: &mut Interner,
) -> Result<(Sample, u64), String> {
    let mapped = config.logs.map(&get)?;
    if !config.plausible(mapped.duration) {
        return Err(Unusable::Implausible.reason().to_owned());
    }
    let dims: Vec<Cow<'_, str>> = config
        .dimensions
        .iter()
        .map(|key| {
            get(key)
                .map(|f| Cow::Owned(f.text().into_owned()))
                .unwrap_or_default()
        })
        .collect();
    let mut sample = SampleRef {
        phase: Phase::Request,
        input: None,
        service: mapped
            .service
            .as_deref()
            .or(resource_service)
            .unwrap_or(UNKNOWN_SERVICE),
        endpoint: super::templated(&mapped.endpoint, &config.endpoints),
        dims,
        version: &mapped.version,
        trace_id: [0; 16],
        time_ms: mapped.time_ms.unwrap_or(record_time_ms),
        kind: SampleKind::Request {
            duration: mapped.duration,
            outcome: mapped.outcome,
        },
    };
    let truncated = sample.bound_names(config.max_name_length);
    Ok((interner.intern(sample), truncated))
}

/// A time field's value in unix milliseconds: an RFC 3339 string
/// (`2026-11-20T17:02:11.204Z`), or a number of unix seconds,
/// milliseconds, microseconds or nanoseconds (told apart by magnitude, as
/// any date after 1973 allows). `None` for anything else, or a time before
/// 1970.
fn unix_ms(value: &Field<'_>) -> Option<u64> {
    if let Field::Text(text) = value {
        if let Ok(time) = humantime::parse_rfc3339_weak(text.trim()) {
            let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
            return u64::try_from(since.as_millis()).ok();
        }
    }
    let n = value.number().filter(|n| n.is_finite() && *n > 0.0)?;
    let ms = if n >= 1e17 {
        n / 1e6
    } else if n >= 1e14 {
        n / 1e3
    } else if n >= 1e11 {
        n
    } else {
        n * 1e3
    };
    // Up to the year 10000: anything later is not a time.
    (ms < 253_402_300_800_000.0).then_some(ms as u64)
}

fn json_field(value: &serde_json::Value) -> Option<Field<'_>> {
    match value {
        serde_json::Value::String(s) => Some(Field::Text(Cow::Borrowed(s))),
        serde_json::Value::Number(n) => n.as_f64().map(Field::Number),
        serde_json::Value::Bool(b) => Some(Field::Text(Cow::Owned(b.to_string()))),
        _ => None,
    }
}

fn any_field(value: &AnyValue) -> Option<Field<'_>> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(Field::Text(Cow::Borrowed(s))),
        Value::IntValue(i) => Some(Field::Number(*i as f64)),
        Value::DoubleValue(d) => Some(Field::Number(*d)),
        Value::BoolValue(b) => Some(Field::Text(Cow::Owned(b.to_string()))),
        _ => None,
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Appends one request [`Sample`] per mappable log record of `request` to
/// `out`, with `config.logs` as the mapping and `config.dimensions` looked
/// up like the mapped fields.
pub fn extract_logs(
    request: &ExportLogsServiceRequest,
    config: &ExtractConfig,
    interner: &mut Interner,
    out: &mut Vec<Sample>,
) -> ExtractReport {
    let mut report = ExtractReport::default();
    let mut index = 0_usize;
    for resource_logs in &request.resource_logs {
        let resource: &[KeyValue] = resource_logs
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let resource_service = find(resource, "service.name").and_then(|v| match &v.value {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        });
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                index += 1;
                match sample_of(record, resource, resource_service, config, interner) {
                    Ok((sample, truncated)) => {
                        report.samples += 1;
                        report.truncated += truncated;
                        out.push(sample);
                    }
                    Err(reason) => {
                        report.implausible += u64::from(reason == Unusable::Implausible.reason());
                        report.reject(format_args!("log record {index}: {reason}"));
                    }
                }
            }
        }
    }
    report.finish()
}

fn sample_of(
    record: &LogRecord,
    resource: &[KeyValue],
    resource_service: Option<&str>,
    config: &ExtractConfig,
    interner: &mut Interner,
) -> Result<(Sample, u64), String> {
    let body = record.body.as_ref().and_then(|b| b.value.as_ref());
    let body_map: &[KeyValue] = match body {
        Some(Value::KvlistValue(list)) => &list.values,
        _ => &[],
    };
    // A body that is a JSON line is parsed once, only when the fields are
    // not already attributes (a collector without `json_parser`).
    let body_json = match body {
        Some(Value::StringValue(s)) if s.trim_start().starts_with('{') => {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).ok()
        }
        _ => None,
    };
    let get = |name: &str| -> Option<Field<'_>> {
        find(&record.attributes, name)
            .and_then(any_field)
            .or_else(|| find(body_map, name).and_then(any_field))
            .or_else(|| body_json.as_ref()?.get(name).and_then(json_field))
            .or_else(|| find(resource, name).and_then(any_field))
    };
    // The mapping's own time field first (the request's time as the
    // application wrote it), then the record's, then when it was observed.
    let nanos_to_ms = |nanos: u64| (nanos > 0).then_some(nanos / 1_000_000);
    let record_time_ms = nanos_to_ms(record.time_unix_nano)
        .or_else(|| nanos_to_ms(record.observed_time_unix_nano))
        .unwrap_or(0);
    let (sample, truncated) =
        mapped_sample(get, resource_service, record_time_ms, config, interner)?;
    // The trace, when the record names one.
    let trace_id = record.trace_id.as_slice().try_into().unwrap_or([0; 16]);
    Ok((sample.in_trace(trace_id), truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn request(service: Option<&str>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: service
                        .map(|s| vec![kv("service.name", Value::StringValue(s.into()))])
                        .unwrap_or_default(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn extract(
        req: &ExportLogsServiceRequest,
        config: &ExtractConfig,
    ) -> (ExtractReport, Vec<Sample>) {
        let mut out = Vec::new();
        let report = extract_logs(req, config, &mut Interner::new(64), &mut out);
        (report, out)
    }

    fn request_of(sample: &Sample) -> (&str, Duration, Outcome) {
        match sample.kind {
            SampleKind::Request { duration, outcome } => {
                (sample.series.endpoint.endpoint.as_str(), duration, outcome)
            }
            _ => panic!("a log is a request, not {sample:?}"),
        }
    }

    #[test]
    fn attributes_as_a_json_parser_leaves_them() {
        let record = LogRecord {
            attributes: vec![
                kv("endpoint", s("/risk-score")),
                kv("responseTimeMs", Value::IntValue(750)),
                kv("status", s("Timeout")),
                kv("modelVersion", s("v1.3")),
            ],
            body: Some(AnyValue {
                value: Some(s("raw line")),
            }),
            ..Default::default()
        };
        let (report, samples) = extract(
            &request(Some("lending-api"), vec![record]),
            &ExtractConfig::default(),
        );
        assert_eq!(report.samples, 1, "{report:?}");
        assert_eq!(samples[0].service(), "lending-api");
        assert_eq!(samples[0].version(), "v1.3");
        assert_eq!(
            request_of(&samples[0]),
            ("/risk-score", Duration::from_millis(750), Outcome::Timeout)
        );
    }

    #[test]
    fn a_json_body_and_a_map_body_both_work() {
        let json = LogRecord {
            body: Some(AnyValue {
                value: Some(s(
                    r#"{"endpoint":"/a","responseTimeMs":"96.5","status":"OK","modelVersion":"v1.2"}"#,
                )),
            }),
            ..Default::default()
        };
        let map = LogRecord {
            body: Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("endpoint", s("/b")),
                        kv("responseTimeMs", Value::DoubleValue(12.0)),
                        kv("status", s("failed")),
                        kv("modelVersion", s("v1.2")),
                    ],
                })),
            }),
            ..Default::default()
        };
        let (report, samples) = extract(&request(None, vec![json, map]), &ExtractConfig::default());
        assert_eq!(report.samples, 2, "{report:?}");
        assert_eq!(samples[0].service(), UNKNOWN_SERVICE);
        assert_eq!(
            request_of(&samples[0]),
            ("/a", Duration::from_micros(96_500), Outcome::Ok)
        );
        assert_eq!(
            request_of(&samples[1]),
            ("/b", Duration::from_millis(12), Outcome::Error)
        );
    }

    #[test]
    fn unmappable_records_are_rejected_with_the_field_named() {
        let records = vec![
            LogRecord {
                body: Some(AnyValue {
                    value: Some(s("GET / 200")),
                }),
                ..Default::default()
            },
            LogRecord {
                attributes: vec![
                    kv("endpoint", s("/a")),
                    kv("responseTimeMs", Value::IntValue(-5)),
                    kv("modelVersion", s("v1")),
                ],
                ..Default::default()
            },
            LogRecord {
                attributes: vec![
                    kv("endpoint", s("/a")),
                    kv("responseTimeMs", Value::IntValue(5)),
                ],
                ..Default::default()
            },
        ];
        let (report, samples) = extract(&request(Some("x"), records), &ExtractConfig::default());
        assert!(samples.is_empty());
        assert_eq!(report.rejected, 3);
        assert!(
            report
                .message
                .contains(r#"log record 1: no field "responseTimeMs""#)
                && report.message.contains(
                    "log record 2: field \"responseTimeMs\" is not a non-negative number"
                )
                && report
                    .message
                    .contains(r#"log record 3: no field "modelVersion""#),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_custom_mapping_with_units_service_and_dimensions() {
        let config: ExtractConfig = serde_json::from_value(serde_json::json!({
            "dimensions": ["region"],
            "logs": {
                "duration_field": "latency_s",
                "duration_unit": "s",
                "version_field": "build",
                "endpoint_field": "route",
                "status_field": "code",
                "service_field": "app",
                "timeout_values": ["504"],
                "error_values": ["500"]
            }
        }))
        .unwrap();
        let record = LogRecord {
            attributes: vec![
                kv("latency_s", Value::DoubleValue(0.25)),
                kv("build", s("b7")),
                kv("route", s("/x")),
                kv("code", Value::IntValue(504)),
                kv("app", s("checkout")),
                kv("region", s("eu")),
            ],
            ..Default::default()
        };
        let (_, samples) = extract(&request(Some("ignored"), vec![record]), &config);
        assert_eq!(samples[0].service(), "checkout");
        assert_eq!(
            request_of(&samples[0]),
            ("/x", Duration::from_millis(250), Outcome::Timeout)
        );
        assert_eq!(samples[0].series.endpoint.dims, vec!["eu".to_owned()]);
    }

    #[test]
    fn json_lines_map_with_the_same_rules() {
        let mapping = LogMapping::lending();
        let line: serde_json::Value = serde_json::from_str(
            r#"{"endpoint":"/risk-score","responseTimeMs":120,"status":"OK","modelVersion":"v1.2"}"#,
        )
        .unwrap();
        let mapped = mapping.map_json(&line).unwrap();
        assert_eq!(mapped.duration, Duration::from_millis(120));
        assert_eq!(mapped.time_ms, None, "no timestamp in the line");
        assert_eq!(
            mapping.map_json(&serde_json::json!([1])).unwrap_err(),
            "not a JSON object"
        );
    }

    #[test]
    fn the_request_time_comes_from_the_mapping_then_the_record_then_observation() {
        let fields = |extra: Vec<KeyValue>| {
            let mut attributes = vec![
                kv("endpoint", s("/risk-score")),
                kv("responseTimeMs", Value::IntValue(96)),
                kv("modelVersion", s("v1.2")),
            ];
            attributes.extend(extra);
            attributes
        };
        let record = |extra, time, observed| LogRecord {
            attributes: fields(extra),
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            ..Default::default()
        };
        let time_of = |r: LogRecord| {
            let (report, samples) =
                extract(&request(Some("svc"), vec![r]), &ExtractConfig::default());
            (report.rejected, samples.first().map(|s| s.time_ms))
        };
        // 2026-11-20T17:05:02.377Z
        let stamped = vec![kv("timestamp", s("2026-11-20T17:05:02.377Z"))];
        assert_eq!(
            time_of(record(stamped, 5_000_000, 6_000_000)),
            (0, Some(1_795_194_302_377))
        );
        assert_eq!(time_of(record(vec![], 5_000_000, 6_000_000)), (0, Some(5)));
        assert_eq!(time_of(record(vec![], 0, 6_000_000)), (0, Some(6)));
        assert_eq!(time_of(record(vec![], 0, 0)), (0, Some(0)), "arrival time");
        // Unix times by magnitude: seconds, milliseconds, nanoseconds.
        for value in [
            Value::IntValue(1_763_658_302),
            Value::IntValue(1_763_658_302_000),
            Value::StringValue("1763658302000000000".into()),
        ] {
            let got = time_of(record(vec![kv("timestamp", value)], 0, 0));
            assert_eq!(got, (0, Some(1_763_658_302_000)));
        }
        let (rejected, _) = time_of(record(vec![kv("timestamp", s("yesterday"))], 0, 0));
        assert_eq!(rejected, 1, "a time field that is not a time is named");
    }
}
