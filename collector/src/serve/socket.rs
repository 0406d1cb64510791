//! What every accepted connection gets, whichever listener took it.

use tokio::net::TcpStream;

/// Sets `TCP_NODELAY` on an accepted connection, as every listener here
/// does: without it, Nagle holds small answers (an Export's, a query's)
/// until the client's delayed ACK, 40 ms on Linux, at moderate rates. A
/// connection where it fails is served anyway, only slower.
pub(super) fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}
