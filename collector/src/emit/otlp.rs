//! OTLP metrics push through the OpenTelemetry SDK and `opentelemetry-otlp`.
//!
//! Off unless `emit.otlp_endpoint` is set. The latency histogram is an
//! exponential (base-2) histogram, as DESIGN.md promises for OTLP; the
//! regression gauges and alert counter are recorded after every evaluation;
//! modelgate's own counters are observed from the shared atomics at export.
//! Recording never blocks: the SDK aggregates in memory and a periodic reader
//! exports on its own thread, so a slow or absent backend cannot stall the
//! pipeline.

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::Resource;

use super::catalogue::{self, Kind, Metric};
use crate::aggregate::Aggregator;
use crate::config::EmitConfig;
use crate::extract::{EndpointKey, Outcome, SeriesName};
use crate::judge::{AlertKey, AlertState, Judge, Severity, Transition};
use crate::telemetry::{SelfMetric, Telemetry};

/// Why the OTLP push could not start.
#[derive(Debug, thiserror::Error)]
#[error("emit.otlp_endpoint {endpoint:?}: {source}")]
pub struct OtlpError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The SDK instruments modelgate records into.
#[derive(Debug)]
pub struct OtlpEmitter {
    /// `extract.dimensions`: attribute names of a series' extra values.
    dimensions: Vec<String>,
    provider: SdkMeterProvider,
    duration: Histogram<f64>,
    active: Gauge<u64>,
    ratio: Gauge<f64>,
    difference: Gauge<f64>,
    verdict: Gauge<u64>,
    alerts: Counter<u64>,
    db_calls: Gauge<f64>,
}

impl OtlpEmitter {
    /// Starts the periodic push to `config.otlp_endpoint`; `None` when unset.
    /// `series_cap` sizes the SDK's per-instrument cardinality limit so the
    /// SDK does not fold series that modelgate itself keeps apart.
    pub fn start(
        config: &EmitConfig,
        dimensions: &[String],
        telemetry: Arc<Telemetry>,
        series_cap: usize,
    ) -> Result<Option<Self>, OtlpError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| OtlpError {
                endpoint: endpoint.clone(),
                source,
            })?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(config.otlp_interval)
            .build();
        // Outcome multiplies series by three.
        let limit = series_cap.saturating_mul(3).saturating_add(1);
        let provider = SdkMeterProvider::builder()
            .with_resource(Resource::builder().with_service_name("modelgate").build())
            .with_reader(reader)
            .with_view(move |i: &Instrument| {
                let stream = Stream::builder().with_cardinality_limit(limit);
                let stream = if i.name() == catalogue::REQUEST_DURATION.otlp {
                    stream.with_aggregation(Aggregation::Base2ExponentialHistogram {
                        max_size: 160,
                        max_scale: 20,
                        record_min_max: true,
                    })
                } else {
                    stream
                };
                stream.build().ok()
            })
            .build();
        let meter = provider.meter("modelgate");
        for metric in SelfMetric::ALL {
            observe(&meter, metric, telemetry.clone());
        }
        let described = |m: &'static Metric| (m.otlp, m.help);
        let (name, help) = described(&catalogue::REQUEST_DURATION);
        let duration = meter
            .f64_histogram(name)
            .with_unit(catalogue::REQUEST_DURATION.unit.unwrap_or("s"))
            .with_description(help)
            .build();
        let (name, help) = described(&catalogue::REGRESSION_ACTIVE);
        let active = meter.u64_gauge(name).with_description(help).build();
        let (name, help) = described(&catalogue::REGRESSION_RATIO);
        let ratio = meter.f64_gauge(name).with_description(help).build();
        let (name, help) = described(&catalogue::REGRESSION_DIFFERENCE);
        let difference = meter.f64_gauge(name).with_description(help).build();
        let (name, help) = described(&catalogue::REGRESSION_VERDICT);
        let verdict = meter.u64_gauge(name).with_description(help).build();
        let (name, help) = described(&catalogue::ALERTS);
        let alerts = meter.u64_counter(name).with_description(help).build();
        let (name, help) = described(&catalogue::DB_CALLS_PER_REQUEST);
        let db_calls = meter.f64_gauge(name).with_description(help).build();
        Ok(Some(Self {
            dimensions: dimensions.to_vec(),
            duration,
            active,
            ratio,
            difference,
            verdict,
            alerts,
            db_calls,
            provider,
        }))
    }

    /// Records one request's latency.
    pub fn record_request(&self, series: &SeriesName, seconds: f64, outcome: Outcome) {
        let endpoint = &series.endpoint;
        let mut attrs = vec![
            KeyValue::new("service.name", endpoint.service.clone()),
            KeyValue::new("endpoint", endpoint.endpoint.clone()),
            KeyValue::new("model.version", series.version.clone()),
            KeyValue::new("outcome", outcome.as_str()),
        ];
        self.push_dimensions(&mut attrs, endpoint);
        self.duration.record(seconds, &attrs);
    }

    /// Records what the judge just decided for `service`: the regression
    /// gauges of its judgements, a firing counted for each alert in
    /// `transitions` that fired, and each series' database calls per
    /// request. Gauges keep their last value, so a service judged again
    /// only when something can have changed exports the same figures as
    /// one recorded every tick.
    pub fn record_service(
        &self,
        agg: &Aggregator,
        judge: &Judge,
        service: &str,
        transitions: &[Transition],
        now_ms: u64,
    ) {
        for (key, judgement) in judge.judgements_of(service) {
            let mut attrs = regression_attributes(key).to_vec();
            self.push_dimensions(&mut attrs, &key.endpoint);
            self.ratio.record(judgement.result.evidence.ratio, &attrs);
            self.difference
                .record(judgement.result.evidence.difference, &attrs);
            let current = super::verdict_of(judgement.verdict());
            for verdict in super::prometheus::VERDICTS {
                let mut with_verdict = attrs.to_vec();
                with_verdict.push(KeyValue::new("verdict", verdict));
                self.verdict
                    .record(u64::from(current == verdict), &with_verdict);
            }
            for severity in Severity::ALL {
                let mut with_severity = attrs.to_vec();
                with_severity.push(KeyValue::new("severity", severity.as_str()));
                let firing = judgement.alert(severity).state == AlertState::Firing;
                self.active.record(u64::from(firing), &with_severity);
                let fired_now = transitions.iter().any(|t| {
                    t.key == *key && t.severity == severity && t.alert().state == AlertState::Firing
                });
                if fired_now {
                    self.alerts.add(1, &with_severity);
                }
            }
        }
        // Database calls are counted per request, not per phase.
        let requests = agg
            .service_endpoints(service)
            .into_iter()
            .filter(|(e, _)| e.phase.is_request());
        for (endpoint, versions) in requests {
            for (version, series) in versions.iter() {
                let mut attrs = vec![
                    KeyValue::new("service.name", endpoint.service.clone()),
                    KeyValue::new("endpoint", endpoint.endpoint.clone()),
                    KeyValue::new("model.version", version.clone()),
                ];
                self.push_dimensions(&mut attrs, endpoint);
                self.db_calls
                    .record(agg.window_db_calls(series, now_ms), &attrs);
            }
        }
    }

    /// The series' `extract.dimensions`, named, its phase unless it is the
    /// whole request and its band of input sizes when it has one, so
    /// series that differ only by them stay apart.
    fn push_dimensions(&self, attrs: &mut Vec<KeyValue>, endpoint: &EndpointKey) {
        for (name, value) in self.dimensions.iter().zip(&endpoint.dims) {
            attrs.push(KeyValue::new(name.clone(), value.clone()));
        }
        if !endpoint.phase.is_request() {
            attrs.push(KeyValue::new("phase", endpoint.phase.as_str()));
        }
        if let Some(band) = endpoint.input {
            attrs.push(KeyValue::new("input_tokens", band.as_str()));
        }
    }

    /// Pushes what is pending and stops the reader.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "OTLP metrics shutdown");
        }
    }
}

fn regression_attributes(key: &AlertKey) -> [KeyValue; 5] {
    [
        KeyValue::new("service.name", key.endpoint.service.clone()),
        KeyValue::new("endpoint", key.endpoint.endpoint.clone()),
        KeyValue::new("candidate.version", key.candidate.clone()),
        KeyValue::new("baseline.version", key.baseline.clone()),
        KeyValue::new("rule", key.rule.as_str()),
    ]
}

/// Registers one of modelgate's own figures as an observable instrument
/// (counter or gauge, as the catalogue says), read from `telemetry` at
/// each export.
fn observe(meter: &Meter, metric: SelfMetric, telemetry: Arc<Telemetry>) {
    let entry = catalogue::self_metric(metric);
    let callback = move |observe: &dyn Fn(u64, &[KeyValue])| {
        for r in telemetry.readings().iter().filter(|r| r.metric == metric) {
            match r.label {
                Some((key, value)) => observe(r.value, &[KeyValue::new(key, value)]),
                None => observe(r.value, &[]),
            }
        }
    };
    // The SDK keeps registered instruments alive with the meter provider.
    match entry.kind {
        Kind::Counter => {
            meter
                .u64_observable_counter(entry.otlp)
                .with_description(entry.help)
                .with_callback(move |o| callback(&|v, attrs| o.observe(v, attrs)))
                .build();
        }
        Kind::Gauge | Kind::Histogram => {
            meter
                .u64_observable_gauge(entry.otlp)
                .with_description(entry.help)
                .with_callback(move |o| callback(&|v, attrs| o.observe(v, attrs)))
                .build();
        }
    }
}
