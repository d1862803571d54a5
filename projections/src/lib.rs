//! fleetlog-projections: everything users query, derived from the ledger by folding its events,
//! and the coordination state machine that turns commands into events.
//!
//! Invariants:
//! - a projection is a pure function of the records it was given (and, for queries, a `now`
//!   passed in): no I/O inside a fold, no wall clock, no randomness. Replaying the same records
//!   always gives the same state, so any past moment can be rebuilt exactly.
//! - records are applied in seq order, each exactly once.
//! - commands are validated by the machine on the ledger's writer thread, against state that
//!   includes every earlier event; a rejected command appends nothing.
//! - readers see only committed state; the machine's working state is never shown.

mod activity;
pub mod agents;
pub mod analytics;
pub mod approvals;
pub mod board;
pub mod budgets;
mod command;
mod coordinator;
pub mod decisions;
pub mod facts;
pub mod locks;
mod machine;
mod published;
pub mod queue;
mod replay;
pub mod signals;
mod snapshot;
mod state;
pub mod telemetry;
mod waits;
pub mod workflows;

pub use activity::{Activity, KindCount};
pub use command::{Command, CommandError, Outcome, StageReport, TaskSpec};
pub use coordinator::{
    CallerGuard, Coordinator, CoordinatorOptions, PendingCommand, SNAPSHOT_EVERY_EVENTS_DEFAULT,
    rebuild, rebuild_reporting,
};
pub use machine::{INBOX_SIGNALS_MAX, Machine, Reply, SYSTEM_ACTOR};
pub use published::BACKLOG_RECORDS_MAX;
pub use replay::{AsOf, Error, Projection, replay, replay_range, resolve};
pub use snapshot::SNAPSHOT_VERSION;
pub use state::{Due, State};
pub use waits::WAITERS_PER_KEY_MAX;
