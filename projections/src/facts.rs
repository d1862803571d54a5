//! The raw facts analytics need and the coordination state does not keep: finished units of
//! work (stages and tasks), and waits the ledger saw (queue, lock, signal, approval). Folded
//! like any projection, so analytics work live, as of any past seq, and from snapshots. Only
//! the newest [`FACTS_KEPT_PER_KIND`] task runs and waits of each kind are kept, so their
//! memory does not grow with history (stage runs, which carry costs, are all kept); the forgetting is part of the fold (by count, in log order), so replay and
//! snapshots forget exactly the same ones.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::history::History;
use fleetlog_ledger::{Event, Outcome, Record, SignalTarget, Timestamp};
use serde::Serialize;

/// A completed stage (or an imported agent invocation).
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct StageRun {
    pub seq: u64,
    pub workflow_id: String,
    pub stage: String,
    pub agent: String,
    pub tier: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub cost_usd: f64,
    pub tokens: u64,
    pub description: String,
    pub tags: Vec<String>,
    pub quality: Option<f64>,
    /// When it finished (the occurrence time for imported telemetry).
    pub at: Timestamp,
}

/// A task an agent finished, successfully or not.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct TaskRun {
    pub task: u64,
    pub agent: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    /// What the task required of its claimant.
    pub capabilities: Vec<String>,
    pub workflow_id: Option<String>,
    pub success: bool,
    /// Claim to completion or failure.
    pub duration_ms: u64,
    pub at: Timestamp,
}

/// One measured wait: who waited, when it ended, how long.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct Wait {
    pub agent: String,
    pub workflow_id: Option<String>,
    pub at: Timestamp,
    pub wait_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
struct TaskOpen {
    enqueued_at: Timestamp,
    claimed_at: Option<Timestamp>,
    first_claim_done: bool,
    title: String,
    description: String,
    tags: Vec<String>,
    capabilities: Vec<String>,
    workflow_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Facts {
    pub stage_runs: History<StageRun>,
    pub task_runs: History<TaskRun>,
    /// Enqueue to first claim.
    pub queue_waits: History<Wait>,
    /// Lock request to grant.
    pub lock_waits: History<Wait>,
    /// Signal send to consume.
    pub signal_latencies: History<Wait>,
    /// Approval request to decision.
    pub approval_waits: History<Wait>,
    /// Tasks not finished yet, by id.
    open_tasks: BTreeMap<u64, TaskOpen>,
    /// Signals not yet fully consumed or expired: sent at, broadcast?
    open_signals: BTreeMap<u64, (Timestamp, bool)>,
    /// Approvals not yet decided: requested at, by.
    open_approvals: BTreeMap<u64, (Timestamp, String)>,
}

/// The most facts of one kind kept for analytics (about; whole chunks of the oldest are
/// forgotten): memory is set by this, not by how long the fleet has run. The ledger keeps every
/// fact's record; analytics asked as of an earlier time see the facts recent then.
pub const FACTS_KEPT_PER_KIND: usize = 16_384;

fn millis(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.as_micros().saturating_sub(from.as_micros())).unwrap_or(0) / 1000
}

impl Facts {
    pub(crate) fn apply(&mut self, record: &Record) {
        let ts = record.ts;
        match &record.event {
            Event::StageCompleted {
                workflow_id,
                stage,
                agent,
                tier,
                outcome,
                duration_ms,
                cost_usd,
                tokens,
                description,
                tags,
                quality,
                occurred_at,
            } => self.stage_runs.push(StageRun {
                seq: record.seq,
                workflow_id: workflow_id.clone(),
                stage: stage.clone(),
                agent: agent.clone(),
                tier: tier.clone(),
                outcome: *outcome,
                duration_ms: *duration_ms,
                cost_usd: *cost_usd,
                tokens: *tokens,
                description: description.clone(),
                tags: tags.clone(),
                quality: *quality,
                at: occurred_at.unwrap_or(ts),
            }),
            Event::TaskEnqueued {
                title,
                description,
                tags,
                workflow_id,
                ..
            } => {
                self.open_tasks.insert(
                    record.seq,
                    TaskOpen {
                        enqueued_at: ts,
                        title: title.clone(),
                        description: description.clone(),
                        tags: tags.clone(),
                        workflow_id: workflow_id.clone(),
                        ..TaskOpen::default()
                    },
                );
            }
            Event::TaskOptions {
                task, capabilities, ..
            } => {
                if let Some(open) = self.open_tasks.get_mut(task) {
                    open.capabilities = capabilities.clone();
                }
            }
            Event::TaskClaimed { task, .. } => {
                if let Some(open) = self.open_tasks.get_mut(task) {
                    if !open.first_claim_done {
                        open.first_claim_done = true;
                        self.queue_waits.push(Wait {
                            agent: record.actor.clone(),
                            workflow_id: open.workflow_id.clone(),
                            at: ts,
                            wait_ms: millis(open.enqueued_at, ts),
                        });
                    }
                    open.claimed_at = Some(ts);
                }
            }
            Event::TaskCompleted { task, .. } => self.finish_task(*task, record, true),
            Event::TaskFailed { task, .. } => self.finish_task(*task, record, false),
            Event::TaskDeadLettered { task, .. }
            | Event::TaskCancelled { task, .. }
            | Event::TaskSkipped { task, .. } => {
                self.open_tasks.remove(task);
            }
            Event::LockAcquired { requested_at, .. } => self.lock_waits.push(Wait {
                agent: record.actor.clone(),
                workflow_id: None,
                at: ts,
                wait_ms: millis(*requested_at, ts),
            }),
            Event::SignalSent { target, .. } => {
                self.open_signals
                    .insert(record.seq, (ts, *target == SignalTarget::Broadcast));
            }
            Event::SignalConsumed { signal } | Event::SignalAcked { signal } => {
                if let Some((sent_at, broadcast)) = self.open_signals.get(signal).copied() {
                    self.signal_latencies.push(Wait {
                        agent: record.actor.clone(),
                        workflow_id: None,
                        at: ts,
                        wait_ms: millis(sent_at, ts),
                    });
                    if !broadcast {
                        self.open_signals.remove(signal);
                    }
                }
            }
            Event::SignalExpired { signal, .. } => {
                self.open_signals.remove(signal);
            }
            Event::ApprovalRequested { .. } => {
                self.open_approvals
                    .insert(record.seq, (ts, record.actor.clone()));
            }
            Event::ApprovalDecided { approval, .. } => {
                if let Some((requested_at, requester)) = self.open_approvals.remove(approval) {
                    self.approval_waits.push(Wait {
                        agent: requester,
                        workflow_id: None,
                        at: ts,
                        wait_ms: millis(requested_at, ts),
                    });
                }
            }
            Event::ApprovalExpired { approval, .. } => {
                self.open_approvals.remove(approval);
            }
            _ => return,
        }
        self.forget_the_oldest();
    }

    /// Stage runs are kept whole: they carry the cost accounting, and a stage is a unit of
    /// expensive work, rare beside the coordination these other facts count.
    fn forget_the_oldest(&mut self) {
        self.task_runs.keep_last(FACTS_KEPT_PER_KIND);
        self.queue_waits.keep_last(FACTS_KEPT_PER_KIND);
        self.lock_waits.keep_last(FACTS_KEPT_PER_KIND);
        self.signal_latencies.keep_last(FACTS_KEPT_PER_KIND);
        self.approval_waits.keep_last(FACTS_KEPT_PER_KIND);
    }

    /// A completion or failure by the holder: one finished attempt.
    fn finish_task(&mut self, task: u64, record: &Record, success: bool) {
        let Some(open) = self.open_tasks.get_mut(&task) else {
            return;
        };
        let started = open.claimed_at.take().unwrap_or(open.enqueued_at);
        self.task_runs.push(TaskRun {
            task,
            agent: record.actor.clone(),
            title: open.title.clone(),
            description: open.description.clone(),
            tags: open.tags.clone(),
            capabilities: open.capabilities.clone(),
            workflow_id: open.workflow_id.clone(),
            success,
            duration_ms: millis(started, record.ts),
            at: record.ts,
        });
        if success {
            self.open_tasks.remove(&task);
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetlog_ledger::{ChainHash, Event};

    use super::*;

    #[test]
    fn waits_are_kept_for_the_newest_only() {
        let mut facts = Facts::default();
        let extra = FACTS_KEPT_PER_KIND as u64 * 2 + 100;
        for seq in 1..=extra {
            let event = Event::LockAcquired {
                resource: "r".to_owned(),
                intent: String::new(),
                ttl_ms: 1_000,
                requested_at: Timestamp(seq as i64 * 1_000 - seq as i64 % 7),
                takeover_of: None,
            };
            facts.apply(&Record {
                seq,
                ts: Timestamp(seq as i64 * 1_000),
                actor: format!("agent-{}", seq % 3),
                event,
                prev: ChainHash::default(),
                hash: ChainHash::default(),
            });
        }
        let kept = facts.lock_waits.len();
        assert!(
            (FACTS_KEPT_PER_KIND..FACTS_KEPT_PER_KIND + 1024).contains(&kept),
            "{kept} kept"
        );
        // The newest, in order, up to the last one applied.
        let times: Vec<i64> = facts.lock_waits.iter().map(|wait| wait.at.0).collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(times.last(), Some(&(extra as i64 * 1_000)));
        assert_eq!(times[0], (extra - kept as u64 + 1) as i64 * 1_000);
    }
}
