//! The final state of every finished task, and nothing else about it: two bytes a task, so a
//! queue that has run a million tasks holds a few MB for them, not their titles, payloads and
//! results. What a finished task was is in the log; [`super::archive`] reads it back by id.
//!
//! Ids are seqs. They are grouped in spans of `SPAN` seqs; each span is a sorted `Vec<u16>`
//! of `offset << STATE_BITS | state`, behind an `Arc` so copies of the state share every span
//! that did not change (tasks finish roughly in id order, so only the newest spans change).

use std::collections::BTreeMap;
use std::sync::Arc;

use bincode::{Decode, Encode};

use super::TaskState;

const SPAN_BITS: u32 = 12;
const SPAN: u64 = 1 << SPAN_BITS;
const STATE_BITS: u32 = 3;
const STATE_MASK: u16 = (1 << STATE_BITS) - 1;

/// The final states, in the code each is stored as.
const FINAL_STATES: [TaskState; 4] = [
    TaskState::Completed,
    TaskState::DeadLettered,
    TaskState::Cancelled,
    TaskState::Skipped,
];

fn code(state: TaskState) -> u16 {
    FINAL_STATES
        .iter()
        .position(|known| *known == state)
        .expect("only final states are recorded as finished") as u16
}

fn state(entry: u16) -> TaskState {
    // Entries are only ever made by `code`, so the index is in range.
    FINAL_STATES[usize::from(entry & STATE_MASK)]
}

fn offset(entry: u16) -> u16 {
    entry >> STATE_BITS
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct FinishedTasks {
    /// Span number (id / SPAN) → entries, sorted by offset.
    spans: BTreeMap<u64, Arc<Vec<u16>>>,
    len: u64,
}

impl FinishedTasks {
    /// Records that task `id` ended in `state` (a final state). A task finishes once.
    pub fn insert(&mut self, id: u64, state: TaskState) {
        let span = Arc::make_mut(self.spans.entry(id >> SPAN_BITS).or_default());
        let at = (id % SPAN) as u16;
        let entry = at << STATE_BITS | code(state);
        match span.binary_search_by_key(&at, |entry| offset(*entry)) {
            Ok(found) => span[found] = entry,
            Err(slot) => {
                span.insert(slot, entry);
                self.len += 1;
            }
        }
    }

    /// How task `id` ended, if it has.
    pub fn get(&self, id: u64) -> Option<TaskState> {
        let span = self.spans.get(&(id >> SPAN_BITS))?;
        let at = (id % SPAN) as u16;
        let found = span
            .binary_search_by_key(&at, |entry| offset(*entry))
            .ok()?;
        Some(state(span[found]))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finished tasks with ids above `after` (all with `None`), in id order.
    pub fn after(&self, after: Option<u64>) -> impl Iterator<Item = (u64, TaskState)> + '_ {
        let first = after.map_or(0, |after| after.saturating_add(1));
        self.spans
            .range(first >> SPAN_BITS..)
            .flat_map(|(span, entries)| {
                entries.iter().map(move |entry| {
                    (
                        (span << SPAN_BITS) + u64::from(offset(*entry)),
                        state(*entry),
                    )
                })
            })
            .skip_while(move |(id, _)| *id < first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn final_state() -> impl Strategy<Value = TaskState> {
        proptest::sample::select(FINAL_STATES.to_vec())
    }

    proptest! {
        /// The index answers as a plain map of id → state would, in any insertion order.
        #[test]
        fn behaves_as_a_map(
            entries in proptest::collection::vec((0u64..40_000, final_state()), 0..400),
            after in proptest::option::of(0u64..40_000),
        ) {
            let mut index = FinishedTasks::default();
            let mut model = BTreeMap::new();
            for (id, state) in &entries {
                index.insert(*id, *state);
                model.insert(*id, *state);
            }
            prop_assert_eq!(index.len(), model.len() as u64);
            for id in 0..40_000u64 {
                prop_assert_eq!(index.get(id), model.get(&id).copied());
            }
            let expected: Vec<_> = match after {
                Some(after) => model.range(after + 1..).map(|(id, s)| (*id, *s)).collect(),
                None => model.iter().map(|(id, s)| (*id, *s)).collect(),
            };
            prop_assert_eq!(index.after(after).collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn copies_share_spans_that_did_not_change() {
        let mut index = FinishedTasks::default();
        index.insert(1, TaskState::Completed);
        index.insert(SPAN * 5, TaskState::Cancelled);
        let mut copy = index.clone();
        copy.insert(SPAN * 5 + 1, TaskState::Skipped);
        assert!(Arc::ptr_eq(&index.spans[&0], &copy.spans[&0]));
        assert!(!Arc::ptr_eq(&index.spans[&5], &copy.spans[&5]));
        assert_eq!(index.get(SPAN * 5 + 1), None);
        assert_eq!(copy.get(SPAN * 5 + 1), Some(TaskState::Skipped));
    }
}
