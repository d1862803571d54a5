//! Guards backward compatibility: the golden ledger written by format version 1 (one event of
//! every variant) must open, verify, decode to the same events and export to the same text with
//! every later build. Regenerate only with a new format version:
//! `cargo run --bin fleetlog-test-agent -- write-golden tests/golden/ledger-v1.redb`.

use std::path::Path;

use fleetlog_ledger::Ledger;
use fleetlog_suite::{TempLedger, every_variant, variants_added_after_v1};

fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn the_v1_golden_ledger_verifies_and_decodes_to_every_variant() {
    // Work on a copy: opening must never be able to change the committed file.
    let temp = TempLedger::new();
    std::fs::copy(golden("ledger-v1.redb"), temp.path()).expect("copy golden ledger");
    let ledger = Ledger::open_read_only(temp.path()).expect("golden ledger opens");
    let report = ledger.verify(Default::default()).expect("verify");
    assert!(report.is_intact(), "{:?}", report.problem);

    let expected = every_variant();
    assert_eq!(report.checked, expected.len() as u64);
    let records = ledger
        .reader()
        .range(1..=expected.len() as u64)
        .expect("read all");
    for (record, (actor, event)) in records.iter().zip(&expected) {
        assert_eq!(&record.actor, actor, "seq {}", record.seq);
        assert_eq!(&record.event, event, "seq {}", record.seq);
    }

    let mut export = Vec::new();
    ledger.export_jsonl(&mut export, &|_| {}).expect("export");
    let golden_export =
        std::fs::read_to_string(golden("ledger-v1.redb.jsonl")).expect("golden export");
    assert_eq!(String::from_utf8(export).expect("utf-8"), golden_export);
}

#[test]
fn the_v1_golden_export_imports_to_the_same_head() {
    let temp = TempLedger::new();
    let text = std::fs::read(golden("ledger-v1.redb.jsonl")).expect("golden export");
    let head = Ledger::import_jsonl(temp.path(), text.as_slice(), &|_| {}).expect("import");
    std::fs::copy(golden("ledger-v1.redb"), temp.sibling("copy.redb")).expect("copy");
    let original = Ledger::open_read_only(temp.sibling("copy.redb")).expect("open");
    assert_eq!(head, original.head().expect("head").checkpoint());
}

#[test]
fn a_v1_ledger_accepts_the_variants_added_since_and_still_verifies() {
    let temp = TempLedger::new();
    std::fs::copy(golden("ledger-v1.redb"), temp.path()).expect("copy golden ledger");
    let ledger = Ledger::open(temp.path()).expect("golden ledger opens for writing");
    let added = variants_added_after_v1();
    for (actor, event) in &added {
        ledger.append(actor, event).expect("append a new variant");
    }
    let report = ledger.verify(Default::default()).expect("verify");
    assert!(report.is_intact(), "{:?}", report.problem);
    let first = every_variant().len() as u64 + 1;
    let records = ledger
        .reader()
        .range(first..=first + added.len() as u64 - 1)
        .expect("read the new records");
    let decoded: Vec<(String, fleetlog_ledger::Event)> = records
        .into_iter()
        .map(|record| (record.actor, record.event))
        .collect();
    assert_eq!(decoded, added);
}
