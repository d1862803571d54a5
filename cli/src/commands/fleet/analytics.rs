//! The analytics commands: workflow stats, overhead, trends, best agent, costs.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use fleetlog::client::backend::Backend;
use fleetlog::wire::Query;
use fleetlog_ledger::Timestamp;
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

pub(super) fn show_analytic(
    backend: &Backend,
    query: Query,
    as_of: Option<&str>,
    out: &Output,
    human: fn(&Value) -> String,
) -> Result<ExitCode> {
    let value = backend.query_as_of(&query, as_of)?;
    out.emit(&value, || human(&value));
    Ok(ExitCode::SUCCESS)
}

pub(super) fn number(value: &Value, scale: f64, digits: usize) -> String {
    value.as_f64().map_or("-".to_owned(), |n| {
        let text = format!("{:.*}", digits, n * scale);
        // A value that rounds to zero from below prints as 0, not -0.0.
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

pub(super) fn minutes(value: &Value) -> String {
    number(value, 1.0 / 60_000.0, 1)
}

pub(super) fn workflow_stats_text(value: &Value) -> String {
    let sequences: Vec<Vec<String>> = rows_by(&value["common_sequences"], |s| {
        vec![
            text(&s["count"]),
            s["agents"].as_array().map_or(String::new(), |a| {
                a.iter().map(text).collect::<Vec<_>>().join(" → ")
            }),
        ]
    });
    format!(
        "{} workflows: {} completed, {} failed, {} running, {} cancelled\nsuccess rate {}%\nduration (min): mean {}, p50 {}, p90 {}\nagents per workflow {}\nestimated vs actual (min): {} vs {} (×{})\n\n{}",
        text(&value["total"]),
        text(&value["completed"]),
        text(&value["failed"]),
        text(&value["running"]),
        text(&value["cancelled"]),
        number(&value["success_rate"], 100.0, 1),
        minutes(&value["duration_ms"]["mean"]),
        minutes(&value["duration_ms"]["p50"]),
        minutes(&value["duration_ms"]["p90"]),
        number(&value["average_agents"], 1.0, 1),
        minutes(&value["estimated_ms_mean"]),
        minutes(&value["actual_ms_mean"]),
        number(&value["actual_over_estimated"], 1.0, 2),
        table(&["COUNT", "AGENT SEQUENCE"], &sequences)
    )
}

pub(super) fn overhead_text(value: &Value) -> String {
    let workflows: Vec<Vec<String>> = rows_by(&value["workflows"], |w| {
        vec![
            text(&w["workflow_id"]),
            minutes(&w["wall_ms"]),
            minutes(&w["agent_ms"]),
            number(&w["overhead"], 100.0, 1),
        ]
    });
    let waits: Vec<Vec<String>> = [
        "queue_wait_ms",
        "lock_wait_ms",
        "signal_latency_ms",
        "handoff_gap_ms",
        "approval_wait_ms",
    ]
    .iter()
    .map(|kind| {
        let fleet = &value[*kind]["fleet"];
        vec![
            kind.trim_end_matches("_ms").replace('_', " "),
            text(&fleet["count"]),
            number(&fleet["total"], 1.0 / 1000.0, 1),
            number(&fleet["p50"], 1.0 / 1000.0, 2),
            number(&fleet["p90"], 1.0 / 1000.0, 2),
        ]
    })
    .collect();
    format!(
        "{}\n\nmean overhead {}% ({}): {}\naverage coordination per workflow {} min\n\n{}",
        table(
            &["WORKFLOW", "WALL MIN", "AGENT MIN", "OVERHEAD %"],
            &workflows
        ),
        number(&value["overhead"]["mean"], 100.0, 1),
        text(&value["band"]),
        text(&value["recommendation"]),
        number(&value["coordination_minutes_mean"], 1.0, 1),
        table(&["WAIT", "COUNT", "TOTAL S", "P50 S", "P90 S"], &waits)
    )
}

pub(super) fn trend_row(trend: &Value) -> Vec<String> {
    vec![
        text(&trend["agent"]),
        text(&trend["trend"]),
        number(&trend["recent"]["success_rate"], 100.0, 0),
        text(&trend["recent"]["samples"]),
        number(&trend["historical"]["success_rate"], 100.0, 0),
        text(&trend["historical"]["samples"]),
        number(&trend["change_points"], 1.0, 1),
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

pub(super) fn trend_text(value: &Value) -> String {
    let days: Vec<Vec<String>> = rows_by(&value["daily"], |d| {
        vec![
            text(&d["date"]),
            text(&d["successes"]),
            text(&d["failures"]),
            minutes(&d["duration_ms_mean"]),
        ]
    });
    format!(
        "{}\n\n{}",
        table(&TREND_HEADERS, &[trend_row(value)]),
        table(&["DAY", "OK", "FAILED", "MEAN MIN"], &days)
    )
}

pub(super) fn trends_text(value: &Value) -> String {
    let rows = rows_by(&value["agents"], trend_row);
    table(&TREND_HEADERS, &rows)
}

pub(super) fn candidates_text(value: &Value) -> String {
    let rows: Vec<Vec<String>> = rows_by(&value["candidates"], |c| {
        vec![
            text(&c["agent"]),
            number(&c["confidence"], 1.0, 2),
            number(&c["success_rate"], 100.0, 0),
            text(&c["relevant_tasks"]),
            text(&c["reason"]),
        ]
    });
    match rows.is_empty() {
        true => "no agent's history makes a confident match".to_owned(),
        false => table(&["AGENT", "CONFIDENCE", "SUCCESS %", "TASKS", "WHY"], &rows),
    }
}

pub(super) fn costs_text(value: &Value) -> String {
    let section = |name: &str| -> Vec<Vec<String>> {
        value[name]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, spend)| {
                vec![
                    key.clone(),
                    number(&spend["cost_usd"], 1.0, 4),
                    text(&spend["tokens"]),
                    text(&spend["stages"]),
                ]
            })
            .collect()
    };
    let budgets: Vec<Vec<String>> = rows_by(&value["budgets"], |b| {
        vec![
            text(&b["workflow_id"]),
            number(&b["limit_usd"], 1.0, 2),
            number(&b["spent_usd"], 1.0, 4),
            text(&b["exceeded"]),
        ]
    });
    format!(
        "total ${} ({} tokens)\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}",
        number(&value["total"]["cost_usd"], 1.0, 4),
        text(&value["total"]["tokens"]),
        table(
            &["WORKFLOW", "USD", "TOKENS", "STAGES"],
            &section("by_workflow")
        ),
        table(&["AGENT", "USD", "TOKENS", "STAGES"], &section("by_agent")),
        table(&["TIER", "USD", "TOKENS", "STAGES"], &section("by_tier")),
        table(&["DAY", "USD", "TOKENS", "STAGES"], &section("by_day")),
        table(
            &["BUDGETED WORKFLOW", "LIMIT", "SPENT", "EXCEEDED"],
            &budgets
        )
    )
}
