//! The coordination state machine: runs on the ledger's writer thread, validates each command
//! against the working state (which includes every event staged before it), turns valid ones
//! into events, records expiries when deadlines pass, and serves blocking waits the moment the
//! event that satisfies them is staged.
//!
//! Every reply goes out after the commit that holds its events (`Batch::after_commit`), and
//! readers only ever see `committed`, which is updated from committed records. If a commit
//! fails, the ledger's writer is poisoned and this working state is never used again.

mod domain;
mod expiry;
mod reply;
mod sequencer;
mod settle;
mod tasks;

pub use reply::Reply;
use reply::Touched;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetlog_ledger::{Batch, Event, Record, SignalTarget, Timestamp};

use crate::approvals::ApprovalState;
use crate::command::{Command, CommandError, Outcome};
use crate::published::{Published, Publisher};
use crate::queue::TaskState;
use crate::state::State;
use crate::waits::{ApprovalWant, ClaimWant, LockWant, Refused, SignalWant, Waits};

/// The actor of events the machine records on its own (expiries).
pub const SYSTEM_ACTOR: &str = "fleetlog";

/// Most live signals addressed to one agent at once: past it, sends to that agent are refused
/// (`inbox_full`) until it receives some or they expire.
pub const INBOX_SIGNALS_MAX: u64 = 10_000;

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

    /// A member that is alive at `now`: an expired agent lost what it held, so it must show it
    /// is back (heartbeat, or register again) before it acts.
    fn require_alive(&self, agent: &str, now: Timestamp) -> Result<(), CommandError> {
        self.require_member(agent)?;
        match self.state.agents.get(agent) {
            Some(found) if !found.is_alive(now) => Err(CommandError::AgentExpired {
                agent: agent.to_owned(),
                deadline: found.deadline(),
            }),
            _ => Ok(()),
        }
    }

    fn decide(
        &mut self,
        command: Command,
        reply: &mut Option<Reply>,
        batch: &mut Batch<'_, '_>,
    ) -> Result<Step, CommandError> {
        let now = batch.now();
        match &command {
            Command::Register { .. } => {}
            // A heartbeat is how an expired agent comes back.
            Command::Heartbeat { agent, .. } => self.require_member(agent)?,
            other => self.require_alive(other.agent(), now)?,
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
                let event =
                    self.heartbeat(&agent, status, progress, current_task, metadata, ttl_ms);
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
                if kind.trim().is_empty() {
                    return Err(invalid(
                        "kind",
                        "a signal needs a kind (what receivers filter on)",
                    ));
                }
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
                slots,
            } => {
                positive("ttl_ms", ttl_ms)?;
                if resource.is_empty() {
                    return Err(invalid("resource", "must not be empty"));
                }
                let wants = LockWant {
                    ttl_ms,
                    intent,
                    slots,
                };
                match slots {
                    Some(slots) => {
                        self.acquire_slot(batch, reply, agent, resource, slots, wait_ms, wants)
                    }
                    None => self.acquire_lock(batch, reply, agent, resource, wait_ms, wants),
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
                tag_match,
                task,
                lease_ttl_ms,
                wait_ms,
            } => {
                positive("lease_ttl_ms", lease_ttl_ms)?;
                let wants = ClaimWant {
                    tags,
                    tag_match,
                    task,
                    lease_ttl_ms,
                };
                if let Some(task) = self.claim(batch, &agent, &wants)? {
                    return Ok(done_with(Outcome::Task { task: Some(task) }));
                }
                match wait_ms {
                    None => Ok(done_with(Outcome::Task { task: None })),
                    Some(wait_ms) => {
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
                let events = self.fail_task(&agent, task, error, retryable, now)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::ReleaseTask {
                agent,
                task,
                reason,
            } => {
                let events = self.release_task(&agent, task, reason)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::TaskProgress {
                agent,
                task,
                progress,
                status,
            } => {
                let events = self.task_progress(&agent, task, progress, status)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::EscalateTask {
                agent,
                task,
                reason,
            } => {
                let events = self.escalate_task(&agent, task, reason)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::DeadLetterTask {
                agent,
                task,
                reason,
            } => {
                let events = self.dead_letter_task(task, reason)?;
                done(self.stage(batch, &agent, events)?)
            }
            Command::Cancel {
                agent,
                task,
                reason,
            } => {
                let events = self.cancel_task(task, reason)?;
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
                self.check_decider(&agent, approval, now)?;
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
                self.check_spend_limits(&stage_agent, now)?;
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
                let events = self.complete_stage(&workflow_id, report, now)?;
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
                duration_ms,
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
                    duration_ms,
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
            Command::SetSpendLimit {
                agent,
                spender,
                limit_usd,
            } => {
                if let Some(spender) = &spender {
                    self.require_member(spender)?;
                }
                if limit_usd.is_some_and(|limit| !limit.is_finite() || limit < 0.0) {
                    return Err(invalid(
                        "limit_usd",
                        "must be a finite amount ≥ 0, or null to remove the limit",
                    ));
                }
                let event = Event::SpendLimitSet { spender, limit_usd };
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
