//! Agent performance trends: recent against earlier success rate and speed, per agent.

use std::collections::BTreeMap;

use fleetlog_ledger::{Outcome, Timestamp};
use serde::{Deserialize, Serialize};

use crate::state::State;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Improving,
    Declining,
    Stable,
    InsufficientData,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Period {
    pub samples: usize,
    pub successes: usize,
    pub success_rate: Option<f64>,
    pub duration_ms_mean: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Day {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    pub successes: usize,
    pub failures: usize,
    pub duration_ms_mean: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentTrend {
    pub agent: String,
    pub recent: Period,
    pub historical: Period,
    /// Recent minus historical success rate, in percentage points.
    pub change_points: Option<f64>,
    pub trend: Trend,
    pub daily: Vec<Day>,
}

/// One finished unit of an agent's work, stage or task.
pub(super) struct Sample {
    at: Timestamp,
    success: bool,
    duration_ms: u64,
}

/// Every agent's finished work, in one pass over the facts.
pub(super) fn samples_by_agent(state: &State) -> BTreeMap<&str, Vec<Sample>> {
    let mut by_agent: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for run in state
        .facts
        .stage_runs
        .iter()
        .filter(|run| run.outcome != Outcome::Unknown)
    {
        by_agent
            .entry(run.agent.as_str())
            .or_default()
            .push(Sample {
                at: run.at,
                success: run.outcome == Outcome::Success,
                duration_ms: run.duration_ms,
            });
    }
    for run in &state.facts.task_runs {
        by_agent
            .entry(run.agent.as_str())
            .or_default()
            .push(Sample {
                at: run.at,
                success: run.success,
                duration_ms: run.duration_ms,
            });
    }
    by_agent
}

pub(super) fn period(samples: &[&Sample]) -> Period {
    let successes = samples.iter().filter(|s| s.success).count();
    Period {
        samples: samples.len(),
        successes,
        success_rate: (!samples.is_empty()).then(|| successes as f64 / samples.len() as f64),
        duration_ms_mean: mean(
            &samples
                .iter()
                .map(|s| s.duration_ms as f64)
                .collect::<Vec<_>>(),
        ),
    }
}

/// `agent`'s trend over the `days` before `now`: the last [`TREND_RECENT_DAYS`] against the rest.
pub fn agent_trend(
    state: &State,
    agent: &str,
    days: u64,
    now: Timestamp,
    threshold_points: f64,
) -> AgentTrend {
    let samples = samples_by_agent(state).remove(agent).unwrap_or_default();
    trend_from(agent, &samples, days, now, threshold_points)
}

pub(super) fn trend_from(
    agent: &str,
    samples: &[Sample],
    days: u64,
    now: Timestamp,
    threshold_points: f64,
) -> AgentTrend {
    let start = now.minus_millis(days.saturating_mul(DAY_MS));
    let recent_start = now.minus_millis(TREND_RECENT_DAYS.min(days) * DAY_MS);
    let in_window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= start && s.at < now)
        .collect();
    let recent: Vec<&Sample> = in_window
        .iter()
        .copied()
        .filter(|s| s.at >= recent_start)
        .collect();
    let historical: Vec<&Sample> = in_window
        .iter()
        .copied()
        .filter(|s| s.at < recent_start)
        .collect();
    let (recent, historical) = (period(&recent), period(&historical));
    let change_points = match (recent.success_rate, historical.success_rate) {
        (Some(r), Some(h)) => Some((r - h) * 100.0),
        _ => None,
    };
    let trend = match change_points {
        _ if recent.samples < TREND_SAMPLES_MIN || historical.samples < TREND_SAMPLES_MIN => {
            Trend::InsufficientData
        }
        Some(change) if change > threshold_points => Trend::Improving,
        Some(change) if change < -threshold_points => Trend::Declining,
        _ => Trend::Stable,
    };
    let mut by_day: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for sample in &in_window {
        let date = sample
            .at
            .to_datetime()
            .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string());
        by_day.entry(date).or_default().push(sample);
    }
    let daily = by_day
        .into_iter()
        .map(|(date, samples)| Day {
            date,
            successes: samples.iter().filter(|s| s.success).count(),
            failures: samples.iter().filter(|s| !s.success).count(),
            duration_ms_mean: mean(
                &samples
                    .iter()
                    .map(|s| s.duration_ms as f64)
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    AgentTrend {
        agent: agent.to_owned(),
        recent,
        historical,
        change_points,
        trend,
        daily,
    }
}

/// Every agent with work in the window, worst first (lowest recent success rate, then the
/// steepest decline).
pub fn all_trends(
    state: &State,
    days: u64,
    now: Timestamp,
    threshold_points: f64,
) -> Vec<AgentTrend> {
    let mut trends: Vec<AgentTrend> = samples_by_agent(state)
        .into_iter()
        .map(|(agent, samples)| trend_from(agent, &samples, days, now, threshold_points))
        .filter(|trend| trend.recent.samples + trend.historical.samples > 0)
        .collect();
    trends.sort_by(|a, b| {
        let rate = |t: &AgentTrend| {
            t.recent
                .success_rate
                .or(t.historical.success_rate)
                .unwrap_or(1.0)
        };
        rate(a)
            .total_cmp(&rate(b))
            .then(
                a.change_points
                    .unwrap_or(0.0)
                    .total_cmp(&b.change_points.unwrap_or(0.0)),
            )
            .then(a.agent.cmp(&b.agent))
    });
    trends
}
