//! Intern: one shared, owned name per series, found from borrowed strings.
//!
//! Every reader sees spans and records as borrowed slices of the request
//! ([`super::SampleRef`]); owning their strings would allocate three
//! `String`s per span only to compare them with keys the aggregator already
//! holds. An [`Interner`] keeps one [`SeriesName`] per series it has
//! seen and hands out `Arc`s to it: a span of a known series costs a hash
//! and a comparison, never an allocation.
//!
//! It is a cache, not state: it may forget everything at any time (it does
//! when it reaches its bound), which only costs the next lookups an
//! allocation. It must never grow past its bound, and never be shared
//! behind a lock (each receiving thread keeps its own).

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{EndpointKey, InputBand, Phase, Sample, SampleRef};

/// What a series is called: its endpoint key and version. Database calls
/// are named by service and version only (empty endpoint, no dimensions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesName {
    /// Service, endpoint and extra dimensions.
    pub endpoint: EndpointKey,
    /// The version, or [`super::UNKNOWN_VERSION`].
    pub version: String,
}

/// Names an [`Interner::default`] holds before it starts over (a few MiB at
/// most): enough for the hot series of a fleet; beyond it, samples of
/// series not cached cost an allocation, as before interning.
pub const DEFAULT_MAX_NAMES: usize = 1 << 13;

/// See the module docs.
#[derive(Debug)]
pub struct Interner {
    table: HashTable<Arc<SeriesName>>,
    hasher: DefaultHashBuilder,
    max_names: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_NAMES)
    }
}

impl Interner {
    /// An empty interner that forgets everything when it holds `max_names`.
    pub fn new(max_names: usize) -> Self {
        Self {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            max_names: max_names.max(1),
        }
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Holds no names.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// `sample` with its series interned.
    pub fn intern(&mut self, sample: SampleRef<'_>) -> Sample {
        Sample {
            series: self.name(
                sample.service,
                (sample.phase, sample.input),
                &sample.endpoint,
                &sample.dims,
                sample.version,
            ),
            trace_id: sample.trace_id,
            time_ms: sample.time_ms,
            kind: sample.kind,
        }
    }

    /// The shared name of (service, phase and input band, endpoint, dims,
    /// version).
    pub fn name(
        &mut self,
        service: &str,
        (phase, input): (Phase, Option<InputBand>),
        endpoint: &str,
        dims: &[Cow<'_, str>],
        version: &str,
    ) -> Arc<SeriesName> {
        let hash = hash_parts(
            &self.hasher,
            service,
            (phase, input),
            endpoint,
            dims.iter().map(|d| d.as_ref()),
            version,
        );
        let found = self.table.find(hash, |n| {
            n.endpoint.service == service
                && n.endpoint.phase == phase
                && n.endpoint.input == input
                && n.endpoint.endpoint == endpoint
                && n.version == version
                && n.endpoint.dims.len() == dims.len()
                && n.endpoint.dims.iter().zip(dims).all(|(a, b)| a == b)
        });
        if let Some(name) = found {
            return name.clone();
        }
        if self.table.len() >= self.max_names {
            self.table.clear();
        }
        let name = Arc::new(SeriesName {
            endpoint: EndpointKey {
                service: service.to_owned(),
                endpoint: endpoint.to_owned(),
                dims: dims.iter().map(|d| d.as_ref().to_owned()).collect(),
                phase,
                input,
            },
            version: version.to_owned(),
        });
        let hasher = &self.hasher;
        self.table.insert_unique(hash, name.clone(), |n| {
            hash_parts(
                hasher,
                &n.endpoint.service,
                (n.endpoint.phase, n.endpoint.input),
                &n.endpoint.endpoint,
                n.endpoint.dims.iter().map(String::as_str),
                &n.version,
            )
        });
        name
    }
}

/// One hash for the borrowed parts and for a stored name alike.
fn hash_parts<'d>(
    build: &DefaultHashBuilder,
    service: &str,
    phase: (Phase, Option<InputBand>),
    endpoint: &str,
    dims: impl ExactSizeIterator<Item = &'d str>,
    version: &str,
) -> u64 {
    let mut h = build.build_hasher();
    service.hash(&mut h);
    phase.hash(&mut h);
    endpoint.hash(&mut h);
    version.hash(&mut h);
    h.write_usize(dims.len());
    for d in dims {
        d.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::extract::{Outcome, SampleKind};

    fn request<'a>(service: &'a str, endpoint: &'a str, version: &'a str) -> SampleRef<'a> {
        SampleRef {
            service,
            phase: Phase::Request,
            input: None,
            endpoint: Cow::Borrowed(endpoint),
            dims: vec![Cow::Borrowed("eu")],
            version,
            trace_id: [1; 16],
            time_ms: 0,
            kind: SampleKind::Request {
                duration: Duration::from_millis(3),
                outcome: Outcome::Ok,
            },
        }
    }

    #[test]
    fn the_same_series_shares_one_name_and_others_do_not() {
        let mut interner = Interner::new(16);
        let a = interner.intern(request("s", "/a", "v1"));
        let again = interner.intern(request("s", "/a", "v1"));
        let other = interner.intern(request("s", "/a", "v2"));
        assert!(Arc::ptr_eq(&a.series, &again.series));
        assert!(!Arc::ptr_eq(&a.series, &other.series));
        assert_eq!(a.series.endpoint.dims, vec!["eu".to_owned()]);
        assert_eq!(other.series.version, "v2");
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn it_never_holds_more_than_its_bound() {
        let mut interner = Interner::new(3);
        for i in 0..10 {
            let endpoint = format!("/e{i}");
            let s = interner.intern(request("s", &endpoint, "v"));
            assert_eq!(s.series.endpoint.endpoint, endpoint);
            assert!(interner.len() <= 3);
        }
    }

    #[test]
    fn database_calls_are_named_by_service_and_version() {
        let mut interner = Interner::new(4);
        let db = interner.intern(SampleRef {
            service: "s",
            phase: Phase::Request,
            input: None,
            endpoint: Cow::Borrowed(""),
            dims: Vec::new(),
            version: "v1",
            trace_id: [2; 16],
            time_ms: 7,
            kind: SampleKind::DbCall,
        });
        assert_eq!(db.kind, SampleKind::DbCall);
        assert_eq!(db.time_ms, 7);
        assert_eq!(db.series.endpoint.service, "s");
        assert_eq!(db.series.endpoint.endpoint, "");
    }
}
