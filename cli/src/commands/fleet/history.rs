//! The log itself: `tail`, `replay`, and importing oak telemetry.

use fleetlog_projections::commands::{ImportTelemetry, Register};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use fleetlog::client::backend::Backend;
use fleetlog::wire::{Query, views};
use fleetlog_ledger::Json;
use fleetlog_projections::Command;

use crate::commands::output::Output;

use super::*;

/// `import --format oak`: telemetry files become ledger events, atomically.
pub fn import_telemetry(
    db: &Path,
    files: &[std::path::PathBuf],
    skip_invalid: bool,
    agent: &str,
    as_operator: bool,
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
    let backend = Backend::connect(db, as_operator)?;
    // The importer is an agent like any other: register it (again) so the import is attributed.
    backend.execute(&Command::Register(Register {
        agent: agent.to_owned(),
        role: "importer".to_owned(),
        name: agent.to_owned(),
        working_on: String::new(),
        capabilities: vec![],
        metadata: Json::null(),
    }))?;
    let count = events.len();
    let outcome = backend.execute(&Command::ImportTelemetry(ImportTelemetry {
        agent: agent.to_owned(),
        events,
    }))?;
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

/// Prints recent events, and with --follow every new one as it commits (daemon only).
pub(super) fn tail(
    db: &Path,
    backend: &Backend,
    follow: bool,
    from: Option<u64>,
    out: &Output,
) -> Result<ExitCode> {
    // A closed pipe (`tail -f | head`) ends the output quietly instead of panicking.
    let stdout = std::io::stdout();
    let print = |record: &fleetlog_ledger::Record| -> bool {
        use std::io::Write;
        let line = match out.is_json() {
            true => serde_json::to_string(record).unwrap_or_default(),
            false => format!(
                "{:>8}  {}  {:<16} {}",
                record.seq,
                record.ts,
                record.actor,
                record.event.kind()
            ),
        };
        let mut stdout = stdout.lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_ok()
    };
    // Through a daemon: the last ten (or from `from`) up to the head, and on with --follow.
    let through = |client: &fleetlog::client::BlockingClient| -> Result<()> {
        let head = client.request(hyper::Method::GET, "/v1/head", None)?["seq"]
            .as_u64()
            .unwrap_or(0);
        let from = from.unwrap_or(head.saturating_sub(9).max(1));
        // Without --follow there is nothing to wait for past the head.
        if !follow && from > head {
            return Ok(());
        }
        client.follow(from, |record| {
            print(&record) && (follow || record.seq < head)
        })?;
        Ok(())
    };
    match backend {
        Backend::Daemon(client) => through(client)?,
        // Following needs a daemon to wake it: start one for the file.
        Backend::Embedded(embedded) if follow && fleetlog::client::spawn::enabled() => {
            through(embedded.daemon()?)?
        }
        Backend::Embedded(_) if follow => anyhow::bail!(
            "tail -f follows a running daemon: start `fleetlog --db {} serve` first",
            db.display()
        ),
        // No daemon was found, but one may have started since and hold the file: then it
        // answers (once it listens) instead of the file.
        Backend::Embedded(embedded) => {
            match crate::commands::ledger::Source::open(embedded.db(), false)? {
                crate::commands::ledger::Source::Daemon(client) => through(&client)?,
                crate::commands::ledger::Source::File(ledger) => {
                    let reader = ledger.reader();
                    let last = reader.last_seq()?;
                    let from = from.unwrap_or(last.saturating_sub(9).max(1));
                    for record in reader.range(from..=last)? {
                        if !print(&record) {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The coordination state as it was at `as_of`, read from the file (beside a daemon too).
pub fn replay(db: &Path, as_of: &str, out: &Output) -> Result<ExitCode> {
    let text = as_of;
    let as_of: fleetlog_projections::AsOf = as_of.parse()?;
    let (value, now) = match crate::commands::ledger::Source::open(db, false)? {
        crate::commands::ledger::Source::File(ledger) => {
            let seq = fleetlog_projections::resolve(ledger.reader(), as_of)?;
            let bar = out.progress(seq, "replaying");
            let progress = |reached: u64| bar.set_position(reached);
            let state = fleetlog_projections::rebuild_reporting(ledger.reader(), seq, &progress)?;
            bar.finish_and_clear();
            let now = match as_of {
                fleetlog_projections::AsOf::Time(ts) => ts,
                _ => state.ts,
            };
            let value = fleetlog::wire::answer(&state, ledger.reader(), now, &Query::Status)?;
            // An empty ledger has no time of its own (its state's is the epoch): none is
            // printed, as through a daemon.
            let shown = match as_of {
                fleetlog_projections::AsOf::Time(_) => Some(now),
                _ => (state.seq > 0).then_some(now),
            };
            (value, shown)
        }
        // The daemon rebuilds the state as of that point itself (`POST /v1/queries`, as_of).
        crate::commands::ledger::Source::Daemon(client) => {
            let value = client.query_as_of(&Query::Status, text)?;
            let now = match as_of {
                fleetlog_projections::AsOf::Time(ts) => Some(ts),
                // The state's time: its newest record's.
                _ => crate::commands::ledger::record_ts(&client, value["seq"].as_u64())?,
            };
            (value, now)
        }
    };
    let status: views::StatusView = serde_json::from_value(value.clone())?;
    let seq = status.seq;
    out.emit(&value, || {
        let at = now.map(|now| format!(", {now}")).unwrap_or_default();
        format!("as of {as_of} (seq {seq}{at})\n{}", status_text(&status))
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that found no daemon reads the file; a daemon started in between holds it
    /// exclusively, and `tail` must read through that daemon instead of failing.
    #[test]
    fn tail_that_finds_a_daemon_started_meanwhile_reads_through_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fleet.redb");
        let register = Command::Register(Register {
            agent: "a".into(),
            role: "worker".into(),
            name: "a".into(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null(),
        });
        let coordinator =
            fleetlog_projections::Coordinator::open(&db, Default::default()).expect("open");
        coordinator.execute(register).expect("register");
        drop(coordinator);

        let backend = Backend::connect(&db, false).expect("backend");
        assert!(!backend.is_daemon(), "no daemon was running yet");
        let daemon = fleetlog::daemon::BackgroundDaemon::start(&db).expect("daemon");
        let out = Output::new(true);
        for from in [None, Some(1), Some(5)] {
            let tailed = tail(&db, &backend, false, from, &out);
            assert!(tailed.is_ok(), "from {from:?}: {tailed:?}");
        }
        drop(daemon);
        // With the daemon gone, the same backend reads the file itself.
        assert!(tail(&db, &backend, false, None, &out).is_ok());
    }
}
