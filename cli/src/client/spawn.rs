//! A daemon on demand: when a command needs to write or wait and no daemon answers for the
//! file, one is started in the background for it (detached, logging to `<db>.log`, exiting
//! after `FLEETLOG_IDLE_EXIT_MS` with no client), so that several processes coordinate through
//! it instead of fighting over the file. Concurrent starters race safely: a loser's daemon
//! cannot open the file and exits, and every starter waits for the winner's socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::BlockingClient;
use crate::error::Error;

/// How long a daemon started on demand stays up with no client, parked wait or stream.
pub const IDLE_EXIT_MS_DEFAULT: u64 = 30_000;
/// How long a starter waits for the daemon to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Set (to anything but `0`) to keep commands in this process, on the file, as before.
pub const NO_DAEMON_ENV: &str = "FLEETLOG_NO_DAEMON";

/// Whether commands may start a daemon (not when `FLEETLOG_NO_DAEMON` is set).
pub fn enabled() -> bool {
    !std::env::var(NO_DAEMON_ENV).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Where a daemon started on demand writes its log.
pub fn log_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".log");
    db.with_file_name(name)
}

/// A client of the daemon serving `db`, starting one if none answers.
pub fn ensure(db: &Path) -> Result<BlockingClient, Error> {
    if let Some(client) = BlockingClient::for_db(db) {
        return Ok(client);
    }
    let idle_ms = std::env::var("FLEETLOG_IDLE_EXIT_MS")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(IDLE_EXIT_MS_DEFAULT);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(db))?;
    let program = std::env::current_exe()?;
    let mut command = Command::new(program);
    command
        .arg("--db")
        .arg(db)
        .args(["serve", "--listen", "127.0.0.1:0", "--idle-exit-ms"])
        .arg(idle_ms.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: Ctrl-C in the starter's terminal does not stop the fleet's daemon.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Some(client) = BlockingClient::for_db(db) {
            return Ok(client);
        }
        // Our daemon exited (it lost the race, or could not start): keep waiting for a
        // winner a little, then report with the log.
        if let Ok(Some(_)) = child.try_wait()
            && started.elapsed() > Duration::from_secs(3)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tail = std::fs::read_to_string(log_path(db)).unwrap_or_default();
    let last: Vec<&str> = tail.lines().rev().take(3).collect();
    Err(Error::Config(format!(
        "no daemon answered for {} (one was started on demand); its log {} ends with: {} — set {NO_DAEMON_ENV}=1 to work on the file in this process instead",
        db.display(),
        log_path(db).display(),
        last.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )))
}
