//! What the filter stamps on a request: the request id, the W3C
//! `traceparent`, and the model version (kept, or chosen by the sticky split).
//!
//! Pure: no host call. It must never trust a header: anything malformed is
//! treated as absent, never as an error that could fail the request.
//! `traceparent` is parsed here by hand: the format is 55 fixed ASCII
//! characters, and the crates that parse it either pull in the OpenTelemetry
//! SDK or are unmaintained.

use xxhash_rust::xxh64::xxh64;

/// A parsed W3C `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (never all zero): the edge span's parent.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a header value; `None` for anything the spec says to ignore.
    pub fn parse(value: &[u8]) -> Option<Self> {
        // Future versions may append fields after the 55 characters of 00.
        if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != 55) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        decode_hex(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        decode_hex(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// Formats a version-00 `traceparent`, sampled.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, trace_id);
    out.push('-');
    push_hex(&mut out, span_id);
    out.push_str("-01");
    out
}

fn hex_value(c: u8) -> Option<u8> {
    // Lowercase only: the spec forbids uppercase hex.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_value(*two.first()?)? << 4 | hex_value(*two.get(1)?)?)
}

fn decode_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Source of request, trace and span ids. Not cryptographic: ids must be
/// unique, not secret; seeded per VM from the host clock and the WASI RNG.
#[derive(Debug)]
pub struct Ids {
    rng: fastrand::Rng,
}

impl Ids {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A non-zero 16-byte trace id.
    pub fn trace_id(&mut self) -> [u8; 16] {
        self.rng.u128(1..).to_be_bytes()
    }

    /// A non-zero 8-byte span id.
    pub fn span_id(&mut self) -> [u8; 8] {
        self.rng.u64(1..).to_be_bytes()
    }

    /// A UUIDv4 request id.
    pub fn request_id(&mut self) -> String {
        let bytes = self.rng.u128(..).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }
}

/// Seed of the split's hash: fixed, so every Envoy worker and every restart
/// sends one client to the same version.
const SPLIT_SEED: u64 = 0x6d6f_6465_6c67_6174; // "modelgat"

/// The client's bucket in 0..10000: the same key always gives the same bucket.
pub fn bucket(sticky_key: &[u8]) -> u32 {
    // The remainder is below 10000, so it fits.
    (xxh64(sticky_key, SPLIT_SEED) % 10_000) as u32
}

/// Which version an unversioned request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The baseline version.
    Baseline,
    /// The candidate version.
    Candidate,
}

/// The sticky split: the candidate when the key's bucket falls under the
/// canary share and the candidate is not rolled back.
pub fn choose(sticky_key: &[u8], canary_basis_points: u32, rolled_back: bool) -> Choice {
    if rolled_back || canary_basis_points == 0 {
        Choice::Baseline
    } else if bucket(sticky_key) < canary_basis_points {
        Choice::Candidate
    } else {
        Choice::Baseline
    }
}

/// A header value usable as a version: 1–128 visible ASCII bytes.
pub fn valid_version(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > 128 || !value.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_traceparent() {
        let tp = TraceParent::parse(TP).unwrap();
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags, 1);
        assert_eq!(
            format_traceparent(&tp.trace_id, &tp.parent_id).as_bytes(),
            TP
        );
    }

    #[test]
    fn rejects_bad_traceparents() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A future version may carry more fields.
        let mut future = b"01".to_vec();
        future.extend_from_slice(&TP[2..]);
        future.extend_from_slice(b"-more");
        assert!(TraceParent::parse(&future).is_some());
    }

    #[test]
    fn ids_are_well_formed() {
        let mut ids = Ids::new(7);
        let rid = ids.request_id();
        assert_eq!(rid.len(), 36);
        assert_eq!(&rid[14..15], "4");
        assert_ne!(ids.trace_id(), [0; 16]);
        assert_ne!(ids.span_id(), [0; 8]);
    }

    #[test]
    fn split_is_sticky_and_near_the_weight() {
        let mut candidates = 0;
        for client in 0..10_000 {
            let key = format!("lender-{client}");
            let first = choose(key.as_bytes(), 1_000, false);
            assert_eq!(first, choose(key.as_bytes(), 1_000, false));
            if first == Choice::Candidate {
                candidates += 1;
            }
        }
        assert!((800..=1_200).contains(&candidates), "{candidates}");
        assert_eq!(choose(b"x", 10_000, true), Choice::Baseline);
        assert_eq!(choose(b"x", 10_000, false), Choice::Candidate);
        assert_eq!(choose(b"x", 0, false), Choice::Baseline);
    }

    #[test]
    fn version_values_are_checked() {
        assert_eq!(valid_version(b"v1.3"), Some("v1.3"));
        assert_eq!(valid_version(b""), None);
        assert_eq!(valid_version(b"v 1"), None);
        assert_eq!(valid_version(&[b'v'; 129]), None);
    }
}
