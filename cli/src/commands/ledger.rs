//! One function per subcommand. Each validates its arguments, calls the ledger or a projection,
//! and hands the result to `Output`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::ops::{ControlFlow, RangeInclusive};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fleetlog::client::BlockingClient;
use fleetlog_ledger::{
    Checkpoint, Error, Event, ExportHeader, ExportWriter, Ledger, Record, Timestamp, VerifyOptions,
    VerifyReport,
};
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
            shared,
            exclusive,
            auth,
            tls_cert,
            tls_key,
            idle_exit_ms,
        } => {
            // Not clap's `conflicts_with`: that also counts a variable set to false
            // (`FLEETLOG_SHARED=0` beside `--exclusive`).
            if shared && exclusive {
                bail!(
                    "--shared (FLEETLOG_SHARED) and --exclusive (FLEETLOG_EXCLUSIVE) ask for opposite modes; name one"
                );
            }
            init_logs(log_format)?;
            serve(fleetlog::daemon::ServerConfig {
                db: db.to_owned(),
                listen,
                socket: socket.unwrap_or_else(|| fleetlog::wire::socket_path(db)),
                token,
                shutdown_grace: std::time::Duration::from_millis(shutdown_grace_ms),
                skip_verify,
                exclusive: !shared,
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

/// What a command that reads the log reads: the file, or the daemon holding it exclusively.
pub enum Source {
    File(Ledger),
    Daemon(Box<BlockingClient>),
}

impl Source {
    /// Opens `db` to read. While a daemon holds the file exclusively (what `serve` does unless
    /// `--shared`), no other process may open it, so the daemon answers instead; one still
    /// starting (verifying the chain before it listens) is waited for.
    pub fn open(db: &Path, audit: bool) -> Result<Source> {
        let error = match open_for_reading(db, audit) {
            Ok(ledger) => return Ok(Source::File(ledger)),
            Err(error) => error,
        };
        if !matches!(
            error.downcast_ref::<Error>(),
            Some(Error::HeldExclusively { .. })
        ) {
            return Err(error);
        }
        match BlockingClient::wait_for_db(db, fleetlog::client::spawn::START_TIMEOUT) {
            Some(client) => Ok(Source::Daemon(Box::new(client))),
            None => Err(error.context(format!(
                "no daemon answered on {} within {} s to read through",
                fleetlog::wire::socket_path(db).display(),
                fleetlog::client::spawn::START_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Which records to read from a daemon (`GET /v1/events`): `from..=to`, stamped in
/// `since..until`; with `newest`, the newest `limit` of them, else the oldest.
struct Pages {
    from: u64,
    to: u64,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    newest: bool,
    limit: u64,
}

impl Pages {
    /// Every record `1..=to`.
    fn through(to: u64) -> Self {
        Pages {
            from: 1,
            to,
            since: None,
            until: None,
            newest: false,
            limit: u64::MAX,
        }
    }

    /// Reads the records page by page, in seq order, calling `visit` with each.
    fn read(
        mut self,
        client: &BlockingClient,
        mut visit: impl FnMut(Record) -> Result<()>,
    ) -> Result<()> {
        while self.limit > 0 && self.from <= self.to {
            let mut path = format!(
                "/v1/events?from={}&to={}&limit={}",
                self.from,
                self.to,
                self.limit.min(fleetlog::daemon::EVENTS_PAGE_MAX)
            );
            for (name, time) in [("since", self.since), ("until", self.until)] {
                if let Some(time) = time {
                    path.push_str(&format!("&{name}={time}"));
                }
            }
            if self.newest {
                path.push_str("&last=true");
            }
            let mut page = client.request(hyper::Method::GET, &path, None)?;
            let records: Vec<Record> = serde_json::from_value(page["events"].take())
                .context("reading a page of events from the daemon")?;
            self.limit = self.limit.saturating_sub(records.len() as u64);
            records.into_iter().try_for_each(&mut visit)?;
            match page["next"].as_u64() {
                // The rest of the page that was cut (by bytes) follows on from here.
                Some(next) => (self.from, self.newest) = (next, false),
                None => break,
            }
        }
        Ok(())
    }
}

/// The time of record `seq` read through the daemon (`None`: no such record).
pub fn record_ts(client: &BlockingClient, seq: Option<u64>) -> Result<Option<Timestamp>> {
    let Some(seq) = seq.filter(|seq| *seq > 0) else {
        return Ok(None);
    };
    let mut ts = None;
    let pages = Pages {
        from: seq,
        limit: 1,
        ..Pages::through(seq)
    };
    pages.read(client, |record| {
        ts = Some(record.ts);
        Ok(())
    })?;
    Ok(ts)
}

/// The daemon's head (`GET /v1/head`).
fn daemon_head(client: &BlockingClient) -> Result<Value> {
    Ok(client.request(hyper::Method::GET, "/v1/head", None)?)
}

fn seq_of(head: &Value) -> Result<u64> {
    head["seq"].as_u64().context("the daemon's head has no seq")
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
    let value = match Source::open(db, false)? {
        Source::File(ledger) => {
            let head = ledger.head()?;
            json!({ "seq": head.seq, "hash": head.hash, "ts": head.ts, "checkpoint": head.checkpoint().to_string() })
        }
        Source::Daemon(client) => {
            let head = daemon_head(&client)?;
            json!({ "seq": head["seq"], "hash": head["hash"], "ts": head["ts"], "checkpoint": head["checkpoint"] })
        }
    };
    out.emit(&value, || {
        value["checkpoint"].as_str().unwrap_or_default().to_owned()
    });
    Ok(ExitCode::SUCCESS)
}

fn verify(db: &Path, from: Option<&str>, threads: usize, out: &Output) -> Result<ExitCode> {
    let from = from.map(str::parse::<Checkpoint>).transpose()?;
    let report = match Source::open(db, true)? {
        Source::File(ledger) => {
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
            report
        }
        // The daemon verifies the file it holds, with its own reader (`GET /v1/verify`).
        Source::Daemon(client) => {
            let path = match from {
                Some(from) => format!("/v1/verify?from={from}"),
                None => "/v1/verify".to_owned(),
            };
            let report = client.request(hyper::Method::GET, &path, None)?;
            serde_json::from_value::<VerifyReport>(report)
                .context("reading the daemon's verification report")?
        }
    };
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
    let since = since.map(|text| parse_time("--since", &text)).transpose()?;
    let until = until.map(|text| parse_time("--until", &text)).transpose()?;
    // With an explicit start, show the first `limit`; otherwise the newest `limit`.
    let explicit_start = from.is_some() || since.is_some();
    let mut records: Vec<Record> = Vec::new();
    match Source::open(db, false)? {
        Source::File(ledger) => {
            let reader = ledger.reader();
            let mut seqs: RangeInclusive<u64> = 1..=reader.last_seq()?;
            if since.is_some() || until.is_some() {
                seqs = reader.seqs_between(
                    since.unwrap_or(Timestamp(i64::MIN)),
                    until.unwrap_or(Timestamp(i64::MAX)),
                )?;
            }
            let low = (*seqs.start()).max(from.unwrap_or(1));
            let high = (*seqs.end()).min(to.unwrap_or(u64::MAX));
            let range = match explicit_start {
                true => low..=high.min(low.saturating_add(limit - 1)),
                false => high.saturating_sub(limit - 1).max(low)..=high,
            };
            reader.scan(range, |record| {
                records.push(record);
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Source::Daemon(client) => {
            let last = seq_of(&daemon_head(&client)?)?;
            let pages = Pages {
                from: from.unwrap_or(1).max(1),
                to: to.unwrap_or(last).min(last),
                since,
                until,
                newest: !explicit_start,
                limit,
            };
            pages.read(&client, |record| {
                records.push(record);
                Ok(())
            })?;
        }
    }
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
    let mut activity = Activity::default();
    match Source::open(db, false)? {
        Source::File(ledger) => {
            let bar = out.progress(ledger.reader().last_seq()?, "replaying");
            let progress = |seq: u64| bar.set_position(seq);
            replay(ledger.reader(), &mut activity, as_of, &progress)?;
            bar.finish_and_clear();
        }
        Source::Daemon(client) => {
            let last = seq_of(&daemon_head(&client)?)?;
            let bar = out.progress(last, "replaying");
            let pages = match as_of {
                AsOf::Head => Pages::through(last),
                AsOf::Seq(seq) if seq > last => {
                    return Err(fleetlog_projections::Error::BeyondHead { seq, head: last }.into());
                }
                AsOf::Seq(seq) => Pages::through(seq),
                // Every record stamped at or before ts, as `replay` reads the file.
                AsOf::Time(ts) => Pages {
                    until: Some(Timestamp(ts.as_micros().saturating_add(1))),
                    ..Pages::through(last)
                },
            };
            pages.read(&client, |record| {
                fleetlog_projections::Projection::apply(&mut activity, &record);
                bar.set_position(record.seq);
                Ok(())
            })?;
            bar.finish_and_clear();
        }
    }
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
    let source = Source::open(db, false)?;
    let last = match &source {
        Source::File(ledger) => ledger.reader().last_seq()?,
        Source::Daemon(client) => seq_of(&daemon_head(client)?)?,
    };
    let bar = out.progress(last, "exporting");
    let progress = |written: u64| bar.set_position(written);
    let export_to = |writer: &mut dyn Write| -> Result<Checkpoint> {
        match &source {
            Source::File(ledger) => Ok(ledger.export_jsonl(writer, &progress)?),
            Source::Daemon(client) => export_from_daemon(client, writer, &progress),
        }
    };
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
            let head = export_to(&mut writer)?;
            writer.flush()?;
            writer
                .into_inner()
                .map_err(|error| error.into_error())?
                .sync_all()?;
            head
        }
        None => export_to(&mut BufWriter::new(std::io::stdout().lock()))?,
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

/// An export made through the daemon: its head names the ledger and where the export ends,
/// then every record up to it, page by page. The same lines `export_jsonl` writes.
fn export_from_daemon(
    client: &BlockingClient,
    writer: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<Checkpoint> {
    let head = daemon_head(client)?;
    let header = ExportHeader {
        fleetlog_export: fleetlog_ledger::EXPORT_FORMAT_VERSION,
        ledger_id: serde_json::from_value(head["ledger_id"].clone())
            .context("the daemon's head names no ledger id")?,
        record_format_version: head["record_format_version"]
            .as_u64()
            .and_then(|version| u8::try_from(version).ok())
            .context("the daemon's head names no record format")?,
        head: head["checkpoint"]
            .as_str()
            .context("the daemon's head has no checkpoint")?
            .parse()?,
    };
    let through = header.head.seq;
    let mut export = ExportWriter::new(writer, header, progress)?;
    Pages::through(through).read(client, |record| Ok(export.record(&record)?))?;
    Ok(export.finish()?)
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
