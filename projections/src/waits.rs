//! Requests parked until something happens: lock waits, claim waits, signal receives and
//! approval waits. Each wait sits on one key (a resource, the queue, one agent's signals, one
//! approval) in arrival order, and in one deadline index.
//!
//! Invariants:
//! - cost follows what changed: the machine re-examines only the keys its events touched, and
//!   finds due waits through the deadline index, never by scanning every wait.
//! - a wait belongs to its caller: a caller that went away (its [`Reply`] reports it gone) is
//!   never served, and its wait is removed when the caller's guard says so or the key is next
//!   looked at; ghosts never count against a key's bound.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;

use fleetlog_ledger::Timestamp;

use crate::command::CommandError;
use crate::machine::Reply;
use crate::signals::SignalFilter;

/// Most requests that may wait on one key (a lock's resource, an approval, the queue, the
/// signals of one agent) at once.
pub const WAITERS_PER_KEY_MAX: usize = 1024;

pub(crate) struct Waiter<T> {
    id: u64,
    pub agent: String,
    pub since: Timestamp,
    deadline: Timestamp,
    pub reply: Reply,
    pub wants: T,
}

pub(crate) struct LockWant {
    pub ttl_ms: u64,
    pub intent: String,
    /// Any free slot of a counting semaphore of this many slots (the key is its `slots_key`).
    pub slots: Option<u32>,
}

pub(crate) struct ClaimWant {
    pub tags: Vec<String>,
    pub tag_match: crate::queue::TagMatch,
    /// Only this task (claim by id).
    pub task: Option<u64>,
    pub lease_ttl_ms: u64,
}

pub(crate) struct SignalWant {
    pub filter: SignalFilter,
    pub consume: bool,
    /// Acknowledged delivery: the signal stays the receiver's for this long, until acknowledged.
    pub ack_ms: Option<u64>,
}

/// An approval wait wants nothing but the decision.
pub(crate) struct ApprovalWant;

/// A kind of wait: the lane it sits in, and what its key is.
pub(crate) trait Want: Sized {
    type Key: Hash + Eq + Clone;
    fn lane(waits: &mut Waits) -> &mut Lane<Self::Key, Self>;
    fn index_key(key: &Self::Key) -> Key;
    /// The key as a refusal names it.
    fn describe(key: &Self::Key) -> String;
}

impl Want for LockWant {
    type Key = String;
    fn lane(waits: &mut Waits) -> &mut Lane<String, LockWant> {
        &mut waits.locks
    }
    fn index_key(resource: &String) -> Key {
        Key::Lock(resource.clone())
    }
    fn describe(resource: &String) -> String {
        format!("lock {resource:?}")
    }
}

impl Want for ClaimWant {
    type Key = ();
    fn lane(waits: &mut Waits) -> &mut Lane<(), ClaimWant> {
        &mut waits.claims
    }
    fn index_key(_: &()) -> Key {
        Key::Queue
    }
    fn describe(_: &()) -> String {
        "the task queue".to_owned()
    }
}

impl Want for SignalWant {
    type Key = String;
    fn lane(waits: &mut Waits) -> &mut Lane<String, SignalWant> {
        &mut waits.signals
    }
    fn index_key(agent: &String) -> Key {
        Key::Signals(agent.clone())
    }
    fn describe(agent: &String) -> String {
        format!("the signals of {agent:?}")
    }
}

impl Want for ApprovalWant {
    type Key = u64;
    fn lane(waits: &mut Waits) -> &mut Lane<u64, ApprovalWant> {
        &mut waits.approvals
    }
    fn index_key(approval: &u64) -> Key {
        Key::Approval(*approval)
    }
    fn describe(approval: &u64) -> String {
        format!("approval {approval}")
    }
}

/// Which queue of waits a deadline belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Lock(String),
    Queue,
    Signals(String),
    Approval(u64),
}

/// Waits in arrival order per key.
pub(crate) struct Lane<K, T> {
    queues: HashMap<K, VecDeque<Waiter<T>>>,
}

impl<K: Hash + Eq + Clone, T> Default for Lane<K, T> {
    fn default() -> Self {
        Lane {
            queues: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> Lane<K, T> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Drops the waits on `key` whose callers are gone; returns their ids.
    fn prune_key(&mut self, key: &K) -> Vec<(Timestamp, u64)> {
        let Some(queue) = self.queues.get_mut(key) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        queue.retain(|waiter| {
            let keep = !waiter.reply.is_gone();
            if !keep {
                gone.push((waiter.deadline, waiter.id));
            }
            keep
        });
        if queue.is_empty() {
            self.queues.remove(key);
        }
        gone
    }

    fn prune_all(&mut self) -> Vec<(Timestamp, u64)> {
        let keys: Vec<K> = self.queues.keys().cloned().collect();
        keys.iter().flat_map(|key| self.prune_key(key)).collect()
    }

    fn remove(&mut self, key: &K, id: u64) -> Option<Waiter<T>> {
        let queue = self.queues.get_mut(key)?;
        let index = queue.iter().position(|waiter| waiter.id == id)?;
        let waiter = queue.remove(index);
        if queue.is_empty() {
            self.queues.remove(key);
        }
        waiter
    }

    fn take(&mut self, key: &K) -> VecDeque<Waiter<T>> {
        self.queues.remove(key).unwrap_or_default()
    }

    fn pop_front(&mut self, key: &K) -> Option<Waiter<T>> {
        let queue = self.queues.get_mut(key)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(key);
        }
        waiter
    }

    /// Puts back waits still waiting, ahead of any that arrived meanwhile.
    fn restore(&mut self, key: K, mut kept: VecDeque<Waiter<T>>) {
        if kept.is_empty() {
            return;
        }
        if let Some(newer) = self.queues.remove(&key) {
            kept.extend(newer);
        }
        self.queues.insert(key, kept);
    }

    fn drain(&mut self) -> impl Iterator<Item = Waiter<T>> {
        std::mem::take(&mut self.queues).into_values().flatten()
    }
}

/// Every parked request.
#[derive(Default)]
pub(crate) struct Waits {
    next_id: u64,
    locks: Lane<String, LockWant>,
    claims: Lane<(), ClaimWant>,
    signals: Lane<String, SignalWant>,
    approvals: Lane<u64, ApprovalWant>,
    /// (deadline, id) → where the wait sits.
    deadlines: BTreeMap<(Timestamp, u64), Key>,
}

/// A wait that could not be parked: its reply, handed back, and why.
pub(crate) type Refused = Box<(Reply, CommandError)>;

/// A wait whose deadline passed: its reply, and when it started.
pub(crate) struct TimedOut {
    pub reply: Reply,
    pub since: Timestamp,
}

impl Waits {
    pub fn count(&self) -> usize {
        self.deadlines.len()
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    pub fn claims_waiting(&self) -> bool {
        !self.claims.queues.is_empty()
    }

    fn forget(&mut self, gone: Vec<(Timestamp, u64)>) {
        for entry in gone {
            self.deadlines.remove(&entry);
        }
    }

    /// Removes every wait whose caller went away.
    pub fn prune_gone(&mut self) {
        let mut gone = self.locks.prune_all();
        gone.extend(self.claims.prune_all());
        gone.extend(self.signals.prune_all());
        gone.extend(self.approvals.prune_all());
        self.forget(gone);
    }

    fn ticket(
        &mut self,
        key: Key,
        agent: String,
        now: Timestamp,
        wait_ms: u64,
        reply: Reply,
    ) -> (u64, String, Timestamp, Timestamp, Reply) {
        self.next_id += 1;
        let deadline = now.plus_millis(wait_ms);
        self.deadlines.insert((deadline, self.next_id), key);
        (self.next_id, agent, now, deadline, reply)
    }

    /// Parks a wait on `key` behind those already there, unless the key is full (waits whose
    /// callers left are dropped first, so they never count).
    pub fn park<W: Want>(
        &mut self,
        key: W::Key,
        agent: String,
        now: Timestamp,
        wait_ms: u64,
        reply: Reply,
        wants: W,
    ) -> Result<(), Refused> {
        let gone = W::lane(self).prune_key(&key);
        self.forget(gone);
        let waiting = W::lane(self).queues.get(&key).map_or(0, VecDeque::len);
        if let Err(error) = room(waiting, || W::describe(&key)) {
            return Err(Box::new((reply, error)));
        }
        let parked = self.ticket(W::index_key(&key), agent, now, wait_ms, reply);
        W::lane(self)
            .queues
            .entry(key)
            .or_default()
            .push_back(waiter(parked, wants));
        Ok(())
    }

    /// Removes and returns every wait whose deadline is at or before `now`, earliest first.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<TimedOut> {
        let mut due = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            let (deadline, id) = *entry.key();
            if deadline > now {
                break;
            }
            let key = entry.remove();
            let taken = match &key {
                Key::Lock(resource) => self.locks.remove(resource, id).map(timed_out),
                Key::Queue => self.claims.remove(&(), id).map(timed_out),
                Key::Signals(agent) => self.signals.remove(agent, id).map(timed_out),
                Key::Approval(approval) => self.approvals.remove(approval, id).map(timed_out),
            };
            due.extend(taken);
        }
        due
    }

    /// The first wait for `resource`, removed; callers that went away are dropped on the way.
    pub fn next_lock_waiter(&mut self, resource: &str) -> Option<Waiter<LockWant>> {
        let resource = resource.to_owned();
        while let Some(waiter) = self.locks.pop_front(&resource) {
            self.deadlines.remove(&(waiter.deadline, waiter.id));
            if !waiter.reply.is_gone() {
                return Some(waiter);
            }
        }
        None
    }

    /// What the first wait for `resource` wants, waits whose callers left dropped first.
    pub fn first_lock_want(&mut self, resource: &str) -> Option<&LockWant> {
        let resource = resource.to_owned();
        let gone = self.locks.prune_key(&resource);
        self.forget(gone);
        self.locks
            .queues
            .get(&resource)
            .and_then(VecDeque::front)
            .map(|waiter| &waiter.wants)
    }

    /// Takes the claim waits out to be examined; [`Waits::restore_claims`] puts back the rest.
    pub fn take_claims(&mut self) -> VecDeque<Waiter<ClaimWant>> {
        self.claims.take(&())
    }

    pub fn restore_claims(&mut self, kept: VecDeque<Waiter<ClaimWant>>) {
        self.claims.restore((), kept);
    }

    pub fn take_signals(&mut self, agent: &str) -> VecDeque<Waiter<SignalWant>> {
        self.signals.take(&agent.to_owned())
    }

    pub fn restore_signals(&mut self, agent: String, kept: VecDeque<Waiter<SignalWant>>) {
        self.signals.restore(agent, kept);
    }

    pub fn signal_agents(&self) -> Vec<String> {
        self.signals.queues.keys().cloned().collect()
    }

    pub fn take_approval(&mut self, approval: u64) -> VecDeque<Waiter<ApprovalWant>> {
        self.approvals.take(&approval)
    }

    /// A wait taken out for examination was served or dropped: forget its deadline.
    pub fn finished<T>(&mut self, waiter: &Waiter<T>) {
        self.deadlines.remove(&(waiter.deadline, waiter.id));
    }

    /// Every reply still held, for shutdown.
    pub fn drain(&mut self) -> Vec<Reply> {
        self.deadlines.clear();
        let mut replies: Vec<Reply> = self.locks.drain().map(|w| w.reply).collect();
        replies.extend(self.claims.drain().map(|w| w.reply));
        replies.extend(self.signals.drain().map(|w| w.reply));
        replies.extend(self.approvals.drain().map(|w| w.reply));
        replies
    }

    #[cfg(test)]
    fn lanes_len(&self) -> usize {
        self.locks.len() + self.claims.len() + self.signals.len() + self.approvals.len()
    }
}

fn waiter<T>(
    (id, agent, since, deadline, reply): (u64, String, Timestamp, Timestamp, Reply),
    wants: T,
) -> Waiter<T> {
    Waiter {
        id,
        agent,
        since,
        deadline,
        reply,
        wants,
    }
}

fn timed_out<T>(waiter: Waiter<T>) -> TimedOut {
    TimedOut {
        reply: waiter.reply,
        since: waiter.since,
    }
}

/// Refuses a wait when `waiting` live requests already wait on the same key.
fn room(waiting: usize, what: impl FnOnce() -> String) -> Result<(), CommandError> {
    match waiting >= WAITERS_PER_KEY_MAX {
        true => Err(CommandError::TooManyWaiters {
            what: what(),
            limit: WAITERS_PER_KEY_MAX,
        }),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn reply(gone: &Arc<AtomicBool>) -> Reply {
        let gone = Arc::clone(gone);
        Reply::watched(|_| {}, move || gone.load(Ordering::Relaxed))
    }

    fn want() -> SignalWant {
        SignalWant {
            filter: SignalFilter::default(),
            consume: true,
            ack_ms: None,
        }
    }

    #[test]
    fn waits_of_callers_that_went_away_do_not_count_against_the_bound() {
        let mut waits = Waits::default();
        let gone = Arc::new(AtomicBool::new(false));
        let now = Timestamp::from_micros(1_000_000);
        for _ in 0..WAITERS_PER_KEY_MAX {
            let parked = waits.park("a".into(), "a".into(), now, 60_000, reply(&gone), want());
            assert!(parked.is_ok());
        }
        let live = Arc::new(AtomicBool::new(false));
        let refused = waits.park("a".into(), "a".into(), now, 60_000, reply(&live), want());
        let refused = refused.err().map(|refused| refused.1);
        assert!(matches!(refused, Some(CommandError::TooManyWaiters { .. })));
        gone.store(true, Ordering::Relaxed);
        let parked = waits.park("a".into(), "a".into(), now, 60_000, reply(&live), want());
        assert!(parked.is_ok());
        assert_eq!(waits.count(), 1);
        assert_eq!(waits.lanes_len(), 1);
    }

    #[test]
    fn due_waits_leave_in_deadline_order_and_only_them() {
        let mut waits = Waits::default();
        let present = Arc::new(AtomicBool::new(false));
        let now = Timestamp::from_micros(1_000_000);
        for (agent, wait_ms) in [("a", 30), ("b", 10), ("c", 20)] {
            let parked = waits.park(
                agent.into(),
                agent.into(),
                now,
                wait_ms,
                reply(&present),
                want(),
            );
            assert!(parked.is_ok());
        }
        let due = waits.take_due(now.plus_millis(20));
        assert_eq!(due.len(), 2);
        assert_eq!(waits.count(), 1);
        assert_eq!(waits.take_signals("a").len(), 1);
        assert_eq!(waits.next_deadline(), Some(now.plus_millis(30)));
    }

    #[test]
    fn pruning_removes_deadlines_of_gone_callers() {
        let mut waits = Waits::default();
        let gone = Arc::new(AtomicBool::new(false));
        let now = Timestamp::from_micros(1_000_000);
        let parked = waits.park(7, "a".into(), now, 1_000, reply(&gone), ApprovalWant);
        assert!(parked.is_ok());
        gone.store(true, Ordering::Relaxed);
        waits.prune_gone();
        assert_eq!(waits.count(), 0);
        assert_eq!(waits.next_deadline(), None);
    }
}
