//! Guards tamper evidence: a flipped byte anywhere in a stored record is named by `verify` at
//! its exact seq, and a truncated tail is caught by the head or by a trusted checkpoint.

use fleetlog_ledger::{BreakKind, Checkpoint, Error, Ledger, VerifyOptions};
use fleetlog_suite::{TempLedger, fleet_event};

use crate::raw;

fn ledger_with(count: u64) -> (TempLedger, Vec<Checkpoint>) {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let mut checkpoints = Vec::new();
    for n in 0..count {
        let (actor, event) = fleet_event(n);
        let receipt = ledger.append(&actor, &event).expect("append");
        checkpoints.push(Checkpoint {
            seq: receipt.seq,
            hash: receipt.hash,
        });
    }
    (temp, checkpoints)
}

fn verify(
    temp: &TempLedger,
    from: Option<Checkpoint>,
    threads: usize,
) -> fleetlog_ledger::VerifyReport {
    Ledger::open_for_audit(temp.path())
        .expect("audit open")
        .verify(VerifyOptions {
            from,
            threads,
            progress: None,
        })
        .expect("verify runs")
}

#[test]
fn a_flipped_byte_anywhere_in_a_record_is_named_at_its_seq() {
    let (temp, _) = ledger_with(300);
    let original = raw::read_record(temp.path(), 137);
    // Every region of the record: prev, hash, version, seq/ts, actor, event body.
    for offset in [
        0,
        31,
        32,
        63,
        64,
        65,
        70,
        original.len() / 2,
        original.len() - 1,
    ] {
        let mut tampered = original.clone();
        tampered[offset] ^= 0x40;
        raw::write_record(temp.path(), 137, &tampered);
        for threads in [1, 2, 3] {
            let report = verify(&temp, None, threads);
            let problem = report.problem.expect("the flip is found");
            assert_eq!(
                problem.seq, 137,
                "offset {offset}, {threads} threads: {problem}"
            );
            assert_eq!(report.verified_head.seq, 136);
        }
    }
    raw::write_record(temp.path(), 137, &original);
    assert!(verify(&temp, None, 2).is_intact());
}

#[test]
fn a_flipped_byte_in_the_newest_records_stops_the_ledger_from_opening() {
    let (temp, _) = ledger_with(100);
    let mut record = raw::read_record(temp.path(), 99);
    let last = record.len() - 1;
    record[last] ^= 1;
    raw::write_record(temp.path(), 99, &record);
    let error = Ledger::open(temp.path()).err().expect("open refuses");
    assert!(matches!(error, Error::OpenCheckFailed { .. }), "{error}");
    assert!(error.to_string().contains("record 99"), "{error}");
    let report = verify(&temp, None, 2);
    assert_eq!(report.problem.expect("found").seq, 99);
}

#[test]
fn a_truncated_tail_with_a_rewritten_head_is_caught_by_a_trusted_checkpoint() {
    let (temp, checkpoints) = ledger_with(100);
    let kept = checkpoints[89];
    raw::remove_records_from(temp.path(), 91);
    let ts = Ledger::open_for_audit(temp.path())
        .expect("audit open")
        .reader()
        .get(90)
        .expect("get")
        .expect("kept")
        .ts;
    raw::write_meta(
        temp.path(),
        "head",
        &raw::head_value(kept.seq, &kept.hash.0, ts.as_micros()),
    );

    // Without a checkpoint the shortened chain is self-consistent...
    let report = verify(&temp, None, 2);
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.verified_head.seq, 90);
    // ...but the head a user kept earlier proves records were removed.
    let report = verify(&temp, Some(checkpoints[99]), 2);
    let problem = report.problem.expect("truncation found");
    assert_eq!(problem.kind, BreakKind::Truncated { newest_seq: 90 });
    assert!(problem.to_string().contains("truncated"));
    // A checkpoint inside the surviving chain is checked on the way, from genesis.
    let report = verify(&temp, Some(checkpoints[49]), 2);
    assert!(report.is_intact());
    assert_eq!(report.checked, 90);
}

#[test]
fn a_truncated_tail_without_a_rewritten_head_is_caught_on_open_and_by_verify() {
    let (temp, _) = ledger_with(50);
    raw::remove_records_from(temp.path(), 46);
    let error = Ledger::open(temp.path()).err().expect("open refuses");
    assert!(
        error.to_string().contains("stored head is seq 50"),
        "{error}"
    );
    let problem = verify(&temp, None, 2).problem.expect("found");
    assert!(
        matches!(problem.kind, BreakKind::HeadMismatch { .. }),
        "{problem}"
    );
}

#[test]
fn a_rewritten_history_is_caught_by_a_trusted_checkpoint() {
    let (temp, checkpoints) = ledger_with(20);
    let forged = Checkpoint {
        seq: 10,
        hash: checkpoints[3].hash,
    };
    let problem = verify(&temp, Some(forged), 2).problem.expect("mismatch");
    assert_eq!(problem.seq, 10);
    assert!(matches!(problem.kind, BreakKind::CheckpointMismatch { .. }));
}

#[test]
fn a_missing_record_in_the_middle_is_reported_as_a_gap() {
    let (temp, _) = ledger_with(200);
    let db_path = temp.path();
    let kept: Vec<(u64, Vec<u8>)> = (101..=200)
        .map(|seq| (seq, raw::read_record(db_path, seq)))
        .collect();
    raw::remove_records_from(db_path, 100);
    for (seq, bytes) in kept.iter().skip(1) {
        raw::write_record(db_path, *seq, bytes);
    }
    // Records 100 and 101 are gone; 102..=200 are back.
    for threads in [1, 2, 4] {
        let problem = verify(&temp, None, threads).problem.expect("gap found");
        assert_eq!(problem.seq, 100, "{threads} threads: {problem}");
    }
}

#[test]
fn a_trusted_checkpoint_does_not_hide_an_alteration_before_it() {
    let (temp, checkpoints) = ledger_with(301);
    let original = raw::read_record(temp.path(), 150);
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    raw::write_record(temp.path(), 150, &tampered);
    let anchor = checkpoints[200]; // seq 201, taken before the alteration
    assert_eq!(anchor.seq, 201);
    for threads in [1, 2, 4] {
        let report = verify(&temp, Some(anchor), threads);
        let problem = report
            .problem
            .expect("the alteration before the anchor is found");
        assert_eq!(problem.seq, 150, "{threads} threads: {problem}");
    }
    raw::write_record(temp.path(), 150, &original);
    let report = verify(&temp, Some(anchor), 2);
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.checked, 301, "verification starts from genesis");
    assert_eq!(report.anchor, anchor);
}

fn open_coordinator(
    temp: &TempLedger,
    skip_verify: bool,
) -> Result<fleetlog_projections::Coordinator, fleetlog_projections::Error> {
    fleetlog_projections::Coordinator::open(
        temp.path(),
        fleetlog_projections::CoordinatorOptions {
            skip_verify,
            ..Default::default()
        },
    )
}

#[test]
fn a_writer_refuses_a_ledger_with_an_altered_old_record_or_a_gap() {
    // An altered record far from the tail (the tail check covers the newest 64 only).
    let (temp, _) = ledger_with(300);
    let original = raw::read_record(temp.path(), 60);
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x08;
    raw::write_record(temp.path(), 60, &tampered);
    match open_coordinator(&temp, false) {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("60"), "names the seq: {text}");
            assert!(text.contains("--skip-verify"), "names the way out: {text}");
        }
        Ok(_) => panic!("a broken ledger was opened for writing"),
    }
    assert!(
        open_coordinator(&temp, true).is_ok(),
        "--skip-verify opens it as it is"
    );

    // A gap: records 100..=151 gone, the rest back.
    let (temp, _) = ledger_with(300);
    let kept: Vec<(u64, Vec<u8>)> = (152..=300)
        .map(|seq| (seq, raw::read_record(temp.path(), seq)))
        .collect();
    raw::remove_records_from(temp.path(), 100);
    for (seq, bytes) in &kept {
        raw::write_record(temp.path(), *seq, bytes);
    }
    match open_coordinator(&temp, false) {
        Err(error) => assert!(error.to_string().contains("100"), "{error}"),
        Ok(_) => panic!("a ledger with a gap was opened for writing"),
    }
}

#[test]
fn a_flipped_page_type_byte_is_an_error_not_a_panic() {
    let (temp, _) = ledger_with(400);
    let pristine = std::fs::read(temp.path()).expect("the file");
    let pages = pristine.len() / 4096;
    let mut refused = 0;
    for page in 1..pages {
        let mut damaged = pristine.clone();
        damaged[page * 4096] ^= 0x03;
        std::fs::write(temp.path(), &damaged).expect("write the damage");
        // Either a report, or an error naming the damage: a panic escaping fails the test.
        let outcome = Ledger::open_for_audit(temp.path()).and_then(|ledger| {
            ledger.verify(VerifyOptions {
                from: None,
                threads: 2,
                progress: None,
            })
        });
        match outcome {
            Ok(report) if report.is_intact() => {}
            Ok(_) | Err(Error::Corrupted { .. }) => refused += 1,
            Err(_) => refused += 1,
        }
    }
    std::fs::write(temp.path(), &pristine).expect("restore");
    assert!(verify(&temp, None, 2).is_intact());
    assert!(refused > 0, "no flip of {pages} pages was noticed");
}
