//! `fleetlog task …`: the queue: add, claim, renew, complete, fail, cancel, list.

use anyhow::Result;
use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::commands::{
    CancelTask, Claim, CompleteTask, DeadLetterTask, Enqueue, EscalateTask, FailTask, ReleaseTask,
    RenewLease, TaskProgress,
};
use fleetlog_projections::queue::TagMatch;
use fleetlog_projections::{Command, TaskSpec};

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

/// How several `--tag`s select tasks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TagMatchArg {
    All,
    Any,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Put a task on the queue; prints its id.
    Add {
        #[command(flatten)]
        agent: Agent,
        /// What the task is, in a line.
        #[arg(long)]
        title: String,
        /// More detail, free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Higher is claimed first: a number, or high (10), normal (0), low (-10).
        #[arg(long, default_value = "normal", value_parser = crate::commands::units::priority)]
        priority: i32,
        /// A tag claimants can filter on (repeat for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The task's JSON payload, handed to the claimant.
        #[arg(long, default_value = "null")]
        payload: String,
        /// Attempts (claims that fail or lose their lease) before it is dead-lettered or escalated.
        #[arg(long, default_value_t = fleetlog_projections::queue::MAX_ATTEMPTS_DEFAULT)]
        max_attempts: u32,
        /// A task id that must complete first (repeat for several).
        #[arg(long = "depends-on")]
        depends_on: Vec<u64>,
        /// RFC 3339 time before which it may not be claimed.
        #[arg(long)]
        not_before: Option<String>,
        /// The workflow the task belongs to.
        #[arg(long)]
        workflow: Option<String>,
        /// Your own id for the task, unique in the ledger (`task list --key K` finds it).
        #[arg(long)]
        key: Option<String>,
        /// A capability the claimant must have (repeat for several; all are required).
        #[arg(long = "require")]
        required_capabilities: Vec<String>,
        /// Escalate the task when it runs out of attempts, instead of dead-lettering it.
        #[arg(long)]
        escalate_when_exhausted: bool,
    },
    /// Claim the best available task (exit 3 if none, or on timeout with --wait-ms).
    Claim {
        #[command(flatten)]
        agent: Agent,
        /// Only tasks with this tag (repeatable; see --tag-match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// With several --tag: the task carries all of them, or any one.
        #[arg(long, value_enum, default_value_t = TagMatchArg::All)]
        tag_match: TagMatchArg,
        /// Claim this task and no other.
        #[arg(long)]
        id: Option<u64>,
        /// How long the claim lasts unless renewed.
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = fleetlog_projections::queue::LEASE_TTL_MS_DEFAULT)]
        lease_ms: u64,
        /// Wait up to this long for a task to become available.
        #[arg(long, value_parser = crate::commands::units::millis)]
        wait_ms: Option<u64>,
    },
    /// Give a claimed task back to the queue without counting the attempt (or requeue an
    /// escalated one).
    Release {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// Why it goes back to the queue (no attempt is counted).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Report progress on a claimed task.
    Progress {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// From 0 to 1.
        #[arg(long)]
        progress: Option<f64>,
        /// Free-form status.
        #[arg(long, default_value = "")]
        status: String,
    },
    /// Put a task aside for a decision (not claimable until released, cancelled or
    /// dead-lettered).
    Escalate {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// Why it needs a human or another agent.
        #[arg(long)]
        reason: String,
    },
    /// Move an unfinished task to the dead-letter queue.
    DeadLetter {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// Why it is given up on.
        #[arg(long)]
        reason: String,
    },
    /// Extend a claimed task's lease.
    Renew {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// The new lease from now (e.g. 5m).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = fleetlog_projections::queue::LEASE_TTL_MS_DEFAULT)]
        lease_ms: u64,
    },
    /// Finish a claimed task with its result.
    Complete {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// The result, as JSON.
        #[arg(long, default_value = "null")]
        result: String,
    },
    /// Report a claimed task failed (retried until its attempts run out, unless --fatal).
    Fail {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// What went wrong.
        #[arg(long)]
        error: String,
        /// Do not retry.
        #[arg(long)]
        fatal: bool,
    },
    /// Withdraw a task that is not finished.
    Cancel {
        #[command(flatten)]
        agent: Agent,
        /// The task id (what `task add` printed).
        id: u64,
        /// Why it is cancelled.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Tasks in id order (finished ones read back from the log), filtered by state, tag or key.
    List {
        /// Only tasks in this state (pending, claimed, escalated, completed, dead_lettered,
        /// cancelled, skipped).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new([
            "pending", "claimed", "escalated", "completed", "dead_lettered", "cancelled", "skipped",
        ]))]
        state: Option<String>,
        /// Only tasks with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// The task with this caller-chosen key.
        #[arg(long)]
        key: Option<String>,
    },
    /// One task, with its attempts, lease and result.
    Show {
        /// The task id (what `task add` printed).
        id: u64,
    },
    /// Counts by state, and the oldest pending task.
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
        TaskCommand::List { state, tag, key } => {
            return show_view(
                backend,
                Query::Tasks {
                    state,
                    tag,
                    key,
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
            key,
            required_capabilities,
            escalate_when_exhausted,
        } => Command::Enqueue(Enqueue {
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
                key,
                required_capabilities,
                escalate_when_exhausted,
            },
        }),
        TaskCommand::Claim {
            agent,
            tags,
            tag_match,
            id,
            lease_ms,
            wait_ms,
        } => Command::Claim(Claim {
            agent: agent.agent,
            tags,
            tag_match: match tag_match {
                TagMatchArg::All => TagMatch::All,
                TagMatchArg::Any => TagMatch::Any,
            },
            task: id,
            lease_ttl_ms: lease_ms,
            wait_ms,
        }),
        TaskCommand::Release { agent, id, reason } => Command::ReleaseTask(ReleaseTask {
            agent: agent.agent,
            task: id,
            reason,
        }),
        TaskCommand::Progress {
            agent,
            id,
            progress,
            status,
        } => Command::TaskProgress(TaskProgress {
            agent: agent.agent,
            task: id,
            progress,
            status,
        }),
        TaskCommand::Escalate { agent, id, reason } => Command::EscalateTask(EscalateTask {
            agent: agent.agent,
            task: id,
            reason,
        }),
        TaskCommand::DeadLetter { agent, id, reason } => Command::DeadLetterTask(DeadLetterTask {
            agent: agent.agent,
            task: id,
            reason,
        }),
        TaskCommand::Renew {
            agent,
            id,
            lease_ms,
        } => Command::RenewLease(RenewLease {
            agent: agent.agent,
            task: id,
            lease_ttl_ms: lease_ms,
        }),
        TaskCommand::Complete { agent, id, result } => Command::Complete(CompleteTask {
            agent: agent.agent,
            task: id,
            result: json_arg("--result", &result)?,
        }),
        TaskCommand::Fail {
            agent,
            id,
            error,
            fatal,
        } => Command::Fail(FailTask {
            agent: agent.agent,
            task: id,
            error,
            retryable: !fatal,
        }),
        TaskCommand::Cancel { agent, id, reason } => Command::Cancel(CancelTask {
            agent: agent.agent,
            task: id,
            reason,
        }),
    };
    run_command(backend, command, out)
}
