//! Guards the task queue: claim order (priority, then FIFO), dependencies, tags, leases that
//! requeue with the attempt counted, retries with backoff, dead letters that skip their
//! dependents, cancellation, double completion, and claims woken by an enqueue.

use fleetlog_ledger::Json;
use fleetlog_projections::commands::{
    CancelTask, Claim, CompleteTask, DeadLetterTask, Enqueue, EscalateTask, FailTask, Register,
    ReleaseTask, TaskProgress,
};
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
    match fleet.run(Command::Enqueue(Enqueue {
        agent: "boss".to_owned(),
        spec,
    })) {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    }
}

fn claim_command(agent: &str, tags: &[&str], wait_ms: Option<u64>) -> Command {
    Command::Claim(Claim {
        agent: agent.to_owned(),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        tag_match: Default::default(),
        task: None,
        lease_ttl_ms: 30_000,
        wait_ms,
    })
}

fn claim(fleet: &TestFleet, agent: &str, tags: &[&str]) -> Option<u64> {
    match fleet.run(claim_command(agent, tags, None)) {
        Outcome::Task { task } => task.map(|task| task.id),
        other => panic!("{other:?}"),
    }
}

fn complete(agent: &str, task: u64) -> Command {
    Command::Complete(CompleteTask {
        agent: agent.to_owned(),
        task,
        result: Json::null(),
    })
}

fn fail(agent: &str, task: u64, retryable: bool) -> Command {
    Command::Fail(FailTask {
        agent: agent.to_owned(),
        task,
        error: "boom".to_owned(),
        retryable,
    })
}

fn state_of(fleet: &TestFleet, task: u64) -> TaskState {
    fleet
        .coordinator
        .state()
        .queue
        .state_of(task)
        .expect("task")
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
        fleet.refused(Command::Enqueue(Enqueue {
            agent: "boss".into(),
            spec: TaskSpec {
                depends_on: vec![9_999],
                ..TaskSpec::new("x")
            }
        })),
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
        fleet.refused(Command::Cancel(CancelTask {
            agent: "boss".into(),
            task,
            reason: "late".into()
        })),
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
    fleet.run(Command::Cancel(CancelTask {
        agent: "boss".into(),
        task: root,
        reason: "obsolete".into(),
    }));
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

/// The task, finished (read back from the log) or not.
fn task(fleet: &TestFleet, id: u64) -> fleetlog_projections::queue::Task {
    let state = fleet.coordinator.state();
    let reader = fleet.coordinator.ledger().reader();
    fleetlog_projections::queue::archive::task(&state.queue, reader, id, state.seq)
        .expect("the log reads")
        .expect("the task exists")
}

#[test]
fn releasing_a_claimed_task_requeues_it_without_counting_the_attempt() {
    let fleet = fleet();
    let id = enqueue(&fleet, TaskSpec::new("t"));
    assert_eq!(claim(&fleet, "w1", &[]), Some(id));
    assert_eq!(task(&fleet, id).attempts, 1);
    let release = Command::ReleaseTask(ReleaseTask {
        agent: "w2".into(),
        task: id,
        reason: "not mine".into(),
    });
    assert!(matches!(
        fleet.refused(release),
        CommandError::NotYourTask { .. }
    ));
    fleet.run(Command::ReleaseTask(ReleaseTask {
        agent: "w1".into(),
        task: id,
        reason: "shutting down".into(),
    }));
    let released = task(&fleet, id);
    assert_eq!((released.state, released.attempts), (TaskState::Pending, 0));
    assert_eq!(released.holder, None);
    assert_eq!(
        claim(&fleet, "w2", &[]),
        Some(id),
        "claimable again at once"
    );
}

#[test]
fn a_task_can_be_claimed_by_id_even_when_others_come_first() {
    let fleet = fleet();
    let mut urgent = TaskSpec::new("urgent");
    urgent.priority = 9;
    enqueue(&fleet, urgent);
    let wanted = enqueue(&fleet, TaskSpec::new("wanted"));
    let Outcome::Task { task: Some(got) } = fleet.run(Command::Claim(Claim {
        agent: "w1".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: Some(wanted),
        lease_ttl_ms: 30_000,
        wait_ms: None,
    })) else {
        panic!("claimed by id");
    };
    assert_eq!(got.id, wanted);
    // Already claimed: nothing for the next caller naming it.
    let Outcome::Task { task: None } = fleet.run(Command::Claim(Claim {
        agent: "w2".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: Some(wanted),
        lease_ttl_ms: 30_000,
        wait_ms: None,
    })) else {
        panic!("a claimed task is not claimable again");
    };
}

#[test]
fn tag_match_any_claims_a_task_with_one_of_the_tags_and_all_needs_every_one() {
    let fleet = fleet();
    let mut spec = TaskSpec::new("frontend work");
    spec.tags = vec!["frontend".into()];
    let id = enqueue(&fleet, spec);
    assert_eq!(claim(&fleet, "w1", &["frontend", "backend"]), None, "all");
    let Outcome::Task { task: Some(got) } = fleet.run(Command::Claim(Claim {
        agent: "w1".into(),
        tags: vec!["backend".into(), "frontend".into()],
        tag_match: fleetlog_projections::queue::TagMatch::Any,
        task: None,
        lease_ttl_ms: 30_000,
        wait_ms: None,
    })) else {
        panic!("any one tag suffices");
    };
    assert_eq!(got.id, id);
}

#[test]
fn the_holder_reports_progress_and_status_on_a_claimed_task() {
    let fleet = fleet();
    let id = enqueue(&fleet, TaskSpec::new("t"));
    claim(&fleet, "w1", &[]);
    fleet.run(Command::TaskProgress(TaskProgress {
        agent: "w1".into(),
        task: id,
        progress: Some(0.4),
        status: "compiling".into(),
    }));
    let reported = task(&fleet, id);
    assert_eq!(reported.progress, Some(0.4));
    assert_eq!(reported.status.as_deref(), Some("compiling"));
    assert!(matches!(
        fleet.refused(Command::TaskProgress(TaskProgress {
            agent: "w2".into(),
            task: id,
            progress: Some(0.9),
            status: String::new(),
        })),
        CommandError::NotYourTask { .. }
    ));
}

#[test]
fn escalation_parks_a_task_for_a_decision_and_can_be_the_exhaustion_policy() {
    let fleet = fleet();
    let mut spec = TaskSpec::new("flaky");
    spec.max_attempts = 1;
    spec.escalate_when_exhausted = true;
    let id = enqueue(&fleet, spec);
    claim(&fleet, "w1", &[]);
    fleet.run(fail("w1", id, true));
    let escalated = task(&fleet, id);
    assert_eq!(escalated.state, TaskState::Escalated);
    let escalation = escalated.escalation.expect("why and when");
    assert!(escalation.reason.contains("last of 1"), "{escalation:?}");
    assert_eq!(
        claim(&fleet, "w2", &[]),
        None,
        "an escalated task is not claimable"
    );
    // Someone decides: requeue it.
    fleet.run(Command::ReleaseTask(ReleaseTask {
        agent: "boss".into(),
        task: id,
        reason: "retry after the fix".into(),
    }));
    assert_eq!(claim(&fleet, "w2", &[]), Some(id));
    // By hand, with a reason.
    fleet.run(Command::EscalateTask(EscalateTask {
        agent: "w2".into(),
        task: id,
        reason: "needs a human".into(),
    }));
    assert_eq!(task(&fleet, id).state, TaskState::Escalated);
}

#[test]
fn anyone_may_dead_letter_an_unfinished_task_on_request() {
    let fleet = fleet();
    let id = enqueue(&fleet, TaskSpec::new("t"));
    let mut after = TaskSpec::new("after");
    after.depends_on = vec![id];
    let dependent = enqueue(&fleet, after);
    claim(&fleet, "w1", &[]);
    fleet.run(Command::DeadLetterTask(DeadLetterTask {
        agent: "boss".into(),
        task: id,
        reason: "poison input".into(),
    }));
    assert_eq!(task(&fleet, id).state, TaskState::DeadLettered);
    assert_eq!(task(&fleet, dependent).state, TaskState::Skipped);
    assert!(matches!(
        fleet.refused(Command::DeadLetterTask(DeadLetterTask {
            agent: "boss".into(),
            task: id,
            reason: "again".into(),
        })),
        CommandError::TaskFinished { .. }
    ));
}

#[test]
fn a_task_key_is_the_callers_unique_id_for_it() {
    let fleet = fleet();
    let mut spec = TaskSpec::new("t");
    spec.key = Some("JIRA-7".into());
    let id = enqueue(&fleet, spec.clone());
    assert_eq!(
        fleet.coordinator.state().queue.id_by_key("JIRA-7"),
        Some(id)
    );
    match fleet.refused(Command::Enqueue(Enqueue {
        agent: "boss".into(),
        spec,
    })) {
        CommandError::TaskKeyExists { key, task } => {
            assert_eq!((key.as_str(), task), ("JIRA-7", id))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_task_requiring_capabilities_goes_only_to_a_capable_agent() {
    let fleet = fleet();
    fleet.run(Command::Register(Register {
        agent: "rustacean".into(),
        role: "worker".into(),
        name: "r".into(),
        working_on: String::new(),
        capabilities: vec!["rust".into(), "backend-development".into()],
        metadata: Json::null(),
    }));
    let mut spec = TaskSpec::new("port the parser");
    spec.required_capabilities = vec!["rust".into()];
    let id = enqueue(&fleet, spec);
    assert_eq!(claim(&fleet, "w1", &[]), None, "w1 has no capabilities");
    match fleet.refused(Command::Claim(Claim {
        agent: "w1".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: Some(id),
        lease_ttl_ms: 30_000,
        wait_ms: None,
    })) {
        CommandError::NotCapable { missing, .. } => assert_eq!(missing, vec!["rust".to_owned()]),
        other => panic!("{other:?}"),
    }
    assert_eq!(claim(&fleet, "rustacean", &[]), Some(id));
}
