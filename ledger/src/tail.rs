//! Live tail: read history from a seq, then follow new records as they commit. Followers sleep
//! on a condition variable that the writer signals after each commit, so a new record wakes
//! them at once and an idle ledger costs them nothing. Commit listeners are called on the
//! committing thread instead: no thread of their own to wake per commit.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::codec::Record;
use crate::error::Error;
use crate::reader::Reader;
use crate::storage::Head;

/// Records read per refill of a subscription's buffer.
const TAIL_CHUNK_RECORDS: u64 = 1024;

#[derive(Debug)]
struct WatchState {
    head: Head,
    /// No more commits will come through this handle (closed, poisoned, or read-only).
    closed: bool,
    /// Why the writer refuses every write, once a commit failed.
    poisoned: Option<String>,
    /// Threads asleep on `changed`: with none, a commit makes no wake-up system call.
    sleepers: usize,
}

/// Called with the new head after each commit that moved it, on the committing thread.
pub(crate) type CommitListener = Box<dyn Fn(Head) + Send + Sync>;

/// The committed head, published by the writer after each durable commit.
pub(crate) struct HeadWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
    /// Dropped at close, so whatever they hold (a channel's sender) tells its receivers.
    listeners: Mutex<Vec<CommitListener>>,
}

impl std::fmt::Debug for HeadWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadWatch")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl HeadWatch {
    pub(crate) fn new(head: Head, closed: bool) -> Self {
        HeadWatch {
            state: Mutex::new(WatchState {
                head,
                closed,
                poisoned: None,
                sleepers: 0,
            }),
            changed: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    fn listeners(&self) -> MutexGuard<'_, Vec<CommitListener>> {
        // A listener that panicked left the list itself whole.
        self.listeners
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn listen(&self, listener: CommitListener) {
        // Checked under the list's lock, so a close either sees this listener or precedes it.
        let mut listeners = self.listeners();
        if !self.lock().closed {
            listeners.push(listener);
        }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        // A panic while holding this lock cannot leave the state half-written (plain copies),
        // so recovering the guard is sound.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn head(&self) -> Head {
        self.lock().head
    }

    pub(crate) fn publish(&self, head: Head) {
        let sleepers = {
            let mut state = self.lock();
            state.head = head;
            state.sleepers
        };
        if sleepers > 0 {
            self.changed.notify_all();
        }
        for listener in self.listeners().iter() {
            listener(head);
        }
    }

    pub(crate) fn poison(&self, cause: String) {
        self.lock().poisoned = Some(cause);
        self.close();
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
        // Dropped after the list's lock is let go: a listener's drop (a channel sender's) may
        // wake its receivers, which must not find the lock held.
        let listeners = std::mem::take(&mut *self.listeners());
        drop(listeners);
    }

    /// Waits until the head passes `seq` or the watch closes; false on timeout.
    fn wait_past(&self, seq: u64, deadline: Option<Instant>) -> WaitResult {
        let mut state = self.lock();
        loop {
            if state.head.seq >= seq {
                return WaitResult::Ready;
            }
            if state.closed {
                return WaitResult::Closed;
            }
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => return WaitResult::TimedOut,
                    left => Some(left),
                },
            };
            state.sleepers += 1;
            state = match left {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poison| poison.into_inner()),
                Some(left) => {
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|poison| poison.into_inner())
                        .0
                }
            };
            state.sleepers -= 1;
        }
    }
}

enum WaitResult {
    Ready,
    TimedOut,
    Closed,
}

/// Follows the committed head without reading records: for whoever only needs to know that
/// something committed, or that the ledger closed. Holds no reader, so it keeps neither the
/// writer nor the file open.
#[derive(Clone)]
pub struct HeadFollower {
    watch: Arc<HeadWatch>,
}

impl HeadFollower {
    pub(crate) fn new(watch: Arc<HeadWatch>) -> Self {
        HeadFollower { watch }
    }

    /// Waits until the committed head reaches `seq`; `None` once no more commits will come
    /// (the ledger closed or its writer is poisoned).
    pub fn wait_for(&self, seq: u64) -> Option<Head> {
        match self.watch.wait_past(seq, None) {
            WaitResult::Ready => Some(self.watch.head()),
            WaitResult::TimedOut | WaitResult::Closed => None,
        }
    }

    /// Blocks until no more commits will come: the ledger closed (its writer stopped and every
    /// handle was dropped) or its writer is poisoned.
    pub fn wait_closed(&self) {
        // No head reaches u64::MAX, so this returns only once the watch closes.
        let _ = self.watch.wait_past(u64::MAX, None);
    }
}

/// What [`Subscription::next`] found.
#[derive(Debug)]
pub enum Next {
    Record(Box<Record>),
    /// Nothing new before the timeout.
    TimedOut,
    /// History is exhausted and no writer in this process will append more.
    Closed,
}

/// History from a seq, then live records, in order, each exactly once.
pub struct Subscription {
    reader: Reader,
    watch: Arc<HeadWatch>,
    next_seq: u64,
    buffer: VecDeque<Record>,
}

impl Subscription {
    pub(crate) fn new(reader: Reader, watch: Arc<HeadWatch>, from_seq: u64) -> Self {
        Subscription {
            reader,
            watch,
            next_seq: from_seq.max(1),
            buffer: VecDeque::new(),
        }
    }

    /// The seq the next record will have.
    pub fn position(&self) -> u64 {
        self.next_seq - self.buffer.len() as u64
    }

    /// The next record; waits up to `timeout` (forever if `None`) for one to commit.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Next, Error> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            if let Some(record) = self.buffer.pop_front() {
                return Ok(Next::Record(Box::new(record)));
            }
            let head = self.watch.head();
            if head.seq >= self.next_seq {
                let last = head.seq.min(self.next_seq + TAIL_CHUNK_RECORDS - 1);
                let records = self.reader.range(self.next_seq..=last)?;
                self.next_seq = last + 1;
                self.buffer.extend(records);
                continue;
            }
            match self.watch.wait_past(self.next_seq, deadline) {
                WaitResult::Ready => continue,
                WaitResult::TimedOut => return Ok(Next::TimedOut),
                WaitResult::Closed => return Ok(Next::Closed),
            }
        }
    }
}
