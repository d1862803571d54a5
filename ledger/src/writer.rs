//! The one thread that writes. Appenders send requests over a bounded channel; the writer takes
//! whatever is waiting (bounded by events and bytes), appends it all in one redb transaction,
//! commits durably, and only then replies to each request. One fsync covers many requests, so
//! throughput rises with concurrency while latency stays about one commit.
//!
//! Invariants:
//! - seqs are dense and assigned here only; `ts` never decreases (one clock read per batch,
//!   clamped to the previous record's time).
//! - a reply is sent only after the commit that holds the request's events returned Ok.
//! - after any storage error the writer is poisoned: it fails the whole batch and refuses every
//!   later request, because redb refuses further writes after a failed commit and our in-memory
//!   head may no longer match the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use redb::{Database, ReadableTable, Table};

use crate::codec::{ChainHash, EncodedEntry, RecordView, decode_u64, encode_u64, seal};
use crate::error::Error;
use crate::event::Timestamp;
use crate::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX, IDEMPOTENCY_KEY_BYTES_MAX};
use crate::storage::{
    EVENTS, Head, IDEMPOTENCY, META, META_HEAD, begin_durable_write, encode_head,
};
use crate::tail::HeadWatch;

/// What an acknowledged append gets back: where its event sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub ts: Timestamp,
    pub hash: ChainHash,
}

pub(crate) type Reply = Sender<Result<Vec<Receipt>, Error>>;

/// Counters the writer keeps about its work, read without stopping it.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    commits: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    commit_micros_total: AtomicU64,
    commit_micros_max: AtomicU64,
}

/// A snapshot of the writer's counters since the ledger was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Durable commits made.
    pub commits: u64,
    /// Append requests committed (idempotent retries included).
    pub requests: u64,
    /// Events appended.
    pub events: u64,
    /// Time spent inside commits, in microseconds.
    pub commit_micros_total: u64,
    /// The slowest commit, in microseconds.
    pub commit_micros_max: u64,
}

impl WriterStats {
    /// Mean events per commit: how much group commit is batching.
    pub fn mean_batch_events(&self) -> f64 {
        match self.commits {
            0 => 0.0,
            commits => self.events as f64 / commits as f64,
        }
    }
}

impl WriterCounters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            commit_micros_total: self.commit_micros_total.load(Ordering::Relaxed),
            commit_micros_max: self.commit_micros_max.load(Ordering::Relaxed),
        }
    }

    fn record(&self, requests: usize, events: u64, commit_micros: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(commit_micros, Ordering::Relaxed);
        self.commit_micros_max
            .fetch_max(commit_micros, Ordering::Relaxed);
    }
}

/// Events that commit together, atomically, with an optional idempotency key.
pub(crate) struct Request {
    pub entries: Vec<EncodedEntry>,
    pub key: Option<IdempotencyKey>,
    pub reply: Reply,
}

impl Request {
    fn bytes(&self) -> usize {
        self.entries.iter().map(EncodedEntry::len).sum()
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

pub(crate) struct WriterHandle {
    pub sender: Sender<Request>,
    pub thread: JoinHandle<()>,
}

pub(crate) fn spawn(
    db: Arc<Database>,
    head: Head,
    watch: Arc<HeadWatch>,
    counters: Arc<WriterCounters>,
    queue_max: usize,
) -> Result<WriterHandle, Error> {
    let (sender, receiver) = crossbeam_channel::bounded(queue_max);
    let writer = Writer {
        db,
        receiver,
        head,
        watch,
        counters,
        poisoned: None,
        carry: None,
    };
    let thread = std::thread::Builder::new()
        .name("fleetlog-writer".to_owned())
        .spawn(move || writer.run())?;
    Ok(WriterHandle { sender, thread })
}

struct Writer {
    db: Arc<Database>,
    receiver: Receiver<Request>,
    head: Head,
    watch: Arc<HeadWatch>,
    counters: Arc<WriterCounters>,
    poisoned: Option<String>,
    /// A request taken from the channel that did not fit the previous batch.
    carry: Option<Request>,
}

/// Result of one batch: a reply per request, in order, and the new head.
type BatchOutcome = (Vec<Result<Vec<Receipt>, Error>>, Head);

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.carry.take().or_else(|| self.receiver.recv().ok()) {
            let batch = self.gather(first);
            self.commit(batch);
        }
    }

    /// Takes what is already waiting, without waiting for more: batching comes from load, never
    /// from a timer.
    fn gather(&mut self, first: Request) -> Vec<Request> {
        let mut events = first.entries.len();
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while events < BATCH_EVENTS_MAX && bytes < BATCH_BYTES_MAX {
            let next = match self.receiver.try_recv() {
                Ok(next) => next,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            if events + next.entries.len() > BATCH_EVENTS_MAX
                || bytes + next.bytes() > BATCH_BYTES_MAX
            {
                self.carry = Some(next);
                break;
            }
            events += next.entries.len();
            bytes += next.bytes();
            batch.push(next);
        }
        batch
    }

    fn commit(&mut self, batch: Vec<Request>) {
        if let Some(cause) = &self.poisoned {
            for request in batch {
                let _ = request.reply.send(Err(Error::WriterPoisoned {
                    cause: cause.clone(),
                }));
            }
            return;
        }
        match self.write(&batch) {
            Ok((replies, head)) => {
                if head != self.head {
                    self.head = head;
                    self.watch.publish(head);
                }
                for (request, reply) in batch.into_iter().zip(replies) {
                    // A caller that gave up waiting is not an error: its events are durable.
                    let _ = request.reply.send(reply);
                }
            }
            Err(error) => {
                let cause = error.to_string();
                self.poisoned = Some(cause.clone());
                self.watch.poison();
                for request in batch {
                    let _ = request.reply.send(Err(Error::WriterPoisoned {
                        cause: cause.clone(),
                    }));
                }
            }
        }
    }

    fn write(&self, batch: &[Request]) -> Result<BatchOutcome, Error> {
        let txn = begin_durable_write(&self.db)?;
        let mut head = self.head;
        let ts = Timestamp::now().max(head.ts);
        let mut replies = Vec::with_capacity(batch.len());
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut keys = txn.open_table(IDEMPOTENCY)?;
            // Keys first used earlier in this same batch are not in the table yet.
            let mut batch_keys: HashMap<&str, KeyUse> = HashMap::new();
            for request in batch {
                if let Some(key) = &request.key {
                    let earlier = match batch_keys.get(key.key.as_str()) {
                        Some((digest, receipts)) => Some((*digest, receipts.clone())),
                        None => lookup_key(&keys, &events, &key.key)?,
                    };
                    if let Some((digest, receipts)) = earlier {
                        replies.push(match digest == key.digest {
                            true => Ok(receipts),
                            false => Err(Error::IdempotencyConflict {
                                key: key.key.clone(),
                                seq: receipts.first().map_or(0, |receipt| receipt.seq),
                            }),
                        });
                        continue;
                    }
                }
                let mut receipts = Vec::with_capacity(request.entries.len());
                for entry in &request.entries {
                    let seq = head.seq + 1;
                    let (value, hash) = seal(&head.hash, seq, ts, entry);
                    events.insert(seq, value.as_slice())?;
                    head = Head { seq, hash, ts };
                    receipts.push(Receipt { seq, ts, hash });
                }
                if let Some(key) = &request.key {
                    let mut value = [0u8; 48];
                    value[..8].copy_from_slice(&encode_u64(receipts[0].seq));
                    value[8..16].copy_from_slice(&encode_u64(receipts.len() as u64));
                    value[16..].copy_from_slice(&key.digest);
                    keys.insert(key.key.as_str(), value.as_slice())?;
                    batch_keys.insert(&key.key, (key.digest, receipts.clone()));
                }
                replies.push(Ok(receipts));
            }
        }
        if head == self.head {
            // Only idempotent retries: nothing to make durable.
            txn.abort()?;
            return Ok((replies, head));
        }
        txn.open_table(META)?
            .insert(META_HEAD, encode_head(&head).as_slice())?;
        let started = Instant::now();
        txn.commit()?;
        let commit_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters
            .record(batch.len(), head.seq - self.head.seq, commit_micros);
        Ok((replies, head))
    }
}

/// The content digest an idempotency key was first used for, and that append's receipts.
type KeyUse = ([u8; 32], Vec<Receipt>);

/// How `key` was first used, if it was.
fn lookup_key(
    keys: &Table<&str, &[u8]>,
    events: &Table<u64, &[u8]>,
    key: &str,
) -> Result<Option<KeyUse>, Error> {
    let Some(value) = keys.get(key)? else {
        return Ok(None);
    };
    let value = value.value();
    let corrupted = |problem: &str| Error::Corrupted {
        seq: 0,
        problem: format!("idempotency entry {key:?}: {problem}"),
    };
    if value.len() != 48 {
        return Err(corrupted("has the wrong length"));
    }
    let first = decode_u64(&value[..8]).ok_or_else(|| corrupted("bad seq"))?;
    let count = decode_u64(&value[8..16]).ok_or_else(|| corrupted("bad count"))?;
    let digest: [u8; 32] = value[16..]
        .try_into()
        .map_err(|_| corrupted("bad digest"))?;
    let mut receipts = Vec::with_capacity(count as usize);
    for seq in first..first + count {
        let stored = events
            .get(seq)?
            .ok_or_else(|| corrupted(&format!("names seq {seq}, which is missing")))?;
        let view = RecordView::new(stored.value()).map_err(|problem| Error::Corrupted {
            seq,
            problem: problem.to_string(),
        })?;
        let (_, ts) = view.seq_ts().map_err(|problem| Error::Corrupted {
            seq,
            problem: problem.to_string(),
        })?;
        receipts.push(Receipt {
            seq,
            ts,
            hash: view.stored_hash(),
        });
    }
    Ok(Some((digest, receipts)))
}
