//! Guards opening: one writing process per file with a clear error for the second, read-only
//! handles beside a writer, refusal of unknown formats, and 0600 files.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use fleetlog_ledger::{Error, Ledger};
use fleetlog_suite::{TempLedger, append_numbered, custom};

use crate::raw;

#[test]
fn a_second_writing_process_is_told_who_holds_the_file() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    ledger
        .append("a", &custom("x", serde_json::json!(1)))
        .expect("append");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetlog-test-agent"))
        .args(["open", temp.path().to_str().expect("utf-8 path")])
        .output()
        .expect("the test agent runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("already open for writing by another process"),
        "{said}"
    );
    assert!(
        said.contains(&format!("pid {}", std::process::id())),
        "{said}"
    );
    // The first writer is unaffected.
    ledger
        .append("a", &custom("x", serde_json::json!(2)))
        .expect("append after");
}

#[test]
fn a_second_writable_handle_in_the_same_process_is_refused() {
    let temp = TempLedger::new();
    let _ledger = temp.create();
    let error = Ledger::open(temp.path())
        .err()
        .expect("second open refused");
    assert!(matches!(error, Error::AlreadyOpen { .. }), "{error}");
}

#[test]
fn a_read_only_handle_reads_beside_a_live_writer() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    append_numbered(&ledger, "a", 0..10);
    let reader = Ledger::open_read_only(temp.path()).expect("read-only beside the writer");
    assert_eq!(reader.head().expect("head").seq, 10);
    assert!(
        reader
            .verify(Default::default())
            .expect("verify")
            .is_intact()
    );
    assert!(matches!(
        reader.append("a", &custom("x", serde_json::json!(0))),
        Err(Error::ReadOnly)
    ));
    ledger
        .append("a", &custom("n", serde_json::json!(10)))
        .expect("append after");
    assert_eq!(
        reader.head().expect("head").seq,
        11,
        "read-only handles follow the writer's commits"
    );
}

#[test]
fn reopening_continues_the_chain() {
    let temp = TempLedger::new();
    let before = {
        let ledger = temp.create();
        ledger
            .append("a", &custom("n", serde_json::json!(1)))
            .expect("append")
    };
    let ledger = temp.open();
    let after = ledger
        .append("a", &custom("n", serde_json::json!(2)))
        .expect("append");
    assert_eq!(after.seq, before.seq + 1);
    assert!(after.ts >= before.ts);
    assert_eq!(
        ledger.reader().get(2).expect("get").expect("present").prev,
        before.hash
    );
}

#[test]
fn an_unknown_file_format_version_is_refused_and_nothing_is_written() {
    let temp = TempLedger::new();
    drop(temp.create());
    raw::write_meta(temp.path(), "format_version", &99u32.to_le_bytes());
    raw::write_meta(temp.path(), "writer_pid", &0u32.to_le_bytes());
    let error = Ledger::open(temp.path()).err().expect("refused");
    assert!(
        matches!(
            error,
            Error::UnsupportedFormat {
                found: 99,
                supported: 1
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("matching fleetlog release"));
    // Refused before the open recorded itself as the writer.
    assert_eq!(
        raw::read_meta(temp.path(), "writer_pid"),
        0u32.to_le_bytes()
    );
}

#[test]
fn an_unknown_record_version_is_named_when_read() {
    let temp = TempLedger::new();
    {
        let ledger = temp.create();
        append_numbered(&ledger, "a", 1..2);
        append_numbered(&ledger, "a", 2..3);
    }
    // A record from a future format: version byte 2, hashed correctly.
    let mut record = raw::read_record(temp.path(), 1);
    record[64] = 2;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&record[..32]);
    hasher.update(&record[64..]);
    record[32..64].copy_from_slice(hasher.finalize().as_bytes());
    raw::write_record(temp.path(), 1, &record);
    let ledger = Ledger::open_for_audit(temp.path()).expect("audit open");
    let error = ledger.reader().get(1).unwrap_err();
    assert!(
        error.to_string().contains("format version 2 is unknown"),
        "{error}"
    );
    let problem = ledger
        .verify(Default::default())
        .expect("verify")
        .problem
        .expect("found");
    assert_eq!(problem.seq, 1);
}

#[test]
fn files_that_are_not_ledgers_or_missing_get_clear_errors() {
    let temp = TempLedger::new();
    assert!(matches!(
        Ledger::open(temp.path()),
        Err(Error::NotFound { .. })
    ));
    std::fs::write(temp.path(), b"this is not a database").expect("write");
    let error = Ledger::open(temp.path()).err().expect("refused");
    assert!(!error.to_string().is_empty());
    assert!(matches!(
        Ledger::create(temp.path()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn a_new_ledger_file_is_private_to_its_owner() {
    let temp = TempLedger::new();
    drop(temp.create());
    let mode = std::fs::metadata(temp.path())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn of_creators_racing_for_one_path_exactly_one_wins_and_nobody_sees_a_half_made_file() {
    for _ in 0..5 {
        let temp = TempLedger::new();
        let barrier = std::sync::Barrier::new(4);
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        Ledger::create(temp.path()).map(drop)
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().expect("no panic"))
                .collect()
        });
        let won = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|result| matches!(result, Ok(()) | Err(Error::AlreadyExists { .. }))),
            "{results:?}"
        );
        // What is in place is a whole ledger, and no temporary file is left beside it.
        let reopened = Ledger::open(temp.path()).expect("a whole ledger");
        assert_eq!(reopened.head().expect("head").seq, 0);
        let dir = temp.path().parent().expect("dir");
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().contains(".creating-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
