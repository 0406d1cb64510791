//! What every accepted connection gets, whichever listener took it:
//! `TCP_NODELAY`, a place under `receiver.max_connections`, and a reaper
//! that closes it when it idles (`receiver.idle_timeout`) or when a write to
//! it stalls (`receiver.write_timeout`).
//!
//! [`Connections`] is shared by the three listeners. Each connection's
//! [`ConnState`] is a few atomics: the IO wrapper [`Tracked`] marks when a
//! write blocks and when it progresses; the [`Track`] service counts the
//! requests in flight (until their answer's body is done or dropped) and
//! when the last one began or ended. Nothing here takes a lock per request:
//! the registry's lock is taken on accept, on close and by the reaper's tick.
//!
//! A connection closed by the reaper is closed by its IO: the next read or
//! write of [`Tracked`] fails, which hyper and h2 take as the peer gone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::telemetry::{ConnectionClosed, Telemetry};

/// Sets `TCP_NODELAY` on an accepted connection, as every listener here
/// does: without it, Nagle holds small answers (an Export's, a query's)
/// until the client's delayed ACK, 40 ms on Linux, at moderate rates. A
/// connection where it fails is served anyway, only slower.
pub(super) fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// Descriptors kept for the collector's own files and downstream
/// connections when `receiver.max_connections` is derived from the limit.
const DEFAULT_CONNECTIONS_WHEN_UNKNOWN: usize = 768;

/// The default of `receiver.max_connections`: three quarters of the soft
/// open-file limit (`/proc/self/limits`), else 768.
pub(crate) fn default_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok())
        .map_or(DEFAULT_CONNECTIONS_WHEN_UNKNOWN, |soft| {
            (soft / 4 * 3).max(3)
        })
}

/// One connection's figures, shared by its IO, its requests and the reaper.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Milliseconds since [`Connections::epoch`] when a request last began
    /// or ended (or the connection opened).
    last_active: AtomicU64,
    /// Requests whose answer is not done yet.
    in_flight: AtomicU32,
    /// Milliseconds since the epoch (plus one) when a write began to wait
    /// for the peer; 0 while writes progress.
    write_blocked: AtomicU64,
    /// Cancelled to close the connection.
    close: CancellationToken,
}

/// The connections of all listeners; see the module docs.
#[derive(Debug)]
pub(crate) struct Connections {
    epoch: Instant,
    max: usize,
    idle: Duration,
    write: Duration,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    telemetry: Arc<Telemetry>,
    /// When a refusal or an eviction was last logged (ms since the epoch),
    /// so a flood is logged once a second, not once a connection.
    last_warned: AtomicU64,
}

impl Connections {
    pub(crate) fn new(
        max: usize,
        idle: Duration,
        write: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            max,
            idle,
            write,
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            telemetry,
            last_warned: AtomicU64::new(0),
        })
    }

    /// `receiver.max_connections` in force.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A place for a new connection: `None` (counted, logged) when all
    /// `max` are busy; at the limit the one idle longest is closed for it.
    pub(crate) fn admit<IO>(self: &Arc<Self>, io: IO) -> Option<Tracked<IO>> {
        let now = self.now_ms();
        let state = Arc::new(ConnState {
            last_active: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
            write_blocked: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if open.len() >= self.max {
                let idlest = open
                    .iter()
                    .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                    .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                match idlest.and_then(|id| open.remove(&id)) {
                    Some(victim) => {
                        victim.close.cancel();
                        self.closed(ConnectionClosed::Evicted);
                    }
                    None => {
                        drop(open);
                        self.closed(ConnectionClosed::Refused);
                        return None;
                    }
                }
            }
            open.insert(id, state.clone());
        }
        self.telemetry.connection_opened();
        Some(Tracked {
            io,
            closing: Box::pin(state.close.clone().cancelled_owned()),
            state,
            id,
            connections: self.clone(),
        })
    }

    fn closed(&self, reason: ConnectionClosed) {
        self.telemetry.connection_closed(reason);
        let now = self.now_ms();
        let last = self.last_warned.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_warned
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason = reason.as_str(),
                max_connections = self.max,
                idle_timeout = ?self.idle,
                write_timeout = ?self.write,
                total = self.telemetry.connections_closed_total(reason),
                "connection closed by modelgate's connection limits"
            );
        }
    }

    /// Closes every connection idle past `receiver.idle_timeout` or with a
    /// write stalled past `receiver.write_timeout`; runs until `stop`.
    pub(crate) async fn reap(self: Arc<Self>, stop: CancellationToken) {
        let tick = (self.idle.min(self.write) / 4)
            .clamp(Duration::from_millis(25), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = self.now_ms();
            let idle_ms = self.idle.as_millis() as u64;
            let write_ms = self.write.as_millis() as u64;
            let mut reaped = Vec::new();
            {
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                open.retain(|_, c| {
                    let blocked = c.write_blocked.load(Ordering::Relaxed);
                    let reason = if blocked > 0 && now.saturating_sub(blocked - 1) >= write_ms {
                        Some(ConnectionClosed::Stalled)
                    } else if c.in_flight.load(Ordering::Relaxed) == 0
                        && now.saturating_sub(c.last_active.load(Ordering::Relaxed)) >= idle_ms
                    {
                        Some(ConnectionClosed::Idle)
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        c.close.cancel();
                        reaped.push(reason);
                    }
                    reason.is_none()
                });
            }
            for reason in reaped {
                self.closed(reason);
            }
        }
    }

    fn forget(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.telemetry.connection_ended();
    }
}

/// An accepted connection's IO, watched (see the module docs). Reads and
/// writes fail once the reaper closed it.
pub(crate) struct Tracked<IO> {
    io: IO,
    state: Arc<ConnState>,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    id: u64,
    connections: Arc<Connections>,
}

impl<IO> std::fmt::Debug for Tracked<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        self.connections.forget(self.id);
    }
}

impl<IO> Tracked<IO> {
    /// What [`Track`] finds in a request's extensions.
    pub(crate) fn info(&self) -> ConnInfo {
        ConnInfo {
            state: self.state.clone(),
            epoch: self.connections.epoch,
        }
    }

    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.closing.as_mut().poll(cx).is_ready()
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed by modelgate's connection limits",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> Tracked<IO> {
    /// Notes whether a write waits for the peer or progressed: only bytes
    /// taken clear a wait (a flush succeeds on a full socket too).
    fn wrote(&mut self, result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match &result {
            Poll::Pending => {
                if self.state.write_blocked.load(Ordering::Relaxed) == 0 {
                    let now = self.connections.now_ms() + 1;
                    self.state.write_blocked.store(now, Ordering::Relaxed);
                }
            }
            Poll::Ready(Ok(n)) if *n > 0 => self.state.write_blocked.store(0, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Tracked<TcpStream> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

/// A connection's state, as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    state: Arc<ConnState>,
    epoch: Instant,
}

impl ConnInfo {
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.state.last_active.store(now, Ordering::Relaxed);
    }
}

/// Counts a request in flight until its answer's body is done or dropped.
#[derive(Debug)]
struct InFlight(ConnInfo);

impl InFlight {
    fn begin(info: ConnInfo) -> Self {
        info.state.in_flight.fetch_add(1, Ordering::Relaxed);
        info.touch();
        Self(info)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A service that counts its requests in their connection's
/// [`ConnState`] (found in the request's extensions, plain or under TLS).
#[derive(Debug, Clone)]
pub(crate) struct Track<S> {
    inner: S,
}

impl<S> Track<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// [`Track`] as a layer, for tonic's server.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track::new(inner)
    }
}

fn conn_info<B>(request: &http::Request<B>) -> Option<ConnInfo> {
    let extensions = request.extensions();
    extensions.get::<ConnInfo>().cloned().or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
            .map(|tls| tls.get_ref().clone())
    })
}

impl<S, B, RB> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = conn_info(&request).map(InFlight::begin);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that keeps its request counted in flight.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        body: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_and_the_idlest_makes_room() {
        let telemetry = Arc::new(Telemetry::default());
        let connections = Connections::new(
            2,
            Duration::from_secs(10),
            Duration::from_secs(5),
            telemetry.clone(),
        );
        let (a, _a) = tokio::io::duplex(64);
        let (b, _b) = tokio::io::duplex(64);
        let (c, _c) = tokio::io::duplex(64);
        let first = connections.admit(a).unwrap();
        let second = connections.admit(b).unwrap();
        // A request in flight on the second: the first is the idlest.
        let busy = InFlight::begin(second.info());
        let third = connections.admit(c).unwrap();
        assert!(first.state.close.is_cancelled());
        assert_eq!(
            telemetry.connections_closed_total(ConnectionClosed::Evicted),
            1
        );
        // Both left are busy now: a fourth is refused.
        let _also_busy = InFlight::begin(third.info());
        let (d, _d) = tokio::io::duplex(64);
        assert!(connections.admit(d).is_none());
        assert_eq!(
            telemetry.connections_closed_total(ConnectionClosed::Refused),
            1
        );
        drop(busy);
        let stop = CancellationToken::new();
        let reaper = tokio::spawn(connections.clone().reap(stop.clone()));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(second.state.close.is_cancelled());
        assert!(!third.state.close.is_cancelled(), "in flight: not idle");
        assert_eq!(
            telemetry.connections_closed_total(ConnectionClosed::Idle),
            1
        );
        stop.cancel();
        reaper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_take_is_closed_after_the_write_timeout() {
        use tokio::io::AsyncWriteExt as _;
        let telemetry = Arc::new(Telemetry::default());
        let connections = Connections::new(
            8,
            Duration::from_secs(600),
            Duration::from_secs(5),
            telemetry.clone(),
        );
        let stop = CancellationToken::new();
        let reaper = tokio::spawn(connections.clone().reap(stop.clone()));
        // A peer that never reads: 64 bytes of buffer, then writes wait.
        let (io, _peer) = tokio::io::duplex(64);
        let mut stalled = connections.admit(io).unwrap();
        let _busy = InFlight::begin(stalled.info());
        let write = tokio::spawn(async move { stalled.write_all(&[0; 4096]).await });
        let failed = tokio::time::timeout(Duration::from_secs(30), write)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            failed.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionAborted
        );
        assert_eq!(
            telemetry.connections_closed_total(ConnectionClosed::Stalled),
            1
        );
        stop.cancel();
        reaper.await.unwrap();
    }
}
