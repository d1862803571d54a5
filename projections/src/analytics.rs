//! Analytics over the whole history: workflow statistics, coordination overhead with its
//! breakdown, agent performance trends, best-agent recommendation, and cost. Pure functions of a
//! [`State`] (live, or rebuilt as of any seq or time), a [`Window`] and `now`.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_ledger::{Outcome, Timestamp};
use serde::Serialize;

use crate::facts::Wait;
use crate::state::State;
use crate::workflows::{Workflow, WorkflowStatus};

const DAY_MS: u64 = 24 * 3_600_000;

/// Overhead below this share of wall time is efficient.
pub const OVERHEAD_EFFICIENT_BELOW: f64 = 0.15;
/// Overhead above this share of wall time is high.
pub const OVERHEAD_HIGH_ABOVE: f64 = 0.30;
/// A change in success rate beyond this many percentage points is a trend.
pub const TREND_THRESHOLD_POINTS_DEFAULT: f64 = 5.0;
/// Fewer samples than this in either period is "insufficient data".
pub const TREND_SAMPLES_MIN: usize = 3;
/// The recent period of a trend, in days.
pub const TREND_RECENT_DAYS: u64 = 7;

/// Which part of history an analytic looks at: `from <= time < to`, and optionally one project.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub project: Option<String>,
}

impl Window {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at < to)
    }

    fn workflow(&self, workflow: &Workflow) -> bool {
        self.contains(workflow.started_at)
            && self
                .project
                .as_ref()
                .is_none_or(|project| *project == workflow.project)
    }
}

/// Nearest-rank percentile of sorted values (`fraction` in 0..=1).
fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Summary of a set of numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Distribution {
    pub count: usize,
    pub total: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

impl Distribution {
    pub fn of(values: Vec<f64>) -> Self {
        let values = sorted(values);
        Distribution {
            count: values.len(),
            total: values.iter().sum(),
            mean: mean(&values),
            p50: percentile(&values, 0.5),
            p90: percentile(&values, 0.9),
        }
    }
}

/// Wall time of a finished workflow, in milliseconds.
pub fn wall_ms(workflow: &Workflow) -> Option<u64> {
    workflow.duration_ms.or_else(|| {
        let finished = workflow.finished_at?;
        u64::try_from(finished.as_micros() - workflow.started_at.as_micros())
            .ok()
            .map(|micros| micros / 1000)
    })
}

fn finished(workflow: &Workflow) -> bool {
    matches!(
        workflow.status,
        WorkflowStatus::Completed | WorkflowStatus::Failed
    )
}

// --- workflow statistics --------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SequenceCount {
    pub agents: Vec<String>,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
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

// --- coordination overhead ------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkflowOverhead {
    pub workflow_id: String,
    pub wall_ms: u64,
    /// Sum of the workflow's stage durations.
    pub agent_ms: u64,
    /// (wall - agent) / wall; negative means stages ran in parallel.
    pub overhead: f64,
    pub coordination_ms: i64,
}

/// Totals and percentiles of one kind of wait, fleet-wide, per agent and per workflow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WaitBreakdown {
    pub fleet: Distribution,
    pub by_agent: BTreeMap<String, Distribution>,
    pub by_workflow: BTreeMap<String, Distribution>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Overhead {
    pub workflows: Vec<WorkflowOverhead>,
    /// Of the per-workflow overhead shares.
    pub overhead: Distribution,
    pub coordination_minutes_mean: Option<f64>,
    /// `efficient`, `moderate` or `high` (by the mean), with what to do.
    pub band: Option<&'static str>,
    pub recommendation: Option<&'static str>,
    pub queue_wait_ms: WaitBreakdown,
    pub lock_wait_ms: WaitBreakdown,
    pub signal_latency_ms: WaitBreakdown,
    pub handoff_gap_ms: WaitBreakdown,
    pub approval_wait_ms: WaitBreakdown,
}

/// For attributing a wait to a workflow: per agent, the workflows it is named in (plan or
/// stages), as `(start, end, id)` sorted by start.
struct Spans<'a>(BTreeMap<&'a str, Vec<(Timestamp, Timestamp, &'a str)>>);

impl<'a> Spans<'a> {
    fn new(state: &'a State) -> Self {
        let mut spans: BTreeMap<&str, Vec<(Timestamp, Timestamp, &str)>> = BTreeMap::new();
        for workflow in state.workflows.by_id.values() {
            let end = workflow.finished_at.unwrap_or(Timestamp::MAX);
            let agents: BTreeSet<&str> = workflow
                .agent_plan
                .iter()
                .map(String::as_str)
                .chain(workflow.stages.iter().map(|stage| stage.agent.as_str()))
                .collect();
            for agent in agents {
                spans.entry(agent).or_default().push((
                    workflow.started_at,
                    end,
                    workflow.id.as_str(),
                ));
            }
        }
        for list in spans.values_mut() {
            list.sort();
        }
        Spans(spans)
    }

    /// The latest-started workflow of `agent` whose span holds `at`.
    fn workflow_of(&self, agent: &str, at: Timestamp) -> Option<&'a str> {
        let list = self.0.get(agent)?;
        let started = list.partition_point(|(start, _, _)| *start <= at);
        list[..started]
            .iter()
            .rev()
            .find(|(_, end, _)| at <= *end)
            .map(|(_, _, id)| *id)
    }
}

fn breakdown(samples: impl Iterator<Item = (String, Option<String>, f64)>) -> WaitBreakdown {
    let mut fleet = Vec::new();
    let mut by_agent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_workflow: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (agent, workflow, value) in samples {
        fleet.push(value);
        by_agent.entry(agent).or_default().push(value);
        if let Some(workflow) = workflow {
            by_workflow.entry(workflow).or_default().push(value);
        }
    }
    WaitBreakdown {
        fleet: Distribution::of(fleet),
        by_agent: by_agent
            .into_iter()
            .map(|(k, v)| (k, Distribution::of(v)))
            .collect(),
        by_workflow: by_workflow
            .into_iter()
            .map(|(k, v)| (k, Distribution::of(v)))
            .collect(),
    }
}

fn waits<'a>(
    spans: &'a Spans<'a>,
    waits: &'a [Wait],
    window: &'a Window,
) -> impl Iterator<Item = (String, Option<String>, f64)> + 'a {
    waits
        .iter()
        .filter(|wait| window.contains(wait.at))
        .map(|wait| {
            let workflow = wait
                .workflow_id
                .clone()
                .or_else(|| spans.workflow_of(&wait.agent, wait.at).map(str::to_owned));
            (wait.agent.clone(), workflow, wait.wait_ms as f64)
        })
}

pub fn overhead(state: &State, window: &Window) -> Overhead {
    let mut workflows = Vec::new();
    let mut gaps = Vec::new();
    for workflow in state
        .workflows
        .by_id
        .values()
        .filter(|w| window.workflow(w) && finished(w))
    {
        let agent_ms: u64 = workflow
            .stages
            .iter()
            .filter_map(|stage| stage.duration_ms)
            .sum();
        if let Some(wall) = wall_ms(workflow).filter(|wall| *wall > 0) {
            let coordination_ms = wall as i64 - agent_ms as i64;
            workflows.push(WorkflowOverhead {
                workflow_id: workflow.id.clone(),
                wall_ms: wall,
                agent_ms,
                overhead: coordination_ms as f64 / wall as f64,
                coordination_ms,
            });
        }
        // Handoff gaps: from one stage's end to the next stage's start, in start order.
        let mut spans: Vec<(Timestamp, Timestamp, &str)> = workflow
            .stages
            .iter()
            .filter_map(|stage| {
                let end = stage.completed_at?;
                let start = stage
                    .started_at
                    .unwrap_or(end.minus_millis(stage.duration_ms.unwrap_or(0)));
                Some((start, end, stage.agent.as_str()))
            })
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            // Overlapping stages ran in parallel: there was no handoff to wait for.
            let gap = pair[1].0.as_micros() - pair[0].1.as_micros();
            if gap >= 0 {
                gaps.push((
                    pair[1].2.to_owned(),
                    Some(workflow.id.clone()),
                    gap as f64 / 1000.0,
                ));
            }
        }
    }
    let shares: Vec<f64> = workflows.iter().map(|w| w.overhead).collect();
    let minutes: Vec<f64> = workflows
        .iter()
        .map(|w| w.coordination_ms as f64 / 60_000.0)
        .collect();
    let distribution = Distribution::of(shares);
    let (band, recommendation) = match distribution.mean {
        None => (None, None),
        Some(mean) if mean < OVERHEAD_EFFICIENT_BELOW => (
            Some("efficient"),
            Some("coordination is cheap; keep the current setup"),
        ),
        Some(mean) if mean <= OVERHEAD_HIGH_ABOVE => (Some("moderate"), Some("monitor")),
        Some(_) => (
            Some("high"),
            Some("coordination dominates; look at the breakdown"),
        ),
    };
    let facts = &state.facts;
    let spans = Spans::new(state);
    Overhead {
        workflows,
        overhead: distribution,
        coordination_minutes_mean: mean(&minutes),
        band,
        recommendation,
        queue_wait_ms: breakdown(waits(&spans, &facts.queue_waits, window)),
        lock_wait_ms: breakdown(waits(&spans, &facts.lock_waits, window)),
        signal_latency_ms: breakdown(waits(&spans, &facts.signal_latencies, window)),
        handoff_gap_ms: breakdown(gaps.into_iter()),
        approval_wait_ms: breakdown(waits(&spans, &facts.approval_waits, window)),
    }
}

// --- agent performance trends ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Improving,
    Declining,
    Stable,
    InsufficientData,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Period {
    pub samples: usize,
    pub successes: usize,
    pub success_rate: Option<f64>,
    pub duration_ms_mean: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Day {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    pub successes: usize,
    pub failures: usize,
    pub duration_ms_mean: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
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
struct Sample {
    at: Timestamp,
    success: bool,
    duration_ms: u64,
}

/// Every agent's finished work, in one pass over the facts.
fn samples_by_agent(state: &State) -> BTreeMap<&str, Vec<Sample>> {
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

fn period(samples: &[&Sample]) -> Period {
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

fn trend_from(
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

// --- best agent for a task ------------------------------------------------------------------

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "the", "to", "with", "this", "that", "we", "our", "add", "new",
];

/// Lowercase words of two or more letters or digits, stop words removed.
pub fn keywords(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|word| word.chars().count() >= 2 && !STOP_WORDS.contains(&word.as_str()))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Candidate {
    pub agent: String,
    /// 0..=1.
    pub confidence: f64,
    pub relevant_tasks: usize,
    pub success_rate: f64,
    pub duration_ms_mean: Option<f64>,
    pub trend: Trend,
    pub reason: String,
}

struct Relevant {
    overlap: f64,
    success: Option<bool>,
    duration_ms: u64,
    at: Timestamp,
    /// Indexes of the query words this work matched.
    matched: BTreeSet<usize>,
}

/// Which query words a piece of text contains; work repeats, so each distinct piece of text is
/// tokenised once (keys borrow from the facts: no allocation per run).
struct Matcher<'a> {
    /// The query's words, in order; matches are indexes into it.
    words: Vec<String>,
    memo: std::collections::HashMap<&'a str, Vec<usize>>,
}

impl<'a> Matcher<'a> {
    fn new(query: BTreeSet<String>) -> Self {
        Matcher {
            words: query.into_iter().collect(),
            memo: std::collections::HashMap::new(),
        }
    }

    /// Indexes (into the query's words) found in `pieces`.
    fn matches(&mut self, pieces: impl IntoIterator<Item = &'a str>) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for piece in pieces {
            let words = &self.words;
            let hits = self.memo.entry(piece).or_insert_with(|| {
                let present = keywords(piece);
                (0..words.len())
                    .filter(|i| present.contains(&words[*i]))
                    .collect()
            });
            found.extend(hits.iter().copied());
        }
        found
    }
}

/// Ranks agents for `task` (and an optional `domain`) from their history: relevance of past
/// work (keyword overlap), success on relevant work, experience, recency and trend. Returns at
/// most `top` candidates with confidence at least `min_confidence`, best first.
pub fn best_agents(
    state: &State,
    task: &str,
    domain: Option<&str>,
    now: Timestamp,
    min_confidence: f64,
    top: usize,
) -> Vec<Candidate> {
    let query = keywords(&format!("{task} {}", domain.unwrap_or_default()));
    if query.is_empty() {
        return Vec::new();
    }
    let query_len = query.len() as f64;
    let mut matcher = Matcher::new(query);
    let mut relevant: BTreeMap<String, Vec<Relevant>> = BTreeMap::new();
    let mut consider = |agent: &str,
                        matched: BTreeSet<usize>,
                        success: Option<bool>,
                        duration_ms: u64,
                        at: Timestamp| {
        if !matched.is_empty() {
            let overlap = matched.len() as f64 / query_len;
            relevant
                .entry(agent.to_owned())
                .or_default()
                .push(Relevant {
                    overlap,
                    success,
                    duration_ms,
                    at,
                    matched,
                });
        }
    };
    for run in &state.facts.stage_runs {
        let pieces = [
            run.description.as_str(),
            run.stage.as_str(),
            run.tier.as_str(),
        ]
        .into_iter()
        .chain(run.tags.iter().map(String::as_str));
        let success = match run.outcome {
            Outcome::Unknown => None,
            outcome => Some(outcome == Outcome::Success),
        };
        consider(
            &run.agent,
            matcher.matches(pieces),
            success,
            run.duration_ms,
            run.at,
        );
    }
    for run in &state.facts.task_runs {
        let pieces = [run.title.as_str(), run.description.as_str()]
            .into_iter()
            .chain(run.tags.iter().map(String::as_str));
        consider(
            &run.agent,
            matcher.matches(pieces),
            Some(run.success),
            run.duration_ms,
            run.at,
        );
    }
    let samples = samples_by_agent(state);
    let mut candidates: Vec<Candidate> = relevant
        .into_iter()
        .map(|(agent, items)| {
            let n = items.len();
            let relevance = items.iter().map(|i| i.overlap).sum::<f64>() / n as f64;
            let judged: Vec<bool> = items.iter().filter_map(|i| i.success).collect();
            let success_rate = match judged.is_empty() {
                true => 0.0,
                false => judged.iter().filter(|s| **s).count() as f64 / judged.len() as f64,
            };
            let experience = 1.0 - (-(n as f64) / 5.0).exp();
            let newest = items.iter().map(|i| i.at).max().unwrap_or(now);
            let days_since = u64::try_from(now.as_micros() - newest.as_micros()).unwrap_or(0)
                as f64
                / (DAY_MS as f64 * 1000.0);
            let recency = (-days_since / 30.0).exp();
            let history = samples
                .get(agent.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let trend = trend_from(&agent, history, 30, now, TREND_THRESHOLD_POINTS_DEFAULT).trend;
            let trend_adjustment = match trend {
                Trend::Improving => 0.05,
                Trend::Declining => -0.05,
                Trend::Stable | Trend::InsufficientData => 0.0,
            };
            let confidence = (0.35 * relevance
                + 0.35 * success_rate
                + 0.2 * experience
                + 0.1 * recency
                + trend_adjustment)
                .clamp(0.0, 1.0);
            let matched: BTreeSet<usize> = items
                .iter()
                .flat_map(|i| i.matched.iter().copied())
                .collect();
            let words: Vec<&str> = matched
                .iter()
                .take(4)
                .map(|i| matcher.words[*i].as_str())
                .collect();
            let reason = format!(
                "{n} relevant task{} ({}), {:.0}% success, {}",
                if n == 1 { "" } else { "s" },
                words.join(", "),
                success_rate * 100.0,
                match trend {
                    Trend::Improving => "improving",
                    Trend::Declining => "declining",
                    Trend::Stable => "stable",
                    Trend::InsufficientData => "too little history for a trend",
                }
            );
            Candidate {
                agent,
                confidence,
                relevant_tasks: n,
                success_rate,
                duration_ms_mean: mean(
                    &items
                        .iter()
                        .map(|i| i.duration_ms as f64)
                        .collect::<Vec<_>>(),
                ),
                trend,
                reason,
            }
        })
        .filter(|candidate| candidate.confidence >= min_confidence)
        .collect();
    candidates.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.agent.cmp(&b.agent))
    });
    candidates.truncate(top);
    candidates
}

// --- cost -----------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Spend {
    pub cost_usd: f64,
    pub tokens: u64,
    pub stages: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BudgetStatus {
    pub workflow_id: String,
    pub limit_usd: Option<f64>,
    pub spent_usd: f64,
    pub exceeded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
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
