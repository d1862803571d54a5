//! The disk's floor for one durable op: a small write and `fdatasync`, timed on the disk the
//! ledger lives on. Every bench run prints it, so a latency is read against the physical limit
//! of the machine it ran on, not against a number from another one.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::error::Error;

/// Bytes per timed write: about one small record.
const WRITE_BYTES: usize = 200;
/// Timed writes of each kind.
const SAMPLES: usize = 300;

#[derive(Clone, Debug, Serialize)]
pub struct DiskFloor {
    /// The directory measured (the ledger's).
    pub dir: String,
    /// p50 of a write over the same bytes, then `fdatasync`.
    pub in_place_p50_us: u64,
    /// p50 of a write that grows the file (what an append-only log pays), then `fdatasync`.
    pub growing_p50_us: u64,
}

/// Times small durable writes in a scratch file in `dir` (removed afterwards).
pub fn measure(dir: &Path) -> Result<DiskFloor, Error> {
    let path = dir.join(format!(".fleetlog-disk-floor-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let result = (|| {
        let bytes = [0x5a_u8; WRITE_BYTES];
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
        let time = |offset: &dyn Fn(usize) -> u64| -> std::io::Result<u64> {
            let mut samples = Vec::with_capacity(SAMPLES);
            for i in 0..SAMPLES {
                let started = Instant::now();
                file.write_all_at(&bytes, offset(i))?;
                file.sync_data()?;
                samples.push(started.elapsed().as_micros() as u64);
            }
            samples.sort_unstable();
            Ok(samples[SAMPLES / 2])
        };
        let in_place = time(&|_| 0)?;
        let growing = time(&|i| ((i + 1) * WRITE_BYTES) as u64)?;
        Ok::<_, std::io::Error>((in_place, growing))
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    let (in_place_p50_us, growing_p50_us) = result?;
    Ok(DiskFloor {
        dir: dir.display().to_string(),
        in_place_p50_us,
        growing_p50_us,
    })
}
