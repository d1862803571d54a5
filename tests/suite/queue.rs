//! Guards the task queue: claim order (priority, then FIFO), dependencies, tags, leases that
//! requeue with the attempt counted, retries with backoff, dead letters that skip their
//! dependents, cancellation, double completion, and claims woken by an enqueue.

use fleetlog_ledger::Json;
use fleetlog_projections::queue::TaskState;
use fleetlog_projections::{Command, CommandError, Outcome, TaskSpec};
use fleetlog_suite::TestFleet;

fn fleet() -> TestFleet {
    let fleet = TestFleet::new();
    // Long heartbeat TTLs: these tests are about leases, not agent expiry.
    for agent in ["boss", "w1", "w2"] {
        fleet.register_long_lived(agent);
    }
    fleet
}

fn enqueue(fleet: &TestFleet, spec: TaskSpec) -> u64 {
    match fleet.run(Command::Enqueue {
        agent: "boss".to_owned(),
        spec,
    }) {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    }
}

fn claim_command(agent: &str, tags: &[&str], wait_ms: Option<u64>) -> Command {
    Command::Claim {
        agent: agent.to_owned(),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        lease_ttl_ms: 30_000,
        wait_ms,
    }
}

fn claim(fleet: &TestFleet, agent: &str, tags: &[&str]) -> Option<u64> {
    match fleet.run(claim_command(agent, tags, None)) {
        Outcome::Task { task } => task.map(|task| task.id),
        other => panic!("{other:?}"),
    }
}

fn complete(agent: &str, task: u64) -> Command {
    Command::Complete {
        agent: agent.to_owned(),
        task,
        result: Json::null(),
    }
}

fn fail(agent: &str, task: u64, retryable: bool) -> Command {
    Command::Fail {
        agent: agent.to_owned(),
        task,
        error: "boom".to_owned(),
        retryable,
    }
}

fn state_of(fleet: &TestFleet, task: u64) -> TaskState {
    fleet
        .coordinator
        .state()
        .queue
        .get(task)
        .expect("task")
        .state
}

#[test]
fn claims_take_the_highest_priority_first_then_the_oldest() {
    let fleet = fleet();
    let low = enqueue(
        &fleet,
        TaskSpec {
            priority: 1,
            ..TaskSpec::new("low")
        },
    );
    let high_old = enqueue(
        &fleet,
        TaskSpec {
            priority: 5,
            ..TaskSpec::new("high old")
        },
    );
    let high_new = enqueue(
        &fleet,
        TaskSpec {
            priority: 5,
            ..TaskSpec::new("high new")
        },
    );
    assert_eq!(claim(&fleet, "w1", &[]), Some(high_old));
    assert_eq!(claim(&fleet, "w2", &[]), Some(high_new));
    assert_eq!(claim(&fleet, "w1", &[]), Some(low));
    assert_eq!(claim(&fleet, "w2", &[]), None);
}

#[test]
fn a_task_waits_for_its_dependencies_and_matching_tags() {
    let fleet = fleet();
    let schema = enqueue(
        &fleet,
        TaskSpec {
            tags: vec!["db".into()],
            ..TaskSpec::new("schema")
        },
    );
    let api = enqueue(
        &fleet,
        TaskSpec {
            tags: vec!["backend".into(), "api".into()],
            depends_on: vec![schema],
            ..TaskSpec::new("api")
        },
    );
    assert_eq!(
        claim(&fleet, "w1", &["backend"]),
        None,
        "blocked by its dependency"
    );
    assert_eq!(
        claim(&fleet, "w1", &["api", "frontend"]),
        None,
        "needs every tag"
    );
    assert_eq!(claim(&fleet, "w2", &["db"]), Some(schema));
    fleet.run(complete("w2", schema));
    assert_eq!(claim(&fleet, "w1", &["backend"]), Some(api));
    assert!(matches!(
        fleet.refused(Command::Enqueue {
            agent: "boss".into(),
            spec: TaskSpec {
                depends_on: vec![9_999],
                ..TaskSpec::new("x")
            }
        }),
        CommandError::UnknownTask { task: 9_999 }
    ));
}

#[test]
fn not_before_delays_a_claim_until_its_time() {
    let fleet = fleet();
    let later = enqueue(
        &fleet,
        TaskSpec {
            not_before: Some(fleet.now().plus_millis(5_000)),
            ..TaskSpec::new("later")
        },
    );
    assert_eq!(claim(&fleet, "w1", &[]), None);
    fleet.advance_ms(5_000);
    assert_eq!(claim(&fleet, "w1", &[]), Some(later));
}

#[test]
fn an_expired_lease_requeues_the_task_and_counts_the_attempt_until_it_dead_letters() {
    let fleet = fleet();
    let task = enqueue(
        &fleet,
        TaskSpec {
            max_attempts: 2,
            ..TaskSpec::new("flaky")
        },
    );
    let dependent = enqueue(
        &fleet,
        TaskSpec {
            depends_on: vec![task],
            ..TaskSpec::new("after")
        },
    );
    assert_eq!(claim(&fleet, "w1", &[]), Some(task));
    fleet.advance_ms(30_000);
    assert_eq!(fleet.kinds().last(), Some(&"task_lease_expired"));
    assert_eq!(state_of(&fleet, task), TaskState::Pending);
    // The old holder lost it: its completion is refused.
    assert!(matches!(
        fleet.refused(complete("w1", task)),
        CommandError::NotClaimed { .. }
    ));
    assert_eq!(claim(&fleet, "w2", &[]), Some(task));
    assert_eq!(
        fleet
            .coordinator
            .state()
            .queue
            .get(task)
            .expect("task")
            .attempts,
        2
    );
    fleet.advance_ms(30_000);
    let kinds = fleet.kinds();
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["task_lease_expired", "task_dead_lettered", "task_skipped"]
    );
    assert_eq!(state_of(&fleet, task), TaskState::DeadLettered);
    assert_eq!(state_of(&fleet, dependent), TaskState::Skipped);
}

#[test]
fn a_retryable_failure_backs_off_then_a_final_one_dead_letters() {
    let fleet = fleet();
    let task = enqueue(&fleet, TaskSpec::new("retry me"));
    assert_eq!(claim(&fleet, "w1", &[]), Some(task));
    fleet.run(fail("w1", task, true));
    let retry_at = fleet
        .coordinator
        .state()
        .queue
        .get(task)
        .expect("task")
        .retry_at;
    assert_eq!(
        retry_at,
        Some(fleet.now().plus_millis(1_000)),
        "1 s after the first attempt"
    );
    assert_eq!(claim(&fleet, "w1", &[]), None, "backing off");
    fleet.advance_ms(1_000);
    assert_eq!(claim(&fleet, "w1", &[]), Some(task));
    fleet.run(fail("w1", task, true));
    assert_eq!(
        fleet
            .coordinator
            .state()
            .queue
            .get(task)
            .expect("task")
            .retry_at,
        Some(fleet.now().plus_millis(2_000)),
        "the backoff doubles"
    );
    fleet.advance_ms(2_000);
    assert_eq!(claim(&fleet, "w2", &[]), Some(task));
    fleet.run(fail("w2", task, true));
    assert_eq!(
        state_of(&fleet, task),
        TaskState::DeadLettered,
        "3 attempts were the limit"
    );
    let other = enqueue(&fleet, TaskSpec::new("fatal"));
    assert_eq!(claim(&fleet, "w1", &[]), Some(other));
    fleet.run(fail("w1", other, false));
    assert_eq!(
        state_of(&fleet, other),
        TaskState::DeadLettered,
        "not retryable"
    );
}

#[test]
fn completion_is_exactly_once_and_only_by_the_holder() {
    let fleet = fleet();
    let task = enqueue(&fleet, TaskSpec::new("once"));
    assert_eq!(claim(&fleet, "w1", &[]), Some(task));
    assert!(matches!(
        fleet.refused(complete("w2", task)),
        CommandError::NotYourTask { .. }
    ));
    fleet.run(complete("w1", task));
    assert!(matches!(
        fleet.refused(complete("w1", task)),
        CommandError::AlreadyCompleted { .. }
    ));
    assert!(matches!(
        fleet.refused(Command::Cancel {
            agent: "boss".into(),
            task,
            reason: "late".into()
        }),
        CommandError::AlreadyCompleted { .. }
    ));
    assert!(matches!(
        fleet.refused(complete("w1", 424_242)),
        CommandError::UnknownTask { .. }
    ));
}

#[test]
fn cancelling_a_task_skips_everything_that_depends_on_it() {
    let fleet = fleet();
    let root = enqueue(&fleet, TaskSpec::new("root"));
    let child = enqueue(
        &fleet,
        TaskSpec {
            depends_on: vec![root],
            ..TaskSpec::new("child")
        },
    );
    let grandchild = enqueue(
        &fleet,
        TaskSpec {
            depends_on: vec![child],
            ..TaskSpec::new("grandchild")
        },
    );
    fleet.run(Command::Cancel {
        agent: "boss".into(),
        task: root,
        reason: "obsolete".into(),
    });
    assert_eq!(state_of(&fleet, root), TaskState::Cancelled);
    assert_eq!(state_of(&fleet, child), TaskState::Skipped);
    assert_eq!(state_of(&fleet, grandchild), TaskState::Skipped);
    // A task enqueued on a cancelled dependency is skipped at once.
    let late = enqueue(
        &fleet,
        TaskSpec {
            depends_on: vec![root],
            ..TaskSpec::new("late")
        },
    );
    assert_eq!(state_of(&fleet, late), TaskState::Skipped);
}

#[test]
fn a_waiting_claim_is_woken_by_an_enqueue() {
    let fleet = fleet();
    let waiting = fleet
        .coordinator
        .submit(claim_command("w1", &["gpu"], Some(60_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("parked");
    enqueue(&fleet, TaskSpec::new("cpu only"));
    let gpu = enqueue(
        &fleet,
        TaskSpec {
            tags: vec!["gpu".into()],
            ..TaskSpec::new("train")
        },
    );
    match waiting.wait().expect("woken") {
        Outcome::Task { task: Some(task) } => assert_eq!(task.id, gpu),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queue_stats_count_by_state_and_tag_and_age_the_oldest_pending() {
    let fleet = fleet();
    let one = enqueue(
        &fleet,
        TaskSpec {
            tags: vec!["a".into()],
            ..TaskSpec::new("one")
        },
    );
    fleet.advance_ms(1_500);
    enqueue(
        &fleet,
        TaskSpec {
            tags: vec!["a".into(), "b".into()],
            ..TaskSpec::new("two")
        },
    );
    assert_eq!(
        claim(&fleet, "w1", &[]),
        Some(one),
        "the oldest of equal priority"
    );
    fleet.advance_ms(500);
    let stats = fleet.coordinator.state().queue.stats(fleet.now());
    assert_eq!(stats.by_state.get("pending"), Some(&1));
    assert_eq!(stats.by_state.get("claimed"), Some(&1));
    assert_eq!(stats.pending_by_tag.get("a"), Some(&1));
    assert_eq!(
        stats.oldest_pending_age_ms,
        Some(500),
        "\"two\" has waited 500 ms"
    );
}
