//! Committed state for readers, published once per batch as an immutable `Arc<State>`.
//!
//! Readers take the current `Arc` (a pointer copy under a lock held for nanoseconds) and may
//! query it for as long as they like: the writer never waits for them. The writer keeps spare
//! copies and brings a spare nobody reads up to date with the records it missed, then swaps it
//! in. A copy pinned by a long query is skipped. The writer keeps two free spares ahead; when
//! readers pin one, another is cloned on a thread of its own from the (immutable) published
//! state, so the cost of slow readers is memory (three copies at rest) and a spare core, not an
//! acknowledgement's latency. The writer waits for a copy only when readers pin copies faster
//! than they can be made. A copy pinned for long (a snapshot being encoded, a long query) is far
//! behind when let go: it is dropped and replaced off the writer thread, never brought up to date
//! on it, and the records only it needed are freed off the writer thread too.
//!
//! Invariants:
//! - the published state always equals the fold of exactly the committed records.
//! - the writer publishes before any reply of the batch runs (read-your-writes).
//! - the backlog holds only records some spare still lacks, and a spare that would need more
//!   than `BACKLOG_RECORDS_MAX` of them is let go (its reader keeps it alive alone).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};

use fleetlog_ledger::Record;

use crate::replay::Projection;
use crate::state::State;

/// Most records kept for spares that long readers pin; past it the lagging spare is dropped.
pub const BACKLOG_RECORDS_MAX: usize = 100_000;

/// A free spare further behind than this many records is dropped instead of caught up: a
/// copy made off the writer thread costs the writer nothing, catching up ~1 ms per 3k records.
pub const CATCH_UP_RECORDS_MAX: usize = 8_192;

/// Backlog records no spare needs any more are freed on the writer thread up to this many at
/// once; more go to a thread of their own.
const BACKLOG_DROPPED_INLINE_MAX: usize = 1_024;

/// Spare copies kept beyond need are dropped down to this many.
const SPARES_MAX: usize = 3;

/// Free spares the writer keeps ready: one for the next batch even if a reader pins the copy
/// it is about to publish.
const SPARES_AHEAD: usize = 2;

/// The slot readers read from.
#[derive(Default)]
pub struct Published {
    current: RwLock<Arc<State>>,
}

impl Published {
    pub fn new(state: State) -> Self {
        Published {
            current: RwLock::new(Arc::new(state)),
        }
    }

    /// The state as of the newest committed batch.
    pub fn get(&self) -> Arc<State> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Sets the state at open, before the writer runs.
    pub fn replace(&self, state: State) {
        self.swap(Arc::new(state));
    }

    fn swap(&self, state: Arc<State>) -> Arc<State> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        std::mem::replace(&mut current, state)
    }
}

/// The writer's side: spare copies and the records they still lack.
pub struct Publisher {
    slot: Arc<Published>,
    spares: Vec<Arc<State>>,
    /// A copy being made off the writer thread, and the seq it copies.
    incoming: Option<(u64, Receiver<State>)>,
    backlog: VecDeque<Record>,
}

impl Publisher {
    /// Starts with a spare being copied in the background, so opening costs no clone.
    pub fn new(slot: Arc<Published>) -> Self {
        let mut publisher = Publisher {
            slot,
            spares: Vec::new(),
            incoming: None,
            backlog: VecDeque::new(),
        };
        publisher.copy_in_background();
        publisher
    }

    /// Publishes the state after `records` (a committed batch).
    /// The state as of the newest committed batch (immutable: any thread may read it).
    pub fn current(&self) -> Arc<State> {
        self.slot.get()
    }

    pub fn publish(&mut self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        self.backlog.extend(records.iter().cloned());
        self.take_incoming(false);
        let mut spare = match self.free_spare() {
            Some(index) => self.spares.swap_remove(index),
            None => match self.take_incoming(true) {
                // The background copy was already on its way: waiting for it beats starting
                // another one here.
                Some(index) => self.spares.swap_remove(index),
                None => Arc::new(State::clone(&self.slot.get())),
            },
        };
        let state = Arc::get_mut(&mut spare).expect("a spare with one owner is writable");
        // The backlog is in seq order: skip what the spare has by search, not by a scan (the
        // backlog may hold up to BACKLOG_RECORDS_MAX records while a slow copy is made).
        let after = state.seq;
        let start = self.backlog.partition_point(|record| record.seq <= after);
        for record in self.backlog.range(start..) {
            state.apply(record);
        }
        let previous = self.slot.swap(spare);
        self.spares.push(previous);
        self.trim();
        // A reader may pin the copy just published: keep two spares ahead (one made off the
        // writer thread) so that a long query never makes the next batch wait for a copy.
        if self.free_spares().count() < SPARES_AHEAD {
            self.copy_in_background();
        }
    }

    /// The free spare with the fewest records to catch up on. A copy a snapshot or a long
    /// query pinned comes back far behind (a snapshot interval of a large state is ~60k
    /// records, ~20 ms to apply): taken first, it made one batch wait for all of them.
    fn free_spare(&self) -> Option<usize> {
        self.free_spares()
            .max_by_key(|&index| self.spares[index].seq)
    }

    /// The free spare furthest behind: the one to let go.
    fn stalest_free_spare(&self) -> Option<usize> {
        self.free_spares()
            .min_by_key(|&index| self.spares[index].seq)
    }

    fn free_spares(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.spares.len()).filter(|&index| Arc::strong_count(&self.spares[index]) == 1)
    }

    /// Copies the published state (immutable, so any thread may read it) on a thread of its
    /// own, unless a copy is already being made.
    fn copy_in_background(&mut self) {
        if self.incoming.is_some() {
            return;
        }
        let source = self.slot.get();
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let seq = source.seq;
        let spawned = std::thread::Builder::new()
            .name("fleetlog-state-copy".to_owned())
            .spawn(move || {
                fleetlog_ledger::priority::yield_cpu_to_the_writer();
                let copy = State::clone(&source);
                // Unpinned before it is handed over: once received, the source can be reused.
                drop(source);
                let _ = sender.send(copy);
            });
        // Without a thread the writer clones when it must, as before: slower, never wrong.
        if spawned.is_ok() {
            self.incoming = Some((seq, receiver));
        }
    }

    /// Moves a finished background copy into the spares; `wait` blocks for an unfinished one.
    /// Returns its index.
    fn take_incoming(&mut self, wait: bool) -> Option<usize> {
        let (_, receiver) = self.incoming.as_ref()?;
        let copy = match wait {
            true => receiver.recv().ok(),
            false => match receiver.try_recv() {
                Ok(copy) => Some(copy),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            },
        };
        self.incoming = None;
        self.spares.push(Arc::new(copy?));
        Some(self.spares.len() - 1)
    }

    fn trim(&mut self) {
        let newest = self.slot.get().seq;
        let horizon = newest.saturating_sub(BACKLOG_RECORDS_MAX as u64);
        let stale = newest.saturating_sub(CATCH_UP_RECORDS_MAX as u64);
        let mut dropped = Vec::new();
        // A spare past the horizon cannot be caught up; a free one further behind than
        // CATCH_UP_RECORDS_MAX would cost more to catch up than a copy made off this thread,
        // and kept, it holds the backlog for nothing.
        let (keep, lagging): (Vec<_>, Vec<_>) = std::mem::take(&mut self.spares)
            .into_iter()
            .partition(|spare| {
                spare.seq >= horizon && (spare.seq >= stale || Arc::strong_count(spare) > 1)
            });
        self.spares = keep;
        dropped.extend(lagging);
        while self.spares.len() > SPARES_MAX {
            match self.stalest_free_spare() {
                Some(index) => dropped.push(self.spares.swap_remove(index)),
                None => break,
            }
        }
        let oldest = self
            .spares
            .iter()
            .map(|spare| spare.seq)
            .chain(self.incoming.as_ref().map(|(seq, _)| *seq))
            .min()
            .unwrap_or(newest);
        let done = self.backlog.partition_point(|record| record.seq <= oldest);
        // A long pin let go frees up to BACKLOG_RECORDS_MAX records at once: ~15 ms of frees
        // when they were dropped here. Moving the few still needed is cheaper.
        let old_records = match done > BACKLOG_DROPPED_INLINE_MAX {
            true => {
                let needed = self.backlog.split_off(done);
                Some(std::mem::replace(&mut self.backlog, needed))
            }
            false => {
                self.backlog.drain(..done);
                None
            }
        };
        if !dropped.is_empty() || old_records.is_some() {
            // Freeing a large state takes as long as building it: not on the writer's time.
            let _ = std::thread::Builder::new()
                .name("fleetlog-state-drop".to_owned())
                .spawn(move || drop((dropped, old_records)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_ledger::{ChainHash, Event, Json, Timestamp};

    fn record(seq: u64) -> Record {
        Record {
            seq,
            ts: Timestamp(1_795_392_000_000_000 + seq as i64),
            actor: "a".to_owned(),
            event: Event::Custom {
                kind: "k".to_owned(),
                payload: Json::null(),
            },
            prev: ChainHash::default(),
            hash: ChainHash::default(),
        }
    }

    #[test]
    fn what_readers_see_is_the_fold_of_every_batch_however_many_copies_they_pin() {
        let slot = Arc::new(Published::new(State::default()));
        let mut publisher = Publisher::new(Arc::clone(&slot));
        let mut pinned = Vec::new();
        for seq in 1..=40 {
            publisher.publish(&[record(seq)]);
            let seen = slot.get();
            assert_eq!(seen.seq, seq, "read-your-writes after batch {seq}");
            // Readers pin some copies for a long time, others not at all.
            if seq % 3 == 0 {
                pinned.push(seen);
            }
            if seq % 10 == 0 {
                pinned.clear();
            }
        }
        drop(pinned);
        // A copy being made off the writer thread pins its source until it is done.
        publisher.take_incoming(true);
        publisher.publish(&[record(41)]);
        assert_eq!(slot.get().seq, 41);
        assert!(publisher.spares.len() <= SPARES_MAX);
        let oldest = publisher
            .spares
            .iter()
            .map(|spare| spare.seq)
            .chain(publisher.incoming.as_ref().map(|(seq, _)| *seq))
            .min();
        assert!(
            publisher.backlog.iter().all(|r| Some(r.seq) > oldest),
            "the backlog holds only records some copy lacks"
        );
    }

    /// A snapshot being encoded or a long query pins a copy for many batches. Let go, that copy
    /// is far behind: it must be dropped (not caught up on the writer's time, nor left holding
    /// the backlog), and what readers see must stay the fold of every batch throughout.
    #[test]
    fn a_copy_pinned_past_the_catch_up_bound_is_let_go_and_readers_still_see_the_fold() {
        let slot = Arc::new(Published::new(State::default()));
        let mut publisher = Publisher::new(Arc::clone(&slot));
        let mut reference = State::default();
        let bound = CATCH_UP_RECORDS_MAX as u64;
        let (pin_at, release_at, end) = (1_600, 1_600 + 2 * bound, 4 * bound);
        let mut long_pin = None;
        let mut seq = 0;
        while seq < end {
            let batch: Vec<Record> = (seq + 1..=seq + 16).map(record).collect();
            seq += 16;
            for record in &batch {
                reference.apply(record);
            }
            publisher.publish(&batch);
            let seen = slot.get();
            assert_eq!(*seen, reference, "what readers see after seq {seq}");
            if seq == pin_at {
                long_pin = Some(seen);
            } else if seq == release_at {
                long_pin = None;
            }
        }
        assert!(long_pin.is_none());
        publisher.take_incoming(true);
        publisher.publish(&[record(end + 1)]);
        assert!(
            publisher
                .spares
                .iter()
                .all(|spare| spare.seq + bound >= end),
            "no spare far behind is kept: {:?}",
            publisher.spares.iter().map(|s| s.seq).collect::<Vec<_>>()
        );
        assert!(
            publisher.backlog.len() as u64 <= bound,
            "the backlog holds only what the spares lack: {} records",
            publisher.backlog.len()
        );
    }
}
