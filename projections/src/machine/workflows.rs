//! Workflow telemetry as commands: start, stages, handoffs, checkpoints, completion, and the
//! spending breakers (a workflow's budget, daily limits) that refuse stages once exceeded.

use fleetlog_ledger::{Event, Timestamp};

use crate::budgets::{day_name, day_of};
use crate::command::CommandError;
use crate::commands::{
    CancelWorkflow, Checkpoint, CompleteStage, CompleteWorkflow, ImportTelemetry, RecordHandoff,
    SetBudget, SetSpendLimit, StartStage, StartWorkflow,
};

use super::*;

impl Machine {
    pub(super) fn start_workflow(&self, command: StartWorkflow) -> Result<Event, CommandError> {
        let StartWorkflow {
            workflow_id,
            project,
            agent_plan,
            estimated_duration_ms,
            ..
        } = command;
        if workflow_id.is_empty() {
            return Err(invalid("workflow_id", "must not be empty"));
        }
        if self.state.workflows.get(&workflow_id).is_some() {
            return Err(CommandError::WorkflowExists { workflow_id });
        }
        Ok(Event::WorkflowStarted {
            workflow_id,
            project,
            agent_plan,
            estimated_duration_ms,
            session_id: None,
            occurred_at: None,
        })
    }

    /// The breakers every path that adds cost passes: the workflow is running and within its
    /// budget (once over it, no stage starts or completes until it is raised), and `agent` and
    /// the fleet are within their daily spending limits.
    fn stage_allowed(
        &self,
        workflow_id: &str,
        agent: &str,
        now: Timestamp,
    ) -> Result<&crate::workflows::Workflow, CommandError> {
        let workflow = self.state.workflows.running(workflow_id)?;
        if workflow.over_budget() {
            return Err(CommandError::OverBudget {
                limit_usd: workflow.budget_usd.unwrap_or_default(),
                spent_usd: workflow.spent_usd,
                workflow_id: workflow_id.to_owned(),
            });
        }
        self.state.budgets.check_limits(agent, now)?;
        Ok(workflow)
    }

    pub(super) fn start_stage(
        &self,
        command: StartStage,
        now: Timestamp,
    ) -> Result<Event, CommandError> {
        let StartStage {
            workflow_id,
            stage,
            stage_agent,
            tier,
            ..
        } = command;
        self.stage_allowed(&workflow_id, &stage_agent, now)?;
        Ok(Event::StageStarted {
            workflow_id,
            stage,
            agent: stage_agent,
            tier,
            occurred_at: None,
        })
    }

    pub(super) fn complete_stage(
        &self,
        command: CompleteStage,
        now: Timestamp,
    ) -> Result<Vec<Event>, CommandError> {
        let CompleteStage {
            workflow_id,
            report,
            ..
        } = command;
        let workflow = self.stage_allowed(&workflow_id, &report.agent, now)?;
        let day = day_of(now);
        let limits_crossed: Vec<Event> = self
            .state
            .budgets
            .limits_for(&report.agent, day)
            .into_iter()
            .filter(|limit| limit.spent_usd + report.cost_usd > limit.limit_usd)
            .map(|limit| Event::SpendLimitExceeded {
                spent_usd: limit.spent_usd + report.cost_usd,
                spender: limit.spender,
                day: day_name(day),
                limit_usd: limit.limit_usd,
            })
            .collect();
        let spent_usd = workflow.spent_usd + report.cost_usd;
        let crossed = workflow
            .budget_usd
            .filter(|limit| !workflow.over_budget() && spent_usd > *limit);
        let mut events = vec![Event::StageCompleted {
            workflow_id: workflow_id.to_owned(),
            stage: report.stage,
            agent: report.agent,
            tier: report.tier,
            outcome: report.outcome,
            duration_ms: report.duration_ms,
            cost_usd: report.cost_usd,
            tokens: report.tokens,
            description: report.description,
            tags: report.tags,
            quality: report.quality,
            occurred_at: None,
        }];
        if let Some(limit_usd) = crossed {
            events.push(Event::BudgetExceeded {
                workflow_id: workflow_id.clone(),
                limit_usd,
                spent_usd,
            });
        }
        events.extend(limits_crossed);
        Ok(events)
    }

    pub(super) fn handoff(&self, command: RecordHandoff) -> Result<Event, CommandError> {
        self.state.workflows.running(&command.workflow_id)?;
        Ok(Event::Handoff {
            workflow_id: command.workflow_id,
            from_agent: command.from_agent,
            to_agent: command.to_agent,
            artifacts: command.artifacts,
            occurred_at: None,
        })
    }

    pub(super) fn checkpoint(&self, command: Checkpoint) -> Result<Event, CommandError> {
        self.state.workflows.running(&command.workflow_id)?;
        Ok(Event::Checkpoint {
            workflow_id: command.workflow_id,
            stage: command.stage,
            state: command.state,
        })
    }

    /// Without `agents_executed`, the agents that completed stages are recorded.
    pub(super) fn complete_workflow(
        &self,
        command: CompleteWorkflow,
    ) -> Result<Event, CommandError> {
        let workflow = self.state.workflows.running(&command.workflow_id)?;
        let agents_executed = match command.agents_executed.is_empty() {
            true => workflow.agents_executed.clone(),
            false => command.agents_executed,
        };
        Ok(Event::WorkflowCompleted {
            agents_executed,
            workflow_id: command.workflow_id,
            success: command.success,
            error: command.error,
            duration_ms: command.duration_ms,
            occurred_at: None,
        })
    }

    pub(super) fn cancel_workflow(&self, command: CancelWorkflow) -> Result<Event, CommandError> {
        self.state.workflows.running(&command.workflow_id)?;
        Ok(Event::WorkflowCancelled {
            workflow_id: command.workflow_id,
            reason: command.reason,
        })
    }

    pub(super) fn set_budget(&self, command: SetBudget) -> Result<Event, CommandError> {
        self.state.workflows.running(&command.workflow_id)?;
        Ok(Event::BudgetSet {
            workflow_id: command.workflow_id,
            limit_usd: command.limit_usd,
        })
    }

    pub(super) fn set_spend_limit(&self, command: SetSpendLimit) -> Result<Event, CommandError> {
        let SetSpendLimit {
            spender, limit_usd, ..
        } = command;
        if let Some(spender) = &spender {
            self.require_member(spender)?;
        }
        if limit_usd.is_some_and(|limit| !limit.is_finite() || limit < 0.0) {
            return Err(invalid(
                "limit_usd",
                "must be a finite amount ≥ 0, or null to remove the limit",
            ));
        }
        Ok(Event::SpendLimitSet { spender, limit_usd })
    }

    pub(super) fn import_telemetry(
        &self,
        command: ImportTelemetry,
    ) -> Result<Vec<Event>, CommandError> {
        self.state.workflows.check_import(&command.events)?;
        Ok(command.events)
    }
}
