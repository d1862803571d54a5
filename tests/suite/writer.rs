//! Who commits: a caller that waits for its answer and finds the writer idle commits on its own
//! thread; everything else is queued to the writer thread. Guards what that must not change:
//! deadlines a caller's commit creates are still met by the writer thread, and queued requests
//! still share commits.

use std::sync::mpsc;
use std::time::Duration;

use fleetlog_ledger::{Event, Next};
use fleetlog_projections::commands::AcquireLock;
use fleetlog_projections::{Command, CommandError, Coordinator, CoordinatorOptions, Outcome};
use fleetlog_suite::{TempLedger, custom, heartbeat, register};

/// Long enough that only a missed wake-up can reach it on a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn acquire(agent: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Command {
    Command::AcquireLock(AcquireLock {
        slots: None,
        agent: agent.to_owned(),
        resource: "deploy".to_owned(),
        ttl_ms,
        intent: "test".to_owned(),
        wait_ms,
    })
}

/// A coordinator on the real clock whose only deadline is an hour away.
fn idle_fleet(temp: &TempLedger, agents: &[&str]) -> Coordinator {
    let coordinator = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("open");
    for agent in agents {
        coordinator.execute(register(agent)).expect("register");
        coordinator
            .execute(heartbeat(agent, 3_600_000))
            .expect("heartbeat");
    }
    coordinator
}

#[test]
fn a_lock_taken_on_an_idle_writer_expires_on_time() {
    let temp = TempLedger::new();
    let coordinator = idle_fleet(&temp, &["a"]);
    let from = coordinator.ledger().head().expect("head").seq + 1;
    // Committed on this thread while the writer thread sleeps until the heartbeat's deadline,
    // an hour away: the commit must tell it about the lock's, 100 ms away.
    match coordinator.execute(acquire("a", 100, None)) {
        Ok(Outcome::Lock { .. }) => {}
        other => panic!("acquire: {other:?}"),
    }
    let mut tail = coordinator.ledger().subscribe(from);
    let expired = loop {
        match tail.next(Some(PATIENCE)).expect("tail") {
            Next::Record(record) => {
                if let Event::LockExpired { resource, .. } = &record.event {
                    break resource.clone();
                }
            }
            Next::TimedOut => panic!("the lock did not expire within {PATIENCE:?}"),
            Next::Closed => panic!("the ledger closed"),
        }
    };
    assert_eq!(expired, "deploy");
}

#[test]
fn a_wait_parked_by_a_callers_commit_times_out_on_time() {
    let temp = TempLedger::new();
    let coordinator = idle_fleet(&temp, &["a", "b"]);
    match coordinator.execute(acquire("a", 3_600_000, None)) {
        Ok(Outcome::Lock { .. }) => {}
        other => panic!("acquire: {other:?}"),
    }
    let (sender, receiver) = mpsc::channel();
    let waiting = coordinator.clone();
    std::thread::spawn(move || {
        // Parks on the held lock; only the writer thread's deadline can answer it.
        let _ = sender.send(waiting.execute(acquire("b", 60_000, Some(150))));
    });
    match receiver.recv_timeout(PATIENCE) {
        Ok(Err(CommandError::TimedOut { waited_ms })) => assert!(waited_ms >= 150),
        Ok(other) => panic!("expected a timeout, got {other:?}"),
        Err(_) => panic!("the wait was not answered within {PATIENCE:?}"),
    }
}

#[test]
fn queued_appends_share_commits_and_a_waiting_append_commits_alone() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let pending: Vec<_> = (0..200)
        .map(|n| {
            let entry = fleetlog_ledger::encode_entry("a", &custom("n", serde_json::json!(n)))
                .expect("encode");
            ledger.submit(vec![entry], None).expect("submit")
        })
        .collect();
    for append in pending {
        append.wait().expect("durable");
    }
    let queued = ledger.writer_stats();
    assert_eq!(queued.events, 200);
    assert!(
        queued.commits < 100,
        "200 queued appends took {} commits: queueing must batch",
        queued.commits
    );
    for n in 0..5 {
        ledger
            .append("a", &custom("n", serde_json::json!(n)))
            .expect("append");
    }
    let after = ledger.writer_stats();
    assert_eq!(
        after.commits - queued.commits,
        5,
        "one commit per waited append"
    );
    assert_eq!(after.events, 205);
}

/// Held exclusively, a batch is acknowledged from the write-ahead log while its redb transaction
/// stays open for the next batches: a read that starts after an acknowledgement must still see
/// it, whichever thread reads and however the reads interleave with the appends.
#[test]
fn a_read_that_starts_after_an_acknowledgement_sees_it_while_the_file_is_held_exclusively() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const APPENDERS: u64 = 4;
    const APPENDS_EACH: u64 = 150;
    let temp = TempLedger::new();
    let ledger = fleetlog_ledger::Ledger::open_or_create_exclusive(temp.path()).expect("open");
    let acknowledged = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let appenders: Vec<_> = (0..APPENDERS)
            .map(|thread| {
                let (ledger, acknowledged) = (&ledger, &acknowledged);
                scope.spawn(move || {
                    for n in 0..APPENDS_EACH {
                        let receipt = ledger
                            .append(&format!("a{thread}"), &custom("n", serde_json::json!(n)))
                            .expect("append");
                        acknowledged.fetch_max(receipt.seq, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            let (ledger, acknowledged, done, reads) = (&ledger, &acknowledged, &done, &reads);
            scope.spawn(move || {
                let reader = ledger.reader();
                while !done.load(Ordering::SeqCst) {
                    let seen = acknowledged.load(Ordering::SeqCst);
                    let last = reader.last_seq().expect("read");
                    assert!(last >= seen, "acknowledged {seen}, a later read saw {last}");
                    if seen > 0 {
                        let record = reader.get(seen).expect("read");
                        assert_eq!(record.map(|r| r.seq), Some(seen));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for appender in appenders {
            appender.join().expect("appender");
        }
        done.store(true, Ordering::SeqCst);
    });
    let total = APPENDERS * APPENDS_EACH;
    assert_eq!(ledger.reader().last_seq().expect("read"), total);
    assert!(reads.load(Ordering::Relaxed) > 0, "the readers ran");
}

/// Batches acknowledged and never read stay in the writer's open transaction; closing the
/// ledger must make them durable in redb itself, so a read-only open (which refuses a file whose
/// write-ahead log still has frames to apply) finds every one.
#[test]
fn batches_acknowledged_and_never_read_are_in_the_file_after_close() {
    let temp = TempLedger::new();
    let ledger = fleetlog_ledger::Ledger::open_or_create_exclusive(temp.path()).expect("open");
    let mut last = None;
    for n in 0..40 {
        last = Some(
            ledger
                .append("a", &custom("n", serde_json::json!(n)))
                .expect("append"),
        );
    }
    drop(ledger);
    let reopened = fleetlog_ledger::Ledger::open_read_only(temp.path()).expect("no recovery due");
    let reader = reopened.reader();
    assert_eq!(reader.last_seq().expect("read"), 40);
    let record = reader.get(40).expect("read").expect("record 40");
    assert_eq!(Some(record.hash), last.map(|receipt| receipt.hash));
}
