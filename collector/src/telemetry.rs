//! modelgate's own counters: what the receiver accepted and refused, and why.
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

/// Receiver counters, shared.
#[derive(Debug, Default)]
pub struct Telemetry {
    accepted: AtomicU64,
    refused: [AtomicU64; RefusedReason::ALL.len()],
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
}
