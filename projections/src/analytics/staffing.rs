//! Staffing: which live agents can do a kind of work, ranked by how well they did it and how
//! free they are now, and a proposed team for a set of tasks (the seed's `TeamBuilder`).
//!
//! An agent's concurrency limit is its registration metadata's `max_concurrent_tasks` (the seed's
//! field), else [`AGENT_CONCURRENCY_DEFAULT`]; its load is the queue tasks it holds now.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_ledger::{Outcome, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::agents::Agent;
use crate::state::State;

/// Tasks an agent works on at once when its registration does not say.
pub const AGENT_CONCURRENCY_DEFAULT: u32 = 1;
/// How much an agent's score owes to its record and to its free capacity; they sum to 1.
pub const PERFORMANCE_WEIGHT: f64 = 0.7;
pub const AVAILABILITY_WEIGHT: f64 = 0.3;
/// Most tasks one team plan may hold.
pub const TEAM_TASKS_MAX: usize = 1_000;

/// A live agent that has a capability (or specialisation), with why it ranks where it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RankedAgent {
    pub agent: String,
    pub role: String,
    pub capabilities: Vec<String>,
    /// 0..=1: [`PERFORMANCE_WEIGHT`] × performance + [`AVAILABILITY_WEIGHT`] × availability.
    pub score: f64,
    /// Smoothed success rate, (successes + 1) / (finished + 2): an agent with no record is 0.5.
    pub performance: f64,
    /// Finished stages and tasks the performance is over (relevant ones when there are any).
    pub finished: usize,
    pub successes: usize,
    /// Free share of its concurrency limit, 0..=1.
    pub availability: f64,
    pub load: u32,
    pub max_concurrent_tasks: u32,
}

/// One task to staff: what it needs, how urgent it is, and what must finish before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamTask {
    pub id: String,
    /// Every one of these must be among the agent's capabilities.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// Higher first among tasks that can start together.
    #[serde(default)]
    pub priority: i64,
    /// Ids of tasks in the same plan that must finish first.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Assignment {
    pub task: String,
    pub agent: String,
    /// 1 for tasks that can start now; a task's wave is one after its latest dependency's.
    pub wave: u32,
    pub score: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unassigned {
    pub task: String,
    pub wave: u32,
    pub reason: String,
}

/// A proposal: nothing is claimed or recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TeamPlan {
    pub assignments: Vec<Assignment>,
    pub unassigned: Vec<Unassigned>,
    /// Distinct agents in the plan.
    pub team: Vec<String>,
}

fn concurrency_limit(agent: &Agent) -> u32 {
    agent.metadata.to_value()["max_concurrent_tasks"]
        .as_u64()
        .map_or(AGENT_CONCURRENCY_DEFAULT, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        })
}

fn has_all(agent: &Agent, capabilities: &[String]) -> bool {
    capabilities.iter().all(|c| agent.capabilities.contains(c))
}

/// Every agent's record, read from the facts in one pass (so a team plan of many tasks costs
/// one pass, not one per task): successes and finished runs overall and per label (a stage's
/// tags; a task's tags and required capabilities).
pub(super) struct Records<'a> {
    by_agent: BTreeMap<&'a str, AgentRecord<'a>>,
}

#[derive(Default)]
struct AgentRecord<'a> {
    all: (usize, usize),
    by_label: BTreeMap<&'a str, (usize, usize)>,
}

impl<'a> Records<'a> {
    pub(super) fn of(state: &'a State) -> Self {
        let mut by_agent: BTreeMap<&str, AgentRecord> = BTreeMap::new();
        let mut tally = |agent: &'a str, success: bool, labels: BTreeSet<&'a str>| {
            let record = by_agent.entry(agent).or_default();
            record.all.1 += 1;
            record.all.0 += usize::from(success);
            for label in labels {
                let entry = record.by_label.entry(label).or_default();
                entry.1 += 1;
                entry.0 += usize::from(success);
            }
        };
        for run in &state.facts.stage_runs {
            if run.outcome != Outcome::Unknown {
                let labels = run.tags.iter().map(String::as_str).collect();
                tally(&run.agent, run.outcome == Outcome::Success, labels);
            }
        }
        for run in &state.facts.task_runs {
            let labels = run
                .tags
                .iter()
                .chain(&run.capabilities)
                .map(String::as_str)
                .collect();
            tally(&run.agent, run.success, labels);
        }
        Records { by_agent }
    }

    /// (successes, finished) of `agent` on work labelled with any of `capabilities` (summed
    /// per capability), or on all its work when none is.
    fn of_agent(&self, agent: &str, capabilities: &[String]) -> (usize, usize) {
        let Some(record) = self.by_agent.get(agent) else {
            return (0, 0);
        };
        let relevant = capabilities
            .iter()
            .filter_map(|c| record.by_label.get(c.as_str()))
            .fold((0, 0), |sum, (s, n)| (sum.0 + s, sum.1 + n));
        match relevant.1 {
            0 => record.all,
            _ => relevant,
        }
    }
}

/// Live agents with every capability in `capabilities` (and, when given, a `specialization`
/// among their capabilities or equal to their role), best first; ties by id.
pub fn rank_agents(
    state: &State,
    capabilities: &[String],
    specialization: Option<&str>,
    now: Timestamp,
) -> Vec<RankedAgent> {
    rank_with(
        &Records::of(state),
        state,
        capabilities,
        specialization,
        now,
    )
}

fn rank_with(
    records: &Records<'_>,
    state: &State,
    capabilities: &[String],
    specialization: Option<&str>,
    now: Timestamp,
) -> Vec<RankedAgent> {
    let mut ranked: Vec<RankedAgent> = state
        .agents
        .active(now)
        .into_iter()
        .filter(|agent| has_all(agent, capabilities))
        .filter(|agent| {
            specialization.is_none_or(|special| {
                agent.role == special || agent.capabilities.iter().any(|c| c == special)
            })
        })
        .map(|agent| {
            let (successes, finished) = records.of_agent(&agent.id, capabilities);
            let performance = (successes as f64 + 1.0) / (finished as f64 + 2.0);
            let limit = concurrency_limit(agent);
            let load = u32::try_from(state.queue.claimed_by(&agent.id).count()).unwrap_or(u32::MAX);
            let availability = match limit {
                0 => 0.0,
                limit => f64::from(limit.saturating_sub(load)) / f64::from(limit),
            };
            RankedAgent {
                agent: agent.id.clone(),
                role: agent.role.clone(),
                capabilities: agent.capabilities.clone(),
                score: PERFORMANCE_WEIGHT * performance + AVAILABILITY_WEIGHT * availability,
                performance,
                finished,
                successes,
                availability,
                load,
                max_concurrent_tasks: limit,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.agent.cmp(&b.agent)));
    ranked
}

/// Each task's wave: 1 without dependencies, else one more than its latest dependency's.
fn waves(tasks: &[TeamTask]) -> Result<BTreeMap<&str, u32>, Error> {
    let ids: BTreeSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    for task in tasks {
        if let Some(missing) = task.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
            return Err(Error::UnknownDependency {
                task: task.id.clone(),
                missing: missing.clone(),
            });
        }
    }
    let mut waves: BTreeMap<&str, u32> = BTreeMap::new();
    // Kahn's order: each round places the tasks whose dependencies are all placed.
    while waves.len() < tasks.len() {
        let placed = waves.len();
        for task in tasks {
            if waves.contains_key(task.id.as_str()) {
                continue;
            }
            let deps: Option<Vec<u32>> = task
                .depends_on
                .iter()
                .map(|d| waves.get(d.as_str()).copied())
                .collect();
            if let Some(deps) = deps {
                waves.insert(&task.id, deps.into_iter().max().unwrap_or(0) + 1);
            }
        }
        if waves.len() == placed {
            let stuck = tasks
                .iter()
                .filter(|t| !waves.contains_key(t.id.as_str()))
                .map(|t| t.id.clone())
                .collect();
            return Err(Error::DependencyCycle(stuck));
        }
    }
    Ok(waves)
}

/// Proposes who does what: tasks in waves (dependencies first), within a wave by priority, each
/// to the best-ranked live agent with every required capability and a free slot in that wave
/// (its concurrency limit less the tasks it holds now and those already given it in the wave).
pub fn assemble_team(state: &State, tasks: &[TeamTask], now: Timestamp) -> Result<TeamPlan, Error> {
    if tasks.len() > TEAM_TASKS_MAX {
        return Err(Error::TooManyTasks {
            count: tasks.len(),
            max: TEAM_TASKS_MAX,
        });
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = tasks.iter().find(|t| !seen.insert(t.id.as_str())) {
        return Err(Error::DuplicateTask(twice.id.clone()));
    }
    let waves = waves(tasks)?;
    let records = Records::of(state);
    let mut order: Vec<&TeamTask> = tasks.iter().collect();
    order.sort_by_key(|t| (waves[t.id.as_str()], std::cmp::Reverse(t.priority)));
    let mut given: BTreeMap<(u32, String), u32> = BTreeMap::new();
    let mut plan = TeamPlan {
        assignments: Vec::new(),
        unassigned: Vec::new(),
        team: Vec::new(),
    };
    for task in order {
        let wave = waves[task.id.as_str()];
        let ranked = rank_with(&records, state, &task.required_capabilities, None, now);
        let free = ranked.iter().find(|candidate| {
            let taken = given
                .get(&(wave, candidate.agent.clone()))
                .copied()
                .unwrap_or(0);
            candidate.load + taken < candidate.max_concurrent_tasks
        });
        match free {
            Some(candidate) => {
                *given.entry((wave, candidate.agent.clone())).or_default() += 1;
                plan.assignments.push(Assignment {
                    task: task.id.clone(),
                    agent: candidate.agent.clone(),
                    wave,
                    score: candidate.score,
                });
            }
            None => plan.unassigned.push(Unassigned {
                task: task.id.clone(),
                wave,
                reason: match ranked.is_empty() {
                    true => format!(
                        "no live agent has every capability of {:?}",
                        task.required_capabilities
                    ),
                    false => format!(
                        "all {} capable agent(s) are at their concurrency limit in wave {wave}",
                        ranked.len()
                    ),
                },
            }),
        }
    }
    let team: BTreeSet<String> = plan.assignments.iter().map(|a| a.agent.clone()).collect();
    plan.team = team.into_iter().collect();
    Ok(plan)
}
