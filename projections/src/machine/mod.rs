//! The coordination state machine: runs on the ledger's writer thread, validates each command
//! against the working state (which includes every event staged before it), turns valid ones
//! into events, records expiries when deadlines pass, and serves blocking waits the moment the
//! event that satisfies them is staged.
//!
//! Every reply goes out after the commit that holds its events (`Batch::after_commit`), and
//! readers only ever see `committed`, which is updated from committed records. If a commit
//! fails, the ledger's writer is poisoned and this working state is never used again.

mod agents;
mod approvals;
mod expiry;
mod journal;
mod locks;
mod reply;
mod sequencer;
mod settle;
mod signals;
mod snapshots;
mod tasks;
mod workflows;

pub use reply::Reply;
use reply::Touched;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetlog_ledger::{Batch, Error as LedgerError, Event, Record, Timestamp};

use crate::command::{Command, CommandError, Outcome, invalid};
use crate::published::{Published, Publisher};
use crate::replay::Projection;
use crate::state::State;
use crate::waits::{Refused, Waits};

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
    snapshots: snapshots::Snapshots,
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
        snapshots: Option<fleetlog_ledger::SnapshotStore>,
        snapshot_every_events: u64,
    ) -> Self {
        let snapshots = snapshots::Snapshots::new(snapshots, snapshot_every_events, state.seq);
        Machine {
            state,
            publisher: Publisher::new(committed),
            waiting,
            waits: Waits::default(),
            touched: Touched::default(),
            snapshots,
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
        self.record_all(batch, agent, vec![event])
    }

    /// Stages a command's events, its primary one first, and answers with that one's seq.
    fn record_all(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        events: Vec<Event>,
    ) -> Result<Step, CommandError> {
        let records = self.stage(batch, agent, events)?;
        Ok(done_with(appended(&records)))
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

    /// Checks the actor, then hands the command to its domain. Commands that only record what
    /// they were given are built here; the rest decide in their domain's file.
    fn decide(
        &mut self,
        command: Command,
        reply: &mut Option<Reply>,
        batch: &mut Batch<'_, '_>,
    ) -> Result<Step, CommandError> {
        let now = batch.now();
        match &command {
            Command::Register(_) => {}
            // A heartbeat is how an expired agent comes back.
            Command::Heartbeat(heartbeat) => self.require_member(&heartbeat.agent)?,
            other => self.require_alive(other.agent(), now)?,
        }
        let actor = command.agent().to_owned();
        match command {
            Command::Register(c) => self.register(batch, c),
            Command::Heartbeat(c) => self.heartbeat(batch, c),
            Command::Deregister(c) => self.deregister(batch, c),
            Command::SendSignal(c) => self.send_signal(batch, c),
            Command::ReceiveSignal(c) => self.receive_signal(batch, reply, c),
            Command::AckSignal(c) => self.ack_signal(batch, c),
            Command::AcquireLock(c) => self.acquire(batch, reply, c),
            Command::RenewLock(c) => self.renew_lock(batch, c),
            Command::ReleaseLock(c) => self.release_lock(batch, c),
            Command::Enqueue(c) => self.enqueue(batch, c),
            Command::Claim(c) => self.claim(batch, reply, c),
            Command::RenewLease(c) => self.record_all(batch, &actor, self.renew_lease(c)?),
            Command::Complete(c) => self.record_all(batch, &actor, self.complete_task(c)?),
            Command::Fail(c) => self.record_all(batch, &actor, self.fail_task(c, now)?),
            Command::ReleaseTask(c) => self.record_all(batch, &actor, self.release_task(c)?),
            Command::TaskProgress(c) => self.record_all(batch, &actor, self.task_progress(c)?),
            Command::EscalateTask(c) => self.record_all(batch, &actor, self.escalate_task(c)?),
            Command::DeadLetterTask(c) => self.record_all(batch, &actor, self.dead_letter_task(c)?),
            Command::Cancel(c) => self.record_all(batch, &actor, self.cancel_task(c)?),
            Command::RequestApproval(c) => self.request_approval(batch, c),
            Command::Decide(c) => self.decide_approval(batch, c),
            Command::AwaitApproval(c) => self.await_approval(batch, reply, c),
            Command::Post(c) => self.record_one(batch, &actor, c.into_event()),
            Command::Reply(c) => self.record_one(batch, &actor, self.reply_to_thread(c)?),
            Command::LogDecision(c) => self.record_one(batch, &actor, c.into_event()),
            Command::StartWorkflow(c) => self.record_one(batch, &actor, self.start_workflow(c)?),
            Command::StartStage(c) => self.record_one(batch, &actor, self.start_stage(c, now)?),
            Command::CompleteStage(c) => {
                self.record_all(batch, &actor, self.complete_stage(c, now)?)
            }
            Command::Handoff(c) => self.record_one(batch, &actor, self.handoff(c)?),
            Command::Checkpoint(c) => self.record_one(batch, &actor, self.checkpoint(c)?),
            Command::CompleteWorkflow(c) => {
                self.record_one(batch, &actor, self.complete_workflow(c)?)
            }
            Command::CancelWorkflow(c) => self.record_one(batch, &actor, self.cancel_workflow(c)?),
            Command::SetBudget(c) => self.record_one(batch, &actor, self.set_budget(c)?),
            Command::SetSpendLimit(c) => self.record_one(batch, &actor, self.set_spend_limit(c)?),
            Command::Custom(c) => self.record_one(batch, &actor, c.into_event()),
            Command::ImportTelemetry(c) => {
                self.record_all(batch, &actor, self.import_telemetry(c)?)
            }
        }
    }
}
