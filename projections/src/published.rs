//! Committed state for readers, published once per batch as an immutable `Arc<State>`.
//!
//! Readers take the current `Arc` (a pointer copy under a lock held for nanoseconds) and may
//! query it for as long as they like: the writer never waits for them. The writer keeps spare
//! copies and brings a spare nobody reads up to date with the records it missed, then swaps it
//! in. A copy pinned by a long query is skipped. The writer keeps two free spares ahead; when
//! readers pin one, another is cloned on a thread of its own from the (immutable) published
//! state, so the cost of slow readers is memory (three copies at rest) and a spare core, not an
//! acknowledgement's latency. The writer waits for a copy only when readers pin copies faster
//! than they can be made.
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
        // A reader may pin the copy just published: keep two spares ahead (one made off the
        // writer thread) so that a long query never makes the next batch wait for a copy.
        let free = self
            .spares
            .iter()
            .filter(|s| Arc::strong_count(s) == 1)
            .count();
        if free < SPARES_AHEAD {
            self.copy_in_background();
        }
        self.trim();
    }

    fn free_spare(&self) -> Option<usize> {
        self.spares
            .iter()
            .position(|spare| Arc::strong_count(spare) == 1)
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
        let mut dropped = Vec::new();
        let (keep, lagging): (Vec<_>, Vec<_>) = std::mem::take(&mut self.spares)
            .into_iter()
            .partition(|spare| spare.seq >= horizon);
        self.spares = keep;
        dropped.extend(lagging);
        while self.spares.len() > SPARES_MAX {
            match self.free_spare() {
                Some(index) => dropped.push(self.spares.swap_remove(index)),
                None => break,
            }
        }
        if !dropped.is_empty() {
            // Freeing a large state takes as long as building it: not on the writer's time.
            let _ = std::thread::Builder::new()
                .name("fleetlog-state-drop".to_owned())
                .spawn(move || drop(dropped));
        }
        let oldest = self
            .spares
            .iter()
            .map(|spare| spare.seq)
            .chain(self.incoming.as_ref().map(|(seq, _)| *seq))
            .min()
            .unwrap_or(newest);
        while self
            .backlog
            .front()
            .is_some_and(|record| record.seq <= oldest)
        {
            self.backlog.pop_front();
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
}
