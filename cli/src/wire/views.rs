//! The typed answers of the read queries: what [`crate::wire::answer`] serialises, what the
//! OpenAPI document describes, and what the CLI deserialises and renders, so a renamed field
//! fails to compile on every side instead of printing `-`.

use fleetlog_ledger::Timestamp;
use fleetlog_projections::agents::Agent;
use fleetlog_projections::approvals::Approval;
use fleetlog_projections::board::Thread;
use fleetlog_projections::decisions::Decision;
use fleetlog_projections::locks::Lock;
use fleetlog_projections::queue::Task;
use fleetlog_projections::signals::Signal;
use fleetlog_projections::workflows::{Workflow, WorkflowStatus, Workflows};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An agent as readers see it at `now`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct AgentView {
    #[serde(flatten)]
    pub agent: Agent,
    /// Heartbeating and within its TTL now.
    pub alive: bool,
    /// When it expires without another sign of life.
    pub deadline: Timestamp,
    /// Milliseconds since its last sign of life.
    pub last_seen_ms_ago: u64,
    /// The running workflow it works in now (a stage of it started and not completed).
    pub workflow: Option<String>,
}

impl AgentView {
    pub fn new(agent: &Agent, workflows: &Workflows, now: Timestamp) -> Self {
        let workflow = workflows
            .by_id
            .values()
            .filter(|workflow| workflow.status == WorkflowStatus::Running)
            .find(|workflow| {
                workflow.stages.iter().any(|stage| {
                    stage.agent == agent.id
                        && stage.started_at.is_some()
                        && stage.completed_at.is_none()
                })
            })
            .map(|workflow| workflow.id.clone());
        let ago = now
            .as_micros()
            .saturating_sub(agent.last_heartbeat.as_micros())
            / 1000;
        AgentView {
            agent: agent.clone(),
            alive: agent.is_alive(now),
            deadline: agent.deadline(),
            last_seen_ms_ago: u64::try_from(ago).unwrap_or(0),
            workflow,
        }
    }
}

/// An approval as readers see it at `now` (`state` reads `expired` once the deadline passed).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalView {
    #[serde(flatten)]
    pub approval: Approval,
    pub deadline: Timestamp,
}

impl ApprovalView {
    pub fn new(approval: &Approval, now: Timestamp) -> Self {
        let mut seen = approval.clone();
        seen.state = approval.state_at(now);
        ApprovalView {
            approval: seen,
            deadline: approval.deadline(),
        }
    }
}

/// A workflow in a list: what it is and how far it got, without its timeline.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowSummary {
    pub id: String,
    pub project: String,
    pub status: fleetlog_projections::workflows::WorkflowStatus,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Stages finished of those planned (0.0–1.0), if a plan was given.
    pub progress: Option<f64>,
    pub stages: usize,
    pub spent_usd: f64,
    pub budget_usd: Option<f64>,
}

impl WorkflowSummary {
    pub fn new(workflow: &Workflow) -> Self {
        WorkflowSummary {
            id: workflow.id.clone(),
            project: workflow.project.clone(),
            status: workflow.status,
            started_at: workflow.started_at,
            finished_at: workflow.finished_at,
            progress: workflow.progress(),
            stages: workflow.stages.len(),
            spent_usd: workflow.spent_usd,
            budget_usd: workflow.budget_usd,
        }
    }
}

/// One page of a list; `next_cursor` is `None` on the last.
macro_rules! page {
    ($(#[$doc:meta])* $name:ident, $field:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
        pub struct $name {
            pub $field: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last.
            pub next_cursor: Option<String>,
        }
    };
}

page!(
    /// A page of agents.
    AgentsPage, agents, AgentView
);
page!(
    /// A page of signals an agent can see.
    SignalsPage, signals, Signal
);
page!(
    /// A page of held locks.
    LocksPage, locks, Lock
);
page!(
    /// A page of tasks.
    TasksPage, tasks, Task
);
page!(
    /// A page of approvals.
    ApprovalsPage, approvals, ApprovalView
);
page!(
    /// A page of board threads.
    ThreadsPage, threads, Thread
);
page!(
    /// A page of decisions.
    DecisionsPage, decisions, Decision
);
page!(
    /// A page of workflows.
    WorkflowsPage, workflows, WorkflowSummary
);

/// Whether a fencing token is current.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct LockCheck {
    pub resource: String,
    pub token: u64,
    pub current: bool,
}

/// The fleet at a glance.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct StatusView {
    pub seq: u64,
    pub agents_active: usize,
    pub agents_known: usize,
    pub locks: Vec<Lock>,
    pub queue: fleetlog_projections::queue::QueueStats,
    pub approvals_pending: usize,
    pub workflows: Vec<WorkflowSummary>,
}

/// Every agent's trend (`GET /v1/analytics/trends` without `agent`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TrendsView {
    pub agents: Vec<fleetlog_projections::analytics::AgentTrend>,
}

/// The ranked candidates for a task (`GET /v1/analytics/best-agent`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CandidatesView {
    pub candidates: Vec<fleetlog_projections::analytics::Candidate>,
}

/// Live agents ranked for a kind of work (`GET /v1/staffing/agents`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct StaffView {
    pub agents: Vec<fleetlog_projections::analytics::RankedAgent>,
}

/// One workflow with where it stands at `now` (`GET /v1/workflows/{workflow}`), the shape of the
/// seed's async status endpoint: progress, the step running now and the expected completion.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct WorkflowView {
    #[serde(flatten)]
    pub workflow: Workflow,
    /// Stages finished of those planned (0.0–1.0), if a plan was given.
    pub progress: Option<f64>,
    pub current_step: Option<fleetlog_projections::workflows::CurrentStep>,
    /// When it finished, or should (by its estimate, else extrapolated from progress).
    pub estimated_completion: Option<Timestamp>,
}

impl WorkflowView {
    pub fn new(workflow: &Workflow, now: Timestamp) -> Self {
        WorkflowView {
            progress: workflow.progress(),
            current_step: workflow.current_step(),
            estimated_completion: workflow.estimated_completion(now),
            workflow: workflow.clone(),
        }
    }
}
