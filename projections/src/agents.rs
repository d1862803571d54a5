//! Agents and heartbeats. An agent is alive until its last heartbeat plus its TTL; the fold
//! computes that deadline, queries compare it with `now`, and the machine records expiry.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Json, Record, Timestamp};
use serde::{Deserialize, Serialize};

/// TTL a registration grants before the first heartbeat, and a heartbeat's default.
pub const HEARTBEAT_TTL_MS_DEFAULT: u64 = 30_000;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Heartbeating (alive while `now` < its deadline).
    Active,
    /// Missed its deadline; recorded by an `agent_expired` event. A heartbeat revives it.
    Expired,
    /// Left the fleet; must register again.
    Deregistered,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Agent {
    pub id: String,
    pub role: String,
    pub name: String,
    pub working_on: String,
    pub capabilities: Vec<String>,
    pub metadata: Json,
    pub registered_at: Timestamp,
    /// The seq of the `agent_registered` record of the current registration: what the agent's
    /// credential is derived from, so each registration issues a new one.
    pub registered_seq: u64,
    pub last_heartbeat: Timestamp,
    pub ttl_ms: u64,
    pub status: String,
    pub progress: Option<f64>,
    pub current_task: Option<String>,
    /// When `progress` last changed: what "hung" is measured from.
    pub progress_changed_at: Timestamp,
    pub liveness: Liveness,
}

impl Agent {
    pub fn deadline(&self) -> Timestamp {
        self.last_heartbeat.plus_millis(self.ttl_ms)
    }

    pub fn is_alive(&self, now: Timestamp) -> bool {
        self.liveness == Liveness::Active && now < self.deadline()
    }

    /// Whether a record this agent makes at `ts` moves its deadline: it is alive, and its last
    /// sign of life is at least a granule old (the lesser of [`SIGN_OF_LIFE_GRANULE_MS`] and a
    /// tenth of its TTL). The granule keeps a busy agent from re-indexing its deadline on every
    /// record; the deadline is at most one granule earlier than the exact one.
    pub fn sign_of_life_moves(&self, ts: Timestamp) -> bool {
        let granule = SIGN_OF_LIFE_GRANULE_MS.min(self.ttl_ms / 10);
        self.is_alive(ts) && ts >= self.last_heartbeat.plus_millis(granule)
    }
}

/// How often (at most) records other than heartbeats move an agent's deadline.
pub const SIGN_OF_LIFE_GRANULE_MS: u64 = 1_000;

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Agents {
    pub by_id: BTreeMap<String, Agent>,
}

impl Agents {
    pub(crate) fn apply(&mut self, record: &Record) {
        let ts = record.ts;
        match &record.event {
            Event::AgentRegistered {
                role,
                name,
                working_on,
                capabilities,
                metadata,
            } => {
                self.by_id.insert(
                    record.actor.clone(),
                    Agent {
                        id: record.actor.clone(),
                        role: role.clone(),
                        name: name.clone(),
                        working_on: working_on.clone(),
                        capabilities: capabilities.clone(),
                        metadata: metadata.clone(),
                        registered_at: ts,
                        registered_seq: record.seq,
                        last_heartbeat: ts,
                        ttl_ms: HEARTBEAT_TTL_MS_DEFAULT,
                        status: "registered".to_owned(),
                        progress: None,
                        current_task: None,
                        progress_changed_at: ts,
                        liveness: Liveness::Active,
                    },
                );
            }
            Event::AgentHeartbeat {
                status,
                progress,
                current_task,
                metadata,
                ttl_ms,
            } => {
                if let Some(agent) = self.by_id.get_mut(&record.actor) {
                    if agent.progress != *progress {
                        agent.progress_changed_at = ts;
                    }
                    agent.last_heartbeat = ts;
                    agent.ttl_ms = *ttl_ms;
                    agent.status = status.clone();
                    agent.progress = *progress;
                    agent.current_task = current_task.clone();
                    agent.metadata = metadata.clone();
                    agent.liveness = Liveness::Active;
                }
            }
            Event::AgentDeregistered { .. } => {
                if let Some(agent) = self.by_id.get_mut(&record.actor) {
                    agent.liveness = Liveness::Deregistered;
                }
            }
            Event::AgentExpired { agent, .. } => {
                if let Some(agent) = self.by_id.get_mut(agent) {
                    agent.liveness = Liveness::Expired;
                }
            }
            // Any other record an alive agent makes is a sign of life: renewing a lock or a
            // lease keeps the agent alive without a separate heartbeat.
            _ => {
                if let Some(agent) = self.by_id.get_mut(&record.actor)
                    && agent.sign_of_life_moves(ts)
                {
                    agent.last_heartbeat = ts;
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.by_id.get(id)
    }

    /// Registered and not deregistered (alive or expired): may issue commands.
    pub fn is_member(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|agent| agent.liveness != Liveness::Deregistered)
    }

    pub fn is_alive(&self, id: &str, now: Timestamp) -> bool {
        self.by_id.get(id).is_some_and(|agent| agent.is_alive(now))
    }

    /// Agents alive at `now`, by id.
    pub fn active(&self, now: Timestamp) -> Vec<&Agent> {
        self.by_id
            .values()
            .filter(|agent| agent.is_alive(now))
            .collect()
    }

    /// Members whose last heartbeat is older than `threshold_ms` at `now`.
    pub fn stale(&self, now: Timestamp, threshold_ms: u64) -> Vec<&Agent> {
        self.by_id
            .values()
            .filter(|agent| {
                agent.liveness != Liveness::Deregistered
                    && agent.last_heartbeat.plus_millis(threshold_ms) < now
            })
            .collect()
    }

    /// Alive agents whose progress has not changed for `threshold_ms` at `now`.
    pub fn hung(&self, now: Timestamp, threshold_ms: u64) -> Vec<&Agent> {
        self.by_id
            .values()
            .filter(|agent| {
                agent.is_alive(now) && agent.progress_changed_at.plus_millis(threshold_ms) < now
            })
            .collect()
    }
}

/// Joins the fleet (or comes back): who the agent is, its role and what it can do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub agent: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub working_on: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub metadata: Json,
}

/// A sign of life. Fields left out keep their last value (`current_task: ""` clears it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub agent: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub current_task: Option<String>,
    #[serde(default)]
    pub metadata: Option<Json>,
    #[serde(default = "heartbeat_ttl_default")]
    pub ttl_ms: u64,
}

/// Leaves the fleet: what the agent holds is released, each release recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deregister {
    pub agent: String,
    #[serde(default)]
    pub reason: String,
}

fn heartbeat_ttl_default() -> u64 {
    crate::agents::HEARTBEAT_TTL_MS_DEFAULT
}

impl Agents {
    /// A heartbeat's event: what is left out keeps its last value, and the event records the
    /// whole picture (so replay needs no defaults).
    pub(crate) fn heartbeat_event(&self, heartbeat: Heartbeat) -> Event {
        let Heartbeat {
            agent,
            status,
            progress,
            current_task,
            metadata,
            ttl_ms,
        } = heartbeat;
        let last = self.get(&agent);
        Event::AgentHeartbeat {
            status: status
                .or_else(|| last.map(|last| last.status.clone()))
                .unwrap_or_default(),
            progress: progress.or_else(|| last.and_then(|last| last.progress)),
            current_task: match current_task {
                Some(task) if task.is_empty() => None,
                Some(task) => Some(task),
                None => last.and_then(|last| last.current_task.clone()),
            },
            metadata: metadata
                .or_else(|| last.map(|last| last.metadata.clone()))
                .unwrap_or_else(fleetlog_ledger::Json::null),
            ttl_ms,
        }
    }
}
