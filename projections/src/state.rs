//! Everything the coordination projections know, folded from records, plus an index of every
//! deadline in it so the machine finds the next expiry without scanning.

use std::collections::BTreeSet;

use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Record, Timestamp};

use crate::agents::{Agents, Liveness};
use crate::approvals::{ApprovalState, Approvals};
use crate::board::Board;
use crate::budgets::Budgets;
use crate::decisions::Decisions;
use crate::facts::Facts;
use crate::locks::Locks;
use crate::queue::{Queue, TaskState};
use crate::replay::Projection;
use crate::signals::Signals;
use crate::workflows::Workflows;

/// Something that expires, named so its deadline can be found again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
pub enum Due {
    Agent(String),
    Signal(u64),
    /// An acknowledged delivery of a signal to an agent.
    SignalAck(u64, String),
    Lock(String),
    Lease(u64),
    Approval(u64),
}

/// The coordination state: a pure fold of records.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct State {
    /// Seq of the last record applied.
    pub seq: u64,
    /// Time of the last record applied.
    pub ts: Timestamp,
    pub agents: Agents,
    pub signals: Signals,
    pub locks: Locks,
    pub queue: Queue,
    pub approvals: Approvals,
    pub board: Board,
    pub decisions: Decisions,
    pub workflows: Workflows,
    pub budgets: Budgets,
    /// Raw facts for analytics: finished work and measured waits.
    pub facts: Facts,
    /// (deadline, what) for everything live that expires.
    deadlines: BTreeSet<(Timestamp, Due)>,
}

impl Projection for State {
    fn apply(&mut self, record: &Record) {
        let touched = self.touched(record);
        for due in &touched {
            if let Some(deadline) = self.deadline_of(due) {
                self.deadlines.remove(&(deadline, due.clone()));
            }
        }
        self.agents.apply(record);
        self.signals.apply(record);
        self.locks.apply(record);
        self.queue.apply(record);
        self.approvals.apply(record);
        self.board.apply(record);
        self.decisions.apply(record);
        self.workflows.apply(record);
        self.budgets.apply(record);
        self.facts.apply(record);
        for due in touched {
            if let Some(deadline) = self.deadline_of(&due) {
                self.deadlines.insert((deadline, due));
            }
        }
        self.seq = record.seq;
        self.ts = record.ts;
    }
}

impl State {
    /// What a record can change the deadline of.
    fn touched(&self, record: &Record) -> Vec<Due> {
        let mut dues = match &record.event {
            Event::SignalDelivered { signal, .. } | Event::SignalAcked { signal } => {
                vec![Due::SignalAck(*signal, record.actor.clone())]
            }
            Event::SignalAckExpired { signal, agent, .. } => {
                vec![Due::SignalAck(*signal, agent.clone())]
            }
            Event::SignalConsumed { signal } | Event::SignalExpired { signal, .. } => {
                // Ending a signal ends every acknowledgement still outstanding on it.
                let mut dues = vec![Due::Signal(*signal)];
                dues.extend(
                    self.signals
                        .delivered(*signal)
                        .map(|(agent, _)| Due::SignalAck(*signal, agent.clone())),
                );
                dues
            }
            _ => touched(record),
        };
        // A sign of life moves the actor's deadline (the same test `Agents` applies).
        let moves = !matches!(
            record.event,
            Event::AgentRegistered { .. }
                | Event::AgentHeartbeat { .. }
                | Event::AgentDeregistered { .. }
                | Event::AgentExpired { .. }
        ) && self
            .agents
            .get(&record.actor)
            .is_some_and(|agent| agent.sign_of_life_moves(record.ts));
        if moves {
            dues.push(Due::Agent(record.actor.clone()));
        }
        dues
    }
}

/// What a record can change the deadline of (records whose dues need no state).
fn touched(record: &Record) -> Vec<Due> {
    let due = match &record.event {
        Event::AgentRegistered { .. }
        | Event::AgentHeartbeat { .. }
        | Event::AgentDeregistered { .. } => Due::Agent(record.actor.clone()),
        Event::AgentExpired { agent, .. } => Due::Agent(agent.clone()),
        Event::SignalSent { .. } => Due::Signal(record.seq),
        Event::SignalConsumed { signal } | Event::SignalExpired { signal, .. } => {
            Due::Signal(*signal)
        }
        Event::LockAcquired { resource, .. }
        | Event::LockRenewed { resource, .. }
        | Event::LockReleased { resource, .. }
        | Event::LockExpired { resource, .. } => Due::Lock(resource.clone()),
        Event::ApprovalRequested { .. } => Due::Approval(record.seq),
        Event::ApprovalDecided { approval, .. } | Event::ApprovalExpired { approval, .. } => {
            Due::Approval(*approval)
        }
        // Any record about a task may move its lease (those that cannot leave it where it was).
        event => match crate::queue::task_of(event) {
            Some(task) => Due::Lease(task),
            None => return Vec::new(),
        },
    };
    vec![due]
}

impl State {
    /// When `due` expires, if it is live.
    pub fn deadline_of(&self, due: &Due) -> Option<Timestamp> {
        match due {
            Due::Agent(id) => self
                .agents
                .get(id)
                .filter(|agent| agent.liveness == Liveness::Active)
                .map(|agent| agent.deadline()),
            Due::Signal(id) => self.signals.live.get(id).map(|signal| signal.deadline()),
            Due::SignalAck(id, agent) => self
                .signals
                .live
                .get(id)
                .and_then(|signal| signal.delivered.get(agent).copied()),
            Due::Lock(resource) => self.locks.held.get(resource).map(|lock| lock.expires_at),
            Due::Lease(id) => self
                .queue
                .get(*id)
                .filter(|task| task.state == TaskState::Claimed)
                .and_then(|task| task.lease_expires),
            Due::Approval(id) => self
                .approvals
                .get(*id)
                .filter(|approval| approval.state == ApprovalState::Pending)
                .map(|approval| approval.deadline()),
        }
    }

    /// The earliest deadline of anything live.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Everything whose deadline is at or before `now`, earliest first.
    pub fn due_by(&self, now: Timestamp) -> Vec<(Timestamp, Due)> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .cloned()
            .collect()
    }

    /// A digest of the whole state: equal digests mean equal projections.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&crate::snapshot::encode(self)).as_bytes()
    }
}
