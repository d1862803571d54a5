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

/// A command key is kept for `COMMAND_KEY_WINDOW_MS` after first use, then forgotten: a retry
/// inside the window gets the first answer, after it the same key is a new command — also with
/// the file held exclusively (the forgetting is in the write-ahead log's redo list) and across
/// a reopen.
#[test]
fn a_command_key_is_forgotten_after_its_window_and_stays_forgotten_after_a_reopen() {
    use fleetlog_ledger::limits::COMMAND_KEY_WINDOW_MS;
    use fleetlog_projections::{Coordinator, CoordinatorOptions, Outcome};
    use fleetlog_suite::{TEST_EPOCH, heartbeat, register};

    for exclusive in [false, true] {
        let temp = TempLedger::new();
        let clock = fleetlog_ledger::ManualClock::starting_at(TEST_EPOCH);
        let open = || {
            Coordinator::open(
                temp.path(),
                CoordinatorOptions {
                    snapshot_every_events: 0,
                    clock: std::sync::Arc::new(clock.clone()),
                    skip_verify: false,
                    exclusive,
                },
            )
            .expect("opens")
        };
        let keyed = |coordinator: &Coordinator| match coordinator
            .submit_keyed(heartbeat("a", 60_000), Some("beat-1".to_owned()))
            .expect("queued")
            .wait()
            .expect("answered")
        {
            Outcome::Appended { seq } => seq,
            other => panic!("exclusive={exclusive}: {other:?}"),
        };
        let coordinator = open();
        coordinator.execute(register("a")).expect("register");
        let first = keyed(&coordinator);
        clock.advance_ms(COMMAND_KEY_WINDOW_MS - 1);
        assert_eq!(
            keyed(&coordinator),
            first,
            "exclusive={exclusive}: inside the window"
        );
        clock.advance_ms(2);
        let second = keyed(&coordinator);
        assert!(
            second > first,
            "exclusive={exclusive}: past the window the key is free again ({second} vs {first})"
        );
        drop(coordinator);
        let coordinator = open();
        assert_eq!(
            keyed(&coordinator),
            second,
            "exclusive={exclusive}: after a reopen the key names its second use"
        );
    }
}
