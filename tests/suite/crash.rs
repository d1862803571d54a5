//! Guards durability: a writer process killed with SIGKILL at a random moment loses no
//! acknowledged event, and the chain still verifies, round after round — both for a writer
//! sharing the file (each batch a durable redb commit) and for one holding it exclusively
//! (each batch acknowledged from the write-ahead log, redb's own commits lost with the process).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetlog_ledger::{ChainHash, Ledger};
use fleetlog_suite::{TempLedger, crash_probe};

const ROUNDS: u64 = 20;

/// xorshift: a reproducible "random" kill moment per round from a printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    sigkill_rounds("append-loop");
}

#[test]
fn sigkill_of_an_exclusive_writer_loses_no_event_acknowledged_from_its_write_ahead_log() {
    sigkill_rounds("append-loop-exclusive");
}

fn sigkill_rounds(mode: &str) {
    let temp = TempLedger::new();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut acknowledged: BTreeMap<u64, (ChainHash, u32, usize, u64)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetlog-test-agent"))
            .args([mode, temp.path().to_str().expect("utf-8 path"), "4"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test agent starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = lines.next().expect("child prints ready").expect("utf-8");
        assert_eq!(ready, "ready");
        // The kill lands at a random moment after the first acknowledgement (on a loaded
        // machine the first one can take longer than the shortest delay).
        let first = lines
            .next()
            .expect("a first acknowledgement")
            .expect("utf-8");
        let pid = child.id();
        let reader = std::thread::spawn(move || {
            // Every complete line is an acknowledged append; a line cut by the kill is not.
            std::iter::once(first)
                .chain(lines.map_while(Result::ok))
                .filter_map(|line| {
                    let mut fields = line.split(' ');
                    let seq = fields.next()?.parse::<u64>().ok()?;
                    let hash = ChainHash::from_hex(fields.next()?).ok()?;
                    let thread = fields.next()?.parse::<usize>().ok()?;
                    let n = fields.next()?.parse::<u64>().ok()?;
                    Some((seq, (hash, pid, thread, n)))
                })
                .collect::<Vec<_>>()
        });
        let delay_ms = 20 + next_random(&mut seed) % 300;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let acked = reader.join().expect("reader thread");
        assert!(
            !acked.is_empty(),
            "round {round}: the writer acknowledged nothing in {delay_ms} ms"
        );
        for (seq, hash) in acked {
            assert!(
                acknowledged.insert(seq, hash).is_none(),
                "seq {seq} acknowledged twice"
            );
        }

        // A killed writer leaves the file needing recovery: read-only opens say so (or, if
        // they open, see every acknowledged event), and the next writable open (a restarted
        // daemon) repairs it, re-applying what the write-ahead log holds.
        match Ledger::open_read_only(temp.path()) {
            Ok(ledger) => {
                let head = ledger.head().expect("head").seq;
                let newest = acknowledged.keys().next_back().copied().unwrap_or(0);
                assert!(
                    head >= newest,
                    "round {round}: a read-only open shows head {head}, but seq {newest} was acknowledged"
                );
            }
            Err(fleetlog_ledger::Error::NeedsRecovery { .. }) => {}
            Err(other) => panic!("round {round}: unexpected read-only error: {other}"),
        }
        let ledger = Ledger::open(temp.path()).expect("the ledger opens after a kill");
        for (&seq, &(hash, ..)) in &acknowledged {
            let record = ledger
                .reader()
                .get(seq)
                .expect("read")
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is lost"));
            assert_eq!(record.hash, hash, "round {round}: seq {seq} changed");
        }
        // The newest acknowledged appends' keys survived with them: retries append nothing.
        let head = ledger.head().expect("head");
        for (&seq, &(hash, pid, thread, n)) in acknowledged.iter().rev().take(8) {
            let (key, actor, event) = crash_probe(pid, thread, n);
            let receipt = ledger
                .append_idempotent(&key, &actor, &event)
                .expect("a retry after the crash");
            assert_eq!(
                (receipt.seq, receipt.hash),
                (seq, hash),
                "round {round}: the retry of {key} got another answer"
            );
        }
        assert_eq!(
            ledger.head().expect("head"),
            head,
            "round {round}: a retry appended"
        );
        let report = ledger.verify(Default::default()).expect("verify");
        assert!(report.is_intact(), "round {round}: {:?}", report.problem);
    }
}
