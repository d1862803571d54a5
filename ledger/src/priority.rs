//! Work that is not the writer's yields the CPU to it. On a small host a long analytic, a
//! snapshot being encoded or a state being copied can occupy a core for a long time; run at
//! normal priority it competes with the writer thread, and every acknowledgement waits for a
//! scheduler slice. Such threads run at a lower priority: they still get every idle cycle, but
//! a woken writer runs first.

/// The nice value background and query threads run at (0 is normal, 19 the lowest).
pub const BACKGROUND_THREAD_NICE: i32 = 10;

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lowers the calling thread's priority to [`BACKGROUND_THREAD_NICE`], once per thread. Best
/// effort: where the OS refuses, the thread runs at normal priority.
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
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                BACKGROUND_THREAD_NICE,
            );
        }
    });
}
