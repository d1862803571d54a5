//! The coordination API: open a ledger with the state machine attached, run commands (each
//! returns once its events are durable), query committed state, and rebuild state as of any
//! seq or time.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fleetlog_ledger::{Batch, Clock, Error as LedgerError, Head, Job, Ledger, Reader, SystemClock};

use crate::command::{Command, CommandError, Outcome};
use crate::machine::{Machine, Reply};
use crate::published::Published;
use crate::replay::Projection;
use crate::replay::{AsOf, Error, replay_range, resolve};
use crate::snapshot;
use crate::state::State;

/// Events between snapshots, by default, while the state is small: start-up replays at most
/// this many (a large state is snapshotted less often, see [`SNAPSHOT_BYTES_PER_EVENT_MAX`]).
pub const SNAPSHOT_EVERY_EVENTS_DEFAULT: u64 = 10_000;
/// Most snapshot bytes written per event appended. A state whose snapshot is larger than
/// `SNAPSHOT_EVERY_EVENTS_DEFAULT` times this is snapshotted every `size / this` events instead:
/// snapshots then never write more than about half what the log itself does, which the disk's
/// flushes (the writer's acknowledgements among them) would otherwise wait for. The tail replayed
/// on opening stays proportional to the live state, not to history.
pub const SNAPSHOT_BYTES_PER_EVENT_MAX: u64 = 64;

#[derive(Clone)]
pub struct CoordinatorOptions {
    /// Take a snapshot of all projection state every this many events (0: never).
    pub snapshot_every_events: u64,
    /// The writer's clock: the wall clock, or a manual one for tests and simulations.
    pub clock: Arc<dyn Clock>,
    /// Open without re-hashing the whole chain first (a broken chain is then served as is).
    pub skip_verify: bool,
    /// Hold the file exclusively (no other process may open it, not even to read), and
    /// acknowledge each batch from the write-ahead log: one in-place write and one fsync
    /// instead of a two-phase redb commit.
    pub exclusive: bool,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            snapshot_every_events: SNAPSHOT_EVERY_EVENTS_DEFAULT,
            clock: Arc::new(SystemClock),
            skip_verify: false,
            exclusive: false,
        }
    }
}

/// A command on its way to the writer; [`PendingCommand::wait`] returns its answer once its
/// events are durable (or it was refused).
/// Dropping a `PendingCommand` before its answer withdraws a parked wait: nothing is granted,
/// claimed or consumed for it afterwards.
#[must_use = "a command's answer is only known once wait() returns"]
pub struct PendingCommand {
    receiver: crossbeam_channel::Receiver<Result<Outcome, CommandError>>,
    _caller: CallerGuard,
}

impl PendingCommand {
    pub fn wait(mut self) -> Result<Outcome, CommandError> {
        let answer = self.receiver.recv().unwrap_or(Err(CommandError::Closing));
        self._caller.answered();
        answer
    }
}

/// Held by whoever waits for a command's answer. Dropped before [`CallerGuard::answered`], it
/// tells the writer that the caller went away, so a parked wait is withdrawn at once and never
/// served (a long-poll whose HTTP client disconnected, a CLI wait interrupted by Ctrl-C).
pub struct CallerGuard {
    gone: Arc<AtomicBool>,
    prune: Option<PruneRequest>,
}

impl CallerGuard {
    /// The answer arrived: dropping the guard now means nothing.
    pub fn answered(&mut self) {
        self.prune = None;
    }
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        if let Some(prune) = self.prune.take() {
            self.gone.store(true, Ordering::Release);
            prune.send();
        }
    }
}

/// How a command reaches the writer.
#[derive(Clone, Copy)]
enum Dispatch {
    /// Queued: commands sent together share a commit.
    Queue,
    /// Committed on the caller's thread if the writer is idle (the caller waits anyway).
    Now,
}

/// Asks the writer to drop the waits of callers that went away; many departures between two
/// batches cost one request.
#[derive(Clone)]
struct PruneRequest {
    ledger: Ledger,
    pending: Arc<AtomicBool>,
}

impl PruneRequest {
    fn send(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let job = PruneJob {
                pending: Arc::clone(&self.pending),
            };
            if self.ledger.send_job(Box::new(job)).is_err() {
                // The writer is gone, and every wait with it.
                self.pending.store(false, Ordering::Release);
            }
        }
    }
}

struct PruneJob {
    pending: Arc<AtomicBool>,
}

impl Job for PruneJob {
    fn run(self: Box<Self>, sequencer: &mut dyn Any, _: &mut Batch<'_, '_>) {
        self.pending.store(false, Ordering::Release);
        if let Some(machine) = sequencer.downcast_mut::<Machine>() {
            machine.prune_gone();
        }
    }

    fn reject(self: Box<Self>, _: LedgerError) {
        self.pending.store(false, Ordering::Release);
    }
}

struct CommandJob {
    command: Command,
    key: Option<String>,
    reply: Reply,
}

impl Job for CommandJob {
    fn run(self: Box<Self>, sequencer: &mut dyn Any, batch: &mut Batch<'_, '_>) {
        let machine = sequencer
            .downcast_mut::<Machine>()
            .expect("a Coordinator's ledger always runs a Machine");
        match self.key {
            Some(key) => machine.execute_keyed(self.command, key, self.reply, batch),
            None => machine.execute(self.command, self.reply, batch),
        }
    }

    fn reject(self: Box<Self>, error: LedgerError) {
        self.reply.answer(Err(CommandError::NotDurable {
            cause: error.to_string(),
        }));
    }
}

/// Does nothing itself: the batch it lands in runs the machine's tick first.
struct SyncJob {
    reply: crossbeam_channel::Sender<Result<(), CommandError>>,
}

impl Job for SyncJob {
    fn run(self: Box<Self>, _: &mut dyn Any, batch: &mut Batch<'_, '_>) {
        let reply = self.reply;
        batch.after_commit(move |commit| {
            let _ = reply.send(commit.map_err(|error| CommandError::NotDurable {
                cause: error.to_string(),
            }));
        });
    }

    fn reject(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(CommandError::NotDurable {
            cause: error.to_string(),
        }));
    }
}

/// A ledger with the coordination state machine attached. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    ledger: Ledger,
    committed: Arc<Published>,
    waiting: Arc<AtomicU64>,
    prune_pending: Arc<AtomicBool>,
}

impl Coordinator {
    /// Opens the ledger at `path` (creating it if missing), rebuilding state from the newest
    /// snapshot and the records after it.
    pub fn open(path: impl AsRef<Path>, options: CoordinatorOptions) -> Result<Coordinator, Error> {
        let (committed, waiting, make) = machine_factory(options.snapshot_every_events);
        let ledger = Ledger::open_with_access(
            path,
            true,
            options.exclusive,
            options.clock,
            !options.skip_verify,
            make,
        )?;
        Ok(Coordinator {
            ledger,
            committed,
            waiting,
            prune_pending: Arc::default(),
        })
    }

    /// As [`Coordinator::open`] on a new file whose writes fail when the switch says so.
    #[cfg(feature = "fault-injection")]
    pub fn create_with_faults(
        path: impl AsRef<Path>,
        options: CoordinatorOptions,
    ) -> Result<(Coordinator, fleetlog_ledger::FaultSwitch), Error> {
        let (committed, waiting, make) = machine_factory(options.snapshot_every_events);
        let (ledger, switch) = Ledger::create_with_faults_and(path, options.clock, make)?;
        let coordinator = Coordinator {
            ledger,
            committed,
            waiting,
            prune_pending: Arc::default(),
        };
        Ok((coordinator, switch))
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// "Now" for queries: the writer's ledger time, never before the newest committed record,
    /// so a query agrees with what the next append sees.
    pub fn now(&self) -> fleetlog_ledger::Timestamp {
        self.ledger.now().max(self.state().ts)
    }

    /// Runs `command` and returns its answer once its events are durable. Committed on this
    /// thread when the writer is idle (see [`Ledger::run_job`]).
    pub fn execute(&self, command: Command) -> Result<Outcome, CommandError> {
        self.pending(command, None, Dispatch::Now)?.wait()
    }

    /// Queues `command` without waiting, so one thread can keep many in flight.
    pub fn submit(&self, command: Command) -> Result<PendingCommand, CommandError> {
        self.submit_keyed(command, None)
    }

    /// As [`Coordinator::submit`], with an idempotency key (see [`Coordinator::submit_watched`]).
    pub fn submit_keyed(
        &self,
        command: Command,
        key: Option<String>,
    ) -> Result<PendingCommand, CommandError> {
        self.pending(command, key, Dispatch::Queue)
    }

    fn pending(
        &self,
        command: Command,
        key: Option<String>,
        dispatch: Dispatch,
    ) -> Result<PendingCommand, CommandError> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let answer = move |answer| {
            // A caller that stopped waiting is not an error.
            let _ = sender.send(answer);
        };
        let caller = self.watched(command, key, answer, dispatch)?;
        Ok(PendingCommand {
            receiver,
            _caller: caller,
        })
    }

    /// As [`Coordinator::submit_with`], for a caller that may go away: hold the returned guard
    /// while waiting and call [`CallerGuard::answered`] once the answer came. Dropping it
    /// earlier withdraws the command's wait, if it parked.
    ///
    /// With an idempotency `key`, a retry of the same command within the key's window appends
    /// nothing and gets the first answer, also across restarts; the same key with another
    /// command is refused with `IdempotencyConflict`.
    pub fn submit_watched(
        &self,
        command: Command,
        key: Option<String>,
        answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static,
    ) -> Result<CallerGuard, CommandError> {
        self.watched(command, key, answer, Dispatch::Queue)
    }

    /// As [`Coordinator::submit_watched`], for a caller that waits for the answer right away:
    /// when the writer is idle the command commits on this thread, and `answer` has been called
    /// before this returns. Blocks for one commit, so an async server calls it only for a
    /// request it answers alone (a batch's commands are queued, to share a commit).
    pub fn run_watched(
        &self,
        command: Command,
        key: Option<String>,
        answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static,
    ) -> Result<CallerGuard, CommandError> {
        self.watched(command, key, answer, Dispatch::Now)
    }

    fn watched(
        &self,
        command: Command,
        key: Option<String>,
        answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static,
        dispatch: Dispatch,
    ) -> Result<CallerGuard, CommandError> {
        let gone = Arc::new(AtomicBool::new(false));
        let watching = Arc::clone(&gone);
        let reply = Reply::watched(answer, move || watching.load(Ordering::Acquire));
        self.send_command(command, key, reply, dispatch)?;
        Ok(CallerGuard {
            gone,
            prune: Some(PruneRequest {
                ledger: self.ledger.clone(),
                pending: Arc::clone(&self.prune_pending),
            }),
        })
    }

    /// Queues `command`; `answer` is called once with its outcome, after the commit that decides
    /// it (for waits, when they are satisfied or time out). Never blocks on the answer, so an
    /// async server can hand it a oneshot sender.
    pub fn submit_with(
        &self,
        command: Command,
        answer: impl FnOnce(Result<Outcome, CommandError>) + Send + 'static,
    ) -> Result<(), CommandError> {
        self.send_command(command, None, Reply::new(answer), Dispatch::Queue)
    }

    fn send_command(
        &self,
        command: Command,
        key: Option<String>,
        reply: Reply,
        dispatch: Dispatch,
    ) -> Result<(), CommandError> {
        let job = Box::new(CommandJob {
            command,
            key,
            reply,
        });
        let sent = match dispatch {
            Dispatch::Queue => self.ledger.send_job(job),
            Dispatch::Now => self.ledger.run_job(job),
        };
        sent.map_err(|error| match error {
            LedgerError::WriterStopped => CommandError::Closing,
            other => CommandError::NotDurable {
                cause: other.to_string(),
            },
        })
    }

    /// Returns once every command sent before it has been answered and every expiry due by the
    /// writer's clock has been recorded: how tests with a manual clock make time pass.
    pub fn sync(&self) -> Result<(), CommandError> {
        let (reply, receiver) = crossbeam_channel::bounded(1);
        self.ledger
            .send_job(Box::new(SyncJob { reply }))
            .map_err(|_| CommandError::Closing)?;
        receiver.recv().unwrap_or(Err(CommandError::Closing))
    }

    /// Requests parked in waits right now (lock, claim, signal and approval waits).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The committed state as of the newest batch, for queries. An immutable copy: hold it as
    /// long as you like, the writer never waits for it.
    pub fn state(&self) -> Arc<State> {
        self.committed.get()
    }

    /// The state as it was at `as_of`, rebuilt from the newest snapshot before it. As of a
    /// time, that includes history imported later that had occurred by then (imported records
    /// are appended at import time but carry when they happened), so analytics of a past moment
    /// see the fleet's own history, imported or not.
    pub fn state_as_of(&self, as_of: AsOf) -> Result<State, Error> {
        let reader = self.ledger.reader();
        let seq = resolve(reader, as_of)?;
        let mut state = rebuild(reader, seq)?;
        if let AsOf::Time(at) = as_of {
            let (seq, ts) = (state.seq, state.ts);
            let last = reader.last_seq()?;
            reader.scan(seq + 1..=last, |record| {
                if record
                    .event
                    .occurred_at()
                    .is_some_and(|occurred| occurred <= at)
                {
                    state.apply(&record);
                }
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            // Still the state "as of seq": what was imported only fills in the past.
            (state.seq, state.ts) = (seq, ts);
        }
        Ok(state)
    }
}

/// The committed state readers share, and the function that builds the machine (rebuilding
/// state from the newest snapshot and the tail) when the ledger opens.
#[allow(clippy::type_complexity)]
fn machine_factory(
    snapshot_every_events: u64,
) -> (
    Arc<Published>,
    Arc<AtomicU64>,
    impl FnOnce(&Reader, Head) -> Result<Machine, Error>,
) {
    let committed = Arc::new(Published::default());
    let waiting = Arc::new(AtomicU64::new(0));
    let (shared, counter) = (Arc::clone(&committed), Arc::clone(&waiting));
    let make = move |reader: &Reader, head: Head| {
        let state = rebuild(reader, head.seq)?;
        shared.replace(state.clone());
        Ok(Machine::new(
            state,
            shared,
            counter,
            reader.snapshot_store().ok(),
            snapshot_every_events,
        ))
    };
    (committed, waiting, make)
}

/// State as of `seq`: the newest usable snapshot at or before it, then the records after it.
pub fn rebuild(reader: &Reader, seq: u64) -> Result<State, Error> {
    rebuild_reporting(reader, seq, &|_| {})
}

/// As [`rebuild`], calling `progress` with the seq reached now and then.
pub fn rebuild_reporting(
    reader: &Reader,
    seq: u64,
    progress: &dyn Fn(u64),
) -> Result<State, Error> {
    let mut state = reader
        .snapshot_at_or_before(seq)?
        .and_then(|(_, bytes)| snapshot::decode(&bytes))
        .unwrap_or_default();
    let from = state.seq + 1;
    progress(state.seq);
    replay_range(reader, &mut state, from, seq, progress)?;
    Ok(state)
}
