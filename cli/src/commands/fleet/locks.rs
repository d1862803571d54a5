//! `fleetlog lock …`: acquire, renew, release, check, list.

use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::Command;

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    Acquire {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        resource: String,
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 30_000)]
        ttl_ms: u64,
        #[arg(long, default_value = "")]
        intent: String,
        /// Wait up to this long (FIFO) if another agent holds it.
        #[arg(long, value_parser = crate::commands::units::millis)]
        wait_ms: Option<u64>,
    },
    Renew {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        token: u64,
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 30_000)]
        ttl_ms: u64,
    },
    Release {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        token: u64,
    },
    List,
    /// Whether a fencing token is still current (exit 1 if not).
    Check {
        #[arg(long)]
        resource: String,
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
        } => Command::AcquireLock {
            agent: agent.agent,
            resource,
            ttl_ms,
            intent,
            wait_ms,
        },
        LockCommand::Renew {
            agent,
            resource,
            token,
            ttl_ms,
        } => Command::RenewLock {
            agent: agent.agent,
            resource,
            token,
            ttl_ms,
        },
        LockCommand::Release {
            agent,
            resource,
            token,
        } => Command::ReleaseLock {
            agent: agent.agent,
            resource,
            token,
        },
    };
    run_command(backend, command, out)
}
