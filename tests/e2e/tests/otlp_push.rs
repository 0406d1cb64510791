//! The OTLP metrics push: modelgate exports its metrics through
//! `opentelemetry-otlp` to a real OTLP/gRPC metrics receiver (a tonic
//! `MetricsService` here), with the latency histogram as an exponential
//! histogram and the regression gauge set for the lending incident.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, Collector};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, Metric};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Vec<Metric>>>);

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut seen = self.0.lock().unwrap();
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                seen.extend(sm.metrics);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_with_exponential_histograms() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(sink.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let endpoint = format!("http://{addr}");
    let collector = Collector::start(&[
        ("MODELGATE_EMIT__OTLP_ENDPOINT", &endpoint),
        ("MODELGATE_EMIT__OTLP_INTERVAL", "300ms"),
    ])
    .await;
    let scenario = Scenario::load("lending").unwrap();
    let options = ReplayOptions {
        endpoint: collector.grpc_url(),
        rate: Some(400.0),
        ..ReplayOptions::default()
    };
    assert_eq!(replay(&scenario, &options).await.unwrap().failed, 0);

    let found = eventually(Duration::from_secs(20), || async {
        let metrics = sink.0.lock().unwrap().clone();
        let firing = metrics
            .iter()
            .filter(|m| m.name == "modelgate.regression.active")
            .any(|m| {
                matches!(&m.data, Some(Data::Gauge(g)) if g.data_points.iter().any(|p| {
                    attr(&p.attributes, "candidate.version") == Some("v1.3")
                        && attr(&p.attributes, "baseline.version") == Some("v1.2")
                        && matches!(p.value, Some(number_data_point::Value::AsInt(1)))
                }))
            });
        let histogram = metrics
            .iter()
            .filter(|m| m.name == "modelgate.request.duration")
            .find_map(|m| match &m.data {
                Some(Data::ExponentialHistogram(h)) => h
                    .data_points
                    .iter()
                    .find(|p| attr(&p.attributes, "model.version") == Some("v1.3") && p.count > 0)
                    .cloned(),
                _ => None,
            });
        let accepted = metrics
            .iter()
            .any(|m| m.name == "modelgate.receiver.accepted");
        (firing && accepted).then_some(histogram).flatten()
    })
    .await;
    let point = found.unwrap_or_else(|| {
        let names: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        panic!(
            "no firing gauge or exponential histogram pushed; got {names:?}\n{}",
            collector.log()
        )
    });
    assert_eq!(attr(&point.attributes, "service.name"), Some("lending-api"));
    assert!(
        point.min.unwrap() >= 0.69 && point.max.unwrap() <= 0.83,
        "{point:?}"
    );
    assert!(collector.stop().await.success());
    server.abort();
}
