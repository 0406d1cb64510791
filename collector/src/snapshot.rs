//! Snapshots: the collector's state on disk, so a restart does not forget
//! an incident.
//!
//! What is kept: every series' window of sketches (with its first and last
//! seen times and cumulative histograms), the overflow series, database
//! calls waiting for their request, the aggregation counters, the judge's
//! sticky baselines and every alert with its state, `since` time, clear
//! timer, firing count and latest evidence. Times are unix milliseconds, so
//! after a restore windows slide and hold timers run on from the wall clock:
//! a firing alert stays firing and a pending one keeps the time it waited.
//! Not kept: the dashboard's chart history (it starts empty again) and
//! modelgate's own receiver counters (they are process counters).
//!
//! # Format (version 1)
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
use crate::judge::{AlertState, Judge, JudgeStateOwned};

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
pub const FORMAT_VERSION: u16 = 1;

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
struct Payload<Writer, A, J> {
    /// When it was taken (unix ms).
    written_at_ms: u64,
    /// The `modelgate` version that wrote it, for the restore log.
    writer: Writer,
    aggregator: A,
    judge: J,
}

/// A snapshot read and checked, not yet applied.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    payload: Payload<String, AggregatorStateOwned, JudgeStateOwned>,
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

/// The whole file for the state of `agg` and `judge` at `now_ms`.
pub fn encode(agg: &Aggregator, judge: &Judge, now_ms: u64) -> Result<Vec<u8>, SnapshotError> {
    let payload = Payload {
        written_at_ms: now_ms,
        writer: env!("CARGO_PKG_VERSION"),
        aggregator: agg.state(),
        judge: judge.state(),
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
    let field = |range: std::ops::Range<usize>| -> &[u8] { &header[range] };
    let version = u16::from_le_bytes([field(8..10)[0], field(8..10)[1]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path,
            found: version,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(field(12..20));
    let len = u64::from_le_bytes(len);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(field(20..24));
    let stored = u32::from_le_bytes(crc);
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

    /// Replaces the state of `agg` and `judge` with this snapshot's. On an
    /// error neither is changed.
    pub fn apply(
        self,
        agg: &mut Aggregator,
        judge: &mut Judge,
    ) -> Result<RestoreSummary, SnapshotError> {
        let Payload {
            written_at_ms,
            aggregator,
            judge: judged,
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
        let (alerts, firing) = judge.judgements().fold((0, 0), |(n, f), (_, j)| {
            (n + 1, f + usize::from(j.alert.state == AlertState::Firing))
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
pub fn read(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Read { path, source }),
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
pub fn restore_at_start(dir: &Path, agg: &mut Aggregator, judge: &mut Judge, now_ms: u64) {
    let path = dir.join(FILE_NAME);
    let outcome = read(dir).and_then(|s| {
        s.map(|s| {
            let writer = s.writer().to_owned();
            s.apply(agg, judge).map(|summary| (summary, writer))
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
                writer = %writer,
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
