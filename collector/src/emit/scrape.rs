//! `/metrics` pages that cost what changed since the last page, not the
//! whole state.
//!
//! Series are kept in groups: a service's endpoints split by a hash of
//! their key into [`parts`] of about [`ENDPOINTS_PER_GROUP`] endpoints
//! (with the judgements of those endpoints). The pipeline task walks the
//! services in name order, a [`slice`] per turn of its loop (at most about
//! [`SLICE_SERIES`] series looked at and [`SLICE_COPIED`] copied), takes a
//! [`Fingerprint`] of each group (the counts and sums its lines show, not
//! the lines) and copies the rows only of the groups whose fingerprint
//! differs from the last page's. Off the pipeline task, [`Pages::page`]
//! encodes those groups, on every core, each family's lines of a group
//! compressed on their own (a piece of deflate stream, see `Member`),
//! and assembles the page from the pieces it keeps into one gzip member:
//! an unchanged group costs a copy of its compressed bytes and a CRC
//! combination. Families stay whole (each descriptor once, then every
//! group's lines of it).
//!
//! The lines of a group are in label order; groups are in (service, part)
//! order, the overflow series' histograms last.
//!
//! It only reads the pipeline's state, and holds nothing the pipeline task
//! waits for.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::prometheus::{self as text, Family, MetricsSnapshot};
use super::{endpoint_rows, judged, overflow_rows, regression_row};
use crate::aggregate::Aggregator;
use crate::config::PrometheusConfig;
use crate::extract::EndpointKey;
use crate::judge::Judge;
use crate::telemetry::Reading;

/// Endpoints a group holds, about: small enough that a busy endpoint
/// re-encodes few idle ones with it, large enough that a group's
/// compressed piece does about as well as one stream would (each family's lines of
/// 64 endpoints are tens of KiB, over deflate's 32 KiB window).
pub const ENDPOINTS_PER_GROUP: usize = 64;

/// Series a slice looks at (fingerprints: a hash of a few counts each)
/// before it yields the pipeline task, after the service it is in.
pub const SLICE_SERIES: usize = 4096;

/// Series a slice copies (labels and histograms of changed groups) before
/// it yields the pipeline task, after the service it is in.
pub const SLICE_COPIED: usize = 512;

/// A group: a service and a part of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// service.name.
    pub service: String,
    /// Which of the service's [`parts`].
    pub part: u64,
}

/// What a group's lines show, hashed: its latency histograms (counts and
/// sums), its judgements, its database calls per request. Equal
/// fingerprints, equal lines (every sample adds to a count).
pub type Fingerprint = [u64; 3];

const HISTOGRAMS: usize = 0;
const REGRESSIONS: usize = 1;
const DB_CALLS: usize = 2;

/// The fingerprints of the groups of the last page.
pub type Known = HashMap<GroupKey, Fingerprint>;

/// How many parts the endpoints of a service with `endpoints` endpoints
/// are split into: a power of two, so that it changes (and the service's
/// groups are encoded anew) only when the service doubles or halves.
pub fn parts(endpoints: usize) -> u64 {
    (endpoints.div_ceil(ENDPOINTS_PER_GROUP).max(1) as u64).next_power_of_two()
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What one turn of the pipeline task gives a page.
#[derive(Debug, Default)]
pub struct Slice {
    /// Every group looked at, with its fingerprint.
    pub groups: Vec<(GroupKey, Fingerprint)>,
    /// The rows of the groups whose fingerprint is not the last page's,
    /// with the fingerprint they were copied at.
    pub changed: Vec<(GroupKey, Fingerprint, MetricsSnapshot)>,
    /// The service to start the next slice after; `None`: every service
    /// has been looked at and `overflow` holds the overflow series' rows.
    pub next: Option<String>,
    /// The overflow series' latency histograms (the last slice only).
    pub overflow: Option<MetricsSnapshot>,
}

/// What every group's rows are shown with.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// Histogram bucket bounds, ms.
    pub bounds_ms: &'a [f64],
    /// `extract.dimensions`.
    pub dimensions: &'a [String],
    /// `emit.prometheus`.
    pub prometheus: PrometheusConfig,
}

impl Shape<'_> {
    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            bounds_ms: self.bounds_ms.to_vec(),
            verdicts: self.prometheus.verdicts,
            ..MetricsSnapshot::default()
        }
    }
}

/// One turn's part of a page, run on the pipeline task: the services after
/// `after` (from the first when `None`) in name order, until about
/// [`SLICE_SERIES`] series were looked at or [`SLICE_COPIED`] copied (a
/// service is never split). Judged services with no series left and the
/// overflow series come with the last slice.
pub fn slice(
    agg: &Aggregator,
    judge: &Judge,
    shape: Shape<'_>,
    known: &Known,
    after: Option<&str>,
    now_ms: u64,
) -> Slice {
    let mut out = Slice::default();
    let (mut looked, mut copied) = (0, 0);
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    for service in agg.services_from(from) {
        let (l, c) = service_groups(agg, judge, shape, known, service, now_ms, &mut out);
        looked += l;
        copied += c;
        if looked >= SLICE_SERIES || copied >= SLICE_COPIED {
            out.next = Some(service.to_owned());
            return out;
        }
    }
    for service in judge.services() {
        if agg.service_endpoints(service).is_empty() {
            service_groups(agg, judge, shape, known, service, now_ms, &mut out);
        }
    }
    let mut overflow = shape.snapshot();
    overflow_rows(agg, shape.prometheus, &mut overflow.histograms);
    out.overflow = Some(overflow);
    out
}

/// Fingerprints the groups of `service` into `out` and copies the rows of
/// those that changed; returns the series looked at and copied.
fn service_groups(
    agg: &Aggregator,
    judge: &Judge,
    shape: Shape<'_>,
    known: &Known,
    service: &str,
    now_ms: u64,
    out: &mut Slice,
) -> (usize, usize) {
    let endpoints = agg.service_endpoints(service);
    let parts = parts(endpoints.len());
    let part_of = |endpoint: &EndpointKey| hash_of(endpoint) % parts;
    // Per part: its fingerprint, whether anything is in it.
    let mut groups: BTreeMap<u64, Fingerprint> = BTreeMap::new();
    let mut looked = 0;
    for (endpoint, versions) in &endpoints {
        let print = groups.entry(part_of(endpoint)).or_default();
        for (version, series) in versions.iter() {
            looked += 1;
            let counts = series
                .histograms
                .iter()
                .map(|h| h.as_ref().map(|h| (h.count, h.sum_ms.to_bits())));
            let h = hash_of(&(endpoint, version, counts.collect::<Vec<_>>()));
            print[HISTOGRAMS] = print[HISTOGRAMS].wrapping_add(h);
            if endpoint.phase.is_request() {
                let db = agg.window_db_calls(series, now_ms).to_bits();
                print[DB_CALLS] = print[DB_CALLS].wrapping_add(hash_of(&(endpoint, version, db)));
            }
        }
    }
    for (key, judgement) in judge.judgements_of(service) {
        let shown = judged(judgement);
        let h = hash_of(&(
            key,
            shown.active,
            shown.ratio.to_bits(),
            shown.difference.to_bits(),
            shown.firings,
            shown.verdict,
        ));
        let print = groups.entry(part_of(&key.endpoint)).or_default();
        print[REGRESSIONS] = print[REGRESSIONS].wrapping_add(h);
    }
    let mut changed: BTreeMap<u64, (Fingerprint, MetricsSnapshot)> = BTreeMap::new();
    for (part, print) in groups {
        let key = GroupKey {
            service: service.to_owned(),
            part,
        };
        if known.get(&key) != Some(&print) {
            changed.insert(part, (print, shape.snapshot()));
        }
        out.groups.push((key, print));
    }
    if changed.is_empty() {
        return (looked, 0);
    }
    let mut copied = 0;
    for (endpoint, versions) in &endpoints {
        if let Some((_, rows)) = changed.get_mut(&part_of(endpoint)) {
            copied += versions.len();
            endpoint_rows(
                agg,
                endpoint,
                versions,
                shape.dimensions,
                shape.prometheus,
                now_ms,
                rows,
            );
        }
    }
    for (key, judgement) in judge.judgements_of(service) {
        if let Some((_, rows)) = changed.get_mut(&part_of(&key.endpoint)) {
            rows.regressions
                .push(regression_row(key, judgement, shape.dimensions));
        }
    }
    for (part, (print, mut rows)) in changed {
        rows.histograms.sort_by(|a, b| a.labels.cmp(&b.labels));
        rows.regressions.sort_by(|a, b| a.labels.cmp(&b.labels));
        rows.db_calls.sort_by(|a, b| a.0.cmp(&b.0));
        let key = GroupKey {
            service: service.to_owned(),
            part,
        };
        out.changed.push((key, print, rows));
    }
    (looked, copied)
}

/// One family's lines of one group, compressed on their own: a raw
/// deflate stream ending at a byte boundary (a sync flush), not final,
/// no back-reference before its start, so that any such pieces one after
/// the other are one deflate stream. With the CRC-32 and length of the
/// text, a page of them is one gzip member ([`Pages::page`]), the way
/// `pigz` compresses in pieces: any gzip reader reads it.
#[derive(Debug, Clone, Default)]
struct Member {
    deflate: Bytes,
    crc: u32,
    text: usize,
}

impl Member {
    fn of(text: &[u8]) -> std::io::Result<Self> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self {
            deflate: Bytes::from(deflate_piece(text)?),
            crc: crc32fast::hash(text),
            text: text.len(),
        })
    }
}

/// `text` as a piece of a deflate stream (see [`Member`]), at the fastest
/// level: a scrape page is label sets repeated, which even it cuts about
/// tenfold, at a fraction of the default level's time.
fn deflate_piece(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(text.len() / 8 + 64);
    // Bounded: each round consumes input or adds output, and the output
    // of a sync flush is at most a few bytes per byte of input.
    for _ in 0..text.len() + 64 {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let rest = text.get(consumed..).unwrap_or_default();
        deflate
            .compress_vec(rest, &mut out, flate2::FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        let all_in = deflate.total_in() == text.len() as u64;
        // Room left in the output: the flush is complete.
        if all_in && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64));
    }
    Err(std::io::Error::other("deflate made no progress"))
}

/// The gzip header (RFC 1952): deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The last deflate block: empty, final, fixed Huffman codes.
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// `members` one after the other as one gzip member: header, their
/// deflate pieces, the final block, the CRC-32 of all their text (combined
/// from theirs) and its length.
fn gzip_of(members: &[&Member]) -> Vec<u8> {
    let size: usize = members.iter().map(|m| m.deflate.len()).sum();
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + size + DEFLATE_END.len() + 8);
    out.extend_from_slice(&GZIP_HEADER);
    let mut crc = crc32fast::Hasher::new();
    let mut len: u64 = 0;
    for m in members {
        out.extend_from_slice(&m.deflate);
        crc.combine(&crc32fast::Hasher::new_with_initial_len(
            m.crc,
            m.text as u64,
        ));
        len += m.text as u64;
    }
    out.extend_from_slice(&DEFLATE_END);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out
}

/// Compresses `text` as one gzip member.
pub fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(gzip_of(&[&Member::of(text)?]))
}

/// A group's lines as the last page showed them.
#[derive(Debug, Clone)]
struct Group {
    print: Fingerprint,
    /// Per family of [`Family::PER_SERIES`].
    members: Vec<Member>,
    /// Its latency histogram rows (what is counted as left out when they
    /// do not fit).
    histogram_rows: u64,
}

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The text encoder failed.
    #[error("cannot encode /metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    /// The compressor failed.
    #[error("cannot compress /metrics: {0}")]
    Compress(#[from] std::io::Error),
}

/// A page made by [`Pages::page`].
#[derive(Debug, Clone)]
pub struct Page {
    /// The page, gzip-compressed.
    pub gzip: Bytes,
    /// Its length as text.
    pub text_len: usize,
    /// Series' latency histogram rows left out to keep it under the
    /// largest page.
    pub omitted: u64,
}

/// The groups of the last page, encoded; see the module docs.
#[derive(Debug, Default)]
pub struct Pages {
    groups: BTreeMap<GroupKey, Group>,
    /// Each family's descriptor, once encoded.
    descriptors: Vec<Member>,
}

impl Pages {
    /// The fingerprints the next page's slices compare with.
    pub fn known(&self) -> Known {
        self.groups
            .iter()
            .map(|(k, g)| (k.clone(), g.print))
            .collect()
    }

    /// The page of `slices` (a walk over every service, in order; the
    /// last one holds the overflow series) and `readings`, at most
    /// `max_bytes` of text: latency histograms are left out from the last
    /// series on until it fits (`admin.metrics_max_bytes`); regressions,
    /// database calls and self-telemetry always stay. Groups that changed
    /// are encoded on up to `threads` threads; those that were not looked
    /// at are forgotten.
    pub fn page(
        &mut self,
        slices: Vec<Slice>,
        readings: Vec<Reading>,
        max_bytes: usize,
        threads: usize,
    ) -> Result<Page, PageError> {
        if self.descriptors.is_empty() {
            self.descriptors = Family::PER_SERIES
                .into_iter()
                .map(|family| {
                    let page = text::encode_family(Arc::default(), family)?;
                    Ok(Member::of(text::descriptor_of(&page).as_bytes())?)
                })
                .collect::<Result<_, PageError>>()?;
        }
        // A group met twice (services come and go between slices): its
        // last rows, with the fingerprint they were copied at.
        let mut current: BTreeMap<GroupKey, Fingerprint> = BTreeMap::new();
        let mut changed = BTreeMap::new();
        let mut overflow = None;
        for slice in slices {
            current.extend(slice.groups);
            for (key, print, rows) in slice.changed {
                changed.insert(key, (print, rows));
            }
            overflow = slice.overflow.or(overflow);
        }
        self.groups.retain(|key, _| current.contains_key(key));
        for (key, group) in encode_groups(changed.into_iter().collect(), threads)? {
            self.groups.insert(key, group);
        }
        let overflow = overflow.unwrap_or_default();
        let overflow_rows = overflow.histograms.len() as u64;
        let overflow = encode_group(overflow)?;
        let tail = text::encode_family(
            Arc::new(MetricsSnapshot {
                readings,
                ..MetricsSnapshot::default()
            }),
            Family::SelfTelemetry,
        )?;
        let tail = Member::of(tail.strip_suffix(text::EOF).unwrap_or(&tail).as_bytes())?;
        let eof = Member::of(text::EOF.as_bytes())?;

        // Every histogram member in page order, with its rows: those left
        // out come off the end.
        let histograms: Vec<(&Member, u64)> = self
            .groups
            .values()
            .map(|g| (&g.members[0], g.histogram_rows))
            .chain([(&overflow[0], overflow_rows)])
            .collect();
        let fixed: usize = self.descriptors.iter().map(|m| m.text).sum::<usize>()
            + self
                .groups
                .values()
                .flat_map(|g| &g.members[1..])
                .map(|m| m.text)
                .sum::<usize>()
            + overflow[1..].iter().map(|m| m.text).sum::<usize>()
            + tail.text
            + eof.text;
        let mut total = fixed;
        let mut kept = 0;
        for (member, _) in &histograms {
            if total + member.text > max_bytes {
                break;
            }
            total += member.text;
            kept += 1;
        }
        let omitted = histograms[kept..].iter().map(|(_, rows)| rows).sum();

        let mut members: Vec<&Member> = Vec::new();
        for (f, descriptor) in self.descriptors.iter().enumerate() {
            members.push(descriptor);
            if f == 0 {
                members.extend(histograms[..kept].iter().map(|(m, _)| *m));
                continue;
            }
            members.extend(self.groups.values().map(|g| &g.members[f]));
            members.push(&overflow[f]);
        }
        members.extend([&tail, &eof]);
        Ok(Page {
            gzip: Bytes::from(gzip_of(&members)),
            text_len: total,
            omitted,
        })
    }
}

/// Each family of [`Family::PER_SERIES`] of `rows`, as members.
fn encode_group(rows: MetricsSnapshot) -> Result<Vec<Member>, PageError> {
    let rows = Arc::new(rows);
    Family::PER_SERIES
        .into_iter()
        .map(|family| {
            let page = text::encode_family(Arc::clone(&rows), family)?;
            Ok(Member::of(text::samples_of(&page).as_bytes())?)
        })
        .collect()
}

/// Encodes the changed groups on up to `threads` threads, each taking the
/// next group as it is done with one.
/// A group to encode: its rows and the fingerprint they were copied at.
type Changed = (GroupKey, (Fingerprint, MetricsSnapshot));

fn encode_groups(
    changed: Vec<Changed>,
    threads: usize,
) -> Result<Vec<(GroupKey, Group)>, PageError> {
    // Each taken once, by whichever thread comes first.
    let work: Vec<Mutex<Option<Changed>>> =
        changed.into_iter().map(|c| Mutex::new(Some(c))).collect();
    let next = AtomicUsize::new(0);
    let run = || -> Result<Vec<(GroupKey, Group)>, PageError> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = work.get(i) else {
                return Ok(done);
            };
            let taken = slot.lock().map_or(None, |mut s| s.take());
            let Some((key, (print, rows))) = taken else {
                continue;
            };
            let histogram_rows = rows.histograms.len() as u64;
            let members = encode_group(rows)?;
            done.push((
                key,
                Group {
                    print,
                    members,
                    histogram_rows,
                },
            ));
        }
    };
    let threads = threads.clamp(1, work.len().max(1));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mut results = vec![run()];
        results.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }));
        results
    });
    let mut done = Vec::new();
    for r in results {
        done.extend(r?);
    }
    // Page order does not depend on which thread finished first: the
    // groups go into a map by key.
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aggregate::Cumulative;
    use crate::config::{AggregateConfig, JudgeConfig};
    use crate::emit::prometheus::RegressionRow;
    use crate::extract::{Outcome, Sample};
    use crate::telemetry::Telemetry;

    const T0: u64 = 1_763_658_000_000;

    fn shape(bounds_ms: &[f64]) -> Shape<'_> {
        Shape {
            bounds_ms,
            dimensions: &[],
            prometheus: PrometheusConfig::default(),
        }
    }

    fn row(endpoint: &str) -> HistogramRow {
        HistogramRow {
            labels: vec![
                ("service.name".into(), "s".into()),
                ("endpoint".into(), endpoint.to_owned()),
                ("model.version".into(), "v1".into()),
                ("outcome".into(), "ok".into()),
            ],
            histogram: Cumulative {
                buckets: vec![1, 0, 0],
                sum_ms: 1.0,
                count: 1,
            },
        }
    }

    fn group(part: u64) -> GroupKey {
        GroupKey {
            service: "s".into(),
            part,
        }
    }

    /// The page's text, read as one gzip member (a reader of several
    /// would hide a page that is not one), to exactly its stated length.
    fn text_of(page: &Page) -> String {
        use std::io::Read as _;
        #[allow(clippy::disallowed_methods, reason = "a test's own page")]
        let mut one = flate2::read::GzDecoder::new(&page.gzip[..]);
        let mut text = String::new();
        one.read_to_string(&mut text).unwrap();
        assert_eq!(text.len(), page.text_len);
        text
    }

    use super::super::prometheus::HistogramRow;

    #[test]
    fn one_group_is_the_page_prometheus_client_writes_of_it() {
        let snapshot = MetricsSnapshot {
            bounds_ms: vec![100.0, 150.0],
            histograms: vec![row("/a"), row("/b")],
            regressions: vec![RegressionRow {
                labels: vec![
                    ("service.name".into(), "s".into()),
                    ("endpoint".into(), "/a".into()),
                    ("candidate.version".into(), "v2".into()),
                    ("baseline.version".into(), "v1".into()),
                    ("rule".into(), "sla".into()),
                ],
                active: [true, false],
                ratio: 1.5,
                difference: 20.0,
                firings: [1, 0],
                verdict: "regression",
            }],
            db_calls: vec![(row("/a").labels, 2.0)],
            ..MetricsSnapshot::default()
        };
        let overflow = MetricsSnapshot {
            bounds_ms: snapshot.bounds_ms.clone(),
            histograms: vec![row("/overflow")],
            ..MetricsSnapshot::default()
        };
        let readings = Telemetry::default().readings();
        let whole = text::encode(MetricsSnapshot {
            histograms: [snapshot.histograms.clone(), overflow.histograms.clone()].concat(),
            readings: readings.clone(),
            ..snapshot.clone()
        })
        .unwrap();
        let slice = Slice {
            groups: vec![(group(0), [1, 2, 3])],
            changed: vec![(group(0), [1, 2, 3], snapshot)],
            next: None,
            overflow: Some(overflow),
        };
        let mut pages = Pages::default();
        let page = pages.page(vec![slice], readings, 1 << 30, 2).unwrap();
        assert_eq!(text_of(&page), whole);
        assert_eq!(page.omitted, 0);
    }

    /// A slice of `groups` groups of one row each, those in `changed` with
    /// their rows.
    fn slices(groups: u64, changed: &[u64], print: u64) -> Vec<Slice> {
        vec![Slice {
            groups: (0..groups).map(|p| (group(p), [p, 0, 0])).collect(),
            changed: changed
                .iter()
                .map(|&p| {
                    let rows = MetricsSnapshot {
                        bounds_ms: vec![100.0, 150.0],
                        histograms: vec![row(&format!(
                            "/{}-{print}",
                            "x".repeat(1000 + p as usize)
                        ))],
                        ..MetricsSnapshot::default()
                    };
                    (group(p), [p, 0, 0], rows)
                })
                .collect(),
            next: None,
            overflow: None,
        }]
    }

    #[test]
    fn unchanged_groups_are_kept_and_gone_ones_forgotten() {
        let mut pages = Pages::default();
        let all: Vec<u64> = (0..10).collect();
        let first = text_of(
            &pages
                .page(slices(10, &all, 1), Vec::new(), 1 << 30, 2)
                .unwrap(),
        );
        assert_eq!(pages.known().len(), 10);
        // Nothing copied: the same page.
        let same = text_of(
            &pages
                .page(slices(10, &[], 2), Vec::new(), 1 << 30, 2)
                .unwrap(),
        );
        assert_eq!(same, first);
        // Group 3 copied again (its rows now say 3): only it changed.
        let next = text_of(
            &pages
                .page(slices(10, &[3], 3), Vec::new(), 1 << 30, 2)
                .unwrap(),
        );
        let rows_of = |print: &str| {
            next.lines()
                .filter(|l| l.contains("_count{") && l.contains(print))
                .count()
        };
        assert_eq!(rows_of("-1\""), 9);
        assert_eq!(rows_of("-3\""), 1);
        // Groups 8 and 9 are gone.
        let fewer = text_of(
            &pages
                .page(slices(8, &[], 4), Vec::new(), 1 << 30, 2)
                .unwrap(),
        );
        assert_eq!(pages.known().len(), 8);
        assert_eq!(fewer.matches("_count{").count(), 8);
        assert!(fewer.ends_with("# EOF\n"));
        assert_eq!(
            fewer
                .matches("# TYPE modelgate_request_duration_seconds ")
                .count(),
            1
        );
    }

    #[test]
    fn the_page_is_bounded_by_bytes() {
        let all: Vec<u64> = (0..1000).collect();
        let max = 256 << 10;
        let page = Pages::default()
            .page(slices(1000, &all, 1), Vec::new(), max, 2)
            .unwrap();
        assert!(
            page.omitted > 700 && page.omitted < 1000,
            "{}",
            page.omitted
        );
        let text = text_of(&page);
        assert!(text.len() <= max, "{}", text.len());
        assert!(text.len() > max - 8192, "as much as fits: {}", text.len());
        assert_eq!(text.matches("_count{").count() as u64, 1000 - page.omitted);
        assert!(text.ends_with("# EOF\n"));
    }

    fn on(service: &str, endpoint: &str) -> Sample {
        Sample::request(
            EndpointKey {
                service: service.into(),
                endpoint: endpoint.into(),
                dims: Vec::new(),
                phase: crate::phase::Phase::Request,
                input: None,
            },
            "v1",
            Duration::from_millis(80),
            Outcome::Ok,
            0,
        )
    }

    fn aggregator() -> Aggregator {
        Aggregator::new(
            AggregateConfig::default(),
            vec![100.0, 150.0],
            Arc::new(Telemetry::default()),
            T0,
        )
    }

    /// Every slice of a walk over the state, `known` compared with.
    fn walk(agg: &Aggregator, judge: &Judge, known: &Known) -> Vec<Slice> {
        let bounds = [100.0, 150.0];
        let mut out: Vec<Slice> = Vec::new();
        // Bounded: every slice takes at least one service.
        for _ in 0..=agg.services_from(Bound::Unbounded).count() {
            let after = out.last().and_then(|s| s.next.clone());
            if !out.is_empty() && after.is_none() {
                break;
            }
            out.push(slice(
                agg,
                judge,
                shape(&bounds),
                known,
                after.as_deref(),
                T0,
            ));
        }
        assert!(out.last().unwrap().next.is_none(), "the walk ends");
        out
    }

    fn known_of(slices: &[Slice]) -> Known {
        slices
            .iter()
            .flat_map(|s| s.groups.iter().cloned())
            .collect()
    }

    #[test]
    fn only_groups_with_new_samples_are_copied() {
        let mut agg = aggregator();
        let judge = Judge::new(JudgeConfig::default());
        let samples: Vec<Sample> = (0..200).map(|i| on("busy", &format!("/e{i}"))).collect();
        agg.record(&samples, T0);
        agg.record(&[on("idle", "/only")], T0);

        let first = walk(&agg, &judge, &Known::new());
        let known = known_of(&first);
        // 200 endpoints: 4 parts; one for the other service.
        assert_eq!(known.len(), 5);
        let copied: usize = first.iter().map(|s| s.changed.len()).sum();
        assert_eq!(copied, 5, "everything is new");

        let again = walk(&agg, &judge, &known);
        assert_eq!(known_of(&again), known);
        assert!(
            again.iter().all(|s| s.changed.is_empty()),
            "nothing changed"
        );

        agg.record(&[on("busy", "/e7")], T0 + 1);
        let next = walk(&agg, &judge, &known);
        let changed: Vec<_> = next.iter().flat_map(|s| &s.changed).collect();
        assert_eq!(changed.len(), 1);
        let (key, print, rows) = changed[0];
        assert_eq!(key.service, "busy");
        assert_ne!(Some(print), known.get(key));
        assert!(
            rows.histograms.len() < 100,
            "one part of 200: {}",
            rows.histograms.len()
        );
        assert!(rows
            .histograms
            .iter()
            .any(|r| r.labels[1].1 == "/e7" && r.histogram.count == 2));
        assert!(rows
            .histograms
            .windows(2)
            .all(|w| w[0].labels < w[1].labels));
    }

    #[test]
    fn a_walk_takes_turns_and_meets_every_group_once() {
        let mut agg = aggregator();
        let judge = Judge::new(JudgeConfig::default());
        // Each service at extract.endpoints.max_per_service (500).
        for service in ["a", "b", "c", "d"] {
            let samples: Vec<Sample> = (0..SLICE_COPIED)
                .map(|i| on(service, &format!("/e{i}")))
                .collect();
            agg.record(&samples, T0);
        }
        let known = Known::new();
        let slices = walk(&agg, &judge, &known);
        // Two services copied are over SLICE_COPIED: a turn per two.
        assert_eq!(slices.len(), 3);
        assert_eq!(slices[0].next.as_deref(), Some("b"));
        assert_eq!(slices[1].next.as_deref(), Some("d"));
        let keys: Vec<&GroupKey> = slices
            .iter()
            .flat_map(|s| &s.groups)
            .map(|(k, _)| k)
            .collect();
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(keys.len(), unique.len(), "no group twice");
        let services: std::collections::BTreeSet<_> =
            keys.iter().map(|k| k.service.as_str()).collect();
        assert_eq!(services.len(), 4);
        assert!(slices.iter().filter(|s| s.overflow.is_some()).count() == 1);
    }

    #[test]
    fn judgements_are_in_their_endpoints_group() {
        let mut agg = aggregator();
        let mut judge = Judge::new(JudgeConfig::default());
        let t = crate::testing::lending_incident(&mut agg, &mut judge, T0);
        let bounds = [100.0, 150.0];
        let one = slice(&agg, &judge, shape(&bounds), &Known::new(), None, t);
        assert!(one.next.is_none());
        let regressions: usize = one
            .changed
            .iter()
            .map(|(_, _, r)| r.regressions.len())
            .sum();
        assert_eq!(regressions, judge.judgements().count());
        assert!(regressions > 0);
        let (_, print, _) = &one.changed[0];
        assert_ne!(print[REGRESSIONS], 0);
    }
}
