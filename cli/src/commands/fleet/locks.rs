//! `fleetlog lock …`: acquire, renew, release, check, list.

use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::Command;
use fleetlog_projections::commands::{AcquireLock, ReleaseLock, RenewLock};

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Take a lock (or, with --slots, one slot of a counting semaphore); prints its fencing token.
    Acquire {
        #[command(flatten)]
        agent: Agent,
        /// What to lock: a file path, a table, any name the fleet agrees on.
        #[arg(long)]
        resource: String,
        /// How long the lock holds without a renewal (e.g. 30s, 2m, 500ms).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 30_000)]
        ttl_ms: u64,
        /// Why the agent takes it, shown to others who find it held.
        #[arg(long, default_value = "")]
        intent: String,
        /// Wait up to this long (FIFO) if another agent holds it.
        #[arg(long, value_parser = crate::commands::units::millis)]
        wait_ms: Option<u64>,
        /// Up to this many holders at once (a counting semaphore, e.g. LLM rate slots): the
        /// grant is one free slot, `<resource>/slot-<i>`, renewed and released by that name.
        #[arg(long)]
        slots: Option<u32>,
    },
    /// Extend a held lock's TTL.
    Renew {
        #[command(flatten)]
        agent: Agent,
        /// The resource as granted (for a semaphore, its `<resource>/slot-<i>`).
        #[arg(long)]
        resource: String,
        /// The fencing token the grant answered.
        #[arg(long)]
        token: u64,
        /// The new TTL from now.
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 30_000)]
        ttl_ms: u64,
    },
    /// Give a held lock back.
    Release {
        #[command(flatten)]
        agent: Agent,
        /// The resource as granted (for a semaphore, its `<resource>/slot-<i>`).
        #[arg(long)]
        resource: String,
        /// The fencing token the grant answered.
        #[arg(long)]
        token: u64,
    },
    /// Every lock held now.
    List,
    /// Whether a fencing token is still current (exit 1 if not).
    Check {
        /// The resource the token is for.
        #[arg(long)]
        resource: String,
        /// The fencing token to check.
        #[arg(long)]
        token: u64,
    },
}

pub(super) fn locks_rows(locks: &[fleetlog_projections::locks::Lock]) -> String {
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|lock| {
            vec![
                lock.resource.clone(),
                lock.holder.clone(),
                lock.token.to_string(),
                lock.intent.clone(),
                cell(lock.acquired_at),
                cell(lock.expires_at),
            ]
        })
        .collect();
    table(
        &[
            "RESOURCE", "HOLDER", "TOKEN", "INTENT", "ACQUIRED", "EXPIRES",
        ],
        &rows,
    )
}

pub(super) fn locks_text(page: &views::LocksPage) -> String {
    locks_rows(&page.locks)
}

/// Runs one `locks` subcommand.
pub(super) fn run(backend: &Backend, command: LockCommand, out: &Output) -> Result<ExitCode> {
    let command = match command {
        LockCommand::List => {
            return show_view(
                backend,
                Query::Locks {
                    limit: None,
                    cursor: None,
                },
                out,
                locks_text,
            );
        }
        LockCommand::Check { resource, token } => {
            return {
                let value = backend.query(&Query::LockCheck { resource, token })?;
                let current = value["current"].as_bool().unwrap_or(false);
                out.emit(&value, || {
                    format!(
                        "token {token} is {}",
                        if current { "current" } else { "NOT current" }
                    )
                });
                Ok(if current {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            };
        }
        LockCommand::Acquire {
            agent,
            resource,
            ttl_ms,
            intent,
            wait_ms,
            slots,
        } => Command::AcquireLock(AcquireLock {
            slots,
            agent: agent.agent,
            resource,
            ttl_ms,
            intent,
            wait_ms,
        }),
        LockCommand::Renew {
            agent,
            resource,
            token,
            ttl_ms,
        } => Command::RenewLock(RenewLock {
            agent: agent.agent,
            resource,
            token,
            ttl_ms,
        }),
        LockCommand::Release {
            agent,
            resource,
            token,
        } => Command::ReleaseLock(ReleaseLock {
            agent: agent.agent,
            resource,
            token,
        }),
    };
    run_command(backend, command, out)
}
