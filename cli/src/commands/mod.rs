//! The `fleetlog` subcommands: `ledger` for the file itself (init, verify, events, export …),
//! `fleet` for coordination (each group in its own module), `benchmark` for `fleetlog bench`,
//! and `output` for tables and `--json`.

pub mod benchmark;
pub mod fleet;
pub mod ledger;
pub mod output;
pub mod units;

pub use ledger::{exit_code_for, run};
