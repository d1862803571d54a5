//! The coordination subcommands: each builds one state-machine command or query, runs it on the
//! daemon or embedded backend, and prints the answer (a table or line for people, JSON with
//! `--json`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetlog::client::backend::Backend;
use fleetlog::wire::{Query, views};
use fleetlog_ledger::{Json, Outcome as Work, SignalTarget, Timestamp};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Outcome, StageReport, TaskSpec};
use serde_json::Value;

use crate::commands::output::{Output, table};

/// Who issues a command.
#[derive(Args, Clone, Debug)]
pub struct Agent {
    /// The agent id issuing the command.
    #[arg(long, env = "FLEETLOG_AGENT")]
    agent: String,
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Agents, locks, queue and workflows at a glance.
    Status,
    /// List agents (alive ones; --all for every agent ever registered).
    Agents {
        #[arg(long)]
        all: bool,
    },
    /// Alive agents whose progress has not changed for --threshold milliseconds.
    Hung {
        #[arg(long, default_value_t = 300_000)]
        threshold: u64,
    },
    /// Agents whose last heartbeat is older than --threshold milliseconds.
    Stale {
        #[arg(long, default_value_t = 60_000)]
        threshold: u64,
    },
    /// Register an agent (or update its registration).
    Register {
        #[command(flatten)]
        agent: Agent,
        #[arg(long, default_value = "")]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        working_on: String,
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
    /// Remove an agent from the fleet, releasing its locks and leases.
    Deregister {
        #[command(flatten)]
        agent: Agent,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Report that an agent is alive.
    Heartbeat {
        #[command(flatten)]
        agent: Agent,
        #[arg(long, default_value = "working")]
        status: String,
        /// Progress from 0 to 1.
        #[arg(long)]
        progress: Option<f64>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long, default_value_t = fleetlog_projections::agents::HEARTBEAT_TTL_MS_DEFAULT)]
        ttl_ms: u64,
    },
    /// Send, check or wait for signals.
    #[command(subcommand)]
    Signal(SignalCommand),
    /// Acquire, renew, release, list and check locks.
    #[command(subcommand)]
    Lock(LockCommand),
    /// The task queue.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Approval gates.
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// Threads of messages between agents.
    #[command(subcommand)]
    Board(BoardCommand),
    /// Logged decisions.
    #[command(subcommand)]
    Decision(DecisionCommand),
    /// Workflows: stages, handoffs, checkpoints.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Follow the log: every event as it commits (needs a running daemon).
    Tail {
        /// Keep following new events.
        #[arg(short, long)]
        follow: bool,
        /// Start at this seq (default: the last 10).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Append a custom event (`custom { kind, payload }`).
    Append {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "null")]
        payload: String,
    },
    /// Workflow analytics.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Coordination overhead per workflow, the fleet summary, and the breakdown of waits.
    Overhead {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Success-rate trends: the last 7 days against the rest of the window (worst first).
    Trends {
        /// One agent (default: all).
        agent: Option<String>,
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Percentage points of change that count as a trend.
        #[arg(long, default_value_t = fleetlog_projections::analytics::TREND_THRESHOLD_POINTS_DEFAULT)]
        threshold: f64,
        #[arg(long)]
        as_of: Option<String>,
    },
    /// The agents best suited to a task, from their history (exit 3 if none is good enough).
    BestAgent {
        #[arg(long)]
        task: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, default_value_t = 0.3)]
        min_confidence: f64,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Cost and tokens by workflow, agent, tier and day, with budget status.
    Costs {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// The coordination state as of a seq or time (`head`, `1200`, `2026-11-23T10:00:00Z`).
    Replay {
        #[arg(long, default_value = "head")]
        as_of: String,
    },
}

/// Which part of history an analytic looks at.
#[derive(Args, Clone, Debug)]
pub struct WindowArgs {
    /// Only this project's workflows.
    #[arg(long)]
    project: Option<String>,
    /// From this RFC 3339 time (inclusive).
    #[arg(long)]
    since: Option<String>,
    /// Until this RFC 3339 time (exclusive).
    #[arg(long)]
    until: Option<String>,
    /// As the ledger was at `head`, a seq, or an RFC 3339 time.
    #[arg(long)]
    as_of: Option<String>,
}

impl WindowArgs {
    fn times(&self) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
        Ok((
            self.since
                .as_deref()
                .map(|text| time_arg("--since", text))
                .transpose()?,
            self.until
                .as_deref()
                .map(|text| time_arg("--until", text))
                .transpose()?,
        ))
    }
}

#[derive(Subcommand, Debug)]
pub enum WorkflowsCommand {
    /// Counts, success rate, durations, estimates and the most common agent sequences.
    Stats {
        #[command(flatten)]
        window: WindowArgs,
        /// How many agent sequences to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum SignalCommand {
    Send {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        kind: String,
        /// The target agent; omit to broadcast.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "null")]
        payload: String,
        #[arg(long, default_value_t = fleetlog_projections::signals::SIGNAL_TTL_MS_DEFAULT)]
        ttl_ms: u64,
        /// The signal this one answers.
        #[arg(long)]
        reply_to: Option<u64>,
    },
    /// Take the oldest matching signal without waiting (--peek leaves it).
    Check {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        peek: bool,
        /// Acknowledged delivery: the signal stays yours until `signal ack`, and is receivable
        /// again if not acknowledged within this many milliseconds.
        #[arg(long, conflicts_with = "peek")]
        ack_ms: Option<u64>,
    },
    /// Acknowledge a signal received with --ack-ms: it is consumed.
    Ack {
        #[command(flatten)]
        agent: Agent,
        /// The signal's id.
        #[arg(long)]
        signal: u64,
    },
    /// Wait for a matching signal; woken by the send itself. Exit 3 on timeout.
    Wait {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        from: Option<String>,
        /// Only the reply to this signal id.
        #[arg(long)]
        reply_to: Option<u64>,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        #[arg(long)]
        peek: bool,
        /// Acknowledged delivery (see `signal check --ack-ms`).
        #[arg(long, conflicts_with = "peek")]
        ack_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    Acquire {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        resource: String,
        #[arg(long, default_value_t = 30_000)]
        ttl_ms: u64,
        #[arg(long, default_value = "")]
        intent: String,
        /// Wait up to this long (FIFO) if another agent holds it.
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    Renew {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        token: u64,
        #[arg(long, default_value_t = 30_000)]
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

#[derive(Subcommand, Debug)]
pub enum ApprovalCommand {
    Request {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        action: String,
        #[arg(long, default_value = "null")]
        context: String,
        #[arg(long = "approver")]
        approvers: Vec<String>,
        #[arg(long, default_value_t = 3_600_000)]
        timeout_ms: u64,
    },
    Approve {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Reject {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Wait for the decision (exit 3 on timeout).
    Wait {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    List {
        #[arg(long)]
        pending: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BoardCommand {
    Post {
        #[command(flatten)]
        agent: Agent,
        #[arg(long)]
        title: String,
        #[arg(long)]
        message: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
    },
    Reply {
        #[command(flatten)]
        agent: Agent,
        id: u64,
        #[arg(long)]
        message: String,
    },
    List,
    Show {
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum DecisionCommand {
    Log {
        #[command(flatten)]
        agent: Agent,
        #[arg(long = "type")]
        decision_type: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        context: String,
        #[arg(long = "alternative")]
        alternatives: Vec<String>,
    },
    List {
        #[arg(long = "by")]
        agent: Option<String>,
        #[arg(long = "type")]
        decision_type: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    Start {
        #[command(flatten)]
        agent: Agent,
        id: String,
        #[arg(long, default_value = "")]
        project: String,
        /// The planned agents, in order.
        #[arg(long = "plan", value_delimiter = ',')]
        plan: Vec<String>,
        #[arg(long)]
        estimate_ms: Option<u64>,
    },
    /// Record a stage starting, or with --done its completion and figures.
    Stage {
        #[command(flatten)]
        agent: Agent,
        id: String,
        #[arg(long)]
        stage: String,
        /// The agent doing the stage (default: --agent).
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value = "standard")]
        tier: String,
        #[arg(long)]
        done: bool,
        /// success, failure, partial or unknown (with --done).
        #[arg(long, default_value = "success")]
        outcome: String,
        #[arg(long, default_value_t = 0)]
        duration_ms: u64,
        #[arg(long, default_value_t = 0.0)]
        cost_usd: f64,
        #[arg(long, default_value_t = 0)]
        tokens: u64,
    },
    Handoff {
        #[command(flatten)]
        agent: Agent,
        id: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long = "artifact")]
        artifacts: Vec<String>,
    },
    Checkpoint {
        #[command(flatten)]
        agent: Agent,
        id: String,
        #[arg(long)]
        stage: String,
        #[arg(long, default_value = "null")]
        state: String,
    },
    Complete {
        #[command(flatten)]
        agent: Agent,
        id: String,
        /// Record the workflow as failed, with this error.
        #[arg(long)]
        failed: Option<String>,
    },
    Budget {
        #[command(flatten)]
        agent: Agent,
        id: String,
        #[arg(long)]
        limit_usd: f64,
    },
    Show {
        id: String,
    },
    List,
}

fn json_arg(flag: &str, text: &str) -> Result<Json> {
    Json::parse(text)
        .with_context(|| format!("{flag} is not valid JSON: {text:?} (quote strings: '\"text\"')"))
}

fn time_arg(flag: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text)
        .with_context(|| format!("{flag} {text:?} is not an RFC 3339 time"))
}

fn filter(kind: String, from: Option<String>, correlation_id: Option<u64>) -> SignalFilter {
    SignalFilter {
        kind,
        from,
        correlation_id,
    }
}

pub fn run(db: &Path, command: FleetCommand, out: &Output) -> Result<ExitCode> {
    if let FleetCommand::Replay { as_of } = &command {
        return replay(db, as_of, out);
    }
    let backend = Backend::connect(db)?;
    match command {
        FleetCommand::Status => show_view(&backend, Query::Status, out, status_text),
        FleetCommand::Agents { all } => show_view(
            &backend,
            Query::Agents {
                all,
                limit: None,
                cursor: None,
            },
            out,
            agents_text,
        ),
        FleetCommand::Hung { threshold } => show_view(
            &backend,
            Query::Hung {
                threshold_ms: threshold,
                limit: None,
                cursor: None,
            },
            out,
            agents_text,
        ),
        FleetCommand::Stale { threshold } => show_view(
            &backend,
            Query::Stale {
                threshold_ms: threshold,
                limit: None,
                cursor: None,
            },
            out,
            agents_text,
        ),
        FleetCommand::Register {
            agent,
            role,
            name,
            working_on,
            capabilities,
        } => run_command(
            &backend,
            Command::Register {
                agent: agent.agent,
                role,
                name,
                working_on,
                capabilities,
                metadata: Json::null(),
            },
            out,
        ),
        FleetCommand::Deregister { agent, reason } => run_command(
            &backend,
            Command::Deregister {
                agent: agent.agent,
                reason,
            },
            out,
        ),
        FleetCommand::Heartbeat {
            agent,
            status,
            progress,
            task,
            ttl_ms,
        } => run_command(
            &backend,
            Command::Heartbeat {
                agent: agent.agent,
                status,
                progress,
                current_task: task,
                metadata: Json::null(),
                ttl_ms,
            },
            out,
        ),
        FleetCommand::Signal(signal) => run_command(&backend, signal_command(signal)?, out),
        FleetCommand::Lock(LockCommand::List) => show_view(
            &backend,
            Query::Locks {
                limit: None,
                cursor: None,
            },
            out,
            locks_text,
        ),
        FleetCommand::Lock(LockCommand::Check { resource, token }) => {
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
        }
        FleetCommand::Lock(lock) => run_command(&backend, lock_command(lock), out),
        FleetCommand::Task(TaskCommand::List { state, tag }) => show_view(
            &backend,
            Query::Tasks {
                state,
                tag,
                limit: None,
                cursor: None,
            },
            out,
            tasks_text,
        ),
        FleetCommand::Task(TaskCommand::Show { id }) => {
            show_query(&backend, Query::Task { id }, out, pretty)
        }
        FleetCommand::Task(TaskCommand::Stats) => {
            show_query(&backend, Query::QueueStats, out, pretty)
        }
        FleetCommand::Task(task) => run_command(&backend, task_command(task)?, out),
        FleetCommand::Approval(ApprovalCommand::List { pending }) => show_view(
            &backend,
            Query::Approvals {
                pending,
                limit: None,
                cursor: None,
            },
            out,
            approvals_text,
        ),
        FleetCommand::Approval(approval) => run_command(&backend, approval_command(approval)?, out),
        FleetCommand::Board(BoardCommand::List) => show_view(
            &backend,
            Query::Threads {
                limit: None,
                cursor: None,
            },
            out,
            threads_text,
        ),
        FleetCommand::Board(BoardCommand::Show { id }) => {
            show_view(&backend, Query::Thread { id }, out, thread_text)
        }
        FleetCommand::Board(BoardCommand::Post {
            agent,
            title,
            message,
            priority,
        }) => run_command(
            &backend,
            Command::Post {
                agent: agent.agent,
                title,
                message,
                priority,
            },
            out,
        ),
        FleetCommand::Board(BoardCommand::Reply { agent, id, message }) => run_command(
            &backend,
            Command::Reply {
                agent: agent.agent,
                thread: id,
                message,
            },
            out,
        ),
        FleetCommand::Decision(DecisionCommand::Log {
            agent,
            decision_type,
            reason,
            context,
            alternatives,
        }) => run_command(
            &backend,
            Command::LogDecision {
                agent: agent.agent,
                decision_type,
                context,
                reason,
                alternatives,
                metadata: Json::null(),
            },
            out,
        ),
        FleetCommand::Decision(DecisionCommand::List {
            agent,
            decision_type,
            since,
            until,
        }) => {
            let from = since.map(|text| time_arg("--since", &text)).transpose()?;
            let to = until.map(|text| time_arg("--until", &text)).transpose()?;
            show_view(
                &backend,
                Query::Decisions {
                    agent,
                    decision_type,
                    from,
                    to,
                    limit: None,
                    cursor: None,
                },
                out,
                decisions_text,
            )
        }
        FleetCommand::Workflow(WorkflowCommand::Show { id }) => {
            show_query(&backend, Query::Workflow { id }, out, pretty)
        }
        FleetCommand::Workflow(WorkflowCommand::List) => show_view(
            &backend,
            Query::Workflows {
                limit: None,
                cursor: None,
            },
            out,
            workflows_text,
        ),
        FleetCommand::Workflow(workflow) => run_command(&backend, workflow_command(workflow)?, out),
        FleetCommand::Tail { follow, from } => tail(db, &backend, follow, from, out),
        FleetCommand::Append {
            agent,
            kind,
            payload,
        } => run_command(
            &backend,
            Command::Custom {
                agent: agent.agent,
                kind,
                payload: json_arg("--payload", &payload)?,
            },
            out,
        ),
        FleetCommand::Workflows(WorkflowsCommand::Stats { window, top }) => {
            let (from, to) = window.times()?;
            let query = Query::WorkflowStats {
                project: window.project.clone(),
                from,
                to,
                top,
            };
            show_analytic(
                &backend,
                query,
                window.as_of.as_deref(),
                out,
                workflow_stats_text,
            )
        }
        FleetCommand::Overhead { window } => {
            let (from, to) = window.times()?;
            let query = Query::Overhead {
                project: window.project.clone(),
                from,
                to,
            };
            show_analytic(&backend, query, window.as_of.as_deref(), out, overhead_text)
        }
        FleetCommand::Trends {
            agent,
            days,
            threshold,
            as_of,
        } => {
            let single = agent.is_some();
            let query = Query::Trends {
                agent,
                days,
                threshold_points: threshold,
            };
            show_analytic(
                &backend,
                query,
                as_of.as_deref(),
                out,
                if single { trend_text } else { trends_text },
            )
        }
        FleetCommand::BestAgent {
            task,
            domain,
            min_confidence,
            top,
            as_of,
        } => {
            let query = Query::BestAgent {
                task,
                domain,
                min_confidence,
                top,
            };
            let value = backend.query_as_of(&query, as_of.as_deref())?;
            out.emit(&value, || candidates_text(&value));
            let found = value["candidates"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
            Ok(if found {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        FleetCommand::Costs { window } => {
            let (from, to) = window.times()?;
            let query = Query::Costs {
                project: window.project.clone(),
                from,
                to,
            };
            show_analytic(&backend, query, window.as_of.as_deref(), out, costs_text)
        }
        FleetCommand::Replay { .. } => unreachable!("handled above"),
    }
}

fn show_analytic(
    backend: &Backend,
    query: Query,
    as_of: Option<&str>,
    out: &Output,
    human: fn(&Value) -> String,
) -> Result<ExitCode> {
    let value = backend.query_as_of(&query, as_of)?;
    out.emit(&value, || human(&value));
    Ok(ExitCode::SUCCESS)
}

fn number(value: &Value, scale: f64, digits: usize) -> String {
    value
        .as_f64()
        .map_or("-".to_owned(), |n| format!("{:.*}", digits, n * scale))
}

fn minutes(value: &Value) -> String {
    number(value, 1.0 / 60_000.0, 1)
}

fn workflow_stats_text(value: &Value) -> String {
    let sequences: Vec<Vec<String>> = rows_by(&value["common_sequences"], |s| {
        vec![
            text(&s["count"]),
            s["agents"].as_array().map_or(String::new(), |a| {
                a.iter().map(text).collect::<Vec<_>>().join(" → ")
            }),
        ]
    });
    format!(
        "{} workflows: {} completed, {} failed, {} running, {} cancelled\nsuccess rate {}%\nduration (min): mean {}, p50 {}, p90 {}\nagents per workflow {}\nestimated vs actual (min): {} vs {} (×{})\n\n{}",
        text(&value["total"]),
        text(&value["completed"]),
        text(&value["failed"]),
        text(&value["running"]),
        text(&value["cancelled"]),
        number(&value["success_rate"], 100.0, 1),
        minutes(&value["duration_ms"]["mean"]),
        minutes(&value["duration_ms"]["p50"]),
        minutes(&value["duration_ms"]["p90"]),
        number(&value["average_agents"], 1.0, 1),
        minutes(&value["estimated_ms_mean"]),
        minutes(&value["actual_ms_mean"]),
        number(&value["actual_over_estimated"], 1.0, 2),
        table(&["COUNT", "AGENT SEQUENCE"], &sequences)
    )
}

fn overhead_text(value: &Value) -> String {
    let workflows: Vec<Vec<String>> = rows_by(&value["workflows"], |w| {
        vec![
            text(&w["workflow_id"]),
            minutes(&w["wall_ms"]),
            minutes(&w["agent_ms"]),
            number(&w["overhead"], 100.0, 1),
        ]
    });
    let waits: Vec<Vec<String>> = [
        "queue_wait_ms",
        "lock_wait_ms",
        "signal_latency_ms",
        "handoff_gap_ms",
        "approval_wait_ms",
    ]
    .iter()
    .map(|kind| {
        let fleet = &value[*kind]["fleet"];
        vec![
            kind.trim_end_matches("_ms").replace('_', " "),
            text(&fleet["count"]),
            number(&fleet["total"], 1.0 / 1000.0, 1),
            number(&fleet["p50"], 1.0 / 1000.0, 2),
            number(&fleet["p90"], 1.0 / 1000.0, 2),
        ]
    })
    .collect();
    format!(
        "{}\n\nmean overhead {}% ({}): {}\naverage coordination per workflow {} min\n\n{}",
        table(
            &["WORKFLOW", "WALL MIN", "AGENT MIN", "OVERHEAD %"],
            &workflows
        ),
        number(&value["overhead"]["mean"], 100.0, 1),
        text(&value["band"]),
        text(&value["recommendation"]),
        number(&value["coordination_minutes_mean"], 1.0, 1),
        table(&["WAIT", "COUNT", "TOTAL S", "P50 S", "P90 S"], &waits)
    )
}

fn trend_row(trend: &Value) -> Vec<String> {
    vec![
        text(&trend["agent"]),
        text(&trend["trend"]),
        number(&trend["recent"]["success_rate"], 100.0, 0),
        text(&trend["recent"]["samples"]),
        number(&trend["historical"]["success_rate"], 100.0, 0),
        text(&trend["historical"]["samples"]),
        number(&trend["change_points"], 1.0, 1),
    ]
}

const TREND_HEADERS: [&str; 7] = [
    "AGENT",
    "TREND",
    "RECENT %",
    "N",
    "BEFORE %",
    "N",
    "CHANGE PTS",
];

fn trend_text(value: &Value) -> String {
    let days: Vec<Vec<String>> = rows_by(&value["daily"], |d| {
        vec![
            text(&d["date"]),
            text(&d["successes"]),
            text(&d["failures"]),
            minutes(&d["duration_ms_mean"]),
        ]
    });
    format!(
        "{}\n\n{}",
        table(&TREND_HEADERS, &[trend_row(value)]),
        table(&["DAY", "OK", "FAILED", "MEAN MIN"], &days)
    )
}

fn trends_text(value: &Value) -> String {
    let rows = rows_by(&value["agents"], trend_row);
    table(&TREND_HEADERS, &rows)
}

fn candidates_text(value: &Value) -> String {
    let rows: Vec<Vec<String>> = rows_by(&value["candidates"], |c| {
        vec![
            text(&c["agent"]),
            number(&c["confidence"], 1.0, 2),
            number(&c["success_rate"], 100.0, 0),
            text(&c["relevant_tasks"]),
            text(&c["reason"]),
        ]
    });
    match rows.is_empty() {
        true => "no agent's history makes a confident match".to_owned(),
        false => table(&["AGENT", "CONFIDENCE", "SUCCESS %", "TASKS", "WHY"], &rows),
    }
}

fn costs_text(value: &Value) -> String {
    let section = |name: &str| -> Vec<Vec<String>> {
        value[name]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, spend)| {
                vec![
                    key.clone(),
                    number(&spend["cost_usd"], 1.0, 4),
                    text(&spend["tokens"]),
                    text(&spend["stages"]),
                ]
            })
            .collect()
    };
    let budgets: Vec<Vec<String>> = rows_by(&value["budgets"], |b| {
        vec![
            text(&b["workflow_id"]),
            number(&b["limit_usd"], 1.0, 2),
            number(&b["spent_usd"], 1.0, 4),
            text(&b["exceeded"]),
        ]
    });
    format!(
        "total ${} ({} tokens)\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}",
        number(&value["total"]["cost_usd"], 1.0, 4),
        text(&value["total"]["tokens"]),
        table(
            &["WORKFLOW", "USD", "TOKENS", "STAGES"],
            &section("by_workflow")
        ),
        table(&["AGENT", "USD", "TOKENS", "STAGES"], &section("by_agent")),
        table(&["TIER", "USD", "TOKENS", "STAGES"], &section("by_tier")),
        table(&["DAY", "USD", "TOKENS", "STAGES"], &section("by_day")),
        table(
            &["BUDGETED WORKFLOW", "LIMIT", "SPENT", "EXCEEDED"],
            &budgets
        )
    )
}

/// `import --format oak`: telemetry files become ledger events, atomically.
pub fn import_telemetry(
    db: &Path,
    files: &[std::path::PathBuf],
    skip_invalid: bool,
    agent: &str,
    out: &Output,
) -> Result<ExitCode> {
    let contents = files
        .iter()
        .map(|file| {
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))
                .map(|text| (file.display().to_string(), text))
        })
        .collect::<Result<Vec<_>>>()?;
    let (events, errors) = fleetlog_projections::telemetry::parse(&contents);
    if !errors.is_empty() && !skip_invalid {
        let listed: Vec<String> = errors.iter().take(20).map(ToString::to_string).collect();
        anyhow::bail!(
            "{} bad line(s); nothing was imported (pass --skip-invalid to import the rest):\n{}",
            errors.len(),
            listed.join("\n")
        );
    }
    let backend = Backend::connect(db)?;
    // The importer is an agent like any other: register it (again) so the import is attributed.
    backend.execute(&Command::Register {
        agent: agent.to_owned(),
        role: "importer".to_owned(),
        name: agent.to_owned(),
        working_on: String::new(),
        capabilities: vec![],
        metadata: Json::null(),
    })?;
    let count = events.len();
    let outcome = backend.execute(&Command::ImportTelemetry {
        agent: agent.to_owned(),
        events,
    })?;
    let value =
        serde_json::json!({ "imported": count, "skipped_lines": errors.len(), "outcome": outcome });
    out.emit(&value, || {
        let skipped: Vec<String> = errors.iter().map(|e| format!("skipped {e}")).collect();
        format!(
            "imported {count} events from {} file(s)\n{}",
            files.len(),
            skipped.join("\n")
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn signal_command(signal: SignalCommand) -> Result<Command> {
    Ok(match signal {
        SignalCommand::Send {
            agent,
            kind,
            to,
            payload,
            ttl_ms,
            reply_to,
        } => Command::SendSignal {
            agent: agent.agent,
            kind,
            target: to.map_or(SignalTarget::Broadcast, SignalTarget::Agent),
            payload: json_arg("--payload", &payload)?,
            ttl_ms,
            correlation_id: reply_to,
        },
        SignalCommand::Check {
            agent,
            kind,
            from,
            peek,
            ack_ms,
        } => Command::ReceiveSignal {
            agent: agent.agent,
            filter: filter(kind, from, None),
            consume: !peek,
            wait_ms: None,
            ack_ms,
        },
        SignalCommand::Ack { agent, signal } => Command::AckSignal {
            agent: agent.agent,
            signal,
        },
        SignalCommand::Wait {
            agent,
            kind,
            from,
            reply_to,
            timeout_ms,
            peek,
            ack_ms,
        } => Command::ReceiveSignal {
            agent: agent.agent,
            filter: filter(kind, from, reply_to),
            consume: !peek,
            wait_ms: Some(timeout_ms),
            ack_ms,
        },
    })
}

fn lock_command(lock: LockCommand) -> Command {
    match lock {
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
        LockCommand::List | LockCommand::Check { .. } => {
            unreachable!("queries are handled by the caller")
        }
    }
}

fn task_command(task: TaskCommand) -> Result<Command> {
    Ok(match task {
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
        TaskCommand::List { .. } | TaskCommand::Show { .. } | TaskCommand::Stats => {
            unreachable!("queries are handled by the caller")
        }
    })
}

fn approval_command(approval: ApprovalCommand) -> Result<Command> {
    Ok(match approval {
        ApprovalCommand::Request {
            agent,
            action,
            context,
            approvers,
            timeout_ms,
        } => Command::RequestApproval {
            agent: agent.agent,
            action,
            context: json_arg("--context", &context)?,
            approvers,
            timeout_ms,
        },
        ApprovalCommand::Approve { agent, id, reason } => Command::Decide {
            agent: agent.agent,
            approval: id,
            approved: true,
            reason,
        },
        ApprovalCommand::Reject { agent, id, reason } => Command::Decide {
            agent: agent.agent,
            approval: id,
            approved: false,
            reason,
        },
        ApprovalCommand::Wait {
            agent,
            id,
            timeout_ms,
        } => Command::AwaitApproval {
            agent: agent.agent,
            approval: id,
            wait_ms: timeout_ms,
        },
        ApprovalCommand::List { .. } => unreachable!("queries are handled by the caller"),
    })
}

fn workflow_command(workflow: WorkflowCommand) -> Result<Command> {
    Ok(match workflow {
        WorkflowCommand::Start {
            agent,
            id,
            project,
            plan,
            estimate_ms,
        } => Command::StartWorkflow {
            agent: agent.agent,
            workflow_id: id,
            project,
            agent_plan: plan,
            estimated_duration_ms: estimate_ms,
        },
        WorkflowCommand::Stage {
            agent,
            id,
            stage,
            by,
            tier,
            done,
            outcome,
            duration_ms,
            cost_usd,
            tokens,
        } => {
            let stage_agent = by.unwrap_or_else(|| agent.agent.clone());
            match done {
                false => Command::StartStage { agent: agent.agent, workflow_id: id, stage, stage_agent, tier },
                true => Command::CompleteStage {
                    agent: agent.agent,
                    workflow_id: id,
                    report: StageReport {
                        stage,
                        agent: stage_agent,
                        tier,
                        outcome: serde_json::from_value::<Work>(Value::String(outcome.clone()))
                            .with_context(|| format!("--outcome {outcome:?} is not success, failure, partial or unknown"))?,
                        duration_ms,
                        cost_usd,
                        tokens,
                        description: String::new(),
                        tags: vec![],
                        quality: None,
                    },
                },
            }
        }
        WorkflowCommand::Handoff {
            agent,
            id,
            from,
            to,
            artifacts,
        } => Command::Handoff {
            agent: agent.agent,
            workflow_id: id,
            from_agent: from,
            to_agent: to,
            artifacts,
        },
        WorkflowCommand::Checkpoint {
            agent,
            id,
            stage,
            state,
        } => Command::Checkpoint {
            agent: agent.agent,
            workflow_id: id,
            stage,
            state: json_arg("--state", &state)?,
        },
        WorkflowCommand::Complete { agent, id, failed } => Command::CompleteWorkflow {
            agent: agent.agent,
            workflow_id: id,
            success: failed.is_none(),
            error: failed,
            agents_executed: vec![],
        },
        WorkflowCommand::Budget {
            agent,
            id,
            limit_usd,
        } => Command::SetBudget {
            agent: agent.agent,
            workflow_id: id,
            limit_usd,
        },
        WorkflowCommand::Show { .. } | WorkflowCommand::List => {
            unreachable!("queries are handled by the caller")
        }
    })
}

/// Runs a command and prints its outcome. An empty claim or check exits 3 ("nothing found").
fn run_command(backend: &Backend, command: Command, out: &Output) -> Result<ExitCode> {
    let outcome = backend.execute(&command)?;
    let value = serde_json::to_value(&outcome).context("serialising the outcome")?;
    out.emit(&value, || outcome_text(&outcome));
    Ok(match outcome {
        Outcome::Signal { signal: None } | Outcome::Task { task: None } => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Appended { seq } => format!("ok (seq {seq})"),
        Outcome::Signal {
            signal: Some(signal),
        } => format!(
            "signal {} {:?} from {}: {}",
            signal.id,
            signal.kind,
            signal.from,
            signal.payload.as_str()
        ),
        Outcome::Signal { signal: None } => "no signal".to_owned(),
        Outcome::Lock { lock } => format!(
            "locked {} with token {} until {}",
            lock.resource, lock.token, lock.expires_at
        ),
        Outcome::Task { task: Some(task) } => format!(
            "claimed task {} {:?} (attempt {}, lease until {})",
            task.id,
            task.title,
            task.attempts,
            task.lease_expires
                .map_or("-".to_owned(), |at| at.to_string())
        ),
        Outcome::Task { task: None } => "no task available".to_owned(),
        Outcome::Approval { approval } => {
            format!("approval {} is {:?}", approval.id, approval.state)
        }
    }
}

fn show_query(
    backend: &Backend,
    query: Query,
    out: &Output,
    human: fn(&Value) -> String,
) -> Result<ExitCode> {
    let value = backend.query_all(&query)?;
    out.emit(&value, || human(&value));
    Ok(ExitCode::SUCCESS)
}

/// A query whose answer has a typed view: every page fetched, printed as JSON with `--json`,
/// else rendered from the view.
fn show_view<T: serde::de::DeserializeOwned>(
    backend: &Backend,
    query: Query,
    out: &Output,
    human: fn(&T) -> String,
) -> Result<ExitCode> {
    let value = backend.query_all(&query)?;
    let view: T = serde_json::from_value(value.clone()).context(
        "the answer does not match this CLI's view of it (is the daemon another version?)",
    )?;
    out.emit(&value, || human(&view));
    Ok(ExitCode::SUCCESS)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One table row per item of a JSON array, built by `row` (the analytics' reports).
fn rows_by(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(row).collect()
}

/// A typed value as a table cell: text as is, numbers and the rest as JSON, none as `-`.
fn cell(value: impl serde::Serialize) -> String {
    text(&serde_json::to_value(value).unwrap_or(Value::Null))
}

fn agents_text(page: &views::AgentsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .agents
        .iter()
        .map(|view| {
            let agent = &view.agent;
            vec![
                agent.id.clone(),
                agent.role.clone(),
                cell(view.alive),
                agent.status.clone(),
                cell(agent.progress),
                cell(agent.last_heartbeat),
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "ROLE",
            "ALIVE",
            "STATUS",
            "PROGRESS",
            "LAST HEARTBEAT",
        ],
        &rows,
    )
}

fn locks_rows(locks: &[fleetlog_projections::locks::Lock]) -> String {
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

fn locks_text(page: &views::LocksPage) -> String {
    locks_rows(&page.locks)
}

fn tasks_text(page: &views::TasksPage) -> String {
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

fn approvals_text(page: &views::ApprovalsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .approvals
        .iter()
        .map(|view| {
            let approval = &view.approval;
            vec![
                approval.id.to_string(),
                cell(approval.state),
                approval.action.clone(),
                approval.requested_by.clone(),
                cell(&approval.decided_by),
                cell(view.deadline),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "ACTION",
            "REQUESTED BY",
            "DECIDED BY",
            "DEADLINE",
        ],
        &rows,
    )
}

fn threads_text(page: &views::ThreadsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .threads
        .iter()
        .map(|thread| {
            vec![
                thread.id.to_string(),
                thread.priority.to_string(),
                thread.title.clone(),
                thread.posts.len().to_string(),
            ]
        })
        .collect();
    table(&["ID", "PRIORITY", "TITLE", "POSTS"], &rows)
}

fn thread_text(thread: &fleetlog_projections::board::Thread) -> String {
    let posts: Vec<Vec<String>> = thread
        .posts
        .iter()
        .map(|post| {
            vec![
                post.seq.to_string(),
                cell(post.at),
                post.author.clone(),
                post.message.clone(),
            ]
        })
        .collect();
    format!(
        "{}\n\n{}",
        thread.title,
        table(&["SEQ", "AT", "AUTHOR", "MESSAGE"], &posts)
    )
}

fn decisions_text(page: &views::DecisionsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .decisions
        .iter()
        .map(|decision| {
            vec![
                decision.seq.to_string(),
                cell(decision.at),
                decision.agent.clone(),
                decision.decision_type.clone(),
                decision.reason.clone(),
            ]
        })
        .collect();
    table(&["SEQ", "AT", "AGENT", "TYPE", "REASON"], &rows)
}

fn workflow_rows(workflows: &[views::WorkflowSummary]) -> String {
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|workflow| {
            vec![
                workflow.id.clone(),
                workflow.project.clone(),
                cell(workflow.status),
                cell(workflow.progress),
                workflow.stages.to_string(),
                cell(workflow.spent_usd),
            ]
        })
        .collect();
    table(
        &[
            "WORKFLOW",
            "PROJECT",
            "STATUS",
            "PROGRESS",
            "STAGES",
            "SPENT USD",
        ],
        &rows,
    )
}

fn workflows_text(page: &views::WorkflowsPage) -> String {
    workflow_rows(&page.workflows)
}

fn status_text(status: &views::StatusView) -> String {
    format!(
        "seq {}: {} agents alive of {} known, {} approvals pending\n\nlocks\n{}\n\nqueue {}\n\nworkflows\n{}",
        status.seq,
        status.agents_active,
        status.agents_known,
        status.approvals_pending,
        locks_rows(&status.locks),
        cell(&status.queue.by_state),
        workflow_rows(&status.workflows)
    )
}

/// Prints recent events, and with --follow every new one as it commits (daemon only).
fn tail(
    db: &Path,
    backend: &Backend,
    follow: bool,
    from: Option<u64>,
    out: &Output,
) -> Result<ExitCode> {
    let print = |record: &fleetlog_ledger::Record| match out.is_json() {
        true => println!("{}", serde_json::to_string(record).unwrap_or_default()),
        false => println!(
            "{:>8}  {}  {:<16} {}",
            record.seq,
            record.ts,
            record.actor,
            record.event.kind()
        ),
    };
    match backend {
        Backend::Daemon(client) => {
            let head = client.request(hyper::Method::GET, "/v1/head", None)?["seq"]
                .as_u64()
                .unwrap_or(0);
            let from = from.unwrap_or(head.saturating_sub(9).max(1));
            client.follow(from, |record| {
                print(&record);
                follow || record.seq < head
            })?;
        }
        Backend::Embedded(coordinator) => {
            if follow {
                anyhow::bail!(
                    "tail -f follows a running daemon: start `fleetlog --db {} serve` first",
                    db.display()
                );
            }
            let reader = coordinator.ledger().reader();
            let last = reader.last_seq()?;
            let from = from.unwrap_or(last.saturating_sub(9).max(1));
            for record in reader.range(from..=last)? {
                print(&record);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The coordination state as it was at `as_of`, read from the file (beside a daemon too).
fn replay(db: &Path, as_of: &str, out: &Output) -> Result<ExitCode> {
    let as_of: fleetlog_projections::AsOf = as_of.parse()?;
    let ledger = crate::commands::ledger::open_for_reading(db, false)?;
    let seq = fleetlog_projections::resolve(ledger.reader(), as_of)?;
    let bar = out.progress(seq, "replaying");
    let progress = |reached: u64| bar.set_position(reached);
    let state = fleetlog_projections::rebuild_reporting(ledger.reader(), seq, &progress)?;
    bar.finish_and_clear();
    let now = match as_of {
        fleetlog_projections::AsOf::Time(ts) => ts,
        _ => state.ts,
    };
    let value = fleetlog::wire::answer(&state, now, &Query::Status)?;
    let status: views::StatusView = serde_json::from_value(value.clone())?;
    out.emit(&value, || {
        format!("as of {as_of} (seq {seq}, {now})\n{}", status_text(&status))
    });
    Ok(ExitCode::SUCCESS)
}

/// `fleetlog demo`: runs the fleet, then shows the analytics, the verified head, and how to look
/// around. Exits 1 if any pattern failed.
pub fn demo(db: Option<&Path>, quick: bool, out: &Output) -> Result<ExitCode> {
    let db = match db {
        Some(db) => db.to_owned(),
        None => {
            let dir = std::env::temp_dir().join(format!("fleetlog-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.join("fleet.redb")
        }
    };
    let size = if quick {
        fleetlog::demo::DemoSize::QUICK
    } else {
        fleetlog::demo::DemoSize::FULL
    };
    let spinner = out.progress(0, "fleet");
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let status = spinner.clone();
    let report = fleetlog::demo::run(&db, size, move |line| status.set_message(line.to_owned()))?;
    spinner.finish_and_clear();

    let backend = Backend::connect(&db)?;
    let stats = backend.query(&Query::WorkflowStats {
        project: None,
        from: None,
        to: None,
        top: 3,
    })?;
    let overhead = backend.query(&Query::Overhead {
        project: None,
        from: None,
        to: None,
    })?;
    let trends = backend.query(&Query::Trends {
        agent: None,
        days: 30,
        threshold_points: fleetlog_projections::analytics::TREND_THRESHOLD_POINTS_DEFAULT,
    })?;
    drop(backend);
    let ledger = crate::commands::ledger::open_for_reading(&db, true)?;
    let verified = ledger.verify(fleetlog_ledger::VerifyOptions::default())?;
    let passed = report.checks.iter().all(|check| check.passed);
    let value = serde_json::json!({
        "db": db,
        "passed": passed,
        "seconds": report.elapsed.as_secs_f64(),
        "checks": report.checks.iter().map(|c| serde_json::json!({"pattern": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
        "workflow_stats": stats,
        "overhead": overhead,
        "trends": trends,
        "verify": verified,
    });
    out.emit(&value, || {
        let checks: Vec<String> = report
            .checks
            .iter()
            .map(|c| format!("{} {}\n    {}", if c.passed { "✔" } else { "✘" }, c.name, c.detail))
            .collect();
        let db_arg = db.display();
        format!(
            "fleetlog demo: {} in {:.1} s\n\n{}\n\n== workflows\n{}\n\n== coordination overhead\n{}\n\n== agents, worst first\n{}\n\n== integrity\n{}\nhead {}\n\n== look around\n  fleetlog --db {db_arg} events --limit 30\n  fleetlog --db {db_arg} replay --as-of {}\n  fleetlog --db {db_arg} workflow show feature-0\n  fleetlog --db {db_arg} trends worker-0\n  fleetlog --db {db_arg} verify --from {}",
            if passed { "every pattern passed" } else { "SOME PATTERNS FAILED" },
            report.elapsed.as_secs_f64(),
            checks.join("\n"),
            workflow_stats_text(&stats),
            overhead_text(&overhead),
            trends_text(&trends),
            match &verified.problem {
                None => format!("ok: {} records verified from genesis", verified.checked),
                Some(problem) => format!("BROKEN: {problem}"),
            },
            verified.verified_head,
            verified.verified_head.seq / 2,
            verified.verified_head,
        )
    });
    Ok(if passed && verified.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
