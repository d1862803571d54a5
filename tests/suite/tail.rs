//! Guards the live tail: history from any seq, then new records as they commit, each once and in
//! order, woken by the commit itself; and a clean end when the ledger closes.

use std::time::Duration;

use fleetlog_ledger::{Next, Record};
use fleetlog_suite::{TempLedger, append_numbered, custom};

const GENEROUS: Option<Duration> = Some(Duration::from_secs(10));

fn record(next: Next) -> Box<Record> {
    match next {
        Next::Record(record) => record,
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn a_subscriber_gets_history_then_live_records_in_order() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    append_numbered(&ledger, "a", 0..10);
    let mut subscription = ledger.subscribe(5);
    for seq in 5..=10 {
        assert_eq!(record(subscription.next(GENEROUS).expect("next")).seq, seq);
    }
    let follower = std::thread::spawn(move || {
        (11..=2_510)
            .map(|seq| {
                let got = record(subscription.next(GENEROUS).expect("next")).seq;
                assert_eq!(got, seq);
                got
            })
            .count()
    });
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let ledger = &ledger;
            scope.spawn(move || {
                for n in 0..625 {
                    ledger
                        .append(&format!("w{writer}"), &custom("n", serde_json::json!(n)))
                        .expect("append");
                }
            });
        }
    });
    assert_eq!(follower.join().expect("follower"), 2_500);
}

#[test]
fn a_waiting_subscriber_times_out_when_nothing_commits() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let mut subscription = ledger.subscribe(1);
    assert!(matches!(
        subscription
            .next(Some(Duration::from_millis(20)))
            .expect("next"),
        Next::TimedOut
    ));
    append_numbered(&ledger, "a", 1..2);
    assert_eq!(record(subscription.next(GENEROUS).expect("next")).seq, 1);
}

#[test]
fn a_blocked_subscriber_is_released_when_the_ledger_closes() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    append_numbered(&ledger, "a", 1..2);
    let mut subscription = ledger.subscribe(1);
    assert_eq!(record(subscription.next(GENEROUS).expect("next")).seq, 1);
    let waiter = std::thread::spawn(move || subscription.next(None).expect("next"));
    drop(ledger);
    assert!(matches!(waiter.join().expect("waiter"), Next::Closed));
}

#[test]
fn a_read_only_subscription_ends_after_history() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    append_numbered(&ledger, "a", 1..2);
    let reader = fleetlog_ledger::Ledger::open_read_only(temp.path()).expect("read-only");
    let mut subscription = reader.subscribe(1);
    assert_eq!(record(subscription.next(None).expect("next")).seq, 1);
    assert!(matches!(
        subscription.next(None).expect("next"),
        Next::Closed
    ));
}
