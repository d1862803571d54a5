//! The writer: one state, behind one lock, that owns every write transaction. Appenders hand it
//! requests; whoever holds the lock takes what is waiting (bounded by events and bytes), appends
//! it all in one redb transaction, commits durably, and only then replies to each request. One
//! fsync covers many requests, so throughput rises with concurrency while latency stays about
//! one commit.
//!
//! Who commits: a caller that is about to wait for its answer and finds the writer idle (lock
//! free, queue empty, the last batch a single request) commits its request on its own thread
//! ([`WriterHandle::run_now`]). That
//! saves two thread wake-ups per request, which on a small virtual machine are a large part of
//! one durable operation's latency. Everything else goes through the bounded queue to the
//! writer thread, which also commits at the sequencer's deadlines (expiries) and at close.
//! Under load the lock is busy and the queue is not empty, so the writer thread leads and group
//! commit works as before.
//!
//! Acknowledged before visible: with a write-ahead log, a batch is acknowledged once its frame
//! is durable, and its redb transaction is left open for the next batches to continue instead
//! of being committed (about 30 µs per batch, a tenth of one command's latency). Readers in this
//! process commit it, non-durably, before they read ([`Gate::settle`]); a checkpoint or close
//! commits it durably. Nothing else reads redb while the file is held exclusively.
//!
//! Invariants:
//! - seqs are dense and assigned here only; `ts` never decreases (one clock read per batch,
//!   clamped to the previous record's time).
//! - a reply is sent only after the commit that holds the request's events returned Ok.
//! - after any storage error the writer is poisoned: it fails the whole batch and refuses every
//!   later request, because redb refuses further writes after a failed commit and our in-memory
//!   head may no longer match the file. A panic while committing (a bug) stops the writer: the
//!   lock is then poisoned and every later request fails as if the writer had stopped.
//! - the writer thread never sleeps past a deadline a caller's commit created: such a commit
//!   nudges it.
//! - whenever the writer's lock is free, its open transaction holds acknowledged batches only,
//!   and the gate says so before any of them is acknowledged: a read that starts after an
//!   acknowledgement sees it. Nothing run under the writer's lock reads through a `Reader`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use redb::{Database, Durability, WriteTransaction};

use crate::clock::LedgerTime;
use crate::codec::{ChainHash, EncodedEntry, Record, decode_entry, encode_u64};
use crate::error::Error;
use crate::event::Timestamp;
use crate::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX, IDEMPOTENCY_KEY_BYTES_MAX};
use crate::sequencer::{AfterCommit, Batch, Job, Sequencer};
use crate::storage::{Head, META, META_HEAD, Tables, begin_durable_write, encode_head};
use crate::tail::HeadWatch;
use crate::wal::{Redo, Wal};

mod stats;

pub(crate) use stats::WriterCounters;
pub use stats::{BATCH_EVENTS_BUCKETS, COMMIT_MICROS_BUCKETS, WriterStats};

/// What an acknowledged append gets back: where its event sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub ts: Timestamp,
    pub hash: ChainHash,
}

pub(crate) type Reply = Sender<Result<Vec<Receipt>, Error>>;

/// What appenders and command handles send the writer.
pub(crate) enum Request {
    /// Events that commit together, atomically, with an optional idempotency key.
    Append {
        entries: Vec<EncodedEntry>,
        key: Option<IdempotencyKey>,
        reply: Reply,
    },
    /// A command for the sequencer.
    Job(Box<dyn Job>),
    /// Wakes the writer thread to recompute its deadline (a caller's commit set an earlier one).
    Tick,
}

impl Request {
    /// (events, bytes) this request adds to a batch; a job counts as one small event.
    fn weight(&self) -> (usize, usize) {
        match self {
            Request::Append { entries, .. } => {
                (entries.len(), entries.iter().map(EncodedEntry::len).sum())
            }
            Request::Job(_) => (1, 256),
            Request::Tick => (0, 0),
        }
    }

    fn fail(self, error: Error) {
        match self {
            Request::Append { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Job(job) => job.reject(error),
            Request::Tick => {}
        }
    }
}

/// A client-chosen key and the digest of the content it was first used for.
pub(crate) struct IdempotencyKey {
    pub key: String,
    pub digest: [u8; 32],
}

impl IdempotencyKey {
    pub(crate) fn new(key: String, entries: &[EncodedEntry]) -> Result<Self, Error> {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(Error::InvalidIdempotencyKey {
                key,
                problem: format!("must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            });
        }
        let mut hasher = blake3::Hasher::new();
        for entry in entries {
            hasher.update(&encode_u64(entry.bytes.len() as u64));
            hasher.update(&entry.bytes);
        }
        Ok(IdempotencyKey {
            key,
            digest: *hasher.finalize().as_bytes(),
        })
    }
}

/// Where readers learn that acknowledged batches wait in the writer's open transaction, and how
/// they make them visible first.
#[derive(Default)]
pub(crate) struct Gate {
    /// Set before a batch left in the open transaction is acknowledged; cleared once that
    /// transaction is committed.
    pending: AtomicBool,
    writer: OnceLock<Weak<Mutex<Writer>>>,
}

impl Gate {
    /// Commits the writer's open transaction, if it holds acknowledged batches, so that a read
    /// transaction begun after this returns sees them. One atomic load when nothing waits.
    pub(crate) fn settle(&self) -> Result<(), Error> {
        if !self.pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(core) = self.writer.get().and_then(Weak::upgrade) else {
            // The writer stopped without committing them (its close failed): they are in the
            // write-ahead log, and the next writable open re-applies them.
            return Err(Error::WriterStopped);
        };
        let Ok(mut writer) = core.lock() else {
            return Err(Error::WriterStopped);
        };
        writer.make_visible()
    }
}

/// The running writer: its queue, its lock, and the thread behind them.
pub(crate) struct WriterHandle {
    sender: Sender<Request>,
    core: Arc<Mutex<Writer>>,
    thread: JoinHandle<()>,
}

impl WriterHandle {
    /// Queues `request` for the writer thread. Blocks only when the queue is full. For callers
    /// that keep many requests in flight: each queued request joins the next batch.
    pub(crate) fn queue(&self, request: Request) -> Result<(), Error> {
        self.sender.send(request).map_err(|_| Error::WriterStopped)
    }

    /// Commits `request` on the calling thread if the writer is idle, else queues it. For a
    /// caller that waits for the answer right away: the reply is then already there. Returns
    /// when the request is answered (committed on this thread) or queued.
    pub(crate) fn run_now(&self, request: Request) -> Result<(), Error> {
        let idle = match self.core.try_lock() {
            // Queued requests came first, and the writer thread is already on its way to them.
            // Under load (the last batch held several requests) a batch of one would only
            // split group commit and hold this thread for a commit: queue instead.
            Ok(writer) if self.sender.is_empty() && !writer.under_load => Some(writer),
            Ok(_) | Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(_)) => return Err(Error::WriterStopped),
        };
        // Queued only once the lock is let go: a full queue blocks, and only the writer thread,
        // which needs the lock, empties it.
        let Some(mut writer) = idle else {
            return self.queue(request);
        };
        writer.commit(vec![request]);
        let nudge = writer.deadline_moved_earlier();
        drop(writer);
        if nudge {
            // Full means the writer thread has work and will recompute its deadline anyway.
            let _ = self.sender.try_send(Request::Tick);
        }
        Ok(())
    }

    /// Closes the queue and waits for the writer to finish what is queued and stop.
    pub(crate) fn close(self) {
        drop(self.sender);
        let _ = self.thread.join();
    }
}

/// Everything the writer starts with.
pub(crate) struct WriterSetup {
    pub db: Arc<Database>,
    /// Shared with the readers of the same store.
    pub gate: Arc<Gate>,
    pub head: Head,
    pub watch: Arc<HeadWatch>,
    pub counters: Arc<WriterCounters>,
    pub time: Arc<LedgerTime>,
    pub sequencer: Option<Box<dyn Sequencer>>,
    /// With a write-ahead log, batches are acknowledged from it (see `wal`).
    pub wal: Option<Wal>,
    pub queue_max: usize,
}

pub(crate) fn spawn(setup: WriterSetup) -> Result<WriterHandle, Error> {
    let (sender, receiver) = crossbeam_channel::bounded(setup.queue_max);
    let gate = setup.gate;
    let core = Arc::new(Mutex::new(Writer {
        db: setup.db,
        gate: Arc::clone(&gate),
        open: None,
        head: setup.head,
        watch: setup.watch,
        counters: setup.counters,
        time: setup.time,
        sequencer: setup.sequencer,
        wal: setup.wal,
        poisoned: None,
        sleeps_until: None,
        under_load: false,
    }));
    // Set once per writer: a store gets one writer in its life.
    let _ = gate.writer.set(Arc::downgrade(&core));
    let thread_core = Arc::clone(&core);
    let thread = std::thread::Builder::new()
        .name("fleetlog-writer".to_owned())
        .spawn(move || run(&thread_core, &receiver))?;
    Ok(WriterHandle {
        sender,
        core,
        thread,
    })
}

/// The writer thread: commits what is queued, and ticks the sequencer at its deadlines.
fn run(core: &Mutex<Writer>, receiver: &Receiver<Request>) {
    // A request taken from the queue that did not fit the previous batch.
    let mut carry = None;
    loop {
        let wake = match carry.take() {
            Some(request) => Wake::Request(request),
            None => {
                let Ok(mut writer) = core.lock() else { return };
                let deadline = writer.next_deadline();
                drop(writer);
                wait(receiver, deadline)
            }
        };
        // A poisoned lock means a commit panicked: nothing is trusted any more, so stop; the
        // queue closes with this thread and every later request fails as stopped.
        let Ok(mut writer) = core.lock() else { return };
        match wake {
            Wake::Request(first) => {
                let batch = gather(first, receiver, &mut carry);
                writer.commit(batch);
            }
            Wake::Deadline => writer.commit(Vec::new()),
            Wake::Closed => {
                writer.close();
                return;
            }
        }
    }
}

/// Blocks for the next request, or until `deadline` (how long from now) passes.
fn wait(receiver: &Receiver<Request>, deadline: Option<Duration>) -> Wake {
    let received = match deadline {
        None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        Some(wait) => receiver.recv_timeout(wait),
    };
    match received {
        Ok(request) => Wake::Request(request),
        Err(RecvTimeoutError::Timeout) => Wake::Deadline,
        Err(RecvTimeoutError::Disconnected) => Wake::Closed,
    }
}

/// Takes what is already waiting, without waiting for more: batching comes from load, never
/// from a timer. A request that does not fit is left in `carry` for the next batch.
fn gather(
    first: Request,
    receiver: &Receiver<Request>,
    carry: &mut Option<Request>,
) -> Vec<Request> {
    let (mut events, mut bytes) = first.weight();
    let mut batch = vec![first];
    while events < BATCH_EVENTS_MAX && bytes < BATCH_BYTES_MAX {
        let next = match receiver.try_recv() {
            Ok(next) => next,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        };
        let (next_events, next_bytes) = next.weight();
        if events + next_events > BATCH_EVENTS_MAX || bytes + next_bytes > BATCH_BYTES_MAX {
            *carry = Some(next);
            break;
        }
        events += next_events;
        bytes += next_bytes;
        batch.push(next);
    }
    batch
}

struct Writer {
    db: Arc<Database>,
    gate: Arc<Gate>,
    /// With a write-ahead log: the transaction holding batches acknowledged from it and not yet
    /// committed to redb; the next batch continues it.
    open: Option<WriteTransaction>,
    head: Head,
    watch: Arc<HeadWatch>,
    counters: Arc<WriterCounters>,
    time: Arc<LedgerTime>,
    sequencer: Option<Box<dyn Sequencer>>,
    wal: Option<Wal>,
    poisoned: Option<String>,
    /// The deadline the writer thread last went to sleep until (`None`: no deadline).
    sleeps_until: Option<Timestamp>,
    /// The last batch held more than one request: others are committing too.
    under_load: bool,
}

/// Why the writer thread woke up.
enum Wake {
    Request(Request),
    /// The sequencer's next deadline passed.
    Deadline,
    /// Every sender is gone: the ledger is closing.
    Closed,
}

/// A batch that did not commit, with every reply still owed so each can be failed.
struct Failed {
    error: Error,
    replies: Vec<Reply>,
    after_commit: Vec<AfterCommit>,
}

/// What a committed batch hands back: a reply per raw append, in order.
struct Written {
    replies: Vec<(Reply, Result<Vec<Receipt>, Error>)>,
    records: Vec<Record>,
    after_commit: Vec<AfterCommit>,
    head: Head,
}

impl Writer {
    /// Finishes the sequencer's work and makes everything durable in redb, at close.
    fn close(&mut self) {
        if let Some(sequencer) = self.sequencer.as_mut() {
            sequencer.shutdown();
        }
        if self.poisoned.is_none()
            && let Err(error) = self.checkpoint_on_close()
        {
            // Nothing is lost: the batches are in the write-ahead log, and the next writable
            // open re-applies them.
            self.watch.poison(error.to_string());
        }
    }

    /// Ledger time now, and the sequencer's next deadline (none once poisoned: nothing more
    /// will be written).
    fn deadline(&self) -> (Timestamp, Option<Timestamp>) {
        let now = self.time.now().max(self.head.ts);
        let deadline = match &self.poisoned {
            None => self.sequencer.as_ref().and_then(|s| s.next_deadline(now)),
            Some(_) => None,
        };
        (now, deadline)
    }

    /// How long the writer thread may sleep before the sequencer's next deadline (`None`:
    /// until a request comes); remembered so a caller's commit can tell if it moved earlier.
    fn next_deadline(&mut self) -> Option<Duration> {
        let (now, deadline) = self.deadline();
        self.sleeps_until = deadline;
        deadline.map(|deadline| {
            let micros = deadline.as_micros().saturating_sub(now.as_micros());
            Duration::from_micros(u64::try_from(micros).unwrap_or(0))
        })
    }

    /// Whether the sequencer now has a deadline before the one the writer thread sleeps until
    /// (a caller's commit parked a wait or took a lease); if so, it is now remembered as such.
    fn deadline_moved_earlier(&mut self) -> bool {
        let Some(next) = self.deadline().1 else {
            return false;
        };
        let earlier = self.sleeps_until.is_none_or(|until| next < until);
        if earlier {
            self.sleeps_until = Some(next);
        }
        earlier
    }

    /// Makes every batch acknowledged from the write-ahead log durable in redb too, so that
    /// the closed file needs no recovery and read-only opens see everything.
    fn checkpoint_on_close(&mut self) -> Result<(), Error> {
        let Some(wal) = self.wal.as_mut().filter(|wal| wal.has_frames()) else {
            return Ok(());
        };
        let mut txn = match self.open.take() {
            Some(txn) => txn,
            None => begin_durable_write(&self.db)?,
        };
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.commit()?;
        self.gate.pending.store(false, Ordering::Release);
        wal.checkpointed(&self.head);
        self.counters.checkpointed();
        Ok(())
    }

    /// After a storage error: every later request fails, naming `cause` (see the invariants).
    fn poison(&mut self, cause: &str) {
        self.poisoned = Some(cause.to_owned());
        self.watch.poison(cause.to_owned());
    }

    /// Commits the open transaction, non-durably (its batches are durable in the write-ahead
    /// log), so that readers see what was acknowledged.
    fn make_visible(&mut self) -> Result<(), Error> {
        let Some(txn) = self.open.take() else {
            // Either nothing waits (another reader just committed it), or the batch after them
            // failed and took the transaction with it: the writer is poisoned, and only a
            // reopen (which re-applies the log) shows them.
            return match (&self.poisoned, self.gate.pending.load(Ordering::Acquire)) {
                (Some(cause), true) => Err(Error::WriterPoisoned {
                    cause: cause.clone(),
                }),
                _ => Ok(()),
            };
        };
        if let Err(error) = txn.commit() {
            let cause = Error::from(error).to_string();
            self.poison(&cause);
            return Err(Error::WriterPoisoned { cause });
        }
        self.gate.pending.store(false, Ordering::Release);
        Ok(())
    }

    fn commit(&mut self, batch: Vec<Request>) {
        // A nudge is not a request: a batch of one request and a nudge is still unloaded.
        let requests = batch.iter().filter(|r| !matches!(r, Request::Tick)).count();
        self.under_load = requests > 1;
        if let Some(cause) = &self.poisoned {
            for request in batch {
                request.fail(Error::WriterPoisoned {
                    cause: cause.clone(),
                });
            }
            return;
        }
        match self.write(batch) {
            Ok(written) => {
                if written.head != self.head {
                    self.head = written.head;
                    self.watch.publish(written.head);
                }
                if let Some(sequencer) = self.sequencer.as_mut()
                    && !written.records.is_empty()
                {
                    sequencer.committed(&written.records);
                }
                for (reply, result) in written.replies {
                    // A caller that gave up waiting is not an error: its events are durable.
                    let _ = reply.send(result);
                }
                for after_commit in written.after_commit {
                    after_commit(Ok(()));
                }
            }
            Err(failed) => {
                let Failed {
                    error,
                    replies,
                    after_commit,
                } = *failed;
                let cause = error.to_string();
                self.poison(&cause);
                for reply in replies {
                    let _ = reply.send(Err(Error::WriterPoisoned {
                        cause: cause.clone(),
                    }));
                }
                let error = Error::WriterPoisoned { cause };
                for after_commit in after_commit {
                    after_commit(Err(&error));
                }
            }
        }
    }

    /// Stages the whole batch in one transaction and commits it. On failure, hands back every
    /// reply still owed so each can be failed.
    fn write(&mut self, batch: Vec<Request>) -> Result<Written, Box<Failed>> {
        // Batches acknowledged earlier and not yet visible: this one continues their
        // transaction. If it fails, they go with it (still durable in the log).
        let carried = self.open.is_some();
        let txn = match self.open.take() {
            Some(txn) => Ok(txn),
            None => begin_durable_write(&self.db),
        };
        let txn = match txn {
            Ok(txn) => txn,
            Err(error) => return Err(fail_all(error, batch)),
        };
        let ts = self.time.now().max(self.head.ts);
        let mut tables = match Tables::open(&txn) {
            Ok(tables) => tables,
            Err(error) => return Err(fail_all(error.into(), batch)),
        };
        let mut stage = Batch::new(
            ts,
            self.head,
            &mut tables.events,
            &mut tables.keys,
            crate::sequencer::CommandKeys {
                answers: &mut tables.answers,
                by_time: &mut tables.by_time,
            },
            self.wal.as_ref().map(|_| Redo::default()),
        );
        // Keys past their window go a few at a time; a failure here poisons like any write.
        let pruned = stage.prune_command_keys();
        let mut replies = Vec::new();
        let staged = pruned.and_then(|()| self.stage(batch, &mut stage, &mut replies));
        let failure = staged.err().or_else(|| stage.take_failure());
        let (head, records, after_commit, redo) = stage.into_parts();
        drop(tables);
        let fail = |error: Error, replies: Vec<(Reply, Result<Vec<Receipt>, Error>)>, after| {
            Box::new(Failed {
                error,
                replies: replies.into_iter().map(|(reply, _)| reply).collect(),
                after_commit: after,
            })
        };
        if let Some(error) = failure {
            return Err(fail(error, replies, after_commit));
        }
        if head == self.head {
            // Nothing new (idempotent retries, rejected commands, a tick with nothing due).
            // Its own writes, if any (keys pruned, a rejection's answer), are not in the log; in
            // a carried transaction they stay, as if a later batch had made them.
            if carried {
                self.open = Some(txn);
                return Ok(Written {
                    replies,
                    records,
                    after_commit,
                    head,
                });
            }
            return match txn.abort() {
                Ok(()) => Ok(Written {
                    replies,
                    records,
                    after_commit,
                    head,
                }),
                Err(error) => Err(fail(error.into(), replies, after_commit)),
            };
        }
        let finish = || -> Result<(), Error> {
            let mut txn = txn;
            txn.open_table(META)?
                .insert(META_HEAD, encode_head(&head).as_slice())?;
            let started = Instant::now();
            match (self.wal.as_mut(), redo.as_ref()) {
                (Some(wal), Some(redo)) if !wal.checkpoint_due(redo) => {
                    // Durable once the frame is. redb's commit would only make it visible:
                    // left to the next reader, checkpoint or close (see `Gate`).
                    txn.set_durability(Durability::None)?;
                    wal.append(&self.head, &head, redo)?;
                    self.open = Some(txn);
                    self.gate.pending.store(true, Ordering::Release);
                }
                (Some(wal), _) => {
                    txn.set_durability(Durability::Immediate)?;
                    // Recovery after a crash then loads the allocator state instead of
                    // rebuilding it from every tree.
                    txn.set_quick_repair(true);
                    txn.commit()?;
                    self.gate.pending.store(false, Ordering::Release);
                    wal.checkpointed(&head);
                    self.counters.checkpointed();
                }
                (None, _) => txn.commit()?,
            }
            let commit_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters
                .record(replies.len(), head.seq - self.head.seq, commit_micros);
            Ok(())
        };
        match finish() {
            Ok(()) => Ok(Written {
                replies,
                records,
                after_commit,
                head,
            }),
            Err(error) => Err(fail(error, replies, after_commit)),
        }
    }

    /// Runs the sequencer's tick, then every request, into `stage`.
    fn stage(
        &mut self,
        batch: Vec<Request>,
        stage: &mut Batch<'_, '_>,
        replies: &mut Vec<(Reply, Result<Vec<Receipt>, Error>)>,
    ) -> Result<(), Error> {
        if let Some(sequencer) = self.sequencer.as_mut() {
            sequencer.tick(stage);
        }
        // Keys first used earlier in this same batch are not in the table yet.
        let mut batch_keys: HashMap<String, KeyUse> = HashMap::new();
        for request in batch {
            match request {
                Request::Job(job) => match self.sequencer.as_mut() {
                    Some(sequencer) => job.run(sequencer.as_any(), stage),
                    None => job.reject(Error::NoSequencer),
                },
                Request::Append {
                    entries,
                    key,
                    reply,
                } => {
                    let result = self.stage_append(&entries, key, stage, &mut batch_keys)?;
                    replies.push((reply, result));
                }
                Request::Tick => {}
            }
            if let Some(failure) = stage.take_failure() {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Stages one raw append; the outer error is a storage failure, the inner one the reply.
    fn stage_append(
        &mut self,
        entries: &[EncodedEntry],
        key: Option<IdempotencyKey>,
        stage: &mut Batch<'_, '_>,
        batch_keys: &mut HashMap<String, KeyUse>,
    ) -> Result<Result<Vec<Receipt>, Error>, Error> {
        if let Some(key) = &key {
            let earlier = match batch_keys.get(key.key.as_str()) {
                Some(found) => Some(found.clone()),
                None => stage.lookup_key(&key.key)?,
            };
            if let Some((digest, receipts)) = earlier {
                return Ok(match digest == key.digest {
                    true => Ok(receipts),
                    false => Err(Error::IdempotencyConflict {
                        key: key.key.clone(),
                        seq: receipts.first().map_or(0, |receipt| receipt.seq),
                    }),
                });
            }
        }
        let mut receipts = Vec::with_capacity(entries.len());
        for entry in entries {
            let seq = stage.next_seq();
            let prev = stage.head().hash;
            let hash = stage.insert(seq, &prev, entry)?;
            let ts = stage.now();
            receipts.push(Receipt { seq, ts, hash });
            if let Some(sequencer) = self.sequencer.as_mut() {
                let (actor, event) = decode_entry(entry).map_err(|problem| Error::Corrupted {
                    seq,
                    problem: problem.to_string(),
                })?;
                let record = Record {
                    seq,
                    ts,
                    actor,
                    event,
                    prev,
                    hash,
                };
                sequencer.observe(&record);
                stage.push_record(record);
            }
        }
        if let Some(key) = key {
            stage.remember_key(&key, &receipts)?;
            batch_keys.insert(key.key, (key.digest, receipts.clone()));
        }
        Ok(Ok(receipts))
    }
}

fn fail_all(error: Error, batch: Vec<Request>) -> Box<Failed> {
    let mut replies = Vec::new();
    for request in batch {
        match request {
            Request::Append { reply, .. } => replies.push(reply),
            Request::Job(job) => job.reject(Error::WriterPoisoned {
                cause: error.to_string(),
            }),
            Request::Tick => {}
        }
    }
    Box::new(Failed {
        error,
        replies,
        after_commit: Vec::new(),
    })
}

/// The content digest an idempotency key was first used for, and that append's receipts.
pub(crate) type KeyUse = ([u8; 32], Vec<Receipt>);
