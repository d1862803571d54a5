//! What the HTTP API and the CLI agree on: where a daemon listens, the read queries, and the
//! JSON each answers. `answer` is the one place a query is turned into JSON, used by the daemon's
//! GET routes and by embedded CLI commands alike.

use std::path::{Path, PathBuf};

use fleetlog_ledger::Timestamp;
use fleetlog_projections::State;
use fleetlog_projections::analytics;
use fleetlog_projections::decisions::DecisionQuery;
use fleetlog_projections::queue::TaskState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The daemon's default TCP port (loopback).
pub const DEFAULT_PORT: u16 = 7478;

/// The Unix socket a daemon serving `db` listens on: beside the database.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".sock");
    db.with_file_name(name)
}

/// A read of committed state. Field names are the HTTP query parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    /// Agents; `all` includes expired and deregistered ones.
    Agents {
        #[serde(default)]
        all: bool,
    },
    Agent {
        id: String,
    },
    Stale {
        threshold_ms: u64,
    },
    Hung {
        threshold_ms: u64,
    },
    /// Signals `agent` can see now, oldest first (a peek: nothing is consumed).
    Inbox {
        agent: String,
    },
    Locks,
    /// Whether `token` is the current token of `resource`.
    LockCheck {
        resource: String,
        token: u64,
    },
    Tasks {
        #[serde(default)]
        state: Option<String>,
        #[serde(default)]
        tag: Option<String>,
    },
    Task {
        id: u64,
    },
    QueueStats,
    Approvals {
        #[serde(default)]
        pending: bool,
    },
    Approval {
        id: u64,
    },
    Threads,
    Thread {
        id: u64,
    },
    Decisions {
        #[serde(default)]
        agent: Option<String>,
        #[serde(default, rename = "type")]
        decision_type: Option<String>,
        #[serde(default)]
        from: Option<Timestamp>,
        #[serde(default)]
        to: Option<Timestamp>,
    },
    Workflows,
    Workflow {
        id: String,
    },
    /// Agents, locks, queue and workflows at a glance.
    Status,
    /// Workflow counts, success rate, durations, estimates and common agent sequences.
    WorkflowStats {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        from: Option<Timestamp>,
        #[serde(default)]
        to: Option<Timestamp>,
        #[serde(default = "top_default")]
        top: usize,
    },
    /// Coordination overhead per workflow, fleet summary, and the wait breakdown.
    Overhead {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        from: Option<Timestamp>,
        #[serde(default)]
        to: Option<Timestamp>,
    },
    /// One agent's trend, or every agent's (worst first).
    Trends {
        #[serde(default)]
        agent: Option<String>,
        #[serde(default = "days_default")]
        days: u64,
        #[serde(default = "threshold_default")]
        threshold_points: f64,
    },
    /// Agents ranked for a task from their history.
    BestAgent {
        task: String,
        #[serde(default)]
        domain: Option<String>,
        #[serde(default = "confidence_default")]
        min_confidence: f64,
        #[serde(default = "top_default")]
        top: usize,
    },
    /// Cost and tokens by workflow, agent, tier and day, with budgets.
    Costs {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        from: Option<Timestamp>,
        #[serde(default)]
        to: Option<Timestamp>,
    },
}

fn top_default() -> usize {
    5
}

fn days_default() -> u64 {
    30
}

fn threshold_default() -> f64 {
    fleetlog_projections::analytics::TREND_THRESHOLD_POINTS_DEFAULT
}

fn confidence_default() -> f64 {
    0.3
}

/// Answers `query` from the live committed state (now), or from the state rebuilt as of a past
/// point (then "now" is that time, or the last record's time for a seq).
pub fn answer_at(
    coordinator: &fleetlog_projections::Coordinator,
    query: &Query,
    as_of: Option<fleetlog_projections::AsOf>,
) -> Result<Value, crate::Error> {
    match as_of {
        None => Ok(answer(&coordinator.state(), Timestamp::now(), query)?),
        Some(as_of) => {
            let state = coordinator.state_as_of(as_of)?;
            let now = match as_of {
                fleetlog_projections::AsOf::Time(ts) => ts,
                _ => state.ts,
            };
            Ok(answer(&state, now, query)?)
        }
    }
}

/// A query that names something that does not exist, or asks nonsense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("invalid query: {0}")]
    Invalid(String),
}

impl QueryError {
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::NotFound { .. } => 404,
            QueryError::Invalid(_) => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            QueryError::NotFound { .. } => "not_found",
            QueryError::Invalid(_) => "invalid",
        }
    }
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("projection views serialise to JSON")
}

fn not_found(what: &'static str, id: impl ToString) -> QueryError {
    QueryError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// Answers `query` from `state` as it is at `now`.
pub fn answer(state: &State, now: Timestamp, query: &Query) -> Result<Value, QueryError> {
    Ok(match query {
        Query::Agents { all } => {
            let agents: Vec<_> = match all {
                true => state.agents.by_id.values().collect(),
                false => state.agents.active(now),
            };
            json!({ "agents": agents.iter().map(|agent| agent_view(agent, now)).collect::<Vec<_>>() })
        }
        Query::Agent { id } => agent_view(
            state.agents.get(id).ok_or_else(|| not_found("agent", id))?,
            now,
        ),
        Query::Stale { threshold_ms } => {
            json!({ "agents": state.agents.stale(now, *threshold_ms).iter().map(|a| agent_view(a, now)).collect::<Vec<_>>() })
        }
        Query::Hung { threshold_ms } => {
            json!({ "agents": state.agents.hung(now, *threshold_ms).iter().map(|a| agent_view(a, now)).collect::<Vec<_>>() })
        }
        Query::Inbox { agent } => json!({ "signals": to_json(state.signals.inbox(agent, now)) }),
        Query::Locks => json!({ "locks": to_json(state.locks.list(now)) }),
        Query::LockCheck { resource, token } => {
            json!({ "resource": resource, "token": token, "current": state.locks.token_is_current(resource, *token, now) })
        }
        Query::Tasks { state: wanted, tag } => {
            let wanted = wanted.as_deref().map(parse_task_state).transpose()?;
            let tasks: Vec<_> = state
                .queue
                .tasks
                .values()
                .filter(|task| wanted.is_none_or(|wanted| task.state == wanted))
                .filter(|task| tag.as_ref().is_none_or(|tag| task.tags.contains(tag)))
                .collect();
            json!({ "tasks": to_json(tasks) })
        }
        Query::Task { id } => to_json(state.queue.get(*id).ok_or_else(|| not_found("task", id))?),
        Query::QueueStats => to_json(state.queue.stats(now)),
        Query::Approvals { pending } => {
            let approvals: Vec<_> = match pending {
                true => state.approvals.pending(now),
                false => state.approvals.by_id.values().collect(),
            };
            json!({ "approvals": approvals.iter().map(|a| approval_view(a, now)).collect::<Vec<_>>() })
        }
        Query::Approval { id } => approval_view(
            state
                .approvals
                .get(*id)
                .ok_or_else(|| not_found("approval", id))?,
            now,
        ),
        Query::Threads => json!({ "threads": to_json(state.board.list()) }),
        Query::Thread { id } => to_json(
            state
                .board
                .threads
                .get(id)
                .ok_or_else(|| not_found("thread", id))?,
        ),
        Query::Decisions {
            agent,
            decision_type,
            from,
            to,
        } => {
            let query = DecisionQuery {
                agent: agent.clone(),
                decision_type: decision_type.clone(),
                from: *from,
                to: *to,
            };
            json!({ "decisions": to_json(state.decisions.query(&query)) })
        }
        Query::Workflows => {
            json!({ "workflows": state.workflows.by_id.values().map(workflow_summary).collect::<Vec<_>>() })
        }
        Query::Workflow { id } => {
            let workflow = state
                .workflows
                .get(id)
                .ok_or_else(|| not_found("workflow", id))?;
            let mut view = to_json(workflow);
            view["progress"] = json!(workflow.progress());
            view
        }
        Query::WorkflowStats {
            project,
            from,
            to,
            top,
        } => to_json(analytics::workflow_stats(
            state,
            &window(project, from, to),
            *top,
        )),
        Query::Overhead { project, from, to } => {
            to_json(analytics::overhead(state, &window(project, from, to)))
        }
        Query::Trends {
            agent: Some(agent),
            days,
            threshold_points,
        } => to_json(analytics::agent_trend(
            state,
            agent,
            *days,
            now,
            *threshold_points,
        )),
        Query::Trends {
            agent: None,
            days,
            threshold_points,
        } => {
            json!({ "agents": to_json(analytics::all_trends(state, *days, now, *threshold_points)) })
        }
        Query::BestAgent {
            task,
            domain,
            min_confidence,
            top,
        } => json!({
            "candidates": to_json(analytics::best_agents(state, task, domain.as_deref(), now, *min_confidence, *top)),
        }),
        Query::Costs { project, from, to } => {
            to_json(analytics::costs(state, &window(project, from, to)))
        }
        Query::Status => json!({
            "seq": state.seq,
            "agents_active": state.agents.active(now).len(),
            "agents_known": state.agents.by_id.len(),
            "locks": to_json(state.locks.list(now)),
            "queue": to_json(state.queue.stats(now)),
            "approvals_pending": state.approvals.pending(now).len(),
            "workflows": state.workflows.by_id.values().map(workflow_summary).collect::<Vec<_>>(),
        }),
    })
}

fn window(
    project: &Option<String>,
    from: &Option<Timestamp>,
    to: &Option<Timestamp>,
) -> analytics::Window {
    analytics::Window {
        from: *from,
        to: *to,
        project: project.clone(),
    }
}

fn parse_task_state(text: &str) -> Result<TaskState, QueryError> {
    Ok(match text {
        "pending" => TaskState::Pending,
        "claimed" => TaskState::Claimed,
        "completed" => TaskState::Completed,
        "dead_lettered" => TaskState::DeadLettered,
        "cancelled" => TaskState::Cancelled,
        "skipped" => TaskState::Skipped,
        other => {
            return Err(QueryError::Invalid(format!(
                "task state {other:?} is not one of pending, claimed, completed, dead_lettered, cancelled, skipped"
            )));
        }
    })
}

fn agent_view(agent: &fleetlog_projections::agents::Agent, now: Timestamp) -> Value {
    let mut view = to_json(agent);
    view["alive"] = json!(agent.is_alive(now));
    view["deadline"] = json!(agent.deadline());
    view
}

fn approval_view(approval: &fleetlog_projections::approvals::Approval, now: Timestamp) -> Value {
    let mut view = to_json(approval);
    view["state"] = to_json(approval.state_at(now));
    view["deadline"] = json!(approval.deadline());
    view
}

fn workflow_summary(workflow: &fleetlog_projections::workflows::Workflow) -> Value {
    json!({
        "id": workflow.id,
        "project": workflow.project,
        "status": workflow.status,
        "started_at": workflow.started_at,
        "finished_at": workflow.finished_at,
        "progress": workflow.progress(),
        "stages": workflow.stages.len(),
        "spent_usd": workflow.spent_usd,
        "budget_usd": workflow.budget_usd,
    })
}
