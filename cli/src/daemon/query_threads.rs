//! Queries yield the CPU to the writer. On a small host a long analytic can occupy a core for
//! seconds; run at normal priority it competes with the writer thread, and every
//! acknowledgement waits for a scheduler slice. Threads that answer queries (and read history
//! for `/v1/events` and SSE) therefore run at a lower priority: they still get every idle
//! cycle, but a woken writer runs first.

/// The nice value query threads run at (0 is normal, 19 the lowest).
pub const QUERY_THREAD_NICE: i32 = 10;

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lowers the calling thread's priority to [`QUERY_THREAD_NICE`], once per thread. Best
/// effort: where the OS refuses, the query runs at normal priority.
pub fn yield_cpu_to_the_writer() {
    LOWERED.with(|lowered| {
        if lowered.replace(true) {
            return;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: gettid has no preconditions; setpriority on our own thread id changes only
        // this thread's scheduling weight (on Linux, nice is per thread).
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, QUERY_THREAD_NICE);
        }
    });
}
