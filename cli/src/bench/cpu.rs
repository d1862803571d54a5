//! CPU time spent during a run, split between the server and its clients, so that every bench
//! shows where the time goes beside how fast it went: the daemon `bench` starts runs on named
//! threads of this process (`fleetlog-…`), Redis in a child process, and everything else in
//! this process is the load generator.

use std::path::Path;

/// CPU seconds (user + system) of a process, or of one thread, from its `/proc` `stat` file.
fn cpu_seconds(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); `rest` starts at field 3.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// The threads of this process that serve rather than load: the in-process daemon's runtime,
/// writer, fan-out, snapshot and query threads all carry the `fleetlog-` prefix.
fn server_threads_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("fleetlog-"))
        })
        .filter_map(|task| cpu_seconds(&task.path().join("stat")))
        .sum()
}

/// CPU readings at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    process: f64,
    server: f64,
}

/// Where a run's CPU went, in microseconds per op.
#[derive(Clone, Copy, Debug)]
pub struct CpuPerOp {
    pub server_us: Option<f64>,
    pub client_us: Option<f64>,
}

impl CpuMark {
    /// This process, with the server's share taken from its `fleetlog-` threads, or (with
    /// `server_pid`) from another process.
    pub fn now(server_pid: Option<u32>) -> Option<CpuMark> {
        let process = cpu_seconds(Path::new("/proc/self/stat"))?;
        let server = match server_pid {
            Some(pid) => cpu_seconds(&Path::new("/proc").join(pid.to_string()).join("stat"))?,
            None => server_threads_seconds(),
        };
        Some(CpuMark { process, server })
    }

    /// CPU per op from this mark to `end`. A server in another process is not part of this
    /// one's time; one in this process is.
    pub fn per_op(&self, end: &CpuMark, ops: u64, server_in_process: bool) -> CpuPerOp {
        let ops = ops.max(1) as f64;
        let server = (end.server - self.server).max(0.0);
        let process = (end.process - self.process).max(0.0);
        let client = match server_in_process {
            true => (process - server).max(0.0),
            false => process,
        };
        CpuPerOp {
            server_us: Some(server * 1e6 / ops),
            client_us: Some(client * 1e6 / ops),
        }
    }
}

impl CpuPerOp {
    /// All of it as the server's, for a run with no load generator to split off: embedded, the
    /// ledger commits on its callers' threads, and a bench client there does nothing else.
    pub fn all_server(self) -> CpuPerOp {
        CpuPerOp {
            server_us: Some(self.server_us.unwrap_or(0.0) + self.client_us.unwrap_or(0.0)),
            client_us: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_in_this_processs_cpu_time() {
        let start = CpuMark::now(None).expect("/proc is readable");
        let began = std::time::Instant::now();
        let mut spin = 0u64;
        while began.elapsed() < std::time::Duration::from_millis(200) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let end = CpuMark::now(None).expect("/proc is readable");
        let spent = start.per_op(&end, 1, true);
        // 200 ms of spinning on this (unnamed, so client) thread; ticks are 10 ms.
        let client = spent.client_us.expect("measured");
        assert!(client >= 100_000.0, "{client} µs");
        assert!(spent.server_us.expect("measured") < client);
    }
}
