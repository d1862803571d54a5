//! The limits every event's fields keep (ids within `ID_BYTES_MAX`, money finite and not
//! negative, times within range), checked before an event is encoded.

use crate::event::{Event, SignalTarget};
use crate::limits::ID_BYTES_MAX;

/// A field of an event that breaks a limit the format promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: &'static str,
    pub problem: String,
}

impl Event {
    /// Checks the per-field limits: identifiers within [`ID_BYTES_MAX`], times within
    /// [`Timestamp::MIN`]`..=`[`Timestamp::MAX`], numbers finite and in range. The total size is
    /// checked by the codec.
    pub fn check_fields(&self) -> Result<(), FieldProblem> {
        for (field, time) in self.times().into_iter().flatten() {
            if !time.is_representable() {
                return Err(FieldProblem {
                    field,
                    problem: format!("{} µs since 1970 is outside years 1 to 9999", time.0),
                });
            }
        }
        match self {
            Event::AgentRegistered {
                role,
                name,
                capabilities,
                ..
            } => {
                id("role", role)?;
                id("name", name)?;
                ids("capabilities", capabilities)
            }
            Event::AgentHeartbeat {
                status,
                progress,
                current_task,
                ..
            } => {
                id("status", status)?;
                if let Some(progress) = progress
                    && !(0.0..=1.0).contains(progress)
                {
                    return Err(FieldProblem {
                        field: "progress",
                        problem: format!("{progress} is outside 0.0..=1.0"),
                    });
                }
                opt_id("current_task", current_task)
            }
            Event::AgentDeregistered { .. } => Ok(()),
            Event::AgentExpired { agent, .. } => id("agent", agent),
            Event::SignalSent { kind, target, .. } => {
                id("kind", kind)?;
                match target {
                    SignalTarget::Agent(agent) => id("target", agent),
                    SignalTarget::Broadcast => Ok(()),
                }
            }
            Event::SignalConsumed { .. }
            | Event::SignalExpired { .. }
            | Event::SignalDelivered { .. }
            | Event::SignalAcked { .. } => Ok(()),
            Event::SignalAckExpired { agent, .. } => id("agent", agent),
            Event::TaskOptions {
                key, capabilities, ..
            } => {
                opt_id("key", key)?;
                ids("capabilities", capabilities)
            }
            Event::TaskReleased { .. } | Event::TaskEscalated { .. } => Ok(()),
            Event::SpendLimitSet { spender, limit_usd } => {
                opt_id("spender", spender)?;
                limit_usd.map_or(Ok(()), |limit| money("limit_usd", limit))
            }
            Event::SpendLimitExceeded {
                spender,
                day,
                limit_usd,
                spent_usd,
            } => {
                opt_id("spender", spender)?;
                id("day", day)?;
                money("limit_usd", *limit_usd)?;
                money("spent_usd", *spent_usd)
            }
            Event::TaskProgressed {
                progress, status, ..
            } => {
                id("status", status)?;
                match progress {
                    Some(progress) if !(0.0..=1.0).contains(progress) => Err(FieldProblem {
                        field: "progress",
                        problem: format!("{progress} is outside 0.0..=1.0"),
                    }),
                    _ => Ok(()),
                }
            }
            Event::LockAcquired {
                resource, intent, ..
            } => {
                id("resource", resource)?;
                id("intent", intent)
            }
            Event::LockRenewed { resource, .. } | Event::LockReleased { resource, .. } => {
                id("resource", resource)
            }
            Event::LockExpired {
                resource, holder, ..
            } => {
                id("resource", resource)?;
                id("holder", holder)
            }
            Event::TaskEnqueued {
                tags, workflow_id, ..
            } => {
                ids("tags", tags)?;
                opt_id("workflow_id", workflow_id)
            }
            Event::TaskLeaseExpired { agent, .. } => id("agent", agent),
            Event::TaskClaimed { .. }
            | Event::TaskLeaseRenewed { .. }
            | Event::TaskCompleted { .. }
            | Event::TaskFailed { .. }
            | Event::TaskDeadLettered { .. }
            | Event::TaskCancelled { .. }
            | Event::TaskSkipped { .. } => Ok(()),
            Event::ApprovalRequested {
                action, approvers, ..
            } => {
                id("action", action)?;
                ids("approvers", approvers)
            }
            Event::ApprovalDecided { .. } | Event::ApprovalExpired { .. } => Ok(()),
            Event::ThreadPosted { title, .. } => id("title", title),
            Event::ThreadReplied { .. } => Ok(()),
            Event::DecisionLogged { decision_type, .. } => id("decision_type", decision_type),
            Event::WorkflowStarted {
                workflow_id,
                project,
                agent_plan,
                session_id,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("project", project)?;
                ids("agent_plan", agent_plan)?;
                opt_id("session_id", session_id)
            }
            Event::StageStarted {
                workflow_id,
                stage,
                agent,
                tier,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)?;
                id("agent", agent)?;
                id("tier", tier)
            }
            Event::StageCompleted {
                workflow_id,
                stage,
                agent,
                tier,
                cost_usd,
                tags,
                quality,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)?;
                id("agent", agent)?;
                id("tier", tier)?;
                money("cost_usd", *cost_usd)?;
                ids("tags", tags)?;
                if let Some(quality) = quality
                    && !quality.is_finite()
                {
                    return Err(FieldProblem {
                        field: "quality",
                        problem: "must be a finite number".to_owned(),
                    });
                }
                Ok(())
            }
            Event::Handoff {
                workflow_id,
                from_agent,
                to_agent,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("from_agent", from_agent)?;
                id("to_agent", to_agent)
            }
            Event::Checkpoint {
                workflow_id, stage, ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)
            }
            Event::WorkflowCompleted {
                workflow_id,
                agents_executed,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                ids("agents_executed", agents_executed)
            }
            Event::WorkflowCancelled { workflow_id, .. } => id("workflow_id", workflow_id),
            Event::BudgetSet {
                workflow_id,
                limit_usd,
            } => {
                id("workflow_id", workflow_id)?;
                money("limit_usd", *limit_usd)
            }
            Event::BudgetExceeded {
                workflow_id,
                limit_usd,
                spent_usd,
            } => {
                id("workflow_id", workflow_id)?;
                money("limit_usd", *limit_usd)?;
                money("spent_usd", *spent_usd)
            }
            Event::Custom { kind, .. } => id("kind", kind),
        }
    }
}

fn id(field: &'static str, value: &str) -> Result<(), FieldProblem> {
    if value.len() > ID_BYTES_MAX {
        return Err(FieldProblem {
            field,
            problem: format!(
                "is {} bytes; the limit is {ID_BYTES_MAX} bytes",
                value.len()
            ),
        });
    }
    Ok(())
}

fn opt_id(field: &'static str, value: &Option<String>) -> Result<(), FieldProblem> {
    value.as_deref().map_or(Ok(()), |value| id(field, value))
}

fn ids(field: &'static str, values: &[String]) -> Result<(), FieldProblem> {
    values.iter().try_for_each(|value| id(field, value))
}

fn money(field: &'static str, value: f64) -> Result<(), FieldProblem> {
    if !value.is_finite() || value < 0.0 {
        return Err(FieldProblem {
            field,
            problem: format!("{value} is not a finite, non-negative amount"),
        });
    }
    Ok(())
}
