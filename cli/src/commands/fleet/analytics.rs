//! The analytics commands: workflow stats, overhead, trends, best agent, costs.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetlog::client::backend::Backend;
use fleetlog::wire::{Query, views};
use fleetlog_ledger::Timestamp;
use fleetlog_projections::analytics::{AgentTrend, Costs, Overhead, Spend, WorkflowStats};
use serde_json::Value;

use crate::commands::output::{Output, table};

use super::*;

/// Which part of history an analytic looks at.
#[derive(Args, Clone, Debug)]
pub struct WindowArgs {
    /// Only this project's workflows.
    #[arg(long)]
    pub(super) project: Option<String>,
    /// From this RFC 3339 time (inclusive).
    #[arg(long)]
    pub(super) since: Option<String>,
    /// Until this RFC 3339 time (exclusive).
    #[arg(long)]
    pub(super) until: Option<String>,
    /// As the ledger was at `head`, a seq, or an RFC 3339 time.
    #[arg(long)]
    pub(super) as_of: Option<String>,
}

impl WindowArgs {
    pub(super) fn times(&self) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
        Ok((
            self.since
                .as_deref()
                .map(|text| time_arg("--since", text))
                .transpose()?,
            self.until
                .as_deref()
                .map(|text| time_arg("--until", text))
                .transpose()?,
        ))
    }
}

#[derive(Subcommand, Debug)]
pub enum WorkflowsCommand {
    /// Counts, success rate, durations, estimates and the most common agent sequences.
    Stats {
        #[command(flatten)]
        window: WindowArgs,
        /// How many agent sequences to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
}

/// Runs an analytic query (as of a past moment when asked) and renders its typed answer.
pub(super) fn show_analytic<T: serde::de::DeserializeOwned>(
    backend: &Backend,
    query: Query,
    as_of: Option<&str>,
    out: &Output,
    human: fn(&T) -> String,
) -> Result<ExitCode> {
    let value = backend.query_as_of(&query, as_of)?;
    let view: T = typed(&value)?;
    out.emit(&value, || human(&view));
    Ok(ExitCode::SUCCESS)
}

pub(super) fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T> {
    serde_json::from_value(value.clone())
        .context("the answer does not match this CLI's view of it (is the daemon another version?)")
}

/// `n × scale` with `digits` decimals; none prints `-`, and a value that rounds to zero from
/// below prints as 0, not -0.0.
pub(super) fn number(value: Option<f64>, scale: f64, digits: usize) -> String {
    value.map_or("-".to_owned(), |n| {
        let text = format!("{:.*}", digits, n * scale);
        match text
            .trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            true => text.trim_start_matches('-').to_owned(),
            false => text,
        }
    })
}

pub(super) fn minutes(ms: Option<f64>) -> String {
    number(ms, 1.0 / 60_000.0, 1)
}

fn seconds(ms: Option<f64>, digits: usize) -> String {
    number(ms, 1.0 / 1000.0, digits)
}

pub(super) fn workflow_stats_text(stats: &WorkflowStats) -> String {
    let sequences: Vec<Vec<String>> = stats
        .common_sequences
        .iter()
        .map(|s| vec![s.count.to_string(), s.agents.join(" → ")])
        .collect();
    format!(
        "{} workflows: {} completed, {} failed, {} running, {} cancelled\nsuccess rate {}%\nduration (min): mean {}, p50 {}, p90 {}\nagents per finished workflow {}\nestimated vs actual (min): {} vs {} (×{})\n\n{}",
        stats.total,
        stats.completed,
        stats.failed,
        stats.running,
        stats.cancelled,
        number(stats.success_rate, 100.0, 1),
        minutes(stats.duration_ms.mean),
        minutes(stats.duration_ms.p50),
        minutes(stats.duration_ms.p90),
        number(stats.average_agents, 1.0, 1),
        minutes(stats.estimated_ms_mean),
        minutes(stats.actual_ms_mean),
        number(stats.actual_over_estimated, 1.0, 2),
        table(&["COUNT", "AGENT SEQUENCE"], &sequences)
    )
}

pub(super) fn overhead_text(overhead: &Overhead) -> String {
    let workflows: Vec<Vec<String>> = overhead
        .workflows
        .iter()
        .map(|w| {
            vec![
                w.workflow_id.clone(),
                minutes(Some(w.wall_ms as f64)),
                minutes(Some(w.agent_ms as f64)),
                number(Some(w.overhead), 100.0, 1),
            ]
        })
        .collect();
    let waits: Vec<Vec<String>> = [
        ("queue wait", &overhead.queue_wait_ms),
        ("lock wait", &overhead.lock_wait_ms),
        ("signal latency", &overhead.signal_latency_ms),
        ("handoff gap", &overhead.handoff_gap_ms),
        ("approval wait", &overhead.approval_wait_ms),
    ]
    .iter()
    .map(|(kind, waits)| {
        let fleet = &waits.fleet;
        vec![
            (*kind).to_owned(),
            fleet.count.to_string(),
            seconds(Some(fleet.total), 1),
            seconds(fleet.p50, 2),
            seconds(fleet.p90, 2),
        ]
    })
    .collect();
    let or_dash = |text: &Option<String>| text.clone().unwrap_or_else(|| "-".to_owned());
    format!(
        "{}\n\noverhead {}% of wall time over {} finished workflow(s) ({}): {} [{}]\nper workflow: mean {}%, p50 {}%, p90 {}%\naverage coordination per workflow {} min\n\n{}",
        table(
            &["WORKFLOW", "WALL MIN", "AGENT MIN", "OVERHEAD %"],
            &workflows
        ),
        number(overhead.overhead_percent, 1.0, 2),
        overhead.workflows.len(),
        or_dash(&overhead.band),
        or_dash(&overhead.recommendation),
        or_dash(&overhead.phase_recommendation),
        number(overhead.overhead.mean, 100.0, 1),
        number(overhead.overhead.p50, 100.0, 1),
        number(overhead.overhead.p90, 100.0, 1),
        number(overhead.coordination_minutes_mean, 1.0, 1),
        table(&["WAIT", "COUNT", "TOTAL S", "P50 S", "P90 S"], &waits)
    )
}

pub(super) fn trend_row(trend: &AgentTrend) -> Vec<String> {
    vec![
        trend.agent.clone(),
        cell(trend.trend),
        number(trend.recent.success_rate, 100.0, 0),
        trend.recent.samples.to_string(),
        number(trend.historical.success_rate, 100.0, 0),
        trend.historical.samples.to_string(),
        number(trend.change_points, 1.0, 1),
    ]
}

pub(super) const TREND_HEADERS: [&str; 7] = [
    "AGENT",
    "TREND",
    "RECENT %",
    "N",
    "BEFORE %",
    "N",
    "CHANGE PTS",
];

pub(super) fn trend_text(trend: &AgentTrend) -> String {
    let days: Vec<Vec<String>> = trend
        .daily
        .iter()
        .map(|d| {
            vec![
                d.date.clone(),
                d.successes.to_string(),
                d.failures.to_string(),
                minutes(d.duration_ms_mean),
            ]
        })
        .collect();
    format!(
        "{}\n\n{}",
        table(&TREND_HEADERS, &[trend_row(trend)]),
        table(&["DAY", "OK", "FAILED", "MEAN MIN"], &days)
    )
}

pub(super) fn trends_text(trends: &views::TrendsView) -> String {
    let rows: Vec<Vec<String>> = trends.agents.iter().map(trend_row).collect();
    table(&TREND_HEADERS, &rows)
}

pub(super) fn candidates_text(found: &views::CandidatesView) -> String {
    let rows: Vec<Vec<String>> = found
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.agent.clone(),
                number(Some(c.confidence), 1.0, 2),
                number(Some(c.success_rate), 100.0, 0),
                c.relevant_tasks.to_string(),
                c.reason.clone(),
            ]
        })
        .collect();
    match rows.is_empty() {
        true => "no agent's history makes a confident match".to_owned(),
        false => table(&["AGENT", "CONFIDENCE", "SUCCESS %", "TASKS", "WHY"], &rows),
    }
}

pub(super) fn costs_text(costs: &Costs) -> String {
    let section = |spends: &std::collections::BTreeMap<String, Spend>| -> Vec<Vec<String>> {
        spends
            .iter()
            .map(|(key, spend)| {
                vec![
                    key.clone(),
                    number(Some(spend.cost_usd), 1.0, 4),
                    spend.tokens.to_string(),
                    spend.stages.to_string(),
                ]
            })
            .collect()
    };
    let budgets: Vec<Vec<String>> = costs
        .budgets
        .iter()
        .map(|b| {
            vec![
                b.workflow_id.clone(),
                number(b.limit_usd, 1.0, 2),
                number(Some(b.spent_usd), 1.0, 4),
                b.exceeded.to_string(),
            ]
        })
        .collect();
    format!(
        "total ${} ({} tokens)\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}",
        number(Some(costs.total.cost_usd), 1.0, 4),
        costs.total.tokens,
        table(
            &["WORKFLOW", "USD", "TOKENS", "STAGES"],
            &section(&costs.by_workflow)
        ),
        table(
            &["AGENT", "USD", "TOKENS", "STAGES"],
            &section(&costs.by_agent)
        ),
        table(
            &["TIER", "USD", "TOKENS", "STAGES"],
            &section(&costs.by_tier)
        ),
        table(&["DAY", "USD", "TOKENS", "STAGES"], &section(&costs.by_day)),
        table(
            &["BUDGETED WORKFLOW", "LIMIT", "SPENT", "EXCEEDED"],
            &budgets
        )
    )
}
