//! fleetlog: the daemon that serves one ledger to a fleet over HTTP/1.1 + JSON (loopback TCP and
//! a Unix socket), the Rust client for it, and the `fleetlog` command line.
//!
//! Invariants: only this crate knows HTTP; every write goes through the state machine's
//! commands; the client and the embedded mode answer the same queries through `wire::answer`, so
//! a CLI command prints the same thing whether a daemon serves the file or not.

pub mod bench;
pub mod client;
pub mod daemon;
pub mod demo;
mod error;
pub mod identity;
pub mod mcp;
pub mod wire;

pub use error::Error;
