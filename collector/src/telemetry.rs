//! modelgate's own counters: what the receiver accepted and refused, and why,
//! and what the forwarder queued, sent, refused and dropped.
//!
//! Each internal event is one method that bumps its counter and logs at
//! debug level; the counters are atomics shared by the receiver tasks and
//! read by the emitters. Relaxed ordering: these are statistics, not
//! synchronisation. Nothing here may block or allocate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why spans (or whole requests) were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedReason {
    /// The payload did not decode as an export request (one per request).
    InvalidPayload,
    /// The payload exceeded `receiver.max_message_bytes` (one per request).
    TooLarge,
    /// A span without timestamps or ending before it started.
    InvalidSpan,
    /// The aggregator's queue was full; the sender was told to retry.
    QueueFull,
    /// A log record the `extract.logs` mapping could not turn into a request.
    UnmappedLog,
}

impl RefusedReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusedReason; 5] = [
        RefusedReason::InvalidPayload,
        RefusedReason::TooLarge,
        RefusedReason::InvalidSpan,
        RefusedReason::QueueFull,
        RefusedReason::UnmappedLog,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedReason::InvalidPayload => "invalid_payload",
            RefusedReason::TooLarge => "too_large",
            RefusedReason::InvalidSpan => "invalid_span",
            RefusedReason::QueueFull => "queue_full",
            RefusedReason::UnmappedLog => "unmapped_log",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why the forwarder gave up on an export request it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DroppedReason {
    /// The downstream answered with a non-retryable failure.
    Rejected,
    /// Still undelivered after `forward.max_elapsed`, or the downstream
    /// asked to wait past it.
    Expired,
    /// Left in the queue when `forward.drain_timeout` ran out at shutdown.
    Shutdown,
}

impl DroppedReason {
    /// Every reason, in counter order.
    pub const ALL: [DroppedReason; 3] = [
        DroppedReason::Rejected,
        DroppedReason::Expired,
        DroppedReason::Shutdown,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DroppedReason::Rejected => "rejected",
            DroppedReason::Expired => "expired",
            DroppedReason::Shutdown => "shutdown",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The forwarder's figures at one moment, in export requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardCounters {
    /// Waiting or being sent (`modelgate.forward.queue`).
    pub queue: u64,
    /// Delivered (`modelgate.forward.sent`).
    pub sent: u64,
    /// Refused to senders because the queue was full (`modelgate.forward.refused`).
    pub refused: u64,
    /// Given up on, by reason (`modelgate.forward.dropped`).
    pub dropped: Vec<(DroppedReason, u64)>,
}

/// Receiver and forwarder counters, shared.
#[derive(Debug, Default)]
pub struct Telemetry {
    accepted: AtomicU64,
    refused: [AtomicU64; RefusedReason::ALL.len()],
    forward_queue: AtomicU64,
    forward_sent: AtomicU64,
    forward_refused: AtomicU64,
    forward_dropped: [AtomicU64; DroppedReason::ALL.len()],
}

impl Telemetry {
    /// Spans and log records accepted (measured or deliberately ignored).
    pub fn spans_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// Spans or log records (or requests, for payload-level reasons) refused.
    pub fn refused(&self, reason: RefusedReason, n: u64, detail: &str) {
        self.refused[reason.index()].fetch_add(n, Ordering::Relaxed);
        tracing::debug!(reason = reason.as_str(), count = n, detail, "refused");
    }

    /// Total accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Total refused so far for `reason`.
    pub fn refused_total(&self, reason: RefusedReason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    /// An export request entered the forward queue.
    pub fn forward_queued(&self) {
        self.forward_queue.fetch_add(1, Ordering::Relaxed);
    }

    /// The downstream took an export request.
    pub fn forward_sent(&self) {
        self.forward_queue.fetch_sub(1, Ordering::Relaxed);
        self.forward_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An export request was refused because the forward queue was full;
    /// the sender was told to retry.
    pub fn forward_refused(&self) {
        self.forward_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("forward queue full: export refused");
    }

    /// `n` accepted export requests were given up on.
    pub fn forward_dropped(&self, reason: DroppedReason, n: u64) {
        self.forward_queue.fetch_sub(n, Ordering::Relaxed);
        self.forward_dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The forwarder's counters now.
    pub fn forward(&self) -> ForwardCounters {
        ForwardCounters {
            queue: self.forward_queue.load(Ordering::Relaxed),
            sent: self.forward_sent.load(Ordering::Relaxed),
            refused: self.forward_refused.load(Ordering::Relaxed),
            dropped: DroppedReason::ALL
                .iter()
                .map(|r| (*r, self.forward_dropped[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}
