//! Aggregate: samples -> per-series sliding windows of latency sketches.
//!
//! A series is (service, endpoint, extra dimensions, version). Each keeps
//! time slots covering the baseline horizon, merged into coarser blocks as
//! they age ([`slots`]); the judge reads the last `window` of it for a
//! candidate and the whole horizon for a baseline. The
//! series count is capped: samples of series beyond the cap go to a single
//! overflow series (`otel.metric.overflow=true`, as the OpenTelemetry
//! Collector marks it) and are counted; so are the endpoints of one service
//! (`extract.endpoints.max_per_service`): a service's further endpoints
//! share its endpoint [`OVERFLOW_ENDPOINT`]. Series idle past the idle
//! timeout are dropped, so memory follows live traffic, not history.
//!
//! A histogram point is many requests at once: [`histogram`] turns it into
//! requests (a cumulative point's increase, then its buckets onto the
//! sketch) and they take the same path into their series' slot as a span's
//! one request, marked as read from buckets ([`WindowSummary::binned`]).
//!
//! The [`Aggregator`] is a plain struct owned by one task; time is always a
//! parameter (`now_ms`, unix milliseconds). It must never read the clock,
//! block, or grow without a bound.

mod histogram;
pub mod sketch;
mod slots;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::config::{AggregateConfig, ExtractConfig};
use crate::extract::metrics::Point;
use crate::extract::{EndpointKey, Outcome, Sample, SampleKind, SeriesName, OVERFLOW_ENDPOINT};
use crate::telemetry::{SampleDropped, Telemetry};
use histogram::{Requests, Streams};
pub use sketch::Sketch;
use slots::{Slot, Slots, Steps};

/// The hasher of the series map: foldhash (through hashbrown's default),
/// several times faster than SipHash on short keys; the keys are not chosen
/// by an attacker who sees the seed (it is random per process).
pub(crate) type FastHash = hashbrown::DefaultHashBuilder;

/// Every endpoint's versions. An `IndexMap`, so a series has a position
/// (endpoint index, version index) that [`Aggregator::record_interned`]
/// can remember per interned name instead of hashing and comparing the
/// name's strings for every span.
type Endpoints = IndexMap<EndpointKey, Versions, FastHash>;

/// Interned names whose series position is remembered, at most (twice what
/// two receiving threads intern; each entry keeps its name alive, a few
/// MiB in all); past it the memory starts over (a cache: forgetting costs
/// one lookup by name).
const MAX_LOCATED: usize = 1 << 14;

/// Where a series lives: (endpoint index, version index) in
/// [`Aggregator::endpoints`], or `None` for the overflow series.
type Location = Option<(usize, usize)>;

/// A remembered [`Location`] of one interned name. Holding the name keeps
/// its address, the key it is remembered by, from being reused for another.
#[derive(Debug)]
struct Located {
    _name: Arc<SeriesName>,
    at: Location,
    /// Its service's endpoint cap sent it to [`OVERFLOW_ENDPOINT`].
    capped: bool,
}

/// One service's endpoints: what judging one service at a time, and
/// expiring it, reads instead of every endpoint.
#[derive(Debug, Default)]
struct ServiceIndex {
    /// Positions in [`Aggregator::endpoints`], in the order the endpoints
    /// came (kept when a removal moves another endpoint's position).
    endpoints: Vec<usize>,
    /// The slot at which its series last merged their aged slots: once
    /// per slot, not once per tick.
    compacted_slot: u64,
}

/// Database calls wait this long for their request span. A request span ends
/// after its own database calls, so SDKs export it in the same batch or the
/// next one; a minute is generous.
const PENDING_DB_TTL_MS: u64 = 60_000;

/// What a series did over a stretch of its window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSummary {
    /// Latency of every request (all outcomes: timeouts are the slow ones).
    pub latency: Sketch,
    /// Requests by [`Outcome::index`].
    pub outcomes: [u64; 3],
    /// Database calls joined to these requests.
    pub db_calls: u64,
    /// Requests read from histogram points: their database calls are
    /// unknown, and their latency is known to `resolution`.
    pub binned: u64,
    /// The largest relative error of a latency read from a histogram
    /// bucket (0 when `binned` is 0): the sketch's own 0.54% where buckets
    /// map exactly, more for coarse buckets.
    pub resolution: f64,
}

impl WindowSummary {
    /// Requests.
    pub fn count(&self) -> u64 {
        self.latency.count()
    }

    /// Requests that timed out or failed.
    pub fn failures(&self) -> u64 {
        self.outcomes[Outcome::Error.index()] + self.outcomes[Outcome::Timeout.index()]
    }

    /// Fraction of requests with `outcome` (0 when there are none).
    pub fn rate(&self, outcome: Outcome) -> f64 {
        ratio(self.outcomes[outcome.index()], self.count())
    }

    /// Database calls per request (0 when there are no requests).
    pub fn db_calls_per_request(&self) -> f64 {
        ratio(self.db_calls, self.count())
    }

    /// Adds `other`'s figures (another endpoint's, another stretch of time).
    pub fn merge(&mut self, other: &WindowSummary) {
        self.latency.merge(&other.latency);
        for (sum, n) in self.outcomes.iter_mut().zip(other.outcomes) {
            *sum += n;
        }
        self.db_calls += other.db_calls;
        self.binned += other.binned;
        self.resolution = self.resolution.max(other.resolution);
    }

    fn add(&mut self, slot: &Slot) {
        self.latency.merge(&slot.latency);
        for (sum, n) in self.outcomes.iter_mut().zip(slot.outcomes) {
            *sum += n;
        }
        self.db_calls += slot.db_calls;
        if let Some(binned) = &slot.binned {
            self.binned += binned.requests;
            self.resolution = self.resolution.max(binned.resolution);
        }
    }
}

/// What one sample adds to its series' slot.
#[derive(Debug, Clone, Copy)]
enum Added<'a> {
    /// A span's or log record's one request.
    One { duration_ms: f64, outcome: Outcome },
    /// A histogram point's requests.
    Many(&'a Requests),
}

/// One fewer for `service` in a per-service count (its series, for its
/// share of the cap; its endpoints, for the endpoint cap); at zero it leaves.
fn forget_one(counts: &mut HashMap<String, usize>, service: &str) {
    if let Some(n) = counts.get_mut(service) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(service);
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A cumulative latency histogram with fixed bucket bounds, for Prometheus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cumulative {
    /// Count per bucket; the last one is `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of all values, milliseconds.
    pub sum_ms: f64,
    /// All values.
    pub count: u64,
}

impl Cumulative {
    fn new(bounds: usize) -> Self {
        Self {
            buckets: vec![0; bounds + 1],
            sum_ms: 0.0,
            count: 0,
        }
    }

    fn record(&mut self, bounds_ms: &[f64], value_ms: f64) {
        // Prometheus buckets are upper-inclusive (`le`). The bounds are
        // strictly ascending (configuration checks it), so counting those
        // below is the binary search's answer, without its unpredictable
        // branches (every span lands here).
        let i = bounds_ms.iter().filter(|b| **b < value_ms).count();
        if let Some(bucket) = self.buckets.get_mut(i) {
            *bucket += 1;
        }
        self.sum_ms += value_ms;
        self.count += 1;
    }
}

/// Everything kept about one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// Its history, fine while recent, coarser with age ([`slots`]).
    slots: Slots,
    /// The time of its earliest sample (unix ms): event time, so a backlog
    /// arriving at once still says which version came first.
    pub first_seen_ms: u64,
    /// The time of its latest sample (unix ms).
    pub last_seen_ms: u64,
    /// Since the series was created, per outcome (`None` until one is seen).
    pub histograms: [Option<Box<Cumulative>>; 3],
}

impl Series {
    fn new(now_ms: u64) -> Self {
        Self {
            slots: Slots::default(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            histograms: [None, None, None],
        }
    }

    /// Merged figures of the blocks overlapping the slots `oldest ..`.
    fn summary(&self, oldest: u64) -> WindowSummary {
        let mut summary = WindowSummary::default();
        for slot in self.slots.newer_than(oldest) {
            summary.add(slot);
        }
        summary
    }

    /// Database calls per request in the blocks overlapping the slots
    /// `oldest ..`: [`WindowSummary::db_calls_per_request`] of
    /// [`Series::summary`] without merging sketches (a `/metrics` page
    /// reads it for every series).
    fn db_calls_per_request(&self, oldest: u64) -> f64 {
        let (calls, requests) = self
            .slots
            .newer_than(oldest)
            .fold((0, 0), |(calls, requests), slot| {
                (calls + slot.db_calls, requests + slot.latency.count())
            });
        ratio(calls, requests)
    }

    /// Requests in the blocks overlapping the slots `oldest ..`, without
    /// merging sketches.
    fn count(&self, oldest: u64) -> u64 {
        self.slots.newer_than(oldest).map(Slot::requests).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.slots.heap_bytes()
            + self
                .histograms
                .iter()
                .flatten()
                .map(|h| std::mem::size_of::<Cumulative>() + h.buckets.capacity() * 8)
                .sum::<usize>()
    }
}

/// Database calls waiting for the request span of their trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingDb {
    service: String,
    calls: u64,
    since_ms: u64,
}

/// The series of one endpoint, by version, sorted by version.
///
/// A sorted vector, not a `BTreeMap`: endpoints have a handful of versions,
/// and a B-tree leaf would reserve room for eleven in every endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions(Vec<(String, Series)>);

impl Versions {
    fn position(&self, version: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(v, _)| v.as_str().cmp(version))
    }

    /// The series of `version`.
    pub fn get(&self, version: &str) -> Option<&Series> {
        self.position(version).ok().map(|i| &self.0[i].1)
    }

    /// The stored name equal to `version`, borrowed from `self`.
    pub fn name(&self, version: &str) -> Option<&str> {
        self.position(version).ok().map(|i| self.0[i].0.as_str())
    }

    /// Whether `version` has a series.
    pub fn contains_key(&self, version: &str) -> bool {
        self.position(version).is_ok()
    }

    /// Versions and their series, by version.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Series)> {
        self.0.iter().map(|(v, s)| (v, s))
    }

    /// Number of versions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No versions.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&str> for Versions {
    type Output = Series;
    fn index(&self, version: &str) -> &Series {
        match self.get(version) {
            Some(series) => series,
            None => panic!("no version {version:?}"),
        }
    }
}

/// What a snapshot keeps of an [`Aggregator`]. Generic so that writing
/// borrows the live state ([`AggregatorStateRef`]) and reading owns it
/// ([`AggregatorStateOwned`]) with one field list, hence one wire layout.
/// Settings are not kept, except the two the stored data depends on.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AggregatorState<Bounds, Endpoints, Overflow, Pending> {
    /// `aggregate.slot` in ms: slot indexes are `now_ms / slot_ms`.
    slot_ms: u64,
    /// `emit.histogram_buckets_ms`: the cumulative histograms' layout.
    bounds_ms: Bounds,
    endpoints: Endpoints,
    overflow: Overflow,
    pending_db: Pending,
}

/// The live state, borrowed: written whole, the reference a snapshot
/// written in slices is checked against.
#[cfg(test)]
pub(crate) type AggregatorStateRef<'a> =
    AggregatorState<&'a [f64], &'a Endpoints, &'a Series, &'a HashMap<[u8; 16], Vec<PendingDb>>>;

/// A state read back.
pub(crate) type AggregatorStateOwned =
    AggregatorState<Vec<f64>, Endpoints, Series, HashMap<[u8; 16], Vec<PendingDb>>>;

/// Why [`Aggregator::restore`] refused a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RestoreError {
    /// Slot indexes of another slot length mean other times.
    #[error(
        "it was written with aggregate.slot = {stored} ms, this configuration has {configured} ms"
    )]
    SlotChanged {
        /// The slot length it was written with.
        stored: u64,
        /// The slot length configured now.
        configured: u64,
    },
    /// Data the recording code could not work with.
    #[error("{0}")]
    Invalid(&'static str),
}

/// What [`Aggregator::restore`] did with a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Series taken over.
    pub(crate) series: usize,
    /// The cumulative histograms were dropped: the bucket bounds changed.
    pub(crate) histograms_dropped: bool,
}

/// What `extract` limits in the aggregator: a service's endpoints
/// (`extract.endpoints.max_per_service`) and the cumulative histogram
/// streams remembered (`extract.metrics.max_streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Endpoints one service may have before its overflow endpoint.
    pub max_endpoints_per_service: usize,
    /// Cumulative streams remembered.
    pub max_streams: usize,
}

impl InputLimits {
    /// The limits `extract` sets.
    pub fn of(extract: &ExtractConfig) -> Self {
        Self {
            max_endpoints_per_service: extract.endpoints.max_per_service,
            max_streams: extract.metrics.max_streams,
        }
    }
}

/// Owner of every series; see the module docs.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregateConfig,
    bounds_ms: Vec<f64>,
    slot_ms: u64,
    window_slots: u64,
    horizon_slots: u64,
    /// How slots coarsen with age.
    steps: Steps,
    /// The slot index at which the overflow series last merged its slots
    /// ([`Aggregator::expire_shared`]); each service keeps its own.
    compacted_slot: u64,
    /// `aggregate.allowed_lateness` in ms.
    lateness_ms: u64,
    /// `aggregate.max_future` in ms.
    future_ms: u64,
    endpoints: Endpoints,
    /// Positions of series by the address of their interned name; valid
    /// until a position moves (a version inserted before others, a series
    /// expired, a restore), when it is cleared.
    located: hashbrown::HashMap<usize, Located, FastHash>,
    series: usize,
    /// Series per service, for `aggregate.service_share`.
    per_service: HashMap<String, usize>,
    /// The most series one service may hold.
    service_limit: usize,
    overflow: Series,
    pending_db: HashMap<[u8; 16], Vec<PendingDb>>,
    pending_traces: usize,
    /// `extract.endpoints.max_per_service`.
    max_endpoints_per_service: usize,
    /// Each service's endpoints (their count is what that cap limits), by
    /// name: a judge's sweep walks them in order and resumes after a name.
    services: BTreeMap<String, ServiceIndex>,
    /// Per endpoint (by position), the [`Aggregator::generation`] in which
    /// it last took a sample: a service is named in `touched` once per
    /// generation per endpoint, at the cost of one comparison per sample.
    touched_in: Vec<u64>,
    /// Grows at each [`Aggregator::take_touched`].
    generation: u64,
    /// Services that took samples (or lost series to eviction) since the
    /// last [`Aggregator::take_touched`], with repeats; at most one entry
    /// per endpoint and service.
    touched: Vec<String>,
    /// The last point of every cumulative histogram stream.
    streams: Streams,
    /// Where the limits it hits are counted (series cap, endpoint cap,
    /// expiry, database calls that waited in vain, histogram streams).
    telemetry: Arc<Telemetry>,
    /// While a snapshot is taken in slices ([`crate::snapshot`]) its cursor
    /// is an endpoint position: emptied endpoints then stay where they are
    /// (with no series) instead of being removed, so no position moves
    /// under the cursor; they go at the first expiry or eviction after it.
    positions_held: bool,
}

impl Aggregator {
    /// An empty aggregator; `bounds_ms` are the Prometheus bucket bounds.
    pub fn new(
        config: AggregateConfig,
        bounds_ms: Vec<f64>,
        telemetry: Arc<Telemetry>,
        now_ms: u64,
    ) -> Self {
        let slot_ms = (config.slot.as_millis() as u64).max(1);
        let window_slots = (config.window.as_millis() as u64).div_ceil(slot_ms).max(1);
        let horizon_slots = (config.baseline_horizon.as_millis() as u64)
            .div_ceil(slot_ms)
            .max(window_slots);
        let lateness_ms = config
            .allowed_lateness
            .min(config.baseline_horizon)
            .as_millis() as u64;
        let future_ms = config.max_future.as_millis() as u64;
        let service_limit =
            ((config.max_series as f64 * config.service_share).ceil() as usize).max(1);
        let defaults = InputLimits::of(&ExtractConfig::default());
        Self {
            config,
            bounds_ms,
            slot_ms,
            window_slots,
            horizon_slots,
            steps: Steps::new(window_slots, horizon_slots),
            compacted_slot: 0,
            lateness_ms,
            future_ms,
            endpoints: Endpoints::default(),
            located: hashbrown::HashMap::default(),
            series: 0,
            per_service: HashMap::new(),
            service_limit,
            overflow: Series::new(now_ms),
            pending_db: HashMap::new(),
            pending_traces: 0,
            max_endpoints_per_service: defaults.max_endpoints_per_service,
            services: BTreeMap::new(),
            touched_in: Vec::new(),
            generation: 1,
            touched: Vec::new(),
            streams: Streams::new(defaults.max_streams),
            telemetry,
            positions_held: false,
        }
    }

    /// With the limits `extract` sets on what it keeps (the defaults until
    /// called).
    pub fn with_limits(mut self, limits: InputLimits) -> Self {
        self.max_endpoints_per_service = limits.max_endpoints_per_service.max(1);
        self.streams.set_max(limits.max_streams);
        self
    }

    /// The limits it keeps its input to.
    pub fn limits(&self) -> InputLimits {
        InputLimits {
            max_endpoints_per_service: self.max_endpoints_per_service,
            max_streams: self.streams.max(),
        }
    }

    /// Records a batch that arrived at `now_ms`: database calls first, so a
    /// request in the same batch finds the calls of its trace. Each request
    /// counts at its own time ([`Sample::time_ms`], the arrival time when it
    /// has none); one too late for the judgement or from too far in the
    /// future is counted and left out (`Aggregator::admit`). A histogram
    /// point's requests take the same path: its increase over its stream's
    /// last point (cumulative) or all of it (delta), at the point's time.
    pub fn record(&mut self, samples: &[Sample], now_ms: u64) {
        for sample in samples {
            if sample.kind == SampleKind::DbCall {
                self.record_db_call(&sample.trace_id, sample.service(), now_ms);
            }
        }
        for sample in samples {
            let requests;
            let added = match &sample.kind {
                SampleKind::Request { duration, outcome } => Added::One {
                    duration_ms: duration.as_secs_f64() * 1e3,
                    outcome: *outcome,
                },
                SampleKind::Histogram(point) => {
                    // The stream moves on even when the point is then left
                    // out: its requests must not come back with the next.
                    let Some(read) = self.histogram_requests(point, now_ms) else {
                        continue;
                    };
                    // A cumulative stream that did not move: nothing
                    // happened, and a quiet series must stay quiet.
                    if read.latency.count() == 0 {
                        continue;
                    }
                    requests = read;
                    Added::Many(&requests)
                }
                SampleKind::DbCall => continue,
            };
            let Some(time_ms) = self.admit(sample.time_ms, now_ms) else {
                continue;
            };
            let db_calls = match added {
                Added::One { .. } => self.take_pending_db(&sample.trace_id, sample.service()),
                // Histograms carry no traces.
                Added::Many(_) => 0,
            };
            let (at, capped) = self.located(&sample.series, time_ms);
            if capped {
                self.telemetry.endpoint_overflowed();
            }
            self.record_at(at, &added, db_calls, time_ms, now_ms);
        }
    }

    /// The requests of a histogram point: all of a delta point's; a
    /// cumulative point's increase since its stream's last point, or
    /// `None` (counted) when there is none to count.
    fn histogram_requests(&mut self, point: &Point, now_ms: u64) -> Option<Requests> {
        let Some(stream) = &point.cumulative else {
            return Some(histogram::requests(point, &point.buckets));
        };
        let increase = self
            .streams
            .increase(stream, &point.buckets, now_ms, self.lateness_ms);
        self.telemetry.metric_streams(self.streams.len());
        match increase {
            Ok(buckets) => Some(histogram::requests(point, &buckets)),
            Err(reason) => {
                self.telemetry.sample_dropped(reason);
                None
            }
        }
    }

    /// The time a request sample counts at, or `None` (counted) when it is
    /// older than `aggregate.allowed_lateness` or newer than
    /// `aggregate.max_future` at `now_ms`.
    fn admit(&self, time_ms: u64, now_ms: u64) -> Option<u64> {
        if time_ms == 0 {
            return Some(now_ms);
        }
        if time_ms.saturating_add(self.lateness_ms) < now_ms {
            self.telemetry.sample_dropped(SampleDropped::Late);
            return None;
        }
        if time_ms > now_ms.saturating_add(self.future_ms) {
            self.telemetry.sample_dropped(SampleDropped::Future);
            return None;
        }
        Some(time_ms)
    }

    /// The location of `name`'s series (created if there is room), and
    /// whether its service's endpoint cap sent it to the overflow
    /// endpoint: a hash of its address when remembered, else a lookup by
    /// its strings.
    fn located(&mut self, name: &Arc<SeriesName>, time_ms: u64) -> (Location, bool) {
        let key = Arc::as_ptr(name) as usize;
        if let Some(located) = self.located.get(&key) {
            return (located.at, located.capped);
        }
        let (at, capped) = self.locate(&name.endpoint, &name.version, time_ms);
        if self.located.len() >= MAX_LOCATED {
            self.located.clear();
        }
        self.located.insert(
            key,
            Located {
                _name: name.clone(),
                at,
                capped,
            },
        );
        (at, capped)
    }

    /// The location of a series, created if there is room under the cap
    /// (made by evicting nearly empty series, see [`Aggregator::make_room`]);
    /// `None` (the overflow series) when there is not. A new endpoint of a
    /// service at its endpoint cap is its [`OVERFLOW_ENDPOINT`] (`true`).
    fn locate(&mut self, endpoint: &EndpointKey, version: &str, time_ms: u64) -> (Location, bool) {
        let known = self
            .endpoints
            .get_full(endpoint)
            .and_then(|(e, _, versions)| versions.position(version).ok().map(|v| (e, v)));
        if known.is_some() {
            return (known, false);
        }
        let at_cap = !self.make_room(&endpoint.service, time_ms);
        match self.endpoints.get_full_mut(endpoint) {
            Some((e, _, versions)) => match versions.position(version) {
                Ok(v) => (Some((e, v)), false),
                Err(_) if at_cap => (None, false),
                Err(v) => {
                    versions
                        .0
                        .insert(v, (version.to_owned(), Series::new(time_ms)));
                    self.series += 1;
                    *self
                        .per_service
                        .entry(endpoint.service.clone())
                        .or_default() += 1;
                    self.telemetry.series_active(self.series);
                    // The endpoint's later versions moved.
                    self.located.clear();
                    (Some((e, v)), false)
                }
            },
            None if at_cap => (None, false),
            None => {
                let endpoints = self.services.get(&endpoint.service);
                if endpoints.is_some_and(|s| s.endpoints.len() >= self.max_endpoints_per_service)
                    && endpoint.endpoint != OVERFLOW_ENDPOINT
                {
                    let overflow = EndpointKey {
                        endpoint: OVERFLOW_ENDPOINT.to_owned(),
                        ..endpoint.clone()
                    };
                    return (self.locate(&overflow, version, time_ms).0, true);
                }
                // Appended last: no other position moves.
                let versions = Versions(vec![(version.to_owned(), Series::new(time_ms))]);
                let (e, _) = self.endpoints.insert_full(endpoint.clone(), versions);
                self.touched_in.push(0);
                self.services
                    .entry(endpoint.service.clone())
                    .or_default()
                    .endpoints
                    .push(e);
                self.series += 1;
                *self
                    .per_service
                    .entry(endpoint.service.clone())
                    .or_default() += 1;
                self.telemetry.series_active(self.series);
                (Some((e, 0)), false)
            }
        }
    }

    /// Whether a new series of `service` fits: under its service's share
    /// and the cap, after evicting nearly empty series (of that service
    /// when it is at its share, of any otherwise) when it must.
    fn make_room(&mut self, service: &str, now_ms: u64) -> bool {
        let held = self.per_service.get(service).copied().unwrap_or(0);
        if held >= self.service_limit {
            self.evict(Some(service), self.service_limit, now_ms);
            if self.per_service.get(service).copied().unwrap_or(0) >= self.service_limit {
                return false;
            }
        }
        if self.series >= self.config.max_series {
            self.evict(None, self.config.max_series, now_ms);
        }
        self.series < self.config.max_series
    }

    /// Evicts up to a 64th of `limit` nearly empty series (fewer than
    /// `aggregate.evict_below` requests over the horizon) of `service` (any
    /// when `None`): fewest requests first, then the one idle longest, so
    /// a flood of one-request series evicts itself before it reaches a
    /// series with traffic. One pass over the series per batch keeps the
    /// cost per new series constant.
    fn evict(&mut self, service: Option<&str>, limit: usize, now_ms: u64) {
        let batch = (limit / 64).max(1);
        let mut candidates: Vec<(u64, u64, usize, usize)> = Vec::new();
        for (e, (key, versions)) in self.endpoints.iter().enumerate() {
            if service.is_some_and(|s| s != key.service) {
                continue;
            }
            for (v, (_, series)) in versions.0.iter().enumerate() {
                let count = self.horizon_count(series, now_ms);
                if count < self.config.evict_below {
                    candidates.push((count, series.last_seen_ms, e, v));
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        if candidates.len() > batch {
            candidates.select_nth_unstable(batch - 1);
            candidates.truncate(batch);
        }
        // Highest positions first, so removing one never moves another.
        candidates.sort_unstable_by_key(|c| std::cmp::Reverse((c.2, c.3)));
        let mut evicted = 0;
        for (_, _, e, v) in candidates {
            if let Some((key, versions)) = self.endpoints.get_index_mut(e) {
                if v < versions.0.len() {
                    versions.0.remove(v);
                    evicted += 1;
                    forget_one(&mut self.per_service, &key.service);
                    // Its judgements must go: the judge is told.
                    self.touched.push(key.service.clone());
                }
            }
        }
        // Emptied endpoints go, highest first (a removal moves in only an
        // endpoint already kept), with any a snapshot left in place: not
        // while a snapshot's cursor needs the positions to stay.
        if !self.positions_held {
            let empty: Vec<usize> = (0..self.endpoints.len())
                .rev()
                .filter(|e| {
                    self.endpoints
                        .get_index(*e)
                        .is_some_and(|(_, v)| v.is_empty())
                })
                .collect();
            for e in empty {
                self.remove_endpoint(e);
            }
        }
        self.series -= evicted;
        self.located.clear();
        self.telemetry.series_evicted(evicted as u64);
        self.telemetry.series_active(self.series);
    }

    /// Removes the endpoint at position `e`: the last endpoint takes its
    /// position (`swap_remove`), and the service index follows both.
    fn remove_endpoint(&mut self, e: usize) {
        let last = self.endpoints.len().saturating_sub(1);
        let Some((key, _)) = self.endpoints.swap_remove_index(e) else {
            return;
        };
        self.touched_in.swap_remove(e);
        if let Some(index) = self.services.get_mut(&key.service) {
            index.endpoints.retain(|p| *p != e);
            if index.endpoints.is_empty() {
                self.services.remove(&key.service);
            }
        }
        if e != last {
            let moved = self.endpoints.get_index(e).map(|(k, _)| k.service.as_str());
            if let Some(index) = moved.and_then(|s| self.services.get_mut(s)) {
                for p in &mut index.endpoints {
                    if *p == last {
                        *p = e;
                    }
                }
            }
        }
    }

    fn record_db_call(&mut self, trace_id: &[u8; 16], service: &str, now_ms: u64) {
        if *trace_id == [0; 16] {
            self.telemetry.db_unmatched(1);
            return;
        }
        let waiting = self.pending_db.get_mut(trace_id);
        if let Some(entry) = waiting.and_then(|list| list.iter_mut().find(|p| p.service == service))
        {
            entry.calls += 1;
            return;
        }
        if self.pending_traces >= self.config.max_pending_traces {
            self.telemetry.db_pending_dropped();
            return;
        }
        self.pending_traces += 1;
        self.pending_db
            .entry(*trace_id)
            .or_default()
            .push(PendingDb {
                service: service.to_owned(),
                calls: 1,
                since_ms: now_ms,
            });
    }

    fn take_pending_db(&mut self, trace_id: &[u8; 16], service: &str) -> u64 {
        if self.pending_db.is_empty() {
            return 0;
        }
        let Some(list) = self.pending_db.get_mut(trace_id) else {
            return 0;
        };
        let Some(pos) = list.iter().position(|p| p.service == service) else {
            return 0;
        };
        let calls = list.swap_remove(pos).calls;
        self.pending_traces -= 1;
        if list.is_empty() {
            self.pending_db.remove(trace_id);
        }
        calls
    }

    fn record_at(
        &mut self,
        at: Location,
        added: &Added<'_>,
        db_calls: u64,
        time_ms: u64,
        now_ms: u64,
    ) {
        let slot_index = time_ms / self.slot_ms;
        if let Some((e, _)) = at {
            self.touch(e);
        }
        let series = at.and_then(|(e, v)| {
            let (_, versions) = self.endpoints.get_index_mut(e)?;
            versions.0.get_mut(v).map(|(_, series)| series)
        });
        let series = match series {
            Some(series) => series,
            None => {
                debug_assert!(at.is_none(), "a remembered location {at:?} is stale");
                self.telemetry.series_overflowed();
                &mut self.overflow
            }
        };
        series.first_seen_ms = series.first_seen_ms.min(time_ms);
        series.last_seen_ms = series.last_seen_ms.max(time_ms);
        if series.slots.opens(slot_index) {
            // A series opening a new slot merges its aged ones first, so a
            // backlog filling its history at once never holds more than a
            // window step of fine slots (the tick merges idle series').
            series.slots.compact(&self.steps, now_ms / self.slot_ms);
        }
        let slot = series.slots.slot_mut(slot_index);
        slot.db_calls += db_calls;
        match *added {
            Added::One {
                duration_ms,
                outcome,
            } => {
                slot.latency.record(duration_ms);
                slot.outcomes[outcome.index()] += 1;
                let bounds = &self.bounds_ms;
                series.histograms[outcome.index()]
                    .get_or_insert_with(|| Box::new(Cumulative::new(bounds.len())))
                    .record(bounds, duration_ms);
            }
            // Not in the cumulative (Prometheus) histograms: those are the
            // requests modelgate measured; these are the sender's own
            // histograms, forwarded as they came.
            Added::Many(requests) => {
                slot.latency.merge(&requests.latency);
                for (sum, n) in slot.outcomes.iter_mut().zip(requests.outcomes) {
                    *sum += n;
                }
                let binned = slot.binned.get_or_insert_with(Box::default);
                binned.requests += requests.latency.count();
                binned.resolution = binned.resolution.max(requests.resolution);
            }
        }
    }

    /// Names the service of endpoint `e` in `touched`, once per generation.
    fn touch(&mut self, e: usize) {
        let Some(seen) = self.touched_in.get_mut(e) else {
            return;
        };
        if *seen == self.generation {
            return;
        }
        *seen = self.generation;
        if let Some((key, _)) = self.endpoints.get_index(e) {
            self.touched.push(key.service.clone());
        }
    }

    /// The services that took samples, or lost series to eviction, since
    /// the last call (with repeats): those whose verdicts may have changed
    /// other than by the passage of time.
    pub fn take_touched(&mut self) -> Vec<String> {
        self.generation += 1;
        std::mem::take(&mut self.touched)
    }

    /// Every service, in name order, from `from` on.
    pub fn services_from<'a>(&'a self, from: Bound<&'a str>) -> impl Iterator<Item = &'a str> {
        self.services
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(s, _)| s.as_str())
    }

    /// The endpoints of `service` with their versions, in the order they came.
    pub fn service_endpoints(&self, service: &str) -> Vec<(&EndpointKey, &Versions)> {
        let Some(index) = self.services.get(service) else {
            return Vec::new();
        };
        index
            .endpoints
            .iter()
            .filter_map(|e| self.endpoints.get_index(*e))
            .collect()
    }

    /// Live series of `service`.
    pub fn service_series(&self, service: &str) -> usize {
        self.per_service.get(service).copied().unwrap_or(0)
    }

    /// [`Aggregator::expire_service`] for every service, and
    /// [`Aggregator::expire_shared`].
    pub fn expire(&mut self, now_ms: u64) {
        let services: Vec<String> = self.services.keys().cloned().collect();
        for service in &services {
            self.expire_service(service, now_ms);
        }
        self.expire_shared(now_ms);
    }

    /// The series of `service`: merges slots that have aged into a coarser
    /// block (once per slot), drops blocks older than the horizon and
    /// series idle past the timeout. Touches only that service, so a judge
    /// that judges a service at a time expires it just before.
    pub fn expire_service(&mut self, service: &str, now_ms: u64) {
        let now_slot = now_ms / self.slot_ms;
        let Some(index) = self.services.get_mut(service) else {
            return;
        };
        let compact = now_slot != index.compacted_slot;
        index.compacted_slot = now_slot;
        let oldest_kept = (now_slot + 1).saturating_sub(self.horizon_slots);
        let steps = self.steps;
        let idle_ms = self.config.series_idle_timeout.as_millis() as u64;
        let mut removed = 0;
        let mut emptied = Vec::new();
        for &e in &index.endpoints {
            let Some((_, versions)) = self.endpoints.get_index_mut(e) else {
                continue;
            };
            versions.0.retain_mut(|(_, series)| {
                series.slots.expire(oldest_kept);
                if compact {
                    series.slots.compact(&steps, now_slot);
                }
                let keep = series.last_seen_ms.saturating_add(idle_ms) > now_ms;
                removed += usize::from(!keep);
                keep
            });
            if versions.is_empty() {
                emptied.push(e);
            }
        }
        for _ in 0..removed {
            forget_one(&mut self.per_service, service);
        }
        // Highest first, so each removal moves only a kept endpoint; not
        // while a snapshot's cursor needs the positions to stay (an empty
        // endpoint is found again at the service's next expiry).
        if !self.positions_held {
            emptied.sort_unstable_by(|a, b| b.cmp(a));
            for e in emptied {
                self.remove_endpoint(e);
            }
        }
        if removed > 0 {
            self.series -= removed;
            self.telemetry.series_expired(removed as u64);
            self.telemetry.series_active(self.series);
            // Positions after the removed series moved.
            self.located.clear();
        }
    }

    /// What belongs to no service: the overflow series (as
    /// [`Aggregator::expire_service`] does a series), idle histogram
    /// streams and database calls that never met their request.
    pub fn expire_shared(&mut self, now_ms: u64) {
        let now_slot = now_ms / self.slot_ms;
        let oldest_kept = (now_slot + 1).saturating_sub(self.horizon_slots);
        let compact = now_slot != self.compacted_slot;
        self.compacted_slot = now_slot;
        let steps = self.steps;
        let idle_ms = self.config.series_idle_timeout.as_millis() as u64;
        self.streams.expire(now_ms, idle_ms);
        self.telemetry.metric_streams(self.streams.len());
        self.overflow.slots.expire(oldest_kept);
        if compact {
            self.overflow.slots.compact(&steps, now_slot);
        }
        let mut unmatched = 0;
        let mut pending = 0;
        self.pending_db.retain(|_, list| {
            list.retain(|p| {
                let keep = p.since_ms + PENDING_DB_TTL_MS > now_ms;
                if !keep {
                    unmatched += p.calls;
                }
                keep
            });
            pending += list.len();
            !list.is_empty()
        });
        self.pending_traces = pending;
        if unmatched > 0 {
            self.telemetry.db_unmatched(unmatched);
        }
    }

    /// The candidate window of `series` at `now_ms`: `aggregate.window`,
    /// reaching back to the start of the window step of its oldest slot.
    pub fn window(&self, series: &Series, now_ms: u64) -> WindowSummary {
        series.summary(self.oldest(now_ms, self.window_slots))
    }

    /// Database calls per request of `series` in the candidate window at
    /// `now_ms`: what [`Aggregator::window`] says, at the cost of a sum.
    pub fn window_db_calls(&self, series: &Series, now_ms: u64) -> f64 {
        series.db_calls_per_request(self.oldest(now_ms, self.window_slots))
    }

    /// The first slot index of a stretch of `slots` slots ending at `now_ms`.
    fn oldest(&self, now_ms: u64, slots: u64) -> u64 {
        (now_ms / self.slot_ms + 1).saturating_sub(slots)
    }

    /// The candidate window, stretched back (up to the baseline horizon)
    /// until it holds at least `min_requests`: a low-traffic endpoint waits
    /// for evidence instead of never having enough in one window.
    pub fn recent(&self, series: &Series, now_ms: u64, min_requests: u64) -> WindowSummary {
        let window_oldest = self.oldest(now_ms, self.window_slots);
        let horizon_oldest = self.oldest(now_ms, self.horizon_slots);
        let mut summary = WindowSummary::default();
        for slot in series.slots.newest_first() {
            let in_window = slot.end() > window_oldest;
            let needed = summary.count() < min_requests && slot.end() > horizon_oldest;
            if !(in_window || needed) {
                break;
            }
            summary.add(slot);
        }
        summary
    }

    /// What `series` did from `start_ms` to `now_ms`, at most the baseline
    /// horizon: from the start of the history step holding `start_ms`, so
    /// the stretch begins at the same time whichever slots have merged (an
    /// evidence epoch must not move its start as it ages).
    pub fn since(&self, series: &Series, start_ms: u64, now_ms: u64) -> WindowSummary {
        let horizon_oldest = self.oldest(now_ms, self.horizon_slots);
        let mut summary = WindowSummary::default();
        for slot in series
            .slots
            .since(&self.steps, start_ms / self.slot_ms)
            .take_while(|s| s.end() > horizon_oldest)
        {
            summary.add(slot);
        }
        summary
    }

    /// Requests of `series` over the baseline horizon (cheap: no sketches).
    pub fn horizon_count(&self, series: &Series, now_ms: u64) -> u64 {
        series.count(self.oldest(now_ms, self.horizon_slots))
    }

    /// The baseline horizon of `series` at `now_ms`: `aggregate.baseline_horizon`,
    /// reaching back to the start of the history step of its oldest slot.
    pub fn horizon(&self, series: &Series, now_ms: u64) -> WindowSummary {
        series.summary(self.oldest(now_ms, self.horizon_slots))
    }

    /// Every endpoint and its versions.
    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointKey, &Versions)> {
        self.endpoints.iter()
    }

    /// Number of endpoints (with at least one series).
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The versions of one endpoint.
    pub fn versions(&self, endpoint: &EndpointKey) -> Option<&Versions> {
        self.endpoints.get(endpoint)
    }

    /// The series that took the samples beyond the cap.
    pub fn overflow(&self) -> &Series {
        &self.overflow
    }

    /// Live series (the overflow series not included).
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// The settings it keeps series by.
    pub fn config(&self) -> &AggregateConfig {
        &self.config
    }

    /// The state a snapshot keeps, borrowed (a snapshot writes it in
    /// slices: [`Aggregator::state_head`]).
    #[cfg(test)]
    pub(crate) fn state(&self) -> AggregatorStateRef<'_> {
        AggregatorState {
            slot_ms: self.slot_ms,
            bounds_ms: &self.bounds_ms,
            endpoints: &self.endpoints,
            overflow: &self.overflow,
            pending_db: &self.pending_db,
        }
    }

    /// The fields of [`AggregatorState`] before its endpoints: a snapshot
    /// taken in slices writes them, then the endpoints one by one
    /// ([`Aggregator::endpoint_at`]), then [`Aggregator::state_tail`] (the
    /// same bytes as [`Aggregator::state`] when nothing changed between).
    pub(crate) fn state_head(&self) -> (u64, &[f64]) {
        (self.slot_ms, &self.bounds_ms)
    }

    /// The fields of [`AggregatorState`] after its endpoints.
    pub(crate) fn state_tail(&self) -> (&Series, &HashMap<[u8; 16], Vec<PendingDb>>) {
        (&self.overflow, &self.pending_db)
    }

    /// The endpoint at `position` (in the order [`Aggregator::state`] writes
    /// them) and its versions.
    pub(crate) fn endpoint_at(&self, position: usize) -> Option<(&EndpointKey, &Versions)> {
        self.endpoints.get_index(position)
    }

    /// Keeps every endpoint's position while `true` (a snapshot's cursor
    /// walks them across turns of the pipeline task): an endpoint that loses
    /// its last series stays, empty, until it is released. Endpoints are
    /// still added, after the others.
    pub(crate) fn hold_positions(&mut self, hold: bool) {
        self.positions_held = hold;
    }

    /// Replaces every series with those of `state` (read from a snapshot),
    /// checking what the recording code relies on. An error names the
    /// problem and leaves `self` untouched; a changed bucket layout only
    /// drops the cumulative (Prometheus) histograms, which scrapers see as a
    /// counter reset.
    pub(crate) fn restore(
        &mut self,
        state: AggregatorStateOwned,
    ) -> Result<Restored, RestoreError> {
        if state.slot_ms != self.slot_ms {
            return Err(RestoreError::SlotChanged {
                stored: state.slot_ms,
                configured: self.slot_ms,
            });
        }
        let histograms_dropped = state.bounds_ms != self.bounds_ms;
        let mut endpoints = state.endpoints;
        let mut overflow = state.overflow;
        let all = endpoints
            .values_mut()
            .flat_map(|v| v.0.iter_mut().map(|(_, s)| s))
            .chain(std::iter::once(&mut overflow));
        for s in all {
            if histograms_dropped {
                s.histograms = [None, None, None];
            }
            for h in s.histograms.iter().flatten() {
                if h.buckets.len() != self.bounds_ms.len() + 1 {
                    return Err(RestoreError::Invalid(
                        "a histogram does not match its bucket bounds",
                    ));
                }
            }
            s.slots.check().map_err(RestoreError::Invalid)?;
        }
        for versions in endpoints.values_mut() {
            versions.0.sort_by(|a, b| a.0.cmp(&b.0));
            versions.0.dedup_by(|a, b| a.0 == b.0);
        }
        endpoints.retain(|_, v| !v.is_empty());
        self.series = endpoints.values().map(Versions::len).sum();
        self.per_service.clear();
        self.services.clear();
        for (e, (key, versions)) in endpoints.iter().enumerate() {
            *self.per_service.entry(key.service.clone()).or_default() += versions.len();
            self.services
                .entry(key.service.clone())
                .or_default()
                .endpoints
                .push(e);
        }
        self.touched_in = vec![0; endpoints.len()];
        self.touched = self.services.keys().cloned().collect();
        self.endpoints = endpoints;
        self.located.clear();
        self.overflow = overflow;
        self.pending_traces = state.pending_db.values().map(Vec::len).sum();
        self.pending_db = state.pending_db;
        self.telemetry.series_active(self.series);
        Ok(Restored {
            series: self.series,
            histograms_dropped,
        })
    }

    /// Approximate heap bytes held by series, for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.endpoints
            .iter()
            .map(|(k, versions)| {
                k.service.capacity()
                    + k.endpoint.capacity()
                    + versions
                        .iter()
                        .map(|(v, s)| v.capacity() + s.heap_bytes() + 64)
                        .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::SelfMetric;

    const T0: u64 = 1_763_658_000_000;

    fn config() -> AggregateConfig {
        AggregateConfig {
            window: Duration::from_secs(60),
            baseline_horizon: Duration::from_secs(300),
            slot: Duration::from_secs(10),
            max_series: 100,
            service_share: 1.0,
            evict_below: 1,
            series_idle_timeout: Duration::from_secs(600),
            max_pending_traces: 4,
            allowed_lateness: Duration::from_secs(120),
            max_future: Duration::from_secs(30),
        }
    }

    fn aggregator(config: AggregateConfig) -> Aggregator {
        Aggregator::new(
            config,
            vec![100.0, 150.0, 1000.0],
            Arc::new(Telemetry::default()),
            T0,
        )
    }

    fn endpoint(path: &str) -> EndpointKey {
        EndpointKey {
            service: "lending-api".into(),
            endpoint: path.into(),
            dims: Vec::new(),
            phase: crate::phase::Phase::Request,
            input: None,
        }
    }

    fn request(path: &str, version: &str, ms: u64, outcome: Outcome, trace: u8) -> Sample {
        crate::testing::request(path, version, ms as f64, outcome).in_trace([trace; 16])
    }

    fn db_call(trace: u8) -> Sample {
        Sample::db_call(crate::testing::SERVICE, [trace; 16], 0)
    }

    fn window_of(agg: &Aggregator, path: &str, version: &str, now: u64) -> WindowSummary {
        let series = &agg.versions(&endpoint(path)).unwrap()[version];
        agg.window(series, now)
    }

    #[test]
    fn requests_land_in_their_series_with_outcomes() {
        let mut agg = aggregator(config());
        agg.record(
            &[
                request("/risk-score", "v1.2", 100, Outcome::Ok, 1),
                request("/risk-score", "v1.3", 750, Outcome::Timeout, 2),
                request("/risk-score", "v1.3", 700, Outcome::Ok, 3),
            ],
            T0,
        );
        let w = window_of(&agg, "/risk-score", "v1.3", T0);
        assert_eq!(w.count(), 2);
        assert_eq!(w.rate(Outcome::Timeout), 0.5);
        assert_eq!(agg.series_count(), 2);
        let h = agg.versions(&endpoint("/risk-score")).unwrap()["v1.3"].histograms
            [Outcome::Timeout.index()]
        .as_deref()
        .unwrap();
        assert_eq!(h.buckets, vec![0, 0, 1, 0]);
    }

    #[test]
    fn window_slides_and_horizon_keeps_more() {
        let mut agg = aggregator(config());
        agg.record(&[request("/a", "v1", 100, Outcome::Ok, 1)], T0);
        agg.record(&[request("/a", "v1", 100, Outcome::Ok, 2)], T0 + 120_000);
        let now = T0 + 120_000;
        let series = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.window(series, now).count(), 1);
        assert_eq!(agg.horizon(series, now).count(), 2);
        agg.expire(T0 + 400_000);
        let series = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.horizon(series, T0 + 400_000).count(), 1);
    }

    #[test]
    fn recent_stretches_back_until_it_holds_enough_requests() {
        let mut agg = aggregator(config());
        // One request a minute: a 60 s window never holds more than one.
        for i in 0..5 {
            agg.record(&[request("/a", "v1", 100, Outcome::Ok, 1)], T0 + i * 60_000);
        }
        let now = T0 + 4 * 60_000;
        let series = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.window(series, now).count(), 1);
        assert_eq!(agg.recent(series, now, 3).count(), 3);
        assert_eq!(agg.recent(series, now, 10).count(), 5);
        assert_eq!(agg.recent(series, now, 0).count(), 1);
    }

    #[test]
    fn idle_series_expire() {
        let mut agg = aggregator(config());
        agg.record(&[request("/a", "v1", 100, Outcome::Ok, 1)], T0);
        agg.expire(T0 + 599_000);
        assert_eq!(agg.series_count(), 1);
        agg.expire(T0 + 600_000);
        assert_eq!(agg.series_count(), 0);
        assert!(agg.versions(&endpoint("/a")).is_none());
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesExpired), 1);
    }

    #[test]
    fn series_beyond_the_cap_go_to_overflow_and_are_counted() {
        let mut agg = aggregator(AggregateConfig {
            max_series: 3,
            ..config()
        });
        let samples: Vec<_> = (0..10)
            .map(|i| request(&format!("/e{i}"), "v1", 10, Outcome::Ok, 1))
            .collect();
        agg.record(&samples, T0);
        assert_eq!(agg.series_count(), 3);
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesOverflow), 7);
        assert_eq!(agg.window(agg.overflow(), T0).count(), 7);
        // Known series still record at the cap.
        agg.record(&[request("/e0", "v1", 10, Outcome::Ok, 1)], T0);
        assert_eq!(window_of(&agg, "/e0", "v1", T0).count(), 2);
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesOverflow), 7);
    }

    #[test]
    fn a_flood_of_new_series_evicts_itself_not_the_established_ones() {
        let mut agg = aggregator(AggregateConfig {
            max_series: 128,
            service_share: 0.5,
            evict_below: 5,
            ..config()
        });
        // An established service: two versions with traffic.
        for i in 0..10 {
            agg.record(
                &[
                    request("/risk-score", "v1", 50, Outcome::Ok, i),
                    request("/risk-score", "v2", 50, Outcome::Ok, i),
                ],
                T0,
            );
        }
        // A junk sender: 10,000 one-request endpoints of its own service,
        // and 10,000 one-request services.
        let junk = |name: &str, service: &str| {
            let mut sample = request(name, "x", 1, Outcome::Ok, 0);
            Arc::make_mut(&mut sample.series).endpoint.service = service.into();
            sample
        };
        let flood: Vec<Sample> = (0..10_000)
            .map(|i| junk(&format!("/junk/{i}"), "junk"))
            .chain((0..10_000).map(|i| junk("/", &format!("svc-{i}"))))
            .collect();
        agg.record(&flood, T0 + 1_000);
        assert!(agg.series_count() <= 128);
        assert!(
            agg.per_service.get("junk").copied().unwrap_or(0) <= 64,
            "{:?}",
            agg.per_service.get("junk")
        );
        // The established series kept every request.
        assert_eq!(window_of(&agg, "/risk-score", "v1", T0 + 1_000).count(), 10);
        // A real incident after the flood gets a series of its own.
        for i in 0..20 {
            agg.record(
                &[request("/risk-score", "v3", 500, Outcome::Ok, i)],
                T0 + 2_000,
            );
            agg.record(&[junk(&format!("/late/{i}"), "junk")], T0 + 2_000);
        }
        assert_eq!(window_of(&agg, "/risk-score", "v3", T0 + 2_000).count(), 20);
        assert!(agg.telemetry.reading(SelfMetric::SeriesEvicted) > 19_000);
        // Only when every series is established does a newcomer overflow.
        let mut full = aggregator(AggregateConfig {
            max_series: 2,
            evict_below: 1,
            ..config()
        });
        full.record(
            &[
                request("/a", "v1", 5, Outcome::Ok, 1),
                request("/b", "v1", 5, Outcome::Ok, 1),
                request("/c", "v1", 5, Outcome::Ok, 1),
            ],
            T0,
        );
        assert_eq!(full.series_count(), 2);
        assert_eq!(full.telemetry.reading(SelfMetric::SeriesOverflow), 1);
    }

    #[test]
    fn database_calls_join_their_request_by_trace() {
        let mut agg = aggregator(config());
        // Same batch, request listed first: still joined.
        agg.record(
            &[
                request("/checkout", "v2", 300, Outcome::Ok, 9),
                db_call(9),
                db_call(9),
                db_call(9),
            ],
            T0,
        );
        // Calls in an earlier batch than their request.
        agg.record(&[db_call(8)], T0);
        agg.record(&[request("/checkout", "v2", 300, Outcome::Ok, 8)], T0 + 5);
        let w = window_of(&agg, "/checkout", "v2", T0 + 5);
        assert_eq!(w.db_calls, 4);
        assert_eq!(w.db_calls_per_request(), 2.0);
        let series = &agg.versions(&endpoint("/checkout")).unwrap()["v2"];
        assert_eq!(agg.window_db_calls(series, T0 + 5), 2.0);
        // Out of the window: the same 0 as the merged summary.
        let later = T0 + 3_600_000;
        assert_eq!(agg.window_db_calls(series, later), 0.0);
        assert_eq!(agg.window(series, later).db_calls_per_request(), 0.0);
    }

    #[test]
    fn pending_database_calls_are_bounded_and_expire() {
        let mut agg = aggregator(config());
        let calls: Vec<_> = (1..=10).map(db_call).collect();
        agg.record(&calls, T0);
        assert_eq!(agg.telemetry.reading(SelfMetric::DbPendingDropped), 6);
        agg.expire(T0 + PENDING_DB_TTL_MS);
        assert_eq!(agg.telemetry.reading(SelfMetric::DbUnmatched), 4);
        assert_eq!(agg.pending_traces, 0);
    }

    fn interned(name: &Arc<SeriesName>, ms: u64) -> Sample {
        Sample {
            series: name.clone(),
            trace_id: [0; 16],
            time_ms: 0,
            kind: SampleKind::Request {
                duration: Duration::from_millis(ms),
                outcome: Outcome::Ok,
            },
        }
    }

    #[test]
    fn interned_names_find_their_series_while_positions_move() {
        let mut agg = aggregator(AggregateConfig {
            max_series: 3,
            ..config()
        });
        let mut interner = crate::extract::Interner::new(16);
        let mut name = |path: &str, version: &str| {
            interner.name(
                "lending-api",
                (crate::phase::Phase::Request, None),
                path,
                &[],
                version,
            )
        };
        let (a2, a3, b1, a1, c1) = (
            name("/a", "v2"),
            name("/a", "v3"),
            name("/b", "v1"),
            name("/a", "v1"),
            name("/c", "v1"),
        );
        agg.record(
            &[interned(&a2, 10), interned(&a3, 10), interned(&b1, 10)],
            T0,
        );
        // v1 sorts first: v2 and v3 of /a move, and the cap is reached.
        agg.record(&[request("/a", "v1", 10, Outcome::Ok, 1)], T0);
        agg.record(
            &[interned(&a2, 10), interned(&a3, 10), interned(&a1, 10)],
            T0,
        );
        agg.record(&[interned(&a3, 10), interned(&c1, 10)], T0);
        // The cap was 3: v1 of /a and /c went to the overflow series.
        let count = |path, version| window_of(&agg, path, version, T0).count();
        assert_eq!(
            (count("/a", "v2"), count("/a", "v3"), count("/b", "v1")),
            (2, 3, 1)
        );
        assert!(agg.versions(&endpoint("/a")).unwrap().get("v1").is_none());
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesOverflow), 3);
        // /b idles out (the others are fresher): everything after it moves,
        // and a remembered overflow name gets a series of its own.
        agg.record(&[interned(&a2, 10), interned(&a3, 10)], T0 + 300_000);
        agg.expire(T0 + 600_000);
        assert_eq!(agg.series_count(), 2);
        let later = T0 + 600_000;
        agg.record(
            &[interned(&c1, 10), interned(&a3, 10), interned(&a1, 10)],
            later,
        );
        let count = |path, version| window_of(&agg, path, version, later).count();
        assert_eq!((count("/c", "v1"), count("/a", "v3")), (1, 1));
        // At the cap, /a v1 takes the place of /a v2, which has had no
        // request over the horizon: evicted, not overflowed.
        assert_eq!(count("/a", "v1"), 1);
        assert!(agg.versions(&endpoint("/a")).unwrap().get("v2").is_none());
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesOverflow), 3);
        assert_eq!(agg.telemetry.reading(SelfMetric::SeriesEvicted), 1);
    }

    fn at(path: &str, version: &str, time_ms: u64) -> Sample {
        let mut sample = request(path, version, 10, Outcome::Ok, 1);
        sample.time_ms = time_ms;
        sample
    }

    #[test]
    fn samples_count_at_their_own_time_not_their_arrival() {
        let mut agg = aggregator(config());
        let now = T0 + 100_000;
        // A backlog arriving at once, newest first: v2's samples are the
        // newer ones, whatever the order they came in.
        agg.record(
            &[
                at("/a", "v2", T0 + 90_000),
                at("/a", "v1", T0 + 20_000),
                at("/a", "v2", T0 + 95_000),
                at("/a", "v1", T0 + 5_000),
            ],
            now,
        );
        let versions = agg.versions(&endpoint("/a")).unwrap();
        assert_eq!(versions["v1"].first_seen_ms, T0 + 5_000);
        assert_eq!(versions["v1"].last_seen_ms, T0 + 20_000);
        assert_eq!(versions["v2"].first_seen_ms, T0 + 90_000);
        // The 60 s window holds v2's samples, not v1's: they are older.
        assert_eq!(window_of(&agg, "/a", "v2", now).count(), 2);
        assert_eq!(window_of(&agg, "/a", "v1", now).count(), 0);
        let v1 = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.horizon(v1, now).count(), 2);
        // Slots stay in order although the late ones came last.
        let extents = v1.slots.extents();
        assert!(
            extents
                .windows(2)
                .all(|w| w[0].0 + u64::from(w[0].1) <= w[1].0),
            "{extents:?}"
        );
    }

    #[test]
    fn samples_too_late_or_from_the_future_are_counted_and_left_out() {
        let mut agg = aggregator(config());
        let now = T0 + 1_000_000;
        agg.record(
            &[
                // allowed_lateness is 120 s, max_future 30 s.
                at("/a", "v1", now - 120_001),
                at("/a", "v1", now - 120_000),
                at("/a", "v1", now + 30_000),
                at("/a", "v1", now + 30_001),
                at("/a", "v1", 0),
            ],
            now,
        );
        let dropped = |reason: &str| {
            agg.telemetry
                .readings()
                .iter()
                .find(|r| {
                    r.metric == SelfMetric::SamplesDropped && r.label == Some(("reason", reason))
                })
                .map(|r| r.value)
        };
        assert_eq!((dropped("late"), dropped("future")), (Some(1), Some(1)));
        let v1 = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.horizon(v1, now + 30_000).count(), 3);
        assert_eq!(v1.first_seen_ms, now - 120_000);
    }

    /// The default window and horizon (300 s in 10 s slots, 1800 s), and
    /// lateness up to the whole horizon.
    fn default_windows() -> AggregateConfig {
        AggregateConfig {
            max_series: 100,
            service_share: 1.0,
            evict_below: 1,
            max_pending_traces: 4,
            ..AggregateConfig::default()
        }
    }

    #[test]
    fn merged_history_keeps_late_samples_at_their_own_time() {
        let mut agg = aggregator(default_windows());
        // A request every 10 s for an hour, the collector's tick every 10 s.
        let start = T0;
        let mut now = start;
        while now < start + 3_600_000 {
            agg.record(&[at("/a", "v1", now)], now);
            agg.expire(now);
            now += 10_000;
        }
        now -= 10_000;
        let series = |agg: &Aggregator| agg.versions(&endpoint("/a")).unwrap()["v1"].clone();
        let s = series(&agg);
        // Merged: far fewer blocks than the 180 slots of the horizon.
        assert!(s.slots.len() <= 20, "{:?}", s.slots.extents());
        // The window is 300 s, reaching back to its oldest minute: 30 to
        // 35 requests; the horizon 1800 s and up to ten minutes more.
        let window = agg.window(&s, now).count();
        assert!((30..36).contains(&window), "{window}");
        let horizon = agg.horizon(&s, now).count();
        assert!((180..240).contains(&horizon), "{horizon}");
        // A timeout 20 minutes late (allowed: 30) counts in the horizon at
        // its own time, never in the window; one 100 s late in both.
        let late = |time_ms: u64| {
            let mut sample = request("/a", "v1", 10, Outcome::Timeout, 1);
            sample.time_ms = time_ms;
            sample
        };
        let timeouts = |w: WindowSummary| w.outcomes[Outcome::Timeout.index()];
        agg.record(&[late(now - 1_200_000)], now);
        let s = series(&agg);
        assert_eq!(agg.window(&s, now).count(), window);
        assert_eq!(timeouts(agg.horizon(&s, now)), 1);
        agg.record(&[late(now - 100_000)], now);
        let s = series(&agg);
        assert_eq!(timeouts(agg.window(&s, now)), 1);
        assert_eq!(timeouts(agg.horizon(&s, now)), 2);
        // Once merged, it stays at its time: in the window while the
        // window reaches its slot, out once the window's oldest step has
        // passed it.
        let late_slot = (now - 100_000) / 10_000;
        let (reaching, passed) = ((late_slot + 29) * 10_000, (late_slot + 35) * 10_000);
        let mut t = now;
        while t <= passed {
            agg.expire(t);
            let s = series(&agg);
            if t == reaching {
                assert_eq!(timeouts(agg.window(&s, t)), 1, "at {t}");
            }
            t += 10_000;
        }
        let s = series(&agg);
        assert_eq!(timeouts(agg.window(&s, passed)), 0);
        assert_eq!(timeouts(agg.horizon(&s, passed)), 2);
    }

    fn histogram(path: &str, version: &str, counts: &[(usize, u64)], time_ms: u64) -> Sample {
        let bounds_ms = vec![50.0, 100.0, 250.0, 500.0, 750.0, 1000.0];
        let mut all = vec![0; bounds_ms.len() + 1];
        for (i, n) in counts {
            all[*i] = *n;
        }
        let mut sample = request(path, version, 1, Outcome::Ok, 0);
        sample.time_ms = time_ms;
        sample.kind = SampleKind::Histogram(Box::new(Point {
            outcome: Outcome::Ok,
            buckets: crate::extract::metrics::Buckets::Explicit {
                bounds_ms,
                counts: all,
            },
            cumulative: None,
            min_ms: None,
            max_ms: None,
            timeout_ms: Some(750.0),
        }));
        sample
    }

    fn cumulative(mut sample: Sample, start_ms: u64) -> Sample {
        if let SampleKind::Histogram(p) = &mut sample.kind {
            p.cumulative = Some(crate::extract::metrics::Stream {
                id: 42,
                start_ns: start_ms * 1_000_000,
                time_ns: sample.time_ms * 1_000_000,
            });
        }
        sample
    }

    #[test]
    fn a_histogram_point_adds_its_requests_to_its_series_marked_as_read_from_buckets() {
        let mut agg = aggregator(config());
        agg.record(&[request("/a", "v1", 120, Outcome::Ok, 1)], T0);
        // 18 requests in (100, 250], 4 in (750, 1000]: timeouts at 750 ms.
        agg.record(&[histogram("/a", "v1", &[(2, 18), (5, 4)], T0)], T0);
        let w = window_of(&agg, "/a", "v1", T0);
        assert_eq!(w.count(), 23);
        assert_eq!(w.outcomes, [19, 0, 4]);
        assert_eq!(w.binned, 22);
        assert!(
            (w.resolution - 150.0 / 350.0).abs() < 0.01,
            "{}",
            w.resolution
        );
        // The Prometheus histogram holds the measured request only.
        let series = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        let ok = series.histograms[Outcome::Ok.index()].as_deref().unwrap();
        assert_eq!(ok.count, 1);
        assert!(series.histograms[Outcome::Timeout.index()].is_none());
    }

    #[test]
    fn a_cumulative_stream_counts_its_increase_at_each_points_time() {
        let mut agg = aggregator(config());
        let start = T0 - 5_000;
        agg.record(
            &[cumulative(histogram("/a", "v1", &[(2, 10)], T0), start)],
            T0,
        );
        let later = T0 + 30_000;
        let next = cumulative(histogram("/a", "v1", &[(2, 15), (3, 2)], later), start);
        agg.record(&[next.clone(), next], later);
        let series = &agg.versions(&endpoint("/a")).unwrap()["v1"];
        assert_eq!(agg.horizon(series, later).count(), 17);
        // The increase counts at the second point's time: a window that
        // starts there holds it alone.
        assert_eq!(agg.window(series, later + 50_000).count(), 7);
        let dropped = |reason: &str| {
            agg.telemetry
                .readings()
                .iter()
                .find(|r| {
                    r.metric == SelfMetric::SamplesDropped && r.label == Some(("reason", reason))
                })
                .map(|r| r.value)
        };
        assert_eq!(dropped("repeated"), Some(1));
        assert_eq!(agg.telemetry.reading(SelfMetric::MetricStreams), 1);
        agg.expire(later + 600_000);
        assert_eq!(agg.telemetry.reading(SelfMetric::MetricStreams), 0);
    }

    #[test]
    fn a_services_endpoints_beyond_its_cap_share_its_overflow_endpoint() {
        let mut agg = aggregator(config()).with_limits(InputLimits {
            max_endpoints_per_service: 3,
            max_streams: 10,
        });
        let samples: Vec<_> = (0..10)
            .map(|i| request(&format!("/e{i}"), "v1", 10, Outcome::Ok, 1))
            .collect();
        agg.record(&samples, T0);
        agg.record(&samples[9..], T0);
        let other = Sample::request(
            EndpointKey {
                service: "other".into(),
                endpoint: "/x".into(),
                dims: Vec::new(),
                phase: crate::phase::Phase::Request,
                input: None,
            },
            "v1",
            Duration::from_millis(5),
            Outcome::Ok,
            0,
        );
        agg.record(&[other], T0);
        assert_eq!(agg.endpoint_count(), 5);
        assert_eq!(window_of(&agg, OVERFLOW_ENDPOINT, "v1", T0).count(), 8);
        assert_eq!(agg.telemetry.reading(SelfMetric::EndpointsOverflow), 8);
        // Known endpoints still record; expired ones free their place.
        agg.record(&samples[..1], T0 + 500_000);
        agg.expire(T0 + 600_000);
        assert_eq!(agg.endpoint_count(), 1);
        agg.record(&samples[5..6], T0 + 600_000);
        assert_eq!(window_of(&agg, "/e5", "v1", T0 + 600_000).count(), 1);
    }
}
