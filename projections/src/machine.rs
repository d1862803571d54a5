//! The coordination state machine: runs on the ledger's writer thread, validates each command
//! against the working state (which includes every event staged before it), turns valid ones
//! into events, records expiries when deadlines pass, and serves blocking waits the moment the
//! event that satisfies them is staged.
//!
//! Every reply goes out after the commit that holds its events (`Batch::after_commit`), and
//! readers only ever see `committed`, which is updated from committed records. If a commit
//! fails, the ledger's writer is poisoned and this working state is never used again.

use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetlog_ledger::{
    Batch, Error as LedgerError, Event, Record, Sequencer, SignalTarget, Timestamp,
};

use crate::approvals::ApprovalState;
use crate::command::{Command, CommandError, Outcome, StageReport, TaskSpec};
use crate::locks::Lock;
use crate::published::{Published, Publisher};
use crate::queue::{TaskState, retry_backoff_ms};
use crate::replay::Projection;
use crate::state::{Due, State};
use crate::waits::{ApprovalWant, ClaimWant, LockWant, Refused, SignalWant, Waits};
use crate::workflows::WorkflowStatus;

/// The actor of events the machine records on its own (expiries).
pub const SYSTEM_ACTOR: &str = "fleetlog";

/// Most live signals addressed to one agent at once: past it, sends to that agent are refused
/// (`inbox_full`) until it receives some or they expire.
pub const INBOX_SIGNALS_MAX: u64 = 10_000;

/// Where a command's answer goes: called once, after the commit that decides it. A callback, so
/// a synchronous caller can block on a channel while an async server awaits a oneshot. A reply
/// may know whether its caller is still there: a wait is never served for a caller that left.
pub struct Reply {
    answer: Box<dyn FnOnce(Result<Outcome, CommandError>) + Send>,
    gone: Option<Box<dyn Fn() -> bool + Send>>,
    /// The command's idempotency key and digest: its answer is remembered with its events.
    key: Option<(String, [u8; 32])>,
}

impl Reply {
    pub fn new(answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static) -> Self {
        Reply {
            answer: Box::new(answer),
            gone: None,
            key: None,
        }
    }

    /// A reply whose caller may go away; `gone` says whether it has.
    pub fn watched(
        answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static,
        gone: impl Fn() -> bool + Send + 'static,
    ) -> Self {
        Reply {
            answer: Box::new(answer),
            gone: Some(Box::new(gone)),
            key: None,
        }
    }

    /// Whether the caller stopped waiting for this answer.
    pub fn is_gone(&self) -> bool {
        self.gone.as_ref().is_some_and(|gone| gone())
    }

    /// Delivers the answer.
    pub fn answer(self, result: Result<Outcome, CommandError>) {
        (self.answer)(result)
    }
}

/// Which waits the events staged since the last settle may satisfy.
#[derive(Default)]
struct Touched {
    locks: BTreeSet<String>,
    queue: bool,
    signals: BTreeSet<String>,
    every_inbox: bool,
    approvals: BTreeSet<u64>,
}

impl Touched {
    fn note(&mut self, record: &Record) {
        match &record.event {
            Event::LockReleased { resource, .. } | Event::LockExpired { resource, .. } => {
                self.locks.insert(resource.clone());
            }
            Event::TaskEnqueued { .. }
            | Event::TaskFailed { .. }
            | Event::TaskLeaseExpired { .. }
            | Event::TaskCompleted { .. }
            | Event::TaskCancelled { .. } => self.queue = true,
            Event::SignalAckExpired { agent, .. } => {
                // The copy is receivable again by the agent that let it lapse (a targeted
                // signal's target, or that agent's copy of a broadcast).
                self.signals.insert(agent.clone());
            }
            Event::SignalSent { target, .. } => match target {
                SignalTarget::Agent(agent) => {
                    self.signals.insert(agent.clone());
                }
                SignalTarget::Broadcast => self.every_inbox = true,
            },
            Event::ApprovalDecided { approval, .. } | Event::ApprovalExpired { approval, .. } => {
                self.approvals.insert(*approval);
            }
            _ => {}
        }
    }
}

/// What deciding a command led to.
enum Step {
    Done(Box<Outcome>),
    /// The command waits; its reply is held by a waiter.
    Parked,
    /// The wait could not be parked (too many on its key): the reply, and why.
    Refused(Refused),
}

/// The reply of a command about to park.
fn take_reply(reply: &mut Option<Reply>) -> Reply {
    reply.take().expect("a command parks at most once")
}

fn done_with(outcome: Outcome) -> Step {
    Step::Done(Box::new(outcome))
}

/// The machine: working state, waiters, and the committed state readers see.
pub struct Machine {
    state: State,
    publisher: Publisher,
    waits: Waits,
    /// What the events staged since the last settle may have satisfied.
    touched: Touched,
    /// How many requests are parked now, for readers (`Coordinator::waiting`).
    waiting: Arc<AtomicU64>,
    snapshot_every_events: u64,
    last_snapshot_seq: u64,
}

fn respond(batch: &mut Batch<'_, '_>, mut reply: Reply, result: Result<Outcome, CommandError>) {
    // A keyed command's answer is stored in the same commit as its events, so a retry after a
    // crash or a lost reply gets exactly this answer. Refusals and empty answers changed
    // nothing and are not stored: a retry simply runs again.
    let result = match (reply.key.take(), result) {
        (Some((key, digest)), Ok(outcome)) if outcome.changed_something() => {
            let answer = serde_json::to_vec(&outcome).expect("outcomes serialise");
            match batch.remember_command_key(&key, digest, &answer) {
                Ok(()) => Ok(outcome),
                Err(error) => Err(CommandError::NotDurable {
                    cause: error.to_string(),
                }),
            }
        }
        (_, result) => result,
    };
    batch.after_commit(move |commit| {
        let answer = match commit {
            Ok(()) => result,
            Err(error) => Err(CommandError::NotDurable {
                cause: error.to_string(),
            }),
        };
        reply.answer(answer);
    });
}

/// A command's primary event comes first (what it creates, and so its id); any events after it
/// are consequences (skips, a budget crossed, released locks).
fn appended(records: &[Record]) -> Outcome {
    Outcome::Appended {
        seq: records.first().map_or(0, |record| record.seq),
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// A TTL or timeout of zero would expire before anyone saw it.
fn positive(field: &'static str, millis: u64) -> Result<(), CommandError> {
    match millis {
        0 => Err(invalid(field, "must be at least 1")),
        _ => Ok(()),
    }
}

fn millis_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.as_micros().saturating_sub(from.as_micros())).unwrap_or(0) / 1000
}

impl Machine {
    /// A machine continuing from `state` (rebuilt from a snapshot and the records after it).
    pub fn new(
        state: State,
        committed: Arc<Published>,
        waiting: Arc<AtomicU64>,
        snapshot_every_events: u64,
    ) -> Self {
        let last_snapshot_seq = state.seq;
        Machine {
            state,
            publisher: Publisher::new(committed),
            waiting,
            waits: Waits::default(),
            touched: Touched::default(),
            snapshot_every_events,
            last_snapshot_seq,
        }
    }

    /// Runs a command sent with an idempotency key: a key seen within its window with the same
    /// command answers as it did then and appends nothing; with another command it is refused.
    pub fn execute_keyed(
        &mut self,
        command: Command,
        key: String,
        mut reply: Reply,
        batch: &mut Batch<'_, '_>,
    ) {
        if key.is_empty() || key.len() > fleetlog_ledger::limits::IDEMPOTENCY_KEY_BYTES_MAX {
            let max = fleetlog_ledger::limits::IDEMPOTENCY_KEY_BYTES_MAX;
            let error = invalid("idempotency_key", format!("must be 1 to {max} bytes"));
            return respond(batch, reply, Err(error));
        }
        let digest =
            *blake3::hash(&serde_json::to_vec(&command).expect("commands serialise")).as_bytes();
        let found = match batch.command_key(&key) {
            Ok(found) => found,
            Err(error) => {
                let cause = error.to_string();
                return respond(batch, reply, Err(CommandError::NotDurable { cause }));
            }
        };
        match found {
            Some(first) if first.digest != digest => {
                respond(batch, reply, Err(CommandError::IdempotencyConflict { key }))
            }
            Some(first) => {
                let answer = serde_json::from_slice::<Outcome>(&first.answer).map_err(|error| {
                    CommandError::NotDurable {
                        cause: format!("the stored answer for key {key:?} is unreadable: {error}"),
                    }
                });
                respond(batch, reply, answer)
            }
            None => {
                reply.key = Some((key, digest));
                self.execute(command, reply, batch);
            }
        }
    }

    /// Runs one command in the writer's sequence.
    pub fn execute(&mut self, command: Command, reply: Reply, batch: &mut Batch<'_, '_>) {
        let mut reply = Some(reply);
        let result = self.decide(command, &mut reply, batch);
        let unanswered =
            |reply: Option<Reply>| reply.expect("only a parked command gives its reply away");
        match result {
            Ok(Step::Done(outcome)) => respond(batch, unanswered(reply), Ok(*outcome)),
            Ok(Step::Parked) => {}
            Ok(Step::Refused(refused)) => {
                let (reply, error) = *refused;
                respond(batch, reply, Err(error))
            }
            Err(error) => respond(batch, unanswered(reply), Err(error)),
        }
        self.settle(batch);
        self.publish_waiting();
    }

    fn publish_waiting(&self) {
        self.waiting
            .store(self.waits.count() as u64, Ordering::Relaxed);
    }

    /// Stages `events` by `actor` (all or none) and folds them into the working state.
    fn stage(
        &mut self,
        batch: &mut Batch<'_, '_>,
        actor: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Record>, CommandError> {
        let events = events
            .into_iter()
            .map(|event| (actor.to_owned(), event))
            .collect();
        self.stage_as(batch, events)
    }

    /// Stages a command's single event and answers with its seq.
    fn record_one(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        event: Event,
    ) -> Result<Step, CommandError> {
        let records = self.stage(batch, agent, vec![event])?;
        Ok(done_with(appended(&records)))
    }

    fn require_member(&self, agent: &str) -> Result<(), CommandError> {
        match self.state.agents.is_member(agent) {
            true => Ok(()),
            false => Err(CommandError::UnknownAgent {
                agent: agent.to_owned(),
            }),
        }
    }

    fn decide(
        &mut self,
        command: Command,
        reply: &mut Option<Reply>,
        batch: &mut Batch<'_, '_>,
    ) -> Result<Step, CommandError> {
        let now = batch.now();
        if !matches!(command, Command::Register { .. }) {
            self.require_member(command.agent())?;
        }
        let done = |records: Vec<Record>| Ok(done_with(appended(&records)));
        match command {
            Command::Register {
                agent,
                role,
                name,
                working_on,
                capabilities,
                metadata,
            } => {
                if agent == SYSTEM_ACTOR {
                    return Err(invalid(
                        "agent",
                        format!("{SYSTEM_ACTOR:?} is reserved for fleetlog itself"),
                    ));
                }
                let event = Event::AgentRegistered {
                    role,
                    name,
                    working_on,
                    capabilities,
                    metadata,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Heartbeat {
                agent,
                status,
                progress,
                current_task,
                metadata,
                ttl_ms,
            } => {
                positive("ttl_ms", ttl_ms)?;
                let event = Event::AgentHeartbeat {
                    status,
                    progress,
                    current_task,
                    metadata,
                    ttl_ms,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Deregister { agent, reason } => {
                // Leaving releases what the agent holds, each recorded, as expiry would.
                let mut events = self.release_everything_of(&agent, now);
                events.insert(0, Event::AgentDeregistered { reason });
                done(self.stage(batch, &agent, events)?)
            }
            Command::SendSignal {
                agent,
                kind,
                target,
                payload,
                ttl_ms,
                correlation_id,
            } => {
                if let SignalTarget::Agent(target) = &target {
                    self.require_member(target)?;
                }
                positive("ttl_ms", ttl_ms)?;
                if let SignalTarget::Agent(target) = &target {
                    let live = self.state.signals.inbox_len(target);
                    if live >= INBOX_SIGNALS_MAX {
                        return Err(CommandError::InboxFull {
                            agent: target.clone(),
                            limit: INBOX_SIGNALS_MAX,
                        });
                    }
                }
                let event = Event::SignalSent {
                    kind,
                    target,
                    payload,
                    ttl_ms,
                    correlation_id,
                };
                self.record_one(batch, &agent, event)
            }
            Command::ReceiveSignal {
                agent,
                filter,
                consume,
                wait_ms,
                ack_ms,
            } => {
                if let Some(ack_ms) = ack_ms {
                    positive("ack_ms", ack_ms)?;
                }
                let wants = SignalWant {
                    filter,
                    consume: consume || ack_ms.is_some(),
                    ack_ms,
                };
                if let Some(signal) = self.take_signal(batch, &agent, &wants)? {
                    return Ok(done_with(Outcome::Signal {
                        signal: Some(signal),
                    }));
                }
                match wait_ms {
                    None => Ok(done_with(Outcome::Signal { signal: None })),
                    Some(wait_ms) => {
                        let reply = take_reply(reply);
                        self.park(|waits| {
                            waits.park(agent.clone(), agent, now, wait_ms, reply, wants)
                        })
                    }
                }
            }
            Command::AckSignal { agent, signal } => {
                let awaiting = self
                    .state
                    .signals
                    .delivered(signal)
                    .any(|(recipient, _)| *recipient == agent);
                if !awaiting {
                    return Err(CommandError::NotDelivered { signal });
                }
                self.record_one(batch, &agent, Event::SignalAcked { signal })
            }
            Command::AcquireLock {
                agent,
                resource,
                ttl_ms,
                intent,
                wait_ms,
            } => {
                positive("ttl_ms", ttl_ms)?;
                if resource.is_empty() {
                    return Err(invalid("resource", "must not be empty"));
                }
                match self.state.locks.live(&resource, now).cloned() {
                    None => {
                        let lock =
                            self.grant_lock(batch, &agent, &resource, ttl_ms, intent, now)?;
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
                            let wants = LockWant { ttl_ms, intent };
                            let reply = take_reply(reply);
                            self.park(|waits| {
                                waits.park(resource, agent, now, wait_ms, reply, wants)
                            })
                        }
                    },
                }
            }
            Command::RenewLock {
                agent,
                resource,
                token,
                ttl_ms,
            } => {
                positive("ttl_ms", ttl_ms)?;
                self.check_holder(&agent, &resource, token, now)?;
                let event = Event::LockRenewed {
                    resource,
                    token,
                    ttl_ms,
                };
                self.record_one(batch, &agent, event)
            }
            Command::ReleaseLock {
                agent,
                resource,
                token,
            } => {
                self.check_holder(&agent, &resource, token, now)?;
                done(self.stage(batch, &agent, vec![Event::LockReleased { resource, token }])?)
            }
            Command::Enqueue { agent, spec } => done(self.enqueue(batch, &agent, spec)?),
            Command::Claim {
                agent,
                tags,
                lease_ttl_ms,
                wait_ms,
            } => {
                positive("lease_ttl_ms", lease_ttl_ms)?;
                if let Some(task) = self.claim(batch, &agent, &tags, lease_ttl_ms)? {
                    return Ok(done_with(Outcome::Task { task: Some(task) }));
                }
                match wait_ms {
                    None => Ok(done_with(Outcome::Task { task: None })),
                    Some(wait_ms) => {
                        let wants = ClaimWant { tags, lease_ttl_ms };
                        let reply = take_reply(reply);
                        self.park(|waits| waits.park((), agent, now, wait_ms, reply, wants))
                    }
                }
            }
            Command::RenewLease {
                agent,
                task,
                lease_ttl_ms,
            } => {
                positive("lease_ttl_ms", lease_ttl_ms)?;
                self.check_lease(&agent, task)?;
                done(self.stage(
                    batch,
                    &agent,
                    vec![Event::TaskLeaseRenewed { task, lease_ttl_ms }],
                )?)
            }
            Command::Complete {
                agent,
                task,
                result,
            } => {
                self.check_lease(&agent, task)?;
                done(self.stage(batch, &agent, vec![Event::TaskCompleted { task, result }])?)
            }
            Command::Fail {
                agent,
                task,
                error,
                retryable,
            } => {
                self.check_lease(&agent, task)?;
                let found = self
                    .state
                    .queue
                    .get(task)
                    .ok_or(CommandError::UnknownTask { task })?;
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
                    events.extend(self.dead_letter(task, reason));
                }
                done(self.stage(batch, &agent, events)?)
            }
            Command::Cancel {
                agent,
                task,
                reason,
            } => {
                let found = self
                    .state
                    .queue
                    .get(task)
                    .ok_or(CommandError::UnknownTask { task })?;
                if found.state.is_final() {
                    return Err(finished(task, found.state));
                }
                let mut events = vec![Event::TaskCancelled { task, reason }];
                events.extend(self.skips(task));
                done(self.stage(batch, &agent, events)?)
            }
            Command::RequestApproval {
                agent,
                action,
                context,
                approvers,
                timeout_ms,
            } => {
                positive("timeout_ms", timeout_ms)?;
                let event = Event::ApprovalRequested {
                    action,
                    context,
                    approvers,
                    timeout_ms,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Decide {
                agent,
                approval,
                approved,
                reason,
            } => {
                let found = self
                    .state
                    .approvals
                    .get(approval)
                    .ok_or(CommandError::UnknownApproval { approval })?;
                match found.state_at(now) {
                    ApprovalState::Pending => {}
                    ApprovalState::Expired => {
                        return Err(CommandError::ApprovalExpired {
                            approval,
                            deadline: found.deadline(),
                        });
                    }
                    ApprovalState::Approved | ApprovalState::Rejected => {
                        return Err(CommandError::AlreadyDecided { approval });
                    }
                }
                if !found.may_decide(&agent) {
                    return Err(CommandError::NotAnApprover {
                        approval,
                        approvers: found.approvers.clone(),
                    });
                }
                let event = Event::ApprovalDecided {
                    approval,
                    approved,
                    reason,
                };
                self.record_one(batch, &agent, event)
            }
            Command::AwaitApproval {
                agent,
                approval,
                wait_ms,
            } => {
                let found = self
                    .state
                    .approvals
                    .get(approval)
                    .ok_or(CommandError::UnknownApproval { approval })?;
                if found.state_at(now) != ApprovalState::Pending {
                    let mut view = found.clone();
                    view.state = found.state_at(now);
                    return Ok(done_with(Outcome::Approval { approval: view }));
                }
                let reply = take_reply(reply);
                self.park(|waits| waits.park(approval, agent, now, wait_ms, reply, ApprovalWant))
            }
            Command::Post {
                agent,
                title,
                message,
                priority,
            } => {
                let event = Event::ThreadPosted {
                    title,
                    message,
                    priority,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Reply {
                agent,
                thread,
                message,
            } => {
                if !self.state.board.threads.contains_key(&thread) {
                    return Err(CommandError::UnknownThread { thread });
                }
                done(self.stage(
                    batch,
                    &agent,
                    vec![Event::ThreadReplied { thread, message }],
                )?)
            }
            Command::LogDecision {
                agent,
                decision_type,
                context,
                reason,
                alternatives,
                metadata,
            } => {
                let event = Event::DecisionLogged {
                    decision_type,
                    context,
                    reason,
                    alternatives,
                    metadata,
                };
                self.record_one(batch, &agent, event)
            }
            Command::StartWorkflow {
                agent,
                workflow_id,
                project,
                agent_plan,
                estimated_duration_ms,
            } => {
                if workflow_id.is_empty() {
                    return Err(invalid("workflow_id", "must not be empty"));
                }
                if self.state.workflows.get(&workflow_id).is_some() {
                    return Err(CommandError::WorkflowExists { workflow_id });
                }
                let event = Event::WorkflowStarted {
                    workflow_id,
                    project,
                    agent_plan,
                    estimated_duration_ms,
                    session_id: None,
                    occurred_at: None,
                };
                self.record_one(batch, &agent, event)
            }
            Command::StartStage {
                agent,
                workflow_id,
                stage,
                stage_agent,
                tier,
            } => {
                let workflow = self.running_workflow(&workflow_id)?;
                if workflow.over_budget() {
                    return Err(CommandError::OverBudget {
                        limit_usd: workflow.budget_usd.unwrap_or_default(),
                        spent_usd: workflow.spent_usd,
                        workflow_id,
                    });
                }
                let event = Event::StageStarted {
                    workflow_id,
                    stage,
                    agent: stage_agent,
                    tier,
                    occurred_at: None,
                };
                self.record_one(batch, &agent, event)
            }
            Command::CompleteStage {
                agent,
                workflow_id,
                report,
            } => {
                let events = self.complete_stage(&workflow_id, report)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::Handoff {
                agent,
                workflow_id,
                from_agent,
                to_agent,
                artifacts,
            } => {
                self.running_workflow(&workflow_id)?;
                let event = Event::Handoff {
                    workflow_id,
                    from_agent,
                    to_agent,
                    artifacts,
                    occurred_at: None,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Checkpoint {
                agent,
                workflow_id,
                stage,
                state,
            } => {
                self.running_workflow(&workflow_id)?;
                let event = Event::Checkpoint {
                    workflow_id,
                    stage,
                    state,
                };
                self.record_one(batch, &agent, event)
            }
            Command::CompleteWorkflow {
                agent,
                workflow_id,
                success,
                error,
                agents_executed,
            } => {
                let workflow = self.running_workflow(&workflow_id)?;
                let agents_executed = match agents_executed.is_empty() {
                    true => workflow.agents_executed.clone(),
                    false => agents_executed,
                };
                let event = Event::WorkflowCompleted {
                    agents_executed,
                    workflow_id,
                    success,
                    error,
                    duration_ms: None,
                    occurred_at: None,
                };
                self.record_one(batch, &agent, event)
            }
            Command::CancelWorkflow {
                agent,
                workflow_id,
                reason,
            } => {
                self.running_workflow(&workflow_id)?;
                let event = Event::WorkflowCancelled {
                    workflow_id,
                    reason,
                };
                self.record_one(batch, &agent, event)
            }
            Command::SetBudget {
                agent,
                workflow_id,
                limit_usd,
            } => {
                self.running_workflow(&workflow_id)?;
                let event = Event::BudgetSet {
                    workflow_id,
                    limit_usd,
                };
                self.record_one(batch, &agent, event)
            }
            Command::Custom {
                agent,
                kind,
                payload,
            } => self.record_one(batch, &agent, Event::Custom { kind, payload }),
            Command::ImportTelemetry { agent, events } => {
                self.check_telemetry(&events)?;
                done(self.stage(batch, &agent, events)?)
            }
        }
    }

    /// Telemetry may only carry workflow history, must start each workflow once (and not one
    /// that exists), and may only continue workflows it starts or that exist.
    fn check_telemetry(&self, events: &[Event]) -> Result<(), CommandError> {
        if events.is_empty() {
            return Err(invalid("events", "there is nothing to import"));
        }
        let mut started = std::collections::BTreeSet::new();
        for (index, event) in events.iter().enumerate() {
            let refused = |problem: String| invalid("events", format!("event {index}: {problem}"));
            match event {
                Event::WorkflowStarted { workflow_id, .. } => {
                    if self.state.workflows.get(workflow_id).is_some()
                        || !started.insert(workflow_id.as_str())
                    {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} already exists; was this telemetry imported before?"
                        )));
                    }
                }
                Event::StageStarted { .. } | Event::StageCompleted { .. } => {}
                Event::Handoff { workflow_id, .. }
                | Event::WorkflowCompleted { workflow_id, .. } => {
                    if self.state.workflows.get(workflow_id).is_none()
                        && !started.contains(workflow_id.as_str())
                    {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} is neither imported nor known"
                        )));
                    }
                }
                other => {
                    return Err(refused(format!(
                        "{} events cannot be imported as telemetry",
                        other.kind()
                    )));
                }
            }
        }
        Ok(())
    }

    fn running_workflow(
        &self,
        workflow_id: &str,
    ) -> Result<&crate::workflows::Workflow, CommandError> {
        let workflow =
            self.state
                .workflows
                .get(workflow_id)
                .ok_or_else(|| CommandError::UnknownWorkflow {
                    workflow_id: workflow_id.to_owned(),
                })?;
        match workflow.status {
            WorkflowStatus::Running => Ok(workflow),
            status => Err(CommandError::WorkflowFinished {
                workflow_id: workflow_id.to_owned(),
                status: format!("{status:?}").to_lowercase(),
            }),
        }
    }

    fn complete_stage(
        &self,
        workflow_id: &str,
        report: StageReport,
    ) -> Result<Vec<Event>, CommandError> {
        let workflow = self.running_workflow(workflow_id)?;
        let spent_usd = workflow.spent_usd + report.cost_usd;
        let crossed = workflow
            .budget_usd
            .filter(|limit| !workflow.over_budget() && spent_usd > *limit);
        let mut events = vec![Event::StageCompleted {
            workflow_id: workflow_id.to_owned(),
            stage: report.stage,
            agent: report.agent,
            tier: report.tier,
            outcome: report.outcome,
            duration_ms: report.duration_ms,
            cost_usd: report.cost_usd,
            tokens: report.tokens,
            description: report.description,
            tags: report.tags,
            quality: report.quality,
            occurred_at: None,
        }];
        if let Some(limit_usd) = crossed {
            events.push(Event::BudgetExceeded {
                workflow_id: workflow_id.to_owned(),
                limit_usd,
                spent_usd,
            });
        }
        Ok(events)
    }

    fn check_holder(
        &self,
        agent: &str,
        resource: &str,
        token: u64,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let lock = self
            .state
            .locks
            .live(resource, now)
            .ok_or_else(|| CommandError::NotLocked {
                resource: resource.to_owned(),
            })?;
        if lock.holder != agent {
            return Err(CommandError::NotHolder {
                resource: resource.to_owned(),
                holder: lock.holder.clone(),
            });
        }
        if lock.token != token {
            return Err(CommandError::WrongToken {
                resource: resource.to_owned(),
                given: token,
                current: lock.token,
            });
        }
        Ok(())
    }

    /// Grants `resource` to `agent`, recording the takeover of an expired holder first.
    fn grant_lock(
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

    /// Stages events, each with its own actor (all or none).
    fn stage_as(
        &mut self,
        batch: &mut Batch<'_, '_>,
        events: Vec<(String, Event)>,
    ) -> Result<Vec<Record>, CommandError> {
        let records = batch.append(events).map_err(|error| match error {
            LedgerError::EventTooLarge { .. } | LedgerError::RequestTooLarge { .. } => {
                CommandError::TooLarge(error.to_string())
            }
            other if other.is_bad_input() => CommandError::Rejected(other.to_string()),
            other => CommandError::NotDurable {
                cause: other.to_string(),
            },
        })?;
        for record in &records {
            self.touched.note(record);
            self.state.apply(record);
        }
        Ok(records)
    }

    fn enqueue(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        spec: TaskSpec,
    ) -> Result<Vec<Record>, CommandError> {
        if spec.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        if spec.title.is_empty() {
            return Err(invalid("title", "must not be empty"));
        }
        let mut doomed_by = None;
        for dependency in &spec.depends_on {
            let found = self
                .state
                .queue
                .get(*dependency)
                .ok_or(CommandError::UnknownTask { task: *dependency })?;
            if found.state.is_final() && found.state != TaskState::Completed {
                doomed_by.get_or_insert(*dependency);
            }
        }
        let id = batch.next_seq();
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
        if let Some(blocked_by) = doomed_by {
            events.push(Event::TaskSkipped {
                task: id,
                blocked_by,
            });
        }
        self.stage(batch, agent, events)
    }

    /// Claims the best task for `agent`, if one is claimable now.
    fn claim(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        tags: &[String],
        lease_ttl_ms: u64,
    ) -> Result<Option<crate::queue::Task>, CommandError> {
        let Some(task) = self.state.queue.next_claimable(tags, batch.now()) else {
            return Ok(None);
        };
        let (id, attempt) = (task.id, task.attempts + 1);
        let event = Event::TaskClaimed {
            task: id,
            lease_ttl_ms,
            attempt,
        };
        self.stage(batch, agent, vec![event])?;
        Ok(self.state.queue.get(id).cloned())
    }

    fn check_lease(&self, agent: &str, task: u64) -> Result<(), CommandError> {
        let found = self
            .state
            .queue
            .get(task)
            .ok_or(CommandError::UnknownTask { task })?;
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

    /// Dead-letters `task` and skips everything waiting on it.
    fn dead_letter(&self, task: u64, reason: String) -> Vec<Event> {
        let mut events = vec![Event::TaskDeadLettered { task, reason }];
        events.extend(self.skips(task));
        events
    }

    fn skips(&self, task: u64) -> Vec<Event> {
        self.state
            .queue
            .blocked_by(task)
            .into_iter()
            .map(|(task, blocked_by)| Event::TaskSkipped { task, blocked_by })
            .collect()
    }

    /// A lease ended without completion: requeue with the attempt counted, or dead-letter.
    fn lease_lost(&self, task: u64, deadline: Timestamp) -> Vec<Event> {
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
            events.extend(self.dead_letter(task, reason));
        }
        events
    }

    /// What an agent leaving (or expiring) releases: its locks and its leases.
    fn release_everything_of(&self, agent: &str, deadline: Timestamp) -> Vec<Event> {
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
    fn expire(&mut self, batch: &mut Batch<'_, '_>, due: Due) {
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

    /// The oldest matching signal `agent` can see, consumed if asked.
    fn take_signal(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        wants: &SignalWant,
    ) -> Result<Option<crate::signals::Signal>, CommandError> {
        let Some(signal) = self
            .state
            .signals
            .first_for(agent, &wants.filter, batch.now())
            .cloned()
        else {
            return Ok(None);
        };
        let event = match (wants.ack_ms, wants.consume) {
            (Some(ack_ms), _) => Event::SignalDelivered {
                signal: signal.id,
                ack_ms,
            },
            (None, true) => Event::SignalConsumed { signal: signal.id },
            (None, false) => return Ok(Some(signal)),
        };
        self.stage(batch, agent, vec![event])?;
        Ok(Some(signal))
    }

    /// Parks a wait, or answers the refusal (too many waiting on the key) at once.
    fn park(
        &mut self,
        park: impl FnOnce(&mut Waits) -> Result<(), Refused>,
    ) -> Result<Step, CommandError> {
        match park(&mut self.waits) {
            Ok(()) => Ok(Step::Parked),
            Err(refused) => Ok(Step::Refused(refused)),
        }
    }

    /// Serves the waits that the events staged since the last settle may satisfy, each key's
    /// in arrival order. Waits on keys nothing touched are not looked at.
    fn settle(&mut self, batch: &mut Batch<'_, '_>) {
        let touched = std::mem::take(&mut self.touched);
        if self.waits.count() == 0 {
            return;
        }
        for resource in touched.locks {
            self.settle_lock(batch, &resource);
        }
        if touched.queue {
            self.settle_claims(batch);
        }
        let agents = match touched.every_inbox {
            true => self.waits.signal_agents(),
            false => touched.signals.into_iter().collect(),
        };
        for agent in agents {
            self.settle_signals(batch, agent);
        }
        for approval in touched.approvals {
            self.settle_approval(batch, approval);
        }
        // Serving waits staged events of their own (a grant, a claim, a consume): those can
        // only satisfy waits on the keys already served, which were served until they blocked.
        self.touched = Touched::default();
    }

    fn settle_lock(&mut self, batch: &mut Batch<'_, '_>, resource: &str) {
        let now = batch.now();
        while self.state.locks.live(resource, now).is_none() {
            let Some(waiter) = self.waits.next_lock_waiter(resource) else {
                break;
            };
            let result = self.require_member(&waiter.agent).and_then(|()| {
                self.grant_lock(
                    batch,
                    &waiter.agent,
                    resource,
                    waiter.wants.ttl_ms,
                    waiter.wants.intent,
                    waiter.since,
                )
            });
            respond(
                batch,
                waiter.reply,
                result.map(|lock| Outcome::Lock { lock }),
            );
        }
    }

    fn settle_claims(&mut self, batch: &mut Batch<'_, '_>) {
        let mut waiting = self.waits.take_claims();
        let mut kept = VecDeque::new();
        while let Some(waiter) = waiting.pop_front() {
            if self.state.queue.next_claimable(&[], batch.now()).is_none() {
                // Nothing is claimable by anyone: the rest keep waiting, in order.
                kept.push_back(waiter);
                kept.extend(waiting.drain(..));
                break;
            }
            if waiter.reply.is_gone() {
                self.waits.finished(&waiter);
                continue;
            }
            let claimed = self.require_member(&waiter.agent).and_then(|()| {
                self.claim(
                    batch,
                    &waiter.agent,
                    &waiter.wants.tags,
                    waiter.wants.lease_ttl_ms,
                )
            });
            match claimed {
                Ok(None) => kept.push_back(waiter),
                Ok(Some(task)) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Ok(Outcome::Task { task: Some(task) }))
                }
                Err(error) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Err(error))
                }
            }
        }
        self.waits.restore_claims(kept);
    }

    fn settle_signals(&mut self, batch: &mut Batch<'_, '_>, agent: String) {
        let waiting = self.waits.take_signals(&agent);
        let mut kept = VecDeque::new();
        for waiter in waiting {
            if waiter.reply.is_gone() {
                self.waits.finished(&waiter);
                continue;
            }
            let taken = self.take_signal(batch, &waiter.agent, &waiter.wants);
            match taken {
                Ok(None) => kept.push_back(waiter),
                Ok(Some(signal)) => {
                    self.waits.finished(&waiter);
                    let outcome = Outcome::Signal {
                        signal: Some(signal),
                    };
                    respond(batch, waiter.reply, Ok(outcome))
                }
                Err(error) => {
                    self.waits.finished(&waiter);
                    respond(batch, waiter.reply, Err(error))
                }
            }
        }
        self.waits.restore_signals(agent, kept);
    }

    fn settle_approval(&mut self, batch: &mut Batch<'_, '_>, id: u64) {
        let now = batch.now();
        let Some(approval) = self.state.approvals.get(id).cloned() else {
            return;
        };
        if approval.state_at(now) == ApprovalState::Pending {
            return;
        }
        for waiter in self.waits.take_approval(id) {
            self.waits.finished(&waiter);
            let mut view = approval.clone();
            view.state = approval.state_at(now);
            respond(
                batch,
                waiter.reply,
                Ok(Outcome::Approval { approval: view }),
            );
        }
    }

    /// Answers every wait whose deadline has passed.
    fn time_out_waits(&mut self, batch: &mut Batch<'_, '_>) {
        let now = batch.now();
        for due in self.waits.take_due(now) {
            let waited_ms = millis_between(due.since, now);
            respond(batch, due.reply, Err(CommandError::TimedOut { waited_ms }));
        }
    }

    /// Drops the waits whose callers went away (asked for by a caller's guard).
    pub fn prune_gone(&mut self) {
        self.waits.prune_gone();
        self.publish_waiting();
    }
}

fn finished(task: u64, state: TaskState) -> CommandError {
    match state {
        TaskState::Completed => CommandError::AlreadyCompleted { task },
        other => CommandError::TaskFinished {
            task,
            state: other.name(),
        },
    }
}

impl Sequencer for Machine {
    fn tick(&mut self, batch: &mut Batch<'_, '_>) {
        for (_, due) in self.state.due_by(batch.now()) {
            self.expire(batch, due);
        }
        self.time_out_waits(batch);
        if self.waits.claims_waiting() {
            // A delayed or retried task may have become ready with no event to say so.
            self.touched.queue = true;
        }
        self.settle(batch);
        self.publish_waiting();
    }

    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let mut next = [self.state.next_deadline(), self.waits.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        if self.waits.claims_waiting() {
            // A waiting claim may be served when a delayed task becomes ready.
            next = next
                .into_iter()
                .chain(self.state.queue.next_ready_after(now))
                .min();
        }
        next
    }

    fn observe(&mut self, record: &Record) {
        self.touched.note(record);
        self.state.apply(record);
    }

    fn committed(&mut self, records: &[Record]) {
        self.publisher.publish(records);
    }

    fn snapshot(&mut self, seq: u64) -> Option<Vec<u8>> {
        if self.snapshot_every_events == 0
            || seq < self.last_snapshot_seq + self.snapshot_every_events
        {
            return None;
        }
        self.last_snapshot_seq = seq;
        Some(crate::snapshot::encode(&self.state))
    }

    fn shutdown(&mut self) {
        let replies = self.waits.drain();
        for reply in replies {
            reply.answer(Err(CommandError::Closing));
        }
        self.publish_waiting();
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
