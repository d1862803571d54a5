//! What the HTTP API and the CLI agree on: where a daemon listens, the read queries, and the
//! JSON each answers. `answer` is the one place a query is turned into JSON, used by the daemon's
//! GET routes and by embedded CLI commands alike.

pub mod openapi;
mod pages;
pub mod routes;
pub mod tasks;
pub mod views;

use fleetlog_projections::commands::{
    Enqueue, LogDecision, PostThread, Register, RequestApproval, SendSignal, StartWorkflow,
};
use std::path::{Path, PathBuf};

use fleetlog_ledger::{Reader, Timestamp};
use fleetlog_projections::analytics;
use fleetlog_projections::decisions::DecisionQuery;
use fleetlog_projections::queue::TaskState;
use fleetlog_projections::{Command, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use pages::paged;

/// Items in one page of a list when the request names no `limit`.
pub const PAGE_ITEMS_DEFAULT: usize = 100;
/// Most items one page of a list may hold.
pub const PAGE_ITEMS_MAX: usize = 1_000;

/// The daemon's default TCP port (loopback).
pub const DEFAULT_PORT: u16 = 7478;

/// The Unix socket a daemon serving `db` listens on: beside the database.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".sock");
    db.with_file_name(name)
}

/// What a create answers besides its seq: the kind of object made, its id, and the object as
/// committed (absent if it is already gone again, e.g. a signal consumed in the same batch).
pub fn created(
    state: &State,
    log: &Reader,
    now: Timestamp,
    command: &Command,
    seq: u64,
) -> Option<Value> {
    let (kind, id, object) = match command {
        Command::Register(Register { agent, .. }) => (
            "agent",
            json!(agent),
            state
                .agents
                .get(agent)
                .map(|a| agent_view(a, &state.workflows, now)),
        ),
        Command::SendSignal(SendSignal { .. }) => (
            "signal",
            json!(seq),
            state.signals.live.get(&seq).map(to_json),
        ),
        Command::Enqueue(Enqueue { .. }) => (
            "task",
            json!(seq),
            // Skipped at once (a dependency failed), it is already in the log only.
            tasks::task(state, log, seq).ok().flatten().map(to_json),
        ),
        Command::RequestApproval(RequestApproval { .. }) => (
            "approval",
            json!(seq),
            state.approvals.get(seq).map(|a| approval_view(a, now)),
        ),
        Command::Post(PostThread { .. }) => (
            "thread",
            json!(seq),
            state.board.threads.get(&seq).map(to_json),
        ),
        Command::LogDecision(LogDecision { .. }) => {
            let decisions = &state.decisions.all;
            let found = decisions
                .get(decisions.partition_point(|decision| decision.seq < seq))
                .filter(|decision| decision.seq == seq)
                .map(to_json);
            ("decision", json!(seq), found)
        }
        Command::StartWorkflow(StartWorkflow { workflow_id, .. }) => (
            "workflow",
            json!(workflow_id),
            state.workflows.get(workflow_id).map(to_json),
        ),
        _ => return None,
    };
    let mut answer = json!({ "outcome": "appended", "seq": seq, "id": id, "kind": kind });
    if let Some(object) = object {
        answer[kind] = object;
    }
    Some(answer)
}

/// What a create answers, as [`created`], with the credential a registration issues (derived
/// from the seq, so a retried registration answers the same one).
pub fn created_with_credential(
    state: &State,
    log: &Reader,
    now: Timestamp,
    command: &Command,
    seq: u64,
    keys: &crate::identity::Keys,
) -> Option<Value> {
    let mut answer = created(state, log, now, command, seq)?;
    if let Command::Register(Register { agent, .. }) = command {
        answer["credential"] = json!(keys.agent_credential(agent, seq));
    }
    Some(answer)
}

/// A read of committed state. Field names are the HTTP query parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "query", rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// Agents; `all` includes expired and deregistered ones.
    Agents {
        #[serde(default)]
        all: bool,
        /// Only agents that registered this capability.
        #[serde(default)]
        capability: Option<String>,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Agent {
        id: String,
    },
    Stale {
        threshold_ms: u64,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Hung {
        threshold_ms: u64,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    /// Signals `agent` can see now, oldest first (a peek: nothing is consumed).
    Inbox {
        agent: String,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Locks {
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
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
        /// The task with this caller-chosen key.
        #[serde(default)]
        key: Option<String>,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Task {
        id: u64,
    },
    QueueStats,
    Approvals {
        #[serde(default)]
        pending: bool,
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Approval {
        id: u64,
    },
    Threads {
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
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
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
    Workflows {
        /// Items per page (default PAGE_ITEMS_DEFAULT, at most PAGE_ITEMS_MAX).
        #[serde(default)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[serde(default)]
        cursor: Option<String>,
    },
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
    /// Live agents that have every listed capability (comma-separated) and the specialisation
    /// (a capability or their role), ranked by their record and free capacity.
    Staff {
        #[serde(default)]
        capability: Option<String>,
        #[serde(default)]
        specialization: Option<String>,
        #[serde(default = "staff_top_default")]
        top: usize,
    },
    /// A proposed team for these tasks: who does which, in dependency waves, within each
    /// agent's concurrency limit. Nothing is claimed.
    Team {
        tasks: Vec<analytics::TeamTask>,
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

fn staff_top_default() -> usize {
    20
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
        None => Ok(answer(
            &coordinator.state(),
            coordinator.ledger().reader(),
            coordinator.now(),
            query,
        )?),
        Some(as_of) => {
            let state = coordinator.state_as_of(as_of)?;
            let now = match as_of {
                fleetlog_projections::AsOf::Time(ts) => ts,
                _ => state.ts,
            };
            Ok(answer(&state, coordinator.ledger().reader(), now, query)?)
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
    #[error("the log could not be read to answer: {0}")]
    Unreadable(String),
}

impl QueryError {
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::NotFound { .. } => 404,
            QueryError::Invalid(_) => 400,
            QueryError::Unreadable(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            // The codes commands answer for the same missing things.
            QueryError::NotFound { what: "agent", .. } => "unknown_agent",
            QueryError::NotFound { what: "task", .. } => "unknown_task",
            QueryError::NotFound {
                what: "approval", ..
            } => "unknown_approval",
            QueryError::NotFound { what: "thread", .. } => "unknown_thread",
            QueryError::NotFound {
                what: "workflow", ..
            } => "unknown_workflow",
            QueryError::NotFound { .. } => "not_found",
            QueryError::Invalid(_) => "invalid",
            QueryError::Unreadable(_) => "storage",
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

/// Answers `query` from `state` as it is at `now`, reading from `log` what the state keeps
/// only in the log (finished tasks).
pub fn answer(
    state: &State,
    log: &Reader,
    now: Timestamp,
    query: &Query,
) -> Result<Value, QueryError> {
    Ok(match query {
        Query::Agents {
            all,
            capability,
            limit,
            cursor,
        } => {
            let mut agents: Vec<_> = match all {
                true => state.agents.by_id.values().collect(),
                false => state.agents.active(now),
            };
            if let Some(capability) = capability {
                agents.retain(|agent| agent.capabilities.contains(capability));
            }
            agents_page(agents, &state.workflows, now, *limit, cursor)?
        }
        Query::Agent { id } => agent_view(
            state.agents.get(id).ok_or_else(|| not_found("agent", id))?,
            &state.workflows,
            now,
        ),
        Query::Stale {
            threshold_ms,
            limit,
            cursor,
        } => agents_page(
            state.agents.stale(now, *threshold_ms),
            &state.workflows,
            now,
            *limit,
            cursor,
        )?,
        Query::Hung {
            threshold_ms,
            limit,
            cursor,
        } => agents_page(
            state.agents.hung(now, *threshold_ms),
            &state.workflows,
            now,
            *limit,
            cursor,
        )?,
        Query::Inbox {
            agent,
            limit,
            cursor,
        } => {
            let (signals, next) = paged(
                state.signals.inbox(agent, now),
                |signal| signal.id,
                *limit,
                cursor,
            )?;
            to_json(views::SignalsPage {
                signals: signals.into_iter().cloned().collect(),
                next_cursor: next,
            })
        }
        Query::Locks { limit, cursor } => {
            let (locks, next) = paged(
                state.locks.list(now),
                |lock| lock.resource.clone(),
                *limit,
                cursor,
            )?;
            to_json(views::LocksPage {
                locks: locks.into_iter().cloned().collect(),
                next_cursor: next,
            })
        }
        Query::LockCheck { resource, token } => to_json(views::LockCheck {
            resource: resource.clone(),
            token: *token,
            current: state.locks.token_is_current(resource, *token, now),
        }),
        Query::Tasks {
            state: wanted,
            tag,
            key,
            limit,
            cursor,
        } => {
            let filter = tasks::Filter {
                state: wanted.as_deref().map(parse_task_state).transpose()?,
                tag: tag.as_deref(),
                key: key.as_deref(),
            };
            to_json(tasks::page(state, log, &filter, *limit, cursor)?)
        }
        Query::Task { id } => {
            to_json(tasks::task(state, log, *id)?.ok_or_else(|| not_found("task", id))?)
        }
        Query::QueueStats => to_json(state.queue.stats(now)),
        Query::Approvals {
            pending,
            limit,
            cursor,
        } => {
            let approvals: Vec<_> = match pending {
                true => state.approvals.pending(now),
                false => state.approvals.by_id.values().collect(),
            };
            let (approvals, next) = paged(approvals, |a| a.id, *limit, cursor)?;
            to_json(views::ApprovalsPage {
                approvals: approvals
                    .into_iter()
                    .map(|a| views::ApprovalView::new(a, now))
                    .collect(),
                next_cursor: next,
            })
        }
        Query::Approval { id } => approval_view(
            state
                .approvals
                .get(*id)
                .ok_or_else(|| not_found("approval", id))?,
            now,
        ),
        Query::Threads { limit, cursor } => {
            // Threads are listed by priority and activity, not by id: the cursor is a position.
            let threads = state.board.list().into_iter().enumerate();
            let (threads, next) = paged(threads, |(at, _)| *at, *limit, cursor)?;
            to_json(views::ThreadsPage {
                threads: threads
                    .into_iter()
                    .map(|(_, thread)| thread.clone())
                    .collect(),
                next_cursor: next,
            })
        }
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
            limit,
            cursor,
        } => {
            let query = DecisionQuery {
                agent: agent.clone(),
                decision_type: decision_type.clone(),
                from: *from,
                to: *to,
            };
            let (decisions, next) =
                paged(state.decisions.query(&query), |d| d.seq, *limit, cursor)?;
            to_json(views::DecisionsPage {
                decisions: decisions.into_iter().cloned().collect(),
                next_cursor: next,
            })
        }
        Query::Workflows { limit, cursor } => {
            let (workflows, next) = paged(
                state.workflows.by_id.values(),
                |workflow| workflow.id.clone(),
                *limit,
                cursor,
            )?;
            to_json(views::WorkflowsPage {
                workflows: workflows
                    .into_iter()
                    .map(|workflow| views::WorkflowSummary::new(workflow))
                    .collect(),
                next_cursor: next,
            })
        }
        Query::Workflow { id } => {
            let workflow = state
                .workflows
                .get(id)
                .ok_or_else(|| not_found("workflow", id))?;
            to_json(views::WorkflowView::new(workflow, now))
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
        } => to_json(views::TrendsView {
            agents: analytics::all_trends(state, *days, now, *threshold_points),
        }),
        Query::BestAgent {
            task,
            domain,
            min_confidence,
            top,
        } => {
            if !(0.0..=1.0).contains(min_confidence) {
                return Err(QueryError::Invalid(format!(
                    "min_confidence {min_confidence} is outside 0..=1 (a confidence is a fraction)"
                )));
            }
            to_json(views::CandidatesView {
                candidates: analytics::best_agents(
                    state,
                    task,
                    domain.as_deref(),
                    now,
                    *min_confidence,
                    *top,
                ),
            })
        }
        Query::Staff {
            capability,
            specialization,
            top,
        } => {
            let capabilities: Vec<String> = capability
                .iter()
                .flat_map(|list| list.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let mut ranked =
                analytics::rank_agents(state, &capabilities, specialization.as_deref(), now);
            ranked.truncate(*top);
            to_json(views::StaffView { agents: ranked })
        }
        Query::Team { tasks } => to_json(
            analytics::assemble_team(state, tasks, now)
                .map_err(|error| QueryError::Invalid(error.to_string()))?,
        ),
        Query::Costs { project, from, to } => {
            to_json(analytics::costs(state, &window(project, from, to), now))
        }
        Query::Status => to_json(views::StatusView {
            seq: state.seq,
            agents_active: state.agents.active(now).len(),
            agents_known: state.agents.by_id.len(),
            locks: state.locks.list(now).into_iter().cloned().collect(),
            queue: state.queue.stats(now),
            approvals_pending: state.approvals.pending(now).len(),
            workflows: state
                .workflows
                .by_id
                .values()
                .map(|workflow| views::WorkflowSummary::new(workflow))
                .collect(),
        }),
    })
}

fn agents_page(
    agents: Vec<&fleetlog_projections::agents::Agent>,
    workflows: &fleetlog_projections::workflows::Workflows,
    now: Timestamp,
    limit: Option<usize>,
    cursor: &Option<String>,
) -> Result<Value, QueryError> {
    let (agents, next) = paged(agents, |agent| agent.id.clone(), limit, cursor)?;
    Ok(to_json(views::AgentsPage {
        agents: agents
            .into_iter()
            .map(|agent| views::AgentView::new(agent, workflows, now))
            .collect(),
        next_cursor: next,
    }))
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
        "escalated" => TaskState::Escalated,
        "completed" => TaskState::Completed,
        "dead_lettered" => TaskState::DeadLettered,
        "cancelled" => TaskState::Cancelled,
        "skipped" => TaskState::Skipped,
        other => {
            return Err(QueryError::Invalid(format!(
                "task state {other:?} is not one of pending, claimed, escalated, completed, dead_lettered, cancelled, skipped"
            )));
        }
    })
}

pub(crate) fn agent_view(
    agent: &fleetlog_projections::agents::Agent,
    workflows: &fleetlog_projections::workflows::Workflows,
    now: Timestamp,
) -> Value {
    to_json(views::AgentView::new(agent, workflows, now))
}

pub(crate) fn approval_view(
    approval: &fleetlog_projections::approvals::Approval,
    now: Timestamp,
) -> Value {
    to_json(views::ApprovalView::new(approval, now))
}
