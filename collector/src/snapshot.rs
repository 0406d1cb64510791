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
//! # Format (version 6: a time-to-first-token series is named with its band of input sizes, see `crate::phase::InputBand`; version 5 named a series with its phase; version 4 made a series' slots blocks of slots, see `aggregate::slots`)
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
//! `aggregate::AggregatorState`, the judge's per-service
//! `judge::ServiceState` and the types inside them: changing any of them means bumping [`FORMAT_VERSION`], and
//! a file of another version is refused, not misread.
//!
//! # Writing
//!
//! The pipeline task owns the state, so it serializes it, no lock, in
//! slices ([`Encoder`]): a slice is whole endpoints up to a budget of
//! series, then whole services of the judge up to as many entries, each
//! slice one turn of the task, taking its chance beside batches and
//! questions, so a batch waits for one slice, not for the whole state
//! (the last slice ends with the history). The snapshot is fuzzy across
//! endpoints and services: see [`Encoder`] for what that means and why a
//! restore does not mind. The slices go over a
//! bounded channel to a blocking thread that writes them as they come
//! ([`SnapshotInProgress`]): neither the task nor memory holds the whole
//! file. One snapshot at a time: a tick that finds one still being taken
//! or written is skipped. A write goes to a temporary file in the same
//! directory (the header, with the payload's length and checksum, filled
//! in once the last slice is written), is fsynced, renamed over the
//! snapshot and the directory fsynced: a crash at any point leaves the
//! previous snapshot or the new one, never a mix; a snapshot given up
//! (its writer's channel closed early) leaves the previous one. The last
//! snapshot, at shutdown, is taken in large slices with nothing between
//! them, and waited for.
//!
//! This module must never block the pipeline task on the disk (a slice
//! is encoded only when the writer has room for it), crash the
//! collector because of a bad file (it is refused with the file and the
//! problem named, and the collector starts empty), leave a partial file
//! where the snapshot belongs, or delete a file it refused (it is moved
//! aside to `modelgate.snapshot.refused` for inspection).

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::aggregate::{Aggregator, AggregatorStateOwned, RestoreError};
use crate::emit::history::{History, HistoryStateOwned};
use crate::judge::{Judge, JudgeStateOwned, ServiceState};

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
pub const FORMAT_VERSION: u16 = 6;

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
    /// The aggregator lost endpoints under a snapshot in slices (its
    /// positions are held, so this is a bug): the snapshot is given up.
    #[error("cannot encode snapshot: {expected} endpoints announced, only {found} left")]
    Shrunk {
        /// Endpoints at the start.
        expected: usize,
        /// Endpoints found.
        found: usize,
    },
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

/// The whole file for the state of `agg`, `judge` and `history` at `now_ms`,
/// in one go: the slices of an [`Encoder`] with no budget, behind the header.
pub fn encode(
    agg: &mut Aggregator,
    judge: &Judge,
    history: &History,
    now_ms: u64,
) -> Result<Vec<u8>, SnapshotError> {
    let (mut encoder, head) = Encoder::begin(agg, now_ms)?;
    let mut out = vec![0u8; HEADER_LEN];
    out.extend_from_slice(&head);
    loop {
        match encoder.slice(agg, judge, history, usize::MAX) {
            Ok(slice) => {
                out.extend_from_slice(&slice.bytes);
                if slice.last {
                    break;
                }
            }
            Err(e) => {
                encoder.abort(agg);
                return Err(e);
            }
        }
    }
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    let len = (out.len() - HEADER_LEN) as u64;
    out[..HEADER_LEN].copy_from_slice(&header(len, crc));
    Ok(out)
}

/// The header of a payload of `len` bytes with checksum `crc`.
fn header(len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&0u16.to_le_bytes());
    out[12..20].copy_from_slice(&len.to_le_bytes());
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Appends the postcard encoding of `value` to `out`.
fn append<T: Serialize + ?Sized>(out: Vec<u8>, value: &T) -> Result<Vec<u8>, SnapshotError> {
    postcard::to_extend(value, out).map_err(SnapshotError::Encode)
}

/// A snapshot's payload written in slices, so that the pipeline task,
/// which owns the state, is never held for longer than one slice.
///
/// The bytes are those of the payload ([`Payload`]) as one pass would
/// write them: the head (time, writer, the aggregator's settings and the
/// number of endpoints), then the endpoints one by one, the overflow
/// series and waiting database calls, the number of the judge's services
/// and the services one by one, then the history. postcard
/// puts nothing between the fields of a struct and writes a map as its
/// length then its entries, so concatenated pieces are the struct's
/// encoding (a test checks the bytes against serializing [`Payload`] whole).
///
/// The endpoints written are those present at [`Encoder::begin`]: their
/// number is in the head, before them. The aggregator keeps their
/// positions until the last slice ([`Aggregator::hold_positions`]): one
/// that loses its last series meanwhile is written empty and dropped at
/// restore; endpoints that appear meanwhile are in the next snapshot.
///
/// The snapshot is fuzzy across endpoints: each endpoint's series are
/// taken whole, as they were when their slice ran (never half of a
/// batch), but two endpoints may be taken a few turns of the pipeline
/// task apart, and the judge's services (each whole, as of its slice;
/// one emptied meanwhile is written empty and dropped at restore) and
/// the history after them. That is enough for
/// a restore: every time a series, an alert or a baseline keeps is its
/// own (unix ms of its samples, since, first and last seen), so windows,
/// idle expiry, hold and clear timers run on from each one's own times,
/// and a batch recorded between two slices is in the snapshot or not,
/// series by series, as if the snapshot had been taken just before or
/// after it. The judge, written last, may know a series younger than the
/// series written: its next evaluation judges the series restored.
#[derive(Debug)]
pub struct Encoder {
    /// The position of the next endpoint to write.
    next: usize,
    /// The number of endpoints at the start: those this snapshot writes.
    end: usize,
    /// Once every endpoint is written: the judge's services still to
    /// write, named when the first of them was.
    services: Option<std::vec::IntoIter<String>>,
}

/// One slice of a snapshot's payload.
#[derive(Debug)]
pub struct Slice {
    /// The payload bytes, to append to those before.
    pub bytes: Vec<u8>,
    /// The series (or the judge's entries) written: the slice's cost
    /// against its budget.
    pub series: usize,
    /// Whether this was the last slice (the aggregator's positions are
    /// released).
    pub last: bool,
}

impl Encoder {
    /// Starts a snapshot at `now_ms` (its time in the file): the head of
    /// the payload, and the encoder for the rest. Holds `agg`'s positions
    /// until the last slice or [`Encoder::abort`].
    pub fn begin(agg: &mut Aggregator, now_ms: u64) -> Result<(Self, Vec<u8>), SnapshotError> {
        let (slot_ms, bounds_ms) = agg.state_head();
        let end = agg.endpoint_count();
        let head = append(
            Vec::new(),
            &(now_ms, env!("CARGO_PKG_VERSION"), slot_ms, bounds_ms, end),
        )?;
        agg.hold_positions(true);
        Ok((
            Self {
                next: 0,
                end,
                services: None,
            },
            head,
        ))
    }

    /// The next slice: whole endpoints until their series reach `budget`
    /// (at least one endpoint, however many versions it has); once every
    /// endpoint is written, whole services of the judge until their
    /// entries reach `budget`; the last slice ends with the history.
    pub fn slice(
        &mut self,
        agg: &mut Aggregator,
        judge: &Judge,
        history: &History,
        budget: usize,
    ) -> Result<Slice, SnapshotError> {
        let budget = budget.max(1);
        let mut bytes = Vec::new();
        let mut series = 0;
        if self.next < self.end {
            while self.next < self.end && series < budget {
                let Some(entry) = agg.endpoint_at(self.next) else {
                    // Positions are held, so only a bug gets here; the
                    // count is already written: a short file would misread.
                    return Err(SnapshotError::Shrunk {
                        expected: self.end,
                        found: self.next,
                    });
                };
                series += entry.1.len().max(1);
                bytes = append(bytes, &entry)?;
                self.next += 1;
            }
            return Ok(Slice {
                bytes,
                series,
                last: false,
            });
        }
        let services = match &mut self.services {
            Some(services) => services,
            None => {
                let (overflow, pending_db) = agg.state_tail();
                bytes = append(bytes, &(overflow, pending_db))?;
                // The judge's sequence: its length (what postcard writes
                // for a sequence's), then each (name, state) in turn.
                let names = judge.service_names();
                bytes = append(bytes, &names.len())?;
                self.services.insert(names.into_iter())
            }
        };
        // A service emptied since it was named is written empty (its
        // place is counted): the restore drops it.
        let empty = ServiceState::default();
        while series < budget {
            let Some(name) = services.next() else { break };
            let state = judge.service_state(&name).unwrap_or(&empty);
            series += state.entries().max(1);
            bytes = append(bytes, &(&name, state))?;
        }
        if services.len() > 0 {
            return Ok(Slice {
                bytes,
                series,
                last: false,
            });
        }
        bytes = append(bytes, &history.state())?;
        agg.hold_positions(false);
        Ok(Slice {
            bytes,
            series: series.max(1),
            last: true,
        })
    }

    /// Gives up: `agg`'s positions are released.
    pub fn abort(self, agg: &mut Aggregator) {
        agg.hold_positions(false);
    }
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

/// Writes `bytes` as `<dir>/modelgate.snapshot` atomically: see
/// [`write_atomic_with`].
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    write_atomic_with(dir, |file| file.write_all(bytes).map(|()| true)).map(drop)
}

/// Writes `<dir>/modelgate.snapshot` atomically with what `fill` writes:
/// temporary file in the same directory, fsync, rename, fsync of the
/// directory. `fill` returning `false` gives the write up. On any failure
/// or give-up the temporary file is removed and the previous snapshot, if
/// any, is left as it was. `Ok(true)`: written.
fn write_atomic_with(
    dir: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<bool>,
) -> Result<bool, SnapshotError> {
    let temp = dir.join(TEMP_NAME);
    let path = dir.join(FILE_NAME);
    let result = (|| {
        fs::create_dir_all(dir).map_err(|source| SnapshotError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let write = |temp: &Path| -> io::Result<bool> {
            let mut file = File::create(temp)?;
            if !fill(&mut file)? {
                return Ok(false);
            }
            file.sync_all().map(|()| true)
        };
        let complete = write(&temp).map_err(|source| SnapshotError::Write {
            path: temp.clone(),
            source,
        })?;
        if !complete {
            return Ok(false);
        }
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
            .map(|()| true)
    })();
    if !matches!(result, Ok(true)) {
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

/// What goes from a snapshot in progress to its writer thread.
#[derive(Debug)]
enum Piece {
    /// Payload bytes, in order.
    More(Vec<u8>),
    /// The last payload bytes: the file is complete. With the encoding's
    /// figures, for the log.
    Last(Vec<u8>, EncodeFigures),
}

/// How a snapshot's encoding went, for the log and the benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeFigures {
    /// Slices written (the head is one).
    pub slices: u64,
    /// Time spent encoding, all slices.
    pub encoding: Duration,
    /// The longest slice: the longest the pipeline task was held.
    pub longest: Duration,
}

/// Slices a writer thread may have waiting: with slices of a thousand
/// series or so, a few MiB of a snapshot in memory at most, whatever its size.
const PIECES_IN_FLIGHT: usize = 8;

/// A snapshot being taken in slices by the pipeline task and written by a
/// blocking thread as they come, over a bounded channel: neither the task
/// nor the memory holds the whole file. Dropping it gives the write up
/// (the previous snapshot stays); the aggregator's positions must then be
/// released with [`SnapshotInProgress::abort`].
#[derive(Debug)]
pub struct SnapshotInProgress {
    encoder: Encoder,
    pieces: mpsc::Sender<Piece>,
    figures: EncodeFigures,
}

/// What a [`SnapshotInProgress::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More slices to come.
    Continue,
    /// The last slice went to the writer.
    Done(EncodeFigures),
    /// The writer is gone or the state could not be encoded (logged):
    /// the snapshot is given up, the previous file stays.
    Failed,
}

impl SnapshotInProgress {
    /// Waits until the writer can take a slice, so that the task never
    /// blocks on the disk; `false` when the writer is gone (its error is
    /// logged). With `None`, never returns: a branch for `select!`.
    pub async fn room(this: Option<&Self>) -> bool {
        match this {
            Some(s) => s.pieces.reserve().await.is_ok(),
            None => std::future::pending().await,
        }
    }

    /// Encodes the next slice (endpoints up to `budget` series, see
    /// [`Encoder::slice`]) and hands it to the writer, which has room
    /// ([`SnapshotInProgress::room`]).
    pub fn step(
        &mut self,
        agg: &mut Aggregator,
        judge: &Judge,
        history: &History,
        budget: usize,
    ) -> Step {
        let started = Instant::now();
        let slice = match self.encoder.slice(agg, judge, history, budget) {
            Ok(slice) => slice,
            Err(e) => {
                tracing::error!("{e}");
                agg.hold_positions(false);
                return Step::Failed;
            }
        };
        let took = started.elapsed();
        self.figures.slices += 1;
        self.figures.encoding += took;
        self.figures.longest = self.figures.longest.max(took);
        let piece = if slice.last {
            Piece::Last(slice.bytes, self.figures)
        } else {
            Piece::More(slice.bytes)
        };
        match (self.pieces.try_send(piece), slice.last) {
            (Ok(()), true) => Step::Done(self.figures),
            (Ok(()), false) => Step::Continue,
            (Err(_), last) => {
                if !last {
                    agg.hold_positions(false);
                }
                Step::Failed
            }
        }
    }

    /// Gives the snapshot up: the writer removes its temporary file and
    /// `agg`'s positions are released.
    pub fn abort(self, agg: &mut Aggregator) {
        self.encoder.abort(agg);
    }
}

/// The pipeline task's writer: where, and the one write in flight.
#[derive(Debug)]
pub struct Snapshotter {
    dir: PathBuf,
    in_flight: Option<JoinHandle<()>>,
    /// Ticks skipped because the previous snapshot was still being taken.
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

    /// Starts a snapshot at `now_ms` unless the previous one is still
    /// being written (counted and logged: the disk is slower than
    /// `snapshot.interval`): its writer thread and its head. The caller
    /// then [`steps`](SnapshotInProgress::step) it when there is
    /// [`room`](SnapshotInProgress::room).
    pub fn begin(&mut self, agg: &mut Aggregator, now_ms: u64) -> Option<SnapshotInProgress> {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            self.skip();
            return None;
        }
        self.start(agg, now_ms)
    }

    /// A snapshot tick found the previous snapshot still in progress.
    pub fn skip(&mut self) {
        self.skipped += 1;
        tracing::warn!(
            dir = %self.dir.display(),
            skipped = self.skipped,
            "previous snapshot still being taken: skipping this one"
        );
    }

    /// Starts a snapshot; the previous write is over.
    fn start(&mut self, agg: &mut Aggregator, now_ms: u64) -> Option<SnapshotInProgress> {
        let (encoder, head) = match Encoder::begin(agg, now_ms) {
            Ok(begun) => begun,
            Err(e) => {
                tracing::error!("{e}");
                return None;
            }
        };
        let (pieces, mut taken) = mpsc::channel(PIECES_IN_FLIGHT);
        let dir = self.dir.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            write_logged(&dir, &mut taken);
        }));
        let mut snapshot = SnapshotInProgress {
            encoder,
            pieces,
            figures: EncodeFigures::default(),
        };
        // The channel is new and empty: the head always fits.
        let _ = snapshot.pieces.try_send(Piece::More(head));
        snapshot.figures.slices = 1;
        Some(snapshot)
    }

    /// The last snapshot, at shutdown: gives up the one in progress, if
    /// any, waits for the write in flight, then takes a whole snapshot
    /// (nothing is left to interleave with; slices still keep the memory
    /// bounded) and waits until it is written.
    pub async fn finish(
        &mut self,
        in_progress: Option<SnapshotInProgress>,
        agg: &mut Aggregator,
        judge: &Judge,
        history: &History,
        now_ms: u64,
    ) {
        if let Some(s) = in_progress {
            s.abort(agg);
        }
        if let Some(h) = self.in_flight.take() {
            let _ = h.await;
        }
        let Some(mut snapshot) = self.start(agg, now_ms) else {
            return;
        };
        loop {
            if !SnapshotInProgress::room(Some(&snapshot)).await {
                snapshot.abort(agg);
                break;
            }
            match snapshot.step(agg, judge, history, FINAL_SLICE_SERIES) {
                Step::Continue => {}
                Step::Done(_) | Step::Failed => break,
            }
        }
        if let Some(h) = self.in_flight.take() {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "final snapshot write ended abnormally");
            }
        }
    }
}

/// Series per slice of the last snapshot: larger than the running ones
/// (nothing waits on the task), as small as keeps the pieces in flight a
/// few tens of MiB.
const FINAL_SLICE_SERIES: usize = 16_384;

/// The writer thread: takes the pieces as they come, writes them after a
/// blank header and fills the header in at the last one. A channel closed
/// before the last piece (the snapshot was given up) leaves the previous
/// file as it was.
fn write_streamed(
    dir: &Path,
    pieces: &mut mpsc::Receiver<Piece>,
) -> Result<Option<(u64, EncodeFigures)>, SnapshotError> {
    use std::io::{Seek as _, SeekFrom};
    let mut figures = None;
    let mut len = 0u64;
    let written = write_atomic_with(dir, |file| {
        let mut crc = crc32fast::Hasher::new();
        file.write_all(&[0u8; HEADER_LEN])?;
        while let Some(piece) = pieces.blocking_recv() {
            let (bytes, last) = match piece {
                Piece::More(bytes) => (bytes, None),
                Piece::Last(bytes, f) => (bytes, Some(f)),
            };
            file.write_all(&bytes)?;
            crc.update(&bytes);
            len += bytes.len() as u64;
            if last.is_some() {
                figures = last;
                file.seek(SeekFrom::Start(0))?;
                file.write_all(&header(len, crc.finalize()))?;
                return Ok(true);
            }
        }
        Ok(false)
    })?;
    Ok(written.then_some((len + HEADER_LEN as u64, figures.unwrap_or_default())))
}

fn write_logged(dir: &Path, pieces: &mut mpsc::Receiver<Piece>) {
    let started = Instant::now();
    match write_streamed(dir, pieces) {
        Ok(Some((bytes, figures))) => tracing::debug!(
            dir = %dir.display(),
            bytes,
            slices = figures.slices,
            encode_ms = figures.encoding.as_secs_f64() * 1e3,
            longest_slice_ms = figures.longest.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot written"
        ),
        Ok(None) => tracing::debug!(dir = %dir.display(), "snapshot given up"),
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
    fn encode2(agg: &mut Aggregator, judge: &Judge, now_ms: u64) -> Vec<u8> {
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
        let (mut agg, judge, t) = incident();
        assert!(firing(&judge) >= 6, "{:?}", alerts(&judge));
        let bytes = encode2(&mut agg, &judge, t);
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
        let (mut agg, judge, t) = incident();
        let mut charts = history();
        for i in 0..5 {
            charts.record(&agg, &judge, &[], 1_000, t + i * 1_000);
        }
        let now = t + 5_000;
        let bytes = encode(&mut agg, &judge, &charts, now).unwrap();
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
        let bytes = encode2(&mut agg, &judge, t);
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
        let (mut agg, judge, t) = incident();
        let good = encode2(&mut agg, &judge, t);

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
        let (mut agg, judge, t) = incident();
        let bytes = encode2(&mut agg, &judge, t);
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
        let (mut agg, judge, t) = incident();
        let bytes = encode2(&mut agg, &judge, t);
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

        let (mut a, j, t) = incident();
        write_atomic(dir.path(), &encode2(&mut a, &j, t)).unwrap();
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

    /// A request of `version` on endpoint `e` of service `svc-{e % 7}`.
    fn on(e: usize, version: &str) -> crate::extract::Sample {
        crate::extract::Sample::request(
            crate::extract::EndpointKey {
                service: format!("svc-{}", e % 7),
                endpoint: format!("/e{e}"),
                dims: Vec::new(),
                phase: crate::phase::Phase::Request,
                input: None,
            },
            version,
            Duration::from_millis(40 + (e % 50) as u64),
            Outcome::Ok,
            0,
        )
    }

    /// Every series: (endpoint, version) -> requests since it was created.
    fn series(agg: &Aggregator) -> std::collections::BTreeMap<(String, String), u64> {
        agg.endpoints()
            .flat_map(|(k, versions)| {
                versions
                    .iter()
                    .map(move |(v, s)| ((k.endpoint.clone(), v.clone()), requests(s)))
            })
            .collect()
    }

    /// Requests a series took since it was created (whatever the time).
    fn requests(s: &crate::aggregate::Series) -> u64 {
        s.histograms.iter().flatten().map(|h| h.count).sum()
    }

    #[test]
    fn slices_make_the_bytes_of_the_payload_written_whole() {
        let (mut agg, mut judge, t) = incident();
        let mut charts = history();
        charts.record(&agg, &judge, &[], 1_000, t);
        for e in 0..40 {
            let versions: &[&str] = if e % 3 == 0 {
                &["v1", "v2", "v3"]
            } else {
                &["v1"]
            };
            for v in versions {
                agg.record(&[on(e, v)], t);
            }
        }
        // Seven services more with judge state: the judge is written in
        // slices too.
        judge.evaluate(&agg, t);
        let services = judge.service_names();
        assert!(services.len() >= 8, "{services:?}");
        // The reference: the payload's one struct, serialized whole.
        let payload = Payload {
            written_at_ms: t,
            writer: env!("CARGO_PKG_VERSION"),
            aggregator: agg.state(),
            judge: services
                .iter()
                .map(|name| (name, judge.service_state(name).unwrap()))
                .collect::<Vec<_>>(),
            history: charts.state(),
        };
        let body = postcard::to_stdvec(&payload).unwrap();
        let whole = encode(&mut agg, &judge, &charts, t).unwrap();
        assert_eq!(&whole[HEADER_LEN..], &body[..]);

        // In slices of 2 series (or judge entries): the same bytes, and no
        // slice goes past its budget but by its last endpoint's versions
        // or its last service's entries.
        let (mut encoder, mut sliced) = Encoder::begin(&mut agg, t).unwrap();
        let mut sizes = Vec::new();
        let mut judge_slices = 0;
        loop {
            let before = encoder.next;
            let slice = encoder.slice(&mut agg, &judge, &charts, 2).unwrap();
            sliced.extend_from_slice(&slice.bytes);
            if slice.last {
                break;
            }
            if encoder.next == before {
                judge_slices += 1;
                continue;
            }
            let last_endpoint = agg.endpoint_at(encoder.next - 1).unwrap().1.len();
            assert!(
                slice.series - last_endpoint < 2,
                "{} {last_endpoint}",
                slice.series
            );
            sizes.push(slice.series);
        }
        assert_eq!(sliced, body);
        assert!(sizes.contains(&2) && sizes.contains(&3), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), agg.series_count());
        assert!(judge_slices >= 3, "{judge_slices} judge slices");
        let (mut agg2, mut judge2) = empty();
        decode(Path::new("s"), &whole)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        assert_eq!(series(&agg2), series(&agg));
        assert_eq!(alerts(&judge2), alerts(&judge));
        assert_eq!(judge2.service_names().len(), services.len());
    }

    #[test]
    fn a_service_emptied_while_the_judge_is_written_in_slices_is_restored_without_it() {
        let (mut agg, mut judge, t) = incident();
        for e in 0..14 {
            agg.record(&[on(e, "v1"), on(e, "v2")], t);
        }
        judge.evaluate(&agg, t);
        let charts = history();
        let (mut encoder, mut bytes) = Encoder::begin(&mut agg, t).unwrap();
        // Every endpoint, then the first service of the judge.
        while encoder.next < encoder.end {
            bytes.extend(encoder.slice(&mut agg, &judge, &charts, 1).unwrap().bytes);
        }
        bytes.extend(encoder.slice(&mut agg, &judge, &charts, 1).unwrap().bytes);
        // A service not yet written loses everything (its series expired
        // and were judged again) before its turn.
        let later = encoder.services.as_ref().unwrap().as_slice()[0].clone();
        let gone = t + 24 * 3_600_000;
        agg.expire_service(&later, gone);
        judge.evaluate_service(&agg, &later, gone);
        assert!(judge.service_state(&later).is_none());
        loop {
            let slice = encoder.slice(&mut agg, &judge, &charts, 1).unwrap();
            bytes.extend(slice.bytes);
            if slice.last {
                break;
            }
        }
        let mut file = header(bytes.len() as u64, crc32fast::hash(&bytes)).to_vec();
        file.extend(bytes);
        let (mut agg2, mut judge2) = empty();
        decode(Path::new("s"), &file)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        assert!(!judge2.service_names().contains(&later));
        assert_eq!(alerts(&judge2), alerts(&judge));
    }

    #[test]
    fn a_snapshot_in_slices_while_batches_arrive_restores_each_series_once() {
        let (mut agg, judge) = empty();
        let idle = AggregateConfig::default().series_idle_timeout.as_millis() as u64;
        // Endpoints 0-59 go idle; 60-199 stay busy, some with two versions.
        for e in 0..200 {
            agg.record(&[on(e, "v1")], T0);
        }
        let mut t = T0 + idle - 1_000;
        for e in 60..200 {
            agg.record(&[on(e, "v1")], t);
            if e % 4 == 0 {
                agg.record(&[on(e, "v2")], t);
            }
        }
        let at_start = series(&agg);
        let (mut encoder, head) = Encoder::begin(&mut agg, t).unwrap();
        let mut file = head;
        // What each endpoint held when its slice ran.
        let mut expected = std::collections::BTreeMap::new();
        let mut round = 0;
        loop {
            let from = encoder.next;
            let slice = encoder.slice(&mut agg, &judge, &history(), 16).unwrap();
            file.extend_from_slice(&slice.bytes);
            if slice.last {
                break;
            }
            for p in from..encoder.next {
                let (k, versions) = agg.endpoint_at(p).unwrap();
                for (v, s) in versions.iter() {
                    expected.insert((k.endpoint.clone(), v.clone()), requests(s));
                }
            }
            // Between slices: every busy series gets a request, some
            // endpoints a new version, new endpoints come, and once the
            // idle ones expire (those not written yet are written empty).
            round += 1;
            t += 100;
            for e in 60..200 {
                agg.record(&[on(e, "v1")], t);
            }
            agg.record(&[on(round * 10, "v9"), on(1_000 + round, "v1")], t);
            if round == 3 {
                agg.expire(T0 + idle + 1);
                assert!(agg.series_count() < at_start.len());
            }
        }
        assert!(round >= 10, "{round}");
        let len = (file.len()) as u64;
        let crc = crc32fast::hash(&file);
        let mut bytes = header(len, crc).to_vec();
        bytes.extend_from_slice(&file);
        let (mut agg2, mut judge2) = empty();
        let summary = decode(Path::new("s"), &bytes)
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        let restored = series(&agg2);
        assert_eq!(restored, expected, "each series as its slice found it");
        assert_eq!(summary.series, restored.len());
        assert_eq!(agg2.series_count(), restored.len());
        // Every busy series there at the start is back, none twice (a map
        // of series could not tell): count them by the restored endpoints.
        let busy_at_start = at_start
            .keys()
            .filter(|(e, _)| e[2..].parse::<usize>().unwrap() >= 60);
        for key in busy_at_start {
            assert!(restored.contains_key(key), "{key:?} lost");
        }
        let listed: usize = agg2.endpoints().map(|(_, v)| v.len()).sum();
        assert_eq!(listed, restored.len(), "no series twice");
        assert!(agg2.endpoints().all(|(_, v)| !v.is_empty()));

        // Released: the emptied endpoints go at the next expiry.
        let held = agg.endpoint_count();
        agg.expire(t);
        assert!(agg.endpoint_count() < held);
        assert!(agg.endpoints().all(|(_, v)| !v.is_empty()));
    }

    #[tokio::test]
    async fn a_snapshot_given_up_keeps_the_previous_file_and_shutdown_writes_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut agg, judge, t) = incident();
        let charts = history();
        let mut s = Snapshotter::new(dir.path().to_owned());
        let whole = |s: &mut Snapshotter, agg: &mut Aggregator| {
            let mut snapshot = s.begin(agg, t).unwrap();
            while snapshot.step(agg, &judge, &charts, 1) == Step::Continue {}
        };
        whole(&mut s, &mut agg);
        s.in_flight.take().unwrap().await.unwrap();
        let first = fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(first, encode(&mut agg, &judge, &charts, t).unwrap());

        // A second one, cut short: given up, the first file stays.
        for e in 0..10 {
            agg.record(&[on(e, "v1")], t);
        }
        let mut partial = s.begin(&mut agg, t + 1).unwrap();
        assert_eq!(partial.step(&mut agg, &judge, &charts, 1), Step::Continue);
        partial.abort(&mut agg);
        s.in_flight.take().unwrap().await.unwrap();
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), first);
        assert!(!dir.path().join(TEMP_NAME).exists());

        // Shutdown in the middle of a third: the last snapshot is whole.
        let mut third = s.begin(&mut agg, t + 2).unwrap();
        assert_eq!(third.step(&mut agg, &judge, &charts, 1), Step::Continue);
        for e in 10..20 {
            agg.record(&[on(e, "v1")], t + 2);
        }
        s.finish(Some(third), &mut agg, &judge, &charts, t + 3)
            .await;
        assert!(s.in_flight.is_none());
        let last = fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(last, encode(&mut agg, &judge, &charts, t + 3).unwrap());
        let (mut agg2, mut judge2) = empty();
        read(dir.path(), 1 << 30)
            .unwrap()
            .unwrap()
            .apply(&mut agg2, &mut judge2, &mut history())
            .unwrap();
        assert_eq!(agg2.series_count(), 24);
        assert_eq!(series(&agg2), series(&agg));
    }

    #[tokio::test]
    async fn a_tick_during_a_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut agg, judge, t) = incident();
        let mut s = Snapshotter::new(dir.path().to_owned());
        let mut first = s.begin(&mut agg, t).unwrap();
        // The writer waits for the rest of the first.
        assert!(s.begin(&mut agg, t).is_none());
        assert_eq!(s.skipped, 1);
        while first.step(&mut agg, &judge, &history(), 1) == Step::Continue {}
        s.in_flight.take().unwrap().await.unwrap();
        assert!(s.begin(&mut agg, t).is_some());
    }
}
