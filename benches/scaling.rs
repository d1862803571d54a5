//! Cost against history: does a fleet that has run for months cost more than one that started
//! today, with the same live set? Runs N finished tasks (enqueue, claim, complete: 3 events each)
//! through an embedded coordinator with snapshots on (the default interval), for two N, and
//! prints side by side:
//!
//! - bytes on disk per event: the ledger file's allocated blocks ("B/event"; its length, which
//!   counts the holes redb's doubling growth leaves, beside it), with the snapshot files too,
//!   and with snapshots off (the records alone);
//! - the newest snapshot's size (the hot state, encoded);
//! - reopening: time, the time without the whole-chain verification ("load": what the state
//!   costs to load), and the RSS of a fresh process that opened it (measured in a child, so the
//!   bench's own allocations do not count);
//! - reading the first finished task back from the log by id (the state keeps only how it
//!   ended), in that fresh process;
//! - the p50/p99/max of a probe append taken between windows, with snapshots on and off (the
//!   cost of snapshots to appends).
//!
//! Then each workload of `fleetlog bench` (append, heartbeat, signal, lock, queue) for N ops:
//! bytes per event and a fresh process's open time and RSS.
//!
//! `cargo bench --bench scaling` runs 10k and 100k tasks (`FLEETLOG_SCALING_TASKS=a,b` for
//! others) and 10k and 100k ops of each workload (`FLEETLOG_SCALING_OPS`), the tasks with the
//! ledger shared unless `FLEETLOG_SCALING_EXCLUSIVE=1`; under `cargo test` it runs 500 and 2,000 as a smoke test and checks the figures are
//! sane. Not criterion: these are sizes, not one timed operation.

use std::path::Path;
use std::time::{Duration, Instant};

use fleetlog_ledger::SignalTarget;
use fleetlog_ledger::{DiskUsage, Json, disk_usage};
use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteTask, CustomEvent, Enqueue, Heartbeat, ReceiveSignal, ReleaseLock,
    SendSignal,
};
use fleetlog_projections::queue::archive;
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{
    Command, Coordinator, CoordinatorOptions, Outcome, PendingCommand,
    SNAPSHOT_EVERY_EVENTS_DEFAULT, TaskSpec,
};
use fleetlog_suite::{Latencies, TempLedger, register};

/// Commands submitted together, so the writer commits them in a few batches.
const WINDOW: usize = 256;
const AGENT: &str = "worker";
/// Set in the child that measures a reopen: the ledger to open.
const OPEN_ENV: &str = "FLEETLOG_SCALING_OPEN";
/// Set beside [`OPEN_ENV`]: open without verifying the whole chain first (`--skip-verify`).
const SKIP_VERIFY_ENV: &str = "FLEETLOG_SCALING_SKIP_VERIFY";
/// Set (to anything but `0`) to run the tasks with the ledger held exclusively, acknowledged
/// from the write-ahead log, as the daemon holds it by default.
const EXCLUSIVE_ENV: &str = "FLEETLOG_SCALING_EXCLUSIVE";

fn exclusive() -> bool {
    std::env::var(EXCLUSIVE_ENV).is_ok_and(|value| !value.is_empty() && value != "0")
}

struct Run {
    tasks: u64,
    events: u64,
    disk: DiskUsage,
    snapshot_bytes: u64,
    probes: Latencies,
}

fn wait_all(pending: Vec<PendingCommand>) -> Vec<Outcome> {
    pending
        .into_iter()
        .map(|command| command.wait().expect("the command is accepted"))
        .collect()
}

fn submit_all(fleet: &Coordinator, commands: impl Iterator<Item = Command>) -> Vec<Outcome> {
    let pending = commands
        .map(|command| fleet.submit(command).expect("submitted"))
        .collect();
    wait_all(pending)
}

fn task_id(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Task { task: Some(task) } => task.id,
        Outcome::Appended { seq } => *seq,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// N tasks run to completion, a window at a time, with one probe append timed per window.
fn run(ledger: &TempLedger, tasks: u64, snapshots: bool) -> Run {
    let options = CoordinatorOptions {
        snapshot_every_events: if snapshots {
            SNAPSHOT_EVERY_EVENTS_DEFAULT
        } else {
            0
        },
        exclusive: exclusive(),
        ..CoordinatorOptions::default()
    };
    let fleet = Coordinator::open(&ledger.path, options).expect("opens");
    fleet.execute(register(AGENT)).expect("registers");
    let mut probes = Latencies::default();
    let mut done = 0;
    while done < tasks {
        let window = (tasks - done).min(WINDOW as u64);
        workload_window(&fleet, Workload::Queue, done, window);
        probes.time(1, || {
            fleet
                .execute(Command::Custom(CustomEvent {
                    agent: AGENT.into(),
                    kind: "probe".into(),
                    payload: Json::null(),
                }))
                .expect("probe");
        });
        done += window;
    }
    let reader = fleet.ledger().reader();
    let events = reader.last_seq().expect("head");
    let snapshot_bytes = reader
        .snapshot_at_or_before(events)
        .expect("snapshots read")
        .map_or(0, |(_, bytes)| bytes.len() as u64);
    drop(fleet);
    let disk = disk_usage(&ledger.path).expect("the ledger's files");
    Run {
        tasks,
        events,
        disk,
        snapshot_bytes,
        probes,
    }
}

/// Opens `path` in a child process: (open time, its RSS after opening, the time to read the
/// first finished task back). With `verify` false the open skips the whole-chain verification
/// every writable open does, which leaves what loading the state costs.
fn reopen(path: &Path, verify: bool) -> (Duration, u64, Duration) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("this bench"));
    child.env(OPEN_ENV, path);
    if !verify {
        child.env(SKIP_VERIFY_ENV, "1");
    }
    let output = child.output().expect("the child runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let micros: u64 = fields.next().and_then(|f| f.parse().ok()).expect("open µs");
    let rss: u64 = fields.next().and_then(|f| f.parse().ok()).expect("rss kB");
    let find: u64 = fields.next().and_then(|f| f.parse().ok()).expect("find µs");
    (
        Duration::from_micros(micros),
        rss * 1024,
        Duration::from_micros(find),
    )
}

/// The child's half of [`reopen`].
fn open_and_report(path: &str) {
    let options = CoordinatorOptions {
        skip_verify: std::env::var_os(SKIP_VERIFY_ENV).is_some(),
        ..CoordinatorOptions::default()
    };
    let started = Instant::now();
    let fleet = Coordinator::open(path, options).expect("reopens");
    let took = started.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    let state = fleet.state();
    assert!(state.queue.tasks.is_empty(), "every task finished");
    let find = match state.queue.finished.after(None).next() {
        Some((first, _)) => {
            let started = Instant::now();
            let task = archive::task(&state.queue, fleet.ledger().reader(), first, state.seq)
                .expect("the log reads")
                .expect("the task is in the log");
            assert!(task.title.ends_with(" 0"), "{}", task.title);
            started.elapsed()
        }
        None => Duration::ZERO,
    };
    println!("{} {rss_kb} {}", took.as_micros(), find.as_micros());
}

/// The workloads of `fleetlog bench`, each op as the commands it takes.
#[derive(Clone, Copy, Debug)]
enum Workload {
    Append,
    Heartbeat,
    Signal,
    Lock,
    Queue,
}

/// One window of `count` ops of `workload`, from op `first`.
fn workload_window(fleet: &Coordinator, workload: Workload, first: u64, count: u64) {
    let ops = first..first + count;
    match workload {
        Workload::Append => {
            submit_all(
                fleet,
                ops.map(|op| {
                    Command::Custom(CustomEvent {
                        agent: AGENT.into(),
                        kind: "bench".into(),
                        payload: Json::from_value(&serde_json::json!(op)),
                    })
                }),
            );
        }
        Workload::Heartbeat => {
            submit_all(
                fleet,
                ops.map(|_| {
                    Command::Heartbeat(Heartbeat {
                        agent: AGENT.into(),
                        status: Some("ok".into()),
                        progress: None,
                        current_task: None,
                        metadata: None,
                        ttl_ms: 600_000,
                    })
                }),
            );
        }
        Workload::Signal => {
            // The writer runs submissions in order, so each receive sees its send.
            submit_all(
                fleet,
                ops.flat_map(|_| {
                    [
                        Command::SendSignal(SendSignal {
                            agent: AGENT.into(),
                            kind: "bench".into(),
                            target: SignalTarget::Agent(AGENT.into()),
                            payload: Json::null(),
                            ttl_ms: 60_000,
                            correlation_id: None,
                        }),
                        Command::ReceiveSignal(ReceiveSignal {
                            ack_ms: None,
                            agent: AGENT.into(),
                            filter: SignalFilter {
                                kind: "bench".into(),
                                ..Default::default()
                            },
                            consume: true,
                            wait_ms: None,
                        }),
                    ]
                }),
            );
        }
        Workload::Lock => {
            let resources: Vec<String> = ops.map(|op| format!("bench/{}", op % 1024)).collect();
            let granted = submit_all(
                fleet,
                resources.iter().map(|resource| {
                    Command::AcquireLock(AcquireLock {
                        agent: AGENT.into(),
                        resource: resource.clone(),
                        ttl_ms: 30_000,
                        intent: "bench".into(),
                        wait_ms: None,
                        slots: None,
                    })
                }),
            );
            submit_all(
                fleet,
                resources
                    .into_iter()
                    .zip(granted)
                    .map(|(resource, outcome)| {
                        let token = match outcome {
                            Outcome::Lock { lock } => lock.token,
                            other => panic!("unexpected {other:?}"),
                        };
                        Command::ReleaseLock(ReleaseLock {
                            agent: AGENT.into(),
                            resource,
                            token,
                        })
                    }),
            );
        }
        Workload::Queue => {
            let enqueued = submit_all(
                fleet,
                ops.map(|op| {
                    Command::Enqueue(Enqueue {
                        agent: AGENT.into(),
                        spec: TaskSpec::new(format!("bench {op}")),
                    })
                }),
            );
            let ids: Vec<u64> = enqueued.iter().map(task_id).collect();
            submit_all(
                fleet,
                ids.iter().map(|id| {
                    Command::Claim(Claim {
                        agent: AGENT.into(),
                        tags: Vec::new(),
                        tag_match: Default::default(),
                        task: Some(*id),
                        lease_ttl_ms: 600_000,
                        wait_ms: None,
                    })
                }),
            );
            submit_all(
                fleet,
                ids.iter().map(|id| {
                    Command::Complete(CompleteTask {
                        agent: AGENT.into(),
                        task: *id,
                        result: Json::null(),
                    })
                }),
            );
        }
    }
}

/// `ops` ops of `workload` with snapshots on; then the file's bytes per event, and a fresh
/// process's open time and RSS.
fn workload_row(workload: Workload, ops: u64) {
    let ledger = TempLedger::new();
    let fleet = Coordinator::open(&ledger.path, CoordinatorOptions::default()).expect("opens");
    fleet.execute(register(AGENT)).expect("registers");
    let mut done = 0;
    while done < ops {
        let window = (ops - done).min(WINDOW as u64);
        workload_window(&fleet, workload, done, window);
        done += window;
    }
    let reader = fleet.ledger().reader();
    let events = reader.last_seq().expect("head");
    assert!(events > ops, "every op appended");
    let mut record_bytes = 0u64;
    reader
        .scan_raw(1..=events, |_, raw| {
            record_bytes += raw.len() as u64;
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .expect("reads");
    drop(fleet);
    let disk = disk_usage(&ledger.path).expect("the ledger's files");
    let (open, rss, _) = reopen(&ledger.path, true);
    let (load, _, _) = reopen(&ledger.path, false);
    let per_event = |bytes: u64| bytes as f64 / events as f64;
    println!(
        "{:>10} {:>8} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>9.1} {:>9.1}",
        format!("{workload:?}").to_lowercase(),
        ops,
        events,
        per_event(record_bytes),
        per_event(disk.ledger.allocated),
        per_event(disk.ledger.length),
        per_event(disk.ledger.allocated + disk.snapshots.allocated),
        open.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        mib(rss),
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if let Ok(path) = std::env::var(OPEN_ENV) {
        return open_and_report(&path);
    }
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let sizes: Vec<u64> = match std::env::var("FLEETLOG_SCALING_TASKS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) if benchmarking => vec![10_000, 100_000],
        Err(_) => vec![500, 2_000],
    };
    println!(
        "{:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>8} {:>24} {:>24}",
        "tasks",
        "events",
        "B/event",
        "length",
        "+snaps",
        "B/ev bare",
        "snapshot",
        "open ms",
        "load ms",
        "RSS MiB",
        "find µs",
        "probe p50/p99/max ms",
        "no snapshots p50/p99/max"
    );
    let mut rows = Vec::new();
    for tasks in sizes {
        let with = TempLedger::new();
        let bare = TempLedger::new();
        let mut snapshotted = run(&with, tasks, true);
        let mut plain = run(&bare, tasks, false);
        let (open, rss, find) = reopen(&with.path, true);
        let (load, _, _) = reopen(&with.path, false);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let quantiles = |l: &mut Latencies| {
            format!(
                "{:.2}/{:.2}/{:.2}",
                ms(l.quantile(0.5)),
                ms(l.quantile(0.99)),
                ms(l.quantile(1.0))
            )
        };
        println!(
            "{:>8} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8.1}MiB {:>9.1} {:>9.1} {:>9.1} {:>8} {:>24} {:>24}",
            snapshotted.tasks,
            snapshotted.events,
            snapshotted.disk.ledger.allocated as f64 / snapshotted.events as f64,
            snapshotted.disk.ledger.length as f64 / snapshotted.events as f64,
            (snapshotted.disk.ledger.allocated + snapshotted.disk.snapshots.allocated) as f64
                / snapshotted.events as f64,
            plain.disk.ledger.allocated as f64 / plain.events as f64,
            mib(snapshotted.snapshot_bytes),
            ms(open),
            ms(load),
            mib(rss),
            find.as_micros(),
            quantiles(&mut snapshotted.probes),
            quantiles(&mut plain.probes),
        );
        assert_eq!(
            snapshotted.events, plain.events,
            "the same history both ways"
        );
        assert_eq!(
            snapshotted.events,
            1 + tasks * 3 + tasks.div_ceil(WINDOW as u64)
        );
        rows.push((snapshotted, rss));
    }
    let workload_ops: Vec<u64> = match std::env::var("FLEETLOG_SCALING_OPS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) if benchmarking => vec![10_000, 100_000],
        Err(_) => vec![300],
    };
    println!(
        "\n{:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "ops",
        "events",
        "record B",
        "B/event",
        "length",
        "+snaps",
        "open ms",
        "load ms",
        "RSS MiB"
    );
    for workload in [
        Workload::Append,
        Workload::Heartbeat,
        Workload::Signal,
        Workload::Lock,
        Workload::Queue,
    ] {
        for ops in &workload_ops {
            workload_row(workload, *ops);
        }
    }
    if !benchmarking && let [(small, _), (large, _)] = rows.as_slice() {
        // Sanity, not speed: the figures are real measurements of a real run.
        assert!(large.disk.ledger.allocated > small.disk.ledger.allocated);
        assert!(large.snapshot_bytes > 0 || large.events < SNAPSHOT_EVERY_EVENTS_DEFAULT);
    }
}
