//! How a command is answered: a [`Reply`] (which knows whether its caller is still there), and
//! the keys a batch touched, so only their waits are re-examined.

use std::collections::BTreeSet;

use fleetlog_ledger::{Event, Record, SignalTarget};

use crate::command::{CommandError, Outcome};

/// Where a command's answer goes: called once, after the commit that decides it. A callback, so
/// a synchronous caller can block on a channel while an async server awaits a oneshot. A reply
/// may know whether its caller is still there: a wait is never served for a caller that left.
pub struct Reply {
    pub(super) answer: Box<dyn FnOnce(Result<Outcome, CommandError>) + Send>,
    pub(super) gone: Option<Box<dyn Fn() -> bool + Send>>,
    /// The command's idempotency key and digest: its answer is remembered with its events.
    pub(super) key: Option<(String, [u8; 32])>,
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
pub(super) struct Touched {
    pub(super) locks: BTreeSet<String>,
    pub(super) queue: bool,
    pub(super) signals: BTreeSet<String>,
    pub(super) every_inbox: bool,
    pub(super) approvals: BTreeSet<u64>,
}

impl Touched {
    pub(super) fn note(&mut self, record: &Record) {
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
