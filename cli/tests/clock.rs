//! The daemon under a wall clock that is stepped while it runs (libfaketime, where installed):
//! TTLs measure elapsed time, so a step back does not freeze them and a step forward does not
//! expire everything at once.

#[path = "support/harness.rs"]
mod harness;

use fleetlog_projections::commands::{AcquireLock, Heartbeat, Register};
use std::path::{Path, PathBuf};

use fleetlog::client::{BlockingClient, Method};
use fleetlog_ledger::Json;
use fleetlog_projections::{Command, CommandError, Outcome};
use harness::{Daemon, new_db};

/// Where Debian's `libfaketime` package puts the library (`.ci/run` installs it when it can).
fn libfaketime() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FLEETLOG_LIBFAKETIME").map(PathBuf::from),
        Some(PathBuf::from(
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        )),
        Some(PathBuf::from(
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        )),
    ];
    candidates.into_iter().flatten().find(|path| path.exists())
}

/// Sets the offset libfaketime applies to the wall clock (re-read on every call).
fn step_wall(offset_file: &Path, offset: &str) {
    std::fs::write(offset_file, offset).expect("the offset file is written");
}

fn lock(agent: &str, resource: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Command {
    Command::AcquireLock(AcquireLock {
        slots: None,
        agent: agent.into(),
        resource: resource.into(),
        ttl_ms,
        intent: String::new(),
        wait_ms,
    })
}

fn head_ts(client: &BlockingClient) -> i64 {
    let head = client
        .request(Method::GET, "/v1/head", None)
        .expect("the head is served")
        .get("ts")
        .and_then(|ts| ts.as_str())
        .map(str::to_owned)
        .expect("the head has a time");
    fleetlog_ledger::Timestamp::parse_rfc3339(&head)
        .expect("an RFC 3339 time")
        .as_micros()
}

#[test]
fn wall_clock_steps_under_libfaketime_neither_freeze_nor_mass_expire_ttls() {
    let Some(library) = libfaketime() else {
        eprintln!(
            "skipped: libfaketime is not installed (apt-get install faketime, or set FLEETLOG_LIBFAKETIME)"
        );
        return;
    };
    let (dir, db) = new_db();
    let offset_file = dir.path().join("faketime");
    step_wall(&offset_file, "+0");
    let library = library.to_string_lossy().into_owned();
    let offset_path = offset_file.to_string_lossy().into_owned();
    let daemon = Daemon::start_with_env(
        &db,
        &[],
        &[
            ("LD_PRELOAD", library.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            // A real step moves CLOCK_REALTIME only.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let client = daemon.client();
    for agent in ["a", "b"] {
        client
            .execute(&Command::Register(Register {
                agent: agent.into(),
                role: "test".into(),
                name: agent.into(),
                working_on: String::new(),
                capabilities: vec![],
                metadata: Json::null(),
            }))
            .expect("register");
    }
    let Ok(Outcome::Lock { .. }) = client.execute(&lock("a", "r", 1_000, None)) else {
        panic!("a takes the 1 s lock");
    };

    // Stepped back an hour: the 1 s lock still frees about 1 s later, so b's wait (10 s) wins.
    step_wall(&offset_file, "-1h");
    // Under a frozen TTL the wait would park for an hour: bound it here so the test fails
    // instead of hanging.
    let (answer, answered) = std::sync::mpsc::channel();
    let waiter = client.fork().expect("a second connection");
    std::thread::spawn(move || {
        let _ = answer.send(waiter.execute(&lock("b", "r", 60_000, Some(10_000))));
    });
    match answered.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Ok(Outcome::Lock { .. })) => {}
        Ok(Err(fleetlog::Error::Command(CommandError::TimedOut { .. })))
        | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("a wall clock stepped back froze the 1 s TTL")
        }
        other => panic!("unexpected answer: {other:?}"),
    }

    // Stepped forward a day: nothing expires at once, and records do not jump a day ahead.
    let before = head_ts(&client);
    step_wall(&offset_file, "+1d");
    client
        .execute(&Command::Heartbeat(Heartbeat {
            agent: "a".into(),
            status: Some("working".into()),
            progress: None,
            current_task: None,
            metadata: None,
            ttl_ms: 30_000,
        }))
        .expect("a heartbeat after the step forward");
    let after = head_ts(&client);
    assert!(
        after - before < 60_000_000,
        "records jumped {} s ahead with the wall clock",
        (after - before) / 1_000_000
    );
    let locks = client
        .request(Method::GET, "/v1/locks", None)
        .expect("locks");
    assert!(
        locks.to_string().contains("\"holder\":\"b\""),
        "b's 60 s lock is still held after the wall jumped a day: {locks}"
    );
    let agents = client
        .request(Method::GET, "/v1/agents/b", None)
        .expect("agent b");
    assert_eq!(agents["alive"], true, "{agents}");
}
