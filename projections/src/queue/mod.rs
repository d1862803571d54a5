//! The task queue. Claim order: highest priority first, then oldest (lowest id); a task is
//! claimable when pending, its dependencies are all completed, and its `not_before` and
//! `retry_at` have passed. A claim is a lease: it must be renewed, completed or failed before it
//! expires, or the task is requeued with the attempt counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub mod archive;
mod commands;
mod finished;

pub use commands::*;
pub use finished::FinishedTasks;

use crate::command::CommandError;
use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Json, Record, Timestamp};
use serde::{Deserialize, Serialize};

pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;
pub const LEASE_TTL_MS_DEFAULT: u64 = 60_000;
/// First retry delay after a retryable failure; doubles per attempt.
pub const RETRY_BACKOFF_BASE_MS: u64 = 1_000;
/// Longest retry delay.
pub const RETRY_BACKOFF_MAX_MS: u64 = 300_000;

/// Delay before attempt `attempts + 1`, after `attempts` failed ones.
pub fn retry_backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (RETRY_BACKOFF_BASE_MS << doublings).min(RETRY_BACKOFF_MAX_MS)
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Claimed,
    /// Waiting for a decision (`task_escalated`): not claimable until released, cancelled or
    /// dead-lettered.
    Escalated,
    Completed,
    DeadLettered,
    Cancelled,
    Skipped,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TaskState::Pending | TaskState::Claimed | TaskState::Escalated
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Claimed => "claimed",
            TaskState::Escalated => "escalated",
            TaskState::Completed => "completed",
            TaskState::DeadLettered => "dead_lettered",
            TaskState::Cancelled => "cancelled",
            TaskState::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    /// The seq of its `task_enqueued` record.
    pub id: u64,
    pub title: String,
    pub description: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub payload: Json,
    pub max_attempts: u32,
    pub depends_on: Vec<u64>,
    pub not_before: Option<Timestamp>,
    pub workflow_id: Option<String>,
    pub enqueued_by: String,
    pub enqueued_at: Timestamp,
    pub state: TaskState,
    /// Claims made so far (the current one included).
    pub attempts: u32,
    pub holder: Option<String>,
    pub claimed_at: Option<Timestamp>,
    pub lease_expires: Option<Timestamp>,
    pub retry_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub result: Option<Json>,
    pub finished_at: Option<Timestamp>,
    /// The caller's own id for it, unique in the ledger.
    pub key: Option<String>,
    /// Capabilities an agent must have (all of them) to claim it.
    pub required_capabilities: Vec<String>,
    /// Running out of attempts escalates it instead of dead-lettering it.
    pub escalate_when_exhausted: bool,
    /// The holder's last progress report.
    pub progress: Option<f64>,
    pub status: Option<String>,
    /// Why and when it was escalated, while it is.
    pub escalation: Option<Escalation>,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Escalation {
    pub reason: String,
    pub by: String,
    pub at: Timestamp,
}

/// How a claim's tags select tasks.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Encode,
    Decode,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TagMatch {
    /// The task has every tag asked for.
    #[default]
    All,
    /// The task has at least one of them (or none were asked for).
    Any,
}

/// Who is claiming, as far as choosing a task goes.
#[derive(Clone, Copy, Debug)]
pub struct Claimant<'a> {
    pub tags: &'a [String],
    pub tag_match: TagMatch,
    /// The claiming agent's capabilities.
    pub capabilities: &'a [String],
}

impl Claimant<'_> {
    /// Whether this claimant may take `task`, its readiness aside.
    pub fn fits(&self, task: &Task) -> bool {
        let tagged = match self.tag_match {
            TagMatch::All => self.tags.iter().all(|tag| task.tags.contains(tag)),
            TagMatch::Any => {
                self.tags.is_empty() || self.tags.iter().any(|tag| task.tags.contains(tag))
            }
        };
        tagged
            && task
                .required_capabilities
                .iter()
                .all(|needed| self.capabilities.contains(needed))
    }
}

impl Task {
    /// When the task may next be claimed, ignoring dependencies.
    pub fn ready_at(&self) -> Option<Timestamp> {
        match (self.not_before, self.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Counts for `fleetlog status` and the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueStats {
    pub by_state: BTreeMap<String, u64>,
    /// Pending tasks per tag.
    pub pending_by_tag: BTreeMap<String, u64>,
    /// Age of the oldest pending task at `now`, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Queue {
    /// Unfinished tasks, each behind an `Arc`: the copies of the state the publisher keeps for
    /// readers share every task that did not change between them. Changed copy-on-write.
    /// A task that finishes leaves for `finished`; what it was is read back from the log.
    pub tasks: BTreeMap<u64, Arc<Task>>,
    /// How every finished task ended.
    pub finished: FinishedTasks,
    /// Pending tasks in claim order: (highest priority first, oldest first).
    pending: BTreeSet<(Reverse<i32>, u64)>,
    /// task → tasks that depend on it.
    dependents: BTreeMap<u64, Vec<u64>>,
    /// Caller-chosen key → task.
    by_key: BTreeMap<String, u64>,
    /// (holder, task) of every claimed task: what an agent holds, without a scan of history
    /// (an agent's expiry and staffing ask it).
    claimed: BTreeSet<(String, u64)>,
    /// How many tasks are in each state: the status counts without a scan of history.
    by_state: BTreeMap<TaskState, u64>,
}

impl Task {
    /// The task a `task_enqueued` record makes (its id is the record's seq).
    pub fn enqueued(record: &Record) -> Option<Task> {
        let Event::TaskEnqueued {
            title,
            description,
            priority,
            tags,
            payload,
            max_attempts,
            depends_on,
            not_before,
            workflow_id,
        } = &record.event
        else {
            return None;
        };
        Some(Task {
            id: record.seq,
            title: title.clone(),
            description: description.clone(),
            priority: *priority,
            tags: tags.clone(),
            payload: payload.clone(),
            max_attempts: *max_attempts,
            depends_on: depends_on.clone(),
            not_before: *not_before,
            workflow_id: workflow_id.clone(),
            enqueued_by: record.actor.clone(),
            enqueued_at: record.ts,
            state: TaskState::Pending,
            attempts: 0,
            holder: None,
            claimed_at: None,
            lease_expires: None,
            retry_at: None,
            last_error: None,
            result: None,
            finished_at: None,
            key: None,
            required_capabilities: Vec::new(),
            escalate_when_exhausted: false,
            progress: None,
            status: None,
            escalation: None,
        })
    }

    /// Folds one of this task's records (see [`task_of`]) into it. The whole of a task's
    /// history: the live queue and the archive both fold with this.
    pub fn apply(&mut self, record: &Record) {
        let ts = record.ts;
        let task = self;
        match &record.event {
            Event::TaskOptions {
                key,
                capabilities,
                escalate_when_exhausted,
                ..
            } => {
                task.key = key.clone();
                task.required_capabilities = capabilities.clone();
                task.escalate_when_exhausted = *escalate_when_exhausted;
            }
            Event::TaskReleased { .. } => {
                // A release gives the attempt back: only a claim that ends badly counts.
                if task.state == TaskState::Claimed {
                    task.attempts = task.attempts.saturating_sub(1);
                }
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.escalation = None;
            }
            Event::TaskProgressed {
                progress, status, ..
            } => {
                task.progress = *progress;
                task.status = Some(status.clone());
            }
            Event::TaskEscalated { reason, .. } => {
                task.state = TaskState::Escalated;
                task.holder = None;
                task.lease_expires = None;
                task.escalation = Some(Escalation {
                    reason: reason.clone(),
                    by: record.actor.clone(),
                    at: ts,
                });
            }
            Event::TaskClaimed {
                lease_ttl_ms,
                attempt,
                ..
            } => {
                task.state = TaskState::Claimed;
                task.holder = Some(record.actor.clone());
                task.attempts = *attempt;
                task.claimed_at = Some(ts);
                task.lease_expires = Some(ts.plus_millis(*lease_ttl_ms));
                task.retry_at = None;
            }
            Event::TaskLeaseRenewed { lease_ttl_ms, .. } => {
                task.lease_expires = Some(ts.plus_millis(*lease_ttl_ms));
            }
            Event::TaskLeaseExpired { .. } => {
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.last_error = Some("lease expired".to_owned());
            }
            Event::TaskCompleted { result, .. } => {
                task.state = TaskState::Completed;
                task.result = Some(result.clone());
                task.finished_at = Some(ts);
                task.lease_expires = None;
            }
            Event::TaskFailed {
                error, retry_at, ..
            } => {
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.last_error = Some(error.clone());
                task.retry_at = *retry_at;
            }
            Event::TaskDeadLettered { .. } => task.finish(TaskState::DeadLettered, ts),
            Event::TaskCancelled { .. } => task.finish(TaskState::Cancelled, ts),
            Event::TaskSkipped { .. } => task.finish(TaskState::Skipped, ts),
            _ => {}
        }
    }

    fn finish(&mut self, state: TaskState, ts: Timestamp) {
        self.state = state;
        self.holder = None;
        self.lease_expires = None;
        self.finished_at = Some(ts);
    }
}

/// The task a record is about, for every record [`Task::apply`] folds.
pub fn task_of(event: &Event) -> Option<u64> {
    match event {
        Event::TaskOptions { task, .. }
        | Event::TaskReleased { task, .. }
        | Event::TaskProgressed { task, .. }
        | Event::TaskEscalated { task, .. }
        | Event::TaskClaimed { task, .. }
        | Event::TaskLeaseRenewed { task, .. }
        | Event::TaskLeaseExpired { task, .. }
        | Event::TaskCompleted { task, .. }
        | Event::TaskFailed { task, .. }
        | Event::TaskDeadLettered { task, .. }
        | Event::TaskCancelled { task, .. }
        | Event::TaskSkipped { task, .. } => Some(*task),
        _ => None,
    }
}

impl Queue {
    pub(crate) fn apply(&mut self, record: &Record) {
        if let Some(task) = Task::enqueued(record) {
            let id = task.id;
            // Only an unfinished dependency can still decide its dependents' fate.
            for dependency in &task.depends_on {
                if self.tasks.contains_key(dependency) {
                    self.dependents.entry(*dependency).or_default().push(id);
                }
            }
            self.pending.insert((Reverse(task.priority), id));
            self.tasks.insert(id, Arc::new(task));
            *self.by_state.entry(TaskState::Pending).or_default() += 1;
            return;
        }
        let Some(id) = task_of(&record.event) else {
            return;
        };
        if let Event::TaskOptions { key: Some(key), .. } = &record.event {
            self.by_key.insert(key.clone(), id);
        }
        self.update(id, |task| task.apply(record));
    }

    /// Applies `change` and keeps the indexes in step with the task; a task that finishes
    /// leaves the live queue for the finished index.
    fn update(&mut self, id: u64, change: impl FnOnce(&mut Task)) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let task = Arc::make_mut(task);
        if let (TaskState::Claimed, Some(holder)) = (task.state, task.holder.take()) {
            self.claimed.remove(&(holder.clone(), id));
            task.holder = Some(holder);
        }
        let before = task.state;
        change(task);
        let after = task.state;
        if after != before {
            if let Some(count) = self.by_state.get_mut(&before) {
                *count -= 1;
            }
            *self.by_state.entry(after).or_default() += 1;
        }
        let key = (Reverse(task.priority), id);
        match after {
            TaskState::Pending => self.pending.insert(key),
            _ => self.pending.remove(&key),
        };
        if let (TaskState::Claimed, Some(holder)) = (after, &task.holder) {
            self.claimed.insert((holder.clone(), id));
        }
        if after.is_final() {
            self.tasks.remove(&id);
            // What waited on it was decided when it finished (runnable or skipped).
            self.dependents.remove(&id);
            self.finished.insert(id, after);
        }
    }

    /// An unfinished task (a finished one is in the log: [`archive::tasks`]).
    pub fn get(&self, id: u64) -> Option<&Task> {
        self.tasks.get(&id).map(|task| &**task)
    }

    /// The state of any task, finished or not.
    pub fn state_of(&self, id: u64) -> Option<TaskState> {
        match self.tasks.get(&id) {
            Some(task) => Some(task.state),
            None => self.finished.get(id),
        }
    }

    fn dependencies_done(&self, task: &Task) -> bool {
        task.depends_on
            .iter()
            .all(|dependency| self.finished.get(*dependency) == Some(TaskState::Completed))
    }

    /// The task `claimant` would get at `now`.
    pub fn next_claimable(&self, claimant: &Claimant<'_>, now: Timestamp) -> Option<&Task> {
        self.pending
            .iter()
            .filter_map(|(_, id)| self.get(*id))
            .find(|task| self.is_claimable(task, claimant, now))
    }

    /// Whether `claimant` may claim `task` at `now`: pending, ready, its dependencies done, and
    /// it fits the claimant's tags and capabilities.
    pub fn is_claimable(&self, task: &Task, claimant: &Claimant<'_>, now: Timestamp) -> bool {
        task.state == TaskState::Pending
            && task.ready_at().is_none_or(|ready| ready <= now)
            && claimant.fits(task)
            && self.dependencies_done(task)
    }

    /// Whether any pending task is ready for someone, tags and capabilities aside.
    pub fn anything_claimable(&self, now: Timestamp) -> bool {
        self.pending
            .iter()
            .filter_map(|(_, id)| self.get(*id))
            .any(|task| {
                task.ready_at().is_none_or(|ready| ready <= now) && self.dependencies_done(task)
            })
    }

    /// The task the caller named `key`.
    pub fn id_by_key(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// The earliest future time a pending task with completed dependencies becomes ready.
    pub fn next_ready_after(&self, now: Timestamp) -> Option<Timestamp> {
        self.pending
            .iter()
            .filter_map(|(_, id)| self.get(*id))
            .filter_map(Task::ready_at)
            .filter(|ready| *ready > now)
            .min()
    }

    /// Pending tasks that depend, directly or through others, on `id`: what is skipped when
    /// `id` can never complete. In dependency order.
    pub fn blocked_by(&self, id: u64) -> Vec<(u64, u64)> {
        let mut blocked = Vec::new();
        let mut frontier = vec![id];
        let mut seen = BTreeSet::new();
        while let Some(current) = frontier.pop() {
            for dependent in self.dependents.get(&current).into_iter().flatten() {
                let pending = self
                    .tasks
                    .get(dependent)
                    .is_some_and(|task| !task.state.is_final());
                if pending && seen.insert(*dependent) {
                    blocked.push((*dependent, current));
                    frontier.push(*dependent);
                }
            }
        }
        blocked
    }

    /// Tasks held by `agent`.
    /// The tasks `agent` holds now, from the claimed index (no scan of finished history).
    pub fn claimed_by<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.claimed
            .range((agent.to_owned(), 0)..=(agent.to_owned(), u64::MAX))
            .filter_map(|(_, id)| self.get(*id))
    }

    /// Counts by state, pending tasks by tag and the oldest pending task's age: from the
    /// counters and the pending index, so the cost is the live queue's, not history's.
    pub fn stats(&self, now: Timestamp) -> QueueStats {
        let mut stats = QueueStats::default();
        for (state, count) in self.by_state.iter().filter(|(_, count)| **count > 0) {
            stats.by_state.insert(state.name().to_owned(), *count);
        }
        for (_, id) in &self.pending {
            let Some(task) = self.tasks.get(id) else {
                continue;
            };
            for tag in &task.tags {
                *stats.pending_by_tag.entry(tag.clone()).or_default() += 1;
            }
            let age =
                u64::try_from(now.as_micros() - task.enqueued_at.as_micros()).unwrap_or(0) / 1000;
            stats.oldest_pending_age_ms = Some(stats.oldest_pending_age_ms.unwrap_or(0).max(age));
        }
        stats
    }
}

impl Queue {
    /// An unfinished task, or the refusal for naming a finished or unknown one.
    pub(crate) fn unfinished(&self, task: u64) -> Result<&Task, CommandError> {
        self.get(task).ok_or_else(|| match self.finished.get(task) {
            Some(state) => finished(task, state),
            None => CommandError::UnknownTask { task },
        })
    }

    /// Whether `agent` holds the lease on `task`.
    pub(crate) fn check_lease(&self, agent: &str, task: u64) -> Result<(), CommandError> {
        let found = self.unfinished(task)?;
        match (found.state, found.holder.as_deref()) {
            (TaskState::Claimed, Some(holder)) if holder == agent => Ok(()),
            (TaskState::Claimed, Some(holder)) => Err(CommandError::NotYourTask {
                task,
                holder: holder.to_owned(),
            }),
            _ => Err(CommandError::NotClaimed { task }),
        }
    }
}

/// The refusal for acting on a finished task.
pub(crate) fn finished(task: u64, state: TaskState) -> CommandError {
    match state {
        TaskState::Completed => CommandError::AlreadyCompleted { task },
        other => CommandError::TaskFinished {
            task,
            state: other.name(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::retry_backoff_ms;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        assert_eq!(retry_backoff_ms(1), 1_000);
        assert_eq!(retry_backoff_ms(2), 2_000);
        assert_eq!(retry_backoff_ms(3), 4_000);
        assert_eq!(retry_backoff_ms(30), 300_000);
    }
}
