//! Receive: where OTLP enters modelgate.
//!
//! - [`grpc`]: OTLP/gRPC `TraceService/Export` on `receiver.grpc_listen`.
//! - [`http`]: OTLP/HTTP `/v1/traces` and `/v1/logs` on
//!   `receiver.http_listen`, protobuf or JSON.
//!
//! Receivers read the export inline (protobuf traces with
//! [`crate::extract::wire::scan`], everything else decoded and passed to
//! [`crate::extract`]), hand the samples to the pipeline without waiting
//! ([`hand_over`]), and with forwarding on queue the accepted export for
//! [`crate::forward`] as the bytes received; they are the only place where
//! protocol status codes are made. They keep no state of their own beyond a
//! per-thread cache of interned series names (`with_interner`).

use std::cell::RefCell;

use crate::config::ExtractConfig;
use crate::extract::{wire, ExtractReport, Interner, Sample};
use crate::pipeline::{IngestError, PipelineHandle};
use crate::telemetry::RefusedReason;

pub mod grpc;
pub mod http;

/// About the fewest bytes a span of an instrumented request takes on the
/// wire (they take 300 to 1,000), to size a request's sample list up front;
/// a request of smaller spans only grows its list a few times more.
const SPAN_BYTES_AT_LEAST: usize = 256;

thread_local! {
    /// Per thread, so no lock is ever taken on the receive path.
    static INTERNER: RefCell<Interner> = RefCell::new(Interner::default());
}

/// Runs `read` with this thread's interner: every receiver names its
/// samples' series through it, so a span of a known series allocates
/// nothing.
pub(crate) fn with_interner<T>(read: impl FnOnce(&mut Interner) -> T) -> T {
    INTERNER.with(|interner| read(&mut interner.borrow_mut()))
}

/// Reads an export's protobuf bytes into samples without decoding them
/// ([`wire::scan`]): the fast path of the gRPC and the OTLP/HTTP protobuf
/// receivers.
pub(crate) fn read_traces(
    bytes: &[u8],
    config: &ExtractConfig,
) -> Result<(Vec<Sample>, ExtractReport), wire::WireError> {
    with_interner(|interner| {
        // Sized so that the list rarely grows while it is filled.
        let mut samples = Vec::with_capacity(bytes.len() / SPAN_BYTES_AT_LEAST);
        let report = wire::scan(bytes, config, |s| samples.push(interner.intern(&s)))?;
        Ok((samples, report))
    })
}

/// Why a request body cannot be read (either protocol).
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over `receiver.max_message_bytes`, compressed or not.
    TooLarge,
    /// Not readable: broken off, or not the encoding it says.
    Invalid(String),
}

/// `gzipped` inflated, every member of it (RFC 1952 allows several, one
/// after the other, and senders that append do send them), never past
/// `limit` bytes (a small gzip bomb stays small).
pub(crate) fn gunzip(gzipped: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    #[allow(
        clippy::disallowed_methods,
        reason = "the one decoder, bounded by `take(limit + 1)` here"
    )]
    let decoder = flate2::read::MultiGzDecoder::new(gzipped);
    let read = decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Invalid(format!("invalid gzip body: {e}")))?;
    if read > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// The `partial_success` of an export: how many spans or records could not
/// be used, and the first reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Rejected spans or log records.
    pub rejected: i64,
    /// Why, for the sender.
    pub message: String,
}

/// Hands one export's samples to the pipeline and counts what extraction
/// made of it; `unusable` is the reason its rejected items are counted
/// under. A full queue refuses the whole export (the sender retries it), so
/// nothing is counted as accepted then.
pub fn hand_over(
    pipeline: &PipelineHandle,
    samples: Vec<Sample>,
    report: ExtractReport,
    unusable: RefusedReason,
) -> Result<Option<Partial>, IngestError> {
    if !samples.is_empty() {
        pipeline.try_ingest(samples)?;
    }
    let telemetry = pipeline.telemetry();
    telemetry.spans_accepted(report.samples + report.ignored);
    if report.truncated > 0 {
        telemetry.names_truncated(report.truncated);
    }
    Ok((report.rejected > 0).then(|| {
        let implausible = report.implausible.min(report.rejected);
        if implausible > 0 {
            telemetry.refused(
                RefusedReason::ImplausibleDuration,
                implausible,
                &report.message,
            );
        }
        if report.rejected > implausible {
            telemetry.refused(unusable, report.rejected - implausible, &report.message);
        }
        Partial {
            rejected: i64::try_from(report.rejected).unwrap_or(i64::MAX),
            message: report.message,
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_gzip_member_is_read_within_the_limit() {
        let mut body = gzip(b"first member, ");
        body.extend(gzip(b"second member"));
        assert_eq!(
            gunzip(&body, 1024).unwrap(),
            b"first member, second member".to_vec()
        );
        // The limit counts the members together.
        assert!(matches!(gunzip(&body, 20), Err(BodyError::TooLarge)));
        // A truncated second member is an error, not a silent half.
        let cut = &body[..body.len() - 4];
        assert!(matches!(gunzip(cut, 1024), Err(BodyError::Invalid(_))));
    }
}
