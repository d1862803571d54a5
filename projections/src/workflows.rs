//! Workflows: a run of stages by agents, with handoffs, checkpoints, costs and an optional
//! budget. Times are when things occurred (`occurred_at` for imported telemetry, else the
//! record's time).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::command::{CommandError, invalid};
use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Json, Outcome, Record, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct Stage {
    pub stage: String,
    pub agent: String,
    pub tier: String,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub outcome: Option<Outcome>,
    pub duration_ms: Option<u64>,
    pub cost_usd: f64,
    pub tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct Handoff {
    pub from_agent: String,
    pub to_agent: String,
    pub artifacts: Vec<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct CheckpointState {
    pub seq: u64,
    pub stage: String,
    pub state: Json,
    pub at: Timestamp,
}

/// One line of a workflow's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct TimelineEntry {
    pub seq: u64,
    pub at: Timestamp,
    pub kind: String,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, schemars::JsonSchema)]
pub struct Workflow {
    pub id: String,
    pub project: String,
    pub agent_plan: Vec<String>,
    pub estimated_duration_ms: Option<u64>,
    pub session_id: Option<String>,
    pub started_by: String,
    pub started_at: Timestamp,
    pub status: WorkflowStatus,
    pub stages: Vec<Stage>,
    pub handoffs: Vec<Handoff>,
    pub latest_checkpoint: Option<CheckpointState>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub agents_executed: Vec<String>,
    pub budget_usd: Option<f64>,
    pub spent_usd: f64,
    pub tokens: u64,
    pub timeline: Vec<TimelineEntry>,
}

/// What a running workflow is doing now.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CurrentStep {
    /// The stage running now, or `None` when between stages (then `agent` is the next one the
    /// plan names that has not run yet).
    pub stage: Option<String>,
    pub agent: String,
    pub started_at: Option<Timestamp>,
}

impl Workflow {
    /// The stage running now (the latest started and not completed), else the next planned
    /// agent that has not run; `None` once finished or with nothing left in the plan.
    pub fn current_step(&self) -> Option<CurrentStep> {
        if self.status != WorkflowStatus::Running {
            return None;
        }
        let running = self
            .stages
            .iter()
            .rev()
            .find(|stage| stage.started_at.is_some() && stage.completed_at.is_none());
        if let Some(stage) = running {
            return Some(CurrentStep {
                stage: Some(stage.stage.clone()),
                agent: stage.agent.clone(),
                started_at: stage.started_at,
            });
        }
        self.agent_plan
            .iter()
            .find(|agent| !self.agents_executed.contains(agent))
            .map(|agent| CurrentStep {
                stage: None,
                agent: agent.clone(),
                started_at: None,
            })
    }

    /// When it finished; while running, when it should: its start plus its estimate while that
    /// lies ahead of `now`, else extrapolated from progress (elapsed / progress). `None` with
    /// neither an estimate ahead nor any progress.
    pub fn estimated_completion(&self, now: Timestamp) -> Option<Timestamp> {
        if let Some(finished) = self.finished_at {
            return Some(finished);
        }
        if self.status != WorkflowStatus::Running {
            return None;
        }
        let by_estimate = self
            .estimated_duration_ms
            .map(|estimate| self.started_at.plus_millis(estimate))
            .filter(|at| *at > now);
        by_estimate.or_else(|| {
            let progress = self.progress().filter(|p| *p > 0.0)?;
            let elapsed_us = (now.as_micros() - self.started_at.as_micros()).max(0) as f64;
            Some(Timestamp(
                self.started_at.as_micros() + (elapsed_us / progress) as i64,
            ))
        })
    }

    /// Stages completed over stages planned (0..=1); `None` when nothing is planned.
    pub fn progress(&self) -> Option<f64> {
        let completed = self
            .stages
            .iter()
            .filter(|stage| stage.completed_at.is_some())
            .count();
        match self.agent_plan.len() {
            0 => None,
            planned => Some((completed as f64 / planned as f64).min(1.0)),
        }
    }

    /// Spending is past the budget: further stages are refused until it is raised.
    pub fn over_budget(&self) -> bool {
        self.budget_usd
            .is_some_and(|budget| self.spent_usd > budget)
    }

    fn open_stage(&mut self, stage: &str, agent: &str) -> Option<&mut Stage> {
        self.stages
            .iter_mut()
            .rev()
            .find(|open| open.stage == stage && open.agent == agent && open.completed_at.is_none())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Workflows {
    /// Behind `Arc`, so the state copies kept for readers share every workflow that did not
    /// change between them; changed copy-on-write.
    pub by_id: BTreeMap<String, Arc<Workflow>>,
}

impl Workflows {
    pub(crate) fn apply(&mut self, record: &Record) {
        let at = |occurred_at: &Option<Timestamp>| occurred_at.unwrap_or(record.ts);
        match &record.event {
            Event::WorkflowStarted {
                workflow_id,
                project,
                agent_plan,
                estimated_duration_ms,
                session_id,
                occurred_at,
            } => {
                let mut workflow = Workflow {
                    id: workflow_id.clone(),
                    project: project.clone(),
                    agent_plan: agent_plan.clone(),
                    estimated_duration_ms: *estimated_duration_ms,
                    session_id: session_id.clone(),
                    started_by: record.actor.clone(),
                    started_at: at(occurred_at),
                    status: WorkflowStatus::Running,
                    stages: Vec::new(),
                    handoffs: Vec::new(),
                    latest_checkpoint: None,
                    finished_at: None,
                    duration_ms: None,
                    error: None,
                    agents_executed: Vec::new(),
                    budget_usd: None,
                    spent_usd: 0.0,
                    tokens: 0,
                    timeline: Vec::new(),
                };
                push_timeline(&mut workflow, record, format!("started in {project}"));
                self.by_id.insert(workflow_id.clone(), Arc::new(workflow));
            }
            Event::StageStarted {
                workflow_id,
                stage,
                agent,
                tier,
                occurred_at,
            } => self.update(workflow_id, record, |workflow| {
                workflow.stages.push(Stage {
                    stage: stage.clone(),
                    agent: agent.clone(),
                    tier: tier.clone(),
                    started_at: Some(at(occurred_at)),
                    completed_at: None,
                    outcome: None,
                    duration_ms: None,
                    cost_usd: 0.0,
                    tokens: 0,
                });
                format!("{agent} started {stage}")
            }),
            Event::StageCompleted {
                workflow_id,
                stage,
                agent,
                tier,
                outcome,
                duration_ms,
                cost_usd,
                tokens,
                occurred_at,
                ..
            } => self.update(workflow_id, record, |workflow| {
                let completed_at = at(occurred_at);
                workflow.spent_usd += cost_usd;
                workflow.tokens += tokens;
                if !workflow.agents_executed.contains(agent) {
                    workflow.agents_executed.push(agent.clone());
                }
                let fields = |open: &mut Stage| {
                    open.completed_at = Some(completed_at);
                    open.outcome = Some(*outcome);
                    open.duration_ms = Some(*duration_ms);
                    open.cost_usd = *cost_usd;
                    open.tokens = *tokens;
                };
                match workflow.open_stage(stage, agent) {
                    Some(open) => fields(open),
                    None => {
                        let mut new = Stage {
                            stage: stage.clone(),
                            agent: agent.clone(),
                            tier: tier.clone(),
                            started_at: None,
                            completed_at: None,
                            outcome: None,
                            duration_ms: None,
                            cost_usd: 0.0,
                            tokens: 0,
                        };
                        fields(&mut new);
                        workflow.stages.push(new);
                    }
                }
                format!("{agent} completed {stage}: {outcome:?}, {duration_ms} ms, ${cost_usd:.4}")
            }),
            Event::Handoff {
                workflow_id,
                from_agent,
                to_agent,
                artifacts,
                occurred_at,
            } => self.update(workflow_id, record, |workflow| {
                workflow.handoffs.push(Handoff {
                    from_agent: from_agent.clone(),
                    to_agent: to_agent.clone(),
                    artifacts: artifacts.clone(),
                    at: at(occurred_at),
                });
                format!(
                    "handoff {from_agent} → {to_agent} ({} artifacts)",
                    artifacts.len()
                )
            }),
            Event::Checkpoint {
                workflow_id,
                stage,
                state,
            } => self.update(workflow_id, record, |workflow| {
                workflow.latest_checkpoint = Some(CheckpointState {
                    seq: record.seq,
                    stage: stage.clone(),
                    state: state.clone(),
                    at: record.ts,
                });
                format!("checkpoint at {stage}")
            }),
            Event::WorkflowCompleted {
                workflow_id,
                success,
                error,
                agents_executed,
                duration_ms,
                occurred_at,
            } => self.update(workflow_id, record, |workflow| {
                let finished = at(occurred_at);
                workflow.status = match success {
                    true => WorkflowStatus::Completed,
                    false => WorkflowStatus::Failed,
                };
                workflow.finished_at = Some(finished);
                workflow.duration_ms = duration_ms.or_else(|| {
                    u64::try_from(finished.as_micros() - workflow.started_at.as_micros())
                        .ok()
                        .map(|micros| micros / 1000)
                });
                workflow.error = error.clone();
                for agent in agents_executed {
                    if !workflow.agents_executed.contains(agent) {
                        workflow.agents_executed.push(agent.clone());
                    }
                }
                match success {
                    true => "completed".to_owned(),
                    false => format!("failed: {}", error.as_deref().unwrap_or("no error given")),
                }
            }),
            Event::WorkflowCancelled {
                workflow_id,
                reason,
            } => self.update(workflow_id, record, |workflow| {
                workflow.status = WorkflowStatus::Cancelled;
                workflow.finished_at = Some(record.ts);
                workflow.error = Some(reason.clone());
                format!("cancelled: {reason}")
            }),
            Event::BudgetSet {
                workflow_id,
                limit_usd,
            } => self.update(workflow_id, record, |workflow| {
                workflow.budget_usd = Some(*limit_usd);
                format!("budget set to ${limit_usd:.2}")
            }),
            Event::BudgetExceeded {
                workflow_id,
                limit_usd,
                spent_usd,
            } => self.update(workflow_id, record, |_| {
                format!("budget exceeded: ${spent_usd:.4} of ${limit_usd:.2}")
            }),
            _ => {}
        }
    }

    fn update(&mut self, id: &str, record: &Record, change: impl FnOnce(&mut Workflow) -> String) {
        if let Some(workflow) = self.by_id.get_mut(id) {
            let workflow = Arc::make_mut(workflow);
            let summary = change(workflow);
            push_timeline(workflow, record, summary);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Workflow> {
        self.by_id.get(id).map(|workflow| &**workflow)
    }
}

fn push_timeline(workflow: &mut Workflow, record: &Record, summary: String) {
    workflow.timeline.push(TimelineEntry {
        seq: record.seq,
        at: record.ts,
        kind: record.event.kind().to_owned(),
        summary,
    });
}

/// Starts a workflow run under a new, unique id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflow {
    pub agent: String,
    pub workflow_id: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub agent_plan: Vec<String>,
    #[serde(default)]
    pub estimated_duration_ms: Option<u64>,
}

/// A stage of a running workflow begins, run by `stage_agent` (refused while a budget or
/// spending limit is exceeded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartStage {
    pub agent: String,
    pub workflow_id: String,
    pub stage: String,
    pub stage_agent: String,
    #[serde(default)]
    pub tier: String,
}

/// A stage ends, with its figures (outcome, time, cost, tokens).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteStage {
    pub agent: String,
    pub workflow_id: String,
    pub report: StageReport,
}

/// Work passes from one agent to another inside a running workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordHandoff {
    pub agent: String,
    pub workflow_id: String,
    pub from_agent: String,
    pub to_agent: String,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

/// Saves a running workflow's state at a stage, to resume from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub agent: String,
    pub workflow_id: String,
    pub stage: String,
    #[serde(default)]
    pub state: Json,
}

/// A running workflow ends, successfully or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteWorkflow {
    pub agent: String,
    pub workflow_id: String,
    pub success: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The agents that ran; empty means "those that completed stages".
    #[serde(default)]
    pub agents_executed: Vec<String>,
    /// How long it took, as the caller measured it (OaK's `duration_seconds` × 1000);
    /// without it, analytics use ledger times.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// Stops a running workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelWorkflow {
    pub agent: String,
    pub workflow_id: String,
    #[serde(default)]
    pub reason: String,
}

/// Caps a running workflow's spending: stages are refused once it is exceeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    pub agent: String,
    pub workflow_id: String,
    pub limit_usd: f64,
}

/// A completed stage's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageReport {
    pub stage: String,
    pub agent: String,
    #[serde(default)]
    pub tier: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub quality: Option<f64>,
}

impl Workflows {
    /// The workflow, if it is still running.
    pub(crate) fn running(&self, workflow_id: &str) -> Result<&Workflow, CommandError> {
        let workflow = self
            .get(workflow_id)
            .ok_or_else(|| CommandError::UnknownWorkflow {
                workflow_id: workflow_id.to_owned(),
            })?;
        match workflow.status {
            WorkflowStatus::Running => Ok(workflow),
            status => Err(CommandError::WorkflowFinished {
                workflow_id: workflow_id.to_owned(),
                status: format!("{status:?}").to_lowercase(),
            }),
        }
    }

    /// Telemetry may only carry workflow history, must start each workflow once (and not one
    /// that exists), and may only continue workflows it starts or that exist.
    pub(crate) fn check_import(&self, events: &[Event]) -> Result<(), CommandError> {
        if events.is_empty() {
            return Err(invalid("events", "there is nothing to import"));
        }
        let mut started = std::collections::BTreeSet::new();
        for (index, event) in events.iter().enumerate() {
            let refused = |problem: String| invalid("events", format!("event {index}: {problem}"));
            match event {
                Event::WorkflowStarted { workflow_id, .. } => {
                    if self.get(workflow_id).is_some() || !started.insert(workflow_id.as_str()) {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} already exists; was this telemetry imported before?"
                        )));
                    }
                }
                Event::StageStarted { .. } | Event::StageCompleted { .. } => {}
                Event::Handoff { workflow_id, .. }
                | Event::WorkflowCompleted { workflow_id, .. } => {
                    if self.get(workflow_id).is_none() && !started.contains(workflow_id.as_str()) {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} is neither imported nor known"
                        )));
                    }
                }
                other => {
                    return Err(refused(format!(
                        "{} events cannot be imported as telemetry",
                        other.kind()
                    )));
                }
            }
        }
        Ok(())
    }
}
