//! The task queue's commands: enqueue, claim (now or by waiting), and the lifecycle after the
//! claim — renew, complete, fail, release, progress, escalate, dead-letter, cancel. Each checks
//! who may act on the task in its state and answers the events to stage (or a refusal, before
//! anything is staged).

use fleetlog_ledger::{Batch, Event, Timestamp};

use crate::command::{CommandError, Outcome};
use crate::commands::{
    CancelTask, Claim, CompleteTask, DeadLetterTask, Enqueue, EscalateTask, FailTask, ReleaseTask,
    RenewLease, TaskProgress,
};
use crate::queue::{Claimant, Task, TaskState, retry_backoff_ms};
use crate::waits::ClaimWant;

use super::*;

impl Machine {
    /// Adds a task; its id is the seq of its `task_enqueued` record.
    pub(super) fn enqueue(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: Enqueue,
    ) -> Result<Step, CommandError> {
        let Enqueue { agent, spec } = command;
        if spec.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        if spec.title.is_empty() {
            return Err(invalid("title", "must not be empty"));
        }
        let mut doomed_by = None;
        for dependency in &spec.depends_on {
            let state = self
                .state
                .queue
                .state_of(*dependency)
                .ok_or(CommandError::UnknownTask { task: *dependency })?;
            if state.is_final() && state != TaskState::Completed {
                doomed_by.get_or_insert(*dependency);
            }
        }
        if let Some(key) = &spec.key {
            if key.is_empty() {
                return Err(invalid("key", "must not be empty (leave it out for none)"));
            }
            if let Some(existing) = self.state.queue.id_by_key(key) {
                return Err(CommandError::TaskKeyExists {
                    key: key.clone(),
                    task: existing,
                });
            }
        }
        let id = batch.next_seq();
        let options = (spec.key.is_some()
            || !spec.required_capabilities.is_empty()
            || spec.escalate_when_exhausted)
            .then_some(Event::TaskOptions {
                task: id,
                key: spec.key,
                capabilities: spec.required_capabilities,
                escalate_when_exhausted: spec.escalate_when_exhausted,
            });
        let mut events = vec![Event::TaskEnqueued {
            title: spec.title,
            description: spec.description,
            priority: spec.priority,
            tags: spec.tags,
            payload: spec.payload,
            max_attempts: spec.max_attempts,
            depends_on: spec.depends_on,
            not_before: spec.not_before,
            workflow_id: spec.workflow_id,
        }];
        events.extend(options);
        if let Some(blocked_by) = doomed_by {
            events.push(Event::TaskSkipped {
                task: id,
                blocked_by,
            });
        }
        self.record_all(batch, &agent, events)
    }

    /// Leases the best claimable task; with `wait_ms`, parks until one becomes claimable.
    pub(super) fn claim(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        command: Claim,
    ) -> Result<Step, CommandError> {
        positive("lease_ttl_ms", command.lease_ttl_ms)?;
        let wants = ClaimWant {
            tags: command.tags,
            tag_match: command.tag_match,
            task: command.task,
            lease_ttl_ms: command.lease_ttl_ms,
        };
        let agent = command.agent;
        if let Some(task) = self.claim_now(batch, &agent, &wants)? {
            return Ok(done_with(Outcome::Task { task: Some(task) }));
        }
        match command.wait_ms {
            None => Ok(done_with(Outcome::Task { task: None })),
            Some(wait_ms) => {
                let (reply, now) = (take_reply(reply), batch.now());
                self.park(|waits| waits.park((), agent, now, wait_ms, reply, wants))
            }
        }
    }

    /// Claims the best task for `agent`, if one is claimable now.
    pub(super) fn claim_now(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        wants: &ClaimWant,
    ) -> Result<Option<crate::queue::Task>, CommandError> {
        let capabilities = self
            .state
            .agents
            .get(agent)
            .map(|found| found.capabilities.clone())
            .unwrap_or_default();
        let claimant = Claimant {
            tags: &wants.tags,
            tag_match: wants.tag_match,
            capabilities: &capabilities,
        };
        let now = batch.now();
        let queue = &self.state.queue;
        let task = match wants.task {
            None => queue.next_claimable(&claimant, now),
            Some(id) => {
                let found = queue.unfinished(id)?;
                let missing: Vec<String> = found
                    .required_capabilities
                    .iter()
                    .filter(|needed| !capabilities.contains(needed))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(CommandError::NotCapable { task: id, missing });
                }
                queue.is_claimable(found, &claimant, now).then_some(found)
            }
        };
        let Some(task) = task else {
            return Ok(None);
        };
        let (id, attempt) = (task.id, task.attempts + 1);
        let event = Event::TaskClaimed {
            task: id,
            lease_ttl_ms: wants.lease_ttl_ms,
            attempt,
        };
        self.stage(batch, agent, vec![event])?;
        Ok(self.state.queue.get(id).cloned())
    }

    /// The task, if it is not finished yet.
    fn unfinished(&self, task: u64) -> Result<&Task, CommandError> {
        self.state.queue.unfinished(task)
    }

    pub(super) fn renew_lease(&self, command: RenewLease) -> Result<Vec<Event>, CommandError> {
        let RenewLease {
            agent,
            task,
            lease_ttl_ms,
        } = command;
        positive("lease_ttl_ms", lease_ttl_ms)?;
        self.state.queue.check_lease(&agent, task)?;
        Ok(vec![Event::TaskLeaseRenewed { task, lease_ttl_ms }])
    }

    pub(super) fn complete_task(&self, command: CompleteTask) -> Result<Vec<Event>, CommandError> {
        let CompleteTask {
            agent,
            task,
            result,
        } = command;
        self.state.queue.check_lease(&agent, task)?;
        Ok(vec![Event::TaskCompleted { task, result }])
    }

    /// The holder fails its task: retried after a backoff while attempts remain and the
    /// error is retryable, else dead-lettered (or escalated, by the task's policy).
    pub(super) fn fail_task(
        &self,
        command: FailTask,
        now: Timestamp,
    ) -> Result<Vec<Event>, CommandError> {
        let FailTask {
            agent,
            task,
            error,
            retryable,
        } = command;
        self.state.queue.check_lease(&agent, task)?;
        let found = self.unfinished(task)?;
        let retry = retryable && found.attempts < found.max_attempts;
        let retry_at = retry.then(|| now.plus_millis(retry_backoff_ms(found.attempts)));
        let attempts = found.attempts;
        let mut events = vec![Event::TaskFailed {
            task,
            error,
            retryable,
            retry_at,
        }];
        if !retry {
            let reason = match retryable {
                true => format!("failed on the last of {attempts} attempts"),
                false => "failed with a non-retryable error".to_owned(),
            };
            events.extend(self.exhausted(task, reason));
        }
        Ok(events)
    }

    /// The holder gives its task back (the attempt not counted); anyone requeues an escalated
    /// task.
    pub(super) fn release_task(&self, command: ReleaseTask) -> Result<Vec<Event>, CommandError> {
        let ReleaseTask {
            agent,
            task,
            reason,
        } = command;
        if self.unfinished(task)?.state != TaskState::Escalated {
            self.state.queue.check_lease(&agent, task)?;
        }
        Ok(vec![Event::TaskReleased { task, reason }])
    }

    pub(super) fn task_progress(&self, command: TaskProgress) -> Result<Vec<Event>, CommandError> {
        let TaskProgress {
            agent,
            task,
            progress,
            status,
        } = command;
        self.state.queue.check_lease(&agent, task)?;
        Ok(vec![Event::TaskProgressed {
            task,
            progress,
            status,
        }])
    }

    /// Sets an unfinished task aside for a decision; a claimed one only by its holder.
    pub(super) fn escalate_task(&self, command: EscalateTask) -> Result<Vec<Event>, CommandError> {
        let EscalateTask {
            agent,
            task,
            reason,
        } = command;
        if self.unfinished(task)?.state == TaskState::Claimed {
            self.state.queue.check_lease(&agent, task)?;
        }
        Ok(vec![Event::TaskEscalated { task, reason }])
    }

    pub(super) fn dead_letter_task(
        &self,
        command: DeadLetterTask,
    ) -> Result<Vec<Event>, CommandError> {
        self.unfinished(command.task)?;
        Ok(self.dead_letter(command.task, command.reason))
    }

    pub(super) fn cancel_task(&self, command: CancelTask) -> Result<Vec<Event>, CommandError> {
        let CancelTask { task, reason, .. } = command;
        self.unfinished(task)?;
        let mut events = vec![Event::TaskCancelled { task, reason }];
        events.extend(self.skips(task));
        Ok(events)
    }
}
