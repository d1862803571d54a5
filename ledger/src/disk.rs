//! What one ledger occupies on disk: its redb file, its write-ahead log and its snapshots.
//!
//! Bytes on disk are the blocks the file system allocated, not file lengths. redb grows its
//! file by `set_len` (doubling while the file is under one region), so the grown tail is a hole
//! until pages are written there: the length can be up to twice what the file holds. The write-
//! ahead log is a fixed size, zero-filled once, whatever the history.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::snapshots::snapshot_dir;
use crate::wal;

/// One file's (or directory's files') size, two ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileUsage {
    /// Bytes in blocks the file system allocated: what the disk gives up.
    pub allocated: u64,
    /// The length (`st_size`): holes count, so it can overstate.
    pub length: u64,
}

impl FileUsage {
    fn of(meta: &fs::Metadata) -> Self {
        FileUsage {
            // st_blocks is in 512-byte units whatever the file system's block size (stat(2)).
            allocated: meta.blocks() * 512,
            length: meta.len(),
        }
    }

    fn add(self, other: FileUsage) -> FileUsage {
        FileUsage {
            allocated: self.allocated + other.allocated,
            length: self.length + other.length,
        }
    }
}

/// Everything stored for the ledger at one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The redb file: records, keys, head.
    pub ledger: FileUsage,
    /// `<ledger>.wal` (only an exclusive writer keeps one).
    pub wal: FileUsage,
    /// `<ledger>.snapshots/`, every file in it.
    pub snapshots: FileUsage,
}

impl DiskUsage {
    /// All three together.
    pub fn total(&self) -> FileUsage {
        self.ledger.add(self.wal).add(self.snapshots)
    }
}

/// What the ledger at `db` occupies now. The ledger file must exist; a missing write-ahead log
/// or snapshot directory counts as empty. Files that vanish while counted (a snapshot pruned)
/// are skipped.
pub fn disk_usage(db: &Path) -> io::Result<DiskUsage> {
    let ledger = FileUsage::of(&fs::metadata(db)?);
    let wal = match fs::metadata(wal::path_for(db)) {
        Ok(meta) => FileUsage::of(&meta),
        Err(error) if error.kind() == io::ErrorKind::NotFound => FileUsage::default(),
        Err(error) => return Err(error),
    };
    let mut snapshots = FileUsage::default();
    match fs::read_dir(snapshot_dir(db)) {
        Ok(entries) => {
            for entry in entries {
                let Ok(meta) = entry?.metadata() else {
                    continue;
                };
                if meta.is_file() {
                    snapshots = snapshots.add(FileUsage::of(&meta));
                }
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(DiskUsage {
        ledger,
        wal,
        snapshots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_sparse_tail_is_not_counted_as_allocated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("l.db");
        let mut file = fs::File::create(&db).expect("creates");
        file.write_all(&[7u8; 8192]).expect("writes");
        // What redb does when it grows: a longer file with nothing written past the old end.
        file.set_len(1 << 20).expect("grows");
        file.sync_all().expect("syncs");
        let usage = disk_usage(&db).expect("stats");
        assert_eq!(usage.ledger.length, 1 << 20);
        assert!(
            usage.ledger.allocated >= 8192 && usage.ledger.allocated < 1 << 19,
            "{usage:?}"
        );
        assert_eq!(usage.wal, FileUsage::default());
        assert_eq!(usage.snapshots, FileUsage::default());
    }

    #[test]
    fn the_log_and_every_snapshot_file_are_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("l.db");
        fs::write(&db, [1u8; 4096]).expect("writes");
        fs::write(wal::path_for(&db), [0u8; 12288]).expect("writes");
        let snapshots = snapshot_dir(&db);
        fs::create_dir(&snapshots).expect("creates");
        fs::write(snapshots.join("1.snap"), [2u8; 100]).expect("writes");
        fs::write(snapshots.join("2.snap"), [2u8; 300]).expect("writes");
        let usage = disk_usage(&db).expect("stats");
        assert_eq!(usage.wal.length, 12288);
        assert_eq!(usage.snapshots.length, 400);
        assert!(usage.snapshots.allocated >= 400, "{usage:?}");
        assert_eq!(
            usage.total().length,
            usage.ledger.length + 12288 + 400,
            "{usage:?}"
        );
    }
}
