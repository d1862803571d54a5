//! Guards the failure path: when the disk fails a commit, every request in that batch fails,
//! the writer refuses all later writes until the ledger is reopened, followers are released, and
//! reopening finds every acknowledged event and nothing else.

use fleetlog_ledger::{Error, Ledger, Next, Receipt};
use fleetlog_projections::commands::{AcquireLock, Register};
use fleetlog_suite::{TempLedger, custom};

#[test]
fn a_failed_commit_poisons_the_writer_and_loses_nothing_acknowledged() {
    let temp = TempLedger::new();
    let (ledger, faults) = Ledger::create_with_faults(temp.path()).expect("create");
    let acknowledged: Vec<Receipt> = (0..10)
        .map(|n| {
            ledger
                .append("a", &custom("before", serde_json::json!(n)))
                .expect("append")
        })
        .collect();
    let mut follower = ledger.subscribe(11);

    faults.set_failing(true);
    let failures: Vec<Error> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let ledger = &ledger;
                scope.spawn(move || {
                    ledger
                        .append("b", &custom("during", serde_json::json!(n)))
                        .expect_err("nothing commits while the disk fails")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    for error in &failures {
        assert!(matches!(error, Error::WriterPoisoned { .. }), "{error}");
        assert!(error.to_string().contains("close and reopen"), "{error}");
    }
    assert!(matches!(follower.next(None).expect("next"), Next::Closed));

    // Healthy again, but this handle stays refused: its state may not match the file.
    faults.set_failing(false);
    let error = ledger
        .append("c", &custom("after", serde_json::json!(0)))
        .unwrap_err();
    assert!(matches!(error, Error::WriterPoisoned { .. }), "{error}");
    // Readers and subscriptions share the file handle: all must go for the file to close.
    drop((ledger, follower));

    let reopened = Ledger::open(temp.path()).expect("reopen recovers the file");
    assert_eq!(reopened.head().expect("head").seq, 10);
    for receipt in &acknowledged {
        let record = reopened
            .reader()
            .get(receipt.seq)
            .expect("get")
            .expect("present");
        assert_eq!(record.hash, receipt.hash);
    }
    assert!(
        reopened
            .verify(Default::default())
            .expect("verify")
            .is_intact()
    );
    let next = reopened
        .append("c", &custom("after", serde_json::json!(1)))
        .expect("append");
    assert_eq!(next.seq, 11);
}

#[test]
fn a_failed_commit_leaves_nothing_from_its_batch_in_the_coordination_state() {
    use fleetlog_projections::{Command, CommandError, Coordinator, CoordinatorOptions, Outcome};

    let temp = TempLedger::new();
    let (coordinator, faults) =
        Coordinator::create_with_faults(temp.path(), CoordinatorOptions::default())
            .expect("create");
    let register = |agent: &str| {
        Command::Register(Register {
            agent: agent.to_owned(),
            role: "worker".to_owned(),
            name: agent.to_owned(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: fleetlog_ledger::Json::null(),
        })
    };
    let acquire = |agent: &str| {
        Command::AcquireLock(AcquireLock {
            slots: None,
            agent: agent.to_owned(),
            resource: "db".to_owned(),
            ttl_ms: 60_000,
            intent: "migrate".to_owned(),
            wait_ms: None,
        })
    };
    coordinator.execute(register("a")).expect("register a");
    coordinator.execute(register("b")).expect("register b");
    let before = coordinator.state().digest();

    faults.set_failing(true);
    let error = coordinator.execute(acquire("a")).unwrap_err();
    assert!(matches!(error, CommandError::NotDurable { .. }), "{error}");
    // Readers never saw the grant that did not commit.
    assert_eq!(coordinator.state().digest(), before);
    assert!(coordinator.state().locks.held.is_empty());
    faults.set_failing(false);
    assert!(
        matches!(
            coordinator.execute(acquire("b")),
            Err(CommandError::NotDurable { .. })
        ),
        "the writer stays refused until reopened"
    );
    drop(coordinator);

    let reopened = Coordinator::open(temp.path(), CoordinatorOptions::default()).expect("reopen");
    assert_eq!(reopened.state().digest(), before);
    match reopened.execute(acquire("b")) {
        Ok(Outcome::Lock { lock }) => assert_eq!(lock.holder, "b"),
        other => panic!("{other:?}"),
    }
}
