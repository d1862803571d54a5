//! Coordination overhead: wall time against agent time per workflow, and the breakdown of every
//! measured wait (queue, lock, signal, handoff, approval) by fleet, agent and workflow.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_ledger::Timestamp;
use serde::{Deserialize, Serialize};

use crate::facts::Wait;
use crate::state::State;

use super::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WaitBreakdown {
    pub fleet: Distribution,
    pub by_agent: BTreeMap<String, Distribution>,
    pub by_workflow: BTreeMap<String, Distribution>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Overhead {
    pub workflows: Vec<WorkflowOverhead>,
    /// The headline, as the telemetry tools fleets come from compute it: total coordination time
    /// over total wall time of the finished workflows, in percent. A long workflow weighs more
    /// than a short one, which is what "how much of our time goes to coordination" asks.
    pub overhead_percent: Option<f64>,
    pub wall_ms_total: u64,
    pub coordination_ms_total: i64,
    /// Beside the headline: the distribution of the per-workflow shares (0..1), unweighted.
    pub overhead: Distribution,
    pub coordination_minutes_mean: Option<f64>,
    /// `efficient`, `moderate` or `high` (by the headline), with what to do.
    pub band: Option<String>,
    pub recommendation: Option<String>,
    /// The same band in the seed telemetry tool's words: "Stay Phase 1-2", "Monitor overhead",
    /// "Consider Phase 3".
    pub phase_recommendation: Option<String>,
    pub queue_wait_ms: WaitBreakdown,
    pub lock_wait_ms: WaitBreakdown,
    pub signal_latency_ms: WaitBreakdown,
    pub handoff_gap_ms: WaitBreakdown,
    pub approval_wait_ms: WaitBreakdown,
}

/// For attributing a wait to a workflow: per agent, the workflows it is named in (plan or
/// stages), as `(start, end, id)` sorted by start.
pub(super) struct Spans<'a>(BTreeMap<&'a str, Vec<(Timestamp, Timestamp, &'a str)>>);

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

pub(super) fn breakdown(
    samples: impl Iterator<Item = (String, Option<String>, f64)>,
) -> WaitBreakdown {
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

pub(super) fn waits<'a>(
    spans: &'a Spans<'a>,
    waits: &'a crate::history::History<Wait>,
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
    let wall_ms_total: u64 = workflows.iter().map(|w| w.wall_ms).sum();
    let coordination_ms_total: i64 = workflows.iter().map(|w| w.coordination_ms).sum();
    let share = (wall_ms_total > 0).then(|| coordination_ms_total as f64 / wall_ms_total as f64);
    let words = share.map(|share| match share {
        share if share < OVERHEAD_EFFICIENT_BELOW => (
            "efficient",
            "coordination is cheap; keep the current setup",
            "Stay Phase 1-2",
        ),
        share if share <= OVERHEAD_HIGH_ABOVE => (
            "moderate",
            "monitor: watch the wait breakdown as the fleet grows",
            "Monitor overhead",
        ),
        _ => (
            "high",
            "coordination dominates; look at the breakdown",
            "Consider Phase 3",
        ),
    });
    let facts = &state.facts;
    let spans = Spans::new(state);
    Overhead {
        workflows,
        overhead_percent: share.map(|share| share * 100.0),
        wall_ms_total,
        coordination_ms_total,
        overhead: Distribution::of(shares),
        coordination_minutes_mean: mean(&minutes),
        band: words.map(|(band, _, _)| band.to_owned()),
        recommendation: words.map(|(_, what, _)| what.to_owned()),
        phase_recommendation: words.map(|(_, _, phase)| phase.to_owned()),
        queue_wait_ms: breakdown(waits(&spans, &facts.queue_waits, window)),
        lock_wait_ms: breakdown(waits(&spans, &facts.lock_waits, window)),
        signal_latency_ms: breakdown(waits(&spans, &facts.signal_latencies, window)),
        handoff_gap_ms: breakdown(gaps.into_iter()),
        approval_wait_ms: breakdown(waits(&spans, &facts.approval_waits, window)),
    }
}
