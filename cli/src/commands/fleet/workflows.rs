//! `fleetlog workflow …`: start, stages, handoffs, checkpoints, completion, budgets.

use anyhow::{Context, Result};
use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_ledger::Outcome as Work;
use fleetlog_projections::commands::{
    CancelWorkflow, Checkpoint, CompleteStage, CompleteWorkflow, RecordHandoff, SetBudget,
    StartStage, StartWorkflow,
};
use fleetlog_projections::{Command, StageReport};
use serde_json::Value;

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Start a workflow run under the id you give it.
    Start {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// The project it belongs to (analytics filter on it).
        #[arg(long, default_value = "")]
        project: String,
        /// The planned agents, in order.
        #[arg(long = "plan", value_delimiter = ',')]
        plan: Vec<String>,
        /// How long it is expected to take (e.g. 45m); compared with the actual time.
        #[arg(long, value_parser = crate::commands::units::millis)]
        estimate_ms: Option<u64>,
    },
    /// Record a stage starting, or with --done its completion and figures.
    Stage {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// The stage's name, e.g. implement.
        #[arg(long)]
        stage: String,
        /// The agent doing the stage (default: --agent).
        #[arg(long)]
        by: Option<String>,
        /// The model tier it runs on, e.g. premium (costs group by it).
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Record the stage as completed (with its outcome, duration and cost) instead of started.
        #[arg(long)]
        done: bool,
        /// success, failure, partial or unknown (with --done).
        #[arg(long, default_value = "success", value_parser = clap::builder::PossibleValuesParser::new(["success", "failure", "partial", "unknown"]))]
        outcome: String,
        /// How long the stage took (with --done).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 0)]
        duration_ms: u64,
        /// What the stage cost in USD (with --done); counts against budgets and spending limits.
        #[arg(long, default_value_t = 0.0)]
        cost_usd: f64,
        /// Tokens the stage used (with --done).
        #[arg(long, default_value_t = 0)]
        tokens: u64,
    },
    /// Hand a workflow from one agent to another, with a note.
    Handoff {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// The agent handing over.
        #[arg(long)]
        from: String,
        /// The agent taking over.
        #[arg(long)]
        to: String,
        /// Something handed over, e.g. a file path (repeat for several).
        #[arg(long = "artifact")]
        artifacts: Vec<String>,
    },
    /// Record a workflow's progress so a resumer knows where it stood.
    Checkpoint {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// The stage the checkpoint belongs to.
        #[arg(long)]
        stage: String,
        /// The state to recover from after a crash, as JSON.
        #[arg(long, default_value = "null")]
        state: String,
    },
    /// Finish a workflow (or mark it failed).
    Complete {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// Record the workflow as failed, with this error.
        #[arg(long)]
        failed: Option<String>,
        /// How long it took, as you measured it (else analytics use ledger times).
        #[arg(long, value_parser = crate::commands::units::millis)]
        duration_ms: Option<u64>,
    },
    /// Cancel a running workflow.
    Cancel {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// Why it is cancelled.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Set a workflow's spending limit.
    Budget {
        #[command(flatten)]
        agent: Agent,
        /// The workflow id.
        id: String,
        /// The budget in USD; stages are refused once spending passes it.
        #[arg(long)]
        limit_usd: f64,
    },
    /// One workflow: stages, handoffs, checkpoint, timeline, current step and estimated completion.
    Show {
        /// The workflow id.
        id: String,
    },
    /// Workflows with their status and progress.
    List,
}

pub(super) fn workflow_rows(workflows: &[views::WorkflowSummary]) -> String {
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|workflow| {
            vec![
                workflow.id.clone(),
                workflow.project.clone(),
                cell(workflow.status),
                workflow
                    .progress
                    .map_or("-".to_owned(), super::agents::percent),
                workflow.stages.to_string(),
                format!("{:.2}", workflow.spent_usd),
            ]
        })
        .collect();
    table(
        &[
            "WORKFLOW",
            "PROJECT",
            "STATUS",
            "PROGRESS",
            "STAGES",
            "SPENT USD",
        ],
        &rows,
    )
}

pub(super) fn workflows_text(page: &views::WorkflowsPage) -> String {
    workflow_rows(&page.workflows)
}

/// Runs one `workflows` subcommand.
pub(super) fn run(backend: &Backend, command: WorkflowCommand, out: &Output) -> Result<ExitCode> {
    let command = match command {
        WorkflowCommand::Show { id } => {
            return show_query(backend, Query::Workflow { id }, out, pretty);
        }
        WorkflowCommand::List => {
            return show_view(
                backend,
                Query::Workflows {
                    limit: None,
                    cursor: None,
                },
                out,
                workflows_text,
            );
        }
        WorkflowCommand::Start {
            agent,
            id,
            project,
            plan,
            estimate_ms,
        } => Command::StartWorkflow(StartWorkflow {
            agent: agent.agent,
            workflow_id: id,
            project,
            agent_plan: plan,
            estimated_duration_ms: estimate_ms,
        }),
        WorkflowCommand::Stage {
            agent,
            id,
            stage,
            by,
            tier,
            done,
            outcome,
            duration_ms,
            cost_usd,
            tokens,
        } => {
            let stage_agent = by.unwrap_or_else(|| agent.agent.clone());
            match done {
                false => Command::StartStage(StartStage { agent: agent.agent, workflow_id: id, stage, stage_agent, tier }),
                true => Command::CompleteStage(CompleteStage {
                    agent: agent.agent,
                    workflow_id: id,
                    report: StageReport {
                        stage,
                        agent: stage_agent,
                        tier,
                        outcome: serde_json::from_value::<Work>(Value::String(outcome.clone()))
                            .with_context(|| format!("--outcome {outcome:?} is not success, failure, partial or unknown"))?,
                        duration_ms,
                        cost_usd,
                        tokens,
                        description: String::new(),
                        tags: vec![],
                        quality: None,
                    },
                }),
            }
        }
        WorkflowCommand::Handoff {
            agent,
            id,
            from,
            to,
            artifacts,
        } => Command::Handoff(RecordHandoff {
            agent: agent.agent,
            workflow_id: id,
            from_agent: from,
            to_agent: to,
            artifacts,
        }),
        WorkflowCommand::Checkpoint {
            agent,
            id,
            stage,
            state,
        } => Command::Checkpoint(Checkpoint {
            agent: agent.agent,
            workflow_id: id,
            stage,
            state: json_arg("--state", &state)?,
        }),
        WorkflowCommand::Complete {
            agent,
            id,
            failed,
            duration_ms,
        } => Command::CompleteWorkflow(CompleteWorkflow {
            agent: agent.agent,
            workflow_id: id,
            success: failed.is_none(),
            error: failed,
            duration_ms,
            agents_executed: vec![],
        }),
        WorkflowCommand::Cancel { agent, id, reason } => Command::CancelWorkflow(CancelWorkflow {
            agent: agent.agent,
            workflow_id: id,
            reason,
        }),
        WorkflowCommand::Budget {
            agent,
            id,
            limit_usd,
        } => Command::SetBudget(SetBudget {
            agent: agent.agent,
            workflow_id: id,
            limit_usd,
        }),
    };
    run_command(backend, command, out)
}
