//! The machine as the ledger's writer drives it: ticks for due deadlines, the committed
//! records it publishes to readers, snapshots, and shutdown.

use std::any::Any;

use fleetlog_ledger::{Batch, Record, Sequencer, Timestamp};

use crate::command::CommandError;
use crate::replay::Projection;

use super::*;

impl Sequencer for Machine {
    fn tick(&mut self, batch: &mut Batch<'_, '_>) {
        for (_, due) in self.state.due_by(batch.now()) {
            self.expire(batch, due);
        }
        self.time_out_waits(batch);
        if self.waits.claims_waiting() {
            // A delayed or retried task may have become ready with no event to say so.
            self.touched.queue = true;
        }
        self.settle(batch);
        self.publish_waiting();
    }

    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let mut next = [self.state.next_deadline(), self.waits.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        if self.waits.claims_waiting() {
            // A waiting claim may be served when a delayed task becomes ready.
            next = next
                .into_iter()
                .chain(self.state.queue.next_ready_after(now))
                .min();
        }
        next
    }

    fn observe(&mut self, record: &Record) {
        self.touched.note(record);
        self.state.apply(record);
    }

    fn committed(&mut self, records: &[Record]) {
        self.publisher.publish(records);
    }

    /// Snapshots are encoded off the writer thread, from the committed state (immutable, shared
    /// with readers), and stored by a later batch: a big state no longer stalls the appends of
    /// the batch that crossed the interval. At most one is in flight; when the next is due
    /// before it is done, the writer waits for it, so every interval still gets its snapshot.
    fn snapshot(&mut self, seq: u64) -> Option<(u64, Vec<u8>)> {
        let due = self.snapshot_every_events > 0
            && seq >= self.last_snapshot_seq + self.snapshot_every_events;
        if let Some(encoded) = self.encoded_snapshot(due) {
            return Some(encoded);
        }
        if !due || self.snapshot_in_flight.is_some() {
            return None;
        }
        let state = self.publisher.current();
        self.last_snapshot_seq = seq;
        let at = state.seq;
        if at == 0 {
            return None;
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("fleetlog-snapshot".to_owned())
            .spawn(move || {
                let _ = sender.send(crate::snapshot::encode(&state));
            });
        match spawned {
            Ok(_) => {
                self.snapshot_in_flight = Some((at, receiver));
                None
            }
            // Without a thread, encode here as before: slower, never wrong.
            Err(_) => Some((at, crate::snapshot::encode(&self.publisher.current()))),
        }
    }

    fn shutdown(&mut self) {
        let replies = self.waits.drain();
        for reply in replies {
            reply.answer(Err(CommandError::Closing));
        }
        self.publish_waiting();
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
