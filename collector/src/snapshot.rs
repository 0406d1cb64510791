//! Snapshots: the collector's state on disk, so a restart does not forget
//! an incident.
//!
//! What is kept: every series' window of sketches (with its first and last
//! seen times and cumulative histograms), the overflow series, database
//! calls waiting for their request, the judge's
//! sticky baselines and every alert with its state, `since` time, clear
//! timer, firing count and latest evidence. Times are unix milliseconds, so
//! after a restore windows slide and hold timers run on from the wall clock:
//! a firing alert stays firing and a pending one keeps the time it waited.
//! The dashboard's history (chart points, firing and resolved regressions)
//! is kept too, within the limits configured at restore. Not kept:
//! modelgate's own counters ([`crate::telemetry`]: they are process
//! counters, and scrapers take a restart as a counter reset), and the last
//! point of each cumulative histogram stream (after a restart a stream's
//! next point is its reference: one export interval of it is not judged).
//!
//! # Format (version 5: a series is named with its phase, see `crate::phase`; version 4 made a series' slots blocks of slots, see `aggregate::slots`)
//!
//! One self-describing file, `<snapshot.dir>/modelgate.snapshot`:
//!
//! | bytes | field |
//! |---|---|
//! | 8  | magic `MGSNAP\r\n` (the CR LF catches text-mode mangling, as PNG's does) |
//! | 2  | format version, little endian |
//! | 2  | reserved, 0 |
//! | 8  | payload length, little endian |
//! | 4  | CRC-32 (IEEE) of the payload, little endian |
//! | n  | payload: [postcard](https://docs.rs/postcard) of the state |
//!
//! postcard rather than bincode: its wire format is specified and frozen
//! for 1.x, it is compact (varint integers), actively maintained, and
//! already in this workspace's lock file; bincode's maintainers have ended
//! its development. The layout of the payload is the field order of
//! `aggregate::AggregatorState` and `judge::JudgeState` and the types
//! inside them: changing any of them means bumping [`FORMAT_VERSION`], and
//! a file of another version is refused, not misread.
//!
//! # Writing
//!
//! The pipeline task owns the state, so it serializes it (a pass over the
//! series, no lock); the file is written on a blocking thread, at most one
//! write in flight (a tick that finds one still running is skipped). A
//! write goes to a temporary file in the same directory, is fsynced,
//! renamed over the snapshot and the directory fsynced: a crash at any
//! point leaves the previous snapshot or the new one, never a mix.
//!
//! This module must never block the pipeline task on the disk, crash the
//! collector because of a bad file (it is refused with the file and the
//! problem named, and the collector starts empty), leave a partial file
//! where the snapshot belongs, or delete a file it refused (it is moved
//! aside to `modelgate.snapshot.refused` for inspection).

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::aggregate::{Aggregator, AggregatorStateOwned, RestoreError};
use crate::emit::history::{History, HistoryStateOwned};
use crate::judge::{Judge, JudgeStateOwned};

/// The snapshot's file name inside `snapshot.dir`.
pub const FILE_NAME: &str = "modelgate.snapshot";

/// Where a write goes before it is renamed over [`FILE_NAME`].
const TEMP_NAME: &str = "modelgate.snapshot.tmp";

/// Where a refused snapshot is moved, so the next write does not destroy
/// the evidence.
const REFUSED_NAME: &str = "modelgate.snapshot.refused";

/// The first bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"MGSNAP\r\n";

/// The payload layout this build writes and reads.
pub const FORMAT_VERSION: u16 = 5;

/// Magic, version, reserved, length, checksum.
const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 4;

/// Why a snapshot could not be written or was refused. Every message names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading failed (other than the file being absent).
    #[error("cannot read snapshot {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing, syncing or renaming failed; the previous snapshot is intact.
    #[error("cannot write snapshot {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state could not be encoded.
    #[error("cannot encode snapshot: {0}")]
    Encode(postcard::Error),
    /// Not a modelgate snapshot at all.
    #[error("snapshot {} refused: not a modelgate snapshot (wrong magic bytes)", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// A snapshot of another format version.
    #[error(
        "snapshot {} refused: format version {found}, this build reads version {FORMAT_VERSION}",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u16,
    },
    /// Shorter than its header says.
    #[error(
        "snapshot {} refused: truncated ({found} bytes, expected {expected})",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        found: u64,
        /// The length its header announces (or the header's own length).
        expected: u64,
    },
    /// The payload does not match its checksum.
    #[error(
        "snapshot {} refused: checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupt",
        path.display()
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the payload read.
        computed: u32,
    },
    /// The checksum matches but the content is not a valid state.
    #[error("snapshot {} refused: corrupt content: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Larger than `snapshot.max_bytes`: refused by its size, unread.
    #[error(
        "snapshot {} refused: {bytes} bytes, more than snapshot.max_bytes ({max})",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// `snapshot.max_bytes`.
        max: u64,
    },
    /// Another running instance holds `snapshot.dir`.
    #[error(
        "snapshot.dir {} is in use by another modelgate ({holder}); two instances writing one snapshot would overwrite each other's alerts",
        dir.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the holder wrote in the lock file (its pid).
        holder: String,
    },
    /// A valid state that this configuration cannot take over.
    #[error("snapshot {} refused: incompatible with this configuration: {problem}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
}

/// The payload: generic so that writing borrows and reading owns with one
/// field list.
#[derive(Debug, Serialize, Deserialize)]
struct Payload<Writer, A, J, H> {
    /// When it was taken (unix ms).
    written_at_ms: u64,
    /// The `modelgate` version that wrote it, for the restore log.
    writer: Writer,
    aggregator: A,
    judge: J,
    history: H,
}

/// A snapshot read and checked, not yet applied.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    payload: Payload<String, AggregatorStateOwned, JudgeStateOwned, HistoryStateOwned>,
}

/// What a restore brought back, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    /// When the snapshot was taken (unix ms).
    pub written_at_ms: u64,
    /// Series restored.
    pub series: usize,
    /// Alerts restored, any state.
    pub alerts: usize,
    /// Of which firing.
    pub firing: usize,
    /// Endpoints with a baseline.
    pub baselines: usize,
}

/// The whole file for the state of `agg`, `judge` and `history` at `now_ms`.
pub fn encode(
    agg: &Aggregator,
    judge: &Judge,
    history: &History,
    now_ms: u64,
) -> Result<Vec<u8>, SnapshotError> {
    let payload = Payload {
        written_at_ms: now_ms,
        writer: env!("CARGO_PKG_VERSION"),
        aggregator: agg.state(),
        judge: judge.state(),
        history: history.state(),
    };
    let mut out = vec![0u8; HEADER_LEN];
    out = postcard::to_extend(&payload, out).map_err(SnapshotError::Encode)?;
    let body = &out[HEADER_LEN..];
    let len = body.len() as u64;
    let crc = crc32fast::hash(body);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&0u16.to_le_bytes());
    out[12..20].copy_from_slice(&len.to_le_bytes());
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks and decodes the bytes of the file `path`.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let path = path.to_owned();
    let found = bytes.len() as u64;
    // A file shorter than the magic is judged on what it has: the start of
    // a snapshot cut short, or something else.
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(SnapshotError::Foreign { path });
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(SnapshotError::Truncated {
            path,
            found,
            expected: HEADER_LEN as u64,
        });
    };
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path,
            found: version,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    let len = u64::from_le_bytes(len);
    let stored = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if found < expected {
        return Err(SnapshotError::Truncated {
            path,
            found,
            expected,
        });
    }
    if found > expected {
        return Err(SnapshotError::Corrupt {
            path,
            problem: format!("{} bytes after the payload", found - expected),
        });
    }
    let body = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(SnapshotError::Checksum {
            path,
            stored,
            computed,
        });
    }
    match postcard::from_bytes(body) {
        Ok(payload) => Ok(Snapshot { path, payload }),
        Err(e) => Err(SnapshotError::Corrupt {
            path,
            problem: e.to_string(),
        }),
    }
}

impl Snapshot {
    /// When it was taken (unix ms).
    pub fn written_at_ms(&self) -> u64 {
        self.payload.written_at_ms
    }

    /// The `modelgate` version that wrote it.
    pub fn writer(&self) -> &str {
        &self.payload.writer
    }

    /// Replaces the state of `agg`, `judge` and `history` with this
    /// snapshot's. On an error none is changed.
    pub fn apply(
        self,
        agg: &mut Aggregator,
        judge: &mut Judge,
        history: &mut History,
    ) -> Result<RestoreSummary, SnapshotError> {
        let Payload {
            written_at_ms,
            aggregator,
            judge: judged,
            history: charts,
            ..
        } = self.payload;
        let restored = agg.restore(aggregator).map_err(|e| match e {
            RestoreError::SlotChanged { .. } => SnapshotError::Incompatible {
                path: self.path.clone(),
                problem: e.to_string(),
            },
            RestoreError::Invalid(_) => SnapshotError::Corrupt {
                path: self.path.clone(),
                problem: e.to_string(),
            },
        })?;
        if restored.histograms_dropped {
            tracing::warn!(
                file = %self.path.display(),
                "emit.histogram_buckets_ms changed since the snapshot: cumulative latency histograms start from zero"
            );
        }
        judge.restore(judged);
        history.restore(charts);
        let (alerts, firing) = judge.judgements().fold((0, 0), |(n, f), (_, j)| {
            (n + 1, f + usize::from(j.firing().is_some()))
        });
        let baselines = agg
            .endpoints()
            .filter(|(e, _)| judge.baseline(e).is_some())
            .count();
        Ok(RestoreSummary {
            written_at_ms,
            series: restored.series,
            alerts,
            firing,
            baselines,
        })
    }
}

/// Reads and checks `<dir>/modelgate.snapshot`; `None` when there is none.
/// A file larger than `max_bytes` is refused by its size before a byte of
/// it is read (and never more than `max_bytes` are, should it grow).
pub fn read(dir: &Path, max_bytes: u64) -> Result<Option<Snapshot>, SnapshotError> {
    use std::io::Read as _;
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Read { path, source }),
    };
    let read_error = |source| SnapshotError::Read {
        path: path.clone(),
        source,
    };
    let bytes = file.metadata().map_err(read_error)?.len();
    if bytes > max_bytes {
        return Err(SnapshotError::TooLarge {
            path,
            bytes,
            max: max_bytes,
        });
    }
    let mut content = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut content)
        .map_err(read_error)?;
    if content.len() as u64 > max_bytes {
        return Err(SnapshotError::TooLarge {
            path,
            bytes: content.len() as u64,
            max: max_bytes,
        });
    }
    decode(&path, &content).map(Some)
}

/// The lock file inside `snapshot.dir`.
pub const LOCK_NAME: &str = "modelgate.lock";

/// `snapshot.dir` held by this process (an advisory `flock`, released by
/// the kernel when the process ends, however it ends: a `kill -9` leaves
/// no stale lock behind).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes `dir` for this process, or names the process that holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, SnapshotError> {
    use std::io::Read as _;
    let path = dir.join(LOCK_NAME);
    let write_error = |source| SnapshotError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(|source| SnapshotError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(write_error)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(write_error)?;
            writeln!(file, "pid {}", std::process::id()).map_err(write_error)?;
            Ok(DirLock { _file: file })
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // What the holder wrote: a pid line, never more than this.
            let _ = (&mut file).take(256).read_to_string(&mut holder);
            let holder = holder.trim();
            Err(SnapshotError::Locked {
                dir: dir.to_owned(),
                holder: if holder.is_empty() {
                    "a process that wrote no pid yet".into()
                } else {
                    holder.escape_debug().to_string()
                },
            })
        }
        Err(fs::TryLockError::Error(source)) => Err(write_error(source)),
    }
}

/// Writes `bytes` as `<dir>/modelgate.snapshot` atomically: temporary file
/// in the same directory, fsync, rename, fsync of the directory. On any
/// failure the temporary file is removed and the previous snapshot, if
/// any, is left as it was.
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let temp = dir.join(TEMP_NAME);
    let path = dir.join(FILE_NAME);
    let result = (|| {
        fs::create_dir_all(dir).map_err(|source| SnapshotError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let write = |temp: &Path| -> io::Result<()> {
            let mut file = File::create(temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        write(&temp).map_err(|source| SnapshotError::Write {
            path: temp.clone(),
            source,
        })?;
        fs::rename(&temp, &path).map_err(|source| SnapshotError::Write {
            path: path.clone(),
            source,
        })?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SnapshotError::Write {
                path: dir.to_owned(),
                source,
            })
    })();
    if result.is_err() {
        // Best effort: it may never have been created.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Restores `agg` and `judge` from `<dir>/modelgate.snapshot` at start,
/// logging what happened. A missing file is a fresh start; a refused one is
/// logged with its problem, moved aside and the collector starts empty.
/// Never fails.
pub fn restore_at_start(
    dir: &Path,
    max_bytes: u64,
    agg: &mut Aggregator,
    judge: &mut Judge,
    history: &mut History,
    now_ms: u64,
) {
    let path = dir.join(FILE_NAME);
    let outcome = read(dir, max_bytes).and_then(|s| {
        s.map(|s| {
            let writer = s.writer().to_owned();
            s.apply(agg, judge, history)
                .map(|summary| (summary, writer))
        })
        .transpose()
    });
    match outcome {
        Ok(None) => {
            tracing::info!(file = %path.display(), "no snapshot yet: starting empty");
        }
        Ok(Some((s, writer))) => {
            tracing::info!(
                file = %path.display(),
                writer = ?writer,
                age_s = now_ms.saturating_sub(s.written_at_ms) as f64 / 1e3,
                series = s.series,
                baselines = s.baselines,
                alerts = s.alerts,
                firing = s.firing,
                "restored snapshot"
            );
        }
        Err(e @ SnapshotError::Read { .. }) => {
            tracing::error!(file = %path.display(), "{e}; starting empty");
        }
        Err(e) => {
            let aside = dir.join(REFUSED_NAME);
            match fs::rename(&path, &aside) {
                Ok(()) => tracing::error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    "{e}; starting empty"
                ),
                Err(m) => tracing::error!(
                    file = %path.display(),
                    "{e}; starting empty (could not move it aside: {m})"
                ),
            }
        }
    }
}

/// The pipeline task's writer: where, and the one write in flight.
#[derive(Debug)]
pub struct Snapshotter {
    dir: PathBuf,
    in_flight: Option<JoinHandle<()>>,
    /// Ticks skipped because the previous write was still running.
    skipped: u64,
}

impl Snapshotter {
    /// Snapshots to `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            in_flight: None,
            skipped: 0,
        }
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a new write may start (none in flight). A `false` is counted
    /// and logged: the disk is slower than `snapshot.interval`.
    pub fn ready(&mut self) -> bool {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            self.skipped += 1;
            tracing::warn!(
                dir = %self.dir.display(),
                skipped = self.skipped,
                "previous snapshot still being written: skipping this one"
            );
            return false;
        }
        self.in_flight = None;
        true
    }

    /// Writes `bytes` on a blocking thread; the caller checked [`ready`](Self::ready).
    pub fn spawn_write(&mut self, bytes: Vec<u8>, encode_time: Duration) {
        let dir = self.dir.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            write_logged(&dir, &bytes, encode_time);
        }));
    }

    /// Waits for the write in flight, then writes `bytes` and waits for it:
    /// the last snapshot at shutdown.
    pub async fn finish(&mut self, bytes: Vec<u8>, encode_time: Duration) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.await;
        }
        let dir = self.dir.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || write_logged(&dir, &bytes, encode_time)).await
        {
            tracing::error!(error = %e, "final snapshot write ended abnormally");
        }
    }
}

fn write_logged(dir: &Path, bytes: &[u8], encode_time: Duration) {
    let started = Instant::now();
    match write_atomic(dir, bytes) {
        Ok(()) => tracing::debug!(
            dir = %dir.display(),
            bytes = bytes.len(),
            encode_ms = encode_time.as_secs_f64() * 1e3,
            write_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot written"
        ),
        Err(e) => tracing::warn!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{AdminConfig, AggregateConfig, JudgeConfig};
    use crate::emit::history::HistoryLimits;
    use crate::extract::Outcome;
    use crate::judge::{AlertState, Severity};
    use crate::testing::{endpoint, lending_incident, request};

    const T0: u64 = 1_763_658_000_000;

    fn empty() -> (Aggregator, Judge) {
        let agg = AggregateConfig::default();
        (
            Aggregator::new(agg, vec![100.0, 150.0, 1000.0], Default::default(), T0),
            Judge::new(JudgeConfig::default()),
        )
    }

    fn history() -> History {
        History::new(HistoryLimits::from_config(&AdminConfig::default()))
    }

    /// `encode` with an empty history.
    fn encode2(agg: &Aggregator, judge: &Judge, now_ms: u64) -> Vec<u8> {
        encode(agg, judge, &history(), now_ms).unwrap()
    }

    /// The lending incident, condensed: v1.2 becomes the baseline, then v1.3
    /// at 700-820 ms with timeouts fires. Returns the time reached.
    fn incident() -> (Aggregator, Judge, u64) {
        let (mut agg, mut judge) = empty();
        let t = lending_incident(&mut agg, &mut judge, T0);
        (agg, judge, t)
    }

    /// Every alert: key, state, since, firings, condition.
    fn alerts(judge: &Judge) -> Vec<(AlertKey, AlertState, u64, u64)> {
        let mut v: Vec<_> = judge
            .judgements()
            .map(|(k, j)| {
                let a = j.alert(Severity::Critical);
                (k.clone(), a.state, a.since_ms, a.firings)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    use crate::judge::AlertKey;

    fn firing(judge: &Judge) -> usize {
        judge
            .judgements()
            .filter(|(_, j)| j.firing().is_some())
            .count()
    }

    #[test]
    fn round_trip_keeps_series_baselines_and_firing_alerts() {
        let (agg, judge, t) = incident();
        assert!(firing(&judge) >= 6, "{:?}", alerts(&judge));
        let bytes = encode2(&agg, &judge, t);
        assert_eq!(&bytes[..8], &MAGIC);

        let (mut agg2, mut judge2) = empty();
        let snap = decode(Path::new("/x/modelgate.snapshot"), &bytes).unwrap();
        assert_eq!(snap.written_at_ms(), t);
        let summary = snap.apply(&mut agg2, &mut judge2, &mut history()).unwrap();
        assert_eq!(summary.series, 4);
        assert_eq!(summary.firing, firing(&judge));
        assert_eq!(summary.baselines, 2);
        assert_eq!(alerts(&judge2), alerts(&judge));
        let full = |j: &Judge| {
            let mut v: Vec<_> = j
                .judgements()
                .map(|(k, j)| (k.clone(), j.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(full(&judge2), full(&judge), "evidence kept too");
        for path in ["/risk-score", "/funding-approve"] {
            assert_eq!(judge2.baseline(&endpoint(path)), Some("v1.2"));
            for v in ["v1.2", "v1.3"] {
                let a = &agg.versions(&endpoint(path)).unwrap()[v];
                let b = &agg2.versions(&endpoint(path)).unwrap()[v];
                assert_eq!(agg.horizon(a, t), agg2.horizon(b, t), "{path} {v}");
                assert_eq!(a.first_seen_ms, b.first_seen_ms);
                assert_eq!(a.histograms, b.histograms);
            }
        }
        assert_eq!(agg2.series_count(), agg.series_count());

        // Time went on while it was down: the alerts stay firing, with no
        // transition and no hold to wait through again.
        let later = t + 30_000;
        let transitions = judge2.evaluate(&agg2, later);
        assert!(transitions.is_empty(), "{transitions:?}");
        assert_eq!(firing(&judge2), firing(&judge));
        assert_eq!(judge2.baseline(&endpoint("/risk-score")), Some("v1.2"));
    }

    #[test]
    fn the_dashboard_history_comes_back_within_the_limits_in_force() {
        let (agg, judge, t) = incident();
        let mut charts = history();
        for i in 0..5 {
            charts.record(&agg, &judge, &[], 1_000, t + i * 1_000);
        }
        let now = t + 5_000;
        let bytes = encode(&agg, &judge, &charts, now).unwrap();
        let (mut agg2, mut judge2) = empty();
        let mut charts2 = history();
        decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut charts2)
            .unwrap();
        let view = |h: &History, j: &Judge| h.view(j, "", 1_000, 300_000, now);
        assert_eq!(view(&charts2, &judge2), view(&charts, &judge));
        assert_eq!(view(&charts2, &judge2).endpoints.len(), 2);

        // Smaller limits now: rings and series are cut to them.
        let mut small = History::new(HistoryLimits {
            points: 2,
            series: 3,
            regressions: 1,
        });
        decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut small)
            .unwrap();
        let v = view(&small, &judge2);
        let rings: Vec<usize> = v
            .endpoints
            .iter()
            .flat_map(|e| e.versions.iter().map(|v| v.points.len()))
            .collect();
        assert_eq!(rings, vec![2, 2, 2]);
    }

    #[test]
    fn a_pending_alert_keeps_its_hold_progress() {
        let (mut agg, mut judge) = empty();
        // sla only needs the candidate: v1.2 alone, always slow.
        let mut t = T0;
        let mut pending_since = None;
        for _ in 0..40 {
            agg.record(&[request("/a", "v1.2", 900.0, Outcome::Ok)], t);
            judge.evaluate(&agg, t);
            pending_since = judge
                .judgements()
                .find(|(_, j)| j.alert(Severity::Critical).state == AlertState::Pending)
                .map(|(_, j)| j.alert(Severity::Critical).since_ms);
            if pending_since.is_some() {
                break;
            }
            t += 100;
        }
        let since = pending_since.expect("an sla alert pending");
        let bytes = encode2(&agg, &judge, t);
        let (mut agg2, mut judge2) = empty();
        decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        // The hold (2 s) counts from before the restart.
        let hold = JudgeConfig::default().alerts.hold.as_millis() as u64;
        let transitions = judge2.evaluate(&agg2, since + hold);
        assert!(
            transitions
                .iter()
                .any(|t| t.alert().state == AlertState::Firing),
            "{transitions:?}"
        );
    }

    fn refused(bytes: &[u8]) -> SnapshotError {
        decode(Path::new("/data/modelgate.snapshot"), bytes).unwrap_err()
    }

    #[test]
    fn damaged_foreign_and_other_version_files_are_refused_by_name() {
        let (agg, judge, t) = incident();
        let good = encode2(&agg, &judge, t);

        let mut flipped = good.clone();
        let mid = HEADER_LEN + (good.len() - HEADER_LEN) / 2;
        flipped[mid] ^= 0x40;
        let e = refused(&flipped);
        assert!(matches!(e, SnapshotError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");

        let e = refused(&good[..good.len() - 7]);
        assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = refused(&good[..HEADER_LEN - 1]);
        assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");
        let e = refused(&good[..3]);
        assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");

        let e = refused(b"{\"series\": []}\n garbage garbage garbage");
        assert!(matches!(e, SnapshotError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("not a modelgate snapshot"), "{e}");
        let e = refused(b"");
        assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");

        let with_version = |version: u16| {
            let mut file = good.clone();
            file[8..10].copy_from_slice(&version.to_le_bytes());
            file
        };
        for other in [1, FORMAT_VERSION + 1] {
            let e = refused(&with_version(other));
            assert!(
                matches!(e, SnapshotError::Version { found, .. } if found == other),
                "{e}"
            );
            let named =
                format!("format version {other}, this build reads version {FORMAT_VERSION}");
            assert!(e.to_string().contains(&named), "{e}");
        }

        let mut long = good.clone();
        long.extend_from_slice(b"xx");
        assert!(matches!(refused(&long), SnapshotError::Corrupt { .. }));

        // A checksum that matches garbage: the decoder refuses it.
        let mut junk = good[..HEADER_LEN].to_vec();
        let body = [0xffu8; 16];
        junk[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
        junk[20..24].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        junk.extend_from_slice(&body);
        assert!(matches!(refused(&junk), SnapshotError::Corrupt { .. }));

        for e in [
            refused(&flipped),
            refused(&with_version(1)),
            refused(b"nope"),
        ] {
            assert!(
                e.to_string().contains("/data/modelgate.snapshot"),
                "names the file: {e}"
            );
        }
    }

    #[test]
    fn another_slot_length_is_incompatible_and_changes_nothing() {
        let (agg, judge, t) = incident();
        let bytes = encode2(&agg, &judge, t);
        let config = AggregateConfig {
            slot: Duration::from_secs(7),
            ..AggregateConfig::default()
        };
        let mut agg2 = Aggregator::new(config, vec![100.0, 150.0, 1000.0], Default::default(), T0);
        let mut judge2 = Judge::new(JudgeConfig::default());
        let e = decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap_err();
        assert!(matches!(e, SnapshotError::Incompatible { .. }), "{e}");
        assert!(e.to_string().contains("aggregate.slot"), "{e}");
        assert_eq!(agg2.series_count(), 0);
        assert_eq!(judge2.judgements().count(), 0);
    }

    #[test]
    fn changed_buckets_only_drop_the_cumulative_histograms() {
        let (agg, judge, t) = incident();
        let bytes = encode2(&agg, &judge, t);
        let mut agg2 = Aggregator::new(
            AggregateConfig::default(),
            vec![50.0],
            Default::default(),
            T0,
        );
        let (_, mut judge2) = empty();
        decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        let s = &agg2.versions(&endpoint("/risk-score")).unwrap()["v1.3"];
        assert!(s.histograms.iter().all(Option::is_none));
        assert_eq!(agg2.horizon(s, t).count(), 40);
        // Recording still works with the new layout.
        agg2.record(&[request("/risk-score", "v1.3", 10.0, Outcome::Ok)], t);
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let snap_dir = dir.path().join("state");
        write_atomic(&snap_dir, b"first").unwrap();
        write_atomic(&snap_dir, b"second").unwrap();
        assert_eq!(fs::read(snap_dir.join(FILE_NAME)).unwrap(), b"second");
        assert!(!snap_dir.join(TEMP_NAME).exists());

        // The rename fails (the target is a non-empty directory): the error
        // names the file, no temporary file is left behind.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join(FILE_NAME).join("inside")).unwrap();
        let e = write_atomic(&blocked, b"new state").unwrap_err();
        assert!(matches!(e, SnapshotError::Write { .. }), "{e}");
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        assert!(!blocked.join(TEMP_NAME).exists());
        assert!(blocked.join(FILE_NAME).join("inside").is_dir());

        // The directory cannot be created: nothing anywhere.
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        assert!(write_atomic(&file.join("sub"), b"state").is_err());
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn a_snapshot_over_the_size_limit_is_refused_unread_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join(FILE_NAME)).unwrap();
        // 3 GiB, sparse: nothing of it is ever read.
        file.set_len(3 << 30).unwrap();
        let err = read(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("snapshot.max_bytes") && err.contains(FILE_NAME),
            "{err}"
        );
        let (mut agg, mut judge) = empty();
        restore_at_start(
            dir.path(),
            1 << 20,
            &mut agg,
            &mut judge,
            &mut history(),
            T0,
        );
        assert!(dir.path().join(REFUSED_NAME).exists());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_second_holder_of_the_directory_is_refused_by_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("in use"),
            "{err}"
        );
        drop(first);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn restore_at_start_is_fresh_on_nothing_and_moves_a_bad_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut agg, mut judge) = empty();
        restore_at_start(
            dir.path(),
            1 << 30,
            &mut agg,
            &mut judge,
            &mut history(),
            T0,
        );
        assert_eq!(agg.series_count(), 0);

        fs::write(dir.path().join(FILE_NAME), b"garbage bytes, not a snapshot").unwrap();
        restore_at_start(
            dir.path(),
            1 << 30,
            &mut agg,
            &mut judge,
            &mut history(),
            T0,
        );
        assert_eq!(agg.series_count(), 0);
        assert!(!dir.path().join(FILE_NAME).exists());
        assert_eq!(
            fs::read(dir.path().join(REFUSED_NAME)).unwrap(),
            b"garbage bytes, not a snapshot"
        );

        let (a, j, t) = incident();
        write_atomic(dir.path(), &encode2(&a, &j, t)).unwrap();
        restore_at_start(
            dir.path(),
            1 << 30,
            &mut agg,
            &mut judge,
            &mut history(),
            t + 1_000,
        );
        assert_eq!(agg.series_count(), 4);
        assert_eq!(firing(&judge), firing(&j));
    }

    #[tokio::test]
    async fn snapshotter_keeps_one_write_in_flight_and_finishes_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Snapshotter::new(dir.path().to_owned());
        assert!(s.ready());
        s.spawn_write(b"one".to_vec(), Duration::ZERO);
        s.finish(b"two".to_vec(), Duration::ZERO).await;
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), b"two");
        assert!(s.ready());
    }
}
