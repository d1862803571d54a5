//! The analytics commands: workflow stats, overhead, trends, best agent, costs.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetlog::client::backend::Backend;
use fleetlog::wire::{Query, views};
use fleetlog_ledger::Timestamp;
use fleetlog_projections::analytics::{
    AgentTrend, Costs, Overhead, Spend, TeamPlan, TeamTask, WorkflowStats,
};
use serde_json::Value;

use crate::commands::output::{Output, table};

use super::*;

/// Which part of history an analytic looks at.
#[derive(Args, Clone, Debug)]
pub struct WindowArgs {
    /// Only this project's workflows.
    #[arg(long)]
    pub(super) project: Option<String>,
    /// From this time (inclusive): RFC 3339, or a duration ago (2h, 7d).
    #[arg(long)]
    pub(super) since: Option<String>,
    /// Until this time (exclusive): RFC 3339, or a duration ago.
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
                .map(|text| crate::commands::units::moment("--since", text))
                .transpose()?,
            self.until
                .as_deref()
                .map(|text| crate::commands::units::moment("--until", text))
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
    let limits: Vec<Vec<String>> = costs
        .spend_limits
        .iter()
        .map(|l| {
            vec![
                l.spender.clone().unwrap_or_else(|| "(fleet)".to_owned()),
                l.day.clone(),
                number(Some(l.limit_usd), 1.0, 2),
                number(Some(l.spent_usd), 1.0, 4),
                l.exceeded.to_string(),
            ]
        })
        .collect();
    format!(
        "total ${} ({} tokens)\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}",
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
        ),
        table(
            &["DAILY LIMIT OF", "DAY", "LIMIT", "SPENT", "EXCEEDED"],
            &limits
        )
    )
}

pub(super) fn staff_text(found: &views::StaffView) -> String {
    let rows: Vec<Vec<String>> = found
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent.clone(),
                number(Some(a.score), 1.0, 2),
                format!("{}/{}", a.successes, a.finished),
                format!("{}/{}", a.load, a.max_concurrent_tasks),
                a.capabilities.join(","),
            ]
        })
        .collect();
    match rows.is_empty() {
        true => "no live agent has those capabilities".to_owned(),
        false => table(
            &["AGENT", "SCORE", "OK/FINISHED", "LOAD", "CAPABILITIES"],
            &rows,
        ),
    }
}

pub(super) fn team_text(plan: &TeamPlan) -> String {
    let mut rows: Vec<Vec<String>> = plan
        .assignments
        .iter()
        .map(|a| {
            vec![
                a.wave.to_string(),
                a.task.clone(),
                a.agent.clone(),
                number(Some(a.score), 1.0, 2),
            ]
        })
        .collect();
    rows.extend(plan.unassigned.iter().map(|u| {
        vec![
            u.wave.to_string(),
            u.task.clone(),
            "-".to_owned(),
            u.reason.clone(),
        ]
    }));
    rows.sort_by_key(|row| row[0].parse::<u32>().unwrap_or(u32::MAX));
    format!(
        "{}\nteam: {}",
        table(&["WAVE", "TASK", "AGENT", "SCORE"], &rows),
        plan.team.join(", ")
    )
}

/// Tasks to staff from `--task` specs and a `--tasks-file` (JSON array, or `{"tasks": [...]}`).
pub(super) fn team_tasks(
    specs: &[String],
    file: Option<&std::path::Path>,
) -> Result<Vec<TeamTask>> {
    let mut tasks = Vec::new();
    if let Some(file) = file {
        let text = match file.to_str() {
            Some("-") => {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            }
            _ => std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        };
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let list = match value {
            Value::Object(mut object) => object.remove("tasks").unwrap_or(Value::Null),
            other => other,
        };
        let parsed: Vec<TeamTask> = serde_json::from_value(list).with_context(|| {
            format!(
                "{}: expected [{{\"id\", \"required_capabilities\", \"priority\", \"depends_on\"}}]",
                file.display()
            )
        })?;
        tasks.extend(parsed);
    }
    for spec in specs {
        tasks.push(task_spec(spec)?);
    }
    anyhow::ensure!(
        !tasks.is_empty(),
        "no tasks: give --task ID[:CAPABILITY,…[:PRIORITY[:DEPENDENCY,…]]] or --tasks-file FILE"
    );
    Ok(tasks)
}

fn task_spec(spec: &str) -> Result<TeamTask> {
    let list = |part: Option<&str>| -> Vec<String> {
        part.unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut parts = spec.splitn(4, ':');
    let id = parts.next().unwrap_or_default().trim().to_owned();
    anyhow::ensure!(
        !id.is_empty(),
        "--task {spec:?} has no id: give ID[:CAPABILITY,…[:PRIORITY[:DEPENDENCY,…]]]"
    );
    let required_capabilities = list(parts.next());
    let priority = match parts.next().map(str::trim) {
        None | Some("") => 0,
        Some(text) => text
            .parse()
            .with_context(|| format!("--task {spec:?}: priority {text:?} is not a whole number"))?,
    };
    Ok(TeamTask {
        id,
        required_capabilities,
        priority,
        depends_on: list(parts.next()),
    })
}
