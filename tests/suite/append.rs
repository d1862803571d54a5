//! Guards the append path: dense seqs, monotonic time, atomic multi-event appends, and bad input
//! refused with a clear error before anything is written.

use fleetlog_ledger::{Error, Event, Json, NewEvent, limits};
use fleetlog_suite::{TempLedger, custom, fleet_event};

#[test]
fn appends_get_dense_seqs_nondecreasing_times_and_linked_hashes() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let mut previous = ledger.head().expect("head");
    assert_eq!(previous.seq, 0);
    assert_eq!(previous.hash, ledger.ledger_id().genesis_prev());
    for n in 0..200 {
        let (actor, event) = fleet_event(n);
        let receipt = ledger.append(&actor, &event).expect("append");
        assert_eq!(receipt.seq, previous.seq + 1);
        assert!(receipt.ts >= previous.ts);
        let record = ledger
            .reader()
            .get(receipt.seq)
            .expect("get")
            .expect("present");
        assert_eq!(record.prev, previous.hash);
        assert_eq!(record.hash, receipt.hash);
        assert_eq!(record.actor, actor);
        assert_eq!(record.event, event);
        previous = ledger.head().expect("head");
    }
    assert!(
        ledger
            .verify(Default::default())
            .expect("verify")
            .is_intact()
    );
}

#[test]
fn append_all_commits_every_event_with_consecutive_seqs() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    ledger
        .append("a", &custom("first", serde_json::json!(1)))
        .expect("append");
    let events: Vec<NewEvent> = (0..50)
        .map(|n| {
            let (actor, event) = fleet_event(n);
            NewEvent::new(actor, event)
        })
        .collect();
    let receipts = ledger.append_all(&events).expect("append_all");
    let seqs: Vec<u64> = receipts.iter().map(|receipt| receipt.seq).collect();
    assert_eq!(seqs, (2..=51).collect::<Vec<_>>());
    assert!(receipts.windows(2).all(|pair| pair[0].ts == pair[1].ts));
}

#[test]
fn a_batch_with_one_bad_event_appends_none_of_them() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let events = vec![
        NewEvent::new("a", custom("fine", serde_json::json!(1))),
        NewEvent::new("", custom("no actor", serde_json::json!(2))),
    ];
    let error = ledger.append_all(&events).unwrap_err();
    assert!(matches!(error, Error::InvalidActor { .. }), "{error}");
    assert_eq!(ledger.head().expect("head").seq, 0);
    assert_eq!(ledger.reader().len().expect("len"), 0);
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    ledger
        .append("a", &custom("ok", serde_json::json!(1)))
        .expect("append");
    let oversized = Event::Custom {
        kind: "blob".to_owned(),
        payload: Json::from_value(&serde_json::json!("x".repeat(limits::EVENT_BYTES_MAX))),
    };
    let long_actor = "a".repeat(limits::ACTOR_BYTES_MAX + 1);
    let cases: Vec<(&str, Event, &str)> = vec![
        ("a", oversized, "limit is 1048576 bytes"),
        ("", custom("x", serde_json::json!(1)), "is empty"),
        (
            &long_actor,
            custom("x", serde_json::json!(1)),
            "limit is 128 bytes",
        ),
        (
            "a",
            Event::AgentHeartbeat {
                status: "ok".to_owned(),
                progress: Some(1.5),
                current_task: None,
                metadata: Json::null(),
                ttl_ms: 1,
            },
            "outside 0.0..=1.0",
        ),
        (
            "a",
            Event::BudgetSet {
                workflow_id: "wf".to_owned(),
                limit_usd: f64::NAN,
            },
            "not a finite",
        ),
        (
            "a",
            Event::LockReleased {
                resource: "r".repeat(limits::ID_BYTES_MAX + 1),
                token: 1,
            },
            "field `resource`",
        ),
    ];
    for (actor, event, expected) in cases {
        let error = ledger.append(actor, &event).unwrap_err();
        assert!(error.is_bad_input(), "{error}");
        assert!(
            error.to_string().contains(expected),
            "{error:?} lacks {expected:?}"
        );
    }
    let too_many: Vec<NewEvent> = (0..limits::REQUEST_EVENTS_MAX as u64 + 1)
        .map(|n| NewEvent::new("a", custom("n", serde_json::json!(n))))
        .collect();
    assert!(matches!(
        ledger.append_all(&too_many),
        Err(Error::RequestTooLarge { .. })
    ));
    assert!(matches!(ledger.append_all(&[]), Err(Error::EmptyAppend)));
    assert_eq!(ledger.head().expect("head").seq, 1);
    assert_eq!(ledger.reader().len().expect("len"), 1);
}

#[test]
fn time_ranges_find_records_by_timestamp() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let mut receipts = Vec::new();
    for n in 0..40 {
        receipts.push(
            ledger
                .append("a", &custom("n", serde_json::json!(n)))
                .expect("append"),
        );
    }
    let reader = ledger.reader();
    for receipt in &receipts {
        let first = reader
            .seq_at_or_after(receipt.ts)
            .expect("search")
            .expect("found");
        // The first record with this time, which may be an earlier one in the same batch.
        let first_with_ts = receipts
            .iter()
            .find(|r| r.ts == receipt.ts)
            .expect("itself");
        assert_eq!(first, first_with_ts.seq);
    }
    let last = receipts.last().expect("40 receipts");
    assert_eq!(
        reader
            .seq_at_or_after(last.ts.plus_millis(1))
            .expect("search"),
        None
    );
    let window = reader
        .seqs_between(receipts[10].ts, receipts[30].ts)
        .expect("between");
    for seq in window.clone() {
        let record = reader.get(seq).expect("get").expect("present");
        assert!(record.ts >= receipts[10].ts && record.ts < receipts[30].ts);
    }
    assert!(window.contains(&receipts[10].seq) || receipts[10].ts == receipts[30].ts);
    assert!(
        reader
            .seqs_between(last.ts.plus_millis(1), last.ts.plus_millis(2))
            .expect("between")
            .is_empty()
    );
}

#[test]
fn writer_stats_count_commits_events_and_skip_idempotent_retries() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let events: Vec<NewEvent> = (0..10)
        .map(|n| NewEvent::new("a", custom("n", serde_json::json!(n))))
        .collect();
    ledger.append_all(&events).expect("append_all");
    let event = custom("once", serde_json::json!(1));
    ledger.append_idempotent("k", "a", &event).expect("first");
    ledger.append_idempotent("k", "a", &event).expect("retry");
    let stats = ledger.writer_stats();
    assert_eq!(stats.commits, 2, "the retry needs no commit");
    assert_eq!(stats.events, 11);
    assert_eq!(stats.requests, 2);
    assert!((stats.mean_batch_events() - 5.5).abs() < 1e-9);
    assert!(stats.commit_micros_max > 0 && stats.commit_micros_total >= stats.commit_micros_max);
}
