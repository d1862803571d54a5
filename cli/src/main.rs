//! `fleetlog`: the operator's command line over one ledger file.
//!
//! Invariants: coordination commands run on the daemon serving the file when one answers on its
//! socket, and on the file itself otherwise; commands that only read the log open it read-only,
//! so they work beside a daemon; every command prints a human table by default and one JSON
//! document with `--json`; exit codes are 0 ok, 1 error (including a broken chain), 2 usage,
//! 3 not found or timed out.

mod commands;

use commands::{benchmark, fleet, output};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An append-only, hash-chained coordination log for agent fleets.
#[derive(Parser)]
#[command(name = "fleetlog", version, about)]
struct Cli {
    /// The ledger file (default: ./fleetlog.redb; for `demo`, a new temporary directory).
    #[arg(long, global = true, env = "FLEETLOG_DB")]
    db: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Act with the operator's credential (`<db>.keys/operator`): deregister other agents,
    /// decide approvals for a human, act for an agent whose credential is lost.
    #[arg(long, global = true, env = "FLEETLOG_AS_OPERATOR", value_parser = clap::builder::BoolishValueParser::new())]
    as_operator: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new, empty ledger.
    Init,
    /// Print the newest record as `seq:hash`; keep it to check for tampering later.
    Head,
    /// Recompute the hash chain and report the first bad record.
    Verify {
        /// Also check a `seq:hash` printed earlier by `fleetlog head` (the chain is still
        /// re-hashed from genesis).
        #[arg(long)]
        from: Option<String>,
        /// Hashing threads; 0 means one per core.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// List events by seq or time range.
    Events {
        /// First seq to show.
        #[arg(long)]
        from: Option<u64>,
        /// Last seq to show.
        #[arg(long)]
        to: Option<u64>,
        /// Only events stamped at or after this time: RFC 3339, or a duration ago (2h, 30m, 1d).
        #[arg(long)]
        since: Option<String>,
        /// Only events stamped before this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Show at most this many (the newest when no range is given).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Event counts by kind and actor, as of now or any earlier seq or time.
    Stats {
        /// `head`, a seq, or an RFC 3339 time.
        #[arg(long, default_value = "head")]
        as_of: String,
    },
    /// Write the whole log as JSON Lines (to stdout, or --out).
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create a new ledger at --db from a JSON Lines export (verifying every line), or with
    /// `--format oak` append existing agent telemetry files to it.
    Import {
        /// The files to read (JSON Lines).
        files: Vec<PathBuf>,
        /// `jsonl` (a fleetlog export) or `oak` (workflow events, agent invocations, metrics).
        #[arg(long, default_value = "jsonl", value_parser = clap::builder::PossibleValuesParser::new(["jsonl", "oak"]))]
        format: String,
        /// With `oak`: import the good lines and report the bad ones, instead of refusing.
        #[arg(long)]
        skip_invalid: bool,
        /// With `oak`: the agent the import is recorded as.
        #[arg(long, default_value = "importer")]
        agent: String,
    },
    /// Recover a ledger whose writer crashed, so read-only commands can open it.
    Recover,
    #[command(flatten)]
    Fleet(fleet::FleetCommand),
    /// The coordination state as of a seq or time (`head`, `1200`, `2026-11-23T10:00:00Z`).
    Replay {
        /// `head`, a seq such as 1200, or an RFC 3339 time such as 2026-11-20T00:00:00Z.
        #[arg(long, default_value = "head")]
        as_of: String,
    },
    /// Throughput and latency: N clients run a workload against a daemon or embedded.
    Bench(benchmark::BenchArgs),
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves).
    Openapi,
    /// Run a real fleet on this machine against a real daemon and show what the log recorded.
    Demo {
        /// A smaller fleet (for CI).
        #[arg(long)]
        quick: bool,
    },
    /// Serve the Model Context Protocol on stdin/stdout as one agent, so MCP clients (Claude
    /// Code, Codex, Gemini CLI) coordinate through the ledger with tools.
    Mcp {
        /// The agent this server acts as.
        #[arg(long, env = "FLEETLOG_AGENT")]
        agent: String,
    },
    /// The daemon serving the ledger (one is started on demand by commands that write or
    /// wait): is one running, stop it, its log.
    #[command(subcommand)]
    Daemon(commands::ledger::DaemonCommand),
    /// Serve the ledger to agents over HTTP/1.1 + JSON (loopback TCP and a Unix socket).
    Serve {
        /// TCP address; beyond loopback it requires --token.
        #[arg(long, default_value_t = std::net::SocketAddr::from(([127, 0, 0, 1], fleetlog::wire::DEFAULT_PORT)))]
        listen: std::net::SocketAddr,
        /// Unix socket path (default: beside the database, `<db>.sock`). Elsewhere, `<db>.sock`
        /// is linked to it while the daemon runs, so commands given only --db find it.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Bearer token required on TCP requests.
        #[arg(long, env = "FLEETLOG_TOKEN")]
        token: Option<String>,
        /// After SIGTERM/SIGINT, how long in-flight requests get before connections are closed.
        #[arg(long, value_parser = crate::commands::units::millis, default_value_t = fleetlog::daemon::SHUTDOWN_GRACE.as_millis() as u64)]
        shutdown_grace_ms: u64,
        /// Log lines on stderr as text or as one JSON object each; `RUST_LOG` filters them
        /// (default `info`; e.g. `RUST_LOG=fleetlog=debug` logs every request).
        #[arg(long, value_enum, default_value_t = commands::ledger::LogFormat::Text)]
        log_format: commands::ledger::LogFormat,
        /// Serve without re-hashing the whole chain first (a broken history is then served as
        /// it is; logged as a warning).
        #[arg(long)]
        skip_verify: bool,
        /// Share the file: other processes may open it read-only while the daemon runs, and
        /// every commit is a two-phase redb commit (two fsyncs). Without it the daemon holds the
        /// file exclusively and acknowledges each batch from the write-ahead log `<db>.wal` (one
        /// in-place write and one fsync); `head`, `events`, `stats`, `export`, `verify` and
        /// `replay` then read through the daemon.
        #[arg(long, env = "FLEETLOG_SHARED", value_parser = clap::builder::BoolishValueParser::new())]
        shared: bool,
        /// Hold the file exclusively (the default; kept for scripts that name it).
        #[arg(long, env = "FLEETLOG_EXCLUSIVE", value_parser = clap::builder::BoolishValueParser::new())]
        exclusive: bool,
        /// Who may act as an agent. `agents`: each command must carry its agent's credential
        /// (issued at registration) or the operator's. `trusted-host`: any process that reaches
        /// the daemon may act as any agent; loopback and the socket only. Default: `agents`
        /// when listening beyond loopback, else `trusted-host`.
        #[arg(long, value_enum, env = "FLEETLOG_AUTH")]
        auth: Option<fleetlog::daemon::AuthMode>,
        /// Serve TCP over TLS with this certificate chain (PEM); needs --tls-key. Recommended
        /// for any non-loopback use.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Exit after this many milliseconds with no connection, parked wait or event stream
        /// (how clients start a daemon on demand). Default: serve until stopped.
        #[arg(long, value_parser = crate::commands::units::millis)]
        idle_exit_ms: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let result = commands::run(cli.db.as_deref(), cli.as_operator, cli.command, &out);
    match result {
        Ok(code) => code,
        Err(error) => {
            out.error(&error);
            commands::exit_code_for(&error)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            // A variant without its own doc comment takes the doc of a struct it flattens
            // (`Agent`'s "Who issues a command"), so siblings would share one description.
            let mut seen = std::collections::HashMap::new();
            for sub in command.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                match sub.get_about() {
                    None if sub.get_name() != "help" => {
                        missing.push(format!("{here} (the command)"));
                    }
                    None => {}
                    Some(about) => {
                        if let Some(other) = seen.insert(about.to_string(), sub.get_name()) {
                            missing.push(format!("{here} (same description as {other}: {about})"));
                        }
                    }
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "fleetlog", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without help:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
