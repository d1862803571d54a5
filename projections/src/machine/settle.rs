//! Serving parked waits: after a batch, the waits on the keys its events touched are examined
//! in arrival order; waits past their deadline time out; waits whose caller left are dropped.

use std::collections::VecDeque;

use fleetlog_ledger::{Batch, Event};

use crate::approvals::ApprovalState;
use crate::command::{CommandError, Outcome};
use crate::locks::{semaphore_of, slot_resource, slots_key};
use crate::waits::{LockWant, Refused, SignalWant, Waiter, Waits};

use super::*;

impl Machine {
    /// The oldest matching signal `agent` can see, consumed if asked.
    pub(super) fn take_signal(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        wants: &SignalWant,
    ) -> Result<Option<crate::signals::Signal>, CommandError> {
        let Some(signal) = self
            .state
            .signals
            .first_for(agent, &wants.filter, batch.now())
            .cloned()
        else {
            return Ok(None);
        };
        let event = match (wants.ack_ms, wants.consume) {
            (Some(ack_ms), _) => Event::SignalDelivered {
                signal: signal.id,
                ack_ms,
            },
            (None, true) => Event::SignalConsumed { signal: signal.id },
            (None, false) => return Ok(Some(signal)),
        };
        self.stage(batch, agent, vec![event])?;
        Ok(Some(signal))
    }

    /// Parks a wait, or answers the refusal (too many waiting on the key) at once.
    pub(super) fn park(
        &mut self,
        park: impl FnOnce(&mut Waits) -> Result<(), Refused>,
    ) -> Result<Step, CommandError> {
        match park(&mut self.waits) {
            Ok(()) => Ok(Step::Parked),
            Err(refused) => Ok(Step::Refused(refused)),
        }
    }

    /// Serves the waits that the events staged since the last settle may satisfy, each key's
    /// in arrival order. Waits on keys nothing touched are not looked at.
    pub(super) fn settle(&mut self, batch: &mut Batch<'_, '_>) {
        let touched = std::mem::take(&mut self.touched);
        if self.waits.count() == 0 {
            return;
        }
        for resource in touched.locks {
            self.settle_lock(batch, &resource);
            if let Some(semaphore) = semaphore_of(&resource) {
                self.settle_slots(batch, semaphore);
            }
        }
        if touched.queue {
            self.settle_claims(batch);
        }
        let agents = match touched.every_inbox {
            true => self.waits.signal_agents(),
            false => touched.signals.into_iter().collect(),
        };
        for agent in agents {
            self.settle_signals(batch, agent);
        }
        for approval in touched.approvals {
            self.settle_approval(batch, approval);
        }
        // Serving waits staged events of their own (a grant, a claim, a consume): those can
        // only satisfy waits on the keys already served, which were served until they blocked.
        self.touched = Touched::default();
    }

    pub(super) fn settle_lock(&mut self, batch: &mut Batch<'_, '_>, resource: &str) {
        let now = batch.now();
        while self.state.locks.live(resource, now).is_none() {
            let Some(waiter) = self.waits.next_lock_waiter(resource) else {
                break;
            };
            self.grant_to_waiter(batch, waiter, resource);
        }
    }

    /// Grants the lock on `resource` to a parked waiter (still a member) and answers it.
    fn grant_to_waiter(
        &mut self,
        batch: &mut Batch<'_, '_>,
        waiter: Waiter<LockWant>,
        resource: &str,
    ) {
        let result = self.require_member(&waiter.agent).and_then(|()| {
            self.grant_lock(
                batch,
                &waiter.agent,
                resource,
                waiter.wants.ttl_ms,
                waiter.wants.intent,
                waiter.since,
            )
        });
        respond(
            batch,
            waiter.reply,
            result.map(|lock| Outcome::Lock { lock }),
        );
    }

    /// Grants freed slots of the semaphore `resource` to its waits, in arrival order.
    pub(super) fn settle_slots(&mut self, batch: &mut Batch<'_, '_>, resource: &str) {
        let now = batch.now();
        let key = slots_key(resource);
        while let Some(slots) = self.waits.first_lock_want(&key).and_then(|want| want.slots) {
            let Some(slot) = self.state.locks.free_slot(resource, slots, now) else {
                break;
            };
            let Some(waiter) = self.waits.next_lock_waiter(&key) else {
                break;
            };
            self.grant_to_waiter(batch, waiter, &slot_resource(resource, slot));
        }
    }

    pub(super) fn settle_claims(&mut self, batch: &mut Batch<'_, '_>) {
        let mut waiting = self.waits.take_claims();
        let mut kept = VecDeque::new();
        while let Some(waiter) = waiting.pop_front() {
            if !self.state.queue.anything_claimable(batch.now()) {
                // Nothing is claimable by anyone: the rest keep waiting, in order.
                kept.push_back(waiter);
                kept.extend(waiting.drain(..));
                break;
            }
            if waiter.reply.is_gone() {
                self.waits.finished(&waiter);
                continue;
            }
            let claimed = self
                .require_member(&waiter.agent)
                .and_then(|()| self.claim_now(batch, &waiter.agent, &waiter.wants));
            match claimed {
                Ok(None) => kept.push_back(waiter),
                Ok(Some(task)) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Ok(Outcome::Task { task: Some(task) }))
                }
                Err(error) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Err(error))
                }
            }
        }
        self.waits.restore_claims(kept);
    }

    pub(super) fn settle_signals(&mut self, batch: &mut Batch<'_, '_>, agent: String) {
        let waiting = self.waits.take_signals(&agent);
        let mut kept = VecDeque::new();
        for waiter in waiting {
            if waiter.reply.is_gone() {
                self.waits.finished(&waiter);
                continue;
            }
            let taken = self.take_signal(batch, &waiter.agent, &waiter.wants);
            match taken {
                Ok(None) => kept.push_back(waiter),
                Ok(Some(signal)) => {
                    self.waits.finished(&waiter);
                    let outcome = Outcome::Signal {
                        signal: Some(signal),
                    };
                    respond(batch, waiter.reply, Ok(outcome))
                }
                Err(error) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Err(error))
                }
            }
        }
        self.waits.restore_signals(agent, kept);
    }

    pub(super) fn settle_approval(&mut self, batch: &mut Batch<'_, '_>, id: u64) {
        let now = batch.now();
        let Some(approval) = self.state.approvals.get(id).cloned() else {
            return;
        };
        if approval.state_at(now) == ApprovalState::Pending {
            return;
        }
        for waiter in self.waits.take_approval(id) {
            self.waits.finished(&waiter);
            let mut view = approval.clone();
            view.state = approval.state_at(now);
            respond(
                batch,
                waiter.reply,
                Ok(Outcome::Approval { approval: view }),
            );
        }
    }

    /// Answers every wait whose deadline has passed.
    pub(super) fn time_out_waits(&mut self, batch: &mut Batch<'_, '_>) {
        let now = batch.now();
        for due in self.waits.take_due(now) {
            let waited_ms = millis_between(due.since, now);
            respond(batch, due.reply, Err(CommandError::TimedOut { waited_ms }));
        }
    }

    /// Drops the waits whose callers went away (asked for by a caller's guard).
    pub(crate) fn prune_gone(&mut self) {
        self.waits.prune_gone();
        self.publish_waiting();
    }
}
