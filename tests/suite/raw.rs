//! Raw redb access to a closed ledger file, as an attacker or a bad disk would change it. Uses
//! only the layout documented in docs/format.md.

use std::path::Path;

use redb::{ConcurrencyMode, Database, ReadableDatabase, TableDefinition};

pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn open(path: &Path) -> Database {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .open(path)
        .expect("the closed ledger opens in raw redb")
}

pub fn read_record(path: &Path, seq: u64) -> Vec<u8> {
    let db = open(path);
    let txn = db.begin_read().expect("read txn");
    let table = txn.open_table(EVENTS).expect("events table");
    let value = table.get(seq).expect("get").expect("record exists");
    value.value().to_vec()
}

pub fn write_record(path: &Path, seq: u64, bytes: &[u8]) {
    let db = open(path);
    let txn = db.begin_write().expect("write txn");
    txn.open_table(EVENTS)
        .expect("events table")
        .insert(seq, bytes)
        .expect("insert");
    txn.commit().expect("commit");
}

pub fn remove_records_from(path: &Path, first: u64) {
    let db = open(path);
    let txn = db.begin_write().expect("write txn");
    {
        let mut table = txn.open_table(EVENTS).expect("events table");
        table.retain(|seq, _| seq < first).expect("retain");
    }
    txn.commit().expect("commit");
}

pub fn write_meta(path: &Path, key: &str, value: &[u8]) {
    let db = open(path);
    let txn = db.begin_write().expect("write txn");
    txn.open_table(META)
        .expect("meta table")
        .insert(key, value)
        .expect("insert");
    txn.commit().expect("commit");
}

/// The 48-byte `head` meta value: seq, hash, ts (docs/format.md).
pub fn head_value(seq: u64, hash: &[u8; 32], ts_micros: i64) -> Vec<u8> {
    let mut value = seq.to_le_bytes().to_vec();
    value.extend_from_slice(hash);
    value.extend_from_slice(&ts_micros.to_le_bytes());
    value
}

pub fn read_meta(path: &Path, key: &str) -> Vec<u8> {
    let db = open(path);
    let txn = db.begin_read().expect("read txn");
    let table = txn.open_table(META).expect("meta table");
    let value = table.get(key).expect("get").expect("meta key exists");
    value.value().to_vec()
}
