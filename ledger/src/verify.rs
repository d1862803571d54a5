//! Recomputes the chain and reports the first bad seq exactly.
//!
//! Each record's hash depends only on its own bytes, so the seq range is split into one
//! contiguous chunk per thread and hashed in parallel; links inside a chunk are checked as it
//! goes, and the links between chunks after all threads finish. The result is the same as a
//! sequential walk: the smallest seq with any problem.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::chain::{Checkpoint, LedgerId};
use crate::codec::{ChainHash, RecordView};
use crate::error::Error;
use crate::event::Timestamp;
use crate::reader::Reader;

/// Records between progress callbacks.
const PROGRESS_EVERY_RECORDS: u64 = 65_536;

/// What a chain break is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakKind {
    /// The record's bytes do not hash to its stored hash: it was altered.
    HashMismatch {
        stored: ChainHash,
        computed: ChainHash,
    },
    /// The record's `prev` is not the previous record's hash.
    BrokenLink {
        expected: ChainHash,
        found: ChainHash,
    },
    /// Records are missing before this seq.
    Gap { found: u64 },
    /// The record is stored under one seq but says another.
    SeqMismatch { says: u64 },
    /// The record's time is before the previous record's.
    TimeWentBackwards {
        previous: Timestamp,
        found: Timestamp,
    },
    /// The bytes are not a record this build can read.
    Malformed { problem: String },
    /// The stored head does not name the newest record.
    HeadMismatch {
        head: Checkpoint,
        newest: Checkpoint,
    },
    /// The trusted checkpoint's record has another hash: history was rewritten.
    CheckpointMismatch {
        trusted: ChainHash,
        stored: ChainHash,
    },
    /// The trusted checkpoint lies beyond the newest record: the log was truncated.
    Truncated { newest_seq: u64 },
}

/// The first problem found, at `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChainBreak {
    pub seq: u64,
    #[serde(flatten)]
    pub kind: BreakKind,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.kind {
            BreakKind::HashMismatch { stored, computed } => write!(
                f,
                "seq {seq}: hash mismatch, the record was altered (stored {stored}, computed {computed})"
            ),
            BreakKind::BrokenLink { expected, found } => write!(
                f,
                "seq {seq}: broken link, prev is {found} but record {} has hash {expected}",
                seq.saturating_sub(1)
            ),
            BreakKind::Gap { found } => {
                write!(
                    f,
                    "seq {seq}: missing; the next stored record is seq {found}"
                )
            }
            BreakKind::SeqMismatch { says } => {
                write!(f, "seq {seq}: the record stored here says it is seq {says}")
            }
            BreakKind::TimeWentBackwards { previous, found } => write!(
                f,
                "seq {seq}: time went backwards ({found} is before the previous record's {previous})"
            ),
            BreakKind::Malformed { problem } => write!(f, "seq {seq}: {problem}"),
            BreakKind::HeadMismatch { head, newest } => write!(
                f,
                "seq {seq}: the stored head is {head} but the newest record is {newest}"
            ),
            BreakKind::CheckpointMismatch { trusted, stored } => write!(
                f,
                "seq {seq}: history was rewritten, the trusted checkpoint says {trusted} but the record has {stored}"
            ),
            BreakKind::Truncated { newest_seq } => write!(
                f,
                "seq {seq}: the log was truncated, the trusted checkpoint is seq {seq} but the newest record is seq {newest_seq}"
            ),
        }
    }
}

/// The outcome of a verify run that could read the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    pub ledger_id: LedgerId,
    /// The trusted checkpoint checked on the way (`seq` 0: none given, genesis). Verification
    /// always starts from genesis.
    pub anchor: Checkpoint,
    /// Records whose hash and link were checked.
    pub checked: u64,
    /// The newest record verified (the head when the chain is intact).
    pub verified_head: Checkpoint,
    /// The first problem, or `None` when the chain is intact.
    pub problem: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// How to verify.
#[derive(Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// Start from this trusted checkpoint instead of genesis.
    pub from: Option<Checkpoint>,
    /// Threads to hash with; 0 means one per core.
    pub threads: usize,
    /// Called with the number of records checked so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// What one chunk saw, for stitching chunks together.
struct ChunkSummary {
    first_prev: Option<ChainHash>,
    first_ts: Timestamp,
    last: Option<(u64, ChainHash, Timestamp)>,
    problem: Option<ChainBreak>,
}

pub(crate) fn verify(reader: &Reader, options: VerifyOptions<'_>) -> Result<VerifyReport, Error> {
    let meta = reader.meta()?;
    let newest_seq = reader.last_seq()?;
    let mut report = VerifyReport {
        ledger_id: meta.ledger_id,
        anchor: Checkpoint {
            seq: 0,
            hash: meta.ledger_id.genesis_prev(),
        },
        checked: 0,
        verified_head: Checkpoint {
            seq: 0,
            hash: meta.ledger_id.genesis_prev(),
        },
        problem: None,
    };
    // A trusted checkpoint is checked, not trusted blindly: the whole chain is re-hashed from
    // genesis, so an altered record before the checkpoint is found too, and then the
    // re-verified record at the checkpoint must carry the trusted hash.
    if let Some(trusted) = options.from
        && trusted.seq > newest_seq
    {
        report.problem = Some(ChainBreak {
            seq: trusted.seq,
            kind: BreakKind::Truncated { newest_seq },
        });
        return Ok(report);
    }
    let anchor_ts = Timestamp(i64::MIN);
    let first = report.anchor.seq + 1;
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let chunks = split(first, newest_seq, threads);
    let checked = AtomicU64::new(0);
    let summaries: Vec<Result<ChunkSummary, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|&(low, high)| {
                let checked = &checked;
                scope.spawn(move || verify_chunk(reader, low, high, checked, options.progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("verify threads do not panic"))
            .collect()
    });

    let mut expected_prev = report.anchor.hash;
    let mut previous_ts = anchor_ts;
    let mut expected_seq = first;
    for ((low, _), summary) in chunks.iter().zip(summaries) {
        let summary = summary?;
        // The chunk's own first record links to what came before it.
        if let Some(first_prev) = summary.first_prev {
            if first_prev != expected_prev {
                report.problem = Some(ChainBreak {
                    seq: *low,
                    kind: BreakKind::BrokenLink {
                        expected: expected_prev,
                        found: first_prev,
                    },
                });
                break;
            }
            if summary.first_ts < previous_ts {
                report.problem = Some(ChainBreak {
                    seq: *low,
                    kind: BreakKind::TimeWentBackwards {
                        previous: previous_ts,
                        found: summary.first_ts,
                    },
                });
                break;
            }
        }
        if let Some((seq, hash, ts)) = summary.last {
            report.verified_head = Checkpoint { seq, hash };
            report.checked += seq + 1 - expected_seq;
            expected_seq = seq + 1;
            expected_prev = hash;
            previous_ts = ts;
        }
        if summary.problem.is_some() {
            report.problem = summary.problem;
            break;
        }
    }
    if let Some(trusted) = options.from {
        report.anchor = trusted;
        let reached = report
            .problem
            .as_ref()
            .is_none_or(|problem| problem.seq > trusted.seq);
        if reached {
            let stored = match trusted.seq {
                0 => meta.ledger_id.genesis_prev(),
                seq => match stored_hash_and_ts(reader, seq)? {
                    Ok((stored, _)) => stored,
                    Err(kind) => {
                        report.problem = Some(ChainBreak { seq, kind });
                        return Ok(report);
                    }
                },
            };
            if stored != trusted.hash {
                report.problem = Some(ChainBreak {
                    seq: trusted.seq,
                    kind: BreakKind::CheckpointMismatch {
                        trusted: trusted.hash,
                        stored,
                    },
                });
                return Ok(report);
            }
        }
    }
    if report.problem.is_none() && report.verified_head != meta.head.checkpoint() {
        report.problem = Some(ChainBreak {
            seq: report.verified_head.seq.max(meta.head.seq),
            kind: BreakKind::HeadMismatch {
                head: meta.head.checkpoint(),
                newest: report.verified_head,
            },
        });
    }
    Ok(report)
}

fn stored_hash_and_ts(
    reader: &Reader,
    seq: u64,
) -> Result<Result<(ChainHash, Timestamp), BreakKind>, Error> {
    let mut found = Err(BreakKind::Gap { found: seq + 1 });
    reader.scan_raw(seq..=seq, |_, bytes| {
        found = RecordView::new(bytes)
            .and_then(|view| Ok((view.stored_hash(), view.seq_ts()?.1)))
            .map_err(|problem| BreakKind::Malformed {
                problem: problem.to_string(),
            });
        Ok(ControlFlow::Break(()))
    })?;
    Ok(found)
}

/// Splits `first..=last` into at most `parts` contiguous, non-empty chunks.
fn split(first: u64, last: u64, parts: usize) -> Vec<(u64, u64)> {
    if last < first {
        return Vec::new();
    }
    let count = last - first + 1;
    let parts = (parts.max(1) as u64).min(count);
    let size = count.div_ceil(parts);
    (0..parts)
        .map(|part| first + part * size)
        .take_while(|&low| low <= last)
        .map(|low| (low, (low + size - 1).min(last)))
        .collect()
}

fn verify_chunk(
    reader: &Reader,
    low: u64,
    high: u64,
    checked: &AtomicU64,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<ChunkSummary, Error> {
    let mut summary = ChunkSummary {
        first_prev: None,
        first_ts: Timestamp(i64::MIN),
        last: None,
        problem: None,
    };
    let mut expected_seq = low;
    let mut since_progress = 0u64;
    reader.scan_raw(low..=high, |seq, bytes| {
        let kind = match check_record(seq, expected_seq, bytes, &summary) {
            Ok((hash, ts)) => {
                if summary.first_prev.is_none() {
                    summary.first_prev = Some(ChainHash(
                        bytes[..32].try_into().expect("checked record has a header"),
                    ));
                    summary.first_ts = ts;
                }
                summary.last = Some((seq, hash, ts));
                expected_seq = seq + 1;
                since_progress += 1;
                if since_progress == PROGRESS_EVERY_RECORDS {
                    let total =
                        checked.fetch_add(since_progress, Ordering::Relaxed) + since_progress;
                    since_progress = 0;
                    if let Some(progress) = progress {
                        progress(total);
                    }
                }
                return Ok(ControlFlow::Continue(()));
            }
            Err(kind) => kind,
        };
        summary.problem = Some(ChainBreak {
            seq: expected_seq.min(seq),
            kind,
        });
        Ok(ControlFlow::Break(()))
    })?;
    if summary.problem.is_none() && expected_seq <= high {
        // The range ended early: everything from expected_seq on is missing.
        summary.problem = Some(ChainBreak {
            seq: expected_seq,
            kind: BreakKind::Gap { found: high + 1 },
        });
    }
    let total = checked.fetch_add(since_progress, Ordering::Relaxed) + since_progress;
    if let Some(progress) = progress {
        progress(total);
    }
    Ok(summary)
}

/// Checks one record on its own and against the previous one in its chunk.
fn check_record(
    seq: u64,
    expected_seq: u64,
    bytes: &[u8],
    summary: &ChunkSummary,
) -> Result<(ChainHash, Timestamp), BreakKind> {
    if seq != expected_seq {
        return Err(BreakKind::Gap { found: seq });
    }
    let malformed = |problem: crate::codec::Malformed| BreakKind::Malformed {
        problem: problem.to_string(),
    };
    let view = RecordView::new(bytes).map_err(malformed)?;
    let (stored, computed) = (view.stored_hash(), view.computed_hash());
    if stored != computed {
        return Err(BreakKind::HashMismatch { stored, computed });
    }
    let (says, ts) = view.seq_ts().map_err(malformed)?;
    if says != seq {
        return Err(BreakKind::SeqMismatch { says });
    }
    if let Some((_, previous_hash, previous_ts)) = summary.last {
        if view.prev() != previous_hash {
            return Err(BreakKind::BrokenLink {
                expected: previous_hash,
                found: view.prev(),
            });
        }
        if ts < previous_ts {
            return Err(BreakKind::TimeWentBackwards {
                previous: previous_ts,
                found: ts,
            });
        }
    }
    Ok((stored, ts))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_range_exactly_once() {
        for (first, last, parts) in [(1, 10, 3), (1, 1, 4), (5, 4, 2), (1, 100, 1), (7, 9, 8)] {
            let chunks = split(first, last, parts);
            let mut next = first;
            for (low, high) in &chunks {
                assert_eq!(*low, next);
                assert!(high >= low);
                next = high + 1;
            }
            assert_eq!(next, last.max(first - 1) + 1, "{first}..={last} in {parts}");
        }
    }
}
