//! The coordination state machine: runs on the ledger's writer thread, validates each command
//! against the working state (which includes every event staged before it), turns valid ones
//! into events, records expiries when deadlines pass, and serves blocking waits the moment the
//! event that satisfies them is staged.
//!
//! Every reply goes out after the commit that holds its events (`Batch::after_commit`), and
//! readers only ever see `committed`, which is updated from committed records. If a commit
//! fails, the ledger's writer is poisoned and this working state is never used again.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fleetlog_ledger::{
    Batch, Error as LedgerError, Event, Record, Sequencer, SignalTarget, Timestamp,
};

use crate::approvals::ApprovalState;
use crate::command::{Command, CommandError, Outcome, StageReport, TaskSpec};
use crate::locks::Lock;
use crate::queue::{TaskState, retry_backoff_ms};
use crate::replay::Projection;
use crate::signals::SignalFilter;
use crate::state::{Due, State};
use crate::workflows::WorkflowStatus;

/// The actor of events the machine records on its own (expiries).
pub const SYSTEM_ACTOR: &str = "fleetlog";

/// Most requests that may wait on one key (a lock's resource, an approval, the queue, the
/// signals of one agent) at once.
pub const WAITERS_PER_KEY_MAX: usize = 1024;

/// Where a command's answer goes: called once, after the commit that decides it. A callback, so
/// a synchronous caller can block on a channel while an async server awaits a oneshot.
pub struct Reply(Box<dyn FnOnce(Result<Outcome, CommandError>) + Send>);

impl Reply {
    pub fn new(answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static) -> Self {
        Reply(Box::new(answer))
    }

    /// Delivers the answer.
    pub fn answer(self, result: Result<Outcome, CommandError>) {
        (self.0)(result)
    }
}

struct Waiter<T> {
    agent: String,
    since: Timestamp,
    deadline: Timestamp,
    reply: Reply,
    wants: T,
}

struct LockWant {
    ttl_ms: u64,
    intent: String,
}

struct ClaimWant {
    tags: Vec<String>,
    lease_ttl_ms: u64,
}

struct SignalWant {
    filter: SignalFilter,
    consume: bool,
}

#[derive(Default)]
struct Waiters {
    locks: BTreeMap<String, VecDeque<Waiter<LockWant>>>,
    claims: VecDeque<Waiter<ClaimWant>>,
    signals: VecDeque<Waiter<SignalWant>>,
    approvals: BTreeMap<u64, Vec<Waiter<()>>>,
}

impl Waiters {
    fn count(&self) -> u64 {
        let locks: usize = self.locks.values().map(VecDeque::len).sum();
        let approvals: usize = self.approvals.values().map(Vec::len).sum();
        (locks + self.claims.len() + self.signals.len() + approvals) as u64
    }

    fn is_empty(&self) -> bool {
        self.locks.is_empty()
            && self.claims.is_empty()
            && self.signals.is_empty()
            && self.approvals.is_empty()
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        let locks = self.locks.values().flatten().map(|w| w.deadline);
        let claims = self.claims.iter().map(|w| w.deadline);
        let signals = self.signals.iter().map(|w| w.deadline);
        let approvals = self.approvals.values().flatten().map(|w| w.deadline);
        locks.chain(claims).chain(signals).chain(approvals).min()
    }
}

/// What deciding a command led to.
enum Step {
    Done(Box<Outcome>),
    /// The command waits; its reply is held by a waiter.
    Parked,
}

fn done_with(outcome: Outcome) -> Step {
    Step::Done(Box::new(outcome))
}

/// The machine: working state, waiters, and the committed state readers see.
pub struct Machine {
    state: State,
    committed: Arc<RwLock<State>>,
    waiters: Waiters,
    /// How many requests are parked now, for readers (`Coordinator::waiting`).
    waiting: Arc<AtomicU64>,
    snapshot_every_events: u64,
    last_snapshot_seq: u64,
}

fn respond(batch: &mut Batch<'_, '_>, reply: Reply, result: Result<Outcome, CommandError>) {
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

/// Refuses a wait when `waiting` requests already wait on the same key.
fn room(waiting: usize, what: impl FnOnce() -> String) -> Result<(), CommandError> {
    match waiting >= WAITERS_PER_KEY_MAX {
        true => Err(CommandError::TooManyWaiters {
            what: what(),
            limit: WAITERS_PER_KEY_MAX,
        }),
        false => Ok(()),
    }
}

/// A parked request: it holds the command's reply until the wait ends.
fn waiter<T>(
    agent: String,
    now: Timestamp,
    wait_ms: u64,
    reply: &mut Option<Reply>,
    wants: T,
) -> Waiter<T> {
    Waiter {
        agent,
        since: now,
        deadline: now.plus_millis(wait_ms),
        reply: reply.take().expect("a command parks at most once"),
        wants,
    }
}

fn millis_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.as_micros().saturating_sub(from.as_micros())).unwrap_or(0) / 1000
}

impl Machine {
    /// A machine continuing from `state` (rebuilt from a snapshot and the records after it).
    pub fn new(
        state: State,
        committed: Arc<RwLock<State>>,
        waiting: Arc<AtomicU64>,
        snapshot_every_events: u64,
    ) -> Self {
        let last_snapshot_seq = state.seq;
        Machine {
            state,
            committed,
            waiting,
            waiters: Waiters::default(),
            snapshot_every_events,
            last_snapshot_seq,
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
            Err(error) => respond(batch, unanswered(reply), Err(error)),
        }
        self.settle(batch);
        self.publish_waiting();
    }

    fn publish_waiting(&self) {
        self.waiting.store(self.waiters.count(), Ordering::Relaxed);
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
            } => {
                if let Some(signal) = self.take_signal(batch, &agent, &filter, consume)? {
                    return Ok(done_with(Outcome::Signal {
                        signal: Some(signal),
                    }));
                }
                match wait_ms {
                    None => Ok(done_with(Outcome::Signal { signal: None })),
                    Some(wait_ms) => {
                        let waiting = self
                            .waiters
                            .signals
                            .iter()
                            .filter(|w| w.agent == agent)
                            .count();
                        room(waiting, || format!("the signals of {agent:?}"))?;
                        let wants = SignalWant { filter, consume };
                        self.waiters
                            .signals
                            .push_back(waiter(agent, now, wait_ms, reply, wants));
                        Ok(Step::Parked)
                    }
                }
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
                            let queue = self.waiters.locks.entry(resource.clone()).or_default();
                            room(queue.len(), || format!("lock {resource:?}"))?;
                            let wants = LockWant { ttl_ms, intent };
                            queue.push_back(waiter(agent, now, wait_ms, reply, wants));
                            Ok(Step::Parked)
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
                        room(self.waiters.claims.len(), || "the task queue".to_owned())?;
                        let wants = ClaimWant { tags, lease_ttl_ms };
                        self.waiters
                            .claims
                            .push_back(waiter(agent, now, wait_ms, reply, wants));
                        Ok(Step::Parked)
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
                let waiters = self.waiters.approvals.entry(approval).or_default();
                room(waiters.len(), || format!("approval {approval}"))?;
                waiters.push(waiter(agent, now, wait_ms, reply, ()));
                Ok(Step::Parked)
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
        filter: &SignalFilter,
        consume: bool,
    ) -> Result<Option<crate::signals::Signal>, CommandError> {
        let Some(signal) = self
            .state
            .signals
            .first_for(agent, filter, batch.now())
            .cloned()
        else {
            return Ok(None);
        };
        if consume {
            self.stage(
                batch,
                agent,
                vec![Event::SignalConsumed { signal: signal.id }],
            )?;
        }
        Ok(Some(signal))
    }

    /// Serves every waiter whose wait is now satisfied, in arrival order.
    fn settle(&mut self, batch: &mut Batch<'_, '_>) {
        if self.waiters.is_empty() {
            return;
        }
        let now = batch.now();
        let resources: Vec<String> = self.waiters.locks.keys().cloned().collect();
        for resource in resources {
            while self.state.locks.live(&resource, now).is_none() {
                let Some(waiter) = self
                    .waiters
                    .locks
                    .get_mut(&resource)
                    .and_then(VecDeque::pop_front)
                else {
                    break;
                };
                let result = self.require_member(&waiter.agent).and_then(|()| {
                    self.grant_lock(
                        batch,
                        &waiter.agent,
                        &resource,
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
            if self
                .waiters
                .locks
                .get(&resource)
                .is_some_and(VecDeque::is_empty)
            {
                self.waiters.locks.remove(&resource);
            }
        }
        for waiter in std::mem::take(&mut self.waiters.claims) {
            let claimed = self.require_member(&waiter.agent).and_then(|()| {
                self.claim(
                    batch,
                    &waiter.agent,
                    &waiter.wants.tags,
                    waiter.wants.lease_ttl_ms,
                )
            });
            match claimed {
                Ok(None) => self.waiters.claims.push_back(waiter),
                Ok(Some(task)) => {
                    respond(batch, waiter.reply, Ok(Outcome::Task { task: Some(task) }))
                }
                Err(error) => respond(batch, waiter.reply, Err(error)),
            }
        }
        for waiter in std::mem::take(&mut self.waiters.signals) {
            let taken = self.take_signal(
                batch,
                &waiter.agent,
                &waiter.wants.filter,
                waiter.wants.consume,
            );
            match taken {
                Ok(None) => self.waiters.signals.push_back(waiter),
                Ok(Some(signal)) => respond(
                    batch,
                    waiter.reply,
                    Ok(Outcome::Signal {
                        signal: Some(signal),
                    }),
                ),
                Err(error) => respond(batch, waiter.reply, Err(error)),
            }
        }
        let decided: Vec<u64> = self
            .waiters
            .approvals
            .keys()
            .copied()
            .filter(|id| {
                self.state
                    .approvals
                    .get(*id)
                    .is_some_and(|approval| approval.state_at(now) != ApprovalState::Pending)
            })
            .collect();
        for id in decided {
            let Some(approval) = self.state.approvals.get(id).cloned() else {
                continue;
            };
            for waiter in self.waiters.approvals.remove(&id).unwrap_or_default() {
                let mut view = approval.clone();
                view.state = approval.state_at(now);
                respond(
                    batch,
                    waiter.reply,
                    Ok(Outcome::Approval { approval: view }),
                );
            }
        }
    }

    /// Answers every waiter whose deadline has passed.
    fn time_out_waiters(&mut self, batch: &mut Batch<'_, '_>) {
        let now = batch.now();
        let mut timed_out: Vec<(Reply, Timestamp)> = Vec::new();
        let locks = std::mem::take(&mut self.waiters.locks);
        for (resource, queue) in locks {
            let kept = split_expired(queue, now, &mut timed_out);
            if !kept.is_empty() {
                self.waiters.locks.insert(resource, kept);
            }
        }
        let claims = std::mem::take(&mut self.waiters.claims);
        self.waiters.claims = split_expired(claims, now, &mut timed_out);
        let signals = std::mem::take(&mut self.waiters.signals);
        self.waiters.signals = split_expired(signals, now, &mut timed_out);
        let approvals = std::mem::take(&mut self.waiters.approvals);
        for (approval, waiters) in approvals {
            let kept: Vec<Waiter<()>> = split_expired(waiters, now, &mut timed_out).into();
            if !kept.is_empty() {
                self.waiters.approvals.insert(approval, kept);
            }
        }
        for (reply, since) in timed_out {
            let waited_ms = millis_between(since, now);
            respond(batch, reply, Err(CommandError::TimedOut { waited_ms }));
        }
    }
}

/// Keeps the waiters still waiting at `now`, in order; moves the others' replies to `out`.
fn split_expired<T>(
    waiters: impl IntoIterator<Item = Waiter<T>>,
    now: Timestamp,
    out: &mut Vec<(Reply, Timestamp)>,
) -> VecDeque<Waiter<T>> {
    let mut kept = VecDeque::new();
    for waiter in waiters {
        match waiter.deadline <= now {
            true => out.push((waiter.reply, waiter.since)),
            false => kept.push_back(waiter),
        }
    }
    kept
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
        self.time_out_waiters(batch);
        self.settle(batch);
        self.publish_waiting();
    }

    fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let mut next = [self.state.next_deadline(), self.waiters.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        if !self.waiters.claims.is_empty() {
            // A waiting claim may be served when a delayed task becomes ready.
            next = next
                .into_iter()
                .chain(self.state.queue.next_ready_after(now))
                .min();
        }
        next
    }

    fn observe(&mut self, record: &Record) {
        self.state.apply(record);
    }

    fn committed(&mut self, records: &[Record]) {
        let mut committed = self
            .committed
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for record in records {
            committed.apply(record);
        }
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
        let waiters = std::mem::take(&mut self.waiters);
        let replies = waiters
            .locks
            .into_values()
            .flatten()
            .map(|w| w.reply)
            .chain(waiters.claims.into_iter().map(|w| w.reply))
            .chain(waiters.signals.into_iter().map(|w| w.reply))
            .chain(waiters.approvals.into_values().flatten().map(|w| w.reply));
        for reply in replies {
            reply.answer(Err(CommandError::Closing));
        }
        self.publish_waiting();
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
