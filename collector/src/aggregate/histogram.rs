//! Histogram points -> requests: a cumulative point's increase since its
//! stream's last point ([`Streams`]), then the buckets onto the latency
//! sketch ([`requests`]).
//!
//! A histogram point is many requests whose latencies are known only to
//! their buckets. The mapping is exact where it can be: an exponential
//! histogram in milliseconds at scale 6 or finer has each bucket inside one
//! of the sketch's, so its requests land where recording them one by one
//! would have put them. Elsewhere (seconds, coarser scales, explicit
//! bounds) a bucket's requests are placed at the value that minimises the
//! worst relative error over the bucket, and that error is kept with them
//! ([`Requests::resolution`]) so the judge can state it. Requests below
//! the first explicit bound or above the last (an open bucket, unless the
//! point's min or max closes it) count at that bound.
//!
//! [`Streams`] keeps each cumulative stream's last point (bounded,
//! expiring) and answers a point's increase; resets are detected from the
//! start time, as the OpenTelemetry data model defines them. Time is a
//! parameter; nothing here reads the clock.

use hashbrown::HashMap;

use super::{FastHash, Sketch};
use crate::extract::metrics::{Buckets, Point, Stream};
use crate::extract::Outcome;
use crate::telemetry::SampleDropped;

/// Requests read from one histogram point.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Requests {
    /// Their latencies.
    pub(crate) latency: Sketch,
    /// Per [`Outcome::index`].
    pub(crate) outcomes: [u64; 3],
    /// The largest relative error of a reported latency among them: 0.54%
    /// (the sketch's own) when the buckets map exactly, up to 43% for a
    /// bucket like (100 ms, 250 ms].
    pub(crate) resolution: f64,
}

/// The requests of `buckets` (a point's, or its increase), with `point`'s
/// outcome, timeout and min/max.
pub(crate) fn requests(point: &Point, buckets: &Buckets) -> Requests {
    let mut out = Requests::default();
    let add = |out: &mut Requests, lower_ms: f64, n: u64| {
        let timeout = point.timeout_ms.is_some_and(|t| lower_ms >= t);
        let outcome = if timeout {
            Outcome::Timeout
        } else {
            point.outcome
        };
        out.outcomes[outcome.index()] += n;
    };
    match buckets {
        Buckets::Explicit { bounds_ms, counts } => {
            let last = counts.len() - 1;
            for (k, &n) in counts.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let n32 = u32::try_from(n).unwrap_or(u32::MAX);
                // Open ends closed by the point's own min and max.
                let first_bound = bounds_ms.first().copied().unwrap_or(f64::INFINITY);
                let lower = match k {
                    0 => point.min_ms.filter(|m| *m < first_bound),
                    _ => bounds_ms.get(k - 1).copied(),
                };
                let upper = match k {
                    k if k == last => point.max_ms.filter(|m| lower.is_some_and(|l| *m > l)),
                    _ => bounds_ms.get(k).copied(),
                };
                match (lower, upper) {
                    (Some(lo), Some(hi)) if lo > 0.0 => {
                        let e = out.latency.record_between(lo, hi, n32);
                        out.resolution = out.resolution.max(e);
                    }
                    // Up to the first bound: at it (none is slower).
                    (_, Some(hi)) => out.latency.record_n(hi.max(0.0), n32),
                    // Over the last bound: at it (none is faster).
                    (Some(lo), None) => out.latency.record_n(lo, n32),
                    // No bounds at all: one bucket, nothing to place.
                    (None, None) => out.latency.record_n(0.0, n32),
                }
                add(&mut out, lower.unwrap_or(0.0), u64::from(n32));
            }
        }
        Buckets::Exponential {
            scale,
            unit_ms,
            zero,
            offset,
            counts,
        } => {
            if *zero > 0 {
                let n = u32::try_from(*zero).unwrap_or(u32::MAX);
                out.latency.record_n(0.0, n);
                add(&mut out, 0.0, u64::from(n));
            }
            // Each bucket inside one of the sketch's: ms at scale 6 or more.
            let exact = *unit_ms == 1.0 && *scale >= 6;
            let base_log2 = (-f64::from(*scale)).exp2();
            for (i, &n) in counts.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let index = offset.saturating_add(i as i32);
                let lo = unit_ms * (f64::from(index) * base_log2).exp2();
                if exact {
                    out.latency.record_exponential(*scale, index, n);
                    out.resolution = out.resolution.max(super::sketch::RELATIVE_ERROR);
                } else {
                    let hi = unit_ms * (f64::from(index + 1) * base_log2).exp2();
                    let e = out.latency.record_between(lo, hi, n);
                    out.resolution = out.resolution.max(e);
                }
                add(&mut out, lo, u64::from(n));
            }
        }
    }
    out
}

/// The last point of one cumulative stream.
#[derive(Debug, Clone)]
struct Last {
    start_ns: u64,
    time_ns: u64,
    buckets: Buckets,
    /// When it arrived (unix ms), for expiry.
    seen_ms: u64,
}

/// Every cumulative stream's last point; see the module docs.
#[derive(Debug)]
pub(crate) struct Streams {
    last: HashMap<u64, Last, FastHash>,
    max: usize,
}

impl Streams {
    /// No stream yet; at most `max` remembered.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            last: HashMap::default(),
            max: max.max(1),
        }
    }

    /// Streams remembered.
    pub(crate) fn len(&self) -> usize {
        self.last.len()
    }

    /// Streams remembered at most.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Remembers at most `max` streams from now on (a smaller cap takes
    /// effect as streams expire).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    /// What `buckets`, a point of `stream` that arrived at `now_ms`, adds
    /// to what was counted: the difference from the stream's last point;
    /// everything when the stream (re)started within `fresh_ms` before now
    /// (its counts are all since a start recent enough to be judged); or
    /// why nothing is counted.
    pub(crate) fn increase(
        &mut self,
        stream: &Stream,
        buckets: &Buckets,
        now_ms: u64,
        fresh_ms: u64,
    ) -> Result<Buckets, SampleDropped> {
        let fresh = stream.start_ns > 0 && stream.start_ns / 1_000_000 + fresh_ms >= now_ms;
        let next = Last {
            start_ns: stream.start_ns,
            time_ns: stream.time_ns,
            buckets: buckets.clone(),
            seen_ms: now_ms,
        };
        let Some(last) = self.last.get_mut(&stream.id) else {
            if self.last.len() >= self.max {
                return Err(SampleDropped::StreamCap);
            }
            self.last.insert(stream.id, next);
            return if fresh {
                Ok(buckets.clone())
            } else {
                Err(SampleDropped::CumulativeReference)
            };
        };
        if stream.time_ns <= last.time_ns {
            return Err(SampleDropped::Repeated);
        }
        let restarted = stream.start_ns != last.start_ns;
        let increase = (!restarted)
            .then(|| difference(buckets, &last.buckets))
            .flatten();
        *last = next;
        match increase {
            Some(increase) => Ok(increase),
            // A new start: everything in it is new.
            None if restarted && fresh => Ok(buckets.clone()),
            // Counts that went down or buckets that changed without a new
            // start: this point can only be the next one's reference.
            None => Err(SampleDropped::CumulativeReference),
        }
    }

    /// Forgets streams whose last point arrived `idle_ms` or more ago.
    pub(crate) fn expire(&mut self, now_ms: u64, idle_ms: u64) {
        self.last.retain(|_, last| last.seen_ms + idle_ms > now_ms);
    }
}

/// `now - before`, bucket by bucket, when `before` is an earlier state of
/// the same counts: the same explicit bounds, or an exponential histogram
/// at the same or a finer scale (the SDKs only ever coarsen), with no
/// count gone down.
fn difference(now: &Buckets, before: &Buckets) -> Option<Buckets> {
    match (now, before) {
        (
            Buckets::Explicit { bounds_ms, counts },
            Buckets::Explicit {
                bounds_ms: before_bounds,
                counts: before_counts,
            },
        ) => {
            if bounds_ms != before_bounds || counts.len() != before_counts.len() {
                return None;
            }
            let counts = counts
                .iter()
                .zip(before_counts)
                .map(|(n, b)| n.checked_sub(*b))
                .collect::<Option<Vec<u64>>>()?;
            Some(Buckets::Explicit {
                bounds_ms: bounds_ms.clone(),
                counts,
            })
        }
        (
            Buckets::Exponential {
                scale,
                unit_ms,
                zero,
                offset,
                counts,
            },
            Buckets::Exponential {
                scale: before_scale,
                unit_ms: before_unit,
                zero: before_zero,
                offset: before_offset,
                counts: before_counts,
            },
        ) => {
            if unit_ms != before_unit || scale > before_scale {
                return None;
            }
            let shift = u32::try_from(before_scale - scale).ok()?;
            let mut out = counts.clone();
            for (i, &b) in before_counts.iter().enumerate() {
                if b == 0 {
                    continue;
                }
                // The earlier bucket's index at the current scale.
                let index = i64::from(*before_offset) + i as i64;
                let at = (index >> shift) - i64::from(*offset);
                let slot = usize::try_from(at).ok().and_then(|a| out.get_mut(a))?;
                *slot = slot.checked_sub(b)?;
            }
            Some(Buckets::Exponential {
                scale: *scale,
                unit_ms: *unit_ms,
                zero: zero.checked_sub(*before_zero)?,
                offset: *offset,
                counts: out,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::sketch::RELATIVE_ERROR;

    fn point(buckets: &Buckets) -> Point {
        Point {
            outcome: Outcome::Ok,
            buckets: buckets.clone(),
            cumulative: None,
            min_ms: None,
            max_ms: None,
            timeout_ms: None,
        }
    }

    /// `http.server.request.duration`'s advised bounds, in ms.
    const HTTP_BOUNDS: [f64; 14] = [
        5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
        10000.0,
    ];

    /// Explicit buckets with `counts` at (bucket index, count).
    fn explicit(counts: &[(usize, u64)]) -> Buckets {
        let mut all = vec![0; HTTP_BOUNDS.len() + 1];
        for (i, n) in counts {
            all[*i] = *n;
        }
        Buckets::Explicit {
            bounds_ms: HTTP_BOUNDS.to_vec(),
            counts: all,
        }
    }

    /// `values` (ms) as an exponential histogram at `scale` in `unit_ms`.
    fn exponential(values: &[f64], scale: i32, unit_ms: f64) -> Buckets {
        let per_octave = f64::from(scale).exp2();
        let index = |v: f64| ((v / unit_ms).log2() * per_octave).ceil() as i64 - 1;
        let offset = values.iter().map(|v| index(*v)).min().unwrap_or(0);
        let top = values.iter().map(|v| index(*v)).max().unwrap_or(0);
        let mut counts = vec![0u64; (top - offset + 1) as usize];
        for v in values {
            counts[(index(*v) - offset) as usize] += 1;
        }
        Buckets::Exponential {
            scale,
            unit_ms,
            zero: 0,
            offset: offset as i32,
            counts,
        }
    }

    const VALUES: [f64; 7] = [1.3, 7.9, 102.0, 118.5, 760.0, 801.0, 5000.0];

    #[test]
    fn an_exponential_histogram_in_ms_at_scale_6_or_finer_maps_exactly() {
        let mut direct = Sketch::new();
        for v in VALUES {
            direct.record(v);
        }
        for scale in [6, 8, 20] {
            let buckets = exponential(&VALUES, scale, 1.0);
            let r = requests(&point(&buckets), &buckets);
            assert_eq!(
                r.latency.buckets().map(|(_, c)| c).collect::<Vec<_>>(),
                direct.buckets().map(|(_, c)| c).collect::<Vec<_>>(),
                "scale {scale}"
            );
            for q in [0.1, 0.5, 0.9, 1.0] {
                let (a, b) = (r.latency.quantile(q).unwrap(), direct.quantile(q).unwrap());
                assert!(
                    (a - b).abs() / b <= 2.0 * RELATIVE_ERROR,
                    "scale {scale} q {q}"
                );
            }
            assert_eq!(r.resolution, RELATIVE_ERROR, "scale {scale}");
            assert_eq!(r.outcomes, [7, 0, 0]);
        }
    }

    #[test]
    fn elsewhere_every_reported_value_is_within_the_stated_error() {
        // Seconds at scale 6 and 3, milliseconds at scale 2: no longer
        // exact, but every quantile within the resolution of a real value.
        for (scale, unit_ms) in [(6, 1000.0), (3, 1000.0), (2, 1.0)] {
            let values: Vec<f64> = VALUES.to_vec();
            let buckets = exponential(&values, scale, unit_ms);
            let r = requests(&point(&buckets), &buckets);
            assert!(r.resolution > RELATIVE_ERROR, "scale {scale}");
            for (q, want) in [
                (1.0 / 7.0, 1.3),
                (3.0 / 7.0, 102.0),
                (5.0 / 7.0, 760.0),
                (1.0, 5000.0),
            ] {
                let got = r.latency.quantile(q).unwrap();
                assert!(
                    (got - want).abs() / want <= r.resolution + 1e-9,
                    "scale {scale} unit {unit_ms}: q {q} got {got} want {want}, resolution {}",
                    r.resolution
                );
            }
        }
    }

    #[test]
    fn explicit_buckets_state_their_coarse_error_and_open_ends_count_at_the_bound() {
        // v1.2 at about 102 ms: (100, 250]; v1.3 at 760 ms: (750, 1000];
        // one request over 10 s and one under 5 ms.
        let buckets = explicit(&[(6, 18), (9, 4), (14, 1), (0, 1)]);
        let r = requests(&point(&buckets), &buckets);
        assert_eq!(r.latency.count(), 24);
        // (100, 250] reported at its harmonic mean, 142.9 ms: 43% off at most.
        let p50 = r.latency.quantile(0.5).unwrap();
        assert!((p50 - 142.857).abs() / 142.857 < RELATIVE_ERROR, "{p50}");
        assert!(
            (r.resolution - 150.0 / 350.0).abs() < 0.01,
            "{}",
            r.resolution
        );
        // The open top bucket at its bound, 10 s; the bottom one at 5 ms.
        assert!((r.latency.quantile(1.0).unwrap() - 10_000.0).abs() / 1e4 < RELATIVE_ERROR);
        assert!((r.latency.quantile(0.0).unwrap() - 5.0).abs() / 5.0 < RELATIVE_ERROR);
        // The point's own min and max close the open ends.
        let mut p = point(&buckets);
        p.min_ms = Some(2.0);
        p.max_ms = Some(12_000.0);
        let r = requests(&p, &buckets);
        let top = r.latency.quantile(1.0).unwrap();
        assert!(top > 10_000.0 && top < 12_000.0, "{top}");
    }

    #[test]
    fn buckets_reaching_the_timeout_are_timeouts() {
        let buckets = explicit(&[(6, 10), (9, 4), (10, 2)]);
        let mut p = point(&buckets);
        p.outcome = Outcome::Error;
        p.timeout_ms = Some(750.0);
        let r = requests(&p, &buckets);
        assert_eq!(r.outcomes, [0, 10, 6]);
    }

    fn stream(id: u64, start_s: u64, time_s: u64) -> Stream {
        Stream {
            id,
            start_ns: start_s * 1_000_000_000,
            time_ns: time_s * 1_000_000_000,
        }
    }

    const NOW: u64 = 10_000_000;

    #[test]
    fn a_cumulative_stream_counts_its_increases_and_its_restarts() {
        let mut streams = Streams::new(10);
        let fresh = 60_000;
        // Started 5 s before now: everything since its start counts.
        let first = streams.increase(&stream(1, 9_995, 9_998), &explicit(&[(6, 3)]), NOW, fresh);
        assert_eq!(first, Ok(explicit(&[(6, 3)])));
        let next = streams.increase(
            &stream(1, 9_995, 10_008),
            &explicit(&[(6, 5), (9, 2)]),
            NOW + 10_000,
            fresh,
        );
        assert_eq!(next, Ok(explicit(&[(6, 2), (9, 2)])));
        // A retry of the same point adds nothing.
        let again = streams.increase(
            &stream(1, 9_995, 10_008),
            &explicit(&[(6, 5), (9, 2)]),
            NOW + 10_000,
            fresh,
        );
        assert_eq!(again, Err(SampleDropped::Repeated));
        // The process restarted: a new start, counts from zero.
        let reset = streams.increase(
            &stream(1, 10_010, 10_018),
            &explicit(&[(9, 1)]),
            NOW + 20_000,
            fresh,
        );
        assert_eq!(reset, Ok(explicit(&[(9, 1)])));
        // Counts that go down without a new start: only a reference.
        let down = streams.increase(
            &stream(1, 10_010, 10_028),
            &explicit(&[(6, 1)]),
            NOW + 30_000,
            fresh,
        );
        assert_eq!(down, Err(SampleDropped::CumulativeReference));
        let after = streams.increase(
            &stream(1, 10_010, 10_038),
            &explicit(&[(6, 4)]),
            NOW + 40_000,
            fresh,
        );
        assert_eq!(after, Ok(explicit(&[(6, 3)])));
    }

    #[test]
    fn an_old_stream_first_seen_is_only_a_reference_and_streams_are_bounded() {
        let mut streams = Streams::new(2);
        // Started an hour ago: its counts are an hour's, not now's.
        let old = streams.increase(
            &stream(1, 6_400, 9_999),
            &explicit(&[(6, 900)]),
            NOW,
            60_000,
        );
        assert_eq!(old, Err(SampleDropped::CumulativeReference));
        let unknown_start =
            streams.increase(&stream(2, 0, 9_999), &explicit(&[(6, 9)]), NOW, 60_000);
        assert_eq!(unknown_start, Err(SampleDropped::CumulativeReference));
        let third = streams.increase(&stream(3, 9_999, 9_999), &explicit(&[(6, 1)]), NOW, 60_000);
        assert_eq!(third, Err(SampleDropped::StreamCap));
        assert_eq!(streams.len(), 2);
        streams.expire(NOW + 30_000, 30_000);
        assert_eq!(streams.len(), 0);
    }

    #[test]
    fn an_exponential_stream_that_coarsened_still_subtracts() {
        let mut streams = Streams::new(4);
        let before = Buckets::Exponential {
            scale: 4,
            unit_ms: 1.0,
            zero: 1,
            offset: 100,
            counts: vec![1, 2, 3, 4],
        };
        streams
            .increase(&stream(7, 9_990, 9_995), &before, NOW, 60_000)
            .unwrap();
        // One scale coarser: buckets 100..104 at scale 4 are 50, 51 at 3.
        let now = Buckets::Exponential {
            scale: 3,
            unit_ms: 1.0,
            zero: 2,
            offset: 50,
            counts: vec![3, 9, 5],
        };
        let increase = streams.increase(&stream(7, 9_990, 10_005), &now, NOW, 60_000);
        assert_eq!(
            increase,
            Ok(Buckets::Exponential {
                scale: 3,
                unit_ms: 1.0,
                zero: 1,
                offset: 50,
                counts: vec![0, 2, 5],
            })
        );
        // A finer scale than before cannot be an earlier state's successor.
        let finer = Buckets::Exponential {
            scale: 5,
            unit_ms: 1.0,
            zero: 9,
            offset: 200,
            counts: vec![20],
        };
        let r = streams.increase(&stream(7, 9_990, 10_015), &finer, NOW, 60_000);
        assert_eq!(r, Err(SampleDropped::CumulativeReference));
    }
}
