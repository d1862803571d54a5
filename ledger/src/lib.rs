//! fleetlog-ledger: the append-only, blake3 hash-chained event log every fleetlog feature is
//! built on, stored in one redb file.
//!
//! Invariants:
//! - seqs are dense from 1; each record's `prev` is the previous record's hash (record 1's is
//!   derived from the ledger's random id); `ts` never decreases.
//! - an append is acknowledged only once it is durable: the redb commit holding it returned
//!   with `Durability::Immediate`, or (a writer holding the file exclusively) the write-ahead
//!   log frame holding it was `fdatasync`ed; one writer thread owns every write transaction.
//! - a read that begins after an append was acknowledged sees it, even while the writer leaves
//!   the batch's redb transaction open (`writer::Gate`).
//! - every writable open re-applies the write-ahead log's frames past redb's durable head
//!   before anything reads the file (`wal`).
//! - nothing is ever rewritten or deleted; a failed commit poisons the writer until reopen.
//! - only this crate touches redb, and only `codec` knows the byte layout of a record.
//! - projection snapshots are derived data, kept in files beside the ledger (`snapshots`), outside
//!   the chain and the writer's transactions: pruned freely, never trusted unless whole and ours.

mod chain;
mod clock;
mod codec;
mod disk;
mod error;
mod event;
mod export;
#[cfg(feature = "fault-injection")]
mod fault;
mod fields;
mod json;
pub mod limits;
pub mod priority;
mod reader;
mod sequencer;
mod snapshots;
mod storage;
mod tail;
mod time;
mod verify;
mod wal;
mod writer;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use chain::{Checkpoint, GENESIS_CONTEXT, LedgerId};
pub use clock::{Clock, LedgerTime, ManualClock, OpenedTime, SystemClock};
pub use codec::{ChainHash, EncodedEntry, FORMAT_VERSION, Record, RecordView, encode_entry};
pub use disk::{DiskUsage, FileUsage, disk_usage};
pub use error::Error;
pub use event::{Event, Outcome, SignalTarget};
pub use export::{EXPORT_FORMAT_VERSION, ExportHeader, ExportWriter};
#[cfg(feature = "fault-injection")]
pub use fault::FaultSwitch;
pub use fields::FieldProblem;
pub use json::Json;
pub use reader::Reader;
pub use sequencer::{AfterCommit, Batch, Job, KeyedAnswer, Sequencer};
pub use snapshots::{SnapshotStore, snapshot_dir};
pub use storage::{FILE_FORMAT_VERSION, Head};
pub use tail::{HeadFollower, Next, Subscription};
pub use time::{Timestamp, TimestampError};
pub use verify::{BreakKind, ChainBreak, VerifyOptions, VerifyReport};
pub use writer::{BATCH_EVENTS_BUCKETS, COMMIT_MICROS_BUCKETS, Receipt, WriterStats};

use storage::Store;
use tail::HeadWatch;
use writer::{IdempotencyKey, Request, WriterCounters, WriterHandle, WriterSetup};

/// Opens the file at `path` for writing (recovering its write-ahead log, if any) or, with
/// `create` and no file there, creates it.
fn open_db(path: &Path, create: bool, sharing: storage::Sharing) -> Result<redb::Database, Error> {
    match (create, path.exists()) {
        (true, false) => match storage::create_atomically(path, LedgerId::random()?, sharing) {
            // Another process created it first.
            Err(Error::AlreadyExists { .. }) => storage::open_writable(path, sharing),
            other => other,
        },
        _ => storage::open_writable(path, sharing),
    }
}

/// One event to append: who did it and what happened.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub actor: String,
    pub event: Event,
}

impl NewEvent {
    pub fn new(actor: impl Into<String>, event: Event) -> Self {
        NewEvent {
            actor: actor.into(),
            event,
        }
    }
}

/// An append that was accepted by the writer's queue; [`Pending::wait`] returns once it is
/// durable. Lets one thread keep many appends in flight.
#[must_use = "an append is only known to be durable once wait() returns Ok"]
pub struct Pending {
    receiver: crossbeam_channel::Receiver<Result<Vec<Receipt>, Error>>,
}

impl Pending {
    pub fn wait(self) -> Result<Vec<Receipt>, Error> {
        self.receiver.recv().map_err(|_| Error::WriterStopped)?
    }
}

struct Inner {
    reader: Reader,
    watch: Arc<HeadWatch>,
    ledger_id: LedgerId,
    writer: Option<WriterHandle>,
    counters: Arc<WriterCounters>,
    /// The writer's time; `None` when read-only.
    time: Option<Arc<LedgerTime>>,
    /// With a state machine attached, raw appends may only carry `custom` events.
    custom_only: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // The writer finishes what is queued, then stops.
            writer.close();
        }
        self.watch.close();
    }
}

/// A handle to one ledger file: cheap to clone and share between threads. The writer thread
/// stops when the last clone is dropped, after finishing the batch in flight; the file itself
/// closes once every [`Reader`] and [`Subscription`] taken from it is dropped too.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl Ledger {
    /// Creates a new, empty ledger at `path` (mode 0600) with a fresh random id. Of processes
    /// creating one path at once, exactly one succeeds; the others get
    /// [`Error::AlreadyExists`], and nobody ever opens a half-made file.
    pub fn create(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let path = path.as_ref();
        let db = storage::create_atomically(path, LedgerId::random()?, storage::Sharing::Shared)?;
        Self::start(path, db)
    }

    /// Opens an existing ledger for appending. Fails with [`Error::AlreadyOpen`] while another
    /// process is writing it.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let path = path.as_ref();
        Self::start(
            path,
            storage::open_writable(path, storage::Sharing::Shared)?,
        )
    }

    /// Opens the ledger at `path`, creating it first if it does not exist.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let path = path.as_ref();
        match path.exists() {
            true => Self::open(path),
            false => match Self::create(path) {
                // Another process created it first.
                Err(Error::AlreadyExists { .. }) => Self::open(path),
                other => other,
            },
        }
    }

    /// As [`Ledger::open_or_create`], but holding the file exclusively: no other process may
    /// open it, not even to read, and in exchange each append is acknowledged once it is in the
    /// write-ahead log beside the file (one small write and one `fdatasync`), with redb
    /// committing durably about once a second (see docs/architecture.md).
    pub fn open_or_create_exclusive(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let path = path.as_ref();
        let db = Arc::new(open_db(path, true, storage::Sharing::Private)?);
        let (reader, meta) = damage_as_error(path, || Self::check(path, Arc::clone(&db), true))?;
        let wal = wal::Wal::open(path, &meta.head)?;
        Self::spawn_writer(reader, meta, db, Arc::new(SystemClock), None, Some(wal))
    }

    /// Opens a ledger for reading only, beside a writer in another process if there is one.
    /// Runs the open check on the ledger's newest records.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let ledger = Self::open_for_audit(path)?;
        let meta = ledger.inner.reader.meta()?;
        storage::open_check(&ledger.inner.reader.store.begin_read()?, &meta)?;
        Ok(ledger)
    }

    /// Opens read-only without the open check, so that `verify` can report on a damaged file
    /// instead of refusing to open it.
    pub fn open_for_audit(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        let path = path.as_ref();
        damage_as_error(path, || Self::open_for_audit_unguarded(path))
    }

    fn open_for_audit_unguarded(path: &Path) -> Result<Ledger, Error> {
        let store = Store::ReadOnly(storage::open_read_only(path)?);
        let reader = Reader {
            store: Arc::new(store),
            path: Arc::new(path.to_owned()),
        };
        let meta = reader.meta()?;
        if wal::has_frames_to_recover(path, &meta.head)? {
            return Err(Error::NeedsRecovery {
                path: path.to_owned(),
            });
        }
        Ok(Ledger {
            inner: Arc::new(Inner {
                reader,
                watch: Arc::new(HeadWatch::new(meta.head, true)),
                ledger_id: meta.ledger_id,
                writer: None,
                counters: Arc::default(),
                time: None,
                custom_only: false,
            }),
        })
    }

    /// Opens (or, with `create`, creates) a ledger whose writer runs the state machine `make`
    /// builds. `make` gets a reader on the ledger and its head, to rebuild state (from a
    /// snapshot and the records after it) before the writer starts.
    ///
    /// With `verify_chain`, the whole chain is re-hashed before the writer starts (about 0.2 s
    /// per million records) and a broken one is refused with its first bad seq.
    pub fn open_with<S, E>(
        path: impl AsRef<Path>,
        create: bool,
        clock: Arc<dyn Clock>,
        verify_chain: bool,
        make: impl FnOnce(&Reader, Head) -> Result<S, E>,
    ) -> Result<Ledger, E>
    where
        S: Sequencer,
        E: From<Error>,
    {
        Self::open_with_access(path, create, false, clock, verify_chain, make)
    }

    /// As [`Ledger::open_with`]; with `exclusive`, no other process may open the file while
    /// this one has it, not even to read, and in exchange each batch is acknowledged from the
    /// write-ahead log (one in-place write and one fsync; see docs/architecture.md).
    pub fn open_with_access<S, E>(
        path: impl AsRef<Path>,
        create: bool,
        exclusive: bool,
        clock: Arc<dyn Clock>,
        verify_chain: bool,
        make: impl FnOnce(&Reader, Head) -> Result<S, E>,
    ) -> Result<Ledger, E>
    where
        S: Sequencer,
        E: From<Error>,
    {
        let path = path.as_ref();
        let sharing = match exclusive {
            true => storage::Sharing::Private,
            false => storage::Sharing::Shared,
        };
        let db = open_db(path, create, sharing)?;
        Self::start_with(path, db, exclusive, clock, verify_chain, make)
    }

    /// Starts the writer on an open database, with the state machine `make` builds.
    fn start_with<S, E>(
        path: &Path,
        db: redb::Database,
        exclusive: bool,
        clock: Arc<dyn Clock>,
        verify_chain: bool,
        make: impl FnOnce(&Reader, Head) -> Result<S, E>,
    ) -> Result<Ledger, E>
    where
        S: Sequencer,
        E: From<Error>,
    {
        let db = Arc::new(db);
        let (reader, meta) =
            damage_as_error(path, || Self::check(path, Arc::clone(&db), verify_chain))?;
        let sequencer = make(&reader, meta.head)?;
        // Only a writer no other process reads beside may acknowledge from the log: redb's
        // non-durable commits are invisible to other processes.
        let wal = match exclusive {
            true => Some(wal::Wal::open(path, &meta.head)?),
            false => None,
        };
        Ok(Self::spawn_writer(
            reader,
            meta,
            db,
            clock,
            Some(Box::new(sequencer)),
            wal,
        )?)
    }

    fn start(path: &Path, db: redb::Database) -> Result<Ledger, Error> {
        let db = Arc::new(db);
        let (reader, meta) = damage_as_error(path, || Self::check(path, Arc::clone(&db), true))?;
        Self::spawn_writer(reader, meta, db, Arc::new(SystemClock), None, None)
    }

    /// Reads the meta, runs the open check and, with `verify_chain`, verifies the whole chain:
    /// a writer never appends to (and a daemon never serves) a ledger whose history is broken.
    fn check(
        path: &Path,
        db: Arc<redb::Database>,
        verify_chain: bool,
    ) -> Result<(Reader, storage::Meta), Error> {
        let reader = Reader {
            store: Arc::new(Store::Writable(db, Arc::default())),
            path: Arc::new(path.to_owned()),
        };
        let txn = reader.store.begin_read()?;
        let meta = storage::read_meta(&txn, path)?;
        storage::open_check(&txn, &meta)?;
        drop(txn);
        if verify_chain {
            // Through a second, read-only handle with a small cache where the file allows one
            // (not when opened exclusively): the pass reads every page once.
            let one_pass = storage::open_for_one_pass(path).ok().map(|db| Reader {
                store: Arc::new(Store::ReadOnly(db)),
                path: Arc::clone(&reader.path),
            });
            let report = verify::verify(
                one_pass.as_ref().unwrap_or(&reader),
                VerifyOptions {
                    from: None,
                    threads: 0,
                    progress: None,
                },
            )?;
            if let Some(problem) = report.problem {
                return Err(Error::Corrupted {
                    seq: problem.seq,
                    problem: format!(
                        "{problem}. The chain is broken, so the ledger is not opened for writing; records before seq {} read with `fleetlog events --to {}`, and `--skip-verify` opens it as it is (not recommended)",
                        problem.seq,
                        problem.seq.saturating_sub(1)
                    ),
                });
            }
        }
        Ok((reader, meta))
    }

    fn spawn_writer(
        reader: Reader,
        meta: storage::Meta,
        db: Arc<redb::Database>,
        clock: Arc<dyn Clock>,
        sequencer: Option<Box<dyn Sequencer>>,
        wal: Option<wal::Wal>,
    ) -> Result<Ledger, Error> {
        let watch = Arc::new(HeadWatch::new(meta.head, false));
        let counters = Arc::<WriterCounters>::default();
        let custom_only = sequencer.is_some();
        let time = Arc::new(LedgerTime::start(clock, meta.head.ts));
        let gate = reader
            .store
            .gate()
            .cloned()
            .expect("a writer is only started on a writable store");
        let writer = writer::spawn(WriterSetup {
            db,
            gate,
            head: meta.head,
            watch: Arc::clone(&watch),
            counters: Arc::clone(&counters),
            time: Arc::clone(&time),
            sequencer,
            wal,
            queue_max: limits::WRITER_QUEUE_REQUESTS_MAX,
        })?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                reader,
                watch,
                ledger_id: meta.ledger_id,
                writer: Some(writer),
                counters,
                time: Some(time),
                custom_only,
            }),
        })
    }

    /// Queues a job for the writer's state machine. Blocks only when the writer's queue is
    /// full. Jobs queued together usually share one commit.
    pub fn send_job(&self, job: Box<dyn Job>) -> Result<(), Error> {
        self.job_writer()?.queue(Request::Job(job))
    }

    /// Runs a job now: on the calling thread if the writer is idle (its answer is then given
    /// before this returns), else queued like [`Ledger::send_job`]. For a caller that waits for
    /// the answer right away; one that sends many jobs before waiting should queue them, so
    /// they share a commit.
    pub fn run_job(&self, job: Box<dyn Job>) -> Result<(), Error> {
        self.job_writer()?.run_now(Request::Job(job))
    }

    fn job_writer(&self) -> Result<&WriterHandle, Error> {
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        match self.inner.custom_only {
            true => Ok(writer),
            false => Err(Error::NoSequencer),
        }
    }

    pub fn path(&self) -> &Path {
        self.inner.reader.path()
    }

    pub fn ledger_id(&self) -> LedgerId {
        self.inner.ledger_id
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// The time the next batch would be stamped with: ledger time (see [`LedgerTime`]), never
    /// before the newest record. A read-only handle has no writer and answers with the wall
    /// clock, never before the head as stored now.
    pub fn now(&self) -> Timestamp {
        match &self.inner.time {
            Some(time) => time.now().max(self.inner.watch.head().ts),
            None => {
                let head = self.inner.reader.meta().map(|meta| meta.head.ts);
                Timestamp::now().max(head.unwrap_or(Timestamp::MIN))
            }
        }
    }

    /// The writer's clock: how ledger time related to the wall when it opened, and the wall's
    /// offset from ledger time now. `None` when read-only.
    pub fn clock_report(&self) -> Option<(OpenedTime, i64)> {
        let time = self.inner.time.as_ref()?;
        Some((time.opened(), time.wall_offset_micros()))
    }

    /// What the writer has done since this handle opened the ledger (all zero when read-only).
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    /// Why writes are refused, if they are: a commit failed (disk full, I/O error) and the
    /// writer poisoned itself until the ledger is reopened.
    pub fn write_refusal(&self) -> Option<String> {
        self.inner.watch.poisoned()
    }

    /// A handle for reads, sharing this ledger's file.
    pub fn reader(&self) -> &Reader {
        &self.inner.reader
    }

    /// The newest committed record. For a read-only handle, as stored now (another process may
    /// be appending).
    pub fn head(&self) -> Result<Head, Error> {
        match self.is_read_only() {
            true => Ok(self.inner.reader.meta()?.head),
            false => Ok(self.inner.watch.head()),
        }
    }

    /// Appends one event and returns once it is durable.
    pub fn append(&self, actor: &str, event: &Event) -> Result<Receipt, Error> {
        let receipts = self.append_now(vec![encode_entry(actor, event)?], None)?;
        Ok(receipts[0])
    }

    /// Appends one event under an idempotency key: a retry with the same key and content
    /// returns the original receipt; the same key with other content is
    /// [`Error::IdempotencyConflict`].
    pub fn append_idempotent(
        &self,
        key: &str,
        actor: &str,
        event: &Event,
    ) -> Result<Receipt, Error> {
        let entries = vec![encode_entry(actor, event)?];
        let receipts = self.append_now(entries, Some(key.to_owned()))?;
        Ok(receipts[0])
    }

    /// Appends several events atomically (all or none), in order, with consecutive seqs.
    pub fn append_all(&self, events: &[NewEvent]) -> Result<Vec<Receipt>, Error> {
        let entries = events
            .iter()
            .map(|new| encode_entry(&new.actor, &new.event))
            .collect::<Result<Vec<_>, _>>()?;
        self.append_now(entries, None)
    }

    /// Appends and waits: committed on this thread when the writer is idle.
    fn append_now(
        &self,
        entries: Vec<EncodedEntry>,
        key: Option<String>,
    ) -> Result<Vec<Receipt>, Error> {
        let (writer, request, pending) = self.append_request(entries, key)?;
        writer.run_now(request)?;
        pending.wait()
    }

    /// Queues pre-encoded entries (committed atomically together) and returns without waiting
    /// for durability. Blocks only when the writer's queue is full.
    pub fn submit(
        &self,
        entries: Vec<EncodedEntry>,
        key: Option<String>,
    ) -> Result<Pending, Error> {
        let (writer, request, pending) = self.append_request(entries, key)?;
        writer.queue(request)?;
        Ok(pending)
    }

    /// Checks an append and makes its request, with the receiver its answer comes on.
    fn append_request(
        &self,
        entries: Vec<EncodedEntry>,
        key: Option<String>,
    ) -> Result<(&WriterHandle, Request, Pending), Error> {
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        if entries.is_empty() {
            return Err(Error::EmptyAppend);
        }
        if entries.len() > limits::REQUEST_EVENTS_MAX {
            return Err(Error::RequestTooLarge {
                events: entries.len(),
                limit: limits::REQUEST_EVENTS_MAX,
            });
        }
        if self.inner.custom_only
            && let Some(entry) = entries.iter().find(|entry| entry.kind() != "custom")
        {
            return Err(Error::RawAppendRefused { kind: entry.kind() });
        }
        let key = key
            .map(|key| IdempotencyKey::new(key, &entries))
            .transpose()?;
        let (reply, receiver) = crossbeam_channel::bounded(1);
        let request = Request::Append {
            entries,
            key,
            reply,
        };
        Ok((writer, request, Pending { receiver }))
    }

    /// Calls `listener` with the new head after every commit that moves it, in order, on the
    /// thread that committed, until the ledger closes (then it is dropped). It runs inside
    /// the writer's critical section: it must be quick and must not append or wait.
    pub fn on_commit(&self, listener: impl Fn(Head) + Send + Sync + 'static) {
        self.inner.watch.listen(Box::new(listener));
    }

    /// The committed head as it moves, without the records.
    pub fn follow_head(&self) -> HeadFollower {
        HeadFollower::new(Arc::clone(&self.inner.watch))
    }

    /// History from `from_seq`, then every new record as it commits.
    pub fn subscribe(&self, from_seq: u64) -> Subscription {
        Subscription::new(
            self.inner.reader.clone(),
            Arc::clone(&self.inner.watch),
            from_seq,
        )
    }

    /// Recomputes the chain; see [`VerifyReport`].
    pub fn verify(&self, options: VerifyOptions<'_>) -> Result<VerifyReport, Error> {
        damage_as_error(&self.inner.reader.path, || {
            verify::verify(&self.inner.reader, options)
        })
    }

    /// Writes the whole log as JSON Lines; returns the head it ends at.
    pub fn export_jsonl(
        &self,
        out: impl Write,
        progress: &dyn Fn(u64),
    ) -> Result<Checkpoint, Error> {
        export::export(&self.inner.reader, out, progress)
    }

    /// Creates a new ledger at `path` from a JSON Lines export, verifying every line; refuses the
    /// whole import, writing nothing, at the first line that does not verify.
    pub fn import_jsonl(
        path: impl AsRef<Path>,
        input: impl BufRead,
        progress: &dyn Fn(u64),
    ) -> Result<Checkpoint, Error> {
        export::import(path.as_ref(), input, progress)
    }
}

/// Runs `read`, turning a panic inside it into [`Error::Corrupted`] naming the file: redb
/// asserts on page structure, and a damaged page (a flipped page-type byte) must be a clear
/// error, not an abort.
fn damage_as_error<T>(path: &Path, read: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(Error::Corrupted {
                seq: 0,
                problem: format!(
                    "the storage layer failed reading {} ({what}): the file is damaged below the record level; restore it from an export",
                    path.display()
                ),
            })
        }
    }
}

/// The default ledger file name, relative to the working directory.
pub fn default_path() -> PathBuf {
    PathBuf::from("fleetlog.redb")
}
