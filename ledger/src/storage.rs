//! redb tables, and creating and opening the file. The only module (with `writer`, `wal`,
//! `verify` and `export`) that touches redb.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, Durability, ReadOnlyDatabase,
    ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::chain::{Checkpoint, LedgerId};
use crate::codec::{ChainHash, RecordView, decode_u64, encode_u64};
use crate::error::Error;
use crate::event::Timestamp;
use crate::limits::OPEN_CHECK_RECORDS;
use crate::writer::Gate;

/// seq → stored record (see `codec`).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Ledger-wide facts; keys below.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// seq → projection checkpoint taken after that seq (written by the projections crate).
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// client key → first seq (8) ‖ event count (8) ‖ content digest (32).
pub(crate) const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// command key → content digest (32) ‖ first use, µs since the epoch (8, LE) ‖ the answer given.
/// Kept for `COMMAND_KEY_WINDOW`; created by the first writer that needs it.
pub(crate) const COMMAND_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("command_keys");
/// (first use µs, command key) → (): finds the keys past their window, oldest first.
pub(crate) const COMMAND_KEYS_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("command_keys_by_time");

pub(crate) const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_LEDGER_ID: &str = "ledger_id";
pub(crate) const META_HEAD: &str = "head";
pub(crate) const META_WRITER_PID: &str = "writer_pid";

/// Version of the file layout (tables and meta keys). Records carry their own version byte.
pub const FILE_FORMAT_VERSION: u32 = 1;

/// The newest record: where the next append links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: ChainHash,
    /// Time of the newest record (or zero for an empty ledger): appends never go below it.
    pub ts: Timestamp,
}

impl Head {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// Either kind of redb handle; both read the same way.
pub(crate) enum Store {
    /// The file this process writes, with the gate its writer keeps (see [`Gate`]).
    Writable(Arc<Database>, Arc<Gate>),
    ReadOnly(ReadOnlyDatabase),
}

impl Store {
    /// A read transaction that sees every batch acknowledged before this call.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, Error> {
        Ok(match self {
            Store::Writable(db, gate) => {
                gate.settle()?;
                db.begin_read()?
            }
            Store::ReadOnly(db) => db.begin_read()?,
        })
    }

    pub(crate) fn gate(&self) -> Option<&Arc<Gate>> {
        match self {
            Store::Writable(_, gate) => Some(gate),
            Store::ReadOnly(_) => None,
        }
    }
}

/// How a handle shares its file with other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// One writing process, any number of read-only ones (verify, replay, analytics) beside it.
    /// redb uses two-phase commit in this mode: see docs/architecture.md.
    Shared,
    /// No other process may open the file, not even to read: for files not yet in place
    /// (import), and for a writer that acknowledges from its write-ahead log (non-durable redb
    /// commits, which other processes could not see; `serve` unless `--shared`).
    Private,
}

fn builder(sharing: Sharing) -> Builder {
    let mut builder = Builder::new();
    builder.set_cache_size(crate::limits::STORE_CACHE_BYTES);
    builder.set_concurrency_mode(match sharing {
        Sharing::Shared => ConcurrencyMode::SingleWriter,
        Sharing::Private => ConcurrencyMode::ExclusiveWriter,
    });
    builder
}

/// Creates a new, empty ledger file (mode 0600) with the given id.
pub(crate) fn create(
    path: &Path,
    ledger_id: LedgerId,
    sharing: Sharing,
) -> Result<Database, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                path: path.to_owned(),
            },
            _ => Error::Io(error),
        })?;
    let backend = redb::backends::FileBackend::new(file)?;
    initialise(builder(sharing).create_with_backend(backend)?, ledger_id)
}

/// Creates a new ledger at `path` so that no other process ever sees it half made, and of two
/// processes creating the same path at once exactly one succeeds (the other gets
/// [`Error::AlreadyExists`]): the ledger is built under a temporary name beside it, then linked
/// into place (`link` never replaces a file), then opened for writing.
pub(crate) fn create_atomically(
    path: &Path,
    ledger_id: LedgerId,
    sharing: Sharing,
) -> Result<Database, Error> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    name.push(format!(".creating-{}-{nanos}", std::process::id()));
    let temporary = path.with_file_name(name);
    drop(create(&temporary, ledger_id, Sharing::Shared)?);
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => open_writable(path, sharing),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::AlreadyExists {
                path: path.to_owned(),
            })
        }
        Err(error) => Err(Error::Io(error)),
    }
}

/// Creates a new ledger on any storage backend (used by fault-injection tests).
#[cfg(feature = "fault-injection")]
pub(crate) fn create_on(
    backend: impl redb::StorageBackend,
    ledger_id: LedgerId,
) -> Result<Database, Error> {
    initialise(
        builder(Sharing::Shared).create_with_backend(backend)?,
        ledger_id,
    )
}

/// Writes the tables and meta of an empty ledger into a fresh database.
fn initialise(db: Database, ledger_id: LedgerId) -> Result<Database, Error> {
    let txn = begin_durable_write(&db)?;
    {
        txn.open_table(EVENTS)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(IDEMPOTENCY)?;
        let mut meta = txn.open_table(META)?;
        meta.insert(
            META_FORMAT_VERSION,
            FILE_FORMAT_VERSION.to_le_bytes().as_slice(),
        )?;
        meta.insert(META_LEDGER_ID, ledger_id.0.as_slice())?;
        meta.insert(META_WRITER_PID, std::process::id().to_le_bytes().as_slice())?;
        meta.insert(
            META_HEAD,
            encode_head(&Head {
                seq: 0,
                hash: ledger_id.genesis_prev(),
                ts: Timestamp(0),
            })
            .as_slice(),
        )?;
    }
    txn.commit()?;
    Ok(db)
}

/// Opens an existing ledger for writing and records this process as its writer.
pub(crate) fn open_writable(path: &Path, sharing: Sharing) -> Result<Database, Error> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    let db = match builder(sharing).open(path) {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => {
            return Err(Error::AlreadyOpen {
                path: path.to_owned(),
                pid: writer_pid(path),
            });
        }
        Err(error) => return Err(not_a_ledger_or(path, error)),
    };
    // Refuse a file this build cannot read before writing anything to it.
    let meta = read_meta(&db.begin_read()?, path)?;
    // Batches acknowledged from the write-ahead log of an exclusive writer that crashed.
    crate::wal::recover(&db, path, meta.head)?;
    let txn = begin_durable_write(&db)?;
    txn.open_table(META)?
        .insert(META_WRITER_PID, std::process::id().to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(db)
}

pub(crate) fn open_read_only(path: &Path) -> Result<ReadOnlyDatabase, Error> {
    open_read_only_with(path, builder(Sharing::Shared))
}

/// A read-only handle with a small page cache, for reading the whole file once (verifying the
/// chain on open) without filling the writer's cache with pages it will not read again.
pub(crate) fn open_for_one_pass(path: &Path) -> Result<ReadOnlyDatabase, Error> {
    let mut builder = builder(Sharing::Shared);
    builder.set_cache_size(crate::limits::ONE_PASS_CACHE_BYTES);
    open_read_only_with(path, builder)
}

fn open_read_only_with(path: &Path, builder: Builder) -> Result<ReadOnlyDatabase, Error> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    builder.open_read_only(path).map_err(|error| match error {
        DatabaseError::RepairAborted => Error::NeedsRecovery {
            path: path.to_owned(),
        },
        DatabaseError::DatabaseAlreadyOpen => Error::HeldExclusively {
            path: path.to_owned(),
        },
        other => not_a_ledger_or(path, other),
    })
}

fn not_a_ledger_or(path: &Path, error: DatabaseError) -> Error {
    match error {
        DatabaseError::Storage(redb::StorageError::Io(io)) => Error::Io(io),
        DatabaseError::Storage(redb::StorageError::Corrupted(problem)) => Error::NotALedger {
            path: path.to_owned(),
            problem: format!("redb reports corruption: {problem}"),
        },
        other => Error::Storage(other.into()),
    }
}

/// Best effort: the pid the current writer recorded, read through a read-only handle.
fn writer_pid(path: &Path) -> Option<u32> {
    let db = builder(Sharing::Shared).open_read_only(path).ok()?;
    let txn = db.begin_read().ok()?;
    let meta = txn.open_table(META).ok()?;
    let pid = meta.get(META_WRITER_PID).ok()??;
    Some(u32::from_le_bytes(pid.value().try_into().ok()?))
}

pub(crate) fn begin_durable_write(db: &Database) -> Result<WriteTransaction, Error> {
    let mut txn = db.begin_write()?;
    // Explicit, although it is redb's default: an acknowledged append must survive power loss.
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// The tables one batch writes, opened together.
pub(crate) struct Tables<'txn> {
    pub events: redb::Table<'txn, u64, &'static [u8]>,
    pub keys: redb::Table<'txn, &'static str, &'static [u8]>,
    pub answers: redb::Table<'txn, &'static str, &'static [u8]>,
    pub by_time: redb::Table<'txn, (u64, &'static str), ()>,
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Tables {
            events: txn.open_table(EVENTS)?,
            keys: txn.open_table(IDEMPOTENCY)?,
            answers: txn.open_table(COMMAND_KEYS)?,
            by_time: txn.open_table(COMMAND_KEYS_BY_TIME)?,
        })
    }
}

/// What every ledger file says about itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub ledger_id: LedgerId,
    pub head: Head,
}

pub(crate) fn read_meta(txn: &ReadTransaction, path: &Path) -> Result<Meta, Error> {
    let not_ledger = |problem: &str| Error::NotALedger {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let meta = txn
        .open_table(META)
        .map_err(|_| not_ledger("it has no `meta` table"))?;
    let version = meta
        .get(META_FORMAT_VERSION)?
        .ok_or_else(|| not_ledger("it records no format version"))?;
    let version = u32::from_le_bytes(
        version
            .value()
            .try_into()
            .map_err(|_| not_ledger("its format version is malformed"))?,
    );
    if version != FILE_FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: version,
            supported: FILE_FORMAT_VERSION,
        });
    }
    let ledger_id = meta
        .get(META_LEDGER_ID)?
        .and_then(|id| id.value().try_into().ok())
        .map(LedgerId)
        .ok_or_else(|| not_ledger("its ledger id is missing or malformed"))?;
    let head = meta
        .get(META_HEAD)?
        .and_then(|head| decode_head(head.value()))
        .ok_or_else(|| not_ledger("its head is missing or malformed"))?;
    Ok(Meta { ledger_id, head })
}

pub(crate) fn encode_head(head: &Head) -> [u8; 48] {
    let mut bytes = [0u8; 48];
    bytes[..8].copy_from_slice(&encode_u64(head.seq));
    bytes[8..40].copy_from_slice(&head.hash.0);
    bytes[40..].copy_from_slice(&head.ts.0.to_le_bytes());
    bytes
}

pub(crate) fn decode_head(bytes: &[u8]) -> Option<Head> {
    if bytes.len() != 48 {
        return None;
    }
    Some(Head {
        seq: decode_u64(&bytes[..8])?,
        hash: ChainHash(bytes[8..40].try_into().ok()?),
        ts: Timestamp(i64::from_le_bytes(bytes[40..].try_into().ok()?)),
    })
}

/// The check every open runs: the stored head names the newest record, and the newest
/// [`OPEN_CHECK_RECORDS`] records hash and link correctly. Catches a torn or tampered tail
/// before anything is appended after it; `verify` checks the rest.
pub(crate) fn open_check(txn: &ReadTransaction, meta: &Meta) -> Result<(), Error> {
    let fail = |problem: String| Error::OpenCheckFailed { problem };
    let events = txn.open_table(EVENTS)?;
    let last_seq = events.last()?.map(|(seq, _)| seq.value()).unwrap_or(0);
    if last_seq != meta.head.seq {
        return Err(fail(format!(
            "the stored head is seq {} but the newest record is seq {last_seq}",
            meta.head.seq
        )));
    }
    if last_seq == 0 {
        return match meta.head.hash == meta.ledger_id.genesis_prev() {
            true => Ok(()),
            false => Err(fail(
                "an empty ledger's head is not its genesis link".into(),
            )),
        };
    }
    let first = last_seq.saturating_sub(OPEN_CHECK_RECORDS - 1).max(1);
    let mut expected_prev: Option<ChainHash> = None;
    for (expected_seq, entry) in (first..).zip(events.range(first..=last_seq)?) {
        let (seq, value) = entry?;
        let seq = seq.value();
        if seq != expected_seq {
            return Err(fail(format!("seq {expected_seq} is missing")));
        }
        let view = RecordView::new(value.value())
            .map_err(|problem| fail(format!("record {seq}: {problem}")))?;
        if view.computed_hash() != view.stored_hash() {
            return Err(fail(format!("record {seq} does not match its hash")));
        }
        if expected_prev.is_some_and(|prev| prev != view.prev()) {
            return Err(fail(format!(
                "record {seq} does not link to record {}",
                seq - 1
            )));
        }
        if seq == 1 && view.prev() != meta.ledger_id.genesis_prev() {
            return Err(fail(
                "record 1 does not link to this ledger's genesis".into(),
            ));
        }
        expected_prev = Some(view.stored_hash());
    }
    if expected_prev != Some(meta.head.hash) {
        return Err(fail(format!(
            "the stored head hash differs from record {last_seq}'s hash"
        )));
    }
    Ok(())
}

/// Which snapshots to keep, given every stored snapshot's seq in ascending order (the newest
/// last): the newest, the one before it, then older ones only where the gap to the last kept
/// one is at least that one's distance from the newest. Spacing so grows geometrically with
/// age: O(log history) snapshots are kept, and rebuilding the state as of any point replays at
/// most about as many records as that point is old.
pub(crate) fn snapshots_to_keep(seqs: &[u64]) -> Vec<u64> {
    let Some(&newest) = seqs.last() else {
        return Vec::new();
    };
    let mut kept = vec![newest];
    let mut last = newest;
    for &seq in seqs.iter().rev().skip(1) {
        if last - seq >= (newest - last).max(1) {
            kept.push(seq);
            last = seq;
        }
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod snapshot_pruning {
    use super::snapshots_to_keep;

    /// Keeps what pruning after each of `count` snapshots, `every` records apart, leaves.
    fn after(count: u64, every: u64) -> Vec<u64> {
        let mut stored = Vec::new();
        for n in 1..=count {
            stored.push(n * every);
            stored = snapshots_to_keep(&stored);
        }
        stored
    }

    #[test]
    fn the_newest_two_are_always_kept() {
        assert_eq!(snapshots_to_keep(&[]), Vec::<u64>::new());
        assert_eq!(snapshots_to_keep(&[10]), [10]);
        assert_eq!(snapshots_to_keep(&[10, 20]), [10, 20]);
        assert_eq!(after(2, 10), [10, 20]);
    }

    #[test]
    fn kept_snapshots_stay_logarithmic_and_gaps_never_exceed_twice_the_age() {
        for count in [3, 10, 100, 1_000, 5_000] {
            let kept = after(count, 10);
            let newest = *kept.last().expect("kept");
            assert_eq!(newest, count * 10);
            let bound = 2 * (64 - count.leading_zeros()) as usize + 2;
            assert!(
                kept.len() <= bound,
                "{count}: {} kept > {bound}",
                kept.len()
            );
            // Time travel to a point `age` records back replays at most about `age` records
            // (from the nearest older snapshot), plus one snapshot interval.
            for pair in kept.windows(2) {
                let (older, newer) = (pair[0], pair[1]);
                let age = newest - newer;
                assert!(
                    newer - older <= 2 * age + 20,
                    "{count}: gap {older}..{newer} at age {age}"
                );
            }
        }
    }
}
