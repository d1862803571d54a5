//! fleetlog's cross-crate integration tests, compiled into one binary (faster to build on two
//! cores). One module per concern; each opens with a line saying what it guards.

mod agents_signals;
mod analytics;
mod append;
mod approvals_workflows;
mod concurrency;
mod crash;
mod export_import;
mod faults;
mod golden;
mod idempotency;
mod invariants;
mod locks;
mod open;
mod queue;
mod races;
mod raw;
mod replay;
mod state_machine;
mod tail;
mod tamper;
mod telemetry;
mod writer;
