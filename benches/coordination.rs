//! State-machine benchmarks: folding a realistic event mix into every projection (one core),
//! opening a large ledger with and without a snapshot, and durable in-process round trips for
//! lock acquire/release, claim/complete and send/consume; and the cost of parked waits on an
//! append that touches none of their keys (10,000 long-polling agents vs none).
//!
//! `cargo bench --bench coordination`; under `cargo test` each runs once on small fixtures.

use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteTask, CustomEvent, Enqueue, LogDecision, ReceiveSignal,
    ReleaseLock, SendSignal,
};
use std::collections::VecDeque;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetlog_ledger::{ChainHash, Json, Record, SignalTarget, Timestamp};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{
    Command, Coordinator, CoordinatorOptions, Outcome, PendingCommand, Projection, State, TaskSpec,
    rebuild, replay_range,
};
use fleetlog_suite::{Latencies, TempLedger, fleet_event, register};

fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn heartbeat(agent: &str) -> Command {
    fleetlog_suite::heartbeat(agent, 3_600_000)
}

/// Records in memory: the realistic mix the apply benchmark folds.
fn records(count: u64) -> Vec<Record> {
    (1..=count)
        .map(|seq| {
            let (actor, event) = fleet_event(seq);
            Record {
                seq,
                ts: Timestamp(1_795_392_000_000_000 + seq as i64 * 1_000),
                actor,
                event,
                prev: ChainHash::default(),
                hash: ChainHash::default(),
            }
        })
        .collect()
}

fn apply_rate(c: &mut Criterion) {
    let count = if benchmarking() { 1_000_000 } else { 2_000 };
    let records = records(count);
    let mut group = c.benchmark_group("projections");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(count));
    group.bench_function("apply_fleet_mix_into_all_projections", |b| {
        b.iter(|| {
            let mut state = State::default();
            for record in &records {
                state.apply(record);
            }
            state.seq
        });
    });
    group.finish();
}

/// Keeps up to `window` commands in flight, as a busy daemon does.
fn pipelined(coordinator: &Coordinator, commands: impl Iterator<Item = Command>, window: usize) {
    let mut in_flight: VecDeque<PendingCommand> = VecDeque::new();
    for command in commands {
        in_flight.push_back(coordinator.submit(command).expect("queued"));
        if in_flight.len() >= window {
            let _ = in_flight.pop_front().expect("non-empty").wait();
        }
    }
    for pending in in_flight {
        let _ = pending.wait();
    }
}

/// A ledger of about `commands` fleet commands (heartbeats, signals, locks, tasks), with a
/// snapshot every 10,000 events.
fn busy_ledger(commands: u64) -> (TempLedger, u64) {
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    let agents: Vec<String> = (0..16).map(|n| format!("agent-{n}")).collect();
    pipelined(&coordinator, agents.iter().map(|agent| register(agent)), 64);
    let script = (0..commands).map(|n| {
        let agent = agents[(n % 16) as usize].clone();
        match n % 10 {
            0..=4 => heartbeat(&agent),
            5 => Command::SendSignal(SendSignal {
                agent,
                kind: "note".to_owned(),
                target: SignalTarget::Agent(agents[((n + 1) % 16) as usize].clone()),
                payload: Json::null(),
                ttl_ms: 60_000,
                correlation_id: None,
            }),
            6 => Command::ReceiveSignal(ReceiveSignal {
                ack_ms: None,
                agent,
                filter: SignalFilter {
                    kind: "note".to_owned(),
                    ..Default::default()
                },
                consume: true,
                wait_ms: None,
            }),
            7 => Command::Enqueue(Enqueue {
                agent,
                spec: TaskSpec::new(format!("task {n}")),
            }),
            8 => Command::Claim(Claim {
                agent,
                tags: vec![],
                tag_match: Default::default(),
                task: None,
                lease_ttl_ms: 3_600_000,
                wait_ms: None,
            }),
            _ => Command::LogDecision(LogDecision {
                agent,
                decision_type: "plan".to_owned(),
                context: "bench".to_owned(),
                reason: "because".to_owned(),
                alternatives: vec![],
                metadata: Json::null(),
            }),
        }
    });
    pipelined(&coordinator, script, 512);
    let head = coordinator.ledger().head().expect("head").seq;
    (temp, head)
}

fn open_time(c: &mut Criterion) {
    let commands = if benchmarking() { 1_000_000 } else { 3_000 };
    let (temp, head) = busy_ledger(commands);
    let mut group = c.benchmark_group("open");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(head));
    group.bench_function("coordinator_open_from_snapshot", |b| {
        b.iter(|| {
            let coordinator =
                Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
            coordinator.state().seq
        });
    });
    group.bench_function("rebuild_by_full_replay", |b| {
        let ledger = fleetlog_ledger::Ledger::open_read_only(temp.path()).expect("read-only");
        b.iter(|| {
            let mut state = State::default();
            replay_range(ledger.reader(), &mut state, 1, head, &|_| {}).expect("replay");
            state.seq
        });
    });
    group.bench_function("rebuild_from_snapshot", |b| {
        let ledger = fleetlog_ledger::Ledger::open_read_only(temp.path()).expect("read-only");
        b.iter(|| rebuild(ledger.reader(), head).expect("rebuild").seq);
    });
    group.finish();
}

fn round_trips(c: &mut Criterion) {
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    for agent in ["a", "b"] {
        coordinator.execute(register(agent)).expect("register");
        coordinator.execute(heartbeat(agent)).expect("heartbeat");
    }
    let mut group = c.benchmark_group("durable_round_trip");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("lock_acquire_release", |b| {
        b.iter(|| {
            let token = match coordinator.execute(Command::AcquireLock(AcquireLock {
                slots: None,
                agent: "a".to_owned(),
                resource: "file".to_owned(),
                ttl_ms: 60_000,
                intent: "edit".to_owned(),
                wait_ms: None,
            })) {
                Ok(Outcome::Lock { lock }) => lock.token,
                other => panic!("{other:?}"),
            };
            coordinator
                .execute(Command::ReleaseLock(ReleaseLock {
                    agent: "a".to_owned(),
                    resource: "file".to_owned(),
                    token,
                }))
                .expect("release");
        });
    });
    group.bench_function("enqueue_claim_complete", |b| {
        b.iter(|| {
            coordinator
                .execute(Command::Enqueue(Enqueue {
                    agent: "a".to_owned(),
                    spec: TaskSpec::new("t"),
                }))
                .expect("enqueue");
            let task = match coordinator.execute(Command::Claim(Claim {
                agent: "b".to_owned(),
                tags: vec![],
                tag_match: Default::default(),
                task: None,
                lease_ttl_ms: 60_000,
                wait_ms: None,
            })) {
                Ok(Outcome::Task { task: Some(task) }) => task.id,
                other => panic!("{other:?}"),
            };
            coordinator
                .execute(Command::Complete(CompleteTask {
                    agent: "b".to_owned(),
                    task,
                    result: Json::null(),
                }))
                .expect("complete");
        });
    });
    group.bench_function("signal_send_consume", |b| {
        b.iter(|| {
            coordinator
                .execute(Command::SendSignal(SendSignal {
                    agent: "a".to_owned(),
                    kind: "ping".to_owned(),
                    target: SignalTarget::Agent("b".to_owned()),
                    payload: Json::null(),
                    ttl_ms: 60_000,
                    correlation_id: None,
                }))
                .expect("send");
            match coordinator.execute(Command::ReceiveSignal(ReceiveSignal {
                ack_ms: None,
                agent: "b".to_owned(),
                filter: SignalFilter {
                    kind: "ping".to_owned(),
                    ..Default::default()
                },
                consume: true,
                wait_ms: None,
            })) {
                Ok(Outcome::Signal { signal: Some(_) }) => {}
                other => panic!("{other:?}"),
            }
        });
    });
    group.finish();
}

/// A batch settles only the waits on keys its events touched: an append next to 10,000 parked
/// receives (each on its own agent's inbox) should cost what it costs next to none.
fn parked_waits(c: &mut Criterion) {
    let waiters = if benchmarking() { 10_000 } else { 100 };
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    coordinator.execute(register("writer")).expect("register");
    let agents: Vec<String> = (0..waiters).map(|n| format!("waiter-{n}")).collect();
    pipelined(
        &coordinator,
        agents.iter().map(|agent| register(agent)),
        512,
    );
    let append = || {
        coordinator
            .execute(Command::Custom(CustomEvent {
                agent: "writer".to_owned(),
                kind: "progress".to_owned(),
                payload: Json::null(),
            }))
            .expect("append");
    };
    let mut group = c.benchmark_group("parked_waits");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut none = Latencies::default();
    group.bench_function("append_with_no_parked_waits", |b| {
        b.iter_custom(|iters| none.time(iters, append))
    });
    // Each pending receive is a parked wait until dropped.
    let parked: Vec<PendingCommand> = agents
        .iter()
        .map(|agent| {
            coordinator
                .submit(Command::ReceiveSignal(ReceiveSignal {
                    ack_ms: None,
                    agent: agent.clone(),
                    filter: SignalFilter {
                        kind: "job".to_owned(),
                        ..Default::default()
                    },
                    consume: true,
                    wait_ms: Some(3_600_000),
                }))
                .expect("queued")
        })
        .collect();
    append();
    assert_eq!(
        coordinator.waiting(),
        waiters as u64,
        "every receive is parked"
    );
    let mut many = Latencies::default();
    group.bench_function("append_with_10k_parked_waits_on_other_keys", |b| {
        b.iter_custom(|iters| many.time(iters, append))
    });
    group.finish();
    println!("{}", none.report("append, no parked waits"));
    println!(
        "{}",
        many.report(&format!("append, {waiters} parked waits"))
    );
    drop(parked);
}

criterion_group!(benches, apply_rate, round_trips, parked_waits, open_time);
criterion_main!(benches);
