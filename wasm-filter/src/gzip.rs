//! Gzip (RFC 1952) for the OTLP/HTTP export: miniz_oxide's deflate inside
//! the gzip header and trailer, and only when it pays.
//!
//! Pure. The CRC-32 is written here with a 1 KiB table built at compile
//! time: `crc32fast` (what `flate2` uses) carries a 16 KiB table, as large as
//! the rest of the gzip support, in a module Envoy loads once per worker.

/// Batches smaller than this go out as they are: gzip's 18 bytes of framing
/// and the CPU are not worth it.
pub const MIN_BYTES: usize = 512;

/// Deflate level: the fastest. Spans repeat their keys and values, so even
/// the fastest level shrinks a batch several times.
const LEVEL: u8 = 1;

/// `data` gzipped, when that is at least `MIN_BYTES` in and smaller out.
pub fn if_it_pays(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_BYTES {
        return None;
    }
    let gzipped = gzip(data);
    (gzipped.len() < data.len()).then_some(gzipped)
}

/// `data` as one gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // ID1 ID2, CM = deflate, no flags, no mtime, XFL = fastest, OS = unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE: the input's length modulo 2^32, as the format says.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The CRC-32 (IEEE 802.3, reflected) lookup table.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// The CRC-32 of `data`, as gzip's trailer holds it.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, byte| {
        TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_crc_is_the_standard_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_standard_decoder_reads_it_back() {
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("span {} /risk-score v1.3 ", i % 97).into_bytes())
            .collect();
        let gzipped = if_it_pays(&data).expect("repetitive data compresses");
        assert!(gzipped.len() * 4 < data.len(), "{}", gzipped.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gzipped.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn it_is_used_only_when_it_pays() {
        assert_eq!(if_it_pays(b"short"), None);
        // Random bytes do not compress: sent as they are.
        let mut rng = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        assert_eq!(if_it_pays(&noise), None);
    }
}
