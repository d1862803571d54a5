//! Committed state for readers, published once per batch as an immutable `Arc<State>`.
//!
//! Readers take the current `Arc` (a pointer copy under a lock held for nanoseconds) and may
//! query it for as long as they like: the writer never waits for them. The writer keeps spare
//! copies and brings a spare nobody reads up to date with the records it missed, then swaps it
//! in. A copy pinned by a long query is skipped; only when every copy is pinned does the writer
//! clone one, so the cost of a slow reader is memory, never an acknowledgement's latency.
//!
//! Invariants:
//! - the published state always equals the fold of exactly the committed records.
//! - the writer publishes before any reply of the batch runs (read-your-writes).
//! - the backlog holds only records some spare still lacks, and a spare that would need more
//!   than `BACKLOG_RECORDS_MAX` of them is let go (its reader keeps it alive alone).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use fleetlog_ledger::Record;

use crate::replay::Projection;
use crate::state::State;

/// Most records kept for spares that long readers pin; past it the lagging spare is dropped.
pub const BACKLOG_RECORDS_MAX: usize = 100_000;

/// Spare copies kept beyond need are dropped down to this many.
const SPARES_MAX: usize = 3;

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
    backlog: VecDeque<Record>,
}

impl Publisher {
    pub fn new(slot: Arc<Published>) -> Self {
        let spare = Arc::new(State::clone(&slot.get()));
        Publisher {
            slot,
            spares: vec![spare],
            backlog: VecDeque::new(),
        }
    }

    /// Publishes the state after `records` (a committed batch).
    pub fn publish(&mut self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        self.backlog.extend(records.iter().cloned());
        let index = match self
            .spares
            .iter()
            .position(|spare| Arc::strong_count(spare) == 1)
        {
            Some(index) => index,
            None => {
                // Every spare is being read: start another from the published state.
                self.spares.push(Arc::new(State::clone(&self.slot.get())));
                self.spares.len() - 1
            }
        };
        let mut spare = self.spares.swap_remove(index);
        let state = Arc::get_mut(&mut spare).expect("a spare with one owner is writable");
        let after = state.seq;
        for record in self.backlog.iter().filter(|record| record.seq > after) {
            state.apply(record);
        }
        let previous = self.slot.swap(spare);
        self.spares.push(previous);
        self.trim();
    }

    fn trim(&mut self) {
        let newest = self.slot.get().seq;
        let horizon = newest.saturating_sub(BACKLOG_RECORDS_MAX as u64);
        self.spares.retain(|spare| spare.seq >= horizon);
        while self.spares.len() > SPARES_MAX {
            match self
                .spares
                .iter()
                .position(|spare| Arc::strong_count(spare) == 1)
            {
                Some(index) => drop(self.spares.swap_remove(index)),
                None => break,
            }
        }
        let oldest = self
            .spares
            .iter()
            .map(|spare| spare.seq)
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
