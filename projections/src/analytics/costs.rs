//! Cost and tokens by workflow, agent, tier and day, and budgets against spend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::State;

use super::*;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Spend {
    pub cost_usd: f64,
    pub tokens: u64,
    pub stages: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetStatus {
    pub workflow_id: String,
    pub limit_usd: Option<f64>,
    pub spent_usd: f64,
    pub exceeded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Costs {
    pub total: Spend,
    pub by_workflow: BTreeMap<String, Spend>,
    pub by_agent: BTreeMap<String, Spend>,
    pub by_tier: BTreeMap<String, Spend>,
    /// By UTC date, `YYYY-MM-DD`.
    pub by_day: BTreeMap<String, Spend>,
    pub budgets: Vec<BudgetStatus>,
}

pub fn costs(state: &State, window: &Window) -> Costs {
    let mut result = Costs {
        total: Spend::default(),
        by_workflow: BTreeMap::new(),
        by_agent: BTreeMap::new(),
        by_tier: BTreeMap::new(),
        by_day: BTreeMap::new(),
        budgets: Vec::new(),
    };
    let in_project = |workflow_id: &str| {
        window.project.as_ref().is_none_or(|project| {
            state
                .workflows
                .get(workflow_id)
                .is_some_and(|workflow| workflow.project == *project)
        })
    };
    for run in state
        .facts
        .stage_runs
        .iter()
        .filter(|run| window.contains(run.at) && in_project(&run.workflow_id))
    {
        let date = run
            .at
            .to_datetime()
            .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string());
        for spend in [
            &mut result.total,
            result
                .by_workflow
                .entry(run.workflow_id.clone())
                .or_default(),
            result.by_agent.entry(run.agent.clone()).or_default(),
            result.by_tier.entry(run.tier.clone()).or_default(),
            result.by_day.entry(date).or_default(),
        ] {
            spend.cost_usd += run.cost_usd;
            spend.tokens += run.tokens;
            spend.stages += 1;
        }
    }
    result.budgets = state
        .workflows
        .by_id
        .values()
        .filter(|workflow| window.workflow(workflow))
        .filter(|workflow| workflow.budget_usd.is_some())
        .map(|workflow| BudgetStatus {
            workflow_id: workflow.id.clone(),
            limit_usd: workflow.budget_usd,
            spent_usd: workflow.spent_usd,
            exceeded: workflow.over_budget(),
        })
        .collect();
    result
}
