//! Reads through redb read transactions (MVCC snapshots), concurrently with the writer and with
//! each other. A reader never sees a record before its commit is durable.

use std::ops::{ControlFlow, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use crate::codec::{Record, RecordView};
use crate::error::Error;
use crate::event::Timestamp;
use crate::snapshots::SnapshotStore;
use crate::storage::{self, EVENTS, Meta, SNAPSHOTS, Store};

/// A cheap, cloneable handle for reading one ledger file.
#[derive(Clone)]
pub struct Reader {
    pub(crate) store: Arc<Store>,
    pub(crate) path: Arc<PathBuf>,
}

impl Reader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn meta(&self) -> Result<Meta, Error> {
        storage::read_meta(&self.store.begin_read()?, &self.path)
    }

    /// Seq of the newest record, 0 when empty.
    pub fn last_seq(&self) -> Result<u64, Error> {
        let txn = self.store.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        Ok(events.last()?.map(|(seq, _)| seq.value()).unwrap_or(0))
    }

    /// Number of records stored.
    pub fn len(&self) -> Result<u64, Error> {
        let txn = self.store.begin_read()?;
        Ok(txn.open_table(EVENTS)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, Error> {
        let txn = self.store.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let Some(value) = events.get(seq)? else {
            return Ok(None);
        };
        decode(seq, value.value()).map(Some)
    }

    /// Calls `visit` with each stored record's raw bytes in `seqs`, in order, from one snapshot.
    pub fn scan_raw(
        &self,
        seqs: RangeInclusive<u64>,
        mut visit: impl FnMut(u64, &[u8]) -> Result<ControlFlow<()>, Error>,
    ) -> Result<(), Error> {
        let txn = self.store.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        for entry in events.range(seqs)? {
            let (seq, value) = entry?;
            if visit(seq.value(), value.value())?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Calls `visit` with each decoded record in `seqs`, in order, from one snapshot.
    pub fn scan(
        &self,
        seqs: RangeInclusive<u64>,
        mut visit: impl FnMut(Record) -> Result<ControlFlow<()>, Error>,
    ) -> Result<(), Error> {
        self.scan_raw(seqs, |seq, bytes| visit(decode(seq, bytes)?))
    }

    /// The records in `seqs`, which must be present and contiguous. For large ranges prefer
    /// [`Reader::scan`], which does not hold them all in memory.
    pub fn range(&self, seqs: RangeInclusive<u64>) -> Result<Vec<Record>, Error> {
        let mut records = Vec::new();
        let mut expected = *seqs.start();
        self.scan(seqs, |record| {
            if record.seq != expected {
                return Err(Error::Corrupted {
                    seq: expected,
                    problem: "the record is missing".to_owned(),
                });
            }
            expected += 1;
            records.push(record);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(records)
    }

    /// Records from `first` on, as many as exist now, up to `max` of them and, after the first,
    /// up to `bytes_max` stored bytes: a follower of large records holds a bounded amount.
    pub fn range_available(
        &self,
        first: u64,
        max: u64,
        bytes_max: usize,
    ) -> Result<Vec<Record>, Error> {
        let last = self.last_seq()?.min(first.saturating_add(max.max(1) - 1));
        let mut records = Vec::new();
        if last < first {
            return Ok(records);
        }
        let mut expected = first;
        let mut bytes = 0usize;
        self.scan_raw(first..=last, |seq, raw| {
            if seq != expected {
                return Err(Error::Corrupted {
                    seq: expected,
                    problem: "the record is missing".to_owned(),
                });
            }
            bytes += raw.len();
            if !records.is_empty() && bytes > bytes_max {
                return Ok(ControlFlow::Break(()));
            }
            expected += 1;
            records.push(decode(seq, raw)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(records)
    }

    /// The first seq whose record is at or after `ts`, if any. Binary search: seq and ts grow
    /// together, so no time index is needed.
    pub fn seq_at_or_after(&self, ts: Timestamp) -> Result<Option<u64>, Error> {
        let txn = self.store.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let last = events.last()?.map(|(seq, _)| seq.value()).unwrap_or(0);
        let ts_of = |seq: u64| -> Result<Timestamp, Error> {
            let value = events.get(seq)?.ok_or_else(|| Error::Corrupted {
                seq,
                problem: "the record is missing".to_owned(),
            })?;
            let view = RecordView::new(value.value()).map_err(|problem| corrupted(seq, problem))?;
            Ok(view.seq_ts().map_err(|problem| corrupted(seq, problem))?.1)
        };
        // Smallest seq in [1, last + 1) with ts_of(seq) >= ts.
        let (mut low, mut high) = (1u64, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            if ts_of(middle)? >= ts {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok((low <= last).then_some(low))
    }

    /// The seqs of records with `from <= ts < to`; empty when none.
    pub fn seqs_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<RangeInclusive<u64>, Error> {
        let Some(first) = self.seq_at_or_after(from)? else {
            return Ok(empty_range());
        };
        let end = match self.seq_at_or_after(to)? {
            Some(seq) => seq,
            None => self.last_seq()? + 1,
        };
        Ok(match end > first {
            true => first..=end - 1,
            false => empty_range(),
        })
    }

    /// Where this ledger's snapshots are stored (see [`SnapshotStore`]).
    pub fn snapshot_store(&self) -> Result<SnapshotStore, Error> {
        Ok(SnapshotStore::new(&self.path, self.meta()?.ledger_id))
    }

    /// The seqs of every stored snapshot, ascending: the files, and any a ledger written
    /// before snapshots moved out of the redb file kept in its `snapshots` table.
    pub fn snapshot_seqs(&self) -> Result<Vec<u64>, Error> {
        let mut seqs = self.snapshot_store()?.seqs()?;
        let txn = self.store.begin_read()?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        for entry in snapshots.iter()? {
            seqs.push(entry?.0.value());
        }
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// The newest intact snapshot at or before `seq`: its seq and bytes.
    pub fn snapshot_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let from_file = self.snapshot_store()?.at_or_before(seq)?;
        let txn = self.store.begin_read()?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let legacy = snapshots.range(..=seq)?.next_back().transpose()?;
        let legacy = legacy.map(|(at, bytes)| (at.value(), bytes.value().to_vec()));
        Ok(match (from_file, legacy) {
            (Some(file), Some(old)) if old.0 > file.0 => Some(old),
            (Some(file), _) => Some(file),
            (None, old) => old,
        })
    }
}

#[allow(clippy::reversed_empty_ranges)]
fn empty_range() -> RangeInclusive<u64> {
    1..=0
}

fn corrupted(seq: u64, problem: impl std::fmt::Display) -> Error {
    Error::Corrupted {
        seq,
        problem: problem.to_string(),
    }
}

/// Decodes a stored record, checking it is the record its key says.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Record, Error> {
    let record = RecordView::new(bytes)
        .and_then(|view| view.decode())
        .map_err(|problem| corrupted(seq, problem))?;
    if record.seq != seq {
        return Err(corrupted(
            seq,
            format!("it is stored under seq {seq} but says seq {}", record.seq),
        ));
    }
    Ok(record)
}
