//! Approval gates: a request waits for one decision by an allowed approver, or expires at
//! `requested_at + timeout`. Approvals are never deleted.

use std::collections::BTreeMap;

use crate::command::CommandError;
use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Json, Record, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// The seq of its `approval_requested` record.
    pub id: u64,
    pub requested_by: String,
    pub action: String,
    pub context: Json,
    /// Empty: anyone may decide.
    pub approvers: Vec<String>,
    pub requested_at: Timestamp,
    pub timeout_ms: u64,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<Timestamp>,
}

impl Approval {
    pub fn deadline(&self) -> Timestamp {
        self.requested_at.plus_millis(self.timeout_ms)
    }

    /// The state a reader sees at `now`: a pending request past its deadline reads as expired
    /// even before the `approval_expired` record is written.
    pub fn state_at(&self, now: Timestamp) -> ApprovalState {
        match self.state {
            ApprovalState::Pending if now >= self.deadline() => ApprovalState::Expired,
            state => state,
        }
    }

    /// A named approver decides; with none named, anyone but the requester (a requester that
    /// may approve its own request says so by naming itself).
    pub fn may_decide(&self, agent: &str) -> bool {
        match self.approvers.is_empty() {
            true => agent != self.requested_by,
            false => self.approvers.iter().any(|approver| approver == agent),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Approvals {
    pub by_id: BTreeMap<u64, Approval>,
}

impl Approvals {
    pub(crate) fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::ApprovalRequested {
                action,
                context,
                approvers,
                timeout_ms,
            } => {
                self.by_id.insert(
                    record.seq,
                    Approval {
                        id: record.seq,
                        requested_by: record.actor.clone(),
                        action: action.clone(),
                        context: context.clone(),
                        approvers: approvers.clone(),
                        requested_at: record.ts,
                        timeout_ms: *timeout_ms,
                        state: ApprovalState::Pending,
                        decided_by: None,
                        reason: None,
                        decided_at: None,
                    },
                );
            }
            Event::ApprovalDecided {
                approval,
                approved,
                reason,
            } => {
                if let Some(approval) = self.by_id.get_mut(approval) {
                    approval.state = match approved {
                        true => ApprovalState::Approved,
                        false => ApprovalState::Rejected,
                    };
                    approval.decided_by = Some(record.actor.clone());
                    approval.reason = Some(reason.clone());
                    approval.decided_at = Some(record.ts);
                }
            }
            Event::ApprovalExpired { approval, .. } => {
                if let Some(approval) = self.by_id.get_mut(approval) {
                    approval.state = ApprovalState::Expired;
                    approval.decided_at = Some(record.ts);
                }
            }
            _ => {}
        }
    }

    pub fn get(&self, id: u64) -> Option<&Approval> {
        self.by_id.get(&id)
    }

    /// Requests still pending at `now`.
    pub fn pending(&self, now: Timestamp) -> Vec<&Approval> {
        self.by_id
            .values()
            .filter(|approval| approval.state_at(now) == ApprovalState::Pending)
            .collect()
    }
}

/// Asks for a decision on `action` by one of `approvers` (anyone, if empty) within
/// `timeout_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestApproval {
    pub agent: String,
    pub action: String,
    #[serde(default)]
    pub context: Json,
    #[serde(default)]
    pub approvers: Vec<String>,
    pub timeout_ms: u64,
}

/// An allowed approver approves or rejects a pending request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    pub agent: String,
    pub approval: u64,
    pub approved: bool,
    #[serde(default)]
    pub reason: String,
}

/// Waits up to `wait_ms` for a request to be decided or to expire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitApproval {
    pub agent: String,
    pub approval: u64,
    pub wait_ms: u64,
}

impl Approvals {
    /// Whether `agent` may decide `approval` at `now`: pending, and a named approver (or, with
    /// none named, anyone but the requester).
    pub(crate) fn check_decider(
        &self,
        agent: &str,
        approval: u64,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let found = self
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
        if found.approvers.is_empty() && agent == found.requested_by {
            return Err(CommandError::SelfApproval { approval });
        }
        if !found.may_decide(agent) {
            return Err(CommandError::NotAnApprover {
                approval,
                approvers: found.approvers.clone(),
            });
        }
        Ok(())
    }
}
