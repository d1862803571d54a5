//! Finished tasks, read back from the log: the queue keeps only how each ended, so what one
//! was (title, payload, attempts, result …) is folded again from its own records, with the
//! same [`Task::apply`] the live queue used.
//!
//! A task's records run from its `task_enqueued` (seq = its id) to the record that finished
//! it, so each is read from a scan of that stretch. Several tasks are read in one pass that
//! jumps over the stretches where none of them is open; the cost is the records in their
//! lifetimes, not the length of the log.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use fleetlog_ledger::{Error, Reader};

use super::{Queue, Task, task_of};

/// Task `id` as of `through` (the seq `queue` is at): from the queue while unfinished, else
/// from the log.
pub fn task(queue: &Queue, reader: &Reader, id: u64, through: u64) -> Result<Option<Task>, Error> {
    if let Some(task) = queue.get(id) {
        return Ok(Some(task.clone()));
    }
    if queue.finished.get(id).is_none() {
        return Ok(None);
    }
    Ok(tasks(reader, &[id], through)?.pop())
}

/// The tasks `ids` as of `through` (a seq), in id order; ids that are not tasks there are left
/// out. A task still unfinished at `through` is answered as it stands then.
pub fn tasks(reader: &Reader, ids: &[u64], through: u64) -> Result<Vec<Task>, Error> {
    let mut wanted: Vec<u64> = ids.iter().copied().filter(|id| *id <= through).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = Vec::with_capacity(wanted.len());
    let mut open: BTreeMap<u64, Task> = BTreeMap::new();
    let mut next = 0;
    while next < wanted.len() {
        let start = next;
        reader.scan(wanted[next]..=through, |record| {
            // Ids with no record (passed over by the scan) are not tasks.
            while wanted.get(next).is_some_and(|id| *id < record.seq) {
                next += 1;
            }
            if wanted.get(next) == Some(&record.seq) {
                next += 1;
                if let Some(task) = Task::enqueued(&record) {
                    open.insert(task.id, task);
                }
            } else if let Some(task) = task_of(&record.event).and_then(|id| open.get_mut(&id)) {
                task.apply(&record);
                if task.state.is_final() {
                    let id = task.id;
                    found.extend(open.remove(&id));
                }
            }
            // Nothing open: jump to the next wanted task rather than read the gap.
            Ok(match open.is_empty() {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            })
        })?;
        // The scan reached `through` with tasks still open (or found no record at an id).
        found.extend(std::mem::take(&mut open).into_values());
        if next == start {
            // No record from the next wanted id on: none of the rest is a task.
            break;
        }
    }
    found.sort_unstable_by_key(|task| task.id);
    Ok(found)
}
