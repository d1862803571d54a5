//! Cost and tokens by workflow, agent, tier and day, and budgets against spend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use fleetlog_ledger::Timestamp;

use crate::budgets::{day_name, day_of};
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

/// A daily spending limit and today's spend against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SpendLimitStatus {
    /// The agent, or null for the whole fleet.
    pub spender: Option<String>,
    pub limit_usd: f64,
    /// The UTC day of `now`, `YYYY-MM-DD`.
    pub day: String,
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
    /// Daily limits per agent and fleet-wide, against the spend of `now`'s day.
    pub spend_limits: Vec<SpendLimitStatus>,
}

/// Spend in `window`; the daily limits against `now`'s UTC day.
pub fn costs(state: &State, window: &Window, now: Timestamp) -> Costs {
    let mut result = Costs {
        total: Spend::default(),
        by_workflow: BTreeMap::new(),
        by_agent: BTreeMap::new(),
        by_tier: BTreeMap::new(),
        by_day: BTreeMap::new(),
        budgets: Vec::new(),
        spend_limits: Vec::new(),
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
    let today = day_of(now);
    result.spend_limits = state
        .budgets
        .statuses(today)
        .into_iter()
        .map(|status| SpendLimitStatus {
            exceeded: status.exceeded(),
            spender: status.spender,
            limit_usd: status.limit_usd,
            day: day_name(today),
            spent_usd: status.spent_usd,
        })
        .collect();
    result
}
