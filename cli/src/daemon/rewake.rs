//! Polling a connection again at once when it wakes itself while being polled, instead of
//! handing the wake to the runtime.
//!
//! Why: hyper hands a request's body to the handler through a channel whose receiver wakes the
//! sender (the connection's own task) when it takes the body. Every request therefore ends
//! with its task woken during its own poll, which tokio's multi-threaded scheduler treats as a
//! yield: the task is queued again and a parked worker is woken to steal it. On a two-vCPU
//! machine that is an eventfd write, two context switches and usually a preemption of the
//! thread that is answering, per request (measured in docs/performance.md).
//!
//! Invariant: no wake is lost. A wake that arrives while the inner future is being polled
//! (from this thread or another) makes [`Rewake`] poll it again before returning; a wake that
//! arrives otherwise goes to the task's waker. After [`REPOLLS_MAX`] polls in a row that each
//! woke themselves the task yields to the scheduler as it would have without this wrapper, so
//! a future that always wakes itself (tokio's cooperative budget running out) cannot starve
//! the worker's other tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row, within one poll by the runtime, before a self-waking future yields.
pub const REPOLLS_MAX: usize = 8;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// `inner`, polled again at once when it wakes itself during a poll.
pub struct Rewake<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The waker of the task that polls us, replaced when the task changes.
    task: Mutex<Option<Waker>>,
}

impl<F: Future> Rewake<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: Mutex::new(None),
        });
        Rewake {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&shared)),
            shared,
        }
    }

    /// The wrapped future, to call its own methods on.
    pub fn inner(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }
}

impl<F: Future> Future for Rewake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut task = this
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..REPOLLS_MAX {
            this.shared.state.store(POLLING, Ordering::SeqCst);
            if let Poll::Ready(output) = this.inner.as_mut().poll(&mut inner_cx) {
                this.shared.state.store(IDLE, Ordering::SeqCst);
                return Poll::Ready(output);
            }
            if this
                .shared
                .state
                .compare_exchange(POLLING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Poll::Pending;
            }
            // Woken while polled: poll again rather than round-trip through the scheduler.
        }
        this.shared.state.store(IDLE, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            match state {
                // The poller polls again once this poll returns: nothing to schedule.
                POLLING => match self.state.compare_exchange(
                    POLLING,
                    WOKEN,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
                // Already marked: the poller polls again, or gives up and wakes the task itself.
                WOKEN => return,
                _ => break,
            }
        }
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes the runtime would get.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself on its first `wakes` polls, then is ready.
    struct SelfWaking {
        wakes: usize,
        polls: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn a_wake_during_the_poll_is_served_by_polling_again_not_by_the_runtime() {
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut future = Rewake::new(SelfWaking { wakes: 3, polls: 0 });
        assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Ready(4));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_always_wakes_itself_yields_to_the_runtime() {
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut future = Rewake::new(SelfWaking {
            wakes: usize::MAX,
            polls: 0,
        });
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(future.inner.polls, REPOLLS_MAX);
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let stored: Arc<Mutex<Option<Waker>>> = Arc::default();
        let keep = Arc::clone(&stored);
        let mut future = Rewake::new(std::future::poll_fn(move |cx| {
            *keep.lock().expect("not poisoned") = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        let later = stored
            .lock()
            .expect("not poisoned")
            .clone()
            .expect("stored");
        later.wake_by_ref();
        later.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    /// Another thread wakes the future at random moments around its polls; every wake must
    /// lead to a poll that observes it (a lost one would leave the counter short forever).
    #[test]
    fn wakes_from_another_thread_are_never_lost() {
        use std::sync::atomic::AtomicU64;
        use std::sync::mpsc;

        const WAKES: u64 = 20_000;
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Waker>();
        let producer = {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                let waker = rx.recv().expect("the poller sends its waker");
                for _ in 0..WAKES {
                    sent.fetch_add(1, Ordering::SeqCst);
                    waker.wake_by_ref();
                    std::hint::spin_loop();
                }
            })
        };

        // The "runtime": a task that is polled whenever its waker fires.
        let notified = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
        struct Task(Arc<(Mutex<bool>, std::sync::Condvar)>);
        impl Wake for Task {
            fn wake(self: Arc<Self>) {
                let (flag, ready) = &*self.0;
                *flag.lock().expect("not poisoned") = true;
                ready.notify_one();
            }
        }
        let task = Waker::from(Arc::new(Task(Arc::clone(&notified))));
        let mut tx = Some(tx);
        let sent_by_poll = Arc::clone(&sent);
        let mut future = Rewake::new(std::future::poll_fn(move |cx| {
            if let Some(tx) = tx.take() {
                tx.send(cx.waker().clone()).expect("producer alive");
            }
            let seen = sent_by_poll.load(Ordering::SeqCst);
            if seen == WAKES {
                Poll::Ready(seen)
            } else {
                Poll::Pending
            }
        }));
        let mut cx = Context::from_waker(&task);
        loop {
            {
                let (flag, ready) = &*notified;
                let mut flag = flag.lock().expect("not poisoned");
                while !*flag {
                    let (next, waited) = ready
                        .wait_timeout(flag, std::time::Duration::from_secs(10))
                        .expect("not poisoned");
                    assert!(
                        !waited.timed_out(),
                        "a wake was lost: the task was never woken again"
                    );
                    flag = next;
                }
                *flag = false;
            }
            if let Poll::Ready(seen) = Pin::new(&mut future).poll(&mut cx) {
                assert_eq!(seen, WAKES);
                break;
            }
        }
        producer.join().expect("producer");
    }
}
