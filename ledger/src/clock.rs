//! Where the writer gets the time. Only the writer reads a clock (to stamp batches and to know
//! when the next deadline is due); folds take time from records.
//!
//! Ledger time measures elapsed time: it starts at `max(wall, head.ts)` when a writer opens
//! and then advances with a monotonic clock, so a wall clock stepped back cannot freeze TTLs
//! and one stepped forward cannot expire every agent and lock at once. The wall clock is read
//! once, at open. A manual clock lets tests drive the wall and the monotonic clock apart.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::event::Timestamp;
use crate::limits;

/// The two clocks ledger time is made from.
pub trait Clock: Send + Sync + 'static {
    /// The wall clock: where ledger time starts when a writer opens.
    fn wall(&self) -> Timestamp;
    /// Microseconds on a clock that never steps, from an arbitrary origin.
    fn monotonic_micros(&self) -> i64;
}

/// The system's clocks: `CLOCK_REALTIME` and `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic_micros(&self) -> i64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let elapsed = ORIGIN.get_or_init(Instant::now).elapsed().as_micros();
        i64::try_from(elapsed).unwrap_or(i64::MAX)
    }
}

/// Clocks that move only when told to. [`ManualClock::advance_ms`] is time passing (both
/// clocks move); [`ManualClock::step_wall_ms`] is someone setting the wall clock.
#[derive(Clone, Debug)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    monotonic: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn starting_at(start: Timestamp) -> Self {
        ManualClock {
            wall: Arc::new(AtomicI64::new(start.as_micros())),
            monotonic: Arc::default(),
        }
    }

    /// Time passes: both clocks move forward by `millis`.
    pub fn advance_ms(&self, millis: u64) {
        let micros = i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.wall.fetch_add(micros, Ordering::SeqCst);
        self.monotonic.fetch_add(micros, Ordering::SeqCst);
    }

    /// The wall clock is set forward (positive) or back (negative); no time passes.
    pub fn step_wall_ms(&self, millis: i64) {
        self.wall
            .fetch_add(millis.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall(&self) -> Timestamp {
        Timestamp(self.wall.load(Ordering::SeqCst))
    }

    fn monotonic_micros(&self) -> i64 {
        self.monotonic.load(Ordering::SeqCst)
    }
}

/// The time a writer stamps with: read from the wall once, then advanced by the monotonic
/// clock. Never earlier than the head it was opened on.
pub struct LedgerTime {
    clock: Arc<dyn Clock>,
    start: Timestamp,
    start_monotonic: i64,
    opened: OpenedTime,
}

/// How ledger time related to the wall clock when the writer opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedTime {
    /// The wall clock at open.
    pub wall: Timestamp,
    /// The newest record's time at open.
    pub head: Timestamp,
    /// Where ledger time started: `max(wall, head)`.
    pub start: Timestamp,
}

impl OpenedTime {
    /// How far the head was ahead of the wall clock, when more than
    /// [`limits::HEAD_AHEAD_OF_WALL_MS_MAX`]: ledger time then starts in the wall's future (a
    /// wall clock that was once set forward, or a ledger copied from another machine) and TTLs
    /// run from there.
    pub fn head_ahead_ms(&self) -> Option<u64> {
        let ahead = self.head.as_micros().saturating_sub(self.wall.as_micros()) / 1000;
        let ahead = u64::try_from(ahead).unwrap_or(0);
        (ahead > limits::HEAD_AHEAD_OF_WALL_MS_MAX).then_some(ahead)
    }
}

impl LedgerTime {
    pub fn start(clock: Arc<dyn Clock>, head: Timestamp) -> Self {
        let wall = clock.wall();
        let start_monotonic = clock.monotonic_micros();
        let start = wall.max(head);
        LedgerTime {
            clock,
            start,
            start_monotonic,
            opened: OpenedTime { wall, head, start },
        }
    }

    /// Ledger time now.
    pub fn now(&self) -> Timestamp {
        let elapsed = self
            .clock
            .monotonic_micros()
            .saturating_sub(self.start_monotonic)
            .max(0);
        Timestamp(self.start.as_micros().saturating_add(elapsed)).min(Timestamp::MAX)
    }

    /// The wall clock minus ledger time, in microseconds: how far the wall has been stepped
    /// (or has drifted) since the writer opened.
    pub fn wall_offset_micros(&self) -> i64 {
        self.clock
            .wall()
            .as_micros()
            .saturating_sub(self.now().as_micros())
    }

    pub fn opened(&self) -> OpenedTime {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Timestamp = Timestamp(1_795_392_000_000_000);

    #[test]
    fn wall_steps_do_not_move_ledger_time() {
        let clock = ManualClock::starting_at(START);
        let time = LedgerTime::start(Arc::new(clock.clone()), Timestamp(0));
        clock.advance_ms(1_000);
        clock.step_wall_ms(-3_600_000);
        assert_eq!(time.now(), START.plus_millis(1_000));
        clock.step_wall_ms(86_400_000 + 3_600_000);
        clock.advance_ms(500);
        assert_eq!(time.now(), START.plus_millis(1_500));
        assert_eq!(time.wall_offset_micros(), 86_400_000_000);
    }

    #[test]
    fn a_head_in_the_future_is_where_time_resumes_and_is_reported() {
        let clock = ManualClock::starting_at(START);
        let head = START.plus_millis(86_400_000);
        let time = LedgerTime::start(Arc::new(clock.clone()), head);
        assert_eq!(time.now(), head);
        assert_eq!(time.opened().head_ahead_ms(), Some(86_400_000));
        let near = LedgerTime::start(Arc::new(clock), START.plus_millis(10));
        assert_eq!(near.now(), START.plus_millis(10));
        assert_eq!(near.opened().head_ahead_ms(), None);
    }
}
