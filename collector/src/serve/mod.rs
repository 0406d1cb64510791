//! Starting and stopping the whole collector: bind the listeners, start the
//! pipeline task, the forwarder and the servers, and shut down in flow order
//! (receivers first, then the pipeline drains and flushes, then the forward
//! queue drains within `forward.drain_timeout`).
//!
//! Binding happens before anything is spawned, so a port in use is an error
//! naming the setting, not a half-started process.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
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
use socket::no_delay;
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

/// The same per connection, for several exports in flight at once.
const GRPC_CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

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
    pipeline: CancellationToken,
    grpc: JoinHandle<Result<(), ServeError>>,
    http: JoinHandle<Result<(), ServeError>>,
    admin: JoinHandle<Result<(), ServeError>>,
    pipeline_task: JoinHandle<()>,
    /// Cancelled to make the forwarder drain and stop.
    forward: CancellationToken,
    forward_task: Option<JoinHandle<()>>,
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

fn local_addr(
    key: &'static str,
    listener: &TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind {
        key,
        addr: configured,
        source,
    })
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    // Files first: a bad certificate or token file is named before any port
    // is taken.
    let tls = config.tls.as_ref().map(Tls::load).transpose()?;
    let auth = Auth::load(&config.auth)?;
    let grpc_listener = bind("receiver.grpc_listen", config.receiver.grpc_listen).await?;
    let http_listener = bind("receiver.http_listen", config.receiver.http_listen).await?;
    let admin_listener = bind("admin.listen", config.admin.listen).await?;
    let grpc_addr = local_addr(
        "receiver.grpc_listen",
        &grpc_listener,
        config.receiver.grpc_listen,
    )?;
    let http_addr = local_addr(
        "receiver.http_listen",
        &http_listener,
        config.receiver.http_listen,
    )?;
    let admin_addr = local_addr("admin.listen", &admin_listener, config.admin.listen)?;

    let telemetry = Arc::new(Telemetry::default());
    let otlp = OtlpEmitter::start(&config.emit, telemetry.clone(), config.aggregate.max_series)?;
    let receivers = CancellationToken::new();
    let forward_token = CancellationToken::new();
    let (forward, forward_task) = match forward::start(&config.forward, telemetry.clone())? {
        Some((handle, forwarder)) => (
            Some(handle),
            Some(tokio::spawn(forwarder.run(forward_token.clone()))),
        ),
        None => (None, None),
    };
    let (pipeline, handle) = Pipeline::new(&config, telemetry, otlp, receivers.clone());

    let pipeline_token = CancellationToken::new();
    let pipeline_task = tokio::spawn(pipeline.run(pipeline_token.clone()));

    let receiver = Arc::new(Receiver::new(
        handle.clone(),
        config.extract.clone(),
        config.receiver.max_message_bytes,
        forward,
    ));
    let grpc_routes = Routes::new(Authenticated::new(
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
        QueryServer::new(QueryService::new(handle.clone())),
        auth.clone(),
    ));
    let grpc = serve_grpc(grpc_listener, tls.as_ref(), grpc_routes, receivers.clone())?;
    let http = serve_http(
        "OTLP/HTTP",
        http_listener,
        tls.as_ref(),
        HttpGuard::new(auth.clone(), auth::receiver_access).protect(http::router(receiver)),
        receivers.clone(),
    )?;
    let admin = serve_http(
        "admin",
        admin_listener,
        tls.as_ref(),
        HttpGuard::new(auth.clone(), auth::admin_access).protect(admin::router(handle)),
        receivers.clone(),
    )?;
    tracing::info!(
        otlp_grpc = %grpc_addr,
        otlp_http = %http_addr,
        admin = %admin_addr,
        tls = tls.is_some(),
        auth = auth.enabled(),
        "listening"
    );
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        receivers,
        pipeline: pipeline_token,
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
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let mut builder = tonic::transport::Server::builder()
        .max_frame_size(GRPC_MAX_FRAME_BYTES)
        .initial_stream_window_size(GRPC_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW_BYTES);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.grpc())
            .map_err(|e| ServeError::Server {
                server: "OTLP/gRPC",
                message: format!("TLS: {e}"),
            })?;
    }
    Ok(tokio::spawn(async move {
        builder
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // tonic's `tcp_nodelay` does not apply to an incoming stream.
                TcpListenerStream::new(listener).map(|stream| {
                    if let Ok(stream) = &stream {
                        no_delay(stream);
                    }
                    stream
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

/// Serves `router` on `listener` (with `tls` when given) until `shutdown`,
/// then lets requests in flight finish.
fn serve_http(
    server: &'static str,
    listener: TcpListener,
    tls: Option<&Tls>,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let failed = move |e: std::io::Error| ServeError::Server {
        server,
        message: e.to_string(),
    };
    Ok(match tls {
        None => tokio::spawn(async move {
            let listener = listener.tap_io(|tcp| no_delay(tcp));
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(failed)
        }),
        Some(tls) => {
            let listener = tls.listener(listener).map_err(failed)?;
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                    .map_err(failed)
            })
        }
    })
}

impl Running {
    /// Waits for `stop`, or for a server to fail on its own (then returns
    /// its error: a collector that lost a listener must not linger).
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let failed = tokio::select! {
            () = stop => None,
            r = &mut self.grpc => Some(("OTLP/gRPC", r)),
            r = &mut self.http => Some(("OTLP/HTTP", r)),
            r = &mut self.admin => Some(("admin", r)),
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

    /// Stops accepting, lets the pipeline drain what was accepted and judge
    /// it once more, flushes the OTLP push, then drains the forward queue
    /// (bounded by `forward.drain_timeout`; what is left is counted).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.receivers.cancel();
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
