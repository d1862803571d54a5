//! Guards group commit under contention: 32 threads appending at once get dense seqs, each
//! thread's events keep their order, and the chain verifies.

use std::collections::HashMap;
use std::ops::ControlFlow;

use fleetlog_ledger::Event;
use fleetlog_suite::{TempLedger, custom};

const THREADS: u64 = 32;
const EVENTS_PER_THREAD: u64 = 10_000;

#[test]
fn thirty_two_threads_append_dense_ordered_verifiable_events() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let ledger = &ledger;
            scope.spawn(move || {
                let actor = format!("thread-{thread}");
                let mut last_seq = 0;
                for n in 0..EVENTS_PER_THREAD {
                    let event = custom("n", serde_json::json!(n));
                    let receipt = ledger.append(&actor, &event).expect("append");
                    assert!(receipt.seq > last_seq, "acknowledged out of order");
                    last_seq = receipt.seq;
                }
            });
        }
    });

    let total = THREADS * EVENTS_PER_THREAD;
    assert_eq!(ledger.head().expect("head").seq, total);
    let mut next_n: HashMap<String, u64> = HashMap::new();
    let mut expected_seq = 1;
    ledger
        .reader()
        .scan(1..=total, |record| {
            assert_eq!(record.seq, expected_seq, "seqs are dense");
            expected_seq += 1;
            let Event::Custom { payload, .. } = &record.event else {
                panic!("only custom events were appended");
            };
            let n = payload.to_value().as_u64().expect("payload is n");
            let next = next_n.entry(record.actor.clone()).or_default();
            assert_eq!(n, *next, "{}'s events are out of order", record.actor);
            *next += 1;
            Ok(ControlFlow::Continue(()))
        })
        .expect("scan");
    assert_eq!(expected_seq, total + 1);
    assert_eq!(next_n.len() as u64, THREADS);
    assert!(next_n.values().all(|&count| count == EVENTS_PER_THREAD));
    let report = ledger.verify(Default::default()).expect("verify");
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.checked, total);
}

#[test]
fn pipelined_submits_from_one_thread_commit_in_order() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let pending: Vec<_> = (0..2_000u64)
        .map(|n| {
            let entry =
                fleetlog_ledger::encode_entry("pipeliner", &custom("n", serde_json::json!(n)))
                    .expect("valid");
            ledger.submit(vec![entry], None).expect("queued")
        })
        .collect();
    let seqs: Vec<u64> = pending
        .into_iter()
        .map(|pending| pending.wait().expect("durable")[0].seq)
        .collect();
    assert_eq!(seqs, (1..=2_000).collect::<Vec<_>>());
}
