//! Ledger benchmarks: durable appends by events per commit, 32 concurrent appenders through group
//! commit, replay (read + decode + re-hash) and parallel verify, each beside raw redb doing the
//! same I/O so the ledger's overhead reads as a ratio. Also redb's two-phase commit versus its
//! default 1PC+checksum, which decides what SingleWriter mode costs.
//!
//! `cargo bench --bench ledger`; under `cargo test` each runs once on small fixtures.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetlog_ledger::{Ledger, NewEvent, RecordView, VerifyOptions, encode_entry};
use fleetlog_suite::{TempLedger, fleet_event};
use redb::{ConcurrencyMode, Database, Durability, TableDefinition};

const RAW_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Real runs (`cargo bench`) use full-size fixtures; `cargo test` only checks the benches work.
fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn events(count: u64) -> Vec<NewEvent> {
    (0..count)
        .map(|n| {
            let (actor, event) = fleet_event(n);
            NewEvent::new(actor, event)
        })
        .collect()
}

/// The stored bytes a ledger would write for these events, for the raw redb baseline.
fn stored_bytes(events: &[NewEvent]) -> Vec<Vec<u8>> {
    let temp = TempLedger::new();
    let ledger = temp.create();
    ledger.append_all(events).expect("append");
    let mut bytes = Vec::new();
    ledger
        .reader()
        .scan_raw(1..=events.len() as u64, |_, value| {
            bytes.push(value.to_vec());
            Ok(ControlFlow::Continue(()))
        })
        .expect("scan");
    bytes
}

fn raw_db(temp: &TempLedger, mode: ConcurrencyMode) -> Database {
    Database::builder()
        .set_concurrency_mode(mode)
        .create(temp.path())
        .expect("raw redb")
}

fn raw_append(db: &Database, next_seq: &mut u64, values: &[Vec<u8>], two_phase: bool) {
    let mut txn = db.begin_write().expect("txn");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    txn.set_two_phase_commit(two_phase);
    {
        let mut table = txn.open_table(RAW_EVENTS).expect("table");
        for value in values {
            *next_seq += 1;
            table.insert(*next_seq, value.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn append_per_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_per_commit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for per_commit in [1u64, 10, 100, 1000] {
        let batch = events(per_commit);
        let values = stored_bytes(&batch);
        group.throughput(Throughput::Elements(per_commit));
        group.bench_with_input(
            BenchmarkId::new("ledger", per_commit),
            &batch,
            |b, batch| {
                let temp = TempLedger::new();
                let ledger = temp.create();
                b.iter(|| ledger.append_all(batch).expect("append"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("raw_redb", per_commit),
            &values,
            |b, values| {
                let temp = TempLedger::new();
                let db = raw_db(&temp, ConcurrencyMode::SingleWriter);
                let mut seq = 0;
                b.iter(|| raw_append(&db, &mut seq, values, true));
            },
        );
    }
    group.finish();
}

fn commit_protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_protocol");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let values = stored_bytes(&events(1));
    group.throughput(Throughput::Elements(1));
    for (name, mode, two_phase) in [
        (
            "exclusive_1pc_checksum",
            ConcurrencyMode::ExclusiveWriter,
            false,
        ),
        ("exclusive_2pc", ConcurrencyMode::ExclusiveWriter, true),
        ("single_writer_2pc", ConcurrencyMode::SingleWriter, true),
    ] {
        group.bench_function(name, |b| {
            let temp = TempLedger::new();
            let db = raw_db(&temp, mode);
            let mut seq = 0;
            b.iter(|| raw_append(&db, &mut seq, &values, two_phase));
        });
    }
    group.finish();
}

/// 32 threads each appending one event at a time and waiting for it: group commit at work.
fn concurrent_appenders(c: &mut Criterion) {
    const THREADS: u64 = 32;
    let per_thread: u64 = if benchmarking() { 500 } else { 5 };
    let mut group = c.benchmark_group("concurrent_appenders");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(THREADS * per_thread));
    let prepared: Vec<NewEvent> = events(THREADS * per_thread);
    // Shared (each batch a two-phase redb commit), and holding the file exclusively (each
    // batch acknowledged from the write-ahead log).
    for (name, exclusive) in [
        ("32_threads_sync", false),
        ("32_threads_sync_exclusive", true),
    ] {
        group.bench_function(name, |b| {
            let temp = TempLedger::new();
            let ledger = match exclusive {
                true => Ledger::open_or_create_exclusive(temp.path()).expect("open exclusively"),
                false => temp.create(),
            };
            b.iter_custom(|iterations| {
                time_threads(iterations, THREADS, |thread| {
                    for n in 0..per_thread {
                        let new = &prepared[(thread * per_thread + n) as usize];
                        ledger.append(&new.actor, &new.event).expect("append");
                    }
                })
            });
        });
    }
    // Each thread keeps up to 64 appends in flight: what a daemon serving many clients does.
    group.bench_function("32_threads_pipelined", |b| {
        let temp = TempLedger::new();
        let ledger = temp.create();
        b.iter_custom(|iterations| {
            time_threads(iterations, THREADS, |thread| {
                let mut in_flight = std::collections::VecDeque::new();
                for n in 0..per_thread {
                    let new = &prepared[(thread * per_thread + n) as usize];
                    let entry = encode_entry(&new.actor, &new.event).expect("valid");
                    in_flight.push_back(ledger.submit(vec![entry], None).expect("queued"));
                    if in_flight.len() == 64 {
                        let oldest = in_flight.pop_front().expect("64 in flight");
                        oldest.wait().expect("durable");
                    }
                }
                for pending in in_flight {
                    pending.wait().expect("durable");
                }
            })
        });
    });
    group.finish();
}

/// Runs `work(thread)` on `threads` threads, `iterations` times over; returns the wall time.
fn time_threads(iterations: u64, threads: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let work = &work;
                scope.spawn(move || work(thread));
            }
        });
    }
    start.elapsed()
}

/// A ledger of `count` fleet events, appended 1,000 per commit.
fn filled_ledger(count: u64) -> (TempLedger, Ledger) {
    let temp = TempLedger::new();
    let ledger = temp.create();
    let all = events(1000);
    let mut appended = 0;
    while appended < count {
        let take = (count - appended).min(1000) as usize;
        ledger.append_all(&all[..take]).expect("append");
        appended += take as u64;
    }
    (temp, ledger)
}

fn replay_and_verify(c: &mut Criterion) {
    let count: u64 = if benchmarking() { 1_000_000 } else { 2_000 };
    let (_temp, ledger) = filled_ledger(count);
    let mut group = c.benchmark_group("read_path");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(count));
    group.bench_function("replay_decode_rehash", |b| {
        b.iter(|| {
            let mut decoded = 0u64;
            ledger
                .reader()
                .scan_raw(1..=count, |_, bytes| {
                    let view = RecordView::new(bytes).expect("record");
                    assert_eq!(view.computed_hash(), view.stored_hash());
                    let record = view.decode().expect("decodes");
                    decoded += record.seq & 1;
                    Ok(ControlFlow::Continue(()))
                })
                .expect("scan");
            decoded
        });
    });
    group.bench_function("raw_redb_scan", |b| {
        b.iter(|| {
            let mut bytes_read = 0usize;
            ledger
                .reader()
                .scan_raw(1..=count, |_, bytes| {
                    bytes_read += bytes.len();
                    Ok(ControlFlow::Continue(()))
                })
                .expect("scan");
            bytes_read
        });
    });
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new("verify_threads", threads), |b| {
            b.iter(|| {
                let report = ledger
                    .verify(VerifyOptions {
                        threads,
                        ..Default::default()
                    })
                    .expect("verify");
                assert!(report.is_intact());
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    append_per_commit,
    commit_protocol,
    concurrent_appenders,
    replay_and_verify
);
criterion_main!(benches);
