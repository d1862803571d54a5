//! The write-ahead log of a ledger held exclusively (`serve`, unless `--shared`): one small in-place
//! write and one `fdatasync` acknowledge a batch, instead of a redb commit (which writes pages
//! all over the file). The batch's redb transaction stays open for the next batches (readers in
//! this process commit it, non-durably, before they read: `writer::Gate`), and redb commits
//! durably (a checkpoint) once a second or when the log is full.
//!
//! The log is `<ledger>.wal`, preallocated and zero-filled once, so a sync flushes data blocks
//! only, never file-size metadata. A checkpoint starts a new generation: frames are written
//! from offset 0 again, each naming the seq of the checkpoint it follows (`base`).
//!
//! Frames are written with `O_DIRECT | O_DSYNC` where the file system allows it: whole 4 KiB
//! blocks (the frame, the bytes of earlier frames sharing its first block, zeros after it)
//! straight to the device, durable when the write returns. That skips the page cache's
//! write-back work an `fdatasync` does, which was a quarter of the writer's CPU per batch.
//! Elsewhere (tmpfs, some network file systems) frames go through the page cache and an
//! `fdatasync`; the bytes on disk are the same frames either way.
//!
//! Frame: `FLW1` ‖ payload length (u32) ‖ base (u64) ‖ head before (48) ‖ head after (48) ‖
//! payload ‖ blake3 of all before it (32). The payload is the batch's redo list: every table
//! write the batch made, in order — records, idempotency keys, command-key answers and their
//! expiry index, pruned command keys — so a command retried after a crash still finds its key.
//!
//! Invariants:
//! - a frame is applied only if it is whole (checksum), belongs to the generation that follows
//!   redb's durable head (`base`), and continues that head exactly (seq, hash and time): a stale
//!   frame of an older generation, or a torn one, ends recovery and is never applied.
//! - every writable open recovers before anything else reads the file, and a read-only open
//!   of a file with frames to recover is refused with `NeedsRecovery`: no reader ever sees a
//!   history without an acknowledged batch.
//! - a generation's frames are only overwritten after the checkpoint that holds them returned.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::Database;

use crate::codec::{decode_u64, encode_u64};
use crate::error::Error;
use crate::limits::{WAL_BYTES, WAL_CHECKPOINT_INTERVAL_MS};
use crate::storage::{self, Head, META, META_HEAD, Tables, decode_head, encode_head};

const MAGIC: &[u8; 4] = b"FLW1";
/// The unit of direct writes: a multiple of every device's logical block size in use.
const BLOCK: usize = 4096;
const HEADER_BYTES: usize = 4 + 4 + 8 + 48 + 48;
const CHECKSUM_BYTES: usize = 32;

/// The write-ahead log beside the ledger at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// Table writes kinds, as tagged in a redo list.
const EVENT: u8 = 1;
const IDEMPOTENCY_KEY: u8 = 2;
const COMMAND_KEY: u8 = 3;
const FORGET_COMMAND_KEY: u8 = 4;

/// One batch's table writes, in the order the writer made them.
#[derive(Default)]
pub(crate) struct Redo {
    bytes: Vec<u8>,
}

impl Redo {
    pub(crate) fn event(&mut self, seq: u64, value: &[u8]) {
        self.bytes.push(EVENT);
        self.bytes.extend_from_slice(&encode_u64(seq));
        self.bytes_field(value);
    }

    pub(crate) fn idempotency_key(&mut self, key: &str, value: &[u8]) {
        self.bytes.push(IDEMPOTENCY_KEY);
        self.bytes_field(key.as_bytes());
        self.bytes_field(value);
    }

    pub(crate) fn command_key(&mut self, key: &str, at: u64, value: &[u8]) {
        self.bytes.push(COMMAND_KEY);
        self.bytes.extend_from_slice(&encode_u64(at));
        self.bytes_field(key.as_bytes());
        self.bytes_field(value);
    }

    pub(crate) fn forget_command_key(&mut self, key: &str, at: u64) {
        self.bytes.push(FORGET_COMMAND_KEY);
        self.bytes.extend_from_slice(&encode_u64(at));
        self.bytes_field(key.as_bytes());
    }

    fn bytes_field(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("values are bounded far below 4 GiB");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Re-applies one frame's redo list to the tables of a write transaction.
fn apply(payload: &[u8], tables: &mut Tables<'_>) -> Result<(), String> {
    let mut rest = payload;
    while let Some((&tag, after)) = rest.split_first() {
        rest = after;
        match tag {
            EVENT => {
                let seq = take_u64(&mut rest)?;
                let value = take_bytes(&mut rest)?;
                tables.events.insert(seq, value).map_err(stored)?;
            }
            IDEMPOTENCY_KEY => {
                let key = take_str(&mut rest)?;
                let value = take_bytes(&mut rest)?;
                tables.keys.insert(key, value).map_err(stored)?;
            }
            COMMAND_KEY => {
                let at = take_u64(&mut rest)?;
                let key = take_str(&mut rest)?;
                let value = take_bytes(&mut rest)?;
                tables.answers.insert(key, value).map_err(stored)?;
                tables.by_time.insert((at, key), ()).map_err(stored)?;
            }
            FORGET_COMMAND_KEY => {
                let at = take_u64(&mut rest)?;
                let key = take_str(&mut rest)?;
                tables.by_time.remove((at, key)).map_err(stored)?;
                tables.answers.remove(key).map_err(stored)?;
            }
            other => return Err(format!("unknown redo entry kind {other}")),
        }
    }
    Ok(())
}

fn stored(error: redb::StorageError) -> String {
    format!("storage: {error}")
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err("a redo entry is cut short".to_owned());
    }
    let (taken, after) = rest.split_at(len);
    *rest = after;
    Ok(taken)
}

fn take_u64(rest: &mut &[u8]) -> Result<u64, String> {
    decode_u64(take(rest, 8)?).ok_or_else(|| "a redo entry is cut short".to_owned())
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = u32::from_le_bytes(take(rest, 4)?.try_into().expect("took 4 bytes"));
    take(rest, len as usize)
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(take_bytes(rest)?).map_err(|_| "a redo key is not UTF-8".to_owned())
}

/// A frame read back: the heads it moves between, and its redo list.
struct Frame {
    prev: Head,
    head: Head,
    payload: Vec<u8>,
}

/// Reads the frame at `offset`, if a whole one of generation `base` is there.
fn read_frame(file: &File, offset: u64, base: u64) -> Result<Option<(Frame, u64)>, Error> {
    let mut header = [0u8; HEADER_BYTES];
    match file.read_exact_at(&mut header, offset) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    if &header[..4] != MAGIC || decode_u64(&header[8..16]) != Some(base) {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if len > WAL_BYTES {
        return Ok(None);
    }
    let mut rest = vec![0u8; len + CHECKSUM_BYTES];
    match file.read_exact_at(&mut rest, offset + HEADER_BYTES as u64) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&header);
    hasher.update(&rest[..len]);
    if hasher.finalize().as_bytes() != &rest[len..] {
        return Ok(None);
    }
    let (Some(prev), Some(head)) = (decode_head(&header[16..64]), decode_head(&header[64..112]))
    else {
        return Ok(None);
    };
    rest.truncate(len);
    let next = offset + (HEADER_BYTES + len + CHECKSUM_BYTES) as u64;
    Ok(Some((
        Frame {
            prev,
            head,
            payload: rest,
        },
        next,
    )))
}

/// Whether the log beside `db` holds a batch redb's durable `head` lacks: then only a writable
/// open (which recovers it) may read the file.
pub(crate) fn has_frames_to_recover(db: &Path, head: &Head) -> Result<bool, Error> {
    let file = match File::open(path_for(db)) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    Ok(read_frame(&file, 0, head.seq)?.is_some_and(|(frame, _)| frame.prev == *head))
}

/// Re-applies, in one durable transaction, the frames of the log beside `path` that continue
/// redb's `durable` head (as the file stores it at open). Returns how many were applied.
pub(crate) fn recover(db: &Database, path: &Path, durable: Head) -> Result<u64, Error> {
    let file = match File::open(path_for(path)) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut head = durable;
    let mut offset = 0;
    let mut frames = Vec::new();
    while let Some((frame, next)) = read_frame(&file, offset, durable.seq)? {
        if frame.prev != head {
            break;
        }
        head = frame.head;
        frames.push(frame);
        offset = next;
    }
    if frames.is_empty() {
        return Ok(0);
    }
    let txn = storage::begin_durable_write(db)?;
    {
        let mut tables = Tables::open(&txn)?;
        for frame in &frames {
            apply(&frame.payload, &mut tables).map_err(|problem| Error::Corrupted {
                seq: frame.prev.seq + 1,
                problem: format!(
                    "the write-ahead log's frame after seq {} does not apply: {problem}",
                    frame.prev.seq
                ),
            })?;
        }
        txn.open_table(META)?
            .insert(META_HEAD, encode_head(&head).as_slice())?;
    }
    txn.commit()?;
    Ok(frames.len() as u64)
}

/// The writer's end of the log.
pub(crate) struct Wal {
    file: File,
    /// The same file opened `O_DIRECT | O_DSYNC`, where the file system allows it.
    direct: Option<Direct>,
    /// Where the next frame goes.
    position: u64,
    /// The seq of the checkpoint this generation follows.
    base: u64,
    /// When redb last committed durably.
    checkpointed_at: Instant,
    frame: Vec<u8>,
}

/// Direct, synchronous writes of whole blocks.
struct Direct {
    file: File,
    /// Room for the blocks of one write, plus slack to start them at an aligned address.
    room: Vec<u8>,
    /// The block holding `position`, as last written: frames before `position` in it must be
    /// written again, unchanged, with the next frame.
    tail: Box<[u8; BLOCK]>,
}

impl Direct {
    fn open(path: &Path) -> Option<Direct> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .ok()?;
        Some(Direct {
            file,
            room: Vec::new(),
            tail: Box::new([0; BLOCK]),
        })
    }

    /// Writes `frame` at `position` (blocks whole, durable on return).
    fn write(&mut self, frame: &[u8], position: u64) -> std::io::Result<()> {
        let start = position - position % BLOCK as u64;
        let prefix = (position - start) as usize;
        let span = (prefix + frame.len()).div_ceil(BLOCK) * BLOCK;
        if self.room.len() < span + BLOCK {
            self.room.resize(span + BLOCK, 0);
        }
        let skip = self.room.as_ptr().align_offset(BLOCK);
        let blocks = &mut self.room[skip..skip + span];
        blocks[..prefix].copy_from_slice(&self.tail[..prefix]);
        blocks[prefix..prefix + frame.len()].copy_from_slice(frame);
        blocks[prefix + frame.len()..].fill(0);
        self.file.write_all_at(blocks, start)?;
        self.tail.copy_from_slice(&blocks[span - BLOCK..]);
        Ok(())
    }
}

impl Wal {
    /// Opens (creating and zero-filling it if needed) the log beside `db`, whose durable head is
    /// `head`: any frames in it were recovered by the open.
    pub(crate) fn open(db: &Path, head: &Head) -> Result<Wal, Error> {
        let path = path_for(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        if file.metadata()?.len() < WAL_BYTES as u64 {
            // Written, not just allocated: overwriting blocks already written is what keeps an
            // `fdatasync` from also journaling extent changes.
            let zeros = vec![0u8; 1024 * 1024];
            for _ in 0..WAL_BYTES / zeros.len() {
                file.write_all(&zeros)?;
            }
            file.sync_all()?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(Wal {
            file,
            direct: Direct::open(&path),
            position: 0,
            base: head.seq,
            checkpointed_at: Instant::now(),
            frame: Vec::new(),
        })
    }

    /// Whether the batch with this redo list must be a checkpoint (a durable redb commit)
    /// rather than a frame: the log has no room for it, or the last checkpoint is old enough.
    pub(crate) fn checkpoint_due(&self, redo: &Redo) -> bool {
        let frame = (HEADER_BYTES + redo.len() + CHECKSUM_BYTES) as u64;
        self.position + frame > WAL_BYTES as u64
            || self.checkpointed_at.elapsed().as_millis() >= u128::from(WAL_CHECKPOINT_INTERVAL_MS)
    }

    /// Writes the batch that moves the ledger from `prev` to `head` and waits until it is on
    /// disk: the batch is durable when this returns.
    pub(crate) fn append(&mut self, prev: &Head, head: &Head, redo: &Redo) -> Result<(), Error> {
        let len = u32::try_from(redo.len()).expect("batches are bounded far below 4 GiB");
        self.frame.clear();
        self.frame.extend_from_slice(MAGIC);
        self.frame.extend_from_slice(&len.to_le_bytes());
        self.frame.extend_from_slice(&encode_u64(self.base));
        self.frame.extend_from_slice(&encode_head(prev));
        self.frame.extend_from_slice(&encode_head(head));
        self.frame.extend_from_slice(&redo.bytes);
        let checksum = blake3::hash(&self.frame);
        self.frame.extend_from_slice(checksum.as_bytes());
        let written = match self
            .direct
            .as_mut()
            .map(|d| d.write(&self.frame, self.position))
        {
            Some(Ok(())) => true,
            // A file system that opened the file O_DIRECT but refuses such writes: from now
            // on through the page cache, which writes the same bytes at the same offsets.
            Some(Err(error)) if error.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = None;
                false
            }
            Some(Err(error)) => return Err(error.into()),
            None => false,
        };
        if !written {
            self.file.write_all_at(&self.frame, self.position)?;
            self.file.sync_data()?;
        }
        self.position += self.frame.len() as u64;
        Ok(())
    }

    /// redb committed durably at `head`: the frames so far are no longer needed.
    pub(crate) fn checkpointed(&mut self, head: &Head) {
        self.position = 0;
        self.base = head.seq;
        self.checkpointed_at = Instant::now();
    }

    /// Whether frames were written since the last checkpoint.
    pub(crate) fn has_frames(&self) -> bool {
        self.position > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::LedgerId;
    use crate::codec::{encode_entry, seal};
    use crate::event::Event;
    use crate::json::Json;
    use crate::time::Timestamp;
    use redb::ReadableDatabase;

    fn new_ledger(dir: &Path) -> (Database, PathBuf, Head) {
        let path = dir.join("wal-test.redb");
        let id = LedgerId::random().expect("randomness");
        let db = storage::create(&path, id, storage::Sharing::Private).expect("create");
        let head = storage::read_meta(&db.begin_read().expect("read"), &path)
            .expect("meta")
            .head;
        (db, path, head)
    }

    /// A batch of one record after `prev`, as the writer would stage it.
    fn batch_after(prev: &Head) -> (Head, Redo) {
        let event = Event::Custom {
            kind: "k".to_owned(),
            payload: Json::null(),
        };
        let entry = encode_entry("agent", &event).expect("valid");
        let ts = Timestamp(prev.ts.0 + 1);
        let (value, hash) = seal(&prev.hash, prev.seq + 1, ts, &entry);
        let mut redo = Redo::default();
        redo.event(prev.seq + 1, &value);
        redo.idempotency_key(&format!("key-{}", prev.seq), &[7; 48]);
        let seq = prev.seq + 1;
        (Head { seq, hash, ts }, redo)
    }

    fn stored_head(db: &Database, path: &Path) -> Head {
        storage::read_meta(&db.begin_read().expect("read"), path)
            .expect("meta")
            .head
    }

    /// A batch after `prev` whose frame is `pad` bytes longer (a longer idempotency key).
    fn padded_batch_after(prev: &Head, pad: usize) -> (Head, Redo) {
        let (head, mut redo) = batch_after(prev);
        redo.idempotency_key(&"p".repeat(pad.max(1)), &[9; 48]);
        (head, redo)
    }

    #[test]
    fn direct_and_buffered_writes_leave_the_same_frames_across_block_boundaries() {
        let mut logs = Vec::new();
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (db, path, durable) = new_ledger(dir.path());
            let mut wal = Wal::open(&path, &durable).expect("wal");
            if direct {
                // This file system (ext4 in CI) takes direct writes; the test is about them.
                assert!(
                    wal.direct.is_some(),
                    "O_DIRECT refused on {}",
                    path.display()
                );
            } else {
                wal.direct = None;
            }
            let mut prev = durable;
            // Sizes that end frames inside a block, exactly on a boundary, and span several.
            for pad in [10, 3000, 4096, 1, 9000, 700, 5000, 123] {
                let (head, redo) = padded_batch_after(&prev, pad);
                wal.append(&prev, &head, &redo).expect("append");
                prev = head;
            }
            let end = wal.position;
            let mut bytes = vec![0; end as usize];
            File::open(path_for(&path))
                .expect("wal file")
                .read_exact_at(&mut bytes, 0)
                .expect("read");
            assert_eq!(
                recover(&db, &path, stored_head(&db, &path)).expect("recover"),
                8,
                "direct={direct}: every frame comes back"
            );
            assert_eq!(stored_head(&db, &path), prev);
            logs.push(bytes);
        }
        // The heads differ (each ledger has its own id), so compare the frames' shape: the
        // same lengths at the same offsets.
        let lengths = |log: &[u8]| {
            let mut offset = 0;
            let mut lengths = Vec::new();
            while offset + HEADER_BYTES <= log.len() && &log[offset..offset + 4] == MAGIC {
                let len = u32::from_le_bytes(log[offset + 4..offset + 8].try_into().expect("4"));
                let frame = HEADER_BYTES + len as usize + CHECKSUM_BYTES;
                lengths.push((offset, frame));
                offset += frame;
            }
            lengths
        };
        assert_eq!(lengths(&logs[0]).len(), 8);
        assert_eq!(lengths(&logs[0]), lengths(&logs[1]));
    }

    #[test]
    fn whole_frames_are_recovered_and_a_torn_one_ends_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, path, durable) = new_ledger(dir.path());
        let mut wal = Wal::open(&path, &durable).expect("wal");
        let mut heads = vec![durable];
        let mut offsets = vec![0];
        for _ in 0..3 {
            let prev = *heads.last().expect("a head");
            let (head, redo) = batch_after(&prev);
            wal.append(&prev, &head, &redo).expect("append");
            heads.push(head);
            offsets.push(wal.position);
        }
        assert!(has_frames_to_recover(&path, &durable).expect("check"));
        // Tear the third frame: its last byte never reached the disk.
        let file = OpenOptions::new()
            .write(true)
            .open(path_for(&path))
            .expect("wal file");
        file.write_all_at(&[0xff], offsets[3] - 1).expect("tear");

        assert_eq!(
            recover(&db, &path, stored_head(&db, &path)).expect("recover"),
            2
        );
        assert_eq!(stored_head(&db, &path), heads[2]);
        let txn = db.begin_read().expect("read");
        storage::open_check(&txn, &storage::read_meta(&txn, &path).expect("meta"))
            .expect("the recovered tail checks");
        let keys = txn.open_table(storage::IDEMPOTENCY).expect("keys");
        assert!(
            keys.get("key-1").expect("get").is_some(),
            "keys come back too"
        );
        assert!(
            keys.get("key-2").expect("get").is_none(),
            "not from a torn frame"
        );
        drop(txn);

        // The frames now belong to an older generation: nothing is applied twice.
        assert!(!has_frames_to_recover(&path, &heads[2]).expect("check"));
        assert_eq!(
            recover(&db, &path, stored_head(&db, &path)).expect("again"),
            0
        );
        assert_eq!(stored_head(&db, &path), heads[2]);
    }

    #[test]
    fn command_keys_and_their_forgetting_are_replayed_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, path, durable) = new_ledger(dir.path());
        let mut wal = Wal::open(&path, &durable).expect("wal");
        let (first, mut redo) = batch_after(&durable);
        redo.command_key("kept", 5, &[1; 40]);
        redo.command_key("forgotten", 4, &[2; 40]);
        wal.append(&durable, &first, &redo).expect("append");
        let (second, mut redo) = batch_after(&first);
        redo.forget_command_key("forgotten", 4);
        wal.append(&first, &second, &redo).expect("append");

        assert_eq!(
            recover(&db, &path, stored_head(&db, &path)).expect("recover"),
            2
        );
        let txn = db.begin_read().expect("read");
        let answers = txn.open_table(storage::COMMAND_KEYS).expect("answers");
        let by_time = txn
            .open_table(storage::COMMAND_KEYS_BY_TIME)
            .expect("by time");
        assert_eq!(
            answers
                .get("kept")
                .expect("get")
                .map(|v| v.value().to_vec()),
            Some(vec![1; 40])
        );
        assert!(answers.get("forgotten").expect("get").is_none());
        assert!(by_time.get((5, "kept")).expect("get").is_some());
        assert!(by_time.get((4, "forgotten")).expect("get").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// Whatever a crash or a bad disk leaves — the log cut anywhere, or a byte flipped
        /// anywhere — recovery applies exactly the whole frames before the damage, in order,
        /// and the tail of the result checks.
        #[test]
        fn recovery_applies_exactly_the_whole_frames_before_the_damage(
            frames in 1usize..8,
            damage_at in 0.0f64..1.2,
            flip in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (db, path, durable) = new_ledger(dir.path());
            let mut wal = Wal::open(&path, &durable).expect("wal");
            let mut heads = vec![durable];
            let mut ends = Vec::new();
            for _ in 0..frames {
                let prev = *heads.last().expect("a head");
                let (head, redo) = batch_after(&prev);
                wal.append(&prev, &head, &redo).expect("append");
                heads.push(head);
                ends.push(wal.position);
            }
            let written = wal.position;
            // Past the end (damage_at > 1): nothing is damaged.
            let at = (written as f64 * damage_at) as u64;
            if at < written {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path_for(&path))
                    .expect("wal file");
                match flip {
                    true => {
                        let mut byte = [0u8];
                        file.read_exact_at(&mut byte, at).expect("read");
                        file.write_all_at(&[byte[0] ^ 0x40], at).expect("flip");
                    }
                    false => {
                        let zeros = vec![0u8; (written - at) as usize];
                        file.write_all_at(&zeros, at).expect("cut");
                    }
                }
            }
            let whole = ends.iter().filter(|end| **end <= at).count();
            let applied = recover(&db, &path, stored_head(&db, &path)).expect("recover");
            proptest::prop_assert_eq!(applied, whole as u64);
            proptest::prop_assert_eq!(stored_head(&db, &path), heads[whole]);
            let txn = db.begin_read().expect("read");
            storage::open_check(&txn, &storage::read_meta(&txn, &path).expect("meta"))
                .expect("the recovered tail checks");
        }
    }

    #[test]
    fn a_new_generation_overwrites_the_old_one_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, path, durable) = new_ledger(dir.path());
        let mut wal = Wal::open(&path, &durable).expect("wal");
        let (first, redo) = batch_after(&durable);
        wal.append(&durable, &first, &redo).expect("append");
        let (second, redo) = batch_after(&first);
        wal.append(&first, &second, &redo).expect("append");
        // A checkpoint at `durable` (as if nothing followed it): the next frame goes to offset 0
        // and continues it; the old generation's second frame after it is not applied.
        wal.checkpointed(&durable);
        let (other, redo) = batch_after(&Head {
            ts: Timestamp(durable.ts.0 + 5),
            ..durable
        });
        let other = Head {
            ts: Timestamp(durable.ts.0 + 6),
            ..other
        };
        wal.append(&durable, &other, &redo).expect("append");
        assert_eq!(
            recover(&db, &path, stored_head(&db, &path)).expect("recover"),
            1
        );
        assert_eq!(stored_head(&db, &path), other);
    }
}
