//! Agents and the fleet at a glance: `agents`, `hung`, `stale`, `status`.

use fleetlog::wire::views;

use crate::commands::output::table;

use super::*;

pub(super) fn agents_text(page: &views::AgentsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .agents
        .iter()
        .map(|view| {
            let agent = &view.agent;
            vec![
                agent.id.clone(),
                agent.role.clone(),
                cell(view.alive),
                agent.status.clone(),
                cell(agent.progress),
                cell(agent.last_heartbeat),
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "ROLE",
            "ALIVE",
            "STATUS",
            "PROGRESS",
            "LAST HEARTBEAT",
        ],
        &rows,
    )
}

pub(super) fn status_text(status: &views::StatusView) -> String {
    format!(
        "seq {}: {} agents alive of {} known, {} approvals pending\n\nlocks\n{}\n\nqueue {}\n\nworkflows\n{}",
        status.seq,
        status.agents_active,
        status.agents_known,
        status.approvals_pending,
        locks_rows(&status.locks),
        cell(&status.queue.by_state),
        workflow_rows(&status.workflows)
    )
}
