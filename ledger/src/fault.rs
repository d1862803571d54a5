//! Fault injection for tests (feature `fault-injection`): a redb storage backend that passes
//! everything through to the real file until told to fail writes or syncs, as a full disk or a
//! dying device would. Lets tests check that a failed commit fails its whole batch, poisons the
//! writer and loses nothing acknowledged.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::chain::LedgerId;
use crate::error::Error;
use crate::{Ledger, storage};

/// Turns failures on and off for one ledger's file.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch {
    fail_io: Arc<AtomicBool>,
}

impl FaultSwitch {
    /// From now on every write and sync fails with an I/O error (or succeeds again).
    pub fn set_failing(&self, failing: bool) {
        self.fail_io.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), std::io::Error> {
        match self.fail_io.load(Ordering::SeqCst) {
            true => Err(std::io::Error::other(
                "injected fault: the device refused the write",
            )),
            false => Ok(()),
        }
    }
}

#[derive(Debug)]
struct FaultyBackend {
    file: FileBackend,
    switch: FaultSwitch,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// A new ledger file on a backend that fails when `switch` says so.
fn create_faulty(path: &Path) -> Result<(redb::Database, FaultSwitch), Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let switch = FaultSwitch::default();
    let backend = FaultyBackend {
        file: FileBackend::new(file)?,
        switch: switch.clone(),
    };
    Ok((storage::create_on(backend, LedgerId::random()?)?, switch))
}

impl Ledger {
    /// Creates a ledger whose file can be made to fail on demand.
    pub fn create_with_faults(path: impl AsRef<Path>) -> Result<(Ledger, FaultSwitch), Error> {
        let path = path.as_ref();
        let (db, switch) = create_faulty(path)?;
        Ok((Ledger::start(path, db)?, switch))
    }

    /// As [`Ledger::open_with`] on a new file whose writes can be made to fail on demand.
    pub fn create_with_faults_and<S, E>(
        path: impl AsRef<Path>,
        clock: std::sync::Arc<dyn crate::Clock>,
        make: impl FnOnce(&crate::Reader, crate::Head) -> Result<S, E>,
    ) -> Result<(Ledger, FaultSwitch), E>
    where
        S: crate::Sequencer,
        E: From<Error>,
    {
        let path = path.as_ref();
        let (db, switch) = create_faulty(path)?;
        Ok((
            Ledger::start_with(path, db, false, clock, true, make)?,
            switch,
        ))
    }
}
