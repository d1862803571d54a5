//! The queue's commands and the task spec they carry.

use fleetlog_ledger::{Json, Timestamp};
use serde::{Deserialize, Serialize};

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
    crate::queue::MAX_ATTEMPTS_DEFAULT
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
