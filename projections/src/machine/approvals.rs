//! Approval gates: request, decide, and wait for the decision.

use fleetlog_ledger::{Batch, Event};

use crate::approvals::ApprovalState;
use crate::command::{CommandError, Outcome};
use crate::commands::{AwaitApproval, DecideApproval, RequestApproval};
use crate::waits::ApprovalWant;

use super::*;

impl Machine {
    pub(super) fn request_approval(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: RequestApproval,
    ) -> Result<Step, CommandError> {
        positive("timeout_ms", command.timeout_ms)?;
        let event = Event::ApprovalRequested {
            action: command.action,
            context: command.context,
            approvers: command.approvers,
            timeout_ms: command.timeout_ms,
        };
        self.record_one(batch, &command.agent, event)
    }

    pub(super) fn decide_approval(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: DecideApproval,
    ) -> Result<Step, CommandError> {
        let DecideApproval {
            agent,
            approval,
            approved,
            reason,
        } = command;
        self.state
            .approvals
            .check_decider(&agent, approval, batch.now())?;
        let event = Event::ApprovalDecided {
            approval,
            approved,
            reason,
        };
        self.record_one(batch, &agent, event)
    }

    /// Answers at once if the request is decided or expired, else parks until it is.
    pub(super) fn await_approval(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        command: AwaitApproval,
    ) -> Result<Step, CommandError> {
        let AwaitApproval {
            agent,
            approval,
            wait_ms,
        } = command;
        let now = batch.now();
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
}
