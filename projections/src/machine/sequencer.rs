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
        self.snapshots.after_commit(self.publisher.current());
    }

    fn shutdown(&mut self) {
        self.snapshots.finish();
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
