//! Expiries the writer records when their time comes: agents, locks, leases, signals,
//! approvals, and what an expired agent held.

use fleetlog_ledger::{Batch, Event, Timestamp};

use crate::state::Due;

use super::*;

impl Machine {
    /// Dead-letters `task` and skips everything waiting on it.
    pub(super) fn dead_letter(&self, task: u64, reason: String) -> Vec<Event> {
        let mut events = vec![Event::TaskDeadLettered { task, reason }];
        events.extend(self.skips(task));
        events
    }

    /// A task that ran out of attempts: escalated if its policy says so, else dead-lettered.
    pub(super) fn exhausted(&self, task: u64, reason: String) -> Vec<Event> {
        let escalate = self
            .state
            .queue
            .get(task)
            .is_some_and(|found| found.escalate_when_exhausted);
        match escalate {
            true => vec![Event::TaskEscalated { task, reason }],
            false => self.dead_letter(task, reason),
        }
    }

    pub(super) fn skips(&self, task: u64) -> Vec<Event> {
        self.state
            .queue
            .blocked_by(task)
            .into_iter()
            .map(|(task, blocked_by)| Event::TaskSkipped { task, blocked_by })
            .collect()
    }

    /// A lease ended without completion: requeue with the attempt counted, or dead-letter.
    pub(super) fn lease_lost(&self, task: u64, deadline: Timestamp) -> Vec<Event> {
        let Some(found) = self.state.queue.get(task) else {
            return Vec::new();
        };
        let mut events = vec![Event::TaskLeaseExpired {
            task,
            agent: found.holder.clone().unwrap_or_default(),
            attempt: found.attempts,
            deadline,
        }];
        if found.attempts >= found.max_attempts {
            let reason = format!("lease expired on the last of {} attempts", found.attempts);
            events.extend(self.exhausted(task, reason));
        }
        events
    }

    /// What an agent leaving (or expiring) releases: its locks and its leases.
    pub(super) fn release_everything_of(&self, agent: &str, deadline: Timestamp) -> Vec<Event> {
        let locks = self
            .state
            .locks
            .held_by(agent)
            .map(|lock| Event::LockExpired {
                resource: lock.resource.clone(),
                token: lock.token,
                holder: lock.holder.clone(),
                deadline,
            });
        let mut events: Vec<Event> = locks.collect();
        let tasks: Vec<u64> = self
            .state
            .queue
            .claimed_by(agent)
            .map(|task| task.id)
            .collect();
        for task in tasks {
            events.extend(self.lease_lost(task, deadline));
        }
        events
    }

    /// Records the expiry of `due`, if it is still live and past its deadline.
    pub(super) fn expire(&mut self, batch: &mut Batch<'_, '_>, due: Due) {
        let now = batch.now();
        let Some(deadline) = self
            .state
            .deadline_of(&due)
            .filter(|deadline| *deadline <= now)
        else {
            return;
        };
        let events = match due {
            Due::Agent(agent) => {
                let last_seen = self
                    .state
                    .agents
                    .get(&agent)
                    .map_or(deadline, |found| found.last_heartbeat);
                let mut events = vec![Event::AgentExpired {
                    agent: agent.clone(),
                    last_seen,
                    deadline,
                }];
                events.extend(self.release_everything_of(&agent, deadline));
                events
            }
            Due::Signal(signal) => vec![Event::SignalExpired { signal, deadline }],
            Due::SignalAck(signal, agent) => vec![Event::SignalAckExpired {
                signal,
                agent,
                deadline,
            }],
            Due::Lock(resource) => {
                let lock = self.state.locks.held.get(&resource).cloned();
                lock.map(|lock| Event::LockExpired {
                    resource,
                    token: lock.token,
                    holder: lock.holder,
                    deadline,
                })
                .into_iter()
                .collect()
            }
            Due::Lease(task) => self.lease_lost(task, deadline),
            Due::Approval(approval) => vec![Event::ApprovalExpired { approval, deadline }],
        };
        // Expiry events carry only ids and times: they cannot break a limit. A storage failure
        // poisons the writer, which then fails the whole batch.
        let _ = self.stage(batch, SYSTEM_ACTOR, events);
    }
}
