//! Guards locks: fencing tokens, holder-only release and renewal, recorded expiry and takeover,
//! FIFO waiting woken by the release itself, and refusals that append nothing.

use fleetlog_projections::commands::{AcquireLock, Heartbeat, ReleaseLock, RenewLock};
use fleetlog_projections::{Command, CommandError, Outcome};
use fleetlog_suite::TestFleet;

fn acquire(agent: &str, resource: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Command {
    Command::AcquireLock(AcquireLock {
        slots: None,
        agent: agent.to_owned(),
        resource: resource.to_owned(),
        ttl_ms,
        intent: "edit".to_owned(),
        wait_ms,
    })
}

fn release(agent: &str, resource: &str, token: u64) -> Command {
    Command::ReleaseLock(ReleaseLock {
        agent: agent.to_owned(),
        resource: resource.to_owned(),
        token,
    })
}

fn token(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Lock { lock } => lock.token,
        other => panic!("expected a lock, got {other:?}"),
    }
}

#[test]
fn a_lock_grant_returns_the_seq_of_its_record_as_fencing_token() {
    let fleet = TestFleet::new();
    fleet.register("a");
    let first = token(fleet.run(acquire("a", "src/lib.rs", 10_000, None)));
    assert_eq!(first, fleet.coordinator.ledger().head().expect("head").seq);
    fleet.run(release("a", "src/lib.rs", first));
    let second = token(fleet.run(acquire("a", "src/lib.rs", 10_000, None)));
    assert!(second > first, "tokens strictly increase per resource");
    let state = fleet.coordinator.state();
    assert!(
        state
            .locks
            .token_is_current("src/lib.rs", second, fleet.now())
    );
    assert!(
        !state
            .locks
            .token_is_current("src/lib.rs", first, fleet.now())
    );
}

#[test]
fn a_held_lock_is_refused_to_others_and_names_its_holder() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.register("b");
    let held = token(fleet.run(acquire("a", "db", 10_000, None)));
    match fleet.refused(acquire("b", "db", 10_000, None)) {
        CommandError::LockHeld { holder, token, .. } => {
            assert_eq!(holder, "a");
            assert_eq!(token, held);
        }
        other => panic!("expected LockHeld, got {other}"),
    }
    assert!(matches!(
        fleet.refused(acquire("a", "db", 10_000, None)),
        CommandError::AlreadyHeld { .. }
    ));
}

#[test]
fn lock_release_by_non_holder_or_with_a_stale_token_is_rejected() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.register("b");
    let held = token(fleet.run(acquire("a", "db", 10_000, None)));
    assert!(matches!(
        fleet.refused(release("b", "db", held)),
        CommandError::NotHolder { .. }
    ));
    assert!(matches!(
        fleet.refused(release("a", "db", held - 1)),
        CommandError::WrongToken { current, .. } if current == held
    ));
    assert!(matches!(
        fleet.refused(release("a", "elsewhere", held)),
        CommandError::NotLocked { .. }
    ));
    assert!(matches!(
        fleet.refused(release("ghost", "db", held)),
        CommandError::UnknownAgent { .. }
    ));
    fleet.run(release("a", "db", held));
}

#[test]
fn an_expired_lock_is_recorded_and_the_next_grant_records_the_takeover() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.register("b");
    let old = token(fleet.run(acquire("a", "db", 5_000, None)));
    fleet.run(Command::Heartbeat(Heartbeat {
        agent: "a".to_owned(),
        status: Some("busy".into()),
        progress: None,
        current_task: None,
        metadata: Default::default(),
        ttl_ms: 600_000,
    }));
    fleet.advance_ms(5_001);
    assert_eq!(fleet.kinds().last(), Some(&"lock_expired"));
    // The old holder's token is no longer good for anything.
    assert!(matches!(
        fleet.refused(Command::RenewLock(RenewLock {
            agent: "a".to_owned(),
            resource: "db".to_owned(),
            token: old,
            ttl_ms: 5_000
        })),
        CommandError::NotLocked { .. }
    ));
    fleet.run(acquire("b", "db", 5_000, None));
    let reader = fleet.coordinator.ledger().reader();
    let grant = reader
        .get(fleet.coordinator.ledger().head().expect("head").seq)
        .expect("read")
        .expect("present");
    match grant.event {
        fleetlog_ledger::Event::LockAcquired { takeover_of, .. } => {
            assert_eq!(takeover_of, Some(old))
        }
        other => panic!("expected the grant, got {other:?}"),
    }
}

#[test]
fn renewal_extends_a_lock_past_its_original_deadline() {
    let fleet = TestFleet::new();
    fleet.register("a");
    let held = token(fleet.run(acquire("a", "db", 5_000, None)));
    fleet.advance_ms(4_000);
    fleet.run(Command::RenewLock(RenewLock {
        agent: "a".to_owned(),
        resource: "db".to_owned(),
        token: held,
        ttl_ms: 5_000,
    }));
    fleet.advance_ms(4_000);
    assert!(
        fleet
            .coordinator
            .state()
            .locks
            .token_is_current("db", held, fleet.now())
    );
}

#[test]
fn waiters_are_granted_in_arrival_order_when_the_holder_releases() {
    let fleet = TestFleet::new();
    for agent in ["a", "b", "c"] {
        fleet.register(agent);
    }
    let held = token(fleet.run(acquire("a", "db", 60_000, None)));
    let b = fleet
        .coordinator
        .submit(acquire("b", "db", 60_000, Some(30_000)))
        .expect("queued");
    let c = fleet
        .coordinator
        .submit(acquire("c", "db", 60_000, Some(30_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("sync");
    fleet.run(release("a", "db", held));
    let b_token = token(b.wait().expect("b is granted"));
    assert!(b_token > held);
    assert_eq!(
        fleet
            .coordinator
            .state()
            .locks
            .live("db", fleet.now())
            .map(|l| l.holder.clone()),
        Some("b".to_owned())
    );
    fleet.run(release("b", "db", b_token));
    let c_token = token(c.wait().expect("c is granted"));
    assert!(c_token > b_token);
}

#[test]
fn a_waiter_times_out_when_the_lock_is_not_released() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.register("b");
    fleet.run(acquire("a", "db", 60_000, None));
    let waiting = fleet
        .coordinator
        .submit(acquire("b", "db", 60_000, Some(5_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("sync");
    fleet.advance_ms(5_000);
    assert!(matches!(
        waiting.wait(),
        Err(CommandError::TimedOut { waited_ms: 5_000 })
    ));
}

#[test]
fn queries_judge_ttls_by_the_writers_clock() {
    let fleet = TestFleet::new();
    fleet.register("a");
    let granted = fleet.run(acquire("a", "r", 1_000, None));
    let lock_token = token(granted);
    let held = |fleet: &TestFleet| {
        let coordinator = &fleet.coordinator;
        coordinator
            .state()
            .locks
            .token_is_current("r", lock_token, coordinator.now())
    };
    assert!(held(&fleet));
    assert_eq!(fleet.coordinator.now(), fleet.now(), "the writer's clock");
    fleet.advance_ms(1_500);
    assert!(!held(&fleet), "1 s TTL, 1.5 s later on the writer's clock");
}

#[test]
fn wall_clock_steps_neither_freeze_nor_mass_expire_ttls() {
    let fleet = TestFleet::new();
    fleet.register("a");
    // Stepped back an hour: the 1 s lock still expires 1 s later.
    let back = token(fleet.run(acquire("a", "back", 1_000, None)));
    let forward = token(fleet.run(acquire("a", "forward", 60_000, None)));
    fleet.clock.step_wall_ms(-3_600_000);
    fleet.advance_ms(999);
    let state = fleet.coordinator.state();
    assert!(
        state
            .locks
            .token_is_current("back", back, fleet.coordinator.now())
    );
    fleet.advance_ms(2);
    let state = fleet.coordinator.state();
    assert!(
        !state
            .locks
            .token_is_current("back", back, fleet.coordinator.now())
    );
    assert!(
        fleet.kinds().contains(&"lock_expired"),
        "the writer recorded the expiry: {:?}",
        fleet.kinds()
    );
    // Stepped forward a day: the 60 s lock and the agent (default heartbeat TTL) stay.
    fleet.clock.step_wall_ms(86_400_000 + 3_600_000);
    fleet.advance_ms(1_000);
    let now = fleet.coordinator.now();
    let state = fleet.coordinator.state();
    assert!(state.locks.token_is_current("forward", forward, now));
    assert!(
        state.agents.is_alive("a", now),
        "agent alive after a wall step forward"
    );
    // Record timestamps never decreased.
    let reader = fleet.coordinator.ledger().reader();
    let head = fleet.coordinator.ledger().head().expect("head").seq;
    let times: Vec<_> = reader
        .range(1..=head)
        .expect("records")
        .iter()
        .map(|record| record.ts)
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

fn take_slot(agent: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Command {
    Command::AcquireLock(AcquireLock {
        slots: Some(2),
        agent: agent.to_owned(),
        resource: "llm".to_owned(),
        ttl_ms,
        intent: "completion".to_owned(),
        wait_ms,
    })
}

fn granted(outcome: Outcome) -> (String, u64) {
    match outcome {
        Outcome::Lock { lock } => (lock.resource, lock.token),
        other => panic!("expected a slot, got {other:?}"),
    }
}

#[test]
fn a_counting_semaphore_admits_its_slot_count_and_refuses_the_next_naming_the_holders() {
    let fleet = TestFleet::new();
    for agent in ["a", "b", "c"] {
        fleet.register(agent);
    }
    let (first, _) = granted(fleet.run(take_slot("a", 60_000, None)));
    // The same agent may hold two slots (two concurrent calls).
    let (second, _) = granted(fleet.run(take_slot("a", 60_000, None)));
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("llm/slot-0", "llm/slot-1")
    );
    let head = fleet.coordinator.ledger().head().expect("head").seq;
    match fleet.refused(take_slot("c", 60_000, None)) {
        CommandError::SlotsFull {
            resource,
            slots,
            holders,
        } => {
            assert_eq!((resource.as_str(), slots), ("llm", 2));
            assert_eq!(holders, ["a", "a"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fleet.coordinator.ledger().head().expect("head").seq,
        head,
        "a refusal appends nothing"
    );
}

#[test]
fn a_semaphore_waiter_gets_the_slot_a_release_or_an_expiry_frees_in_arrival_order() {
    let fleet = TestFleet::new();
    for agent in ["a", "b", "c", "d"] {
        fleet.register_long_lived(agent);
    }
    let (slot_a, token_a) = granted(fleet.run(take_slot("a", 60_000, None)));
    let (slot_b, _) = granted(fleet.run(take_slot("b", 5_000, None)));
    let c = fleet
        .coordinator
        .submit(take_slot("c", 60_000, Some(30_000)))
        .expect("queued");
    let d = fleet
        .coordinator
        .submit(take_slot("d", 60_000, Some(30_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("sync");
    fleet.run(release("a", &slot_a, token_a));
    let (slot_c, _) = granted(c.wait().expect("c gets a's slot"));
    assert_eq!(slot_c, slot_a);
    // b's slot lapses: d, next in line, gets it without anyone releasing.
    fleet.advance_ms(5_000);
    let (slot_d, _) = granted(d.wait().expect("d gets b's expired slot"));
    assert_eq!(slot_d, slot_b);
    let state = fleet.coordinator.state();
    assert_eq!(state.locks.slot_holders("llm", 2, fleet.now()), ["c", "d"]);
}

#[test]
fn a_semaphore_refuses_a_slot_count_outside_its_bounds_and_a_slot_name_as_its_name() {
    let fleet = TestFleet::new();
    fleet.register("a");
    let mut zero = take_slot("a", 1_000, None);
    if let Command::AcquireLock(AcquireLock { slots, .. }) = &mut zero {
        *slots = Some(0);
    }
    assert!(matches!(
        fleet.refused(zero),
        CommandError::Invalid { field: "slots", .. }
    ));
    let mut nested = take_slot("a", 1_000, None);
    if let Command::AcquireLock(AcquireLock { resource, .. }) = &mut nested {
        *resource = "llm/slot-1".to_owned();
    }
    assert!(matches!(
        fleet.refused(nested),
        CommandError::Invalid {
            field: "resource",
            ..
        }
    ));
}

#[test]
fn a_plain_lock_cannot_take_the_name_where_semaphore_waits_queue() {
    let fleet = TestFleet::new();
    fleet.register("a");
    assert!(matches!(
        fleet.refused(acquire("a", "llm/slot-*", 1_000, None)),
        CommandError::Invalid {
            field: "resource",
            ..
        }
    ));
}
