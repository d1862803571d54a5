//! The coordination vocabulary: every event a fleet can record.
//!
//! The order of [`Event`]'s variants and of each variant's fields *is* the on-disk format (bincode
//! writes the variant index and then the fields in order). New variants are only ever appended at
//! the end; a change to an existing variant needs a new format version. `docs/format.md` lists
//! every variant with its index.
//!
//! Ids of things created by an event (signals, tasks, approvals, threads) are the `seq` of the
//! event that created them, and a lock's fencing token is the `seq` of its grant: strictly
//! increasing, and free of any extra state. So events refer to them as `u64`.
//!
//! Events name their subject (`agent`, `holder`) only where it can differ from the record's
//! `actor`: expiry events are appended by the ledger itself, and workflow telemetry is often
//! reported by an orchestrator on behalf of the agent that did the work.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use crate::json::Json;
pub use crate::time::Timestamp;

/// Who a signal is for.
#[derive(
    Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalTarget {
    /// One agent, by id.
    Agent(String),
    /// Every agent: each consumes its own copy.
    Broadcast,
}

/// How a unit of agent work ended.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Encode,
    Decode,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "WorkOutcome")]
pub enum Outcome {
    Success,
    Failure,
    Partial,
    Unknown,
}

/// One coordination action. See the module docs for the stability rules.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    // --- agents and heartbeats -------------------------------------------------------------
    AgentRegistered {
        role: String,
        name: String,
        working_on: String,
        capabilities: Vec<String>,
        metadata: Json,
    },
    AgentHeartbeat {
        status: String,
        /// 0.0 ..= 1.0 when the agent reports it.
        progress: Option<f64>,
        current_task: Option<String>,
        metadata: Json,
        ttl_ms: u64,
    },
    AgentDeregistered {
        reason: String,
    },
    AgentExpired {
        agent: String,
        last_seen: Timestamp,
        deadline: Timestamp,
    },

    // --- signals ---------------------------------------------------------------------------
    SignalSent {
        kind: String,
        target: SignalTarget,
        payload: Json,
        ttl_ms: u64,
        /// The signal this one answers, for request/response.
        correlation_id: Option<u64>,
    },
    SignalConsumed {
        signal: u64,
    },
    SignalExpired {
        signal: u64,
        deadline: Timestamp,
    },

    // --- locks -----------------------------------------------------------------------------
    LockAcquired {
        resource: String,
        intent: String,
        ttl_ms: u64,
        /// When the acquire request arrived; equals the record's time unless it waited.
        requested_at: Timestamp,
        /// The expired token this grant took over, if any.
        takeover_of: Option<u64>,
    },
    LockRenewed {
        resource: String,
        token: u64,
        ttl_ms: u64,
    },
    LockReleased {
        resource: String,
        token: u64,
    },
    LockExpired {
        resource: String,
        token: u64,
        holder: String,
        deadline: Timestamp,
    },

    // --- task queue ------------------------------------------------------------------------
    TaskEnqueued {
        title: String,
        description: String,
        priority: i32,
        tags: Vec<String>,
        payload: Json,
        max_attempts: u32,
        depends_on: Vec<u64>,
        not_before: Option<Timestamp>,
        workflow_id: Option<String>,
    },
    TaskClaimed {
        task: u64,
        lease_ttl_ms: u64,
        attempt: u32,
    },
    TaskLeaseRenewed {
        task: u64,
        lease_ttl_ms: u64,
    },
    TaskLeaseExpired {
        task: u64,
        agent: String,
        attempt: u32,
        deadline: Timestamp,
    },
    TaskCompleted {
        task: u64,
        result: Json,
    },
    TaskFailed {
        task: u64,
        error: String,
        retryable: bool,
        /// When the task may be claimed again; `None` when it will not be retried.
        retry_at: Option<Timestamp>,
    },
    TaskDeadLettered {
        task: u64,
        reason: String,
    },
    TaskCancelled {
        task: u64,
        reason: String,
    },
    TaskSkipped {
        task: u64,
        /// The dependency that was dead-lettered, cancelled or skipped.
        blocked_by: u64,
    },

    // --- approvals -------------------------------------------------------------------------
    ApprovalRequested {
        action: String,
        context: Json,
        /// Empty means any agent may decide.
        approvers: Vec<String>,
        timeout_ms: u64,
    },
    ApprovalDecided {
        approval: u64,
        approved: bool,
        reason: String,
    },
    ApprovalExpired {
        approval: u64,
        deadline: Timestamp,
    },

    // --- board -----------------------------------------------------------------------------
    ThreadPosted {
        title: String,
        message: String,
        priority: i32,
    },
    ThreadReplied {
        thread: u64,
        message: String,
    },

    // --- decisions -------------------------------------------------------------------------
    DecisionLogged {
        decision_type: String,
        context: String,
        reason: String,
        alternatives: Vec<String>,
        metadata: Json,
    },

    // --- workflows -------------------------------------------------------------------------
    // `occurred_at` is set for imported telemetry; `None` means "when it was appended".
    WorkflowStarted {
        workflow_id: String,
        project: String,
        agent_plan: Vec<String>,
        estimated_duration_ms: Option<u64>,
        session_id: Option<String>,
        occurred_at: Option<Timestamp>,
    },
    StageStarted {
        workflow_id: String,
        stage: String,
        agent: String,
        tier: String,
        occurred_at: Option<Timestamp>,
    },
    StageCompleted {
        workflow_id: String,
        stage: String,
        agent: String,
        tier: String,
        outcome: Outcome,
        duration_ms: u64,
        cost_usd: f64,
        tokens: u64,
        /// What the stage did, in words: feeds relevance ranking.
        description: String,
        tags: Vec<String>,
        quality: Option<f64>,
        occurred_at: Option<Timestamp>,
    },
    Handoff {
        workflow_id: String,
        from_agent: String,
        to_agent: String,
        artifacts: Vec<String>,
        occurred_at: Option<Timestamp>,
    },
    Checkpoint {
        workflow_id: String,
        stage: String,
        state: Json,
    },
    WorkflowCompleted {
        workflow_id: String,
        success: bool,
        error: Option<String>,
        agents_executed: Vec<String>,
        duration_ms: Option<u64>,
        occurred_at: Option<Timestamp>,
    },
    WorkflowCancelled {
        workflow_id: String,
        reason: String,
    },
    BudgetSet {
        workflow_id: String,
        limit_usd: f64,
    },
    BudgetExceeded {
        workflow_id: String,
        limit_usd: f64,
        spent_usd: f64,
    },

    // --- user actions ----------------------------------------------------------------------
    Custom {
        kind: String,
        payload: Json,
    },

    // --- acknowledged signal delivery (format 1, added after `custom`: variant order is the
    // encoding, so new variants only ever go at the end) -----------------------------------
    /// The actor received `signal` and must acknowledge it within `ack_ms`; until then the
    /// signal is the actor's and nobody else receives it.
    SignalDelivered {
        signal: u64,
        ack_ms: u64,
    },
    /// The actor acknowledged `signal`: it is consumed.
    SignalAcked {
        signal: u64,
    },
    /// `agent` did not acknowledge `signal` by `deadline`: it is receivable again.
    SignalAckExpired {
        signal: u64,
        agent: String,
        deadline: Timestamp,
    },

    // --- task lifecycle, second part (format 1, appended) ---------------------------------
    /// More of the task enqueued by `task`'s record, written in the same batch right after it:
    /// a caller-chosen `key` (unique), the capabilities a claimant must have, and whether
    /// running out of attempts escalates it instead of dead-lettering it.
    TaskOptions {
        task: u64,
        key: Option<String>,
        capabilities: Vec<String>,
        escalate_when_exhausted: bool,
    },
    /// The actor gave `task` back to the queue (its holder), or requeued an escalated task;
    /// the attempt is not counted.
    TaskReleased {
        task: u64,
        reason: String,
    },
    /// The holder's progress report on `task`.
    TaskProgressed {
        task: u64,
        progress: Option<f64>,
        status: String,
    },
    /// `task` needs a human (or another agent's) decision: not claimable until released,
    /// cancelled or dead-lettered.
    TaskEscalated {
        task: u64,
        reason: String,
    },
    /// A daily spending limit: of one agent (`spender`), or of the whole fleet (`None`), per UTC
    /// day of ledger time. `limit_usd: None` removes it.
    SpendLimitSet {
        spender: Option<String>,
        limit_usd: Option<f64>,
    },
    /// A completed stage took the day's spend of `spender` (or the fleet's) past its limit.
    SpendLimitExceeded {
        spender: Option<String>,
        /// The UTC day, `YYYY-MM-DD`.
        day: String,
        limit_usd: f64,
        spent_usd: f64,
    },
}

impl Event {
    /// The variant's name as it appears in JSON (`"lock_acquired"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentRegistered { .. } => "agent_registered",
            Event::AgentHeartbeat { .. } => "agent_heartbeat",
            Event::AgentDeregistered { .. } => "agent_deregistered",
            Event::AgentExpired { .. } => "agent_expired",
            Event::SignalSent { .. } => "signal_sent",
            Event::SignalConsumed { .. } => "signal_consumed",
            Event::SignalExpired { .. } => "signal_expired",
            Event::LockAcquired { .. } => "lock_acquired",
            Event::LockRenewed { .. } => "lock_renewed",
            Event::LockReleased { .. } => "lock_released",
            Event::LockExpired { .. } => "lock_expired",
            Event::TaskEnqueued { .. } => "task_enqueued",
            Event::TaskClaimed { .. } => "task_claimed",
            Event::TaskLeaseRenewed { .. } => "task_lease_renewed",
            Event::TaskLeaseExpired { .. } => "task_lease_expired",
            Event::TaskCompleted { .. } => "task_completed",
            Event::TaskFailed { .. } => "task_failed",
            Event::TaskDeadLettered { .. } => "task_dead_lettered",
            Event::TaskCancelled { .. } => "task_cancelled",
            Event::TaskSkipped { .. } => "task_skipped",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::ApprovalDecided { .. } => "approval_decided",
            Event::ApprovalExpired { .. } => "approval_expired",
            Event::ThreadPosted { .. } => "thread_posted",
            Event::ThreadReplied { .. } => "thread_replied",
            Event::DecisionLogged { .. } => "decision_logged",
            Event::WorkflowStarted { .. } => "workflow_started",
            Event::StageStarted { .. } => "stage_started",
            Event::StageCompleted { .. } => "stage_completed",
            Event::Handoff { .. } => "handoff",
            Event::Checkpoint { .. } => "checkpoint",
            Event::WorkflowCompleted { .. } => "workflow_completed",
            Event::WorkflowCancelled { .. } => "workflow_cancelled",
            Event::BudgetSet { .. } => "budget_set",
            Event::BudgetExceeded { .. } => "budget_exceeded",
            Event::Custom { .. } => "custom",
            Event::SignalDelivered { .. } => "signal_delivered",
            Event::SignalAcked { .. } => "signal_acked",
            Event::SignalAckExpired { .. } => "signal_ack_expired",
            Event::TaskOptions { .. } => "task_options",
            Event::TaskReleased { .. } => "task_released",
            Event::TaskProgressed { .. } => "task_progressed",
            Event::TaskEscalated { .. } => "task_escalated",
            Event::SpendLimitSet { .. } => "spend_limit_set",
            Event::SpendLimitExceeded { .. } => "spend_limit_exceeded",
        }
    }

    /// When what the event records happened, if not when it was appended: imported telemetry
    /// keeps its original time here.
    pub fn occurred_at(&self) -> Option<Timestamp> {
        match self {
            Event::WorkflowStarted { occurred_at, .. }
            | Event::StageStarted { occurred_at, .. }
            | Event::StageCompleted { occurred_at, .. }
            | Event::Handoff { occurred_at, .. }
            | Event::WorkflowCompleted { occurred_at, .. } => *occurred_at,
            _ => None,
        }
    }

    /// The times an event carries (at most two), named by field.
    pub(crate) fn times(&self) -> [Option<(&'static str, Timestamp)>; 2] {
        let opt = |field, time: &Option<Timestamp>| time.map(|time| (field, time));
        match self {
            Event::AgentExpired {
                last_seen,
                deadline,
                ..
            } => [
                Some(("last_seen", *last_seen)),
                Some(("deadline", *deadline)),
            ],
            Event::SignalExpired { deadline, .. }
            | Event::SignalAckExpired { deadline, .. }
            | Event::LockExpired { deadline, .. }
            | Event::TaskLeaseExpired { deadline, .. }
            | Event::ApprovalExpired { deadline, .. } => [Some(("deadline", *deadline)), None],
            Event::LockAcquired { requested_at, .. } => {
                [Some(("requested_at", *requested_at)), None]
            }
            Event::TaskEnqueued { not_before, .. } => [opt("not_before", not_before), None],
            Event::TaskFailed { retry_at, .. } => [opt("retry_at", retry_at), None],
            Event::WorkflowStarted { occurred_at, .. }
            | Event::StageStarted { occurred_at, .. }
            | Event::StageCompleted { occurred_at, .. }
            | Event::Handoff { occurred_at, .. }
            | Event::WorkflowCompleted { occurred_at, .. } => {
                [opt("occurred_at", occurred_at), None]
            }
            _ => [None, None],
        }
    }
}
