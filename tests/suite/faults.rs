//! Guards the failure path: when the disk fails a commit, every request in that batch fails,
//! the writer refuses all later writes until the ledger is reopened, followers are released, and
//! reopening finds every acknowledged event and nothing else.

use fleetlog_ledger::{Error, Ledger, Next, Receipt};
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
