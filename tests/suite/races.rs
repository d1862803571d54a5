//! Guards mutual exclusion under real concurrency: 8 threads contend for one lock and drain one
//! queue through the writer's sequence; nobody overlaps, every task completes exactly once, and
//! the whole log passes the invariant checkers.

use fleetlog_projections::commands::{AcquireLock, Claim, CompleteTask, Enqueue, ReleaseLock};
use std::sync::atomic::{AtomicU64, Ordering};

use fleetlog_ledger::Json;
use fleetlog_projections::{
    Command, CommandError, Coordinator, CoordinatorOptions, Outcome, TaskSpec,
};
use fleetlog_suite::{TempLedger, check_log};

const THREADS: u64 = 8;

fn register(coordinator: &Coordinator, agent: &str) {
    coordinator
        .execute(fleetlog_suite::register(agent))
        .expect("register");
    coordinator
        .execute(fleetlog_suite::heartbeat(agent, 3_600_000))
        .expect("heartbeat");
}

#[test]
fn eight_threads_contending_for_one_lock_never_overlap() {
    const ROUNDS: u64 = 40;
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    let counter = AtomicU64::new(0);
    let inside = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (coordinator, counter, inside) = (&coordinator, &counter, &inside);
            scope.spawn(move || {
                let agent = format!("w{thread}");
                register(coordinator, &agent);
                for _ in 0..ROUNDS {
                    let lock = match coordinator.execute(Command::AcquireLock(AcquireLock {
                        slots: None,
                        agent: agent.clone(),
                        resource: "counter".to_owned(),
                        ttl_ms: 60_000,
                        intent: "increment".to_owned(),
                        wait_ms: Some(60_000),
                    })) {
                        Ok(Outcome::Lock { lock }) => lock,
                        other => panic!("{agent}: {other:?}"),
                    };
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    // A read-modify-write that loses updates unless the lock excludes others.
                    let value = counter.load(Ordering::SeqCst);
                    std::thread::yield_now();
                    counter.store(value + 1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    coordinator
                        .execute(Command::ReleaseLock(ReleaseLock {
                            agent: agent.clone(),
                            resource: "counter".to_owned(),
                            token: lock.token,
                        }))
                        .expect("release");
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), THREADS * ROUNDS);
    check_log(coordinator.ledger().reader());
}

#[test]
fn eight_threads_draining_one_queue_complete_each_task_exactly_once() {
    const TASKS: u64 = 400;
    let temp = TempLedger::new();
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    register(&coordinator, "boss");
    let pending: Vec<_> = (0..TASKS)
        .map(|n| {
            coordinator
                .submit(Command::Enqueue(Enqueue {
                    agent: "boss".to_owned(),
                    spec: TaskSpec {
                        priority: (n % 3) as i32,
                        ..TaskSpec::new(format!("task {n}"))
                    },
                }))
                .expect("queued")
        })
        .collect();
    for enqueue in pending {
        enqueue.wait().expect("enqueued");
    }
    let completed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (coordinator, completed) = (&coordinator, &completed);
            scope.spawn(move || {
                let agent = format!("w{thread}");
                register(coordinator, &agent);
                loop {
                    let task = match coordinator.execute(Command::Claim(Claim {
                        agent: agent.clone(),
                        tags: vec![],
                        tag_match: Default::default(),
                        task: None,
                        lease_ttl_ms: 60_000,
                        wait_ms: None,
                    })) {
                        Ok(Outcome::Task { task: Some(task) }) => task,
                        Ok(Outcome::Task { task: None }) => break,
                        other => panic!("{agent}: {other:?}"),
                    };
                    match coordinator.execute(Command::Complete(CompleteTask {
                        agent: agent.clone(),
                        task: task.id,
                        result: Json::null(),
                    })) {
                        Ok(_) => {
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(CommandError::AlreadyCompleted { task }) => {
                            panic!("task {task} was handed out twice")
                        }
                        Err(error) => panic!("{agent}: {error}"),
                    }
                }
            });
        }
    });
    assert_eq!(completed.load(Ordering::SeqCst), TASKS);
    let stats = coordinator
        .state()
        .queue
        .stats(fleetlog_ledger::Timestamp::now());
    assert_eq!(stats.by_state.get("completed"), Some(&TASKS));
    check_log(coordinator.ledger().reader());
}
