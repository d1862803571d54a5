//! Snapshots of the committed state, one every `every_events` records, so opening and time
//! travel replay a bounded tail. Each is encoded and written to the ledger's snapshot files
//! (see [`SnapshotStore`]) on a thread of its own, from the state readers already share
//! (immutable), so neither the encode nor the write holds up an append.

use std::sync::Arc;
use std::thread::JoinHandle;

use fleetlog_ledger::SnapshotStore;

use crate::state::State;

pub(super) struct Snapshots {
    store: Option<SnapshotStore>,
    every_events: u64,
    last_seq: u64,
    in_flight: Option<JoinHandle<()>>,
}

impl Snapshots {
    /// `store: None` or `every_events: 0` takes none.
    pub(super) fn new(store: Option<SnapshotStore>, every_events: u64, last_seq: u64) -> Self {
        Snapshots {
            store: store.filter(|_| every_events > 0),
            every_events,
            last_seq,
            in_flight: None,
        }
    }

    /// After a commit: takes a snapshot of `committed` if one is due and none is being taken
    /// (a slow one delays the next, it does not queue them up).
    pub(super) fn after_commit(&mut self, committed: Arc<State>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if committed.seq < self.last_seq + self.every_events {
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
        let spawned = std::thread::Builder::new()
            .name("fleetlog-snapshot".to_owned())
            .spawn(move || {
                fleetlog_ledger::priority::yield_cpu_to_the_writer();
                let bytes = crate::snapshot::encode(&committed);
                // A snapshot is derived data: if it cannot be written (disk full, permissions)
                // opening replays a longer tail instead, and the next interval tries again.
                let _ = store.write(committed.seq, &bytes);
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
