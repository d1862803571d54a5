//! The seam that lets a state machine decide, inside the writer's sequence, which events a
//! command becomes. The ledger knows nothing about commands: a [`Sequencer`] lives on the writer
//! thread, and typed handles send it [`Job`]s that run there with a [`Batch`] to stage events in.
//!
//! Invariants:
//! - jobs run one at a time, in arrival order, against state that includes every event staged
//!   before them (in earlier batches or earlier in this one), so two jobs can never both win.
//! - a job's events are staged all or none ([`Batch::append`] checks every event before
//!   inserting any).
//! - replies registered with [`Batch::after_commit`] run only once the batch's commit returned:
//!   with `Ok` after a durable commit, with the error otherwise. Nothing is acknowledged early.
//! - [`Sequencer::committed`] sees each committed batch's records before any of its replies run,
//!   so a client that got a reply and then queries sees its own write.

use std::any::Any;

use redb::{ReadableTable, Table};

use crate::codec::{ChainHash, Record, RecordView, decode_u64, encode_entry, encode_u64, seal};
use crate::error::Error;
use crate::event::Timestamp;
use crate::storage::Head;
use crate::wal::Redo;
use crate::writer::{IdempotencyKey, KeyUse, Receipt};

/// A state machine driven by the writer thread.
pub trait Sequencer: Send + 'static {
    /// Time-driven work due at or before `batch.now()` (expiries, waiter timeouts). Runs at the
    /// start of every batch, and on its own when [`Sequencer::next_deadline`] passes.
    fn tick(&mut self, batch: &mut Batch<'_, '_>);

    /// The earliest time [`Sequencer::tick`] will have work, given the writer's clock reads
    /// `now`; the writer wakes then.
    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp>;

    /// A raw append (not a command) was staged: fold it into the working state.
    fn observe(&mut self, record: &Record);

    /// A batch committed durably: its records may now be shown to readers.
    fn committed(&mut self, records: &[Record]);

    /// The writer is stopping: answer every request still waiting.
    fn shutdown(&mut self);

    /// For [`Job`]s, which know the concrete type.
    fn as_any(&mut self) -> &mut dyn Any;
}

/// Work for the sequencer, sent from a typed handle and run on the writer thread.
pub trait Job: Send {
    fn run(self: Box<Self>, sequencer: &mut dyn Any, batch: &mut Batch<'_, '_>);

    /// The job will not run (the writer is poisoned or stopping).
    fn reject(self: Box<Self>, error: Error);
}

/// A reply to send once the batch's fate is known.
pub type AfterCommit = Box<dyn FnOnce(Result<(), &Error>) + Send>;

/// The tables behind command idempotency keys.
pub(crate) struct CommandKeys<'txn, 'table> {
    pub answers: &'table mut Table<'txn, &'static str, &'static [u8]>,
    pub by_time: &'table mut Table<'txn, (u64, &'static str), ()>,
}

/// The answer a command key was first used for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedAnswer {
    /// Digest of the command the key was first used with.
    pub digest: [u8; 32],
    pub first_used: Timestamp,
    /// The answer, as the sequencer encoded it.
    pub answer: Vec<u8>,
}

/// The transaction being built: stage events, and register replies for after the commit.
pub struct Batch<'txn, 'table> {
    now: Timestamp,
    head: Head,
    events: &'table mut Table<'txn, u64, &'static [u8]>,
    keys: &'table mut Table<'txn, &'static str, &'static [u8]>,
    command_keys: CommandKeys<'txn, 'table>,
    records: Vec<Record>,
    after_commit: Vec<AfterCommit>,
    failure: Option<Error>,
    /// Every table write, for the write-ahead log (only when the writer keeps one).
    redo: Option<Redo>,
}

impl<'txn, 'table> Batch<'txn, 'table> {
    pub(crate) fn new(
        now: Timestamp,
        head: Head,
        events: &'table mut Table<'txn, u64, &'static [u8]>,
        keys: &'table mut Table<'txn, &'static str, &'static [u8]>,
        command_keys: CommandKeys<'txn, 'table>,
        redo: Option<Redo>,
    ) -> Self {
        Batch {
            now,
            head,
            events,
            keys,
            command_keys,
            records: Vec::new(),
            after_commit: Vec::new(),
            failure: None,
            redo,
        }
    }

    /// The batch's time: every record staged in it gets this `ts`.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The seq the next staged record will get.
    pub fn next_seq(&self) -> u64 {
        self.head.seq + 1
    }

    /// Stages `events` atomically, in order, with consecutive seqs; returns their records. Bad
    /// input (limits) is an error and stages nothing. A storage failure poisons the writer.
    pub fn append(
        &mut self,
        events: Vec<(String, crate::event::Event)>,
    ) -> Result<Vec<Record>, Error> {
        if let Some(failure) = &self.failure {
            return Err(Error::WriterPoisoned {
                cause: failure.to_string(),
            });
        }
        let entries = events
            .iter()
            .map(|(actor, event)| encode_entry(actor, event))
            .collect::<Result<Vec<_>, _>>()?;
        let mut records = Vec::with_capacity(events.len());
        for ((actor, event), entry) in events.into_iter().zip(entries) {
            let seq = self.head.seq + 1;
            let prev = self.head.hash;
            let hash = self.insert(seq, &prev, &entry)?;
            records.push(Record {
                seq,
                ts: self.now,
                actor,
                event,
                prev,
                hash,
            });
        }
        self.records.extend(records.iter().cloned());
        Ok(records)
    }

    /// Seals and inserts one encoded entry as record `seq`.
    pub(crate) fn insert(
        &mut self,
        seq: u64,
        prev: &ChainHash,
        entry: &crate::codec::EncodedEntry,
    ) -> Result<ChainHash, Error> {
        let (value, hash) = seal(prev, seq, self.now, entry);
        if let Some(redo) = &mut self.redo {
            redo.event(seq, &value);
        }
        if let Err(error) = self.events.insert(seq, value.as_slice()) {
            let error = Error::from(error);
            self.failure = Some(Error::WriterPoisoned {
                cause: error.to_string(),
            });
            return Err(error);
        }
        self.head = Head {
            seq,
            hash,
            ts: self.now,
        };
        Ok(hash)
    }

    /// Records a raw append staged through [`Batch::insert`], for the sequencer and readers.
    pub(crate) fn push_record(&mut self, record: Record) {
        self.records.push(record);
    }

    /// The answer `key` was first used for, if it was used within the window.
    pub fn command_key(&self, key: &str) -> Result<Option<KeyedAnswer>, Error> {
        let Some(value) = self.command_keys.answers.get(key)? else {
            return Ok(None);
        };
        let value = value.value();
        if value.len() < 40 {
            return Err(Error::Corrupted {
                seq: 0,
                problem: format!("command key {key:?} has a short entry"),
            });
        }
        let digest: [u8; 32] = value[..32].try_into().expect("checked length");
        let micros = i64::from_le_bytes(value[32..40].try_into().expect("checked length"));
        Ok(Some(KeyedAnswer {
            digest,
            first_used: Timestamp::from_micros(micros),
            answer: value[40..].to_vec(),
        }))
    }

    /// Remembers that `key` was used for a command with `digest`, answered `answer`; committed
    /// with the batch, so the answer is durable exactly when the events are.
    pub fn remember_command_key(
        &mut self,
        key: &str,
        digest: [u8; 32],
        answer: &[u8],
    ) -> Result<(), Error> {
        let mut value = Vec::with_capacity(40 + answer.len());
        value.extend_from_slice(&digest);
        value.extend_from_slice(&self.now.as_micros().to_le_bytes());
        value.extend_from_slice(answer);
        let at = u64::try_from(self.now.as_micros()).unwrap_or(0);
        if let Some(redo) = &mut self.redo {
            redo.command_key(key, at, &value);
        }
        let stored = self
            .command_keys
            .answers
            .insert(key, value.as_slice())
            .and_then(|_| self.command_keys.by_time.insert((at, key), ()).map(|_| ()));
        stored.map_err(|error| {
            let error = Error::from(error);
            self.failure = Some(Error::WriterPoisoned {
                cause: error.to_string(),
            });
            error
        })
    }

    /// Forgets command keys first used more than `COMMAND_KEY_WINDOW_MS` ago, a bounded number
    /// per batch.
    pub(crate) fn prune_command_keys(&mut self) -> Result<(), Error> {
        use crate::limits::{COMMAND_KEY_WINDOW_MS, COMMAND_KEYS_PRUNED_PER_BATCH_MAX};
        let horizon = self.now.minus_millis(COMMAND_KEY_WINDOW_MS).as_micros();
        let horizon = u64::try_from(horizon).unwrap_or(0);
        let mut expired: Vec<(u64, String)> = Vec::new();
        for entry in self
            .command_keys
            .by_time
            .range::<(u64, &str)>(..(horizon, ""))?
        {
            let (key, _) = entry?;
            let (at, name) = key.value();
            expired.push((at, name.to_owned()));
            if expired.len() >= COMMAND_KEYS_PRUNED_PER_BATCH_MAX {
                break;
            }
        }
        for (at, name) in expired {
            if let Some(redo) = &mut self.redo {
                redo.forget_command_key(&name, at);
            }
            self.command_keys.by_time.remove((at, name.as_str()))?;
            self.command_keys.answers.remove(name.as_str())?;
        }
        Ok(())
    }

    /// Runs `reply` once the batch's commit returned (or failed).
    pub fn after_commit(&mut self, reply: impl FnOnce(Result<(), &Error>) + Send + 'static) {
        self.after_commit.push(Box::new(reply));
    }

    /// How `key` was first used, if it was: its content digest and receipts.
    pub(crate) fn lookup_key(&self, key: &str) -> Result<Option<KeyUse>, Error> {
        let Some(value) = self.keys.get(key)? else {
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
            let stored = self
                .events
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

    /// Records that `key` was used for `receipts`.
    pub(crate) fn remember_key(
        &mut self,
        key: &IdempotencyKey,
        receipts: &[Receipt],
    ) -> Result<(), Error> {
        let mut value = [0u8; 48];
        value[..8].copy_from_slice(&encode_u64(receipts[0].seq));
        value[8..16].copy_from_slice(&encode_u64(receipts.len() as u64));
        value[16..].copy_from_slice(&key.digest);
        if let Some(redo) = &mut self.redo {
            redo.idempotency_key(&key.key, &value);
        }
        self.keys.insert(key.key.as_str(), value.as_slice())?;
        Ok(())
    }

    pub(crate) fn head(&self) -> Head {
        self.head
    }

    pub(crate) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    pub(crate) fn into_parts(self) -> (Head, Vec<Record>, Vec<AfterCommit>, Option<Redo>) {
        (self.head, self.records, self.after_commit, self.redo)
    }
}
