//! Guards agents and signals: heartbeat TTLs with recorded expiry (releasing locks, requeueing
//! tasks), stale and hung queries, targeted and broadcast delivery, consume versus peek, signal
//! expiry, and waits woken by the send itself.

use fleetlog_ledger::{Json, SignalTarget};
use fleetlog_projections::agents::Liveness;
use fleetlog_projections::commands::{
    AckSignal, AcquireLock, Claim, Enqueue, Heartbeat, ReceiveSignal, Register, RenewLock,
    SendSignal,
};
use fleetlog_projections::queue::TaskState;
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, CommandError, Outcome, TaskSpec};
use fleetlog_suite::TestFleet;

fn heartbeat(agent: &str, progress: Option<f64>, ttl_ms: u64) -> Command {
    Command::Heartbeat(Heartbeat {
        agent: agent.to_owned(),
        status: Some("working".into()),
        progress,
        current_task: None,
        metadata: None,
        ttl_ms,
    })
}

fn send(from: &str, to: Option<&str>, kind: &str, payload: serde_json::Value) -> Command {
    Command::SendSignal(SendSignal {
        agent: from.to_owned(),
        kind: kind.to_owned(),
        target: to.map_or(SignalTarget::Broadcast, |to| {
            SignalTarget::Agent(to.to_owned())
        }),
        payload: Json::from_value(&payload),
        ttl_ms: 60_000,
        correlation_id: None,
    })
}

fn receive(agent: &str, kind: &str, consume: bool, wait_ms: Option<u64>) -> Command {
    Command::ReceiveSignal(ReceiveSignal {
        ack_ms: None,
        agent: agent.to_owned(),
        filter: SignalFilter {
            kind: kind.to_owned(),
            ..Default::default()
        },
        consume,
        wait_ms,
    })
}

fn payload(outcome: Outcome) -> Option<serde_json::Value> {
    match outcome {
        Outcome::Signal { signal } => signal.map(|signal| signal.payload.to_value()),
        other => panic!("expected a signal outcome, got {other:?}"),
    }
}

#[test]
fn commands_from_unregistered_agents_are_refused() {
    let fleet = TestFleet::new();
    assert!(matches!(
        fleet.refused(heartbeat("ghost", None, 1_000)),
        CommandError::UnknownAgent { .. }
    ));
    fleet.register("a");
    assert!(matches!(
        fleet.refused(send("a", Some("ghost"), "ping", serde_json::json!(1))),
        CommandError::UnknownAgent { agent } if agent == "ghost"
    ));
    assert!(matches!(
        fleet.refused(Command::Register(Register {
            agent: fleetlog_projections::SYSTEM_ACTOR.to_owned(),
            role: String::new(),
            name: String::new(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null()
        })),
        CommandError::Invalid { .. }
    ));
}

#[test]
fn an_agent_that_stops_heartbeating_expires_and_loses_its_locks_and_leases() {
    let fleet = TestFleet::new();
    fleet.register("worker");
    fleet.register("boss");
    fleet.run(heartbeat("worker", Some(0.1), 10_000));
    fleet.run(Command::AcquireLock(AcquireLock {
        slots: None,
        agent: "worker".to_owned(),
        resource: "db".to_owned(),
        ttl_ms: 600_000,
        intent: "migrate".to_owned(),
        wait_ms: None,
    }));
    fleet.run(Command::Enqueue(Enqueue {
        agent: "boss".to_owned(),
        spec: TaskSpec::new("migrate"),
    }));
    fleet.run(Command::Claim(Claim {
        agent: "worker".to_owned(),
        tags: vec![],
        tag_match: Default::default(),
        task: None,
        lease_ttl_ms: 600_000,
        wait_ms: None,
    }));
    fleet.run(heartbeat("boss", None, 3_600_000));
    fleet.advance_ms(9_999);
    assert!(
        fleet
            .coordinator
            .state()
            .agents
            .is_alive("worker", fleet.now())
    );
    fleet.advance_ms(1);
    let kinds = fleet.kinds();
    let tail = &kinds[kinds.len() - 3..];
    assert_eq!(
        tail,
        ["agent_expired", "lock_expired", "task_lease_expired"]
    );
    let state = fleet.coordinator.state();
    assert_eq!(
        state.agents.get("worker").map(|a| a.liveness),
        Some(Liveness::Expired)
    );
    assert!(state.locks.live("db", fleet.now()).is_none());
    let task = state.queue.tasks.values().next().expect("the task");
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.attempts, 1, "the lost attempt is counted");
    drop(state);
    // A heartbeat revives an expired agent.
    fleet.run(heartbeat("worker", None, 10_000));
    assert!(
        fleet
            .coordinator
            .state()
            .agents
            .is_alive("worker", fleet.now())
    );
}

#[test]
fn stale_and_hung_agents_are_found_from_heartbeat_times() {
    let fleet = TestFleet::new();
    fleet.register("busy");
    fleet.register("stuck");
    fleet.register("quiet");
    for agent in ["busy", "stuck", "quiet"] {
        fleet.run(heartbeat(agent, Some(0.1), 3_600_000));
    }
    fleet.advance_ms(60_000);
    fleet.run(heartbeat("busy", Some(0.5), 3_600_000));
    fleet.run(heartbeat("stuck", Some(0.1), 3_600_000));
    let state = fleet.coordinator.state();
    let ids = |agents: Vec<&fleetlog_projections::agents::Agent>| -> Vec<String> {
        agents.iter().map(|agent| agent.id.clone()).collect()
    };
    assert_eq!(ids(state.agents.stale(fleet.now(), 30_000)), ["quiet"]);
    assert_eq!(
        ids(state.agents.hung(fleet.now(), 30_000)),
        ["quiet", "stuck"]
    );
    assert_eq!(state.agents.active(fleet.now()).len(), 3);
}

#[test]
fn a_targeted_signal_is_consumed_once_and_peeking_leaves_it() {
    let fleet = TestFleet::new();
    fleet.register("producer");
    fleet.register("consumer");
    fleet.run(send(
        "producer",
        Some("consumer"),
        "task_complete",
        serde_json::json!({"task": 7}),
    ));
    assert_eq!(
        payload(fleet.run(receive("producer", "task_complete", true, None))),
        None
    );
    assert_eq!(
        payload(fleet.run(receive("consumer", "task_complete", false, None))),
        Some(serde_json::json!({"task": 7}))
    );
    assert_eq!(
        payload(fleet.run(receive("consumer", "task_complete", true, None))),
        Some(serde_json::json!({"task": 7}))
    );
    assert_eq!(
        payload(fleet.run(receive("consumer", "task_complete", true, None))),
        None
    );
}

#[test]
fn every_agent_consumes_its_own_copy_of_a_broadcast() {
    let fleet = TestFleet::new();
    for agent in ["lead", "w1", "w2", "w3"] {
        fleet.register(agent);
    }
    fleet.run(send("lead", None, "abort", serde_json::json!("stop")));
    for worker in ["w1", "w2", "w3"] {
        assert_eq!(
            payload(fleet.run(receive(worker, "abort", true, None))),
            Some(serde_json::json!("stop")),
            "{worker} sees the broadcast"
        );
        assert_eq!(
            payload(fleet.run(receive(worker, "abort", true, None))),
            None
        );
    }
    assert_eq!(
        payload(fleet.run(receive("lead", "abort", true, None))),
        None,
        "not the sender"
    );
}

#[test]
fn an_unconsumed_signal_expires_after_its_ttl_and_the_expiry_is_recorded() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.register("b");
    fleet.run(heartbeat("a", None, 3_600_000));
    fleet.run(heartbeat("b", None, 3_600_000));
    fleet.run(send("a", Some("b"), "ping", serde_json::json!(1)));
    fleet.advance_ms(59_999);
    assert!(payload(fleet.run(receive("b", "ping", false, None))).is_some());
    fleet.advance_ms(1);
    assert_eq!(fleet.kinds().last(), Some(&"signal_expired"));
    assert_eq!(payload(fleet.run(receive("b", "ping", true, None))), None);
}

#[test]
fn a_waiting_receiver_is_woken_by_the_send_itself() {
    let fleet = TestFleet::new();
    fleet.register("producer");
    fleet.register("consumer");
    let waiting = fleet
        .coordinator
        .submit(receive("consumer", "task_complete", true, Some(60_000)))
        .expect("queued");
    fleet
        .coordinator
        .sync()
        .expect("the wait is parked, not answered");
    fleet.run(send(
        "producer",
        Some("consumer"),
        "task_complete",
        serde_json::json!({"ok": true}),
    ));
    assert_eq!(
        payload(waiting.wait().expect("woken")),
        Some(serde_json::json!({"ok": true}))
    );
    // The wait consumed it.
    assert_eq!(
        payload(fleet.run(receive("consumer", "task_complete", true, None))),
        None
    );
    assert_eq!(fleet.kinds().last(), Some(&"signal_consumed"));
}

#[test]
fn request_response_matches_the_reply_by_correlation_id() {
    let fleet = TestFleet::new();
    fleet.register("asker");
    fleet.register("answerer");
    let request = match fleet.run(send(
        "asker",
        Some("answerer"),
        "question",
        serde_json::json!("2+2?"),
    )) {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    };
    let reply_to = |correlation_id: u64, answer: i32| {
        Command::SendSignal(SendSignal {
            agent: "answerer".to_owned(),
            kind: "answer".to_owned(),
            target: SignalTarget::Agent("asker".to_owned()),
            payload: Json::from_value(&serde_json::json!(answer)),
            ttl_ms: 60_000,
            correlation_id: Some(correlation_id),
        })
    };
    fleet.run(reply_to(request + 1_000, 5));
    let mine = fleet
        .coordinator
        .submit(Command::ReceiveSignal(ReceiveSignal {
            ack_ms: None,
            agent: "asker".to_owned(),
            filter: SignalFilter {
                kind: "answer".to_owned(),
                from: Some("answerer".to_owned()),
                correlation_id: Some(request),
            },
            consume: true,
            wait_ms: Some(60_000),
        }))
        .expect("queued");
    fleet.run(reply_to(request, 4));
    assert_eq!(
        payload(mine.wait().expect("answered")),
        Some(serde_json::json!(4))
    );
}

#[test]
fn a_signal_wait_times_out_with_nothing_sent() {
    let fleet = TestFleet::new();
    fleet.register("a");
    let waiting = fleet
        .coordinator
        .submit(receive("a", "never", true, Some(2_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("sync");
    fleet.advance_ms(2_000);
    assert!(matches!(waiting.wait(), Err(CommandError::TimedOut { .. })));
}

fn receive_acked(agent: &str, kind: &str, ack_ms: u64, wait_ms: Option<u64>) -> Command {
    Command::ReceiveSignal(ReceiveSignal {
        ack_ms: Some(ack_ms),
        agent: agent.to_owned(),
        filter: SignalFilter {
            kind: kind.to_owned(),
            ..Default::default()
        },
        consume: true,
        wait_ms,
    })
}

fn signal_id(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Signal {
            signal: Some(signal),
        } => signal.id,
        other => panic!("expected a signal, got {other:?}"),
    }
}

#[test]
fn an_unacknowledged_signal_becomes_receivable_again_after_its_deadline() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("a");
    fleet.register_long_lived("b");
    fleet.run(send("a", Some("b"), "job", serde_json::json!(1)));
    let first = signal_id(fleet.run(receive_acked("b", "job", 5_000, None)));
    // While delivered and unacknowledged, it is nobody's to receive.
    assert_eq!(payload(fleet.run(receive("b", "job", true, None))), None);
    fleet.advance_ms(5_000);
    fleet.coordinator.sync().expect("sync");
    let again = signal_id(fleet.run(receive_acked("b", "job", 5_000, None)));
    assert_eq!(again, first);
    fleet.run(Command::AckSignal(AckSignal {
        agent: "b".to_owned(),
        signal: again,
    }));
    fleet.advance_ms(10_000);
    fleet.coordinator.sync().expect("sync");
    assert_eq!(payload(fleet.run(receive("b", "job", true, None))), None);
    let kinds = fleet.kinds();
    assert_eq!(
        kinds
            .iter()
            .filter(|kind| **kind == "signal_delivered")
            .count(),
        2
    );
    assert!(kinds.contains(&"signal_ack_expired"));
    assert!(kinds.contains(&"signal_acked"));
}

#[test]
fn acknowledging_a_signal_that_was_not_delivered_to_you_is_refused() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("a");
    fleet.register_long_lived("b");
    let sent = match fleet.run(send("a", Some("b"), "job", serde_json::json!(1))) {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    };
    let ack = |agent: &str| {
        Command::AckSignal(AckSignal {
            agent: agent.to_owned(),
            signal: sent,
        })
    };
    assert!(matches!(
        fleet.refused(ack("b")),
        CommandError::NotDelivered { .. }
    ));
    signal_id(fleet.run(receive_acked("b", "job", 5_000, None)));
    assert!(matches!(
        fleet.refused(ack("a")),
        CommandError::NotDelivered { .. }
    ));
    fleet.run(ack("b"));
    assert!(matches!(
        fleet.refused(ack("b")),
        CommandError::NotDelivered { .. }
    ));
}

#[test]
fn a_wait_withdrawn_by_its_caller_consumes_nothing() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("a");
    fleet.register_long_lived("b");
    let gone = fleet
        .coordinator
        .submit(receive("b", "job", true, Some(60_000)))
        .expect("queued");
    fleet.coordinator.sync().expect("sync");
    assert_eq!(fleet.coordinator.waiting(), 1);
    drop(gone);
    fleet.coordinator.sync().expect("sync");
    assert_eq!(fleet.coordinator.waiting(), 0);
    fleet.run(send("a", Some("b"), "job", serde_json::json!("kept")));
    assert_eq!(
        payload(fleet.run(receive("b", "job", true, None))),
        Some(serde_json::json!("kept"))
    );
}

#[test]
fn a_full_inbox_refuses_sends_naming_the_agent() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("a");
    fleet.register_long_lived("b");
    let limit = fleetlog_projections::INBOX_SIGNALS_MAX;
    let pending: Vec<_> = (0..limit)
        .map(|n| {
            fleet
                .coordinator
                .submit(send("a", Some("b"), "job", serde_json::json!(n)))
                .expect("queued")
        })
        .collect();
    for sent in pending {
        sent.wait().expect("sent");
    }
    assert!(matches!(
        fleet.refused(send("a", Some("b"), "job", serde_json::json!("one more"))),
        CommandError::InboxFull { agent, .. } if agent == "b"
    ));
    fleet.run(receive("b", "job", true, None));
    fleet.run(send("a", Some("b"), "job", serde_json::json!("fits again")));
}

fn lock(agent: &str, resource: &str, ttl_ms: u64) -> Command {
    Command::AcquireLock(AcquireLock {
        slots: None,
        agent: agent.into(),
        resource: resource.into(),
        ttl_ms,
        intent: String::new(),
        wait_ms: None,
    })
}

#[test]
fn renewing_a_lock_is_a_sign_of_life_that_keeps_the_agent_and_its_lock() {
    let fleet = TestFleet::new();
    fleet.register("a"); // 30 s heartbeat TTL, and no heartbeat after this
    let Outcome::Lock { lock: granted } = fleet.run(lock("a", "r", 20_000)) else {
        panic!("granted");
    };
    for _ in 0..6 {
        fleet.advance_ms(15_000);
        fleet.run(Command::RenewLock(RenewLock {
            agent: "a".into(),
            resource: "r".into(),
            token: granted.token,
            ttl_ms: 20_000,
        }));
    }
    let now = fleet.coordinator.now();
    let state = fleet.coordinator.state();
    assert!(
        state.agents.is_alive("a", now),
        "90 s of renewals, no heartbeat"
    );
    assert!(state.locks.token_is_current("r", granted.token, now));
    assert!(
        !fleet.kinds().contains(&"agent_expired"),
        "{:?}",
        fleet.kinds()
    );
}

#[test]
fn an_expired_agent_must_heartbeat_or_register_again_before_acting() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.advance_ms(30_001);
    match fleet.refused(lock("a", "r", 1_000)) {
        CommandError::AgentExpired { agent, .. } => assert_eq!(agent, "a"),
        other => panic!("expected agent_expired, got {other:?}"),
    }
    fleet.run(heartbeat("a", None, 30_000));
    assert!(matches!(
        fleet.run(lock("a", "r", 1_000)),
        Outcome::Lock { .. }
    ));
}

#[test]
fn a_bare_heartbeat_keeps_status_progress_and_current_task() {
    let fleet = TestFleet::new();
    fleet.register("a");
    fleet.run(Command::Heartbeat(Heartbeat {
        agent: "a".into(),
        status: Some("reviewing".into()),
        progress: Some(0.5),
        current_task: Some("PR 7".into()),
        metadata: Some(Json::from_value(&serde_json::json!({"pid": 7}))),
        ttl_ms: 30_000,
    }));
    fleet.run(Command::Heartbeat(Heartbeat {
        agent: "a".into(),
        status: None,
        progress: None,
        current_task: None,
        metadata: None,
        ttl_ms: 30_000,
    }));
    let state = fleet.coordinator.state();
    let agent = state.agents.get("a").expect("a");
    assert_eq!(agent.status, "reviewing");
    assert_eq!(agent.progress, Some(0.5));
    assert_eq!(agent.current_task.as_deref(), Some("PR 7"));
    assert_eq!(agent.metadata.to_value(), serde_json::json!({"pid": 7}));
    fleet.run(Command::Heartbeat(Heartbeat {
        agent: "a".into(),
        status: None,
        progress: None,
        current_task: Some(String::new()),
        metadata: None,
        ttl_ms: 30_000,
    }));
    assert_eq!(
        fleet
            .coordinator
            .state()
            .agents
            .get("a")
            .expect("a")
            .current_task,
        None
    );
}
