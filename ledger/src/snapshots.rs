//! Snapshots of projection state, stored beside the ledger: `<db>.snapshots/<seq>.snap`, one
//! file per snapshot, written and pruned off the writer thread.
//!
//! A snapshot is derived data (the state after record `seq`, rebuildable by replay), so it does
//! not share the records' durability: it never rides in the writer's transaction, never costs
//! an append its fsync, and a missing, torn or foreign file is skipped (the state is then
//! rebuilt from an older snapshot or from the start). A file is written under a temporary name
//! and renamed into place, so while the machine runs a name ending in `.snap` holds a whole
//! snapshot; it is not synced, so after a power loss one may be empty or torn, and its header
//! check (length and blake3 of the body) then skips it.
//!
//! File layout (little-endian): `FLSNAP01` · ledger id (16 bytes) · seq (u64) · body length
//! (u64) · blake3 of the body (32 bytes) · body (the projections' own versioned encoding).
//!
//! Ledgers written before snapshots moved out kept them in the `snapshots` table of the redb
//! file; those are still read (and never written again).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::chain::LedgerId;
use crate::error::Error;
use crate::storage::snapshots_to_keep;

const MAGIC: &[u8; 8] = b"FLSNAP01";
const HEADER_BYTES: usize = 8 + 16 + 8 + 8 + 32;
const SUFFIX: &str = ".snap";
const TEMPORARY: &str = ".snap.tmp";

/// Where one ledger's snapshots live. Cheap to clone; any thread may write or read.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    ledger_id: LedgerId,
}

/// The directory of `db`'s snapshots.
pub fn snapshot_dir(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".snapshots");
    PathBuf::from(name)
}

impl SnapshotStore {
    pub(crate) fn new(db: &Path, ledger_id: LedgerId) -> Self {
        SnapshotStore {
            dir: snapshot_dir(db),
            ledger_id,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the snapshot of the state after record `seq`, then prunes to the log-spaced set
    /// time travel needs (see [`crate::storage::snapshots_to_keep`]).
    pub fn write(&self, seq: u64, body: &[u8]) -> Result<(), Error> {
        fs::create_dir_all(&self.dir)?;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.ledger_id.0);
        header.extend_from_slice(&seq.to_le_bytes());
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(blake3::hash(body).as_bytes());
        let temporary = self.dir.join(format!("{seq:020}{TEMPORARY}"));
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&header)?;
        file.write_all(body)?;
        drop(file);
        // Not synced: a snapshot only saves replay, and one lost or torn by a crash fails its
        // header check and is skipped. Syncing it here made the writer's next fdatasync wait
        // for its blocks (ext4 orders them into the same journal commit): append p99 while a
        // snapshot was written went from ~5× to ~1.7× the p99 without snapshots.
        fs::rename(&temporary, self.path_of(seq))?;
        self.prune()
    }

    /// The seqs of every snapshot file, ascending (whether or not each is intact).
    pub fn seqs(&self) -> Result<Vec<u64>, Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut seqs = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SUFFIX))
                .and_then(|seq| seq.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The newest intact snapshot of this ledger at or before `seq`: its seq and body.
    pub fn at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, Error> {
        for at in self.seqs()?.into_iter().rev().filter(|at| *at <= seq) {
            if let Some(body) = self.read(at)? {
                return Ok(Some((at, body)));
            }
        }
        Ok(None)
    }

    /// The body of snapshot `seq` if its file is whole and this ledger's; `None` otherwise.
    fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, Error> {
        let bytes = match fs::read(self.path_of(seq)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let Some((header, body)) = bytes.split_at_checked(HEADER_BYTES) else {
            return Ok(None);
        };
        let intact = header[..8] == MAGIC[..]
            && header[8..24] == self.ledger_id.0
            && header[24..32] == seq.to_le_bytes()
            && header[32..40] == (body.len() as u64).to_le_bytes()
            && header[40..72] == blake3::hash(body).as_bytes()[..];
        Ok(intact.then(|| body.to_vec()))
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Deletes the snapshots the log-spaced set does not keep, and temporary files a crashed
    /// writer left behind.
    fn prune(&self) -> Result<(), Error> {
        let seqs = self.seqs()?;
        let kept = snapshots_to_keep(&seqs);
        for seq in seqs.iter().filter(|seq| !kept.contains(seq)) {
            remove_if_present(&self.path_of(*seq))?;
        }
        let newest = seqs.last().copied().unwrap_or(0);
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let stale = name
                .to_str()
                .and_then(|name| name.strip_suffix(TEMPORARY))
                .and_then(|seq| seq.parse::<u64>().ok())
                .is_some_and(|seq| seq < newest);
            if stale {
                remove_if_present(&self.dir.join(name))?;
            }
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, id: u8) -> SnapshotStore {
        SnapshotStore::new(&dir.join("fleet.redb"), LedgerId([id; 16]))
    }

    #[test]
    fn the_newest_intact_snapshot_of_this_ledger_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = store(dir.path(), 1);
        assert_eq!(ours.at_or_before(100).expect("reads"), None);
        ours.write(10, b"ten").expect("writes");
        ours.write(20, b"twenty").expect("writes");
        assert_eq!(
            ours.at_or_before(15).expect("reads"),
            Some((10, b"ten".to_vec()))
        );
        assert_eq!(
            ours.at_or_before(25).expect("reads"),
            Some((20, b"twenty".to_vec()))
        );
        // A torn file is skipped for the older one.
        let path = ours.path_of(20);
        let whole = fs::read(&path).expect("read");
        fs::write(&path, &whole[..whole.len() - 2]).expect("tear");
        assert_eq!(
            ours.at_or_before(25).expect("reads"),
            Some((10, b"ten".to_vec()))
        );
        // Another ledger's snapshot (a copied directory) is not this one's.
        let theirs = store(dir.path(), 2);
        assert_eq!(theirs.at_or_before(25).expect("reads"), None);
    }

    #[test]
    fn writing_prunes_to_a_log_spaced_set_and_clears_stale_temporaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = store(dir.path(), 1);
        fs::create_dir_all(ours.dir()).expect("dir");
        fs::write(ours.dir().join(format!("{:020}{TEMPORARY}", 5)), b"torn").expect("temp");
        for seq in (1..=200).map(|i| i * 10) {
            ours.write(seq, &seq.to_le_bytes()).expect("writes");
        }
        let seqs = ours.seqs().expect("seqs");
        assert!(seqs.len() <= 20, "{seqs:?}");
        assert_eq!(seqs.last(), Some(&2000));
        let leftovers = fs::read_dir(ours.dir())
            .expect("dir")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(TEMPORARY))
            .count();
        assert_eq!(leftovers, 0);
    }
}
