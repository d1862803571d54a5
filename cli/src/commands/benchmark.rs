//! `fleetlog bench`: the throughput harness's command line (the work is in `fleetlog::bench`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fleetlog::bench::{self, BenchResult, Stop, Workload};
use fleetlog::client::Endpoint;
use fleetlog::daemon::BackgroundDaemon;
use serde_json::json;

use crate::commands::output::{Output, table};

/// The harness's options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// append, heartbeat, signal, lock, queue, mixed, or ping (a request that does no work:
    /// the transport's ceiling; daemon only).
    #[arg(long, default_value = "mixed", value_parser = clap::builder::PossibleValuesParser::new(["append", "heartbeat", "signal", "lock", "queue", "mixed", "ping"]))]
    pub workload: String,
    /// Concurrent clients, each its own connection and agent.
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    /// Run this long (default 10 s).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Or run this many ops.
    #[arg(long)]
    pub ops: Option<u64>,
    /// A running daemon: http://HOST:PORT or unix:/path.sock (default: start one on a
    /// temporary ledger).
    #[arg(long)]
    pub url: Option<String>,
    /// The daemon's bearer token, for a TCP --url.
    #[arg(long, env = "FLEETLOG_TOKEN")]
    pub token: Option<String>,
    /// Drive the ledger in this process, without HTTP.
    #[arg(long)]
    pub embedded: bool,
    /// Also run the same workload against a local redis-server (`--against redis`).
    #[arg(long)]
    pub against: Option<String>,
    /// Send this many ops per request (`POST /v1/batch`; embedded: pipelined). Applies to
    /// append, heartbeat and signal; latencies are then per request.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Share the ledger, as `serve --shared` (the daemon this starts, or the embedded
    /// ledger): two-phase redb commits instead of the write-ahead log the default uses.
    #[arg(long, conflicts_with = "exclusive")]
    pub shared: bool,
    /// Hold the ledger exclusively, as `serve` does by default (kept for scripts that name it).
    #[arg(long)]
    pub exclusive: bool,
}

fn fresh_db(db: Option<&Path>) -> Result<PathBuf> {
    match db {
        Some(db) => Ok(db.to_owned()),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "fleetlog-bench-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_micros()
            ));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(dir.join("bench.redb"))
        }
    }
}

fn endpoint(url: &str, token: Option<String>) -> Result<Endpoint> {
    if let Some(path) = url.strip_prefix("unix:") {
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    match url.strip_prefix("http://") {
        Some(address) => Ok(Endpoint::Tcp {
            address: address.trim_end_matches('/').to_owned(),
            token,
        }),
        None => bail!("--url {url:?} must be http://HOST:PORT or unix:/path/to.sock"),
    }
}

pub fn run(db: Option<&Path>, args: BenchArgs, out: &Output) -> Result<ExitCode> {
    let workload: Workload = args.workload.parse()?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    // Refuse what cannot be compared before spending the fleetlog half's time on it.
    match args.against.as_deref() {
        None => {}
        Some("redis") if cfg!(feature = "redis") => {}
        Some("redis") => bail!(
            "this fleetlog was built without Redis support: run `cargo run --release -p fleetlog --features redis -- bench --against redis`"
        ),
        Some(other) => bail!("--against {other:?}: only redis is supported"),
    }
    let stop = match (args.duration, args.ops) {
        (Some(_), Some(_)) => bail!("give --duration or --ops, not both"),
        (_, Some(ops)) => Stop::Ops { ops },
        (Some(seconds), None) => Stop::Duration { seconds },
        (None, None) => Stop::Duration { seconds: 10.0 },
    };
    let bar = out.progress(
        match stop {
            Stop::Ops { ops } => ops,
            Stop::Duration { .. } => 0,
        },
        "ops",
    );
    let progress = |done: u64| bar.set_position(done);
    let fleetlog = match (args.embedded, &args.url) {
        (true, Some(_)) => bail!("--embedded runs in this process; it cannot take --url"),
        (true, None) => bench::embedded(
            &fresh_db(db)?,
            !args.shared,
            workload,
            args.clients,
            args.batch,
            stop,
            &progress,
        )?,
        (false, Some(url)) => bench::daemon(
            endpoint(url, args.token.clone())?,
            None,
            workload,
            args.clients,
            args.batch,
            stop,
            &progress,
        )?,
        (false, None) => {
            let db = fresh_db(db)?;
            let daemon = BackgroundDaemon::start_with(&db, !args.shared)?;
            let socket = Endpoint::Unix(daemon.socket().to_owned());
            bench::daemon(
                socket,
                Some(&db),
                workload,
                args.clients,
                args.batch,
                stop,
                &progress,
            )?
        }
    };
    bar.finish_and_clear();
    // The disk the ledger is on (a remote daemon's is unknown: the temporary directory's).
    let floor_dir = match (&args.url, db) {
        (Some(_), _) => std::env::temp_dir(),
        (None, Some(db)) => db
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned(),
        (None, None) => std::env::temp_dir(),
    };
    let floor = bench::floor::measure(&floor_dir)?;
    let over_floor = fleetlog.latency.p50_us as f64 / floor.in_place_p50_us.max(1) as f64;
    let floor_line = format!(
        "disk floor in {} (200 B write + fdatasync, p50): in place {} µs, growing the file {} µs; fleetlog p50 = {over_floor:.1}× the in-place floor",
        floor.dir, floor.in_place_p50_us, floor.growing_p50_us
    );
    let (value, human) = match args.against.as_deref() {
        None => {
            let mut value = serde_json::to_value(&fleetlog)?;
            value["disk_floor"] = serde_json::to_value(&floor)?;
            value["p50_over_floor"] = json!(over_floor);
            (value, format!("{}\n\n{floor_line}", text(&[&fleetlog])))
        }
        Some("redis") => {
            let redis = redis_side(workload, args.clients, args.batch, stop)?;
            let ratio = fleetlog.ops_per_sec / redis.ops_per_sec.max(1e-9);
            let value = json!({
                "fleetlog": fleetlog,
                "redis": redis,
                "ratio": ratio,
                "disk_floor": floor,
                "p50_over_floor": over_floor,
            });
            let human = format!(
                "{}\n\nfleetlog / redis (ops/s): {ratio:.2}×\n{floor_line}",
                text(&[&fleetlog, &redis])
            );
            (value, human)
        }
        Some(other) => bail!("--against {other:?}: only redis is supported"),
    };
    out.emit(&value, || human);
    Ok(if fleetlog.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "redis")]
fn redis_side(workload: Workload, clients: u64, batch: u64, stop: Stop) -> Result<BenchResult> {
    Ok(fleetlog::bench::redis_compare::run(
        workload, clients, batch, stop,
    )?)
}

#[cfg(not(feature = "redis"))]
fn redis_side(_: Workload, _: u64, _: u64, _: Stop) -> Result<BenchResult> {
    bail!(
        "this fleetlog was built without Redis support: run `cargo run --release -p fleetlog --features redis -- bench --against redis`"
    )
}

fn text(results: &[&BenchResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.target.clone(),
                format!("{:?}", r.workload).to_lowercase(),
                r.clients.to_string(),
                r.ops.to_string(),
                format!("{:.0}", r.ops_per_sec),
                r.events_per_sec.map_or("-".into(), |e| format!("{e:.0}")),
                format!(
                    "{}/{}/{}/{}",
                    r.latency.p50_us, r.latency.p95_us, r.latency.p99_us, r.latency.max_us
                ),
                r.mean_batch_events
                    .map_or("-".into(), |b| format!("{b:.1}")),
                r.bytes_on_disk_per_event
                    .map_or("-".into(), |b| format!("{b:.0}")),
                format!(
                    "{}/{}",
                    r.server_cpu_us_per_op
                        .map_or("-".into(), |us| format!("{us:.0}")),
                    r.client_cpu_us_per_op
                        .map_or("-".into(), |us| format!("{us:.0}"))
                ),
                r.errors.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "WORKLOAD",
            "CLIENTS",
            "OPS",
            "OPS/S",
            "EVENTS/S",
            "P50/P95/P99/MAX µs",
            "BATCH",
            "BYTES/EVENT",
            "CPU µs/OP SERVER/CLIENT",
            "ERRORS",
        ],
        &rows,
    )
}
