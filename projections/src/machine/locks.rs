//! Locks and counting semaphores: acquire (now or by waiting), renew, release.

use fleetlog_ledger::{Batch, Event, Timestamp};

use crate::command::{CommandError, Outcome};
use crate::commands::{AcquireLock, ReleaseLock, RenewLock};
use crate::locks::{Lock, SEMAPHORE_SLOTS_MAX, semaphore_of, slot_resource, slots_key};
use crate::waits::LockWant;

use super::*;

impl Machine {
    pub(super) fn acquire(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        command: AcquireLock,
    ) -> Result<Step, CommandError> {
        positive("ttl_ms", command.ttl_ms)?;
        if command.resource.is_empty() {
            return Err(invalid("resource", "must not be empty"));
        }
        let AcquireLock {
            agent,
            resource,
            ttl_ms,
            intent,
            wait_ms,
            slots,
        } = command;
        let wants = LockWant {
            ttl_ms,
            intent,
            slots,
        };
        match slots {
            Some(slots) => self.acquire_slot(batch, reply, agent, resource, slots, wait_ms, wants),
            None => self.acquire_lock(batch, reply, agent, resource, wait_ms, wants),
        }
    }

    pub(super) fn renew_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: RenewLock,
    ) -> Result<Step, CommandError> {
        let RenewLock {
            agent,
            resource,
            token,
            ttl_ms,
        } = command;
        positive("ttl_ms", ttl_ms)?;
        self.state
            .locks
            .check_holder(&agent, &resource, token, batch.now())?;
        let event = Event::LockRenewed {
            resource,
            token,
            ttl_ms,
        };
        self.record_one(batch, &agent, event)
    }

    pub(super) fn release_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: ReleaseLock,
    ) -> Result<Step, CommandError> {
        let ReleaseLock {
            agent,
            resource,
            token,
        } = command;
        self.state
            .locks
            .check_holder(&agent, &resource, token, batch.now())?;
        self.record_all(batch, &agent, vec![Event::LockReleased { resource, token }])
    }

    /// A lock: granted when free, else refused or parked (FIFO) on the resource.
    pub(super) fn acquire_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        agent: String,
        resource: String,
        wait_ms: Option<u64>,
        wants: LockWant,
    ) -> Result<Step, CommandError> {
        if resource.ends_with("/slot-*") {
            // That is where waits for a semaphore's slots queue, not a lockable name.
            return Err(invalid(
                "resource",
                "a lock's name must not end in /slot-* (reserved for semaphore waits)",
            ));
        }
        let now = batch.now();
        match self.state.locks.live(&resource, now).cloned() {
            None => {
                let lock =
                    self.grant_lock(batch, &agent, &resource, wants.ttl_ms, wants.intent, now)?;
                Ok(done_with(Outcome::Lock { lock }))
            }
            Some(lock) if lock.holder == agent => Err(CommandError::AlreadyHeld {
                resource,
                token: lock.token,
            }),
            Some(lock) => match wait_ms {
                None => Err(CommandError::LockHeld {
                    resource,
                    holder: lock.holder,
                    token: lock.token,
                    expires_at: lock.expires_at,
                }),
                Some(wait_ms) => {
                    let reply = take_reply(reply);
                    self.park(|waits| waits.park(resource, agent, now, wait_ms, reply, wants))
                }
            },
        }
    }

    /// A slot of a counting semaphore: the first free one granted as a lock, else refused or
    /// parked (FIFO) until any slot frees. An agent may hold several slots.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn acquire_slot(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        agent: String,
        resource: String,
        slots: u32,
        wait_ms: Option<u64>,
        wants: LockWant,
    ) -> Result<Step, CommandError> {
        if !(1..=SEMAPHORE_SLOTS_MAX).contains(&slots) {
            return Err(invalid(
                "slots",
                format!("{slots} is outside 1..={SEMAPHORE_SLOTS_MAX}"),
            ));
        }
        if semaphore_of(&resource).is_some() || resource.ends_with("/slot-*") {
            return Err(invalid(
                "resource",
                "a semaphore's name must not end in /slot-<n> (that names one of its slots)",
            ));
        }
        let now = batch.now();
        if let Some(slot) = self.state.locks.free_slot(&resource, slots, now) {
            let lock = self.grant_lock(
                batch,
                &agent,
                &slot_resource(&resource, slot),
                wants.ttl_ms,
                wants.intent,
                now,
            )?;
            return Ok(done_with(Outcome::Lock { lock }));
        }
        match wait_ms {
            None => Err(CommandError::SlotsFull {
                holders: self.state.locks.slot_holders(&resource, slots, now),
                resource,
                slots,
            }),
            Some(wait_ms) => {
                let reply = take_reply(reply);
                let key = slots_key(&resource);
                self.park(|waits| waits.park(key, agent, now, wait_ms, reply, wants))
            }
        }
    }

    /// Grants `resource` to `agent`, recording the takeover of an expired holder first.
    pub(super) fn grant_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        resource: &str,
        ttl_ms: u64,
        intent: String,
        requested_at: Timestamp,
    ) -> Result<Lock, CommandError> {
        let mut events = Vec::new();
        let mut takeover_of = self.state.locks.expired.get(resource).copied();
        if let Some(expired) = self.state.locks.held.get(resource) {
            // Past its deadline but not yet recorded (the tick records it first, normally).
            takeover_of = Some(expired.token);
            events.push((
                SYSTEM_ACTOR,
                Event::LockExpired {
                    resource: resource.to_owned(),
                    token: expired.token,
                    holder: expired.holder.clone(),
                    deadline: expired.expires_at,
                },
            ));
        }
        events.push((
            agent,
            Event::LockAcquired {
                resource: resource.to_owned(),
                intent,
                ttl_ms,
                requested_at,
                takeover_of,
            },
        ));
        let events = events
            .into_iter()
            .map(|(actor, event)| (actor.to_owned(), event))
            .collect();
        self.stage_as(batch, events)?;
        Ok(self
            .state
            .locks
            .held
            .get(resource)
            .cloned()
            .expect("the grant was just applied"))
    }
}
