//! Several processes coordinate through the CLI with no `serve` step: the first command that
//! writes or waits starts a daemon for the file, which the others find; `fleetlog daemon`
//! reports and stops it; `FLEETLOG_NO_DAEMON=1` keeps the old single-process behaviour.

use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "support/harness.rs"]
mod harness;

use harness::{FLEETLOG, new_db};

fn cli(db: &Path, args: &[&str]) -> Output {
    Command::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("FLEETLOG_NO_DAEMON")
        .output()
        .expect("the CLI runs")
}

/// Stops the daemon started on demand, whatever the test's outcome.
struct Stops<'a>(&'a Path);

impl Drop for Stops<'_> {
    fn drop(&mut self) {
        let _ = cli(self.0, &["daemon", "stop"]);
    }
}

#[test]
fn a_waiting_process_is_woken_by_a_send_from_another_with_no_daemon_started_by_hand() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    let _stop = Stops(&db);
    for agent in ["producer", "consumer"] {
        assert!(cli(&db, &["register", "--agent", agent]).status.success());
    }
    let waiting = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args([
            "--json", "signal", "wait", "--agent", "consumer", "--kind", "go",
        ])
        .args(["--timeout-ms", "20000"])
        .env_remove("FLEETLOG_NO_DAEMON")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the waiter starts");
    let sent = cli(
        &db,
        &[
            "signal",
            "send",
            "--agent",
            "producer",
            "--to",
            "consumer",
            "--kind",
            "go",
            "--payload",
            "7",
        ],
    );
    assert!(sent.status.success(), "{sent:?}");
    let woken = waiting.wait_with_output().expect("the waiter ends");
    assert!(woken.status.success(), "{woken:?}");
    let signal: serde_json::Value = serde_json::from_slice(&woken.stdout).expect("JSON");
    assert_eq!(signal["signal"]["payload"], 7, "{signal}");
    let status = cli(&db, &["--json", "daemon", "status"]);
    assert!(status.status.success(), "{status:?}");
}

#[test]
fn six_concurrent_first_writers_race_to_one_daemon_and_all_succeed() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    let _stop = Stops(&db);
    // No daemon yet: all six start one at once.
    let writers: Vec<_> = (0..6)
        .map(|n| {
            Command::new(FLEETLOG)
                .arg("--db")
                .arg(&db)
                .args(["register", "--agent", &format!("w{n}")])
                .env_remove("FLEETLOG_NO_DAEMON")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a writer starts")
        })
        .collect();
    for writer in writers {
        let out = writer.wait_with_output().expect("the writer ends");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agents: serde_json::Value =
        serde_json::from_slice(&cli(&db, &["--json", "agents"]).stdout).expect("agents");
    assert_eq!(
        agents["agents"].as_array().map(Vec::len),
        Some(6),
        "{agents}"
    );
}

#[test]
fn daemon_stop_ends_it_and_no_daemon_keeps_commands_in_process() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    assert!(cli(&db, &["register", "--agent", "a"]).status.success());
    assert_eq!(cli(&db, &["daemon", "status"]).status.code(), Some(0));
    assert!(cli(&db, &["daemon", "stop"]).status.success());
    assert_eq!(cli(&db, &["daemon", "status"]).status.code(), Some(3));
    let embedded = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["heartbeat", "--agent", "a"])
        .env("FLEETLOG_NO_DAEMON", "1")
        .output()
        .expect("runs");
    assert!(embedded.status.success(), "{embedded:?}");
    assert_eq!(
        cli(&db, &["daemon", "status"]).status.code(),
        Some(3),
        "FLEETLOG_NO_DAEMON=1 started none"
    );
}

#[test]
fn a_daemon_started_by_hand_takes_over_from_one_started_on_demand() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    assert!(cli(&db, &["register", "--agent", "a"]).status.success());
    let on_demand = cli(&db, &["--json", "daemon", "status"]);
    let on_demand: serde_json::Value = serde_json::from_slice(&on_demand.stdout).expect("JSON");
    assert_eq!(on_demand["on_demand"], true, "{on_demand}");
    let daemon = harness::Daemon::start(&db, &[]);
    let status = cli(&db, &["--json", "daemon", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["on_demand"], false, "{status}");
    assert_eq!(status["pid"], daemon.child.id(), "{status}");
    assert_eq!(status["seq"], 1, "the registration is there: {status}");
}

#[test]
fn fleetlog_url_reaches_a_daemon_elsewhere_with_its_token() {
    let (_dir, db) = new_db();
    let daemon = harness::Daemon::start(&db, &["--token", "s3cret"]);
    let (_other, elsewhere) = new_db();
    let remote = |token: &str, args: &[&str]| {
        Command::new(FLEETLOG)
            .arg("--db")
            .arg(&elsewhere)
            .args(args)
            .env("FLEETLOG_URL", format!("http://{}", daemon.address))
            .env("FLEETLOG_TOKEN", token)
            .output()
            .expect("runs")
    };
    let registered = remote("s3cret", &["register", "--agent", "far"]);
    assert!(registered.status.success(), "{registered:?}");
    let listed = remote("s3cret", &["--json", "agents"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("\"far\""),
        "{listed:?}"
    );
    let refused = remote("wrong", &["agents"]);
    assert!(!refused.status.success());
    assert!(!elsewhere.exists(), "nothing was created locally");
}

/// Two clients start a daemon at once; the loser waits for the file the winner holds. Told to
/// stop while it waits (a test's teardown, `daemon stop`, a shutdown), it leaves at once without
/// binding a socket or creating anything — it does not wait for the file, then serve, then stop,
/// which raced with whoever was deleting the directory.
#[test]
fn a_daemon_waiting_for_the_file_leaves_at_once_when_told_to_stop() {
    let (dir, db) = new_db();
    let winner = harness::Daemon::start(&db, &["--idle-exit-ms", "60000"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let loser_socket = dir.path().join("loser.sock");
    let mut loser = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--idle-exit-ms", "60000", "--listen", &listen])
        .arg("--socket")
        .arg(&loser_socket)
        .stderr(Stdio::null())
        .spawn()
        .expect("the second daemon starts");
    // It binds its TCP port before opening the file, so once the port answers it is waiting.
    let bound = std::time::Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            bound.elapsed() < std::time::Duration::from_secs(10),
            "the second daemon never bound its port"
        );
        std::thread::yield_now();
    }
    let signalled = Command::new("kill")
        .args(["-TERM", &loser.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let asked = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = loser.try_wait().expect("wait") {
            break exit;
        }
        // Well under ON_DEMAND_OPEN_PATIENCE (5 s), after which it would give up anyway.
        if asked.elapsed() > std::time::Duration::from_secs(3) {
            let _ = loser.kill();
            panic!("the waiting daemon ignored SIGTERM for 3 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(exit.success(), "a requested stop exits 0: {exit}");
    assert!(!loser_socket.exists(), "it bound no socket");
    winner
        .client()
        .request(hyper::Method::GET, "/v1/head", None)
        .expect("the winner still serves");
}
