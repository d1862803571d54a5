//! `fleetlog bench`: N concurrent clients run one workload against a daemon (started for the run
//! on a temporary ledger, or `--url`), or embedded in-process, for a duration or an op count,
//! and report ops/s, events/s, latency percentiles (hdrhistogram), mean batch size per commit and
//! bytes on disk per event. Every acknowledged op is durable. With the `redis` feature the same
//! workloads run against `redis-server` with `appendfsync always` (see `redis_compare`).

use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteTask, CustomEvent, Enqueue, Heartbeat, ReceiveSignal, Register,
    ReleaseLock, SendSignal,
};
pub mod cpu;
pub mod floor;
#[cfg(feature = "redis")]
pub mod redis_compare;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetlog_ledger::{Json, SignalTarget};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Coordinator, CoordinatorOptions, Outcome, TaskSpec};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{BlockingClient, Endpoint, Method};
use crate::error::Error;

/// What each client does per op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// One custom event.
    Append,
    /// One heartbeat.
    Heartbeat,
    /// Send a signal, then consume it.
    Signal,
    /// Acquire a lock, then release it.
    Lock,
    /// Enqueue a task, claim it, complete it.
    Queue,
    /// A fleet's mix: 50% heartbeat, 20% append, 10% each of signal, lock, queue.
    Mixed,
    /// A request that does no work (`GET /v1/health/live`; Redis: `PING`): the transport's
    /// ceiling, against which the other workloads' rates read. Daemon only.
    Ping,
}

/// Why `ping` has no embedded form.
const PING_NEEDS_A_DAEMON: &str = "--workload ping measures the daemon's transport (a request that does no work); embedded there is no transport: drop --embedded";

impl std::str::FromStr for Workload {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "append" => Workload::Append,
            "heartbeat" => Workload::Heartbeat,
            "signal" => Workload::Signal,
            "lock" => Workload::Lock,
            "queue" => Workload::Queue,
            "mixed" => Workload::Mixed,
            "ping" => Workload::Ping,
            other => {
                return Err(Error::Config(format!(
                    "workload {other:?} is not append, heartbeat, signal, lock, queue, mixed or ping"
                )));
            }
        })
    }
}

impl Workload {
    /// The workload an op of a `Mixed` run performs, by op number.
    pub fn pick(self, op: u64) -> Workload {
        match (self, op % 10) {
            (Workload::Mixed, 0..=4) => Workload::Heartbeat,
            (Workload::Mixed, 5 | 6) => Workload::Append,
            (Workload::Mixed, 7) => Workload::Signal,
            (Workload::Mixed, 8) => Workload::Lock,
            (Workload::Mixed, _) => Workload::Queue,
            (single, _) => single,
        }
    }
}

/// How long to run.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    Duration { seconds: f64 },
    Ops { ops: u64 },
}

/// Latencies in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p95_us: histogram.value_at_quantile(0.95),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub target: String,
    pub workload: Workload,
    pub clients: u64,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Events appended per second (an op may append several).
    pub events_per_sec: Option<f64>,
    pub latency: Latency,
    /// Mean events per durable commit (group commit) during the run.
    pub mean_batch_events: Option<f64>,
    /// The ledger file's allocated blocks over the events in it (its length counts the holes
    /// redb leaves when it grows the file, so it would overstate); the write-ahead log is a
    /// fixed size and the snapshots are derived, so neither is counted.
    pub bytes_on_disk_per_event: Option<f64>,
    /// CPU time per op of the server (the daemon's threads, the embedded writer's, or
    /// redis-server), in µs; unknown for a daemon in another process.
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU time per op of everything else in this process: the load generator, in µs.
    pub client_cpu_us_per_op: Option<f64>,
}

impl BenchResult {
    fn with_cpu(mut self, cpu: Option<cpu::CpuPerOp>) -> Self {
        if let Some(cpu) = cpu {
            self.server_cpu_us_per_op = cpu.server_us;
            self.client_cpu_us_per_op = cpu.client_us;
        }
        self
    }
}

/// Something clients can run a workload against.
pub trait Target: Sync {
    type Client;
    /// One client's connection.
    fn client(&self) -> Result<Self::Client, Error>;
    /// Prepares client `agent` (registration, for fleetlog).
    fn prepare(&self, client: &mut Self::Client, agent: &str) -> Result<(), Error>;
    /// One op of `workload`.
    fn op(
        &self,
        client: &mut Self::Client,
        agent: &str,
        workload: Workload,
        op: u64,
    ) -> Result<(), Error>;

    /// `count` ops from `first` on; targets that can send several at once override this.
    fn ops(
        &self,
        client: &mut Self::Client,
        agent: &str,
        workload: Workload,
        first: u64,
        count: u64,
    ) -> Result<(), Error> {
        (first..first + count).try_for_each(|op| self.op(client, agent, workload, op))
    }
}

/// Sends a command through whichever way a fleetlog target reaches the state machine.
pub trait Commands: Sync {
    type Client;
    fn connect(&self) -> Result<Self::Client, Error>;
    fn run(&self, client: &Self::Client, command: Command) -> Result<Outcome, Error>;
    /// A request that does no work.
    fn ping(&self, client: &Self::Client) -> Result<(), Error>;
    /// Several commands at once, answered in order, each on its own.
    fn run_all(
        &self,
        client: &Self::Client,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, Error>>, Error>;
}

struct Embedded(Coordinator);

impl Commands for Embedded {
    type Client = ();
    fn connect(&self) -> Result<(), Error> {
        Ok(())
    }
    fn run(&self, (): &(), command: Command) -> Result<Outcome, Error> {
        Ok(self.0.execute(command)?)
    }
    fn ping(&self, (): &()) -> Result<(), Error> {
        Err(Error::Config(PING_NEEDS_A_DAEMON.into()))
    }
    fn run_all(
        &self,
        (): &(),
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
        // Pipelined: all queued before any is awaited, so they share commits.
        let pending = commands
            .into_iter()
            .map(|command| self.0.submit(command))
            .collect::<Vec<_>>();
        Ok(pending
            .into_iter()
            .map(|pending| Ok(pending?.wait()?))
            .collect())
    }
}

/// A daemon's endpoint; every connection shares the credentials the agents were issued.
struct Remote(BlockingClient);

impl Commands for Remote {
    type Client = BlockingClient;
    fn connect(&self) -> Result<BlockingClient, Error> {
        self.0.fork()
    }
    fn run(&self, client: &BlockingClient, command: Command) -> Result<Outcome, Error> {
        client.execute(&command)
    }
    fn ping(&self, client: &BlockingClient) -> Result<(), Error> {
        client
            .request(Method::GET, "/v1/health/live", None)
            .map(drop)
    }
    fn run_all(
        &self,
        client: &BlockingClient,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
        client.execute_batch(&commands)
    }
}

/// The commands of one op, when they can go out together (no answer feeds a later command);
/// `None` for ops whose second command needs the first one's answer (lock token, task id).
fn batchable(agent: &str, workload: Workload, op: u64) -> Option<Vec<Command>> {
    Some(match workload.pick(op) {
        Workload::Append | Workload::Mixed => vec![Command::Custom(CustomEvent {
            agent: agent.into(),
            kind: "bench".into(),
            payload: Json::from_value(&serde_json::json!(op)),
        })],
        Workload::Heartbeat => vec![Command::Heartbeat(Heartbeat {
            agent: agent.into(),
            status: Some("ok".into()),
            progress: None,
            current_task: None,
            metadata: None,
            ttl_ms: 600_000,
        })],
        // The writer runs a batch in order, so the consume sees the send before it.
        Workload::Signal => vec![
            Command::SendSignal(SendSignal {
                agent: agent.into(),
                kind: "bench".into(),
                target: SignalTarget::Agent(agent.into()),
                payload: Json::null(),
                ttl_ms: 60_000,
                correlation_id: None,
            }),
            Command::ReceiveSignal(ReceiveSignal {
                ack_ms: None,
                agent: agent.into(),
                filter: SignalFilter {
                    kind: "bench".into(),
                    ..Default::default()
                },
                consume: true,
                wait_ms: None,
            }),
        ],
        Workload::Lock | Workload::Queue | Workload::Ping => return None,
    })
}

impl<C: Commands> Target for C {
    type Client = C::Client;

    fn client(&self) -> Result<C::Client, Error> {
        self.connect()
    }

    fn prepare(&self, client: &mut C::Client, agent: &str) -> Result<(), Error> {
        self.run(client, register(agent)).map(drop)
    }

    fn ops(
        &self,
        client: &mut C::Client,
        agent: &str,
        workload: Workload,
        first: u64,
        count: u64,
    ) -> Result<(), Error> {
        let together: Option<Vec<Vec<Command>>> = (first..first + count)
            .map(|op| batchable(agent, workload, op))
            .collect();
        match together {
            Some(commands) if count > 1 => {
                for answer in self.run_all(client, commands.into_iter().flatten().collect())? {
                    answer?;
                }
                Ok(())
            }
            _ => (first..first + count).try_for_each(|op| self.op(client, agent, workload, op)),
        }
    }

    fn op(
        &self,
        client: &mut C::Client,
        agent: &str,
        workload: Workload,
        op: u64,
    ) -> Result<(), Error> {
        let run = |command: Command| self.run(client, command);
        // Lock and queue need one answer before the next command: a token, a task id.
        match workload.pick(op) {
            Workload::Lock => {
                let resource = format!("bench/{agent}");
                let token = match run(Command::AcquireLock(AcquireLock {
                    slots: None,
                    agent: agent.into(),
                    resource: resource.clone(),
                    ttl_ms: 30_000,
                    intent: "bench".into(),
                    wait_ms: Some(30_000),
                }))? {
                    Outcome::Lock { lock } => lock.token,
                    other => return Err(Error::Config(format!("unexpected {other:?}"))),
                };
                run(Command::ReleaseLock(ReleaseLock {
                    agent: agent.into(),
                    resource,
                    token,
                }))?;
            }
            Workload::Ping => self.ping(client)?,
            Workload::Queue => {
                run(Command::Enqueue(Enqueue {
                    agent: agent.into(),
                    spec: TaskSpec {
                        tags: vec![agent.into()],
                        ..TaskSpec::new("bench task")
                    },
                }))?;
                let task = match run(Command::Claim(Claim {
                    agent: agent.into(),
                    tags: vec![agent.into()],
                    tag_match: Default::default(),
                    task: None,
                    lease_ttl_ms: 60_000,
                    wait_ms: None,
                }))? {
                    Outcome::Task { task: Some(task) } => task.id,
                    other => return Err(Error::Config(format!("unexpected {other:?}"))),
                };
                run(Command::Complete(CompleteTask {
                    agent: agent.into(),
                    task,
                    result: Json::null(),
                }))?;
            }
            // Append, heartbeat, signal: the commands a batch would carry, one at a time.
            single => {
                for command in batchable(agent, single, op).unwrap_or_default() {
                    run(command)?;
                }
            }
        }
        Ok(())
    }
}

fn register(agent: &str) -> Command {
    Command::Register(Register {
        agent: agent.into(),
        role: "bench".into(),
        name: agent.into(),
        working_on: String::new(),
        capabilities: vec![],
        metadata: Json::null(),
    })
}

/// Runs `clients` threads until `stop`, recording each op's latency.
/// `batch` ops go out per request (1: one at a time); latencies are then per request.
pub fn drive<T: Target>(
    target: &T,
    workload: Workload,
    clients: u64,
    batch: u64,
    stop: Stop,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64, Duration, Histogram<u64>), Error> {
    let batch = batch.max(1);
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let mut setup = target.client()?;
    for n in 0..clients {
        target.prepare(&mut setup, &format!("bench-{n}"))?;
    }
    let started = Instant::now();
    let deadline = match stop {
        Stop::Duration { seconds } => Some(started + Duration::from_secs_f64(seconds)),
        Stop::Ops { .. } => None,
    };
    let budget = match stop {
        Stop::Ops { ops } => ops,
        Stop::Duration { .. } => u64::MAX,
    };
    // Each client's histogram and when it stopped: the run lasts until the last one stops, not
    // until the progress loop below next looks (it sleeps 100 ms at a time).
    type Finished = (Histogram<u64>, Instant);
    let histograms: Vec<Result<Finished, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|n| {
                let (done, errors, finished) = (&done, &errors, &finished);
                scope.spawn(move || -> Result<Finished, Error> {
                    let mut client = target.client()?;
                    let agent = format!("bench-{n}");
                    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .expect("valid histogram bounds");
                    loop {
                        let index = done.fetch_add(batch, Ordering::Relaxed);
                        if index >= budget
                            || finished.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            done.fetch_sub(batch, Ordering::Relaxed);
                            return Ok((histogram, Instant::now()));
                        }
                        // The last request of an op budget may carry fewer.
                        let count = batch.min(budget - index);
                        done.fetch_sub(batch - count, Ordering::Relaxed);
                        let begun = Instant::now();
                        if target
                            .ops(&mut client, &agent, workload, index, count)
                            .is_err()
                        {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
                    }
                })
            })
            .collect();
        while handles.iter().any(|handle| !handle.is_finished()) {
            progress(done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        finished.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::Config("a client panicked".into())))
            })
            .collect()
    });
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut last = started;
    for finished in histograms {
        let (histogram, stopped) = finished?;
        last = last.max(stopped);
        total
            .add(histogram)
            .map_err(|error| Error::Config(error.to_string()))?;
    }
    Ok((
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        last - started,
        total,
    ))
}

pub(crate) fn result(
    target: String,
    workload: Workload,
    clients: u64,
    run: (u64, u64, Duration, Histogram<u64>),
) -> BenchResult {
    let (ops, errors, elapsed, histogram) = run;
    let seconds = elapsed.as_secs_f64();
    BenchResult {
        target,
        workload,
        clients,
        ops,
        errors,
        seconds,
        ops_per_sec: ops as f64 / seconds.max(1e-9),
        events_per_sec: None,
        latency: Latency::of(&histogram),
        mean_batch_events: None,
        bytes_on_disk_per_event: None,
        server_cpu_us_per_op: None,
        client_cpu_us_per_op: None,
    }
}

/// Runs the workload in-process on a ledger at `db`.
pub fn embedded(
    db: &Path,
    exclusive: bool,
    workload: Workload,
    clients: u64,
    batch: u64,
    stop: Stop,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BenchResult, Error> {
    if workload == Workload::Ping {
        return Err(Error::Config(PING_NEEDS_A_DAEMON.into()));
    }
    let options = CoordinatorOptions {
        exclusive,
        ..CoordinatorOptions::default()
    };
    let fleet = Embedded(Coordinator::open(db, options)?);
    let before = fleet.0.ledger().writer_stats();
    let cpu_before = cpu::CpuMark::now(None);
    let run = drive(&fleet, workload, clients, batch, stop, progress)?;
    let cpu_after = cpu::CpuMark::now(None);
    let after = fleet.0.ledger().writer_stats();
    let head = fleet.0.ledger().head()?.seq;
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| before.per_op(&after, run.0, true).all_server());
    let mut result = result("embedded".into(), workload, clients, run).with_cpu(cpu);
    let (events, commits) = (after.events - before.events, after.commits - before.commits);
    result.events_per_sec = Some(events as f64 / result.seconds.max(1e-9));
    result.mean_batch_events = (commits > 0).then(|| events as f64 / commits as f64);
    drop(fleet);
    result.bytes_on_disk_per_event = disk_per_event(db, head);
    Ok(result)
}

fn disk_per_event(db: &Path, events: u64) -> Option<f64> {
    let bytes = fleetlog_ledger::disk_usage(db).ok()?.ledger.allocated;
    (events > 0).then(|| bytes as f64 / events as f64)
}

/// Runs the workload against a daemon at `endpoint`; `db` (if local) for bytes on disk.
pub fn daemon(
    endpoint: Endpoint,
    db: Option<&Path>,
    workload: Workload,
    clients: u64,
    batch: u64,
    stop: Stop,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BenchResult, Error> {
    let fleet = Remote(BlockingClient::new(endpoint.clone())?);
    let probe = fleet.client()?;
    let writer = |client: &BlockingClient| -> Result<(u64, u64), Error> {
        let health = client.request(Method::GET, "/v1/health", None)?;
        Ok((
            health["writer"]["events"].as_u64().unwrap_or(0),
            health["writer"]["commits"].as_u64().unwrap_or(0),
        ))
    };
    let before = writer(&probe)?;
    let cpu_before = cpu::CpuMark::now(None);
    let run = drive(&fleet, workload, clients, batch, stop, progress)?;
    let cpu_after = cpu::CpuMark::now(None);
    let after = writer(&probe)?;
    let head = probe.request(Method::GET, "/v1/head", None)?["seq"]
        .as_u64()
        .unwrap_or(0);
    let target = match &endpoint {
        Endpoint::Unix(path) => format!("daemon unix:{}", path.display()),
        Endpoint::Tcp { address, .. } => format!("daemon http://{address}"),
    };
    // The daemon `bench` starts runs in this process; one at --url does not (db is then None).
    let in_process = db.is_some();
    let cpu = cpu_before.zip(cpu_after).map(|(before, after)| {
        let spent = before.per_op(&after, run.0, in_process);
        match in_process {
            true => spent,
            false => cpu::CpuPerOp {
                server_us: None,
                ..spent
            },
        }
    });
    let mut result = result(target, workload, clients, run).with_cpu(cpu);
    let (events, commits) = (after.0 - before.0, after.1 - before.1);
    result.events_per_sec = Some(events as f64 / result.seconds.max(1e-9));
    result.mean_batch_events = (commits > 0).then(|| events as f64 / commits as f64);
    result.bytes_on_disk_per_event = db.and_then(|db| disk_per_event(db, head));
    Ok(result)
}
