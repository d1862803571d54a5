//! Signals between agents. A targeted signal is consumed once, by its target; a broadcast is
//! consumed once per agent, so one reader never steals it from the others. A signal is visible
//! until consumed or until `sent_at + ttl`.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Json, Record, SignalTarget, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};

pub const SIGNAL_TTL_MS_DEFAULT: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Signal {
    /// The seq of its `signal_sent` record.
    pub id: u64,
    pub from: String,
    pub kind: String,
    pub target: SignalTarget,
    pub payload: Json,
    pub sent_at: Timestamp,
    pub ttl_ms: u64,
    pub correlation_id: Option<u64>,
    /// Agents that consumed their copy of a broadcast.
    #[serde(skip, default)]
    pub consumed_by: BTreeSet<String>,
    /// Acknowledged delivery: agent → the deadline by which it must acknowledge its copy.
    /// Until then nobody receives that copy; after it, the copy is receivable again.
    #[serde(skip, default)]
    pub delivered: BTreeMap<String, Timestamp>,
}

impl Signal {
    pub fn deadline(&self) -> Timestamp {
        self.sent_at.plus_millis(self.ttl_ms)
    }

    /// Whether `agent` can still see this signal at `now`.
    pub fn visible_to(&self, agent: &str, now: Timestamp) -> bool {
        now < self.deadline()
            && !self.delivered.contains_key(agent)
            && match &self.target {
                SignalTarget::Agent(target) => target == agent,
                SignalTarget::Broadcast => self.from != agent && !self.consumed_by.contains(agent),
            }
    }
}

/// Which signals a check or wait wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalFilter {
    pub kind: String,
    /// Only signals from this agent (the signal's `from`). `source` is accepted for one version.
    #[serde(default, alias = "source")]
    pub from: Option<String>,
    /// Only replies to this signal.
    #[serde(default)]
    pub correlation_id: Option<u64>,
}

impl SignalFilter {
    pub fn matches(&self, signal: &Signal) -> bool {
        signal.kind == self.kind
            && self.from.as_ref().is_none_or(|from| *from == signal.from)
            && self
                .correlation_id
                .is_none_or(|id| signal.correlation_id == Some(id))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Signals {
    /// Signals not yet consumed (targeted) or expired, by id.
    pub live: BTreeMap<u64, Signal>,
    /// Live targeted signals per recipient, for the inbox bound.
    inbox_counts: BTreeMap<String, u64>,
}

impl Signals {
    fn remove(&mut self, id: u64) {
        let Some(signal) = self.live.remove(&id) else {
            return;
        };
        if let SignalTarget::Agent(target) = signal.target
            && let Some(count) = self.inbox_counts.get_mut(&target)
        {
            *count -= 1;
            if *count == 0 {
                self.inbox_counts.remove(&target);
            }
        }
    }

    /// Live signals addressed to `agent` alone (not yet consumed or expired).
    pub fn inbox_len(&self, agent: &str) -> u64 {
        self.inbox_counts.get(agent).copied().unwrap_or(0)
    }

    /// Agents whose acknowledgement of `id` is outstanding, with their deadlines.
    pub fn delivered(&self, id: u64) -> impl Iterator<Item = (&String, &Timestamp)> {
        self.live
            .get(&id)
            .into_iter()
            .flat_map(|signal| signal.delivered.iter())
    }

    pub(crate) fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::SignalSent {
                kind,
                target,
                payload,
                ttl_ms,
                correlation_id,
            } => {
                self.live.insert(
                    record.seq,
                    Signal {
                        id: record.seq,
                        from: record.actor.clone(),
                        kind: kind.clone(),
                        target: target.clone(),
                        payload: payload.clone(),
                        sent_at: record.ts,
                        ttl_ms: *ttl_ms,
                        correlation_id: *correlation_id,
                        consumed_by: BTreeSet::new(),
                        delivered: BTreeMap::new(),
                    },
                );
                if let SignalTarget::Agent(target) = target {
                    *self.inbox_counts.entry(target.clone()).or_default() += 1;
                }
            }
            Event::SignalDelivered { signal, ack_ms } => {
                if let Some(found) = self.live.get_mut(signal) {
                    let deadline = record.ts.plus_millis(*ack_ms);
                    found.delivered.insert(record.actor.clone(), deadline);
                }
            }
            Event::SignalAckExpired { signal, agent, .. } => {
                if let Some(found) = self.live.get_mut(signal) {
                    found.delivered.remove(agent);
                }
            }
            Event::SignalConsumed { signal } | Event::SignalAcked { signal } => {
                let broadcast = match self.live.get_mut(signal) {
                    Some(found) if found.target == SignalTarget::Broadcast => {
                        found.consumed_by.insert(record.actor.clone());
                        found.delivered.remove(&record.actor);
                        true
                    }
                    _ => false,
                };
                if !broadcast {
                    self.remove(*signal);
                }
            }
            Event::SignalExpired { signal, .. } => {
                self.remove(*signal);
            }
            _ => {}
        }
    }

    /// The oldest signal `agent` can see at `now` that matches `filter`.
    pub fn first_for(&self, agent: &str, filter: &SignalFilter, now: Timestamp) -> Option<&Signal> {
        self.live
            .values()
            .find(|signal| signal.visible_to(agent, now) && filter.matches(signal))
    }

    /// Everything `agent` can see at `now`, oldest first.
    pub fn inbox(&self, agent: &str, now: Timestamp) -> Vec<&Signal> {
        self.live
            .values()
            .filter(|signal| signal.visible_to(agent, now))
            .collect()
    }
}

/// A signal to one agent (`target`) or to everyone; live for `ttl_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSignal {
    pub agent: String,
    pub kind: String,
    #[serde(default = "broadcast", deserialize_with = "target")]
    pub target: SignalTarget,
    #[serde(default)]
    pub payload: Json,
    #[serde(default = "signal_ttl_default")]
    pub ttl_ms: u64,
    #[serde(default)]
    pub correlation_id: Option<u64>,
}

/// Take (or, without `consume`, look at) the oldest matching signal; with `wait_ms`, wait
/// that long for one to be sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveSignal {
    pub agent: String,
    pub filter: SignalFilter,
    #[serde(default = "crate::command::yes")]
    pub consume: bool,
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Acknowledged delivery: the signal stays the receiver's until it sends
    /// `ack_signal`, and becomes receivable again if that does not happen within this many
    /// milliseconds. Implies `consume`. Without it, delivery is at most once.
    #[serde(default)]
    pub ack_ms: Option<u64>,
}

/// Acknowledges a signal received with `ack_ms`: it is consumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckSignal {
    pub agent: String,
    pub signal: u64,
}

fn signal_ttl_default() -> u64 {
    crate::signals::SIGNAL_TTL_MS_DEFAULT
}

fn broadcast() -> SignalTarget {
    SignalTarget::Broadcast
}

/// A signal's target in JSON: `"broadcast"`, `"*"` or null for everyone; an agent id, or
/// `{"agent": id}`, for one agent.
fn target<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SignalTarget, D::Error> {
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    enum Wire {
        Name(Option<String>),
        Tagged(SignalTarget),
    }
    Ok(match Wire::deserialize(deserializer)? {
        Wire::Name(None) => SignalTarget::Broadcast,
        Wire::Name(Some(name)) if name == "broadcast" || name == "*" => SignalTarget::Broadcast,
        Wire::Name(Some(name)) => SignalTarget::Agent(name),
        Wire::Tagged(target) => target,
    })
}
