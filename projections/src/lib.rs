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
pub mod approvals;
pub mod board;
pub mod decisions;
pub mod locks;
pub mod queue;
mod replay;
pub mod signals;
mod snapshot;
mod state;
pub mod workflows;

pub use activity::{Activity, KindCount};
pub use replay::{AsOf, Projection, ReplayError, replay};
pub use snapshot::SNAPSHOT_VERSION;
pub use state::{Due, State};
