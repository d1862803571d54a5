//! The coordination subcommands: each builds one state-machine command or query, runs it on the
//! daemon or embedded backend, and prints the answer (a table or line for people, JSON with
//! `--json`).

mod agents;
mod analytics;
mod approvals;
mod board;
mod decisions;
pub mod history;
mod locks;
mod signals;
mod tasks;
mod workflows;

use fleetlog_projections::commands::{CustomEvent, Deregister, Heartbeat, Register, SetSpendLimit};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetlog::client::backend::Backend;
use fleetlog::wire::{Query, views};
use fleetlog_ledger::{Json, Timestamp};
use fleetlog_projections::{Command, Outcome};
use serde_json::Value;

use crate::commands::output::Output;

use agents::*;
use analytics::*;
use approvals::*;
use board::*;
use decisions::*;
use history::*;
use locks::*;
use signals::*;
use tasks::*;
use workflows::*;

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
        /// Include expired and deregistered agents.
        #[arg(long)]
        all: bool,
        /// Only agents with this capability.
        #[arg(long)]
        capability: Option<String>,
    },
    /// Is this agent alive? Exit 0 alive, 1 not alive (expired or deregistered), 3 unknown.
    Alive {
        #[command(flatten)]
        agent: Agent,
    },
    /// Alive agents whose progress has not changed for --threshold milliseconds.
    Hung {
        /// How long progress must have stood still (e.g. 5m, 300s).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 300_000)]
        threshold: u64,
    },
    /// Agents whose last heartbeat is older than --threshold milliseconds.
    Stale {
        /// How old the last heartbeat must be (e.g. 60s, 2m).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 60_000)]
        threshold: u64,
    },
    /// Register an agent (or update its registration).
    Register {
        #[command(flatten)]
        agent: Agent,
        /// What the agent does (e.g. `backend-architect`); a specialisation search matches it.
        #[arg(long, default_value = "")]
        role: String,
        /// A display name.
        #[arg(long, default_value = "")]
        name: String,
        /// What it is working on now, free text.
        #[arg(long, default_value = "")]
        working_on: String,
        /// A capability it offers (repeat for several); tasks requiring one only go to agents
        /// that have it.
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        /// How many tasks it works on at once (what team plans respect); stored in its metadata
        /// as `max_concurrent_tasks`.
        #[arg(long)]
        max_concurrent_tasks: Option<u32>,
        /// Free-form JSON metadata (an object).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Remove an agent from the fleet, releasing its locks and leases.
    Deregister {
        #[command(flatten)]
        agent: Agent,
        /// Why it leaves, kept in the log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Report that an agent is alive (an expired agent comes back). What is left out keeps its
    /// last value.
    Heartbeat {
        #[command(flatten)]
        agent: Agent,
        /// Free-form status, e.g. `working`, `idle`, `blocked`.
        #[arg(long)]
        status: Option<String>,
        /// Progress from 0 to 1.
        #[arg(long)]
        progress: Option<f64>,
        /// The task the agent works on now (`""` clears it).
        #[arg(long)]
        task: Option<String>,
        /// How long this sign of life keeps the agent alive.
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = fleetlog_projections::agents::HEARTBEAT_TTL_MS_DEFAULT)]
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
        /// The custom event's kind (what readers filter on).
        #[arg(long)]
        kind: String,
        /// The event's JSON payload.
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
        /// The days of history to look at, up to now (or --as-of).
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Percentage points of change that count as a trend.
        #[arg(long, default_value_t = fleetlog_projections::analytics::TREND_THRESHOLD_POINTS_DEFAULT)]
        threshold: f64,
        /// As the ledger was at `head`, a seq, or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// The agents best suited to a task, from their history (exit 3 if none is good enough).
    BestAgent {
        /// What the task is, in words (matched against past work).
        #[arg(long)]
        task: String,
        /// A domain to match as well (e.g. backend).
        #[arg(long)]
        domain: Option<String>,
        /// Leave out candidates below this confidence (0..=1).
        #[arg(long, default_value_t = 0.3)]
        min_confidence: f64,
        /// How many candidates to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// As the ledger was at `head`, a seq, or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Cost and tokens by workflow, agent, tier and day, with budget status.
    Costs {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Set (or remove) a daily spending limit, USD per UTC day, of one agent or the whole fleet:
    /// stages are refused while one is exceeded.
    SpendLimit {
        #[command(flatten)]
        agent: Agent,
        /// The agent whose spending is limited; without it, the whole fleet's.
        #[arg(long)]
        spender: Option<String>,
        /// The limit in USD per UTC day.
        #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
        limit_usd: Option<f64>,
        /// Remove the limit instead.
        #[arg(long)]
        remove: bool,
    },
    /// Live agents that can do a kind of work, ranked by their record and free capacity
    /// (exit 3 if none can).
    Staff {
        /// A capability every listed agent must have (repeat for several).
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        /// A specialisation: one of the agent's capabilities, or its role.
        #[arg(long)]
        specialization: Option<String>,
        /// How many agents to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// As the ledger was at `head`, a seq, or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Propose a team: who does which task, in dependency waves, within each agent's
    /// concurrency limit (`max_concurrent_tasks` in its registration metadata). Records nothing;
    /// exit 3 if some task cannot be staffed.
    Team {
        /// A task as ID[:CAPABILITY,…[:PRIORITY[:DEPENDENCY,…]]], e.g. `api:backend,python:5:schema`
        /// (repeat for several).
        #[arg(long = "task", value_name = "SPEC")]
        tasks: Vec<String>,
        /// Tasks as JSON (`[{"id", "required_capabilities", "priority", "depends_on"}]`) from a
        /// file, or `-` for standard input.
        #[arg(long, value_name = "FILE")]
        tasks_file: Option<std::path::PathBuf>,
        /// As the ledger was at `head`, a seq, or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// `--metadata` (an object) with `--max-concurrent-tasks` folded in.
fn registration_metadata(text: Option<&str>, max_concurrent_tasks: Option<u32>) -> Result<Json> {
    let mut value = match text {
        None => Value::Object(serde_json::Map::new()),
        Some(text) => json_arg("--metadata", text)?.to_value(),
    };
    let Some(object) = value.as_object_mut() else {
        anyhow::bail!("--metadata must be a JSON object, e.g. '{{\"team\": \"infra\"}}'");
    };
    if let Some(limit) = max_concurrent_tasks {
        object.insert("max_concurrent_tasks".to_owned(), limit.into());
    }
    Ok(match object.is_empty() {
        true => Json::null(),
        false => Json::from_value(&value),
    })
}

pub(super) fn json_arg(flag: &str, text: &str) -> Result<Json> {
    Json::parse(text)
        .with_context(|| format!("{flag} is not valid JSON: {text:?} (quote strings: '\"text\"')"))
}

pub(super) fn time_arg(flag: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text)
        .with_context(|| format!("{flag} {text:?} is not an RFC 3339 time"))
}

pub fn run(db: &Path, as_operator: bool, command: FleetCommand, out: &Output) -> Result<ExitCode> {
    let backend = Backend::connect(db, as_operator)?;
    match command {
        FleetCommand::Status => show_view(&backend, Query::Status, out, status_text),
        FleetCommand::Agents { all, capability } => show_view(
            &backend,
            Query::Agents {
                all,
                capability,
                limit: None,
                cursor: None,
            },
            out,
            agents_text,
        ),
        FleetCommand::Alive { agent } => agents::alive(&backend, &agent.agent, out),
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
            max_concurrent_tasks,
            metadata,
        } => {
            let metadata = registration_metadata(metadata.as_deref(), max_concurrent_tasks)?;
            run_command(
                &backend,
                Command::Register(Register {
                    agent: agent.agent,
                    role,
                    name,
                    working_on,
                    capabilities,
                    metadata,
                }),
                out,
            )
        }
        FleetCommand::Deregister { agent, reason } => run_command(
            &backend,
            Command::Deregister(Deregister {
                agent: agent.agent,
                reason,
            }),
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
            Command::Heartbeat(Heartbeat {
                agent: agent.agent,
                status,
                progress,
                current_task: task,
                metadata: None,
                ttl_ms,
            }),
            out,
        ),
        FleetCommand::Signal(command) => signals::run(&backend, command, out),
        FleetCommand::Lock(command) => locks::run(&backend, command, out),
        FleetCommand::Task(command) => tasks::run(&backend, command, out),
        FleetCommand::Approval(command) => approvals::run(&backend, command, out),
        FleetCommand::Board(command) => board::run(&backend, command, out),
        FleetCommand::Decision(command) => decisions::run(&backend, command, out),
        FleetCommand::Workflow(command) => workflows::run(&backend, command, out),
        FleetCommand::Tail { follow, from } => tail(db, &backend, follow, from, out),
        FleetCommand::Append {
            agent,
            kind,
            payload,
        } => run_command(
            &backend,
            Command::Custom(CustomEvent {
                agent: agent.agent,
                kind,
                payload: json_arg("--payload", &payload)?,
            }),
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
            match single {
                true => show_analytic(&backend, query, as_of.as_deref(), out, trend_text),
                false => show_analytic(&backend, query, as_of.as_deref(), out, trends_text),
            }
        }
        FleetCommand::SpendLimit {
            agent,
            spender,
            limit_usd,
            remove: _,
        } => run_command(
            &backend,
            Command::SetSpendLimit(SetSpendLimit {
                agent: agent.agent,
                spender,
                limit_usd,
            }),
            out,
        ),
        FleetCommand::Staff {
            capabilities,
            specialization,
            top,
            as_of,
        } => {
            let query = Query::Staff {
                capability: (!capabilities.is_empty()).then(|| capabilities.join(",")),
                specialization,
                top,
            };
            let value = backend.query_as_of(&query, as_of.as_deref())?;
            let found: views::StaffView = typed(&value)?;
            out.emit(&value, || staff_text(&found));
            Ok(match found.agents.is_empty() {
                true => ExitCode::from(3),
                false => ExitCode::SUCCESS,
            })
        }
        FleetCommand::Team {
            tasks,
            tasks_file,
            as_of,
        } => {
            let tasks = team_tasks(&tasks, tasks_file.as_deref())?;
            let value = backend.query_as_of(&Query::Team { tasks }, as_of.as_deref())?;
            let plan: fleetlog_projections::analytics::TeamPlan = typed(&value)?;
            out.emit(&value, || team_text(&plan));
            Ok(match plan.unassigned.is_empty() {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(3),
            })
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
            let found: views::CandidatesView = typed(&value)?;
            out.emit(&value, || candidates_text(&found));
            Ok(if !found.candidates.is_empty() {
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
    }
}

/// Runs a command and prints its outcome. An empty claim or check exits 3 ("nothing found").
pub(super) fn run_command(backend: &Backend, command: Command, out: &Output) -> Result<ExitCode> {
    let (outcome, value) = backend.execute_answer(&command)?;
    out.emit(&value, || match (&value["kind"], &value["id"]) {
        (Value::String(kind), id) if !id.is_null() => {
            format!("created {kind} {} (seq {})", id_text(id), value["seq"])
        }
        _ => outcome_text(&outcome),
    });
    Ok(match outcome {
        Outcome::Signal { signal: None } | Outcome::Task { task: None } => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

pub(super) fn outcome_text(outcome: &Outcome) -> String {
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

pub(super) fn show_query(
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
pub(super) fn show_view<T: serde::de::DeserializeOwned>(
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

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A typed value as a table cell: text as is, numbers and the rest as JSON, none as `-`.
pub(super) fn cell(value: impl serde::Serialize) -> String {
    text(&serde_json::to_value(value).unwrap_or(Value::Null))
}

/// How to run this binary again, as a user would type it: `fleetlog` when that is what `PATH`
/// finds, `cargo run --release -p fleetlog --` inside a cargo build tree, else the full path.
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "fleetlog".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("fleetlog")).is_ok_and(|found| found == exe))
    });
    let in_cargo_tree = exe
        .parent()
        .and_then(Path::parent)
        .is_some_and(|target| target.file_name().is_some_and(|name| name == "target"));
    match (on_path, in_cargo_tree) {
        (true, _) => "fleetlog".to_owned(),
        (false, true) if exe.parent().is_some_and(|dir| dir.ends_with("release")) => {
            "cargo run --release -p fleetlog --".to_owned()
        }
        (false, true) => "cargo run -p fleetlog --".to_owned(),
        (false, false) => exe.display().to_string(),
    }
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

    let backend = Backend::connect(&db, false)?;
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
    let (stats_view, overhead_view, trends_view) =
        (typed(&stats)?, typed(&overhead)?, typed(&trends)?);
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
        let fleetlog = invocation();
        format!(
            "fleetlog demo: {} in {:.1} s\n\n{}\n\n== workflows (simulated: each stage is milliseconds of work)\n{}\n\n== coordination overhead\nThe simulated stages do milliseconds of work, so waiting for locks, signals and handoffs\nis most of their wall time; it measures the demo's pacing, not a cost of fleetlog.\n{}\n\n== agent success trends, worst first\n{}\n\n== integrity\n{}\nhead {}\n\n== look around (read-only: these add nothing to the demo ledger)\n  {fleetlog} --db {db_arg} events --limit 30\n  {fleetlog} --db {db_arg} replay --as-of {}\n  {fleetlog} --db {db_arg} workflow show feature-0\n  {fleetlog} --db {db_arg} trends worker-0\n  {fleetlog} --db {db_arg} verify --from {}",
            if passed { "every pattern passed" } else { "SOME PATTERNS FAILED" },
            report.elapsed.as_secs_f64(),
            checks.join("\n"),
            workflow_stats_text(&stats_view),
            overhead_text(&overhead_view),
            trends_text(&trends_view),
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
