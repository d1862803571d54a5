//! The task queue. Claim order: highest priority first, then oldest (lowest id); a task is
//! claimable when pending, its dependencies are all completed, and its `not_before` and
//! `retry_at` have passed. A claim is a lease: it must be renewed, completed or failed before it
//! expires, or the task is requeued with the attempt counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    /// Each task behind an `Arc`: the copies of the state the publisher keeps for readers share
    /// every task that did not change between them (finished ones, above all), so memory and
    /// the cost of a copy follow what changes, not history. Changed copy-on-write.
    pub tasks: BTreeMap<u64, Arc<Task>>,
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

impl Queue {
    pub(crate) fn apply(&mut self, record: &Record) {
        let ts = record.ts;
        match &record.event {
            Event::TaskEnqueued {
                title,
                description,
                priority,
                tags,
                payload,
                max_attempts,
                depends_on,
                not_before,
                workflow_id,
            } => {
                let id = record.seq;
                for dependency in depends_on {
                    self.dependents.entry(*dependency).or_default().push(id);
                }
                self.pending.insert((Reverse(*priority), id));
                self.tasks.insert(
                    id,
                    Arc::new(Task {
                        id,
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
                        enqueued_at: ts,
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
                    }),
                );
                *self.by_state.entry(TaskState::Pending).or_default() += 1;
            }
            Event::TaskOptions {
                task,
                key,
                capabilities,
                escalate_when_exhausted,
            } => {
                if let Some(key) = key {
                    self.by_key.insert(key.clone(), *task);
                }
                self.update(*task, |task| {
                    task.key = key.clone();
                    task.required_capabilities = capabilities.clone();
                    task.escalate_when_exhausted = *escalate_when_exhausted;
                });
            }
            Event::TaskReleased { task, .. } => self.update(*task, |task| {
                // A release gives the attempt back: only a claim that ends badly counts.
                if task.state == TaskState::Claimed {
                    task.attempts = task.attempts.saturating_sub(1);
                }
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.escalation = None;
            }),
            Event::TaskProgressed {
                task,
                progress,
                status,
            } => self.update(*task, |task| {
                task.progress = *progress;
                task.status = Some(status.clone());
            }),
            Event::TaskEscalated { task, reason } => self.update(*task, |task| {
                task.state = TaskState::Escalated;
                task.holder = None;
                task.lease_expires = None;
                task.escalation = Some(Escalation {
                    reason: reason.clone(),
                    by: record.actor.clone(),
                    at: ts,
                });
            }),
            Event::TaskClaimed {
                task,
                lease_ttl_ms,
                attempt,
            } => self.update(*task, |task| {
                task.state = TaskState::Claimed;
                task.holder = Some(record.actor.clone());
                task.attempts = *attempt;
                task.claimed_at = Some(ts);
                task.lease_expires = Some(ts.plus_millis(*lease_ttl_ms));
                task.retry_at = None;
            }),
            Event::TaskLeaseRenewed { task, lease_ttl_ms } => self.update(*task, |task| {
                task.lease_expires = Some(ts.plus_millis(*lease_ttl_ms));
            }),
            Event::TaskLeaseExpired { task, .. } => self.update(*task, |task| {
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.last_error = Some("lease expired".to_owned());
            }),
            Event::TaskCompleted { task, result } => self.update(*task, |task| {
                task.state = TaskState::Completed;
                task.result = Some(result.clone());
                task.finished_at = Some(ts);
                task.lease_expires = None;
            }),
            Event::TaskFailed {
                task,
                error,
                retry_at,
                ..
            } => self.update(*task, |task| {
                task.state = TaskState::Pending;
                task.holder = None;
                task.lease_expires = None;
                task.last_error = Some(error.clone());
                task.retry_at = *retry_at;
            }),
            Event::TaskDeadLettered { task, .. } => {
                self.finish(*task, TaskState::DeadLettered, ts);
            }
            Event::TaskCancelled { task, .. } => self.finish(*task, TaskState::Cancelled, ts),
            Event::TaskSkipped { task, .. } => self.finish(*task, TaskState::Skipped, ts),
            _ => {}
        }
    }

    /// Applies `change` and keeps the pending and claimed indexes in step with the task.
    fn update(&mut self, id: u64, change: impl FnOnce(&mut Task)) {
        if let Some(task) = self.tasks.get_mut(&id) {
            let task = Arc::make_mut(task);
            if let (TaskState::Claimed, Some(holder)) = (task.state, task.holder.take()) {
                self.claimed.remove(&(holder.clone(), id));
                task.holder = Some(holder);
            }
            let before = task.state;
            change(task);
            if task.state != before {
                if let Some(count) = self.by_state.get_mut(&before) {
                    *count -= 1;
                }
                *self.by_state.entry(task.state).or_default() += 1;
            }
            let key = (Reverse(task.priority), id);
            match task.state {
                TaskState::Pending => self.pending.insert(key),
                _ => self.pending.remove(&key),
            };
            if let (TaskState::Claimed, Some(holder)) = (task.state, &task.holder) {
                self.claimed.insert((holder.clone(), id));
            }
        }
    }

    fn finish(&mut self, id: u64, state: TaskState, ts: Timestamp) {
        self.update(id, |task| {
            task.state = state;
            task.holder = None;
            task.lease_expires = None;
            task.finished_at = Some(ts);
        });
    }

    pub fn get(&self, id: u64) -> Option<&Task> {
        self.tasks.get(&id).map(|task| &**task)
    }

    fn dependencies_done(&self, task: &Task) -> bool {
        task.depends_on.iter().all(|dependency| {
            self.tasks
                .get(dependency)
                .is_some_and(|dependency| dependency.state == TaskState::Completed)
        })
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
    pub fn by_key(&self, key: &str) -> Option<&Task> {
        self.by_key.get(key).and_then(|id| self.get(*id))
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

/// Adds a task to the queue; the answer's seq is the task's id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Enqueue {
    pub agent: String,
    pub spec: TaskSpec,
}

/// Leases the best claimable task (highest priority, then oldest); with `wait_ms`, waits
/// that long for one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub agent: String,
    /// Tags the task must carry: every one (`tag_match: all`, the default) or any one.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub tag_match: crate::queue::TagMatch,
    /// Claim this task and no other.
    #[serde(default)]
    pub task: Option<u64>,
    #[serde(default = "lease_ttl_default")]
    pub lease_ttl_ms: u64,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The holder gives a claimed task back without counting the attempt; anyone requeues an
/// escalated task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTask {
    pub agent: String,
    pub task: u64,
    #[serde(default)]
    pub reason: String,
}

/// The holder reports progress (0..=1) and a free-form status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub agent: String,
    pub task: u64,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub status: String,
}

/// Puts a task aside for a decision: not claimable until released, cancelled or
/// dead-lettered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalateTask {
    pub agent: String,
    pub task: u64,
    pub reason: String,
}

/// Moves an unfinished task to the dead-letter queue on request (e.g. the operator's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterTask {
    pub agent: String,
    pub task: u64,
    pub reason: String,
}

/// The holder extends its lease on a claimed task to `lease_ttl_ms` from now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLease {
    pub agent: String,
    pub task: u64,
    #[serde(default = "lease_ttl_default")]
    pub lease_ttl_ms: u64,
}

/// The holder finishes its task, with a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    pub agent: String,
    pub task: u64,
    #[serde(default)]
    pub result: Json,
}

/// The holder reports its attempt failed: retried later while attempts remain and
/// `retryable`, else dead-lettered (or escalated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    pub agent: String,
    pub task: u64,
    pub error: String,
    #[serde(default = "crate::command::yes")]
    pub retryable: bool,
}

/// Stops an unfinished task for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTask {
    pub agent: String,
    pub task: u64,
    #[serde(default)]
    pub reason: String,
}

/// A task to enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub payload: Json,
    /// At least 1; 3 (`MAX_ATTEMPTS_DEFAULT`) by default.
    #[serde(default = "max_attempts_default")]
    pub max_attempts: u32,
    #[serde(default)]
    pub depends_on: Vec<u64>,
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// The caller's own id for the task, unique in the ledger (look it up with
    /// `GET /v1/tasks?key=…`).
    #[serde(default)]
    pub key: Option<String>,
    /// Only an agent with all of these capabilities may claim it.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// Running out of attempts escalates the task (for someone to decide) instead of
    /// dead-lettering it.
    #[serde(default)]
    pub escalate_when_exhausted: bool,
}

pub(crate) fn max_attempts_default() -> u32 {
    MAX_ATTEMPTS_DEFAULT
}

impl TaskSpec {
    pub fn new(title: impl Into<String>) -> Self {
        TaskSpec {
            title: title.into(),
            description: String::new(),
            priority: 0,
            tags: Vec::new(),
            payload: Json::null(),
            max_attempts: crate::queue::MAX_ATTEMPTS_DEFAULT,
            depends_on: Vec::new(),
            not_before: None,
            workflow_id: None,
            key: None,
            required_capabilities: Vec::new(),
            escalate_when_exhausted: false,
        }
    }
}

fn lease_ttl_default() -> u64 {
    crate::queue::LEASE_TTL_MS_DEFAULT
}

impl Queue {
    /// Whether `agent` holds the lease on `task`.
    pub(crate) fn check_lease(&self, agent: &str, task: u64) -> Result<(), CommandError> {
        let found = self.get(task).ok_or(CommandError::UnknownTask { task })?;
        match (found.state, found.holder.as_deref()) {
            (TaskState::Claimed, Some(holder)) if holder == agent => Ok(()),
            (TaskState::Claimed, Some(holder)) => Err(CommandError::NotYourTask {
                task,
                holder: holder.to_owned(),
            }),
            (TaskState::Completed, _) => Err(CommandError::AlreadyCompleted { task }),
            (state, _) if state.is_final() => Err(finished(task, state)),
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
