//! Guards replay and time travel: folding to a seq or a time gives exactly the state built from
//! the records up to that point, and a full replay equals the live fold.

use fleetlog_ledger::Record;
use fleetlog_projections::{Activity, AsOf, Projection, replay};
use fleetlog_suite::{TempLedger, fleet_event};

#[test]
fn replay_as_of_a_seq_or_time_equals_folding_that_prefix() {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let mut live = Activity::default();
    let mut records: Vec<Record> = Vec::new();
    for n in 0..300 {
        let (actor, event) = fleet_event(n);
        let receipt = ledger.append(&actor, &event).expect("append");
        let record = ledger
            .reader()
            .get(receipt.seq)
            .expect("get")
            .expect("present");
        live.apply(&record);
        records.push(record);
    }
    let mut full = Activity::default();
    assert_eq!(
        replay(ledger.reader(), &mut full, AsOf::Head, &|_| {}).expect("replay"),
        300
    );
    assert_eq!(full, live);

    for cut in [0usize, 1, 17, 150, 299, 300] {
        let mut expected = Activity::default();
        records[..cut]
            .iter()
            .for_each(|record| expected.apply(record));
        let mut by_seq = Activity::default();
        replay(ledger.reader(), &mut by_seq, AsOf::Seq(cut as u64), &|_| {}).expect("replay");
        assert_eq!(by_seq, expected, "as of seq {cut}");
        if cut > 0 {
            // Every record stamped at or before the cut record's time (later ones in its batch too).
            let ts = records[cut - 1].ts;
            let mut expected = Activity::default();
            records
                .iter()
                .filter(|r| r.ts <= ts)
                .for_each(|record| expected.apply(record));
            let mut by_time = Activity::default();
            replay(ledger.reader(), &mut by_time, AsOf::Time(ts), &|_| {}).expect("replay");
            assert_eq!(by_time, expected, "as of {ts}");
        }
    }
    // Past the head is an error, not the head in disguise.
    let mut beyond = Activity::default();
    let error = replay(ledger.reader(), &mut beyond, AsOf::Seq(10_000), &|_| {})
        .expect_err("past the head");
    assert!(
        error.to_string().contains("past the newest record (300)"),
        "{error}"
    );
}

#[test]
fn as_of_parses_head_seqs_and_times_and_rejects_the_rest() {
    assert_eq!("head".parse::<AsOf>().expect("head"), AsOf::Head);
    assert_eq!("42".parse::<AsOf>().expect("seq"), AsOf::Seq(42));
    assert!(matches!(
        "2026-11-23T10:00:00Z".parse::<AsOf>(),
        Ok(AsOf::Time(_))
    ));
    let error = "yesterday".parse::<AsOf>().unwrap_err();
    assert!(error.to_string().contains("RFC 3339"), "{error}");
}
