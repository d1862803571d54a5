//! What the writer counts about its work (commits, checkpoints, batch sizes, commit latency),
//! kept in atomics so `/metrics` and `Ledger::writer_stats` read them without stopping it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the commit-latency histogram buckets, in microseconds (then +Inf).
pub const COMMIT_MICROS_BUCKETS: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];
/// Upper bounds of the batch-size histogram buckets, in events (then +Inf).
pub const BATCH_EVENTS_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1_024, 4_096];

/// Counters the writer keeps about its work, read without stopping it.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    commits: AtomicU64,
    checkpoints: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    commit_micros_total: AtomicU64,
    commit_micros_max: AtomicU64,
    /// Commits per latency bucket (not cumulative; the last is +Inf).
    commit_micros_buckets: [AtomicU64; COMMIT_MICROS_BUCKETS.len() + 1],
    batch_events_buckets: [AtomicU64; BATCH_EVENTS_BUCKETS.len() + 1],
}

/// Which bucket `value` falls in.
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|bound| *bound < value)
}

/// A snapshot of the writer's counters since the ledger was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches committed (each durable when acknowledged).
    pub commits: u64,
    /// Of those, with a write-ahead log: durable redb commits (checkpoints). Without one,
    /// every commit is durable in redb and this stays zero.
    pub checkpoints: u64,
    /// Append requests committed (idempotent retries included).
    pub requests: u64,
    /// Events appended.
    pub events: u64,
    /// Time spent inside commits, in microseconds.
    pub commit_micros_total: u64,
    /// The slowest commit, in microseconds.
    pub commit_micros_max: u64,
    /// Commits per bucket of [`COMMIT_MICROS_BUCKETS`] (not cumulative; the last is +Inf).
    pub commit_micros_buckets: [u64; COMMIT_MICROS_BUCKETS.len() + 1],
    /// Commits per bucket of [`BATCH_EVENTS_BUCKETS`] (not cumulative; the last is +Inf).
    pub batch_events_buckets: [u64; BATCH_EVENTS_BUCKETS.len() + 1],
}

impl WriterStats {
    /// Mean events per commit: how much group commit is batching.
    pub fn mean_batch_events(&self) -> f64 {
        match self.commits {
            0 => 0.0,
            commits => self.events as f64 / commits as f64,
        }
    }
}

impl WriterCounters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            commit_micros_total: self.commit_micros_total.load(Ordering::Relaxed),
            commit_micros_max: self.commit_micros_max.load(Ordering::Relaxed),
            commit_micros_buckets: self
                .commit_micros_buckets
                .each_ref()
                .map(|count| count.load(Ordering::Relaxed)),
            batch_events_buckets: self
                .batch_events_buckets
                .each_ref()
                .map(|count| count.load(Ordering::Relaxed)),
        }
    }

    /// A durable redb commit of batches acknowledged from the write-ahead log.
    pub(super) fn checkpointed(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record(&self, requests: usize, events: u64, commit_micros: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(commit_micros, Ordering::Relaxed);
        self.commit_micros_max
            .fetch_max(commit_micros, Ordering::Relaxed);
        self.commit_micros_buckets[bucket(&COMMIT_MICROS_BUCKETS, commit_micros)]
            .fetch_add(1, Ordering::Relaxed);
        self.batch_events_buckets[bucket(&BATCH_EVENTS_BUCKETS, events)]
            .fetch_add(1, Ordering::Relaxed);
    }
}
