//! fleetlog-projections: everything users query, derived from the ledger by folding its events.
//!
//! Invariants:
//! - a projection is a pure function of the records it was given (and, for queries, a `now`
//!   passed in): no I/O inside a fold, no wall clock, no randomness. Replaying the same records
//!   always gives the same state, so any past moment can be rebuilt exactly.
//! - records are applied in seq order, each exactly once.
//! - this crate reads the ledger only through `fleetlog_ledger::Reader`; it never writes.

mod activity;
mod replay;

pub use activity::{Activity, KindCount};
pub use replay::{AsOf, Projection, ReplayError, replay};
