//! Guards JSON Lines export and import: a round trip reproduces the same chain byte for byte,
//! and a tampered, reordered or truncated export is refused with its line number, writing
//! nothing.

use fleetlog_ledger::{Error, Ledger};
use fleetlog_suite::{TempLedger, fleet_event};

fn exported(count: u64) -> (TempLedger, String) {
    let temp = TempLedger::new();
    let ledger = temp.create();
    for n in 0..count {
        let (actor, event) = fleet_event(n);
        ledger.append(&actor, &event).expect("append");
    }
    let mut out = Vec::new();
    ledger.export_jsonl(&mut out, &|_| {}).expect("export");
    (temp, String::from_utf8(out).expect("JSON is UTF-8"))
}

fn import(temp: &TempLedger, text: &str) -> Result<fleetlog_ledger::Checkpoint, Error> {
    Ledger::import_jsonl(temp.sibling("imported.redb"), text.as_bytes(), &|_| {})
}

#[test]
fn export_then_import_reproduces_the_chain_exactly() {
    let (temp, text) = exported(500);
    assert_eq!(
        text.lines().count(),
        501,
        "a header and one line per record"
    );
    let head = import(&temp, &text).expect("import");
    let original = temp.open();
    assert_eq!(head, original.head().expect("head").checkpoint());
    let imported = Ledger::open(temp.sibling("imported.redb")).expect("open imported");
    assert_eq!(imported.ledger_id(), original.ledger_id());
    assert!(
        imported
            .verify(Default::default())
            .expect("verify")
            .is_intact()
    );
    let mut again = Vec::new();
    imported
        .export_jsonl(&mut again, &|_| {})
        .expect("re-export");
    assert_eq!(String::from_utf8(again).expect("utf-8"), text);
    // The imported ledger is a working ledger: the chain continues.
    let receipt = imported.append("a", &fleet_event(0).1).expect("append");
    assert_eq!(receipt.seq, 501);
}

#[test]
fn a_tampered_line_is_refused_with_its_line_number_and_nothing_is_written() {
    let (temp, text) = exported(20);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 8 holds seq 7: change who did it.
    assert!(lines[7].contains("\"seq\":7"));
    lines[7] = lines[7].replacen("\"actor\":\"agent-6\"", "\"actor\":\"agent-9\"", 1);
    let error = import(&temp, &(lines.join("\n") + "\n")).unwrap_err();
    match &error {
        Error::Import { line, problem } => {
            assert_eq!(*line, 8);
            assert!(problem.contains("altered"), "{problem}");
        }
        other => panic!("expected an import error, got {other}"),
    }
    assert!(!temp.sibling("imported.redb").exists());
    assert!(!temp.sibling("imported.redb.importing").exists());
}

#[test]
fn reordered_and_truncated_exports_are_refused() {
    let (temp, text) = exported(20);
    let lines: Vec<&str> = text.lines().collect();
    let mut reordered = lines.clone();
    reordered.swap(4, 5);
    let error = import(&temp, &(reordered.join("\n") + "\n")).unwrap_err();
    assert!(
        matches!(&error, Error::Import { line: 5, problem } if problem.contains("out of order")),
        "{error}"
    );

    let truncated = lines[..lines.len() - 1].join("\n") + "\n";
    let error = import(&temp, &truncated).unwrap_err();
    assert!(
        matches!(&error, Error::Import { problem, .. } if problem.contains("truncated")),
        "{error}"
    );

    let error = import(&temp, "{\"not\":\"a header\"}\n").unwrap_err();
    assert!(matches!(&error, Error::Import { line: 1, .. }), "{error}");
    assert!(!temp.sibling("imported.redb").exists());
}

#[test]
fn import_refuses_to_overwrite_an_existing_file() {
    let (temp, text) = exported(3);
    std::fs::write(temp.sibling("imported.redb"), b"precious").expect("write");
    assert!(matches!(
        import(&temp, &text),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        std::fs::read(temp.sibling("imported.redb")).expect("read"),
        b"precious"
    );
}

#[test]
fn a_line_that_is_not_utf8_is_refused_with_its_line_number() {
    let (temp, text) = exported(20);
    let mut bytes = text.into_bytes();
    // Line 8 (the header is line 1): replace its first byte with one that is never UTF-8.
    let start = bytes
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(6)
        .map(|(at, _)| at + 1)
        .expect("eight lines");
    bytes[start] = 0xFF;
    let result = Ledger::import_jsonl(temp.sibling("imported.redb"), bytes.as_slice(), &|_| {});
    match result {
        Err(Error::Import { line, problem }) => {
            assert_eq!(line, 8, "{problem}");
            assert!(problem.contains("UTF-8"), "{problem}");
        }
        other => panic!("expected an import error naming line 8, got {other:?}"),
    }
    assert!(
        !temp.sibling("imported.redb").exists(),
        "nothing is written when a line is refused"
    );
}
