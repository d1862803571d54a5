//! Locks on named resources. A lock's fencing token is the seq of the `lock_acquired` record that
//! granted it, so tokens strictly increase per resource with no extra state. A lock is held until
//! released by its holder, or until `expires_at` (then anyone may take it over).

use std::collections::BTreeMap;

use crate::command::CommandError;
use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Record, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Lock {
    pub resource: String,
    pub holder: String,
    pub token: u64,
    pub intent: String,
    pub requested_at: Timestamp,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Lock {
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Locks {
    /// Granted and not released or expired by an event (may be past `expires_at`: see `live`).
    pub held: BTreeMap<String, Lock>,
    /// The token of a lock that expired and has not been granted again since: the next grant
    /// records that it takes it over.
    pub expired: BTreeMap<String, u64>,
}

/// Most slots one counting semaphore may have.
pub const SEMAPHORE_SLOTS_MAX: u32 = 1_024;

/// The lock that is slot `slot` of the counting semaphore `resource`.
pub fn slot_resource(resource: &str, slot: u32) -> String {
    format!("{resource}/slot-{slot}")
}

/// Where waits for any slot of the semaphore `resource` queue (not a lockable name itself).
pub fn slots_key(resource: &str) -> String {
    format!("{resource}/slot-*")
}

/// The semaphore a slot lock belongs to (`llm` for `llm/slot-3`).
pub fn semaphore_of(resource: &str) -> Option<&str> {
    let (name, slot) = resource.rsplit_once("/slot-")?;
    slot.parse::<u32>().ok().map(|_| name)
}

impl Locks {
    /// The first free slot of the `slots`-slot semaphore `resource` at `now`.
    pub fn free_slot(&self, resource: &str, slots: u32, now: Timestamp) -> Option<u32> {
        (0..slots).find(|slot| self.live(&slot_resource(resource, *slot), now).is_none())
    }

    /// Who holds the slots of the semaphore `resource` at `now`, by slot.
    pub fn slot_holders(&self, resource: &str, slots: u32, now: Timestamp) -> Vec<String> {
        (0..slots)
            .filter_map(|slot| self.live(&slot_resource(resource, slot), now))
            .map(|lock| lock.holder.clone())
            .collect()
    }

    pub(crate) fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::LockAcquired {
                resource,
                intent,
                ttl_ms,
                requested_at,
                ..
            } => {
                self.expired.remove(resource);
                self.held.insert(
                    resource.clone(),
                    Lock {
                        resource: resource.clone(),
                        holder: record.actor.clone(),
                        token: record.seq,
                        intent: intent.clone(),
                        requested_at: *requested_at,
                        acquired_at: record.ts,
                        expires_at: record.ts.plus_millis(*ttl_ms),
                    },
                );
            }
            Event::LockRenewed {
                resource,
                token,
                ttl_ms,
            } => {
                if let Some(lock) = self.held.get_mut(resource)
                    && lock.token == *token
                {
                    lock.expires_at = record.ts.plus_millis(*ttl_ms);
                }
            }
            Event::LockReleased { resource, token }
                if self
                    .held
                    .get(resource)
                    .is_some_and(|lock| lock.token == *token) =>
            {
                self.held.remove(resource);
            }
            Event::LockExpired {
                resource, token, ..
            } if self
                .held
                .get(resource)
                .is_some_and(|lock| lock.token == *token) =>
            {
                self.held.remove(resource);
                self.expired.insert(resource.clone(), *token);
            }
            _ => {}
        }
    }

    /// The lock on `resource` if it is held at `now`.
    pub fn live(&self, resource: &str, now: Timestamp) -> Option<&Lock> {
        self.held.get(resource).filter(|lock| lock.is_live(now))
    }

    /// Every lock held at `now`, by resource.
    pub fn list(&self, now: Timestamp) -> Vec<&Lock> {
        self.held
            .values()
            .filter(|lock| lock.is_live(now))
            .collect()
    }

    /// Whether `token` is the current, unexpired token for `resource`: what a resource outside
    /// the ledger checks before accepting a write.
    pub fn token_is_current(&self, resource: &str, token: u64, now: Timestamp) -> bool {
        self.live(resource, now)
            .is_some_and(|lock| lock.token == token)
    }

    pub fn held_by<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a Lock> + 'a {
        self.held.values().filter(move |lock| lock.holder == agent)
    }
}

/// Takes `resource` for `ttl_ms`; the grant's fencing token is its record's seq.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireLock {
    pub agent: String,
    pub resource: String,
    pub ttl_ms: u64,
    #[serde(default)]
    pub intent: String,
    /// Wait in FIFO order up to this long while another agent holds it.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// A counting semaphore: up to this many holders of `resource` at once (e.g. LLM rate
    /// slots). The grant is a lock on one free slot, `<resource>/slot-<i>`, renewed and
    /// released by that name and its token like any lock. Give the same count everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
}

/// The holder extends its lock (named by its token) to `ttl_ms` from now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLock {
    pub agent: String,
    pub resource: String,
    pub token: u64,
    pub ttl_ms: u64,
}

/// The holder gives its lock up (named by its token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLock {
    pub agent: String,
    pub resource: String,
    pub token: u64,
}

impl Locks {
    /// Whether `agent` holds `resource` now, under `token`.
    pub(crate) fn check_holder(
        &self,
        agent: &str,
        resource: &str,
        token: u64,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let lock = self
            .live(resource, now)
            .ok_or_else(|| CommandError::NotLocked {
                resource: resource.to_owned(),
            })?;
        if lock.holder != agent {
            return Err(CommandError::NotHolder {
                resource: resource.to_owned(),
                holder: lock.holder.clone(),
            });
        }
        if lock.token != token {
            return Err(CommandError::WrongToken {
                resource: resource.to_owned(),
                given: token,
                current: lock.token,
            });
        }
        Ok(())
    }
}
