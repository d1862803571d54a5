//! Daemon benchmarks through the real HTTP stack over the Unix socket: how long a waiter blocked
//! in a long-poll `signal wait` takes to return after another client sends the signal (p50/p99
//! printed beside criterion's mean), and round trips for lock acquire/release and
//! claim/complete. The server runs in this process on its own runtime; clients are separate
//! threads with their own connections, so every call crosses the socket and the writer.
//!
//! `cargo bench --bench daemon`; under `cargo test` each runs once.

use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteTask, CustomEvent, Enqueue, ReceiveSignal, ReleaseLock, SendSignal,
};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fleetlog::client::{BlockingClient, Endpoint};
use fleetlog::daemon::{ServerConfig, serve};
use fleetlog_ledger::{Json, SignalTarget};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Outcome, TaskSpec};
use fleetlog_suite::{TempLedger, heartbeat, register};

/// A daemon on a temporary ledger, stopped when dropped.
struct Daemon {
    temp: TempLedger,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// As `serve` does by default: holding the file exclusively.
    fn start() -> Daemon {
        Self::start_with(true)
    }

    /// With `exclusive`, as `serve` (acknowledged from the write-ahead log); without, as
    /// `serve --shared`.
    fn start_with(exclusive: bool) -> Daemon {
        let temp = TempLedger::new();
        let socket = temp.sibling("fleet.sock");
        let config = ServerConfig {
            db: temp.path().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            socket: socket.clone(),
            token: None,
            shutdown_grace: fleetlog::daemon::SHUTDOWN_GRACE,
            skip_verify: false,
            exclusive,
            auth: Some(fleetlog::daemon::AuthMode::Agents),
            tls: None,
            idle_exit: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime
                .block_on(serve(config, async {
                    let _ = stopped.await;
                }))
                .expect("the daemon runs");
        });
        while !socket.exists() {
            std::thread::yield_now();
        }
        Daemon {
            temp,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> BlockingClient {
        // Clients share the agents' credentials through the files beside the ledger.
        BlockingClient::new(Endpoint::Unix(self.socket.clone()))
            .expect("client")
            .with_db(self.temp.path())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn signal_wake_latency(c: &mut Criterion) {
    let daemon = Daemon::start();
    let sender = daemon.client();
    for agent in ["producer", "consumer"] {
        sender.execute(&register(agent)).expect("register");
        sender
            .execute(&heartbeat(agent, 3_600_000))
            .expect("heartbeat");
    }
    // The consumer waits in its own thread, on its own connection, and reports when it wakes.
    let (go, wait_now) = mpsc::channel::<()>();
    let (woke, woken) = mpsc::channel::<Instant>();
    let client = daemon.client();
    let consumer = std::thread::spawn(move || {
        let wait = Command::ReceiveSignal(ReceiveSignal {
            ack_ms: None,
            agent: "consumer".into(),
            filter: SignalFilter {
                kind: "ping".into(),
                ..Default::default()
            },
            consume: true,
            wait_ms: Some(60_000),
        });
        while wait_now.recv().is_ok() {
            match client.execute(&wait) {
                Ok(Outcome::Signal { signal: Some(_) }) => {
                    woke.send(Instant::now()).expect("report")
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let send = Command::SendSignal(SendSignal {
        agent: "producer".into(),
        kind: "ping".into(),
        target: SignalTarget::Agent("consumer".into()),
        payload: Json::null(),
        ttl_ms: 60_000,
        correlation_id: None,
    });
    let probe = |samples: &mut Vec<Duration>| {
        go.send(()).expect("consumer alive");
        // Let the consumer park its wait before sending: a wait that finds the signal already
        // there would measure a plain round trip instead of a wake-up.
        while daemon_waiters(&sender) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        sender.execute(&send).expect("send");
        let woke_at = woken.recv().expect("woken");
        samples.push(woke_at.duration_since(started));
    };
    let mut samples = Vec::new();
    let mut group = c.benchmark_group("daemon");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("signal_send_to_waiter_woken", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut one = Vec::new();
                probe(&mut one);
                total += one[0];
                samples.extend(one);
            }
            total
        });
    });
    group.finish();
    drop(go);
    consumer.join().expect("consumer");
    samples.sort();
    if !samples.is_empty() {
        println!(
            "signal wake latency over {} wakes: p50 {:?}, p99 {:?}, max {:?}",
            samples.len(),
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples[samples.len() - 1]
        );
    }
}

/// Parked waits, from the daemon's health (the consumer is the only waiter).
fn daemon_waiters(client: &BlockingClient) -> u64 {
    let health = client
        .request(fleetlog::client::Method::GET, "/v1/health", None)
        .expect("health");
    health["waiters"].as_u64().unwrap_or(0)
}

fn http_round_trips(c: &mut Criterion) {
    let daemon = Daemon::start();
    let client = daemon.client();
    for agent in ["a", "b"] {
        client.execute(&register(agent)).expect("register");
        client
            .execute(&heartbeat(agent, 3_600_000))
            .expect("heartbeat");
    }
    let mut group = c.benchmark_group("daemon");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("http_lock_acquire_release", |b| {
        b.iter(|| {
            let token = match client.execute(&Command::AcquireLock(AcquireLock {
                slots: None,
                agent: "a".into(),
                resource: "file".into(),
                ttl_ms: 60_000,
                intent: String::new(),
                wait_ms: None,
            })) {
                Ok(Outcome::Lock { lock }) => lock.token,
                other => panic!("{other:?}"),
            };
            client
                .execute(&Command::ReleaseLock(ReleaseLock {
                    agent: "a".into(),
                    resource: "file".into(),
                    token,
                }))
                .expect("release");
        });
    });
    group.bench_function("http_enqueue_claim_complete", |b| {
        b.iter(|| {
            client
                .execute(&Command::Enqueue(Enqueue {
                    agent: "a".into(),
                    spec: TaskSpec::new("t"),
                }))
                .expect("enqueue");
            let task = match client.execute(&Command::Claim(Claim {
                agent: "b".into(),
                tags: vec![],
                tag_match: Default::default(),
                task: None,
                lease_ttl_ms: 60_000,
                wait_ms: None,
            })) {
                Ok(Outcome::Task { task: Some(task) }) => task.id,
                other => panic!("{other:?}"),
            };
            client
                .execute(&Command::Complete(CompleteTask {
                    agent: "b".into(),
                    task,
                    result: Json::null(),
                }))
                .expect("complete");
        });
    });
    group.finish();
}

/// One durable append over HTTP, the daemon sharing its file with read-only processes (redb's
/// two-phase commit: two fsyncs) against holding it exclusively (a write-ahead-log frame: one
/// in-place write and one fsync).
fn durable_append_shared_vs_exclusive(c: &mut Criterion) {
    let mut group = c.benchmark_group("daemon_append");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    for (name, exclusive) in [("shared_two_phase", false), ("exclusive_wal", true)] {
        let daemon = Daemon::start_with(exclusive);
        let client = daemon.client();
        client.execute(&register("a")).expect("register");
        client
            .execute(&heartbeat("a", 3_600_000))
            .expect("heartbeat");
        let append = Command::Custom(CustomEvent {
            agent: "a".into(),
            kind: "bench".into(),
            payload: Json::null(),
        });
        group.bench_function(name, |b| {
            b.iter(|| client.execute(&append).expect("append"));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    signal_wake_latency,
    http_round_trips,
    durable_append_shared_vs_exclusive
);
criterion_main!(benches);
