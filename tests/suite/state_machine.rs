//! Guards determinism: for random command sequences from many agents with random clock
//! advances, the live state equals a full replay and equals snapshot + tail replay after every
//! step (compared by a digest of all projections), reopening rebuilds the same state, and the
//! whole log passes the invariant checkers.

use fleetlog_ledger::{Json, SignalTarget};
use fleetlog_projections::commands::{
    AckSignal, AcquireLock, CancelTask, Claim, CompleteTask, CustomEvent, DecideApproval,
    Deregister, Enqueue, EscalateTask, FailTask, Heartbeat, ReceiveSignal, Register, ReleaseLock,
    ReleaseTask, RequestApproval, SendSignal, TaskProgress,
};
use fleetlog_projections::queue::{Task, TaskState, archive, task_of};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Projection, State, TaskSpec, rebuild, replay_range};
use fleetlog_suite::{TestFleet, check_log};
use proptest::prelude::*;

const AGENTS: u8 = 4;
const RESOURCES: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Register(u8),
    Heartbeat(u8, u32),
    Deregister(u8),
    Send(u8, Option<u8>),
    /// Agent, consume, ask for acknowledged delivery.
    Receive(u8, bool, bool),
    /// Acknowledge (or, given no outstanding delivery, a refused ack of signal 1).
    Ack(u8),
    Acquire(u8, u8, u32),
    Release(u8, u8),
    Enqueue(u8, i8, bool),
    Claim(u8),
    Complete(u8),
    Fail(u8, bool),
    Cancel(u8),
    /// Give the claimed task back (or requeue an escalated one).
    ReleaseTask(u8),
    Escalate(u8),
    Progress(u8),
    Request(u8),
    Decide(u8, bool),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS;
    prop_oneof![
        agent.clone().prop_map(Op::Register),
        (agent.clone(), 1_000u32..60_000).prop_map(|(a, ttl)| Op::Heartbeat(a, ttl)),
        agent.clone().prop_map(Op::Deregister),
        (agent.clone(), proptest::option::of(0..AGENTS)).prop_map(|(a, to)| Op::Send(a, to)),
        (agent.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(a, consume, ack)| Op::Receive(a, consume, ack)),
        agent.clone().prop_map(Op::Ack),
        (agent.clone(), 0..RESOURCES, 500u32..20_000)
            .prop_map(|(a, r, ttl)| Op::Acquire(a, r, ttl)),
        (agent.clone(), 0..RESOURCES).prop_map(|(a, r)| Op::Release(a, r)),
        (agent.clone(), -2i8..3, any::<bool>()).prop_map(|(a, p, dep)| Op::Enqueue(a, p, dep)),
        agent.clone().prop_map(Op::Claim),
        agent.clone().prop_map(Op::Complete),
        (agent.clone(), any::<bool>()).prop_map(|(a, retry)| Op::Fail(a, retry)),
        agent.clone().prop_map(Op::Cancel),
        agent.clone().prop_map(Op::ReleaseTask),
        agent.clone().prop_map(Op::Escalate),
        agent.clone().prop_map(Op::Progress),
        agent.clone().prop_map(Op::Request),
        (agent.clone(), any::<bool>()).prop_map(|(a, yes)| Op::Decide(a, yes)),
        (0u32..45_000).prop_map(Op::Advance),
    ]
}

fn name(agent: u8) -> String {
    format!("agent-{agent}")
}

/// Turns an op into a command, using the current state to pick plausible ids and tokens (so
/// most commands succeed, and the refusals that remain are realistic).
fn command(op: &Op, state: &State) -> Option<Command> {
    let task_of = |agent: &str| state.queue.claimed_by(agent).map(|task| task.id).next();
    Some(match op.clone() {
        Op::Register(a) => Command::Register(Register {
            agent: name(a),
            role: "worker".into(),
            name: name(a),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null(),
        }),
        Op::Heartbeat(a, ttl) => Command::Heartbeat(Heartbeat {
            agent: name(a),
            status: Some("ok".into()),
            progress: Some(f64::from(ttl % 10) / 10.0),
            current_task: None,
            metadata: None,
            ttl_ms: u64::from(ttl),
        }),
        Op::Deregister(a) => Command::Deregister(Deregister {
            agent: name(a),
            reason: "done".into(),
        }),
        Op::Send(a, to) => Command::SendSignal(SendSignal {
            agent: name(a),
            kind: "ping".into(),
            target: to.map_or(SignalTarget::Broadcast, |to| SignalTarget::Agent(name(to))),
            payload: Json::from_value(&serde_json::json!(a)),
            ttl_ms: 10_000,
            correlation_id: None,
        }),
        Op::Receive(a, consume, ack) => Command::ReceiveSignal(ReceiveSignal {
            ack_ms: ack.then_some(8_000),
            agent: name(a),
            filter: SignalFilter {
                kind: "ping".into(),
                ..Default::default()
            },
            consume,
            wait_ms: None,
        }),
        Op::Ack(a) => {
            let signal = state
                .signals
                .live
                .keys()
                .copied()
                .find(|id| state.signals.delivered(*id).any(|(to, _)| *to == name(a)))
                .unwrap_or(1);
            Command::AckSignal(AckSignal {
                agent: name(a),
                signal,
            })
        }
        // Odd resources are two-slot semaphores.
        Op::Acquire(a, r, ttl) => Command::AcquireLock(AcquireLock {
            slots: (r % 2 == 1).then_some(2),
            agent: name(a),
            resource: format!("r{r}"),
            ttl_ms: u64::from(ttl),
            intent: "edit".into(),
            wait_ms: None,
        }),
        Op::Release(a, r) => {
            let resource = match r % 2 {
                0 => format!("r{r}"),
                _ => (0..2)
                    .map(|slot| fleetlog_projections::locks::slot_resource(&format!("r{r}"), slot))
                    .find(|slot| {
                        state
                            .locks
                            .held
                            .get(slot)
                            .is_some_and(|l| l.holder == name(a))
                    })
                    .unwrap_or_else(|| format!("r{r}/slot-0")),
            };
            let token = state.locks.held.get(&resource).map_or(1, |lock| lock.token);
            Command::ReleaseLock(ReleaseLock {
                agent: name(a),
                resource,
                token,
            })
        }
        Op::Enqueue(a, priority, dep) => {
            // The newest task, finished or not (a finished one may doom the new task).
            let newest_finished = state.queue.finished.after(None).map(|(id, _)| id).last();
            let depends_on = match dep {
                true => state
                    .queue
                    .tasks
                    .keys()
                    .last()
                    .copied()
                    .max(newest_finished)
                    .into_iter()
                    .collect(),
                false => vec![],
            };
            Command::Enqueue(Enqueue {
                agent: name(a),
                spec: TaskSpec {
                    priority: i32::from(priority),
                    max_attempts: 2,
                    depends_on,
                    escalate_when_exhausted: priority > 0,
                    ..TaskSpec::new("work")
                },
            })
        }
        Op::Claim(a) => Command::Claim(Claim {
            agent: name(a),
            tags: vec![],
            tag_match: Default::default(),
            task: None,
            lease_ttl_ms: 15_000,
            wait_ms: None,
        }),
        Op::Complete(a) => Command::Complete(CompleteTask {
            agent: name(a),
            task: task_of(&name(a))?,
            result: Json::null(),
        }),
        Op::Fail(a, retryable) => Command::Fail(FailTask {
            agent: name(a),
            task: task_of(&name(a))?,
            error: "boom".into(),
            retryable,
        }),
        Op::Cancel(a) => {
            let task = state
                .queue
                .tasks
                .values()
                .find(|task| task.state == TaskState::Pending)?
                .id;
            Command::Cancel(CancelTask {
                agent: name(a),
                task,
                reason: "no longer needed".into(),
            })
        }
        Op::ReleaseTask(a) => {
            let escalated = state
                .queue
                .tasks
                .values()
                .find(|task| task.state == TaskState::Escalated)
                .map(|task| task.id);
            Command::ReleaseTask(ReleaseTask {
                agent: name(a),
                task: task_of(&name(a)).or(escalated)?,
                reason: "later".into(),
            })
        }
        Op::Escalate(a) => Command::EscalateTask(EscalateTask {
            agent: name(a),
            task: task_of(&name(a))?,
            reason: "stuck".into(),
        }),
        Op::Progress(a) => Command::TaskProgress(TaskProgress {
            agent: name(a),
            task: task_of(&name(a))?,
            progress: Some(0.5),
            status: "halfway".into(),
        }),
        Op::Request(a) => Command::RequestApproval(RequestApproval {
            agent: name(a),
            action: "deploy".into(),
            context: Json::null(),
            approvers: vec![],
            timeout_ms: 20_000,
        }),
        Op::Decide(a, approved) => {
            let approval = state.approvals.by_id.keys().last().copied()?;
            Command::Decide(DecideApproval {
                agent: name(a),
                approval,
                approved,
                reason: String::new(),
            })
        }
        Op::Advance(_) => return None,
    })
}

/// Every task, folded over the whole log and never dropped: what the archive must answer for
/// a finished one.
fn every_task(reader: &fleetlog_ledger::Reader) -> std::collections::BTreeMap<u64, Task> {
    let mut tasks = std::collections::BTreeMap::new();
    let last = reader.last_seq().expect("last");
    reader
        .scan(1..=last, |record| {
            if let Some(task) = Task::enqueued(&record) {
                tasks.insert(task.id, task);
            } else if let Some(task) = task_of(&record.event).and_then(|id| tasks.get_mut(&id)) {
                task.apply(&record);
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .expect("scan");
    tasks
}

/// The queue keeps only how finished tasks ended; read back from the log, one at a time and
/// all together, they are what they were when they finished.
fn finished_tasks_read_back_as_they_ended(fleet: &TestFleet) {
    let state = fleet.coordinator.state();
    let reader = fleet.coordinator.ledger().reader();
    let everything = every_task(reader);
    let finished: Vec<u64> = state.queue.finished.after(None).map(|(id, _)| id).collect();
    let together = archive::tasks(reader, &finished, state.seq).expect("reads");
    assert_eq!(together.len(), finished.len());
    for task in together {
        assert!(task.state.is_final());
        assert_eq!(state.queue.finished.get(task.id), Some(task.state));
        assert_eq!(Some(&task), everything.get(&task.id));
        let alone = archive::task(&state.queue, reader, task.id, state.seq).expect("reads");
        assert_eq!(alone.as_ref(), Some(&task));
    }
    for (id, task) in &everything {
        if !task.state.is_final() {
            assert_eq!(
                state.queue.get(*id),
                Some(task),
                "an unfinished task stays live"
            );
        }
    }
}

fn full_replay(fleet: &TestFleet) -> State {
    let reader = fleet.coordinator.ledger().reader();
    let mut state = State::default();
    replay_range(
        reader,
        &mut state,
        1,
        reader.last_seq().expect("last"),
        &|_| {},
    )
    .expect("replay");
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn live_state_equals_full_replay_and_snapshot_plus_tail_at_every_step(
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let fleet = TestFleet::with_snapshots(5);
        for op in &ops {
            match op {
                Op::Advance(ms) => fleet.advance_ms(u64::from(*ms)),
                other => {
                    let command = command(other, &fleet.coordinator.state());
                    if let Some(command) = command {
                        // Refusals are part of the test: they must change nothing.
                        let _ = fleet.coordinator.execute(command);
                    }
                }
            }
            let live = fleet.coordinator.state().clone();
            let replayed = full_replay(&fleet);
            prop_assert_eq!(live.digest(), replayed.digest(), "live != replay after {:?}", op);
            let reader = fleet.coordinator.ledger().reader();
            let from_snapshot = rebuild(reader, reader.last_seq().expect("last")).expect("rebuild");
            prop_assert_eq!(from_snapshot.digest(), replayed.digest(), "snapshot + tail != replay after {:?}", op);
            // The claimed index answers what a scan of every task would.
            for agent in (0..AGENTS).map(name) {
                let indexed: Vec<u64> = live.queue.claimed_by(&agent).map(|task| task.id).collect();
                let scanned: Vec<u64> = live
                    .queue
                    .tasks
                    .values()
                    .filter(|task| {
                        task.state == fleetlog_projections::queue::TaskState::Claimed
                            && task.holder.as_deref() == Some(agent.as_str())
                    })
                    .map(|task| task.id)
                    .collect();
                prop_assert_eq!(indexed, scanned, "claimed index of {} after {:?}", agent, op);
            }
            // The status counts answer what a scan of every task would.
            let mut counted = std::collections::BTreeMap::new();
            let states = live.queue.tasks.values().map(|task| task.state);
            for state in states.chain(live.queue.finished.after(None).map(|(_, state)| state)) {
                *counted.entry(state.name().to_owned()).or_insert(0u64) += 1;
            }
            prop_assert_eq!(&live.queue.stats(fleet.now()).by_state, &counted, "state counts after {:?}", op);
        }
        check_log(fleet.coordinator.ledger().reader());
        finished_tasks_read_back_as_they_ended(&fleet);

        // Reopening rebuilds the same state from the newest snapshot and the tail.
        let expected = fleet.coordinator.state().digest();
        let TestFleet { temp, clock, coordinator } = fleet;
        drop(coordinator);
        let reopened = TestFleet::open_at(&temp, &clock, 5);
        prop_assert_eq!(reopened.state().digest(), expected);
    }
}

#[test]
fn state_as_of_a_seq_or_time_equals_the_fold_of_that_prefix() {
    let fleet = TestFleet::with_snapshots(4);
    for agent in 0..3 {
        fleet.register(&name(agent));
        fleet.advance_ms(1_000);
        fleet.run(Command::AcquireLock(AcquireLock {
            slots: None,
            agent: name(agent),
            resource: format!("r{agent}"),
            ttl_ms: 2_500,
            intent: "x".into(),
            wait_ms: None,
        }));
    }
    fleet.advance_ms(10_000);
    let reader = fleet.coordinator.ledger().reader();
    let records = reader
        .range(1..=reader.last_seq().expect("last"))
        .expect("read");
    for cut in 0..=records.len() {
        let mut expected = State::default();
        records[..cut]
            .iter()
            .for_each(|record| expected.apply(record));
        let as_of = fleet
            .coordinator
            .state_as_of(fleetlog_projections::AsOf::Seq(cut as u64))
            .expect("as of");
        assert_eq!(as_of.digest(), expected.digest(), "as of seq {cut}");
    }
    // As of the moment the second lock was granted, two locks were held.
    let second_grant = records
        .iter()
        .filter(|r| r.event.kind() == "lock_acquired")
        .nth(1)
        .expect("two grants");
    let then = fleet
        .coordinator
        .state_as_of(fleetlog_projections::AsOf::Time(second_grant.ts))
        .expect("as of");
    assert_eq!(then.locks.list(second_grant.ts).len(), 2);
    assert_eq!(fleet.coordinator.state().locks.list(fleet.now()).len(), 0);
}

#[test]
fn time_travel_is_exact_across_pruned_snapshots_and_few_are_kept() {
    let fleet = TestFleet::with_snapshots(3);
    for round in 0..60u8 {
        let agent = name(round % 3);
        fleet.register(&agent);
        fleet.advance_ms(500);
        fleet.run(Command::Custom(CustomEvent {
            agent,
            kind: "tick".into(),
            payload: fleetlog_ledger::Json::null(),
        }));
    }
    let reader = fleet.coordinator.ledger().reader();
    let last = reader.last_seq().expect("last");
    let stored = reader.snapshot_seqs().expect("snapshots");
    assert!(
        stored.len() <= 12,
        "{} snapshots kept for {last} records: {stored:?}",
        stored.len()
    );
    assert!(stored.len() >= 2, "{stored:?}");
    let records = reader.range(1..=last).expect("read");
    let mut expected = State::default();
    for cut in 0..=records.len() {
        if cut > 0 {
            expected.apply(&records[cut - 1]);
        }
        let as_of = fleet
            .coordinator
            .state_as_of(fleetlog_projections::AsOf::Seq(cut as u64))
            .expect("as of");
        assert_eq!(as_of.digest(), expected.digest(), "as of seq {cut}");
    }
}

#[test]
fn a_torn_or_foreign_snapshot_file_is_skipped_and_reopening_gives_the_replayed_state() {
    let TestFleet {
        temp,
        clock,
        coordinator,
    } = TestFleet::with_snapshots(4);
    for round in 0..30u8 {
        coordinator
            .execute(fleetlog_suite::register(&name(round % 3)))
            .expect("registers");
    }
    // Dropping the coordinator waits for the snapshot being written, if any.
    drop(coordinator);
    let dir = fleetlog_ledger::snapshot_dir(temp.path());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("snapshot files were written beside the ledger")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    // The newest is torn, the one before it comes from another ledger's directory.
    let newest = files.pop().expect("newest");
    let bytes = std::fs::read(&newest).expect("read");
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).expect("tear");
    let older = files.pop().expect("older");
    let mut foreign = std::fs::read(&older).expect("read");
    foreign[8] ^= 0xff; // the ledger id
    std::fs::write(&older, foreign).expect("rewrite");

    let reopened = TestFleet::open_at(&temp, &clock, 4);
    let reader = reopened.ledger().reader();
    let mut replayed = State::default();
    replay_range(
        reader,
        &mut replayed,
        1,
        reader.last_seq().expect("last"),
        &|_| {},
    )
    .expect("replay");
    assert_eq!(reopened.state().digest(), replayed.digest());
    let (used, _) = reader
        .snapshot_at_or_before(reader.last_seq().expect("last"))
        .expect("snapshots read")
        .expect("an intact older snapshot remains");
    let skipped = |path: &std::path::PathBuf| {
        path.file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
            .expect("seq in the name")
    };
    assert!(used < skipped(&older), "used {used}, not the damaged ones");
}
