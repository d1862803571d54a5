//! Snapshots of the committed state, one every `every_events` records or, for a large state,
//! every `size / SNAPSHOT_BYTES_PER_EVENT_MAX` records, so opening and time travel replay a
//! tail bounded by the live state. Each is encoded and written to the ledger's snapshot files
//! (see [`SnapshotStore`]) on a thread of its own, from the state readers already share
//! (immutable), so neither the encode nor the write holds up an append.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use fleetlog_ledger::SnapshotStore;

use crate::coordinator::SNAPSHOT_BYTES_PER_EVENT_MAX;
use crate::state::State;

pub(super) struct Snapshots {
    store: Option<SnapshotStore>,
    every_events: u64,
    last_seq: u64,
    /// The size of the last snapshot encoded (0: none yet), set by its thread.
    last_bytes: Arc<AtomicU64>,
    in_flight: Option<JoinHandle<()>>,
}

/// Events until the next snapshot: `every_events`, or more for a state whose last snapshot was
/// `last_bytes` long, so snapshots write at most `SNAPSHOT_BYTES_PER_EVENT_MAX` per event.
fn interval(every_events: u64, last_bytes: u64) -> u64 {
    every_events.max(last_bytes / SNAPSHOT_BYTES_PER_EVENT_MAX)
}

impl Snapshots {
    /// `store: None` or `every_events: 0` takes none.
    pub(super) fn new(store: Option<SnapshotStore>, every_events: u64, last_seq: u64) -> Self {
        Snapshots {
            store: store.filter(|_| every_events > 0),
            every_events,
            last_seq,
            last_bytes: Arc::new(AtomicU64::new(0)),
            in_flight: None,
        }
    }

    /// After a commit: takes a snapshot of `committed` if one is due and none is being taken
    /// (a slow one delays the next, it does not queue them up).
    pub(super) fn after_commit(&mut self, committed: Arc<State>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let every = interval(self.every_events, self.last_bytes.load(Ordering::Relaxed));
        if committed.seq < self.last_seq + every {
            return;
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|taking| !taking.is_finished())
        {
            return;
        }
        self.finish();
        self.last_seq = committed.seq;
        let last_bytes = Arc::clone(&self.last_bytes);
        let spawned = std::thread::Builder::new()
            .name("fleetlog-snapshot".to_owned())
            .spawn(move || {
                fleetlog_ledger::priority::yield_cpu_to_the_writer();
                // Encoding takes far longer than a copy. The published copy it came from is
                // one the writer reuses: pinned for the whole encoding, it came back tens of
                // thousands of records behind (docs/performance.md, seventh session).
                let own = crate::state::State::clone(&committed);
                drop(committed);
                let bytes = crate::snapshot::encode(&own);
                last_bytes.store(bytes.len() as u64, Ordering::Relaxed);
                // A snapshot is derived data: if it cannot be written (disk full, permissions)
                // opening replays a longer tail instead, and the next interval tries again.
                let _ = store.write(own.seq, &bytes);
            });
        self.in_flight = spawned.ok();
    }

    /// Waits for the snapshot being taken, if any (at shutdown, so the file is whole on disk
    /// before the ledger is reopened).
    pub(super) fn finish(&mut self) {
        if let Some(taking) = self.in_flight.take() {
            let _ = taking.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_state_is_snapshotted_less_often_and_a_small_one_on_the_interval() {
        assert_eq!(interval(10_000, 0), 10_000, "before the first snapshot");
        assert_eq!(interval(10_000, 400 * 1024), 10_000, "a small state");
        // A 3.8 MiB state (a million finished tasks): one snapshot per ~62k events, so
        // snapshots write 64 bytes per event, about half the log's own.
        let large = 3_800 * 1024;
        assert_eq!(interval(10_000, large), large / 64);
        assert!(large / interval(10_000, large) <= SNAPSHOT_BYTES_PER_EVENT_MAX);
    }
}
