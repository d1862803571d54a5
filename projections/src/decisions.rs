//! Logged decisions: why an agent chose what it chose, queryable by agent, type and time.

use bincode::{Decode, Encode};

use crate::history::History;
use fleetlog_ledger::{Event, Json, Record, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    pub seq: u64,
    pub agent: String,
    pub at: Timestamp,
    pub decision_type: String,
    pub context: String,
    pub reason: String,
    pub alternatives: Vec<String>,
    pub metadata: Json,
}

/// Which decisions to return; `None` fields match everything. Times are `from <= at < to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionQuery {
    pub agent: Option<String>,
    pub decision_type: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Decisions {
    /// In log order. Shared, chunk by chunk, by every copy of the state.
    pub all: History<Decision>,
}

impl Decisions {
    pub(crate) fn apply(&mut self, record: &Record) {
        if let Event::DecisionLogged {
            decision_type,
            context,
            reason,
            alternatives,
            metadata,
        } = &record.event
        {
            self.all.push(Decision {
                seq: record.seq,
                agent: record.actor.clone(),
                at: record.ts,
                decision_type: decision_type.clone(),
                context: context.clone(),
                reason: reason.clone(),
                alternatives: alternatives.clone(),
                metadata: metadata.clone(),
            });
        }
    }

    pub fn query(&self, query: &DecisionQuery) -> Vec<&Decision> {
        // Decisions are in time order: skip straight to the window.
        let start = query.from.map_or(0, |from| {
            self.all.partition_point(|decision| decision.at < from)
        });
        self.all
            .iter_from(start)
            .take_while(|decision| query.to.is_none_or(|to| decision.at < to))
            .filter(|decision| {
                query
                    .agent
                    .as_ref()
                    .is_none_or(|agent| *agent == decision.agent)
            })
            .filter(|decision| {
                query
                    .decision_type
                    .as_ref()
                    .is_none_or(|kind| *kind == decision.decision_type)
            })
            .collect()
    }
}

/// Records why an agent chose what it chose, and what it passed over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDecision {
    pub agent: String,
    pub decision_type: String,
    #[serde(default)]
    pub context: String,
    pub reason: String,
    #[serde(default)]
    pub alternatives: Vec<String>,
    #[serde(default)]
    pub metadata: Json,
}

/// Appends an event of the caller's own kind, folded by no projection but kept and queryable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomEvent {
    pub agent: String,
    pub kind: String,
    #[serde(default)]
    pub payload: Json,
}
