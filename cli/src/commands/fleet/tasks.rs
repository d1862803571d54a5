//! `fleetlog task …`: the queue: add, claim, renew, complete, fail, cancel, list.

use anyhow::Result;
use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::{Command, TaskSpec};

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    Add {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value = "null")]
        payload: String,
        #[arg(long, default_value_t = fleetlog_projections::queue::MAX_ATTEMPTS_DEFAULT)]
        max_attempts: u32,
        #[arg(long = "depends-on")]
        depends_on: Vec<u64>,
        /// RFC 3339 time before which it may not be claimed.
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Claim the best available task (exit 3 if none, or on timeout with --wait-ms).
    Claim {
        #[command(flatten)]
        agent: Agent,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value_t = fleetlog_projections::queue::LEASE_TTL_MS_DEFAULT)]
        lease_ms: u64,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    Renew {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value_t = fleetlog_projections::queue::LEASE_TTL_MS_DEFAULT)]
        lease_ms: u64,
    },
    Complete {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value = "null")]
        result: String,
    },
    Fail {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long)]
        error: String,
        /// Do not retry.
        #[arg(long)]
        fatal: bool,
    },
    Cancel {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        tag: Option<String>,
    },
    Show {
        id: u64,
    },
    Stats,
}

pub(super) fn tasks_text(page: &views::TasksPage) -> String {
    let rows: Vec<Vec<String>> = page
        .tasks
        .iter()
        .map(|task| {
            vec![
                task.id.to_string(),
                cell(task.state),
                task.priority.to_string(),
                task.title.clone(),
                cell(&task.holder),
                task.attempts.to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "PRIORITY", "TITLE", "HOLDER", "ATTEMPTS"],
        &rows,
    )
}

/// Runs one `tasks` subcommand.
pub(super) fn run(backend: &Backend, command: TaskCommand, out: &Output) -> Result<ExitCode> {
    let command = match command {
        TaskCommand::List { state, tag } => {
            return show_view(
                backend,
                Query::Tasks {
                    state,
                    tag,
                    limit: None,
                    cursor: None,
                },
                out,
                tasks_text,
            );
        }
        TaskCommand::Show { id } => return show_query(backend, Query::Task { id }, out, pretty),
        TaskCommand::Stats => return show_query(backend, Query::QueueStats, out, pretty),
        TaskCommand::Add {
            agent,
            title,
            description,
            priority,
            tags,
            payload,
            max_attempts,
            depends_on,
            not_before,
            workflow,
        } => Command::Enqueue {
            agent: agent.agent,
            spec: TaskSpec {
                title,
                description,
                priority,
                tags,
                payload: json_arg("--payload", &payload)?,
                max_attempts,
                depends_on,
                not_before: not_before
                    .map(|text| time_arg("--not-before", &text))
                    .transpose()?,
                workflow_id: workflow,
            },
        },
        TaskCommand::Claim {
            agent,
            tags,
            lease_ms,
            wait_ms,
        } => Command::Claim {
            agent: agent.agent,
            tags,
            lease_ttl_ms: lease_ms,
            wait_ms,
        },
        TaskCommand::Renew {
            agent,
            id,
            lease_ms,
        } => Command::RenewLease {
            agent: agent.agent,
            task: id,
            lease_ttl_ms: lease_ms,
        },
        TaskCommand::Complete { agent, id, result } => Command::Complete {
            agent: agent.agent,
            task: id,
            result: json_arg("--result", &result)?,
        },
        TaskCommand::Fail {
            agent,
            id,
            error,
            fatal,
        } => Command::Fail {
            agent: agent.agent,
            task: id,
            error,
            retryable: !fatal,
        },
        TaskCommand::Cancel { agent, id, reason } => Command::Cancel {
            agent: agent.agent,
            task: id,
            reason,
        },
    };
    run_command(backend, command, out)
}
