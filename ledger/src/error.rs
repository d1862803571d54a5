//! The ledger's one error type. Every message names what was wrong and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // Not `#[from]`: that would also make the io::Error the source, and a report of the chain
    // (`{:#}`) would then print its text twice.
    #[error("I/O error: {0}")]
    Io(std::io::Error),

    #[error("storage error: {0}")]
    Storage(#[source] redb::Error),

    #[error(
        "{path} is already open for writing by another process{}; stop it, talk to it through its daemon, or open the ledger read-only",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    AlreadyOpen { path: PathBuf, pid: Option<u32> },

    #[error(
        "{path} is held exclusively by a running daemon (what `fleetlog serve` does unless `--shared`), so no other process may open it, not even to read: read through the daemon (the CLI does so when the daemon answers on its socket), or stop it with `fleetlog daemon stop`"
    )]
    HeldExclusively { path: PathBuf },

    #[error("{path} already exists; pick another path or open the existing ledger")]
    AlreadyExists { path: PathBuf },

    #[error("{path} does not exist; create it first with `fleetlog init`")]
    NotFound { path: PathBuf },

    #[error(
        "{path} was not closed cleanly (its writer crashed or was killed) and needs recovery, which a read-only open cannot do; open it for writing once (for example `fleetlog recover`), then retry"
    )]
    NeedsRecovery { path: PathBuf },

    #[error("{path} is not a fleetlog ledger: {problem}")]
    NotALedger { path: PathBuf, problem: String },

    #[error(
        "ledger format version {found} is not supported by this build (it reads {supported}); use a matching fleetlog release"
    )]
    UnsupportedFormat { found: u32, supported: u32 },

    #[error("actor {actor:?} {problem}")]
    InvalidActor { actor: String, problem: String },

    #[error("{kind} event: field `{field}` {problem}")]
    InvalidEvent {
        kind: &'static str,
        field: &'static str,
        problem: String,
    },

    #[error(
        "{kind} event encodes to {bytes} bytes; the limit is {limit} bytes: store large content elsewhere and reference it"
    )]
    EventTooLarge {
        kind: &'static str,
        bytes: usize,
        limit: usize,
    },

    #[error(
        "an append carries {events} events; the limit is {limit}: split it into several appends"
    )]
    RequestTooLarge { events: usize, limit: usize },

    #[error("an append must carry at least one event")]
    EmptyAppend,

    #[error("idempotency key {key:?} {problem}")]
    InvalidIdempotencyKey { key: String, problem: String },

    #[error(
        "idempotency key {key:?} was already used at seq {seq} for different content; use a fresh key for a new append"
    )]
    IdempotencyConflict { key: String, seq: u64 },

    #[error(
        "the ledger writer refuses writes after a failed commit ({cause}); nothing from that batch was acknowledged: close and reopen the ledger"
    )]
    WriterPoisoned { cause: String },

    #[error("the ledger writer has stopped (the ledger is closing)")]
    WriterStopped,

    #[error("this ledger handle is read-only; open it writable to append")]
    ReadOnly,

    #[error("this ledger was opened without a state machine, so it cannot run commands")]
    NoSequencer,

    #[error(
        "{kind} events are written by fleetlog's state machine from commands; append them through the matching command instead"
    )]
    RawAppendRefused { kind: &'static str },

    #[error("record {seq} is corrupted: {problem}; run `fleetlog verify` for the full report")]
    Corrupted { seq: u64, problem: String },

    #[error(
        "the ledger failed its open check: {problem}; run `fleetlog verify` to locate the damage"
    )]
    OpenCheckFailed { problem: String },

    #[error("checkpoint {text:?}: {problem}")]
    BadCheckpoint { text: String, problem: String },

    #[error("import line {line}: {problem}; nothing was imported")]
    Import { line: u64, problem: String },
}

impl Error {
    /// True when the error is about the request's content (the caller must change it), not
    /// about the ledger's state.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidActor { .. }
                | Error::InvalidEvent { .. }
                | Error::EventTooLarge { .. }
                | Error::RequestTooLarge { .. }
                | Error::EmptyAppend
                | Error::InvalidIdempotencyKey { .. }
                | Error::IdempotencyConflict { .. }
                | Error::BadCheckpoint { .. }
                | Error::RawAppendRefused { .. }
        )
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(error: $ty) -> Self {
                Error::Storage(error.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Io(error)
    }
}
