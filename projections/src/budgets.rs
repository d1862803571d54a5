//! Daily spending limits beyond one workflow's budget: per agent and fleet-wide, per UTC day of
//! the time the cost occurred (ledger time for live stages, the original time for imported
//! ones). The breaker in the machine refuses stages while a limit that applies is exceeded.

use std::collections::BTreeMap;

use crate::command::CommandError;
use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Record, Timestamp};
use serde::{Deserialize, Serialize};

const DAY_MICROS: i64 = 24 * 3_600 * 1_000_000;

/// Days since 1970-01-01 (UTC) of `at`.
pub fn day_of(at: Timestamp) -> i64 {
    at.as_micros().div_euclid(DAY_MICROS)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i64) -> String {
    Timestamp(day.saturating_mul(DAY_MICROS))
        .to_datetime()
        .map_or_else(|| day.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Budgets {
    /// Agent → its daily limit in USD.
    pub agent_daily_usd: BTreeMap<String, f64>,
    pub fleet_daily_usd: Option<f64>,
    /// (day, agent) → spent that day.
    pub agent_spent: BTreeMap<(i64, String), f64>,
    /// Day → spent by the whole fleet.
    pub fleet_spent: BTreeMap<i64, f64>,
}

/// One limit that applies, and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitStatus {
    /// The agent, or `None` for the fleet.
    pub spender: Option<String>,
    pub limit_usd: f64,
    pub spent_usd: f64,
}

impl LimitStatus {
    pub fn exceeded(&self) -> bool {
        self.spent_usd > self.limit_usd
    }
}

impl Budgets {
    pub(crate) fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::SpendLimitSet { spender, limit_usd } => match (spender, limit_usd) {
                (Some(agent), Some(limit)) => {
                    self.agent_daily_usd.insert(agent.clone(), *limit);
                }
                (Some(agent), None) => {
                    self.agent_daily_usd.remove(agent);
                }
                (None, limit) => self.fleet_daily_usd = *limit,
            },
            Event::StageCompleted {
                agent,
                cost_usd,
                occurred_at,
                ..
            } if *cost_usd > 0.0 => {
                let day = day_of(occurred_at.unwrap_or(record.ts));
                *self.agent_spent.entry((day, agent.clone())).or_default() += cost_usd;
                *self.fleet_spent.entry(day).or_default() += cost_usd;
            }
            _ => {}
        }
    }

    /// The limits that apply to `agent` spending on `day`: its own, and the fleet's.
    pub fn limits_for(&self, agent: &str, day: i64) -> Vec<LimitStatus> {
        let own = self.agent_daily_usd.get(agent).map(|limit| LimitStatus {
            spender: Some(agent.to_owned()),
            limit_usd: *limit,
            spent_usd: self.spent_by(agent, day),
        });
        let fleet = self.fleet_daily_usd.map(|limit| LimitStatus {
            spender: None,
            limit_usd: limit,
            spent_usd: self.fleet_spent.get(&day).copied().unwrap_or(0.0),
        });
        own.into_iter().chain(fleet).collect()
    }

    pub fn spent_by(&self, agent: &str, day: i64) -> f64 {
        self.agent_spent
            .get(&(day, agent.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every limit set, with what was spent on `day`.
    pub fn statuses(&self, day: i64) -> Vec<LimitStatus> {
        let agents = self.agent_daily_usd.keys().map(|agent| LimitStatus {
            spender: Some(agent.clone()),
            limit_usd: self.agent_daily_usd[agent],
            spent_usd: self.spent_by(agent, day),
        });
        let fleet = self.fleet_daily_usd.map(|limit| LimitStatus {
            spender: None,
            limit_usd: limit,
            spent_usd: self.fleet_spent.get(&day).copied().unwrap_or(0.0),
        });
        agents.chain(fleet).collect()
    }
}

/// A daily spending limit (USD per UTC day) for one agent (`spender`) or, without one, for
/// the whole fleet; `limit_usd: null` removes it. Stages are refused while one is exceeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSpendLimit {
    pub agent: String,
    #[serde(default)]
    pub spender: Option<String>,
    pub limit_usd: Option<f64>,
}

impl Budgets {
    /// The daily limits of `agent` and of the fleet: refused while either is exceeded today.
    pub(crate) fn check_limits(&self, agent: &str, now: Timestamp) -> Result<(), CommandError> {
        let day = day_of(now);
        match self
            .limits_for(agent, day)
            .into_iter()
            .find(LimitStatus::exceeded)
        {
            None => Ok(()),
            Some(limit) => Err(CommandError::OverSpendLimit {
                spender: limit.spender,
                day: day_name(day),
                limit_usd: limit.limit_usd,
                spent_usd: limit.spent_usd,
            }),
        }
    }
}
