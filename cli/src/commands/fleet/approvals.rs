//! `fleetlog approval …`: request, decide, wait, list.

use anyhow::Result;
use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::Command;
use fleetlog_projections::commands::{AwaitApproval, DecideApproval, RequestApproval};

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum ApprovalCommand {
    /// Ask for approval of an action; prints the approval id.
    Request {
        #[command(flatten)]
        agent: Agent,
        /// What needs approving, e.g. "deploy to production".
        #[arg(long)]
        action: String,
        /// Context for the approver, as JSON.
        #[arg(long, default_value = "null")]
        context: String,
        /// An agent allowed to decide (repeat for several; none: any agent but the requester).
        #[arg(long = "approver")]
        approvers: Vec<String>,
        /// How long it stays open before it expires (e.g. 10m).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 3_600_000)]
        timeout_ms: u64,
    },
    /// Approve a pending request.
    Approve {
        #[command(flatten)]
        agent: Agent,
        /// The approval id (what `approval request` printed).
        id: u64,
        /// Why, kept in the log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a pending request, with the reason.
    Reject {
        #[command(flatten)]
        agent: Agent,
        /// The approval id (what `approval request` printed).
        id: u64,
        /// Why, kept in the log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Wait for the decision. Exit 0 approved, 4 rejected, 5 expired, 3 still pending when the
    /// wait timed out: `approval wait ID && deploy` deploys only when approved.
    Wait {
        #[command(flatten)]
        agent: Agent,
        /// The approval id (what `approval request` printed).
        id: u64,
        /// Give up after this long (exit 3 while still pending).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Approval requests and their decisions.
    List {
        /// Only requests still waiting for a decision.
        #[arg(long)]
        pending: bool,
    },
}

pub(super) fn approvals_text(page: &views::ApprovalsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .approvals
        .iter()
        .map(|view| {
            let approval = &view.approval;
            vec![
                approval.id.to_string(),
                cell(approval.state),
                approval.action.clone(),
                approval.requested_by.clone(),
                cell(&approval.decided_by),
                cell(view.deadline),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "ACTION",
            "REQUESTED BY",
            "DECIDED BY",
            "DEADLINE",
        ],
        &rows,
    )
}

/// Runs one `approvals` subcommand.
pub(super) fn run(backend: &Backend, command: ApprovalCommand, out: &Output) -> Result<ExitCode> {
    let command = match command {
        ApprovalCommand::List { pending } => {
            return show_view(
                backend,
                Query::Approvals {
                    pending,
                    limit: None,
                    cursor: None,
                },
                out,
                approvals_text,
            );
        }
        ApprovalCommand::Request {
            agent,
            action,
            context,
            approvers,
            timeout_ms,
        } => Command::RequestApproval(RequestApproval {
            agent: agent.agent,
            action,
            context: json_arg("--context", &context)?,
            approvers,
            timeout_ms,
        }),
        ApprovalCommand::Approve { agent, id, reason } => Command::Decide(DecideApproval {
            agent: agent.agent,
            approval: id,
            approved: true,
            reason,
        }),
        ApprovalCommand::Reject { agent, id, reason } => Command::Decide(DecideApproval {
            agent: agent.agent,
            approval: id,
            approved: false,
            reason,
        }),
        ApprovalCommand::Wait {
            agent,
            id,
            timeout_ms,
        } => {
            let command = Command::AwaitApproval(AwaitApproval {
                agent: agent.agent,
                approval: id,
                wait_ms: timeout_ms,
            });
            let outcome = match backend.execute(&command) {
                Err(error) if error.code() == Some("timed_out") => {
                    out.emit(
                        &serde_json::json!({"approval": id, "state": "pending", "timed_out": true}),
                        || format!("approval {id} is still pending after {timeout_ms} ms"),
                    );
                    return Ok(ExitCode::from(EXIT_PENDING));
                }
                answer => answer?,
            };
            let value = serde_json::to_value(&outcome)?;
            out.emit(&value, || outcome_text(&outcome));
            return Ok(match outcome {
                Outcome::Approval { approval } => ExitCode::from(exit_code_of(approval.state)),
                _ => ExitCode::SUCCESS,
            });
        }
    };
    run_command(backend, command, out)
}

/// `approval wait`'s exit codes.
pub const EXIT_APPROVED: u8 = 0;
pub const EXIT_PENDING: u8 = 3;
pub const EXIT_REJECTED: u8 = 4;
pub const EXIT_EXPIRED: u8 = 5;

fn exit_code_of(state: fleetlog_projections::approvals::ApprovalState) -> u8 {
    use fleetlog_projections::approvals::ApprovalState;
    match state {
        ApprovalState::Approved => EXIT_APPROVED,
        ApprovalState::Rejected => EXIT_REJECTED,
        ApprovalState::Expired => EXIT_EXPIRED,
        ApprovalState::Pending => EXIT_PENDING,
    }
}
