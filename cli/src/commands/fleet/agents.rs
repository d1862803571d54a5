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
                agent.progress.map_or("-".to_owned(), percent),
                agent.current_task.clone().unwrap_or_else(|| "-".to_owned()),
                view.workflow.clone().unwrap_or_else(|| "-".to_owned()),
                ago(view.last_seen_ms_ago),
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
            "TASK",
            "WORKFLOW",
            "LAST BEAT",
        ],
        &rows,
    )
}

/// `0.3333…` as `33 %`.
pub(super) fn percent(fraction: f64) -> String {
    format!("{:.0} %", fraction * 100.0)
}

/// Milliseconds as people read them: `2.3 s ago`, `4 min ago`, `3.5 h ago`.
pub(super) fn ago(millis: u64) -> String {
    let seconds = millis as f64 / 1e3;
    match seconds {
        s if s < 60.0 => format!("{s:.1} s ago"),
        s if s < 3_600.0 => format!("{:.0} min ago", s / 60.0),
        s if s < 86_400.0 => format!("{:.1} h ago", s / 3_600.0),
        s => format!("{:.1} d ago", s / 86_400.0),
    }
}

pub(super) fn status_text(status: &views::StatusView) -> String {
    let queue = match status.queue.by_state.is_empty() {
        true => "empty".to_owned(),
        false => status
            .queue
            .by_state
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "seq {}: {} agents alive of {} known, {} approvals pending\n\nlocks\n{}\n\nqueue: {}\n\nworkflows\n{}",
        status.seq,
        status.agents_active,
        status.agents_known,
        status.approvals_pending,
        locks_rows(&status.locks),
        queue,
        workflow_rows(&status.workflows)
    )
}

/// `fleetlog alive --agent A`: one agent's liveness, as an exit code scripts can test.
pub(super) fn alive(backend: &Backend, agent: &str, out: &Output) -> Result<ExitCode> {
    let value = match backend.query(&Query::Agent {
        id: agent.to_owned(),
    }) {
        Err(error) if matches!(error.code(), Some("unknown_agent" | "not_found")) => {
            out.error(&anyhow::Error::new(error));
            return Ok(ExitCode::from(3));
        }
        answer => answer?,
    };
    let view: views::AgentView = serde_json::from_value(value.clone())?;
    let left_ms = view
        .deadline
        .as_micros()
        .saturating_sub(view.agent.last_heartbeat.as_micros())
        / 1000
        - i64::try_from(view.last_seen_ms_ago).unwrap_or(i64::MAX);
    out.emit(&value, || match view.alive {
        true => format!(
            "{agent} is alive: last sign of life {}, expires in {:.1} s without another",
            ago(view.last_seen_ms_ago),
            left_ms as f64 / 1e3
        ),
        false => format!(
            "{agent} is not alive ({}): last sign of life {}",
            match view.agent.liveness {
                // Past its deadline; the expiry is recorded with the next write.
                fleetlog_projections::agents::Liveness::Active => "expired".to_owned(),
                liveness => cell(liveness),
            },
            ago(view.last_seen_ms_ago)
        ),
    });
    Ok(match view.alive {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
