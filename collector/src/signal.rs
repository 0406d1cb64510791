//! The OTLP signals: which one an export carries, and where each is
//! served. A leaf every stage may name (receivers, the forwarder,
//! telemetry); it must never depend on any of them.

/// Which OTLP signal an export request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `ExportTraceServiceRequest`: spans.
    Traces,
    /// `ExportLogsServiceRequest`: log records.
    Logs,
    /// `ExportMetricsServiceRequest`: metric data points.
    Metrics,
}

impl Signal {
    /// Every signal, in counter order.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    /// The `signal` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// Index into per-signal arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The OTLP/gRPC method.
    pub const fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        }
    }

    /// The OTLP/HTTP path.
    pub const fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }
}
