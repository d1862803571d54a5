//! Who did what, and when: event counts by kind and by actor, and the span of time covered.
//! The overview `fleetlog stats` prints, at any point in history.

use std::collections::BTreeMap;

use fleetlog_ledger::{Record, Timestamp};

use crate::replay::Projection;

/// Counts per event kind and per actor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub events: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub last_seq: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub by_actor: BTreeMap<String, u64>,
}

/// One row of [`Activity::kinds_by_count`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindCount {
    pub kind: &'static str,
    pub count: u64,
}

impl Projection for Activity {
    fn apply(&mut self, record: &Record) {
        self.events += 1;
        self.first.get_or_insert(record.ts);
        self.last = Some(record.ts);
        self.last_seq = record.seq;
        *self.by_kind.entry(record.event.kind()).or_default() += 1;
        match self.by_actor.get_mut(record.actor.as_str()) {
            Some(count) => *count += 1,
            None => {
                self.by_actor.insert(record.actor.clone(), 1);
            }
        }
    }
}

impl Activity {
    /// Event kinds, most frequent first; ties by name so output is stable.
    pub fn kinds_by_count(&self) -> Vec<KindCount> {
        let mut kinds: Vec<KindCount> = self
            .by_kind
            .iter()
            .map(|(&kind, &count)| KindCount { kind, count })
            .collect();
        kinds.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(b.kind)));
        kinds
    }
}

#[cfg(test)]
mod tests {
    use fleetlog_ledger::{ChainHash, Event, Json};

    use super::*;

    fn record(seq: u64, ts: i64, actor: &str, event: Event) -> Record {
        Record {
            seq,
            ts: Timestamp(ts),
            actor: actor.to_owned(),
            event,
            prev: ChainHash::default(),
            hash: ChainHash::default(),
        }
    }

    #[test]
    fn counts_kinds_and_actors_and_tracks_the_time_span() {
        let custom = Event::Custom {
            kind: "note".to_owned(),
            payload: Json::null(),
        };
        let released = Event::LockReleased {
            resource: "r".to_owned(),
            token: 1,
        };
        let mut activity = Activity::default();
        activity.apply(&record(1, 10, "a", custom.clone()));
        activity.apply(&record(2, 20, "b", released.clone()));
        activity.apply(&record(3, 30, "a", released));
        assert_eq!(activity.events, 3);
        assert_eq!(activity.first, Some(Timestamp(10)));
        assert_eq!(activity.last, Some(Timestamp(30)));
        assert_eq!(activity.last_seq, 3);
        assert_eq!(activity.by_actor.get("a"), Some(&2));
        assert_eq!(
            activity.kinds_by_count(),
            vec![
                KindCount {
                    kind: "lock_released",
                    count: 2
                },
                KindCount {
                    kind: "custom",
                    count: 1
                },
            ]
        );
    }
}
