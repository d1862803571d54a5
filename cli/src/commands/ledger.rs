//! One function per subcommand. Each validates its arguments, calls the ledger or a projection,
//! and hands the result to `Output`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::ops::{ControlFlow, RangeInclusive};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fleetlog_ledger::{Checkpoint, Error, Event, Ledger, Record, Timestamp, VerifyOptions};
use fleetlog_projections::{Activity, AsOf, replay};
use serde_json::{Value, json};

use crate::Command;
use crate::commands::output::{Output, table};

/// Runs one subcommand on `db` (`--db`; the default path where none is given, except for the
/// demo and bench, which make their own).
/// Runs `command`; with `as_operator`, coordination commands carry the operator's credential.
pub fn run(
    db: Option<&Path>,
    as_operator: bool,
    command: Command,
    out: &Output,
) -> Result<ExitCode> {
    let named = db;
    let default;
    let db = match named {
        Some(db) => db,
        None => {
            default = fleetlog_ledger::default_path();
            default.as_path()
        }
    };
    match command {
        Command::Demo { quick } => crate::commands::fleet::demo(named, quick, out),
        Command::Bench(args) => crate::commands::benchmark::run(named, args, out),
        Command::Openapi => {
            let document = fleetlog::wire::openapi::document();
            println!(
                "{}",
                serde_json::to_string_pretty(&document).expect("a JSON value prints")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Init => init(db, out),
        Command::Head => head(db, out),
        Command::Verify { from, threads } => verify(db, from.as_deref(), threads, out),
        Command::Events {
            from,
            to,
            since,
            until,
            limit,
        } => events(db, from, to, since, until, limit, out),
        Command::Stats { as_of } => stats(db, &as_of, out),
        Command::Export { out: file } => export(db, file.as_deref(), out),
        Command::Import {
            files,
            format,
            skip_invalid,
            agent,
        } => match (format.as_str(), files.as_slice()) {
            ("jsonl", [file]) => import(db, file, out),
            ("jsonl", _) => bail!("a jsonl import takes exactly one export file"),
            ("oak", []) => bail!("name the telemetry files to import"),
            ("oak", files) => crate::commands::fleet::history::import_telemetry(
                db,
                files,
                skip_invalid,
                &agent,
                as_operator,
                out,
            ),
            (other, _) => bail!("--format {other:?} is not jsonl or oak"),
        },
        Command::Recover => recover(db, out),
        Command::Fleet(command) => crate::commands::fleet::run(db, as_operator, command, out),
        Command::Replay { as_of } => crate::commands::fleet::history::replay(db, &as_of, out),
        Command::Daemon(command) => daemon(db, command, out),
        Command::Mcp { agent } => {
            match db.exists() {
                true => {}
                false => match Ledger::create(db) {
                    // Another process (an agent's session started at the same time) made it.
                    Ok(_) | Err(fleetlog_ledger::Error::AlreadyExists { .. }) => {}
                    Err(error) => {
                        return Err(error).with_context(|| format!("creating {}", db.display()));
                    }
                },
            }
            let backend = fleetlog::client::backend::Backend::connect(db, as_operator)?;
            fleetlog::mcp::serve_stdio(backend, &agent)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            socket,
            token,
            shutdown_grace_ms,
            log_format,
            skip_verify,
            exclusive,
            auth,
            tls_cert,
            tls_key,
            idle_exit_ms,
        } => {
            init_logs(log_format)?;
            serve(fleetlog::daemon::ServerConfig {
                db: db.to_owned(),
                listen,
                socket: socket.unwrap_or_else(|| fleetlog::wire::socket_path(db)),
                token,
                shutdown_grace: std::time::Duration::from_millis(shutdown_grace_ms),
                skip_verify,
                exclusive,
                auth,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| fleetlog::daemon::TlsFiles { cert, key }),
                idle_exit: idle_exit_ms.map(std::time::Duration::from_millis),
            })
        }
    }
}

/// How the daemon writes its log lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs(format: LogFormat) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().or_else(|error| match std::env::var_os("RUST_LOG") {
            Some(_) => Err(anyhow::anyhow!("RUST_LOG is not a valid filter: {error}")),
            None => Ok(EnvFilter::new("info")),
        })?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => logs.with_ansi(false).try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

fn serve(config: fleetlog::daemon::ServerConfig) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let stop = shutdown_signal().context("installing the SIGINT and SIGTERM handlers")?;
        fleetlog::daemon::serve(config, stop)
            .await
            .map_err(anyhow::Error::from)
    });
    if let Err(error) = served {
        tracing::error!(%error, "the daemon could not start or stopped with an error");
        return Err(error);
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM. The handlers are installed here, before the daemon announces itself: a
/// signal sent as soon as the banner is read must stop it gracefully, not kill it (tokio installs
/// a handler only when its stream is made, and the stop future is first polled later).
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// 3 for "not found" or "timed out", 1 for every other failure.
pub fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    let not_found = match error.downcast_ref::<fleetlog::Error>() {
        Some(error) => error.is_not_found_or_timeout(),
        None => matches!(error.downcast_ref::<Error>(), Some(Error::NotFound { .. })),
    };
    match not_found {
        true => ExitCode::from(3),
        false => ExitCode::FAILURE,
    }
}

/// Opens read-only; a file left needing recovery by a crashed writer is recovered first (that
/// takes a writable open, which fails if another process is writing it).
pub fn open_for_reading(db: &Path, audit: bool) -> Result<Ledger> {
    let open = |db: &Path| match audit {
        true => Ledger::open_for_audit(db),
        false => Ledger::open_read_only(db),
    };
    match open(db) {
        Err(Error::NeedsRecovery { .. }) => {
            drop(Ledger::open(db).context("recovering the ledger before reading it")?);
            Ok(open(db)?)
        }
        other => Ok(other?),
    }
}

fn init(db: &Path, out: &Output) -> Result<ExitCode> {
    let ledger = Ledger::create(db)?;
    let head = ledger.head()?;
    out.emit(
        &json!({ "db": db, "ledger_id": ledger.ledger_id(), "head": head.checkpoint() }),
        || {
            format!(
                "created {} (ledger id {})\ngenesis {}",
                db.display(),
                ledger.ledger_id(),
                head.checkpoint()
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn head(db: &Path, out: &Output) -> Result<ExitCode> {
    let ledger = open_for_reading(db, false)?;
    let head = ledger.head()?;
    out.emit(
        &json!({ "seq": head.seq, "hash": head.hash, "ts": head.ts, "checkpoint": head.checkpoint().to_string() }),
        || head.checkpoint().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(db: &Path, from: Option<&str>, threads: usize, out: &Output) -> Result<ExitCode> {
    let from = from.map(str::parse::<Checkpoint>).transpose()?;
    let ledger = open_for_reading(db, true)?;
    let total = ledger.reader().last_seq()?;
    let bar = out.progress(
        total.saturating_sub(from.map_or(0, |from| from.seq)),
        "verifying",
    );
    let progress = |checked: u64| bar.set_position(checked);
    let report = ledger.verify(VerifyOptions {
        from,
        threads,
        progress: Some(&progress),
    })?;
    bar.finish_and_clear();
    let value = serde_json::to_value(&report).context("serialising the report")?;
    out.emit(&value, || match &report.problem {
        None => format!(
            "ok: {} records verified from genesis{}\nhead {}",
            report.checked,
            match report.anchor.seq {
                0 => String::new(),
                _ => format!(", through the trusted checkpoint {}", report.anchor),
            },
            report.verified_head
        ),
        Some(problem) => format!(
            "BROKEN: {problem}\n{} records verified before it; the last good record is {}",
            report.checked, report.verified_head
        ),
    });
    Ok(match report.is_intact() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp> {
    crate::commands::units::moment(flag, text)
}

fn events(
    db: &Path,
    from: Option<u64>,
    to: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    limit: u64,
    out: &Output,
) -> Result<ExitCode> {
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let ledger = open_for_reading(db, false)?;
    let reader = ledger.reader();
    let last = reader.last_seq()?;
    let explicit_start = from.is_some() || since.is_some();
    let mut seqs: RangeInclusive<u64> = 1..=last;
    if since.is_some() || until.is_some() {
        let since = since.map(|text| parse_time("--since", &text)).transpose()?;
        let until = until.map(|text| parse_time("--until", &text)).transpose()?;
        seqs = reader.seqs_between(
            since.unwrap_or(Timestamp(i64::MIN)),
            until.unwrap_or(Timestamp(i64::MAX)),
        )?;
    }
    let low = (*seqs.start()).max(from.unwrap_or(1));
    let high = (*seqs.end()).min(to.unwrap_or(u64::MAX));
    // With an explicit start, show the first `limit`; otherwise the newest `limit`.
    let range = match explicit_start {
        true => low..=high.min(low.saturating_add(limit - 1)),
        false => high.saturating_sub(limit - 1).max(low)..=high,
    };
    let mut records: Vec<Record> = Vec::new();
    reader.scan(range, |record| {
        records.push(record);
        Ok(ControlFlow::Continue(()))
    })?;
    let value = serde_json::to_value(&records).context("serialising events")?;
    out.emit(&value, || {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|record| {
                vec![
                    record.seq.to_string(),
                    record.ts.to_string(),
                    record.actor.clone(),
                    record.event.kind().to_owned(),
                    detail(&record.event),
                ]
            })
            .collect();
        table(&["SEQ", "TIME", "ACTOR", "KIND", "DETAIL"], &rows)
    });
    Ok(ExitCode::SUCCESS)
}

/// The event's fields as compact JSON, cut to fit a terminal line.
fn detail(event: &Event) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("type");
    }
    let text = value.to_string();
    match text.chars().count() > 90 {
        true => text.chars().take(89).collect::<String>() + "…",
        false => text,
    }
}

fn stats(db: &Path, as_of: &str, out: &Output) -> Result<ExitCode> {
    let as_of: AsOf = as_of.parse()?;
    let ledger = open_for_reading(db, false)?;
    let bar = out.progress(ledger.reader().last_seq()?, "replaying");
    let mut activity = Activity::default();
    let progress = |seq: u64| bar.set_position(seq);
    replay(ledger.reader(), &mut activity, as_of, &progress)?;
    bar.finish_and_clear();
    let kinds = activity.kinds_by_count();
    let value = json!({
        "as_of": as_of.to_string(),
        "events": activity.events,
        "last_seq": activity.last_seq,
        "first": activity.first,
        "last": activity.last,
        "by_kind": activity.by_kind,
        "by_actor": activity.by_actor,
    });
    out.emit(&value, || {
        let span = match (activity.first, activity.last) {
            (Some(first), Some(last)) => format!("{first} .. {last}"),
            _ => "empty".to_owned(),
        };
        let kind_rows: Vec<Vec<String>> = kinds
            .iter()
            .map(|row| vec![row.kind.to_owned(), row.count.to_string()])
            .collect();
        let mut actors: Vec<(&String, &u64)> = activity.by_actor.iter().collect();
        actors.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let actor_rows: Vec<Vec<String>> = actors
            .iter()
            .map(|(actor, count)| vec![(*actor).clone(), count.to_string()])
            .collect();
        format!(
            "as of {as_of}: {} events (through seq {}), {span}\n\n{}\n\n{}",
            activity.events,
            activity.last_seq,
            table(&["KIND", "EVENTS"], &kind_rows),
            table(&["ACTOR", "EVENTS"], &actor_rows)
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn export(db: &Path, file: Option<&Path>, out: &Output) -> Result<ExitCode> {
    let ledger = open_for_reading(db, false)?;
    let bar = out.progress(ledger.reader().last_seq()?, "exporting");
    let progress = |written: u64| bar.set_position(written);
    let head = match file {
        Some(file) => {
            // A backup holds every payload: readable by its owner only, like the ledger.
            let created = {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(file)
                    .with_context(|| format!("creating {}", file.display()))?;
                // An existing file keeps its mode on open: narrow it too.
                created.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                created
            };
            let mut writer = BufWriter::new(created);
            let head = ledger.export_jsonl(&mut writer, &progress)?;
            writer.flush()?;
            writer
                .into_inner()
                .map_err(|error| error.into_error())?
                .sync_all()?;
            head
        }
        None => ledger.export_jsonl(BufWriter::new(std::io::stdout().lock()), &progress)?,
    };
    bar.finish_and_clear();
    if let Some(file) = file {
        out.emit(&json!({ "file": file, "head": head }), || {
            format!(
                "exported {} records to {}\nhead {head}",
                head.seq,
                file.display()
            )
        });
    }
    Ok(ExitCode::SUCCESS)
}

fn import(db: &Path, file: &Path, out: &Output) -> Result<ExitCode> {
    let input = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let bar = out.progress(0, "importing");
    let progress = |imported: u64| {
        bar.set_length(imported);
        bar.set_position(imported);
    };
    let head = Ledger::import_jsonl(db, BufReader::new(input), &progress)?;
    bar.finish_and_clear();
    out.emit(&json!({ "db": db, "head": head }), || {
        format!(
            "imported {} records into {}; every hash verified\nhead {head}",
            head.seq,
            db.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn recover(db: &Path, out: &Output) -> Result<ExitCode> {
    let ledger = Ledger::open(db)?;
    let head = ledger.head()?;
    drop(ledger);
    out.emit(&json!({ "db": db, "head": head.checkpoint() }), || {
        format!("{} is consistent; head {}", db.display(), head.checkpoint())
    });
    Ok(ExitCode::SUCCESS)
}

/// `fleetlog daemon …`.
#[derive(clap::Subcommand, Debug)]
pub enum DaemonCommand {
    /// Whether a daemon serves the ledger: its pid, head and parked waits (exit 3 if none).
    Status,
    /// Stop the daemon serving the ledger (SIGTERM: in-flight requests finish first).
    Stop,
    /// The log of a daemon started on demand (`<db>.log`).
    Logs {
        /// Only the last this many lines.
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
}

fn daemon(db: &Path, command: DaemonCommand, out: &Output) -> Result<ExitCode> {
    let health = || {
        fleetlog::client::BlockingClient::for_db(db)
            .and_then(|client| client.request(hyper::Method::GET, "/v1/health", None).ok())
    };
    match command {
        DaemonCommand::Status => match health() {
            Some(health) => {
                out.emit(&health, || {
                    format!(
                        "serving {} (pid {}): head {}, {} parked waits",
                        db.display(),
                        health["pid"],
                        health["head"].as_str().unwrap_or("-"),
                        health["waiters"]
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
            None => {
                out.emit(&serde_json::json!({ "running": false }), || {
                    format!("no daemon serves {}", db.display())
                });
                Ok(ExitCode::from(3))
            }
        },
        DaemonCommand::Stop => {
            let Some(pid) = health().and_then(|health| health["pid"].as_u64()) else {
                out.emit(&serde_json::json!({ "running": false }), || {
                    format!("no daemon serves {}", db.display())
                });
                return Ok(ExitCode::from(3));
            };
            let pid = i32::try_from(pid).context("a pid out of range")?;
            if !fleetlog::daemon::terminate(pid, std::time::Duration::from_secs(30))? {
                bail!("the daemon (pid {pid}) is still running 30 s after SIGTERM");
            }
            out.emit(&serde_json::json!({ "stopped": pid }), || {
                format!("stopped the daemon (pid {pid})")
            });
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Logs { lines } => {
            let path = fleetlog::client::spawn::log_path(db);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let all: Vec<&str> = text.lines().collect();
            for line in &all[all.len().saturating_sub(lines)..] {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
