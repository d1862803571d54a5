//! `fleetlog signal …`: list, send, check, wait, acknowledge.

use anyhow::Result;
use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_ledger::SignalTarget;
use fleetlog_projections::Command;
use fleetlog_projections::commands::{AckSignal, ReceiveSignal, SendSignal};
use fleetlog_projections::signals::SignalFilter;

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum SignalCommand {
    /// The signals an agent can see now, oldest first (nothing is consumed).
    List {
        #[command(flatten)]
        agent: Agent,
    },
    /// Send a signal to one agent, or broadcast it to every agent.
    Send {
        #[command(flatten)]
        agent: Agent,
        /// What kind of signal (receivers filter on it), e.g. task_ready.
        #[arg(long)]
        kind: String,
        /// The target agent; omit to broadcast.
        #[arg(long)]
        to: Option<String>,
        /// The signal's JSON payload.
        #[arg(long, default_value = "null")]
        payload: String,
        /// How long it stays deliverable (e.g. 60s, 5m).
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = fleetlog_projections::signals::SIGNAL_TTL_MS_DEFAULT)]
        ttl_ms: u64,
        /// The signal this one answers.
        #[arg(long)]
        reply_to: Option<u64>,
    },
    /// Take the oldest matching signal without waiting (--peek leaves it).
    Check {
        #[command(flatten)]
        agent: Agent,
        /// Only signals of this kind.
        #[arg(long)]
        kind: String,
        /// Only signals from this agent.
        #[arg(long)]
        from: Option<String>,
        /// Leave the signal in the inbox (do not consume it).
        #[arg(long)]
        peek: bool,
        /// Acknowledged delivery: the signal stays yours until `signal ack`, and is receivable
        /// again if not acknowledged within this many milliseconds.
        #[arg(long, value_parser = crate::commands::units::millis, conflicts_with = "peek")]
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
        /// Only signals of this kind.
        #[arg(long)]
        kind: String,
        /// Only signals from this agent.
        #[arg(long)]
        from: Option<String>,
        /// Only the reply to this signal id.
        #[arg(long)]
        reply_to: Option<u64>,
        /// Give up after this long (e.g. 30s); exit 3 if nothing came.
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = 60_000)]
        timeout_ms: u64,
        /// Leave the signal in the inbox (do not consume it).
        #[arg(long)]
        peek: bool,
        /// Acknowledged delivery (see `signal check --ack-ms`).
        #[arg(long, value_parser = crate::commands::units::millis, conflicts_with = "peek")]
        ack_ms: Option<u64>,
    },
}

pub(super) fn filter(
    kind: String,
    from: Option<String>,
    correlation_id: Option<u64>,
) -> SignalFilter {
    SignalFilter {
        kind,
        from,
        correlation_id,
    }
}

/// Runs one `signals` subcommand.
pub(super) fn run(backend: &Backend, command: SignalCommand, out: &Output) -> Result<ExitCode> {
    let command = match command {
        SignalCommand::Send {
            agent,
            kind,
            to,
            payload,
            ttl_ms,
            reply_to,
        } => Command::SendSignal(SendSignal {
            agent: agent.agent,
            kind,
            target: to.map_or(SignalTarget::Broadcast, SignalTarget::Agent),
            payload: json_arg("--payload", &payload)?,
            ttl_ms,
            correlation_id: reply_to,
        }),
        SignalCommand::Check {
            agent,
            kind,
            from,
            peek,
            ack_ms,
        } => Command::ReceiveSignal(ReceiveSignal {
            agent: agent.agent,
            filter: filter(kind, from, None),
            consume: !peek,
            wait_ms: None,
            ack_ms,
        }),
        SignalCommand::List { agent } => {
            if let Err(error) = backend.query(&Query::Agent {
                id: agent.agent.clone(),
            }) {
                // An inbox of an agent that does not exist is an error, not an empty list.
                return Err(error.into());
            }
            return show_view(
                backend,
                Query::Inbox {
                    agent: agent.agent,
                    limit: None,
                    cursor: None,
                },
                out,
                signals_text,
            );
        }
        SignalCommand::Ack { agent, signal } => Command::AckSignal(AckSignal {
            agent: agent.agent,
            signal,
        }),
        SignalCommand::Wait {
            agent,
            kind,
            from,
            reply_to,
            timeout_ms,
            peek,
            ack_ms,
        } => Command::ReceiveSignal(ReceiveSignal {
            agent: agent.agent,
            filter: filter(kind, from, reply_to),
            consume: !peek,
            wait_ms: Some(timeout_ms),
            ack_ms,
        }),
    };
    run_command(backend, command, out)
}

fn signals_text(page: &views::SignalsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .signals
        .iter()
        .map(|signal| {
            vec![
                signal.id.to_string(),
                signal.kind.clone(),
                signal.from.clone(),
                cell(&signal.target),
                signal.payload.as_str().to_owned(),
                cell(signal.sent_at),
            ]
        })
        .collect();
    table(&["ID", "KIND", "FROM", "TO", "PAYLOAD", "SENT"], &rows)
}
