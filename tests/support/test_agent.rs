//! A child process for tests that need a second process: `append-loop PATH THREADS` appends
//! until killed, each event under an idempotency key (`fleetlog_suite::crash_probe`), and prints
//! `seq hash thread n` for every acknowledged event (`append-loop-exclusive`:
//! the same with the file held exclusively, acknowledged from the write-ahead log); `open PATH` tries to open
//! the ledger for writing and prints the outcome; `write-golden PATH` writes the golden ledger
//! for this format version (tests/golden/), one event of every variant.

use std::io::Write;

use fleetlog_ledger::Ledger;
use fleetlog_suite::{crash_probe, every_variant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["append-loop", path, threads] => append_loop(
            Ledger::open_or_create(path).expect("the test ledger opens"),
            threads.parse().expect("THREADS"),
        ),
        ["append-loop-exclusive", path, threads] => append_loop(
            Ledger::open_or_create_exclusive(path).expect("the test ledger opens"),
            threads.parse().expect("THREADS"),
        ),
        ["write-golden", path] => write_golden(path),
        ["open", path] => match Ledger::open(path) {
            Ok(_) => println!("opened"),
            Err(error) => println!("error: {error}"),
        },
        _ => {
            eprintln!(
                "usage: fleetlog-test-agent append-loop[-exclusive] PATH THREADS | open PATH | write-golden PATH"
            );
            std::process::exit(2);
        }
    }
}

fn append_loop(ledger: Ledger, threads: usize) {
    println!("ready");
    std::io::stdout().flush().expect("stdout is a pipe");
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let ledger = &ledger;
            scope.spawn(move || {
                for n in 0u64.. {
                    let (key, actor, event) = crash_probe(std::process::id(), thread, n);
                    let receipt = ledger
                        .append_idempotent(&key, &actor, &event)
                        .expect("append succeeds until the process is killed");
                    // One write per line, so a kill never interleaves two acknowledgements.
                    let line = format!("{} {} {thread} {n}\n", receipt.seq, receipt.hash);
                    std::io::stdout()
                        .lock()
                        .write_all(line.as_bytes())
                        .expect("stdout is a pipe");
                }
            });
        }
    });
}

fn write_golden(path: &str) {
    let ledger = Ledger::create(path).expect("the golden path is new");
    for (actor, event) in every_variant() {
        ledger
            .append(&actor, &event)
            .expect("golden events are valid");
    }
    let head = ledger.head().expect("head");
    drop(ledger);
    let mut export = Vec::new();
    Ledger::open_read_only(path)
        .expect("reopen")
        .export_jsonl(&mut export, &|_| {})
        .expect("export");
    std::fs::write(format!("{path}.jsonl"), export).expect("write the export beside it");
    println!("{}", head.checkpoint());
}
