//! The coordination commands, what they answer, and how they are refused.

use crate::commands::*;
use fleetlog_ledger::Timestamp;
use serde::{Deserialize, Serialize};

use crate::approvals::Approval;
use crate::locks::Lock;
use crate::queue::Task;
use crate::signals::Signal;

pub(crate) fn yes() -> bool {
    true
}

/// Every command the state machine accepts. `agent` is who issues it (the record's actor). In
/// JSON, tagged by `"command"` (`{"command": "acquire_lock", "agent": …}`), with defaults for
/// everything optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Register(Register),
    Heartbeat(Heartbeat),
    Deregister(Deregister),
    SendSignal(SendSignal),
    ReceiveSignal(ReceiveSignal),
    AckSignal(AckSignal),
    AcquireLock(AcquireLock),
    RenewLock(RenewLock),
    ReleaseLock(ReleaseLock),
    Enqueue(Enqueue),
    Claim(Claim),
    ReleaseTask(ReleaseTask),
    TaskProgress(TaskProgress),
    EscalateTask(EscalateTask),
    DeadLetterTask(DeadLetterTask),
    RenewLease(RenewLease),
    Complete(CompleteTask),
    Fail(FailTask),
    Cancel(CancelTask),
    RequestApproval(RequestApproval),
    Decide(DecideApproval),
    AwaitApproval(AwaitApproval),
    Post(PostThread),
    Reply(ReplyToThread),
    LogDecision(LogDecision),
    StartWorkflow(StartWorkflow),
    StartStage(StartStage),
    CompleteStage(CompleteStage),
    Handoff(RecordHandoff),
    Checkpoint(Checkpoint),
    CompleteWorkflow(CompleteWorkflow),
    CancelWorkflow(CancelWorkflow),
    SetBudget(SetBudget),
    SetSpendLimit(SetSpendLimit),
    Custom(CustomEvent),
    ImportTelemetry(ImportTelemetry),
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
        self.parts().0
    }

    /// Who issues the command.
    pub fn agent(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&'static str, &str) {
        match self {
            Command::Register(c) => ("register", &c.agent),
            Command::Heartbeat(c) => ("heartbeat", &c.agent),
            Command::Deregister(c) => ("deregister", &c.agent),
            Command::SendSignal(c) => ("send_signal", &c.agent),
            Command::ReceiveSignal(c) => ("receive_signal", &c.agent),
            Command::AckSignal(c) => ("ack_signal", &c.agent),
            Command::AcquireLock(c) => ("acquire_lock", &c.agent),
            Command::RenewLock(c) => ("renew_lock", &c.agent),
            Command::ReleaseLock(c) => ("release_lock", &c.agent),
            Command::Enqueue(c) => ("enqueue", &c.agent),
            Command::Claim(c) => ("claim", &c.agent),
            Command::ReleaseTask(c) => ("release_task", &c.agent),
            Command::TaskProgress(c) => ("task_progress", &c.agent),
            Command::EscalateTask(c) => ("escalate_task", &c.agent),
            Command::DeadLetterTask(c) => ("dead_letter_task", &c.agent),
            Command::RenewLease(c) => ("renew_lease", &c.agent),
            Command::Complete(c) => ("complete", &c.agent),
            Command::Fail(c) => ("fail", &c.agent),
            Command::Cancel(c) => ("cancel", &c.agent),
            Command::RequestApproval(c) => ("request_approval", &c.agent),
            Command::Decide(c) => ("decide", &c.agent),
            Command::AwaitApproval(c) => ("await_approval", &c.agent),
            Command::Post(c) => ("post", &c.agent),
            Command::Reply(c) => ("reply", &c.agent),
            Command::LogDecision(c) => ("log_decision", &c.agent),
            Command::StartWorkflow(c) => ("start_workflow", &c.agent),
            Command::StartStage(c) => ("start_stage", &c.agent),
            Command::CompleteStage(c) => ("complete_stage", &c.agent),
            Command::Handoff(c) => ("handoff", &c.agent),
            Command::Checkpoint(c) => ("checkpoint", &c.agent),
            Command::CompleteWorkflow(c) => ("complete_workflow", &c.agent),
            Command::CancelWorkflow(c) => ("cancel_workflow", &c.agent),
            Command::SetBudget(c) => ("set_budget", &c.agent),
            Command::SetSpendLimit(c) => ("set_spend_limit", &c.agent),
            Command::Custom(c) => ("custom", &c.agent),
            Command::ImportTelemetry(c) => ("import_telemetry", &c.agent),
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

/// The refusal for a field whose value cannot be right.
pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        field,
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use fleetlog_ledger::SignalTarget;

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
            Command::Heartbeat(Heartbeat {
                agent: "a".into(),
                status: None,
                progress: None,
                current_task: None,
                metadata: None,
                ttl_ms: crate::agents::HEARTBEAT_TTL_MS_DEFAULT,
            })
        );
        let enqueue = parse(serde_json::json!({"command": "enqueue", "agent": "a", "spec": {"title": "t", "priority": 2}}))
            .expect("parses");
        let Command::Enqueue(Enqueue { spec, .. }) = enqueue else {
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
            let Command::SendSignal(SendSignal { target, .. }) = command else {
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
