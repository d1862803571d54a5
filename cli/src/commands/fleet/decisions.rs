//! `fleetlog decision …`: log and list decisions.

use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::commands::LogDecision;

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum DecisionCommand {
    /// Record a decision with its reasoning and alternatives.
    Log {
        #[command(flatten)]
        agent: Agent,
        /// What kind of decision, e.g. architecture (what queries filter on).
        #[arg(long = "type")]
        decision_type: String,
        /// Why it was decided.
        #[arg(long)]
        reason: String,
        /// What it was about, free text.
        #[arg(long, default_value = "")]
        context: String,
        /// An alternative considered (repeat for several).
        #[arg(long = "alternative")]
        alternatives: Vec<String>,
    },
    /// Logged decisions, filtered by agent, type and time.
    List {
        /// Only decisions by this agent.
        #[arg(long = "by")]
        agent: Option<String>,
        /// Only decisions of this type.
        #[arg(long = "type")]
        decision_type: Option<String>,
        /// From this time (inclusive): RFC 3339, or a duration ago (2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Until this time (exclusive): RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
    },
}

pub(super) fn decisions_text(page: &views::DecisionsPage) -> String {
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

/// Runs one `decisions` subcommand.
pub(super) fn run(backend: &Backend, command: DecisionCommand, out: &Output) -> Result<ExitCode> {
    match command {
        DecisionCommand::Log {
            agent,
            decision_type,
            reason,
            context,
            alternatives,
        } => run_command(
            backend,
            Command::LogDecision(LogDecision {
                agent: agent.agent,
                decision_type,
                context,
                reason,
                alternatives,
                metadata: Json::null(),
            }),
            out,
        ),
        DecisionCommand::List {
            agent,
            decision_type,
            since,
            until,
        } => {
            let from = since
                .map(|text| crate::commands::units::moment("--since", &text))
                .transpose()?;
            let to = until
                .map(|text| crate::commands::units::moment("--until", &text))
                .transpose()?;
            show_view(
                backend,
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
    }
}
