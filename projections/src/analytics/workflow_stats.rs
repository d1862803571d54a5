//! Workflow statistics: counts, success rate, durations, estimates against actuals, and the most
//! common agent sequences.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::State;
use crate::workflows::{Workflow, WorkflowStatus};

use super::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SequenceCount {
    pub agents: Vec<String>,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowStats {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub running: usize,
    pub cancelled: usize,
    /// Completed over finished (completed + failed).
    pub success_rate: Option<f64>,
    /// Wall time of finished workflows, in milliseconds.
    pub duration_ms: Distribution,
    /// Agents executed per finished workflow (a running one has not executed its plan yet).
    pub average_agents: Option<f64>,
    /// Over finished workflows that had an estimate.
    pub estimated_ms_mean: Option<f64>,
    pub actual_ms_mean: Option<f64>,
    /// actual / estimated, over the same workflows.
    pub actual_over_estimated: Option<f64>,
    pub common_sequences: Vec<SequenceCount>,
}

pub fn workflow_stats(state: &State, window: &Window, top: usize) -> WorkflowStats {
    let workflows: Vec<&Workflow> = state
        .workflows
        .by_id
        .values()
        .map(|workflow| &**workflow)
        .filter(|workflow| window.workflow(workflow))
        .collect();
    let count = |status| workflows.iter().filter(|w| w.status == status).count();
    let (completed, failed) = (
        count(WorkflowStatus::Completed),
        count(WorkflowStatus::Failed),
    );
    let durations: Vec<f64> = workflows
        .iter()
        .filter(|w| finished(w))
        .filter_map(|w| wall_ms(w))
        .map(|ms| ms as f64)
        .collect();
    let agents: Vec<f64> = workflows
        .iter()
        .filter(|w| finished(w))
        .map(|w| w.agents_executed.len() as f64)
        .collect();
    let estimated: Vec<(f64, f64)> = workflows
        .iter()
        .filter(|w| finished(w))
        .filter_map(|w| Some((w.estimated_duration_ms? as f64, wall_ms(w)? as f64)))
        .collect();
    let estimated_ms_mean = mean(&estimated.iter().map(|(e, _)| *e).collect::<Vec<_>>());
    let actual_ms_mean = mean(&estimated.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    let mut sequences: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for workflow in &workflows {
        if !workflow.agents_executed.is_empty() {
            *sequences
                .entry(workflow.agents_executed.clone())
                .or_default() += 1;
        }
    }
    let mut common_sequences: Vec<SequenceCount> = sequences
        .into_iter()
        .map(|(agents, count)| SequenceCount { agents, count })
        .collect();
    common_sequences.sort_by(|a, b| b.count.cmp(&a.count).then(a.agents.cmp(&b.agents)));
    common_sequences.truncate(top);
    WorkflowStats {
        total: workflows.len(),
        completed,
        failed,
        running: count(WorkflowStatus::Running),
        cancelled: count(WorkflowStatus::Cancelled),
        success_rate: (completed + failed > 0)
            .then(|| completed as f64 / (completed + failed) as f64),
        duration_ms: Distribution::of(durations),
        average_agents: mean(&agents),
        estimated_ms_mean,
        actual_ms_mean,
        actual_over_estimated: match (estimated_ms_mean, actual_ms_mean) {
            (Some(e), Some(a)) if e > 0.0 => Some(a / e),
            _ => None,
        },
        common_sequences,
    }
}
