//! Guards idempotent appends: a retry with the same key and content returns the original seq and
//! hash and appends nothing; the same key with other content is a conflict.

use fleetlog_ledger::Error;
use fleetlog_suite::{TempLedger, custom};

#[test]
fn a_retry_with_the_same_key_and_content_returns_the_original_receipt() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let event = custom("deploy", serde_json::json!({"version": 7}));
    let first = ledger
        .append_idempotent("req-1", "ci", &event)
        .expect("first");
    ledger
        .append("other", &custom("noise", serde_json::json!(1)))
        .expect("append");
    let retry = ledger
        .append_idempotent("req-1", "ci", &event)
        .expect("retry");
    assert_eq!(retry, first);
    assert_eq!(ledger.head().expect("head").seq, 2);
}

#[test]
fn the_same_key_with_different_content_is_a_conflict_that_appends_nothing() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let first = ledger
        .append_idempotent(
            "req-1",
            "ci",
            &custom("deploy", serde_json::json!({"version": 7})),
        )
        .expect("first");
    let error = ledger
        .append_idempotent(
            "req-1",
            "ci",
            &custom("deploy", serde_json::json!({"version": 8})),
        )
        .unwrap_err();
    match &error {
        Error::IdempotencyConflict { key, seq } => {
            assert_eq!(key, "req-1");
            assert_eq!(*seq, first.seq);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(error.to_string().contains("fresh key"));
    let other_actor = ledger.append_idempotent(
        "req-1",
        "someone-else",
        &custom("deploy", serde_json::json!({"version": 7})),
    );
    assert!(matches!(
        other_actor,
        Err(Error::IdempotencyConflict { .. })
    ));
    assert_eq!(ledger.head().expect("head").seq, 1);
}

#[test]
fn keys_survive_reopen_and_concurrent_retries_append_once() {
    let temp = TempLedger::new();
    let event = custom("charge", serde_json::json!({"cents": 500}));
    let first = {
        let ledger = temp.create();
        ledger
            .append_idempotent("pay-42", "billing", &event)
            .expect("first")
    };
    let ledger = temp.open();
    assert_eq!(
        ledger
            .append_idempotent("pay-42", "billing", &event)
            .expect("after reopen"),
        first
    );

    // Many retries racing into the same batch still append exactly once.
    let receipts: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    ledger
                        .append_idempotent("pay-43", "billing", &event)
                        .expect("append")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    assert!(receipts.iter().all(|receipt| *receipt == receipts[0]));
    assert_eq!(ledger.head().expect("head").seq, 2);
}

#[test]
fn empty_and_oversized_keys_are_refused() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let event = custom("x", serde_json::json!(1));
    for key in [
        String::new(),
        "k".repeat(fleetlog_ledger::limits::IDEMPOTENCY_KEY_BYTES_MAX + 1),
    ] {
        let error = ledger.append_idempotent(&key, "a", &event).unwrap_err();
        assert!(
            matches!(error, Error::InvalidIdempotencyKey { .. }),
            "{error}"
        );
    }
    assert_eq!(ledger.head().expect("head").seq, 0);
}
