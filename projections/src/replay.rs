//! Folding the log into a projection, up to any point in its history.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use fleetlog_ledger::{Reader, Record, Timestamp};

/// A fold over the log.
pub trait Projection {
    /// Applies one record. Called in seq order, exactly once per record.
    fn apply(&mut self, record: &Record);
}

/// How far to replay: the whole log, up to and including a seq, or every record stamped at or
/// before a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AsOf {
    #[default]
    Head,
    Seq(u64),
    Time(Timestamp),
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsOf::Head => f.write_str("head"),
            AsOf::Seq(seq) => write!(f, "seq {seq}"),
            AsOf::Time(ts) => write!(f, "{ts}"),
        }
    }
}

impl FromStr for AsOf {
    type Err = Error;

    /// `head`, a seq (`1200`), or an RFC 3339 time (`2026-11-23T10:00:00Z`).
    fn from_str(text: &str) -> Result<Self, Error> {
        if text == "head" {
            return Ok(AsOf::Head);
        }
        if let Ok(seq) = text.parse() {
            return Ok(AsOf::Seq(seq));
        }
        Timestamp::parse_rfc3339(text)
            .map(AsOf::Time)
            .map_err(|_| Error::BadAsOf(text.to_owned()))
    }
}

/// The crate's error: what can go wrong reading, replaying or opening (command refusals are
/// [`crate::CommandError`], part of the protocol).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Ledger(#[from] fleetlog_ledger::Error),
    #[error(
        "{0:?} is not a point in the log: give `head`, a seq such as 1200, or an RFC 3339 time such as 2026-11-23T10:00:00Z"
    )]
    BadAsOf(String),
    #[error("seq {seq} is past the newest record ({head}): give a seq up to {head}, or `head`")]
    BeyondHead { seq: u64, head: u64 },
    #[error("task id {0:?} appears twice in the team plan; give each task its own id")]
    DuplicateTask(String),
    #[error("task {task:?} depends on {missing:?}, which is not in the team plan")]
    UnknownDependency { task: String, missing: String },
    #[error("tasks {0:?} depend on each other in a cycle; no order can satisfy them")]
    DependencyCycle(Vec<String>),
    #[error("{count} tasks is more than one team plan may hold ({max}); split the plan")]
    TooManyTasks { count: usize, max: usize },
}

/// The seq `as_of` names in this ledger: the last record it includes (0 if none).
pub fn resolve(reader: &Reader, as_of: AsOf) -> Result<u64, Error> {
    let last = reader.last_seq()?;
    Ok(match as_of {
        AsOf::Head => last,
        AsOf::Seq(seq) if seq > last => return Err(Error::BeyondHead { seq, head: last }),
        AsOf::Seq(seq) => seq,
        // Records stamped after `ts` start at the first seq at or after ts + 1µs.
        AsOf::Time(ts) => {
            match reader.seq_at_or_after(Timestamp(ts.as_micros().saturating_add(1)))? {
                Some(seq) => seq - 1,
                None => last,
            }
        }
    })
}

/// Folds records `first..=last` into `projection`; returns the seq of the last one applied (0 if
/// none). `progress` is called now and then with that seq.
pub fn replay_range<P: Projection>(
    reader: &Reader,
    projection: &mut P,
    first: u64,
    last: u64,
    progress: &dyn Fn(u64),
) -> Result<u64, Error> {
    let mut applied = 0;
    reader.scan(first.max(1)..=last, |record| {
        projection.apply(&record);
        applied = record.seq;
        if applied.is_multiple_of(65_536) {
            progress(applied);
        }
        Ok(ControlFlow::Continue(()))
    })?;
    progress(applied);
    Ok(applied)
}

/// Folds every record up to `as_of` into `projection`; returns the seq of the last record
/// applied (0 if none).
pub fn replay<P: Projection>(
    reader: &Reader,
    projection: &mut P,
    as_of: AsOf,
    progress: &dyn Fn(u64),
) -> Result<u64, Error> {
    let last = resolve(reader, as_of)?;
    replay_range(reader, projection, 1, last, progress)
}
