//! Facts that only ever grow (finished stages and tasks, measured waits), kept so that copying
//! the state does not copy them: full chunks are sealed behind `Arc` and shared by every copy
//! the publisher keeps for readers, so a copy costs the open chunk plus a pointer per sealed
//! one, not the whole history.
//!
//! Encoded exactly as a `Vec<T>` (length, then the items), so snapshots do not change.

use std::sync::Arc;

use bincode::de::{BorrowDecode, BorrowDecoder, Decode, Decoder};
use bincode::enc::{Encode, Encoder};
use bincode::error::{DecodeError, EncodeError};

/// Items per sealed chunk: small enough that the open chunk is cheap to copy, large enough
/// that the chunk pointers are a small fraction of the items.
const CHUNK_ITEMS: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct History<T> {
    sealed: Vec<Arc<[T]>>,
    open: Vec<T>,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        History {
            sealed: Vec::new(),
            open: Vec::new(),
        }
    }
}

impl<T> History<T> {
    pub fn push(&mut self, item: T) {
        self.open.push(item);
        if self.open.len() == CHUNK_ITEMS {
            let full = std::mem::replace(&mut self.open, Vec::with_capacity(CHUNK_ITEMS));
            self.sealed.push(full.into());
        }
    }

    pub fn len(&self) -> usize {
        self.sealed.len() * CHUNK_ITEMS + self.open.len()
    }

    /// Forgets the oldest items, a whole chunk at a time, while at least `items` would remain:
    /// what is kept always starts on a chunk boundary, so a history decoded from its encoding
    /// is chunked (and later pruned) exactly as the one that was encoded.
    pub fn keep_last(&mut self, items: usize) {
        let whole = self.len().saturating_sub(items) / CHUNK_ITEMS;
        let drop = whole.min(self.sealed.len());
        if drop > 0 {
            self.sealed.drain(..drop);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        match self.sealed.get(index / CHUNK_ITEMS) {
            Some(chunk) => chunk.get(index % CHUNK_ITEMS),
            None => self.open.get(index - self.sealed.len() * CHUNK_ITEMS),
        }
    }

    /// The index of the first item `is_before` is false for, given every item it is true for
    /// comes first (as `slice::partition_point`): a search per chunk, then within one.
    pub fn partition_point(&self, mut is_before: impl FnMut(&T) -> bool) -> usize {
        let chunk = self
            .sealed
            .partition_point(|chunk| chunk.last().is_some_and(&mut is_before));
        match self.sealed.get(chunk) {
            Some(items) => chunk * CHUNK_ITEMS + items.partition_point(is_before),
            None => chunk * CHUNK_ITEMS + self.open.partition_point(is_before),
        }
    }

    /// The items from `index` on, oldest first, without walking the ones before it.
    pub fn iter_from(&self, index: usize) -> impl Iterator<Item = &T> {
        let chunk = (index / CHUNK_ITEMS).min(self.sealed.len());
        self.sealed[chunk..]
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(self.open.iter())
            .skip(index - chunk * CHUNK_ITEMS)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + Clone {
        self.sealed
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(self.open.iter())
    }
}

impl<'a, T> IntoIterator for &'a History<T> {
    type Item = &'a T;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a T> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: Encode> Encode for History<T> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        (self.len() as u64).encode(encoder)?;
        for item in self.iter() {
            item.encode(encoder)?;
        }
        Ok(())
    }
}

impl<Context, T: Decode<Context>> Decode<Context> for History<T> {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = usize::try_from(u64::decode(decoder)?)
            .map_err(|_| DecodeError::Other("a history longer than memory"))?;
        decoder.claim_container_read::<T>(len)?;
        let mut history = History::default();
        for _ in 0..len {
            decoder.unclaim_bytes_read(std::mem::size_of::<T>());
            history.push(T::decode(decoder)?);
        }
        Ok(history)
    }
}

impl<'de, Context, T: Decode<Context>> BorrowDecode<'de, Context> for History<T> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        Self::decode(decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_the_last_items_drops_whole_old_chunks_and_survives_encoding() {
        let config = bincode::config::standard();
        let keep = 2 * CHUNK_ITEMS + 10;
        let mut history = History::default();
        for item in 0..(10 * CHUNK_ITEMS as u64 + 5) {
            history.push(item);
            history.keep_last(keep);
            assert!(history.len() >= keep.min(item as usize + 1));
            assert!(history.len() < keep + CHUNK_ITEMS);
            assert_eq!(history.iter().last(), Some(&item), "the newest is kept");
            // A snapshot of it decodes to the same chunks, so both prune alike from here.
            if item % 997 == 0 {
                let encoded = bincode::encode_to_vec(&history, config).expect("encodes");
                let (mut decoded, _): (History<u64>, usize) =
                    bincode::decode_from_slice(&encoded, config).expect("decodes");
                assert_eq!(decoded, history);
                let mut live = history.clone();
                for next in item + 1..item + 1 + 3 * CHUNK_ITEMS as u64 {
                    live.push(next);
                    live.keep_last(keep);
                    decoded.push(next);
                    decoded.keep_last(keep);
                }
                assert_eq!(decoded, live);
            }
        }
        let first = *history.iter().next().expect("items");
        assert_eq!(
            first % CHUNK_ITEMS as u64,
            0,
            "it starts on a chunk boundary"
        );
    }

    #[test]
    fn it_holds_what_was_pushed_in_order_and_encodes_as_a_vec() {
        let config = bincode::config::standard();
        for count in [0, 1, CHUNK_ITEMS - 1, CHUNK_ITEMS, 3 * CHUNK_ITEMS + 7] {
            let items: Vec<u64> = (0..count as u64).map(|i| i * 3).collect();
            let mut history = History::default();
            for item in &items {
                history.push(*item);
            }
            assert_eq!(history.len(), count);
            assert!(history.iter().copied().eq(items.iter().copied()));
            assert!(
                history
                    .iter()
                    .rev()
                    .copied()
                    .eq(items.iter().rev().copied())
            );
            let encoded = bincode::encode_to_vec(&history, config).expect("encodes");
            assert_eq!(
                encoded,
                bincode::encode_to_vec(&items, config).expect("encodes")
            );
            let (decoded, _): (History<u64>, usize) =
                bincode::decode_from_slice(&encoded, config).expect("decodes");
            assert_eq!(decoded, history);
            for index in [0, 1, count / 2, count.saturating_sub(1), count, count + 5] {
                assert_eq!(history.get(index), items.get(index), "get({index})");
                assert!(
                    history.iter_from(index).eq(items.iter().skip(index)),
                    "iter_from({index})"
                );
                let bound = index as u64 * 3;
                assert_eq!(
                    history.partition_point(|item| *item < bound),
                    items.partition_point(|item| *item < bound),
                    "partition_point below {bound}"
                );
            }
            // A copy shares the sealed chunks.
            let copy = history.clone();
            for (ours, theirs) in history.sealed.iter().zip(&copy.sealed) {
                assert!(Arc::ptr_eq(ours, theirs));
            }
        }
    }
}
