//! The task lifecycle's commands past the claim: fail, release, progress, escalate,
//! dead-letter, cancel. Each checks who may act on the task in its state and answers the events
//! to stage (or a refusal, before anything is staged).

use fleetlog_ledger::{Event, Timestamp};

use crate::command::CommandError;
use crate::queue::{Task, TaskState, retry_backoff_ms};

use super::*;

impl Machine {
    pub(super) fn task(&self, task: u64) -> Result<&Task, CommandError> {
        self.state
            .queue
            .get(task)
            .ok_or(CommandError::UnknownTask { task })
    }

    /// The task, if it is not finished yet.
    fn unfinished(&self, task: u64) -> Result<&Task, CommandError> {
        let found = self.task(task)?;
        match found.state.is_final() {
            true => Err(finished(task, found.state)),
            false => Ok(found),
        }
    }

    /// The holder fails its task: retried after a backoff while attempts remain and the
    /// error is retryable, else dead-lettered (or escalated, by the task's policy).
    pub(super) fn fail_task(
        &self,
        agent: &str,
        task: u64,
        error: String,
        retryable: bool,
        now: Timestamp,
    ) -> Result<Vec<Event>, CommandError> {
        self.check_lease(agent, task)?;
        let found = self.task(task)?;
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
    pub(super) fn release_task(
        &self,
        agent: &str,
        task: u64,
        reason: String,
    ) -> Result<Vec<Event>, CommandError> {
        if self.task(task)?.state != TaskState::Escalated {
            self.check_lease(agent, task)?;
        }
        Ok(vec![Event::TaskReleased { task, reason }])
    }

    pub(super) fn task_progress(
        &self,
        agent: &str,
        task: u64,
        progress: Option<f64>,
        status: String,
    ) -> Result<Vec<Event>, CommandError> {
        self.check_lease(agent, task)?;
        Ok(vec![Event::TaskProgressed {
            task,
            progress,
            status,
        }])
    }

    /// Sets an unfinished task aside for a decision; a claimed one only by its holder.
    pub(super) fn escalate_task(
        &self,
        agent: &str,
        task: u64,
        reason: String,
    ) -> Result<Vec<Event>, CommandError> {
        if self.unfinished(task)?.state == TaskState::Claimed {
            self.check_lease(agent, task)?;
        }
        Ok(vec![Event::TaskEscalated { task, reason }])
    }

    pub(super) fn dead_letter_task(
        &self,
        task: u64,
        reason: String,
    ) -> Result<Vec<Event>, CommandError> {
        self.unfinished(task)?;
        Ok(self.dead_letter(task, reason))
    }

    pub(super) fn cancel_task(
        &self,
        task: u64,
        reason: String,
    ) -> Result<Vec<Event>, CommandError> {
        self.unfinished(task)?;
        let mut events = vec![Event::TaskCancelled { task, reason }];
        events.extend(self.skips(task));
        Ok(events)
    }
}
