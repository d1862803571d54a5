//! Analytics over a ledger of about a million events: 80,000 imported workflows (start, eight
//! stages, completion) spread over 60 days, plus live coordination traffic that leaves waits
//! (claims, locks, signals) for the overhead breakdown. Each analytic is timed on the committed
//! state, as `fleetlog` and the daemon run it. Then readers against the writer: append latency
//! idle, and while another thread runs the overhead analytic in a loop on the published state.
//!
//! `cargo bench --bench analytics`; under `cargo test` the ledger is small.

use fleetlog_projections::commands::{
    AcquireLock, Claim, CustomEvent, Enqueue, Heartbeat, ImportTelemetry, ReceiveSignal, SendSignal,
};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetlog_ledger::{Event, Json, Outcome, SignalTarget, Timestamp};
use fleetlog_projections::analytics::{self, TREND_THRESHOLD_POINTS_DEFAULT, Window};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Coordinator, CoordinatorOptions, PendingCommand, TaskSpec};
use fleetlog_suite::{Latencies, TempLedger, heartbeat, register};

const TASK_KINDS: [&str; 10] = [
    "API development for orders",
    "database migration for payments",
    "frontend form validation",
    "write integration tests",
    "code review of the backend",
    "performance profiling",
    "documentation for the API",
    "security audit of authentication",
    "deploy to staging",
    "refactor the billing module",
];

fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn workflow(n: u64, now: Timestamp) -> Vec<Event> {
    let id = format!("wf-{n}");
    let start = now.minus_millis((n * 7_919 % (60 * 24 * 60)) * 60_000);
    let agent = |stage: u64| format!("agent-{}", (n + stage * 3) % 16);
    let mut events = vec![Event::WorkflowStarted {
        workflow_id: id.clone(),
        project: format!("project-{}", n % 4),
        agent_plan: (0..8).map(agent).collect(),
        estimated_duration_ms: Some(8 * 600_000),
        session_id: None,
        occurred_at: Some(start),
    }];
    for stage in 0..8u64 {
        let kind = TASK_KINDS[((n + stage) % 10) as usize];
        events.push(Event::StageCompleted {
            workflow_id: id.clone(),
            stage: format!("stage-{stage}"),
            agent: agent(stage),
            tier: ["standard", "premium"][(stage % 2) as usize].to_owned(),
            outcome: if (n + stage).is_multiple_of(9) {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            duration_ms: 400_000 + (n * 31 + stage * 17) % 300_000,
            cost_usd: 0.01 * (1 + stage % 3) as f64,
            tokens: 1_000 + stage * 10,
            description: kind.to_owned(),
            tags: vec![kind.split(' ').next().unwrap_or_default().to_lowercase()],
            quality: None,
            occurred_at: Some(start.plus_millis((stage + 1) * 600_000)),
        });
    }
    events.push(Event::WorkflowCompleted {
        workflow_id: id,
        success: !n.is_multiple_of(7),
        error: None,
        agents_executed: vec![],
        duration_ms: Some(8 * 640_000),
        occurred_at: Some(start.plus_millis(8 * 640_000)),
    });
    events
}

fn pipelined(coordinator: &Coordinator, commands: impl Iterator<Item = Command>) {
    let mut in_flight: std::collections::VecDeque<PendingCommand> = Default::default();
    for command in commands {
        in_flight.push_back(coordinator.submit(command).expect("queued"));
        if in_flight.len() >= 512 {
            let _ = in_flight.pop_front().expect("non-empty").wait();
        }
    }
    for pending in in_flight {
        let _ = pending.wait();
    }
}

fn build(workflows: u64, traffic: u64) -> (TempLedger, Coordinator) {
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    let agents: Vec<String> = (0..16).map(|n| format!("agent-{n}")).collect();
    pipelined(
        &coordinator,
        agents
            .iter()
            .flat_map(|a| [register(a), heartbeat(a, 24 * 3_600_000)]),
    );
    coordinator.execute(register("importer")).expect("register");
    let now = Timestamp::now();
    let per_command = 2_000;
    let mut n = 0;
    while n < workflows {
        let events: Vec<Event> = (n..(n + per_command).min(workflows))
            .flat_map(|n| workflow(n, now))
            .collect();
        coordinator
            .execute(Command::ImportTelemetry(ImportTelemetry {
                agent: "importer".into(),
                events,
            }))
            .expect("import");
        n += per_command;
    }
    let script = (0..traffic).map(|n| {
        let agent = agents[(n % 16) as usize].clone();
        let other = agents[((n + 5) % 16) as usize].clone();
        match n % 6 {
            0 => Command::Enqueue(Enqueue {
                agent,
                spec: TaskSpec::new(TASK_KINDS[(n % 10) as usize]),
            }),
            1 => Command::Claim(Claim {
                agent,
                tags: vec![],
                tag_match: Default::default(),
                task: None,
                lease_ttl_ms: 24 * 3_600_000,
                wait_ms: None,
            }),
            2 => Command::AcquireLock(AcquireLock {
                slots: None,
                agent,
                resource: format!("file-{}", n % 64),
                ttl_ms: 1,
                intent: "edit".into(),
                wait_ms: None,
            }),
            3 => Command::SendSignal(SendSignal {
                agent,
                kind: "note".into(),
                target: SignalTarget::Agent(other),
                payload: Json::null(),
                ttl_ms: 3_600_000,
                correlation_id: None,
            }),
            4 => Command::ReceiveSignal(ReceiveSignal {
                ack_ms: None,
                agent,
                filter: SignalFilter {
                    kind: "note".into(),
                    ..Default::default()
                },
                consume: true,
                wait_ms: None,
            }),
            _ => Command::Heartbeat(Heartbeat {
                agent,
                status: Some("ok".into()),
                progress: None,
                current_task: None,
                metadata: None,
                ttl_ms: 24 * 3_600_000,
            }),
        }
    });
    pipelined(&coordinator, script);
    (temp, coordinator)
}

fn analytics_benches(c: &mut Criterion) {
    let (workflows, traffic) = if benchmarking() {
        (80_000, 200_000)
    } else {
        (200, 600)
    };
    let (_temp, coordinator) = build(workflows, traffic);
    let events = coordinator.ledger().head().expect("head").seq;
    println!(
        "analytics ledger: {events} events, {} workflows",
        coordinator.state().workflows.by_id.len()
    );
    let now = Timestamp::now();
    let window = Window::default();
    let mut group = c.benchmark_group("analytics");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("workflow_stats", |b| {
        b.iter(|| analytics::workflow_stats(&coordinator.state(), &window, 5).total)
    });
    group.bench_function("overhead_with_breakdown", |b| {
        b.iter(|| {
            analytics::overhead(&coordinator.state(), &window)
                .workflows
                .len()
        })
    });
    group.bench_function("trends_all_agents", |b| {
        b.iter(|| {
            analytics::all_trends(
                &coordinator.state(),
                30,
                now,
                TREND_THRESHOLD_POINTS_DEFAULT,
            )
            .len()
        })
    });
    group.bench_function("best_agent", |b| {
        b.iter(|| {
            analytics::best_agents(
                &coordinator.state(),
                "API development",
                Some("backend"),
                now,
                0.0,
                5,
            )
            .len()
        })
    });
    group.bench_function("costs", |b| {
        b.iter(|| {
            analytics::costs(&coordinator.state(), &window, fleetlog_ledger::Timestamp(0))
                .by_day
                .len()
        })
    });
    group.finish();
    readers_against_the_writer(c, &coordinator);
}

/// Queries read a published `Arc<State>`: however long they run, an append's acknowledgement
/// waits for none of them.
fn readers_against_the_writer(c: &mut Criterion, coordinator: &Coordinator) {
    let append = || {
        coordinator
            .execute(Command::Custom(CustomEvent {
                agent: "importer".into(),
                kind: "progress".into(),
                payload: Json::null(),
            }))
            .expect("append");
    };
    let mut group = c.benchmark_group("writer_vs_readers");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    let mut idle = Latencies::default();
    group.bench_function("append_idle", |b| {
        b.iter_custom(|iters| idle.time(iters, append))
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut busy = Latencies::default();
    let loops = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            // As the daemon's query threads do.
            fleetlog::daemon::query_threads::yield_cpu_to_the_writer();
            let mut loops = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let report = analytics::overhead(&coordinator.state(), &Window::default());
                std::hint::black_box(report);
                loops += 1;
            }
            loops
        });
        group.bench_function("append_while_overhead_analytics_loop", |b| {
            b.iter_custom(|iters| busy.time(iters, append))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("the reader thread ends")
    });
    group.finish();
    println!("{}", idle.report("append, idle"));
    println!(
        "{} ({loops} overhead analytics ran meanwhile)",
        busy.report("append, overhead analytics looping")
    );
}

criterion_group!(benches, analytics_benches);
criterion_main!(benches);
