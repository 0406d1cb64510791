//! Starting and stopping the whole collector: bind the listeners, start the
//! pipeline task, the forwarder and the servers, and shut down in flow order
//! (receivers first, then the pipeline drains and flushes, then the forward
//! queue drains within `forward.drain_timeout`).
//!
//! Binding happens before anything is spawned, so a port in use is an error
//! naming the setting, not a half-started process.

use std::net::SocketAddr;
use std::sync::Arc;

use modelgate_proto::v1::query_server::QueryServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::auth::{self, Auth, Authenticated, HttpGuard};
use crate::config::Config;
use crate::emit::otlp::{OtlpEmitter, OtlpError};
use crate::forward::{self, ForwardSetupError};
use crate::pipeline::Pipeline;
use crate::query::admin;
use crate::query::api::QueryService;
use crate::receive::grpc::{ExportServer, Logs, Metrics, Traces};
use crate::receive::{http, Receiver};
use crate::telemetry::Telemetry;
use socket::{no_delay, Connections, Track};
use std::time::Duration;
use tls::{Tls, TlsError};

mod socket;
pub mod tls;

/// The largest HTTP/2 frame OTLP/gRPC clients may send (h2's default is
/// 16 KiB). An export of 512 spans is about 230 KiB: in 16 KiB frames it
/// costs fifteen frames, reads and wake-ups instead of one; with this (and
/// the windows below) the receiver takes about 15% more spans per second
/// on one core (`BENCHMARKS.md`). A frame is buffered whole before it is
/// handed on, so this is also the most one connection holds in a partial
/// frame.
const GRPC_MAX_FRAME_BYTES: u32 = 1 << 20;

/// HTTP/2 flow-control window per request: how much a client may send
/// before the receiver acknowledges it. Larger than one export, so a sender
/// is not paused mid-request waiting for a window update; bounded, as it is
/// what a request may have in flight.
const GRPC_STREAM_WINDOW_BYTES: u32 = 2 << 20;

/// The same per connection, for several exports in flight at once. It is
/// also the most a connection's unread requests hold in h2's buffers.
const GRPC_CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

/// The largest header block a gRPC request may send (h2's default is 16
/// MiB per connection): OTLP sends a few hundred bytes of headers.
const GRPC_MAX_HEADER_BYTES: u32 = 64 << 10;

/// How long `/healthz` reports a failed task before the admin port stops
/// and the process exits.
pub const FAILURE_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The setting that named the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A `tls` file is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `auth.token_file` cannot be read.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The OTLP metrics push could not be set up.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// Forwarding could not be set up.
    #[error(transparent)]
    Forward(#[from] ForwardSetupError),
    /// `snapshot.dir` is held by another instance, or cannot be locked.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A long-lived task (the pipeline, the forwarder) ended abnormally.
    #[error("the {task} task failed: {message}")]
    Task {
        /// Which one.
        task: &'static str,
        /// Its panic message, or why it ended.
        message: String,
    },
    /// A server failed while running.
    #[error("{server} server failed: {message}")]
    Server {
        /// Which one.
        server: &'static str,
        /// Its error.
        message: String,
    },
}

/// A running collector.
#[derive(Debug)]
pub struct Running {
    /// Where OTLP/gRPC (and the gRPC query API) is served.
    pub grpc_addr: SocketAddr,
    /// Where OTLP/HTTP is served.
    pub http_addr: SocketAddr,
    /// Where the admin HTTP port is served.
    pub admin_addr: SocketAddr,
    receivers: CancellationToken,
    /// Cancelled to stop the admin port: last on a failure, so probes see
    /// `/healthz` name it first.
    admin_stop: CancellationToken,
    pipeline: CancellationToken,
    /// The pipeline's handle (tests ask it questions).
    #[allow(dead_code, reason = "read by the tests only")]
    handle: crate::pipeline::PipelineHandle,
    telemetry: Arc<Telemetry>,
    /// `snapshot.dir`, held while running.
    _lock: Option<crate::snapshot::DirLock>,
    grpc: JoinHandle<Result<(), ServeError>>,
    http: JoinHandle<Result<(), ServeError>>,
    admin: JoinHandle<Result<(), ServeError>>,
    pipeline_task: JoinHandle<()>,
    /// Cancelled to make the forwarder drain and stop.
    forward: CancellationToken,
    forward_task: Option<JoinHandle<()>>,
}

/// `addr` bound, and the address it got (the port, when `addr` asked for
/// any); errors name the setting `key`.
async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let failed = |source| ServeError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// The gRPC port's services: the three OTLP exports on `receiver` and the
/// query API on `pipeline`, each behind `auth`.
fn grpc_routes(
    receiver: &Arc<Receiver>,
    pipeline: &crate::pipeline::PipelineHandle,
    auth: &Auth,
) -> Routes {
    Routes::new(Authenticated::new(
        ExportServer::<Traces>::new(receiver.clone()),
        auth.clone(),
    ))
    .add_service(Authenticated::new(
        ExportServer::<Logs>::new(receiver.clone()),
        auth.clone(),
    ))
    .add_service(Authenticated::new(
        ExportServer::<Metrics>::new(receiver.clone()),
        auth.clone(),
    ))
    .add_service(Authenticated::new(
        QueryServer::new(QueryService::new(pipeline.clone())),
        auth.clone(),
    ))
}

/// What every listener is held to: the connections admitted, the bytes and
/// memory requests may take, the HTTP limits per connection.
struct Guards {
    connections: Arc<Connections>,
    limits: crate::receive::Limits,
    http: HttpLimits,
}

impl Guards {
    /// The guards of `settings`, with the tasks that keep them (the idle
    /// connection reaper, the memory watch) running until `stop`.
    fn start(
        settings: &crate::config::ReceiverConfig,
        telemetry: &Arc<Telemetry>,
        stop: &CancellationToken,
    ) -> Self {
        let connections = Connections::new(
            settings
                .max_connections
                .unwrap_or_else(socket::default_max_connections),
            settings.idle_timeout,
            settings.write_timeout,
            telemetry.clone(),
        );
        tokio::spawn(connections.clone().reap(stop.clone()));
        let limits = crate::receive::Limits::new(settings, telemetry.clone());
        tokio::spawn(limits.memory.clone().watch(stop.clone()));
        Self {
            connections,
            limits,
            http: HttpLimits {
                header_timeout: settings.header_timeout,
                max_concurrent_streams: settings.max_concurrent_streams,
            },
        }
    }
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    // Files first: a bad certificate or token file is named, and a second
    // instance on the same snapshot directory refused (naming the first,
    // instead of overwriting its alerts), before any port is taken.
    let tls = config.tls.as_ref().map(Tls::load).transpose()?;
    let auth = Auth::load(&config.auth)?;
    let lock = (config.snapshot.dir.as_deref())
        .map(crate::snapshot::lock_dir)
        .transpose()?;
    let (grpc_listener, grpc_addr) =
        bind("receiver.grpc_listen", config.receiver.grpc_listen).await?;
    let (http_listener, http_addr) =
        bind("receiver.http_listen", config.receiver.http_listen).await?;
    let (admin_listener, admin_addr) = bind("admin.listen", config.admin.listen).await?;

    let telemetry = Arc::new(Telemetry::default());
    let otlp = OtlpEmitter::start(
        &config.emit,
        &config.extract.dimensions,
        telemetry.clone(),
        config.aggregate.max_series,
    )?;
    let receivers = CancellationToken::new();
    let forward_token = CancellationToken::new();
    let (forward, forward_task) = forward::start(&config.forward, telemetry.clone())?
        .map(|(handle, forwarder)| (handle, tokio::spawn(forwarder.run(forward_token.clone()))))
        .unzip();
    let (pipeline, handle) = Pipeline::new(&config, telemetry.clone(), otlp, receivers.clone());
    let admin_stop = CancellationToken::new();
    let Guards {
        connections,
        limits,
        http: http_limits,
    } = Guards::start(&config.receiver, &telemetry, &admin_stop);
    let max_connections = connections.max();

    let pipeline_token = CancellationToken::new();
    let pipeline_task = tokio::spawn(pipeline.run(pipeline_token.clone()));

    let receiver = Arc::new(Receiver::new(
        handle.clone(),
        config.extract.clone(),
        limits.clone(),
        forward,
    ));
    let grpc = serve_grpc(
        grpc_listener,
        tls.as_ref(),
        grpc_routes(&receiver, &handle, &auth),
        receivers.clone(),
        connections.clone(),
        http_limits.max_concurrent_streams,
    )?;
    let http = serve_http(
        "OTLP/HTTP",
        http_listener,
        tls.as_ref(),
        HttpGuard::new(auth.clone(), auth::receiver_access).protect(http::router(receiver)),
        receivers.clone(),
        connections.clone(),
        http_limits,
    )?;
    let admin = serve_http(
        "admin",
        admin_listener,
        tls.as_ref(),
        HttpGuard::new(auth.clone(), auth::admin_access).protect(admin::router(
            handle.clone(),
            admin::MetricsPage::new(&config.admin, config.emit.prometheus),
        )),
        admin_stop.clone(),
        connections,
        http_limits,
    )?;
    tracing::info!(
        otlp_grpc = %grpc_addr,
        otlp_http = %http_addr,
        admin = %admin_addr,
        tls = tls.is_some(),
        auth = auth.enabled(),
        max_connections,
        memory_limit = limits.memory.limit(),
        "listening"
    );
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        receivers,
        admin_stop,
        pipeline: pipeline_token,
        handle,
        telemetry,
        _lock: lock,
        grpc,
        http,
        admin,
        pipeline_task,
        forward: forward_token,
        forward_task,
    })
}

/// Serves OTLP/gRPC and the query API (`routes`) on `listener` (with `tls`
/// when given) until `shutdown`.
fn serve_grpc(
    listener: TcpListener,
    tls: Option<&Tls>,
    routes: Routes,
    shutdown: CancellationToken,
    connections: Arc<Connections>,
    max_concurrent_streams: u32,
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let mut builder = tonic::transport::Server::builder()
        .max_frame_size(GRPC_MAX_FRAME_BYTES)
        .initial_stream_window_size(GRPC_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(max_concurrent_streams)
        .http2_max_header_list_size(GRPC_MAX_HEADER_BYTES);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.grpc())
            .map_err(|e| ServeError::Server {
                server: "OTLP/gRPC",
                message: format!("TLS: {e}"),
            })?;
    }
    let mut builder = builder.layer(socket::TrackLayer);
    Ok(tokio::spawn(async move {
        builder
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // tonic's `tcp_nodelay` does not apply to an incoming stream.
                TcpListenerStream::new(listener).filter_map(move |stream| match stream {
                    Ok(tcp) => {
                        no_delay(&tcp);
                        connections.admit(tcp).map(Ok)
                    }
                    Err(e) => {
                        tracing::error!(server = "OTLP/gRPC", error = %e, "accept failed (out of file descriptors?)");
                        None::<Result<_, std::io::Error>>
                    }
                }),
                shutdown.cancelled_owned(),
            )
            .await
            .map_err(|e| ServeError::Server {
                server: "OTLP/gRPC",
                message: e.to_string(),
            })
    }))
}

/// What the HTTP listeners enforce per connection besides
/// [`Connections`].
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    /// `receiver.header_timeout`: the request head, and the wait for the
    /// next request on a kept-alive connection (HTTP/1).
    header_timeout: Duration,
    /// `receiver.max_concurrent_streams` (HTTP/2).
    max_concurrent_streams: u32,
}

/// Serves `router` on `listener` (with `tls` when given) until `shutdown`,
/// then lets requests in flight finish. hyper directly (as `axum::serve`
/// does inside) for the header timeout, with every connection admitted by
/// `connections`.
fn serve_http(
    server: &'static str,
    listener: TcpListener,
    tls: Option<&Tls>,
    router: axum::Router,
    shutdown: CancellationToken,
    connections: Arc<Connections>,
    limits: HttpLimits,
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let failed = move |e: std::io::Error| ServeError::Server {
        server,
        message: e.to_string(),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    Ok(match tls {
        None => tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = shutdown.cancelled() => break,
                };
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        accept_failed(server, &e).await;
                        continue;
                    }
                };
                no_delay(&tcp);
                let Some(tracked) = connections.admit(tcp) else {
                    continue;
                };
                let info = tracked.info();
                tasks.spawn(serve_connection(
                    tracked,
                    info,
                    router.clone(),
                    shutdown.clone(),
                    limits,
                ));
            }
            tasks.close();
            tasks.wait().await;
            Ok(())
        }),
        Some(tls) => {
            let mut listener = tls
                .listener(listener, connections.clone())
                .map_err(failed)?;
            tokio::spawn(async move {
                loop {
                    let tls_stream = tokio::select! {
                        c = listener.accept() => c,
                        () = shutdown.cancelled() => break,
                    };
                    let info = tls_stream.get_ref().0.info();
                    tasks.spawn(serve_connection(
                        tls_stream,
                        info,
                        router.clone(),
                        shutdown.clone(),
                        limits,
                    ));
                }
                tasks.close();
                tasks.wait().await;
                Ok(())
            })
        }
    })
}

/// An accept that failed (out of file descriptors and the like): logged,
/// then a pause, as hyper's servers do, instead of a busy loop.
async fn accept_failed(server: &str, e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(server, error = %e, "accept failed (out of file descriptors?): pausing 100ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one HTTP/1 or HTTP/2 (prior knowledge) connection until it ends
/// or `shutdown` (then its requests in flight finish).
async fn serve_connection<IO>(
    io: IO,
    info: socket::ConnInfo,
    router: axum::Router,
    shutdown: CancellationToken,
    limits: HttpLimits,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt as _;
    let service = Track::new(router).map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            request.map(axum::body::Body::new)
        },
    );
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams);
    let connection = builder.serve_connection(
        hyper_util::rt::TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(service),
    );
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended while shutting down");
    }
}

impl Running {
    /// Waits for `stop`, or for a server to fail on its own (then returns
    /// its error: a collector that lost a listener must not linger).
    /// A long-lived task ending (a panic in the pipeline or the forwarder)
    /// fails the collector too: `/healthz` names it for
    /// [`FAILURE_REPORT_GRACE`], the rest shuts down in flow order and the
    /// error is returned (the binary exits non-zero), instead of a zombie
    /// that refuses every export as "shutting down".
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let forward_task = async {
            match self.forward_task.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        let failed = tokio::select! {
            () = stop => None,
            r = &mut self.grpc => Some(("OTLP/gRPC", r)),
            r = &mut self.http => Some(("OTLP/HTTP", r)),
            r = &mut self.admin => Some(("admin", r)),
            r = &mut self.pipeline_task => {
                return self.task_failed("pipeline", r).await;
            }
            r = forward_task => {
                return self.task_failed("forward", r).await;
            }
        };
        match failed {
            None => self.shutdown().await,
            Some((server, result)) => {
                let error = match result {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => ServeError::Server {
                        server,
                        message: "stopped unexpectedly".into(),
                    },
                    Err(e) => ServeError::Server {
                        server,
                        message: e.to_string(),
                    },
                };
                self.receivers.cancel();
                self.admin_stop.cancel();
                self.pipeline.cancel();
                let _ = self.pipeline_task.await;
                self.forward.cancel();
                if let Some(task) = self.forward_task {
                    let _ = task.await;
                }
                Err(error)
            }
        }
    }

    /// `task` ended on its own with `result`: report it, stop the rest.
    async fn task_failed(
        self,
        task: &'static str,
        result: Result<(), tokio::task::JoinError>,
    ) -> Result<(), ServeError> {
        let message = match result {
            Ok(()) => "it ended on its own".to_owned(),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("panicked: {text}")
            }
            Err(e) => e.to_string(),
        };
        self.telemetry.task_failed(task, &message);
        self.receivers.cancel();
        tokio::time::sleep(FAILURE_REPORT_GRACE).await;
        self.pipeline.cancel();
        if task != "pipeline" {
            let _ = self.pipeline_task.await;
        }
        self.forward.cancel();
        if let Some(forward) = self.forward_task {
            if task != "forward" {
                let _ = forward.await;
            }
        }
        self.admin_stop.cancel();
        let _ = tokio::join!(self.grpc, self.http, self.admin);
        Err(ServeError::Task { task, message })
    }

    /// Stops accepting, lets the pipeline drain what was accepted and judge
    /// it once more, flushes the OTLP push, then drains the forward queue
    /// (bounded by `forward.drain_timeout`; what is left is counted).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.receivers.cancel();
        self.admin_stop.cancel();
        let grpc = self.grpc.await;
        let http = self.http.await;
        let admin = self.admin.await;
        self.pipeline.cancel();
        if let Err(e) = self.pipeline_task.await {
            tracing::error!(error = %e, "pipeline task ended abnormally");
        }
        self.forward.cancel();
        if let Some(task) = self.forward_task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "forward task ended abnormally");
            }
        }
        for (server, result) in [("OTLP/gRPC", grpc), ("OTLP/HTTP", http), ("admin", admin)] {
            match result {
                Ok(r) => r?,
                Err(e) => {
                    return Err(ServeError::Server {
                        server,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A config on ephemeral localhost ports.
    pub(crate) fn local(yaml: &str) -> Config {
        let mut config = Config::from_yaml(yaml).unwrap();
        for addr in [
            &mut config.receiver.grpc_listen,
            &mut config.receiver.http_listen,
            &mut config.admin.listen,
        ] {
            *addr = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        config
    }

    /// One HTTP/1.1 GET: the status line and body as text.
    pub(crate) async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await?;
        Ok(text)
    }

    #[tokio::test]
    async fn a_panic_in_the_pipeline_fails_healthz_and_the_run() {
        let running = start(local("")).await.unwrap();
        let admin = running.admin_addr;
        let handle = running.handle.clone();
        assert!(get(admin, "/healthz").await.unwrap().contains("200 OK"));
        let run = tokio::spawn(running.run_until(std::future::pending()));
        let asked = handle
            .ask(|_, _| -> () { panic!("injected by the test") })
            .await;
        assert!(asked.is_err());
        let mut seen = String::new();
        for _ in 0..100 {
            seen = get(admin, "/healthz").await.unwrap_or_default();
            if seen.contains("503") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            seen.contains("503") && seen.contains("pipeline task failed: panicked: injected"),
            "{seen}"
        );
        let result = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap()
            .unwrap();
        match result {
            Err(ServeError::Task { task, message }) => {
                assert_eq!(task, "pipeline");
                assert!(message.contains("injected by the test"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_instance_on_the_snapshot_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("snapshot:\n  dir: {}\n", dir.path().display());
        let first = start(local(&yaml)).await.unwrap();
        let err = start(local(&yaml)).await.unwrap_err().to_string();
        assert!(
            err.contains("in use by another modelgate") && err.contains("pid "),
            "{err}"
        );
        first.shutdown().await.unwrap();
        start(local(&yaml)).await.unwrap().shutdown().await.unwrap();
    }
}
