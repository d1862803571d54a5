//! The coordination commands, what they answer, and how they are refused.

use fleetlog_ledger::{Json, Outcome as WorkOutcome, SignalTarget, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};

use crate::approvals::Approval;
use crate::locks::Lock;
use crate::queue::Task;
use crate::signals::{Signal, SignalFilter};

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
    /// At least 1; [`crate::queue::MAX_ATTEMPTS_DEFAULT`] by default.
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

fn max_attempts_default() -> u32 {
    crate::queue::MAX_ATTEMPTS_DEFAULT
}

fn heartbeat_ttl_default() -> u64 {
    crate::agents::HEARTBEAT_TTL_MS_DEFAULT
}

fn signal_ttl_default() -> u64 {
    crate::signals::SIGNAL_TTL_MS_DEFAULT
}

fn lease_ttl_default() -> u64 {
    crate::queue::LEASE_TTL_MS_DEFAULT
}

fn yes() -> bool {
    true
}

fn broadcast() -> SignalTarget {
    SignalTarget::Broadcast
}

/// A signal's target in JSON: `"broadcast"`, `"*"` or null for everyone; an agent id, or
/// `{"agent": id}`, for one agent.
fn target<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SignalTarget, D::Error> {
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    enum Wire {
        Name(Option<String>),
        Tagged(SignalTarget),
    }
    Ok(match Wire::deserialize(deserializer)? {
        Wire::Name(None) => SignalTarget::Broadcast,
        Wire::Name(Some(name)) if name == "broadcast" || name == "*" => SignalTarget::Broadcast,
        Wire::Name(Some(name)) => SignalTarget::Agent(name),
        Wire::Tagged(target) => target,
    })
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

/// A completed stage's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageReport {
    pub stage: String,
    pub agent: String,
    #[serde(default)]
    pub tier: String,
    pub outcome: WorkOutcome,
    pub duration_ms: u64,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub quality: Option<f64>,
}

/// Every command the state machine accepts. `agent` is who issues it (the record's actor). In
/// JSON, tagged by `"command"` (`{"command": "acquire_lock", "agent": …}`), with defaults for
/// everything optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Register {
        agent: String,
        #[serde(default)]
        role: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        working_on: String,
        #[serde(default)]
        capabilities: Vec<String>,
        #[serde(default)]
        metadata: Json,
    },
    /// A sign of life. Fields left out keep their last value (`current_task: ""` clears it).
    Heartbeat {
        agent: String,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        progress: Option<f64>,
        #[serde(default)]
        current_task: Option<String>,
        #[serde(default)]
        metadata: Option<Json>,
        #[serde(default = "heartbeat_ttl_default")]
        ttl_ms: u64,
    },
    Deregister {
        agent: String,
        #[serde(default)]
        reason: String,
    },
    SendSignal {
        agent: String,
        kind: String,
        #[serde(default = "broadcast", deserialize_with = "target")]
        target: SignalTarget,
        #[serde(default)]
        payload: Json,
        #[serde(default = "signal_ttl_default")]
        ttl_ms: u64,
        #[serde(default)]
        correlation_id: Option<u64>,
    },
    /// Take (or, without `consume`, look at) the oldest matching signal; with `wait_ms`, wait
    /// that long for one to be sent.
    ReceiveSignal {
        agent: String,
        filter: SignalFilter,
        #[serde(default = "yes")]
        consume: bool,
        #[serde(default)]
        wait_ms: Option<u64>,
        /// Acknowledged delivery: the signal stays the receiver's until it sends
        /// `ack_signal`, and becomes receivable again if that does not happen within this many
        /// milliseconds. Implies `consume`. Without it, delivery is at most once.
        #[serde(default)]
        ack_ms: Option<u64>,
    },
    /// Acknowledges a signal received with `ack_ms`: it is consumed.
    AckSignal {
        agent: String,
        signal: u64,
    },
    AcquireLock {
        agent: String,
        resource: String,
        ttl_ms: u64,
        #[serde(default)]
        intent: String,
        /// Wait in FIFO order up to this long while another agent holds it.
        #[serde(default)]
        wait_ms: Option<u64>,
        /// A counting semaphore: up to this many holders of `resource` at once (e.g. LLM rate
        /// slots). The grant is a lock on one free slot, `<resource>/slot-<i>`, renewed and
        /// released by that name and its token like any lock. Give the same count everywhere.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
    },
    RenewLock {
        agent: String,
        resource: String,
        token: u64,
        ttl_ms: u64,
    },
    ReleaseLock {
        agent: String,
        resource: String,
        token: u64,
    },
    Enqueue {
        agent: String,
        spec: TaskSpec,
    },
    Claim {
        agent: String,
        /// Tags the task must carry: every one (`tag_match: all`, the default) or any one.
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        tag_match: crate::queue::TagMatch,
        /// Claim this task and no other.
        #[serde(default)]
        task: Option<u64>,
        #[serde(default = "lease_ttl_default")]
        lease_ttl_ms: u64,
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// The holder gives a claimed task back without counting the attempt; anyone requeues an
    /// escalated task.
    ReleaseTask {
        agent: String,
        task: u64,
        #[serde(default)]
        reason: String,
    },
    /// The holder reports progress (0..=1) and a free-form status.
    TaskProgress {
        agent: String,
        task: u64,
        #[serde(default)]
        progress: Option<f64>,
        #[serde(default)]
        status: String,
    },
    /// Puts a task aside for a decision: not claimable until released, cancelled or
    /// dead-lettered.
    EscalateTask {
        agent: String,
        task: u64,
        reason: String,
    },
    /// Moves an unfinished task to the dead-letter queue on request (e.g. the operator's).
    DeadLetterTask {
        agent: String,
        task: u64,
        reason: String,
    },
    RenewLease {
        agent: String,
        task: u64,
        #[serde(default = "lease_ttl_default")]
        lease_ttl_ms: u64,
    },
    Complete {
        agent: String,
        task: u64,
        #[serde(default)]
        result: Json,
    },
    Fail {
        agent: String,
        task: u64,
        error: String,
        #[serde(default = "yes")]
        retryable: bool,
    },
    Cancel {
        agent: String,
        task: u64,
        #[serde(default)]
        reason: String,
    },
    RequestApproval {
        agent: String,
        action: String,
        #[serde(default)]
        context: Json,
        #[serde(default)]
        approvers: Vec<String>,
        timeout_ms: u64,
    },
    Decide {
        agent: String,
        approval: u64,
        approved: bool,
        #[serde(default)]
        reason: String,
    },
    AwaitApproval {
        agent: String,
        approval: u64,
        wait_ms: u64,
    },
    Post {
        agent: String,
        title: String,
        message: String,
        #[serde(default)]
        priority: i32,
    },
    Reply {
        agent: String,
        thread: u64,
        message: String,
    },
    LogDecision {
        agent: String,
        decision_type: String,
        #[serde(default)]
        context: String,
        reason: String,
        #[serde(default)]
        alternatives: Vec<String>,
        #[serde(default)]
        metadata: Json,
    },
    StartWorkflow {
        agent: String,
        workflow_id: String,
        #[serde(default)]
        project: String,
        #[serde(default)]
        agent_plan: Vec<String>,
        #[serde(default)]
        estimated_duration_ms: Option<u64>,
    },
    StartStage {
        agent: String,
        workflow_id: String,
        stage: String,
        stage_agent: String,
        #[serde(default)]
        tier: String,
    },
    CompleteStage {
        agent: String,
        workflow_id: String,
        report: StageReport,
    },
    Handoff {
        agent: String,
        workflow_id: String,
        from_agent: String,
        to_agent: String,
        #[serde(default)]
        artifacts: Vec<String>,
    },
    Checkpoint {
        agent: String,
        workflow_id: String,
        stage: String,
        #[serde(default)]
        state: Json,
    },
    CompleteWorkflow {
        agent: String,
        workflow_id: String,
        success: bool,
        #[serde(default)]
        error: Option<String>,
        /// The agents that ran; empty means "those that completed stages".
        #[serde(default)]
        agents_executed: Vec<String>,
        /// How long it took, as the caller measured it (OaK's `duration_seconds` × 1000);
        /// without it, analytics use ledger times.
        #[serde(default)]
        duration_ms: Option<u64>,
    },
    CancelWorkflow {
        agent: String,
        workflow_id: String,
        #[serde(default)]
        reason: String,
    },
    SetBudget {
        agent: String,
        workflow_id: String,
        limit_usd: f64,
    },
    /// A daily spending limit (USD per UTC day) for one agent (`spender`) or, without one, for
    /// the whole fleet; `limit_usd: null` removes it. Stages are refused while one is exceeded.
    SetSpendLimit {
        agent: String,
        #[serde(default)]
        spender: Option<String>,
        limit_usd: Option<f64>,
    },
    Custom {
        agent: String,
        kind: String,
        #[serde(default)]
        payload: Json,
    },
    /// Appends existing telemetry (workflow starts, stages, handoffs, completions, with their
    /// original times in `occurred_at`) atomically: all or nothing.
    ImportTelemetry {
        agent: String,
        events: Vec<fleetlog_ledger::Event>,
    },
}

impl Outcome {
    /// Whether answering appended something (an empty wait or peek did not).
    pub fn changed_something(&self) -> bool {
        !matches!(
            self,
            Outcome::Signal { signal: None } | Outcome::Task { task: None }
        )
    }
}

impl Command {
    /// The command's name on the wire (its `command` field).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Heartbeat { .. } => "heartbeat",
            Command::Deregister { .. } => "deregister",
            Command::SendSignal { .. } => "send_signal",
            Command::ReceiveSignal { .. } => "receive_signal",
            Command::AckSignal { .. } => "ack_signal",
            Command::AcquireLock { .. } => "acquire_lock",
            Command::RenewLock { .. } => "renew_lock",
            Command::ReleaseLock { .. } => "release_lock",
            Command::Enqueue { .. } => "enqueue",
            Command::Claim { .. } => "claim",
            Command::ReleaseTask { .. } => "release_task",
            Command::TaskProgress { .. } => "task_progress",
            Command::EscalateTask { .. } => "escalate_task",
            Command::DeadLetterTask { .. } => "dead_letter_task",
            Command::RenewLease { .. } => "renew_lease",
            Command::Complete { .. } => "complete",
            Command::Fail { .. } => "fail",
            Command::Cancel { .. } => "cancel",
            Command::RequestApproval { .. } => "request_approval",
            Command::Decide { .. } => "decide",
            Command::AwaitApproval { .. } => "await_approval",
            Command::Post { .. } => "post",
            Command::Reply { .. } => "reply",
            Command::LogDecision { .. } => "log_decision",
            Command::StartWorkflow { .. } => "start_workflow",
            Command::StartStage { .. } => "start_stage",
            Command::CompleteStage { .. } => "complete_stage",
            Command::Handoff { .. } => "handoff",
            Command::Checkpoint { .. } => "checkpoint",
            Command::CompleteWorkflow { .. } => "complete_workflow",
            Command::CancelWorkflow { .. } => "cancel_workflow",
            Command::SetBudget { .. } => "set_budget",
            Command::SetSpendLimit { .. } => "set_spend_limit",
            Command::Custom { .. } => "custom",
            Command::ImportTelemetry { .. } => "import_telemetry",
        }
    }

    /// Who issues the command.
    pub fn agent(&self) -> &str {
        match self {
            Command::Register { agent, .. }
            | Command::Heartbeat { agent, .. }
            | Command::Deregister { agent, .. }
            | Command::SendSignal { agent, .. }
            | Command::ReceiveSignal { agent, .. }
            | Command::AckSignal { agent, .. }
            | Command::AcquireLock { agent, .. }
            | Command::RenewLock { agent, .. }
            | Command::ReleaseLock { agent, .. }
            | Command::Enqueue { agent, .. }
            | Command::Claim { agent, .. }
            | Command::ReleaseTask { agent, .. }
            | Command::TaskProgress { agent, .. }
            | Command::EscalateTask { agent, .. }
            | Command::DeadLetterTask { agent, .. }
            | Command::RenewLease { agent, .. }
            | Command::Complete { agent, .. }
            | Command::Fail { agent, .. }
            | Command::Cancel { agent, .. }
            | Command::RequestApproval { agent, .. }
            | Command::Decide { agent, .. }
            | Command::AwaitApproval { agent, .. }
            | Command::Post { agent, .. }
            | Command::Reply { agent, .. }
            | Command::LogDecision { agent, .. }
            | Command::StartWorkflow { agent, .. }
            | Command::StartStage { agent, .. }
            | Command::CompleteStage { agent, .. }
            | Command::Handoff { agent, .. }
            | Command::Checkpoint { agent, .. }
            | Command::CompleteWorkflow { agent, .. }
            | Command::CancelWorkflow { agent, .. }
            | Command::SetBudget { agent, .. }
            | Command::SetSpendLimit { agent, .. }
            | Command::Custom { agent, .. }
            | Command::ImportTelemetry { agent, .. } => agent,
        }
    }
}

/// What an accepted command answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[schemars(rename = "CommandOutcome")]
// One outcome per command, moved once: boxing the task would cost an allocation per claim.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The command's primary (first) event is at `seq`; for creations, `seq` is the new id.
    Appended { seq: u64 },
    /// A signal check or wait: the signal, or none.
    Signal { signal: Option<Signal> },
    /// A granted lock; its token is its fencing token.
    Lock { lock: Lock },
    /// A claim: the task now leased to the caller, or none available.
    Task { task: Option<Task> },
    /// An approval's decision (or expiry).
    Approval { approval: Approval },
}

/// Why a command was refused. Each names what was wrong and what to do; serialised, a refusal
/// is its code and its fields (`{"error": "lock_held", "details": {"holder": …}}`).
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, schemars::JsonSchema)]
#[serde(tag = "error", content = "details", rename_all = "snake_case")]
pub enum CommandError {
    #[error("agent {agent:?} is not registered (or has deregistered); register it first")]
    UnknownAgent { agent: String },
    #[error(
        "agent {agent:?} expired at {deadline} (no sign of life within its TTL) and lost what it held; heartbeat or register again before acting"
    )]
    AgentExpired { agent: String, deadline: Timestamp },
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("the event would break a ledger limit: {0}")]
    Rejected(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(
        "{resource:?} is locked by {holder:?} (token {token}) until {expires_at}; wait for it or try later"
    )]
    LockHeld {
        resource: String,
        holder: String,
        token: u64,
        expires_at: Timestamp,
    },
    #[error(
        "all {slots} slots of {resource:?} are held (by {holders:?}); wait for one (wait_ms) or try later"
    )]
    SlotsFull {
        resource: String,
        slots: u32,
        holders: Vec<String>,
    },
    #[error("you already hold {resource:?} with token {token}; renew it instead")]
    AlreadyHeld { resource: String, token: u64 },
    #[error(
        "{resource:?} is not locked (an expired lock is released automatically); acquire it again"
    )]
    NotLocked { resource: String },
    #[error(
        "{resource:?} is held by {holder:?}, not by you; only the holder may renew or release it"
    )]
    NotHolder { resource: String, holder: String },
    #[error(
        "token {given} for {resource:?} is stale: the current token is {current}; your lock was lost"
    )]
    WrongToken {
        resource: String,
        given: u64,
        current: u64,
    },
    #[error("task {task} does not exist")]
    UnknownTask { task: u64 },
    #[error("task {task} is already completed")]
    AlreadyCompleted { task: u64 },
    #[error("task {task} is already {state}; it cannot change any more")]
    TaskFinished { task: u64, state: &'static str },
    #[error("task {task} is leased to {holder:?}, not to you")]
    NotYourTask { task: u64, holder: String },
    #[error(
        "signal {signal} is not awaiting your acknowledgement (never delivered to you with ack_ms, already acknowledged, or its deadline passed and it was redelivered); receive it again"
    )]
    NotDelivered { signal: u64 },
    #[error(
        "the inbox of {agent:?} holds {limit} live signals; it must receive some (or let them expire) before more can be sent"
    )]
    InboxFull { agent: String, limit: u64 },
    #[error(
        "idempotency key {key:?} was first used for a different command; use a fresh key for a new command"
    )]
    IdempotencyConflict { key: String },
    #[error(
        "task {task} is not claimed by you (its lease may have expired and it was requeued); claim it again"
    )]
    NotClaimed { task: u64 },
    #[error("approval {approval} does not exist")]
    UnknownApproval { approval: u64 },
    #[error(
        "task {task} needs capabilities this agent lacks: {missing:?}; a capable agent claims it (register with --capability)"
    )]
    NotCapable { task: u64, missing: Vec<String> },
    #[error("task key {key:?} is already task {task}: keys are unique; look it up instead")]
    TaskKeyExists { key: String, task: u64 },
    #[error(
        "approval {approval} was requested by this agent and names no approver: another agent decides it (a requester allowed to approve its own request names itself among the approvers)"
    )]
    SelfApproval { approval: u64 },
    #[error("approval {approval} was already decided")]
    AlreadyDecided { approval: u64 },
    #[error("approval {approval} expired at {deadline} without a decision; request a new one")]
    ApprovalExpired { approval: u64, deadline: Timestamp },
    #[error("you may not decide approval {approval}; its approvers are {approvers:?}")]
    NotAnApprover {
        approval: u64,
        approvers: Vec<String>,
    },
    #[error("thread {thread} does not exist")]
    UnknownThread { thread: u64 },
    #[error("workflow {workflow_id:?} does not exist; start it first")]
    UnknownWorkflow { workflow_id: String },
    #[error("workflow {workflow_id:?} already exists; use a new id")]
    WorkflowExists { workflow_id: String },
    #[error("workflow {workflow_id:?} has already finished ({status})")]
    WorkflowFinished { workflow_id: String, status: String },
    #[error(
        "workflow {workflow_id:?} has spent ${spent_usd:.4} of its ${limit_usd:.2} budget; raise the budget to start more stages"
    )]
    OverBudget {
        workflow_id: String,
        limit_usd: f64,
        spent_usd: f64,
    },
    #[error(
        "{} has spent ${spent_usd:.4} of its ${limit_usd:.2} daily limit on {day}; raise the limit (set_spend_limit) or wait for the next UTC day",
        spender.as_deref().map_or_else(|| "the fleet".to_owned(), |agent| format!("agent {agent:?}"))
    )]
    OverSpendLimit {
        spender: Option<String>,
        day: String,
        limit_usd: f64,
        spent_usd: f64,
    },
    #[error("{what} already has {limit} waiters; try again later")]
    TooManyWaiters { what: String, limit: usize },
    #[error("timed out after {waited_ms} ms")]
    TimedOut { waited_ms: u64 },
    #[error(
        "the command was not made durable ({cause}); it may be retried once the ledger is reopened"
    )]
    NotDurable { cause: String },
    #[error("the ledger is closing; retry once it is open again")]
    Closing,
}

impl CommandError {
    /// A stable machine-readable code (for the HTTP API and `--json`).
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownAgent { .. } => "unknown_agent",
            CommandError::AgentExpired { .. } => "agent_expired",
            CommandError::Invalid { .. } => "invalid",
            CommandError::Rejected(_) => "rejected",
            CommandError::TooLarge(_) => "too_large",
            CommandError::LockHeld { .. } => "lock_held",
            CommandError::SlotsFull { .. } => "slots_full",
            CommandError::AlreadyHeld { .. } => "already_held",
            CommandError::NotLocked { .. } => "not_locked",
            CommandError::NotHolder { .. } => "not_holder",
            CommandError::WrongToken { .. } => "wrong_token",
            CommandError::UnknownTask { .. } => "unknown_task",
            CommandError::AlreadyCompleted { .. } => "already_completed",
            CommandError::TaskFinished { .. } => "task_finished",
            CommandError::NotYourTask { .. } => "not_your_task",
            CommandError::NotDelivered { .. } => "not_delivered",
            CommandError::InboxFull { .. } => "inbox_full",
            CommandError::IdempotencyConflict { .. } => "idempotency_conflict",
            CommandError::NotClaimed { .. } => "not_claimed",
            CommandError::UnknownApproval { .. } => "unknown_approval",
            CommandError::SelfApproval { .. } => "self_approval",
            CommandError::NotCapable { .. } => "not_capable",
            CommandError::TaskKeyExists { .. } => "task_key_exists",
            CommandError::AlreadyDecided { .. } => "already_decided",
            CommandError::ApprovalExpired { .. } => "approval_expired",
            CommandError::NotAnApprover { .. } => "not_an_approver",
            CommandError::UnknownThread { .. } => "unknown_thread",
            CommandError::UnknownWorkflow { .. } => "unknown_workflow",
            CommandError::WorkflowExists { .. } => "workflow_exists",
            CommandError::WorkflowFinished { .. } => "workflow_finished",
            CommandError::OverBudget { .. } => "over_budget",
            CommandError::OverSpendLimit { .. } => "over_spend_limit",
            CommandError::TooManyWaiters { .. } => "too_many_waiters",
            CommandError::TimedOut { .. } => "timed_out",
            CommandError::NotDurable { .. } => "not_durable",
            CommandError::Closing => "closing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Command, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn commands_parse_from_json_with_defaults() {
        let heartbeat =
            parse(serde_json::json!({"command": "heartbeat", "agent": "a"})).expect("parses");
        assert_eq!(
            heartbeat,
            Command::Heartbeat {
                agent: "a".into(),
                status: None,
                progress: None,
                current_task: None,
                metadata: None,
                ttl_ms: crate::agents::HEARTBEAT_TTL_MS_DEFAULT,
            }
        );
        let enqueue = parse(serde_json::json!({"command": "enqueue", "agent": "a", "spec": {"title": "t", "priority": 2}}))
            .expect("parses");
        let Command::Enqueue { spec, .. } = enqueue else {
            panic!("enqueue")
        };
        assert_eq!(
            (spec.priority, spec.max_attempts),
            (2, crate::queue::MAX_ATTEMPTS_DEFAULT)
        );
    }

    #[test]
    fn a_signal_target_may_be_a_name_broadcast_or_tagged() {
        for (target, expected) in [
            (serde_json::json!("b"), SignalTarget::Agent("b".into())),
            (
                serde_json::json!({"agent": "b"}),
                SignalTarget::Agent("b".into()),
            ),
            (serde_json::json!("broadcast"), SignalTarget::Broadcast),
            (serde_json::json!(null), SignalTarget::Broadcast),
        ] {
            let command = parse(serde_json::json!({"command": "send_signal", "agent": "a", "kind": "k", "target": target}))
                .expect("parses");
            let Command::SendSignal { target, .. } = command else {
                panic!("send")
            };
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn unknown_fields_and_commands_are_refused_by_name() {
        let typo =
            parse(serde_json::json!({"command": "heartbeat", "agent": "a", "ttl": 5})).unwrap_err();
        assert!(typo.to_string().contains("ttl"), "{typo}");
        let unknown = parse(serde_json::json!({"command": "fly", "agent": "a"})).unwrap_err();
        assert!(unknown.to_string().contains("fly"), "{unknown}");
    }
}
