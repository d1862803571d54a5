//! Guards the daemon end to end, with real processes: a consumer blocked in `signal wait` is
//! woken by a producer's send; 8 processes share one lock without losing an update; 8 workers
//! drain a queue and a SIGKILLed worker's task is recovered through its lease; a SIGKILLed daemon
//! loses no acknowledged event; an SSE subscriber resumes across a restart; bad requests get the
//! right status and change nothing. The edge: a long-poll whose client gave up (HTTP timeout,
//! Ctrl-C) consumes nothing; a timed-out wait answers 200; a keyed retry appends once across a
//! SIGKILL; 5,000 idle connections lock nobody out; SIGTERM ends within the grace period; a
//! client's kept connection survives a restart without sending anything twice.

use fleetlog_projections::commands::{
    AcquireLock, Claim, CustomEvent, Enqueue, ReceiveSignal, Register, ReleaseLock, SendSignal,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command as Process, Stdio};
use std::sync::mpsc;

use fleetlog::client::{BlockingClient, Endpoint};
use fleetlog_ledger::{Event, Json, Ledger};
use fleetlog_projections::{Command, Outcome, TaskSpec};

#[path = "support/harness.rs"]
mod harness;

use harness::*;
const WORKER: &str = env!("CARGO_BIN_EXE_fleetlog-test-worker");

fn cli(db: &Path, args: &[&str]) -> std::process::Output {
    Process::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("the CLI runs")
}

/// A fresh ledger served by a daemon, with `agents` registered: what most tests start from.
fn fleet(agents: &[&str]) -> (tempfile::TempDir, PathBuf, Daemon, BlockingClient) {
    let (dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    let client = daemon.client();
    for agent in agents {
        register(&client, agent);
    }
    (dir, db, daemon, client)
}

fn register(client: &BlockingClient, agent: &str) {
    client
        .execute(&Command::Register(Register {
            agent: agent.to_owned(),
            role: "test".to_owned(),
            name: agent.to_owned(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null(),
        }))
        .expect("register");
}

fn worker(args: &[&str]) -> Child {
    Process::new(WORKER)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the worker starts")
}

fn lines_of(stdout: ChildStdout) -> impl Iterator<Item = String> {
    BufReader::new(stdout).lines().map_while(Result::ok)
}

#[test]
fn a_consumer_blocked_in_signal_wait_is_woken_by_a_producer_process() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    let _daemon = Daemon::start(&db, &[]);
    for agent in ["producer", "consumer"] {
        assert!(cli(&db, &["register", "--agent", agent]).status.success());
    }
    let consumer = Process::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args([
            "--json",
            "signal",
            "wait",
            "--agent",
            "consumer",
            "--kind",
            "task_complete",
            "--timeout-ms",
            "30000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the consumer starts");
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
            "task_complete",
            "--payload",
            r#"{"task": 7}"#,
        ],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let received = consumer.wait_with_output().expect("the consumer returns");
    assert!(received.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&received.stdout).expect("JSON");
    assert_eq!(answer["signal"]["payload"], serde_json::json!({"task": 7}));
    assert_eq!(answer["signal"]["from"], "producer");
    // A wait with nothing coming times out with exit code 3.
    let timed_out = cli(
        &db,
        &[
            "signal",
            "wait",
            "--agent",
            "consumer",
            "--kind",
            "never",
            "--timeout-ms",
            "200",
        ],
    );
    assert_eq!(timed_out.status.code(), Some(3));
}

#[test]
fn eight_processes_share_one_lock_two_hundred_times_each_without_losing_an_update() {
    const PROCESSES: usize = 8;
    const ROUNDS: u64 = 200;
    let (dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "0").expect("write");
    let socket = daemon.socket.to_str().expect("utf-8").to_owned();
    let workers: Vec<Child> = (0..PROCESSES)
        .map(|n| {
            worker(&[
                "lock-counter",
                &socket,
                &format!("w{n}"),
                counter.to_str().expect("utf-8"),
                &ROUNDS.to_string(),
            ])
        })
        .collect();
    for mut child in workers {
        assert!(child.wait().expect("worker exits").success());
    }
    let total: u64 = std::fs::read_to_string(&counter)
        .expect("read")
        .parse()
        .expect("number");
    assert_eq!(total, PROCESSES as u64 * ROUNDS);
    // The log agrees: no grant while another holder held the lock. The daemon holds the file
    // exclusively, so it is read once the daemon is gone.
    let mut daemon = daemon;
    daemon.terminate();
    let ledger = Ledger::open_read_only(&db).expect("read-only once the daemon stopped");
    fleetlog_suite::check_log(ledger.reader());
}

#[test]
fn eight_workers_drain_a_thousand_tasks_and_a_killed_workers_task_is_recovered() {
    const TASKS: u64 = 1_000;
    let (_dir, db, daemon, client) = fleet(&["boss"]);
    for n in 0..TASKS {
        client
            .execute(&Command::Enqueue(Enqueue {
                agent: "boss".into(),
                spec: TaskSpec::new(format!("task {n}")),
            }))
            .expect("enqueue");
    }
    let socket = daemon.socket.to_str().expect("utf-8").to_owned();
    let mut victim = worker(&["drain", &socket, "w0", "3"]);
    let hung_task: u64 = lines_of(victim.stdout.take().expect("stdout"))
        .find_map(|line| {
            line.strip_prefix("hanging ")
                .map(|id| id.parse().expect("task id"))
        })
        .expect("the victim claims a task and hangs");
    victim.kill().expect("SIGKILL the worker mid-task");
    victim.wait().expect("reap");
    let survivors: Vec<Child> = (1..8)
        .map(|n| worker(&["drain", &socket, &format!("w{n}"), "18446744073709551615"]))
        .collect();
    for mut child in survivors {
        assert!(child.wait().expect("worker exits").success());
    }
    let stats = client
        .query(&fleetlog::wire::Query::QueueStats)
        .expect("stats");
    assert_eq!(stats["by_state"]["completed"], TASKS, "{stats}");
    let mut daemon = daemon;
    daemon.terminate();
    let ledger = Ledger::open_read_only(&db).expect("read-only once the daemon stopped");
    fleetlog_suite::check_log(ledger.reader());
    let reader = ledger.reader();
    let records = reader
        .range(1..=reader.last_seq().expect("last"))
        .expect("read");
    let expired = records.iter().any(|r| matches!(&r.event, Event::TaskLeaseExpired { task, agent, .. } if *task == hung_task && agent == "w0"));
    assert!(expired, "the killed worker's lease expiry is recorded");
    let finisher = records
        .iter()
        .find(|r| matches!(&r.event, Event::TaskCompleted { task, .. } if *task == hung_task))
        .map(|r| r.actor.clone());
    assert!(
        finisher.is_some_and(|agent| agent != "w0"),
        "another worker finished it"
    );
}

/// A shared daemon acknowledges each batch from a durable (two-phase) redb commit.
#[test]
fn a_sigkilled_shared_daemon_loses_no_acknowledged_event_and_verifies_after_restart() {
    sigkilled_daemon_loses_nothing(&["--shared"]);
}

/// A daemon holding the file exclusively (the default) acknowledges from its write-ahead log;
/// redb's commits since the last checkpoint die with it. A daemon restarted shared (so this
/// test can read the file beside it) re-applies them.
#[test]
fn a_sigkilled_daemon_loses_no_acknowledged_event_and_a_shared_restart_recovers_them() {
    sigkilled_daemon_loses_nothing(&[]);
}

fn sigkilled_daemon_loses_nothing(flags: &[&str]) {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, flags);
    let socket = daemon.socket.to_str().expect("utf-8").to_owned();
    let (acks, acked) = mpsc::channel::<u64>();
    let mut appenders = Vec::new();
    for n in 0..4 {
        let mut child = worker(&["append", &socket, &format!("appender-{n}")]);
        let mut lines = lines_of(child.stdout.take().expect("stdout"));
        assert_eq!(lines.next().as_deref(), Some("ready"));
        let acks = acks.clone();
        std::thread::spawn(move || {
            lines.filter_map(|line| line.parse().ok()).for_each(|seq| {
                let _ = acks.send(seq);
            })
        });
        appenders.push(child);
    }
    drop(acks);
    let mut seen: Vec<u64> = acked.iter().take(300).collect();
    daemon.kill();
    for mut child in appenders {
        child
            .wait()
            .expect("appenders stop when the daemon is gone");
    }
    seen.extend(acked.iter());
    // The stale socket is replaced and the file recovered on restart.
    let daemon = Daemon::start(&db, &["--shared"]);
    let client = daemon.client();
    let last = client
        .request(hyper::Method::GET, "/v1/head", None)
        .expect("head")["seq"]
        .as_u64()
        .expect("seq");
    assert!(
        seen.iter().all(|seq| *seq <= last),
        "an acknowledged event is missing after the kill"
    );
    let ledger = Ledger::open_read_only(&db).expect("read-only");
    for seq in &seen {
        let record = ledger.reader().get(*seq).expect("read").expect("present");
        assert!(matches!(
            record.event,
            Event::Custom { .. } | Event::AgentRegistered { .. } | Event::AgentHeartbeat { .. }
        ));
    }
    let verify = cli(&db, &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn an_sse_subscriber_resumes_across_a_daemon_restart_with_its_last_event_id() {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, &[]);
    let client = daemon.client();
    register(&client, "writer");
    let append = |client: &BlockingClient, n: u64| {
        client
            .execute(&Command::Custom(CustomEvent {
                agent: "writer".into(),
                kind: "n".into(),
                payload: Json::from_value(&serde_json::json!(n)),
            }))
            .expect("append")
    };
    let (seen_tx, seen_rx) = mpsc::channel::<u64>();
    let socket = daemon.socket.clone();
    let first_session = std::thread::spawn(move || {
        let follower = BlockingClient::new(Endpoint::Unix(socket)).expect("client");
        let mut seqs = Vec::new();
        let _ = follower.follow(1, |record| {
            seqs.push(record.seq);
            let _ = seen_tx.send(record.seq);
            true
        });
        seqs
    });
    for n in 0..50 {
        append(&client, n);
    }
    assert_eq!(
        seen_rx.iter().take(51).last(),
        Some(51),
        "the live stream delivered every event"
    );
    daemon.terminate();
    let mut seqs = first_session.join().expect("follower");
    let resume_from = seqs.last().copied().expect("some events") + 1;

    let daemon = Daemon::start(&db, &[]);
    let client = daemon.client();
    for n in 50..100 {
        append(&client, n);
    }
    let follower = daemon.client();
    follower
        .follow(resume_from, |record| {
            seqs.push(record.seq);
            record.seq < 101
        })
        .expect("resumed stream");
    assert_eq!(
        seqs,
        (1..=101).collect::<Vec<u64>>(),
        "every event once, in order"
    );
}

#[test]
fn malformed_unknown_oversized_and_unauthorised_requests_are_refused_and_change_nothing() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &["--token", "s3cret"]);
    let client = daemon.client();
    register(&client, "a");
    let acquire = |agent: &str| {
        Command::AcquireLock(AcquireLock {
            slots: None,
            agent: agent.into(),
            resource: "db".into(),
            ttl_ms: 60_000,
            intent: String::new(),
            wait_ms: None,
        })
    };
    assert!(matches!(
        client.execute(&acquire("a")).expect("acquire"),
        Outcome::Lock { .. }
    ));
    let head = || {
        client
            .request(hyper::Method::GET, "/v1/head", None)
            .expect("head")["seq"]
            .as_u64()
            .expect("seq")
    };
    let before = head();

    let lock = br#"{"agent":"a","resource":"other","ttl_ms":1000}"#;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (post("/v1/locks", "wrong", lock), 401, "unauthorized"),
        (post("/v1/locks", "s3cret", b"{nope"), 400, "malformed"),
        (
            post(
                "/v1/locks",
                "s3cret",
                br#"{"agent":"a","resource":"x","ttl":5}"#,
            ),
            400,
            "unknown field",
        ),
        (
            post(
                "/v1/locks",
                "s3cret",
                br#"{"agent":"ghost","resource":"x","ttl_ms":5}"#,
            ),
            404,
            "unknown_agent",
        ),
        (post("/v1/nowhere", "s3cret", b"{}"), 404, "not_found"),
        (
            post("/v1/locks", "s3cret", &vec![b' '; 2 * 1024 * 1024]),
            413,
            "too_large",
        ),
        (
            post("/v1/tasks/abc/complete", "s3cret", b"{}"),
            400,
            "not a number",
        ),
    ];
    for (request, status, needle) in cases {
        let (got, body) = raw_http(&daemon.address, &request);
        assert_eq!(got, status, "{body}");
        assert!(body.contains(needle), "{needle:?} not in {body}");
    }
    let no_token = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(&daemon.address, no_token).0, 401);
    // A conflict is 409 and names the holder.
    let tcp = BlockingClient::new(Endpoint::Tcp {
        address: daemon.address.clone(),
        token: Some("s3cret".into()),
    })
    .expect("client");
    register(&tcp, "b");
    match tcp.execute(&acquire("b")) {
        Err(fleetlog::Error::Api {
            status: 409,
            code,
            message,
        }) => {
            assert_eq!(code, "lock_held");
            assert!(message.contains("\"a\""), "{message}");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    assert_eq!(head(), before + 1, "only b's registration was appended");
}

#[test]
fn a_batch_answers_each_command_on_its_own_in_order() {
    let (_dir, _db, _daemon, client) = fleet(&[]);
    let custom = |agent: &str, n: u64| {
        Command::Custom(CustomEvent {
            agent: agent.into(),
            kind: "n".into(),
            payload: Json::from_value(&serde_json::json!(n)),
        })
    };
    let commands = vec![
        Command::Register(Register {
            agent: "a".into(),
            role: String::new(),
            name: String::new(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null(),
        }),
        custom("a", 1),
        custom("ghost", 2),
        custom("a", 3),
    ];
    let answers = client.execute_batch(&commands).expect("batch");
    assert_eq!(answers.len(), 4);
    let seqs: Vec<Option<u64>> = answers
        .iter()
        .map(|answer| match answer {
            Ok(Outcome::Appended { seq }) => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        [Some(1), Some(2), None, Some(3)],
        "in order; the refusal appended nothing"
    );
    assert!(
        matches!(&answers[2], Err(fleetlog::Error::Api { code, .. }) if code == "unknown_agent")
    );
    let too_many = serde_json::json!({ "commands": vec![serde_json::to_value(custom("a", 0)).expect("json"); 1_001] });
    match client.request(fleetlog::client::Method::POST, "/v1/batch", Some(&too_many)) {
        Err(fleetlog::Error::Api { status: 413, .. }) => {}
        other => panic!("expected 413, got {other:?}"),
    }
}

/// Polls the daemon's health until `waiters` parked waits remain (bounded: 10 s).
fn await_waiters(client: &BlockingClient, waiters: u64) {
    let started = std::time::Instant::now();
    loop {
        let health = client
            .request(hyper::Method::GET, "/v1/health", None)
            .expect("health");
        if health["waiters"].as_u64() == Some(waiters) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "waiters stayed at {} (wanted {waiters})",
            health["waiters"]
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn send_signal(client: &BlockingClient, from: &str, to: &str, payload: serde_json::Value) {
    client
        .execute(&Command::SendSignal(SendSignal {
            agent: from.to_owned(),
            kind: "job".to_owned(),
            target: fleetlog_ledger::SignalTarget::Agent(to.to_owned()),
            payload: Json::from_value(&payload),
            ttl_ms: 60_000,
            correlation_id: None,
        }))
        .expect("send");
}

fn check_signal(client: &BlockingClient, agent: &str) -> Option<serde_json::Value> {
    let outcome = client
        .execute(&Command::ReceiveSignal(ReceiveSignal {
            agent: agent.to_owned(),
            filter: fleetlog_projections::signals::SignalFilter {
                kind: "job".to_owned(),
                ..Default::default()
            },
            consume: true,
            wait_ms: None,
            ack_ms: None,
        }))
        .expect("check");
    match outcome {
        Outcome::Signal { signal } => signal.map(|signal| signal.payload.to_value()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_poll_whose_http_client_gave_up_consumes_nothing() {
    let (_dir, _db, daemon, client) = fleet(&["producer", "consumer"]);
    {
        // An HTTP client whose own timeout (300 ms) is shorter than its wait_ms.
        let mut stream = std::net::TcpStream::connect(&daemon.address).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .expect("timeout");
        let body = br#"{"agent":"consumer","filter":{"kind":"job"},"wait_ms":60000}"#;
        stream
            .write_all(&post("/v1/signals/receive", "", body))
            .expect("send");
        let mut buffer = [0u8; 64];
        assert!(stream.read(&mut buffer).is_err(), "nothing is answered yet");
        await_waiters(&client, 1);
    }
    await_waiters(&client, 0);
    send_signal(&client, "producer", "consumer", serde_json::json!("kept"));
    assert_eq!(
        check_signal(&client, "consumer"),
        Some(serde_json::json!("kept"))
    );
}

/// Starts `fleetlog ARGS` (a blocking wait), lets it park, interrupts it as Ctrl-C would, and
/// returns once the daemon has withdrawn its wait.
fn ctrl_c_a_cli_wait(db: &Path, client: &BlockingClient, args: &[&str]) {
    let mut waiting = Process::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("the wait starts");
    await_waiters(client, 1);
    let status = Process::new("kill")
        .args(["-INT", &waiting.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    waiting.wait().expect("the wait ends");
    await_waiters(client, 0);
}

#[test]
fn ctrl_c_on_a_cli_signal_wait_leaves_the_signal_for_the_next_receiver() {
    let (_dir, db, _daemon, client) = fleet(&["producer", "consumer"]);
    ctrl_c_a_cli_wait(
        &db,
        &client,
        &[
            "signal",
            "wait",
            "--agent",
            "consumer",
            "--kind",
            "job",
            "--timeout-ms",
            "60000",
        ],
    );
    send_signal(&client, "producer", "consumer", serde_json::json!(7));
    let checked = cli(
        &db,
        &[
            "--json", "signal", "check", "--agent", "consumer", "--kind", "job",
        ],
    );
    assert!(checked.status.success(), "{checked:?}");
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        text.contains("\"payload\": 7") || text.contains("\"payload\":7"),
        "{text}"
    );
}

#[test]
fn ctrl_c_on_a_cli_lock_wait_grants_the_released_lock_to_nobody_gone() {
    let (_dir, db, _daemon, client) = fleet(&[]);
    for agent in ["holder", "quitter", "next"] {
        register(&client, agent);
    }
    let acquire = |agent: &str| {
        client.execute(&Command::AcquireLock(AcquireLock {
            slots: None,
            agent: agent.to_owned(),
            resource: "src/lib.rs".to_owned(),
            ttl_ms: 60_000,
            intent: String::new(),
            wait_ms: None,
        }))
    };
    let Ok(Outcome::Lock { lock }) = acquire("holder") else {
        panic!("the first acquire is granted");
    };
    ctrl_c_a_cli_wait(
        &db,
        &client,
        &[
            "lock",
            "acquire",
            "--agent",
            "quitter",
            "--resource",
            "src/lib.rs",
            "--wait-ms",
            "60000",
        ],
    );
    client
        .execute(&Command::ReleaseLock(ReleaseLock {
            agent: "holder".to_owned(),
            resource: "src/lib.rs".to_owned(),
            token: lock.token,
        }))
        .expect("release");
    match acquire("next") {
        Ok(Outcome::Lock { lock }) => assert_eq!(lock.holder, "next"),
        other => panic!("the lock went to the interrupted waiter: {other:?}"),
    }
}

#[test]
fn ctrl_c_on_a_cli_claim_wait_leaves_the_task_unclaimed_with_no_attempt_counted() {
    let (_dir, db, _daemon, client) = fleet(&["quitter", "worker"]);
    ctrl_c_a_cli_wait(
        &db,
        &client,
        &["task", "claim", "--agent", "quitter", "--wait-ms", "60000"],
    );
    client
        .execute(&Command::Enqueue(Enqueue {
            agent: "worker".to_owned(),
            spec: TaskSpec::new("build"),
        }))
        .expect("enqueue");
    let claimed = client
        .execute(&Command::Claim(Claim {
            agent: "worker".to_owned(),
            tags: vec![],
            tag_match: Default::default(),
            task: None,
            lease_ttl_ms: 60_000,
            wait_ms: None,
        }))
        .expect("claim");
    match claimed {
        Outcome::Task { task: Some(task) } => {
            assert_eq!(task.holder.as_deref(), Some("worker"));
            assert_eq!(task.attempts, 1, "the interrupted claim counted no attempt");
        }
        other => panic!("the task went to the interrupted waiter: {other:?}"),
    }
}

#[test]
fn a_long_poll_that_times_out_is_answered_200_with_timed_out() {
    let (_dir, db, daemon, _client) = fleet(&["consumer"]);
    let body = br#"{"agent":"consumer","filter":{"kind":"job"},"wait_ms":50}"#;
    let (status, response) = raw_http(&daemon.address, &post("/v1/signals/receive", "", body));
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("\"timed_out\":true"), "{response}");
    assert!(response.contains("\"signal\":null"), "{response}");
    let waited = cli(
        &db,
        &[
            "signal",
            "wait",
            "--agent",
            "consumer",
            "--kind",
            "job",
            "--timeout-ms",
            "50",
        ],
    );
    assert_eq!(
        waited.status.code(),
        Some(3),
        "the CLI keeps exit 3 on a timeout"
    );
}

#[test]
fn a_retry_with_the_same_idempotency_key_appends_once_across_a_sigkill() {
    retry_appends_once_across_a_sigkill(&[]);
}

/// The write-ahead log carries idempotency keys with the records they name.
#[test]
fn an_exclusive_daemon_remembers_idempotency_keys_across_a_sigkill() {
    retry_appends_once_across_a_sigkill(&["--exclusive"]);
}

fn retry_appends_once_across_a_sigkill(flags: &[&str]) {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, flags);
    register(&daemon.client(), "a");
    let body = br#"{"agent":"a","kind":"deploy","payload":{"v":1}}"#;
    let with_key = |path: &str, key: &str, body: &[u8]| {
        let mut request = post(path, "", body);
        let at = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        let header = format!("\r\nIdempotency-Key: {key}");
        request.splice(at..at, header.bytes());
        request
    };
    let keyed = |body: &[u8]| with_key("/v1/events", "deploy-1", body);
    // A command's key is kept apart from a raw append's: both must survive.
    let task = br#"{"agent":"a","spec":{"title":"once"}}"#;
    let (status, first) = raw_http(&daemon.address, &keyed(body));
    assert_eq!(status, 200, "{first}");
    let (status, first_task) = raw_http(&daemon.address, &with_key("/v1/tasks", "task-1", task));
    assert_eq!(status, 201, "{first_task}");
    daemon.kill();
    let daemon = Daemon::start(&db, flags);
    let (status, again) = raw_http(&daemon.address, &keyed(body));
    assert_eq!(status, 200, "{again}");
    let answer = |response: &str| response.split("\r\n\r\n").nth(1).map(str::to_owned);
    assert_eq!(
        answer(&first),
        answer(&again),
        "the retry gets the first answer"
    );
    let (status, task_again) = raw_http(&daemon.address, &with_key("/v1/tasks", "task-1", task));
    assert_eq!(status, 201, "the first answer again: {task_again}");
    let task_of = |response: &str| -> serde_json::Value {
        let body = response.split("\r\n\r\n").nth(1).expect("a body");
        serde_json::from_str::<serde_json::Value>(body).expect("json")["task"]["id"].clone()
    };
    assert_eq!(task_of(&first_task), task_of(&task_again), "{task_again}");
    let other = br#"{"agent":"a","kind":"deploy","payload":{"v":2}}"#;
    let (status, conflict) = raw_http(&daemon.address, &keyed(other));
    assert_eq!(status, 409, "{conflict}");
    assert!(conflict.contains("deploy-1"), "{conflict}");
    let head = daemon
        .client()
        .request(hyper::Method::GET, "/v1/head", None)
        .expect("head");
    assert_eq!(
        head["seq"], 3,
        "one registration, one deploy, one task: {head}"
    );
}

#[test]
fn thousands_of_idle_connections_do_not_lock_out_a_client_on_either_listener() {
    let (_dir, _db, daemon, _client) = fleet(&["a"]);
    let idle: Vec<std::net::TcpStream> = (0..5_000)
        .filter_map(|_| std::net::TcpStream::connect(&daemon.address).ok())
        .collect();
    assert!(
        idle.len() >= 4_000,
        "only {} connections opened",
        idle.len()
    );
    let body = br#"{"agent":"a","kind":"k"}"#;
    let (status, response) = raw_http(&daemon.address, &post("/v1/events", "", body));
    assert_eq!(status, 200, "TCP still serves: {response}");
    // A new client: the first one's pooled connection may have idled past the header timeout.
    daemon
        .client()
        .execute(&Command::Custom(CustomEvent {
            agent: "a".to_owned(),
            kind: "k".to_owned(),
            payload: Json::null(),
        }))
        .expect("the Unix socket still serves");
    drop(idle);
}

#[test]
fn sigterm_with_a_half_sent_request_exits_within_the_grace_period() {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, &["--shutdown-grace-ms", "500"]);
    let mut half = std::net::TcpStream::connect(&daemon.address).expect("connect");
    half.write_all(b"POST /v1/events HTTP/1.1\r\nContent-Le")
        .expect("half a header");
    let mut body_pending = std::net::TcpStream::connect(&daemon.address).expect("connect");
    body_pending
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .expect("half a body");
    let started = std::time::Instant::now();
    daemon.terminate();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The daemon's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

#[test]
fn stuck_sse_readers_cost_bounded_memory_while_large_records_are_appended() {
    const READERS: u64 = 32;
    const RECORDS: usize = 100;
    const PAYLOAD_BYTES: usize = 256 * 1024;
    let (_dir, _db, daemon, client) = fleet(&["a"]);
    let append = |n: usize| {
        client
            .execute(&Command::Custom(CustomEvent {
                agent: "a".to_owned(),
                kind: "blob".to_owned(),
                payload: Json::from_value(&serde_json::json!("x".repeat(n))),
            }))
            .expect("append");
    };
    // Fill the daemon's page cache (bounded by STORE_CACHE_BYTES) first, so the growth
    // measured below is what the stuck readers hold.
    let warm = fleetlog_ledger::limits::STORE_CACHE_BYTES / PAYLOAD_BYTES + RECORDS;
    for _ in 0..warm {
        append(PAYLOAD_BYTES);
    }
    let before = rss_bytes(daemon.child.id());
    let from = format!(
        "GET /v1/events/stream?from={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        warm + 2
    );
    let stuck: Vec<std::net::TcpStream> = (0..READERS)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&daemon.address).expect("connect");
            stream.write_all(from.as_bytes()).expect("subscribe");
            stream
        })
        .collect();
    for _ in 0..RECORDS {
        append(PAYLOAD_BYTES);
    }
    let grown = rss_bytes(daemon.child.id()).saturating_sub(before);
    // Each stuck reader may hold its unsent budget, a read-ahead of a quarter of it, and the
    // record being encoded; the rest is slack for the allocator and thread stacks.
    let budget = fleetlog::daemon::SSE_UNSENT_BYTES_MAX as u64;
    let per_reader = budget + budget / 4 + 2 * PAYLOAD_BYTES as u64;
    let bound = READERS * per_reader + 64 * 1024 * 1024;
    eprintln!(
        "RSS grew {} MiB with {READERS} stuck readers (bound {} MiB)",
        grown >> 20,
        bound >> 20
    );
    assert!(grown < bound, "stuck readers hold more than their budget");
    let (status, response) = raw_http(
        &daemon.address,
        b"GET /v1/events?from=1&limit=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "the daemon still serves: {response}");
    drop(stuck);
}

/// `serve` holds the file exclusively unless `--shared`, so no other process may open it.
/// Every command that reads the log (`head`, `events`, `stats`, `export`, `verify`,
/// `replay`) then goes through the daemon, and must answer exactly as it does on the file
/// once the daemon is gone.
#[test]
fn reads_beside_a_daemon_holding_the_file_go_through_it_and_answer_as_the_file_does() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    for args in [
        &["register", "--agent", "a"][..],
        &["register", "--agent", "b"],
        &["lock", "acquire", "--agent", "a", "--resource", "r1"],
        &["task", "add", "--agent", "b", "--title", "t1"],
        &[
            "append",
            "--agent",
            "a",
            "--kind",
            "note",
            "--payload",
            "{\"n\":1}",
        ],
        &[
            "append",
            "--agent",
            "b",
            "--kind",
            "note",
            "--payload",
            "{\"n\":2}",
        ],
    ] {
        let out = cli(&db, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    match Ledger::open_read_only(&db) {
        Err(fleetlog_ledger::Error::HeldExclusively { .. }) => {}
        Err(other) => panic!("expected HeldExclusively, got {other}"),
        Ok(_) => panic!("the daemon holds the file exclusively by default"),
    }
    let json = |args: &[&str]| -> serde_json::Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = cli(&db, &with_json);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: {error}: {out:?}"))
    };
    let head = json(&["head"]);
    let seq = head["seq"].as_u64().expect("seq");
    assert!(seq >= 6, "{head}");
    let third = json(&["events", "--from", "3", "--limit", "1"]);
    let third_ts = third[0]["ts"].as_str().expect("ts").to_owned();
    let third_hash = third[0]["hash"].as_str().expect("hash").to_owned();
    let anchor = format!("3:{third_hash}");
    let wrong_anchor = format!("3:{}", "0".repeat(64));
    let reads: Vec<Vec<String>> = [
        vec!["head"],
        vec!["events"],
        vec!["events", "--limit", "2"],
        vec!["events", "--from", "2", "--limit", "3"],
        vec!["events", "--until", &third_ts],
        vec!["events", "--since", &third_ts, "--limit", "2"],
        vec!["events", "--to", "4", "--limit", "2"],
        vec!["stats"],
        vec!["stats", "--as-of", "3"],
        vec!["stats", "--as-of", &third_ts],
        vec!["export"],
        vec!["verify"],
        vec!["verify", "--from", &anchor],
        vec!["verify", "--from", &wrong_anchor],
        vec!["replay", "--as-of", "4"],
        vec!["replay", "--as-of", &third_ts],
        vec!["--json", "head"],
        vec!["--json", "events", "--limit", "3"],
        vec!["--json", "stats", "--as-of", "5"],
        vec!["--json", "verify"],
        vec!["--json", "replay"],
    ]
    .iter()
    .map(|args| args.iter().map(|arg| (*arg).to_owned()).collect())
    .collect();
    let run_all = || -> Vec<(Option<i32>, String)> {
        reads
            .iter()
            .map(|args| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = cli(&db, &args);
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
            .collect()
    };
    let through_daemon = run_all();
    let (status, metrics) = raw_http(
        &daemon.address,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{metrics}");
    for line in [
        "fleetlog_limit{name=\"wal_bytes\"} 33554432",
        "fleetlog_limit{name=\"wal_checkpoint_interval_ms\"} 1000",
        "fleetlog_limit{name=\"verify_runs_max\"} 1",
        "fleetlog_limit{name=\"published_catch_up_records_max\"} 8192",
        "fleetlog_checkpoints_total ",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    let disk_bytes = |file: &str| -> u64 {
        let prefix = format!("fleetlog_disk_bytes{{file=\"{file}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
    };
    // The log is preallocated and zero-filled whole; the ledger file holds at least a page.
    assert!(disk_bytes("wal") >= 33554432, "{metrics}");
    assert!(disk_bytes("ledger") >= 4096, "{metrics}");
    // A graceful stop checkpoints: the file is whole without its write-ahead log, so a
    // read-only open needs no recovery.
    let mut daemon = daemon;
    daemon.terminate();
    let ledger = Ledger::open_read_only(&db).expect("no recovery needed after a clean stop");
    assert_eq!(ledger.head().expect("head").seq, seq);
    drop(ledger);
    let on_the_file = run_all();
    for ((args, daemon), file) in reads.iter().zip(&through_daemon).zip(&on_the_file) {
        assert_eq!(
            daemon, file,
            "{args:?} through the daemon, then on the file"
        );
    }
    let code = |args: &[&str]| {
        let at = reads
            .iter()
            .position(|read| read.iter().map(String::as_str).eq(args.iter().copied()))
            .expect("one of the reads");
        on_the_file[at].0
    };
    assert_eq!(code(&["verify"]), Some(0));
    assert_eq!(code(&["verify", "--from", &anchor]), Some(0));
    assert_eq!(code(&["verify", "--from", &wrong_anchor]), Some(1));
    let exported = &on_the_file[reads.iter().position(|r| r == &["export"]).expect("export")].1;
    assert_eq!(
        exported.lines().count() as u64,
        seq + 1,
        "a header and every record"
    );
}

/// `FLEETLOG_SHARED=1` (a number, as environment flags usually are) serves the file shared, so
/// other processes open it read-only beside the daemon; a value that is no boolean and
/// contradictory modes are refused before anything starts.
#[test]
fn the_shared_mode_is_chosen_by_flag_or_environment_and_contradictions_are_refused() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start_with_env(&db, &[], &[("FLEETLOG_SHARED", "1")]);
    let client = daemon.client();
    register(&client, "a");
    let ledger = Ledger::open_read_only(&db).expect("shared: readable beside the daemon");
    assert!(ledger.head().expect("head").seq >= 1);
    drop(ledger);
    drop(daemon);
    let serve = |env: &[(&str, &str)], flags: &[&str]| {
        let out = Process::new(FLEETLOG)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .envs(env.iter().copied())
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let banana = serve(&[("FLEETLOG_SHARED", "banana")], &[]);
    assert!(banana.contains("banana"), "{banana}");
    let both = serve(&[("FLEETLOG_SHARED", "true")], &["--exclusive"]);
    assert!(both.contains("opposite modes"), "{both}");
    let missing = Process::new(FLEETLOG)
        .arg("--db")
        .arg(db.with_file_name("no-such-dir").join("x.db"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && stderr.contains("does not exist")
            && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}

/// `GET /v1/verify` reports on the chain the daemon holds; a bad anchor is a clear 400.
#[test]
fn the_daemon_verifies_the_chain_it_holds_and_refuses_a_malformed_anchor() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    let client = daemon.client();
    register(&client, "a");
    let report = client
        .request(hyper::Method::GET, "/v1/verify", None)
        .expect("verifies");
    assert!(report["problem"].is_null(), "{report}");
    assert!(
        report["checked"].as_u64().expect("checked") >= 1,
        "{report}"
    );
    let refused = client
        .request(hyper::Method::GET, "/v1/verify?from=banana", None)
        .expect_err("not a checkpoint");
    assert!(refused.to_string().contains("banana"), "{refused}");
}

/// The daemon closes a keep-alive connection that sends nothing for `HEADER_READ_TIMEOUT`; a
/// blocking client (whose runtime sleeps between requests, so it never sees the close) must not
/// send its next request on that dead connection. An agent that beats every 15 s is normal.
#[test]
fn a_client_idle_past_the_daemons_keep_alive_limit_still_gets_answers() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    let client = BlockingClient::new(Endpoint::Unix(daemon.socket.clone())).expect("client");
    register(&client, "slow");
    // Waiting out a timeout is what is tested here, not a race being hidden.
    std::thread::sleep(
        fleetlog::daemon::HEADER_READ_TIMEOUT + std::time::Duration::from_millis(500),
    );
    let answer = client.execute(&Command::Custom(CustomEvent {
        agent: "slow".into(),
        kind: "after_a_pause".into(),
        payload: Json::null(),
    }));
    assert!(matches!(answer, Ok(Outcome::Appended { .. })), "{answer:?}");
}

/// The blocking client keeps its connection between requests. A daemon that went away (and a
/// new one on the same socket) must cost nothing: the next command goes out once, on a new
/// connection, and is appended exactly once.
#[test]
fn a_kept_client_connection_survives_a_daemon_restart_and_sends_each_command_once() {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, &[]);
    let client = BlockingClient::new(Endpoint::Unix(daemon.socket.clone())).expect("client");
    register(&client, "steady");
    let custom = |kind: &str| {
        Command::Custom(CustomEvent {
            agent: "steady".into(),
            kind: kind.into(),
            payload: Json::null(),
        })
    };
    let Outcome::Appended { seq: before } = client.execute(&custom("before")).expect("append")
    else {
        panic!("a custom event is appended");
    };
    daemon.terminate();
    let restarted = Daemon::start(&db, &[]);
    let answer = client.execute(&custom("after_restart"));
    assert!(
        matches!(answer, Ok(Outcome::Appended { seq }) if seq == before + 1),
        "the first command after a restart is appended once, right after the last: {answer:?}"
    );
    let head = client
        .request(fleetlog::client::Method::GET, "/v1/head", None)
        .expect("head");
    assert_eq!(head["seq"].as_u64(), Some(before + 1), "{head}");
    drop(restarted);
}

/// On a one-CPU machine tokio runs one worker. Committing a request on it would leave every
/// other connection unread for the commit, so concurrent clients would each commit alone.
/// They must share commits instead.
#[test]
fn concurrent_clients_share_commits_on_a_daemon_with_one_runtime_worker() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start_with_env(&db, &[], &[("TOKIO_WORKER_THREADS", "1")]);
    let client = daemon.client();
    let writer = |client: &BlockingClient| {
        let health = client
            .request(fleetlog::client::Method::GET, "/v1/health", None)
            .expect("health");
        (
            health["writer"]["events"].as_u64().expect("events"),
            health["writer"]["commits"].as_u64().expect("commits"),
        )
    };
    const CLIENTS: usize = 16;
    const APPENDS: usize = 20;
    for n in 0..CLIENTS {
        register(&client, &format!("agent-{n}"));
    }
    let (events_before, commits_before) = writer(&client);
    std::thread::scope(|scope| {
        for n in 0..CLIENTS {
            let own = client.fork().expect("a client of its own");
            scope.spawn(move || {
                for i in 0..APPENDS {
                    let answer = own.execute(&Command::Custom(CustomEvent {
                        agent: format!("agent-{n}"),
                        kind: "tick".into(),
                        payload: Json::from_value(&serde_json::json!(i)),
                    }));
                    assert!(matches!(answer, Ok(Outcome::Appended { .. })), "{answer:?}");
                }
            });
        }
    });
    let (events, commits) = writer(&client);
    let (events, commits) = (events - events_before, commits - commits_before);
    assert_eq!(events, (CLIENTS * APPENDS) as u64);
    assert!(
        commits < events,
        "{events} appends from {CLIENTS} concurrent clients took {commits} commits: none shared one"
    );
}

/// `serve --socket` elsewhere: commands given only `--db` must still find the daemon (they look
/// at `<db>.sock`; without it a read waited 15 s and failed, and a write tried to start a
/// second daemon on a file the first one holds). The link it makes goes with it.
#[test]
fn a_daemon_on_a_socket_elsewhere_is_found_by_commands_given_only_the_database() {
    let (_dir, db) = new_db();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let socket = elsewhere.path().join("custom.sock");
    let mut daemon = Daemon::start(&db, &["--socket", socket.to_str().expect("utf-8 path")]);
    let default = fleetlog::wire::socket_path(&db);
    assert_eq!(
        std::fs::read_link(&default).expect("the default path is a link"),
        socket
    );
    let registered = cli(&db, &["register", "--agent", "worker-1"]);
    assert!(registered.status.success(), "{registered:?}");
    let head = cli(&db, &["head", "--json"]);
    assert!(head.status.success(), "{head:?}");
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).expect("JSON");
    assert_eq!(
        head["seq"], 1,
        "the registration, read through the daemon: {head}"
    );
    // The daemon on the custom socket is the one that appended it.
    let direct = BlockingClient::new(Endpoint::Unix(socket.clone())).expect("client");
    let body = direct
        .request(hyper::Method::GET, "/v1/head", None)
        .expect("the daemon answers on its own socket");
    assert_eq!(body["seq"], 1, "{body}");
    daemon.terminate();
    assert!(
        std::fs::symlink_metadata(&default).is_err(),
        "the link goes with the daemon"
    );
    assert!(!socket.exists(), "and so does its socket");
}

/// An empty ledger has no time of its own: `replay` prints none, on the file as through a
/// daemon (on the file it printed the epoch).
#[test]
fn replay_of_an_empty_ledger_prints_the_same_on_the_file_as_through_a_daemon() {
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    let on_file = cli(&db, &["replay"]);
    let daemon = Daemon::start(&db, &[]);
    let through = cli(&db, &["replay"]);
    drop(daemon);
    assert!(on_file.status.success(), "{on_file:?}");
    assert!(through.status.success(), "{through:?}");
    let text = String::from_utf8_lossy(&on_file.stdout);
    assert!(
        !text.contains("1970"),
        "no epoch for an empty ledger: {text}"
    );
    assert_eq!(
        text,
        String::from_utf8_lossy(&through.stdout),
        "the same on the file as through the daemon"
    );
}

/// A command that found no daemon reads the file; a daemon started meanwhile holds it
/// exclusively. The read must go through that daemon, not fail with "held exclusively".
#[test]
fn a_read_that_finds_a_daemon_started_meanwhile_goes_through_it() {
    use fleetlog::client::backend::Backend;
    use fleetlog::wire::Query;
    let (_dir, db) = new_db();
    assert!(cli(&db, &["init"]).status.success());
    let backend = Backend::connect(&db, false).expect("connects");
    assert!(
        !backend.is_daemon(),
        "no daemon yet: the backend reads the file"
    );
    let daemon = Daemon::start(&db, &[]);
    register(&daemon.client(), "late-reader");
    let now = backend
        .query_as_of(&Query::Status, None)
        .expect("read through the daemon");
    assert_eq!(now["seq"], 1, "{now}");
    let then = backend
        .query_as_of(&Query::Status, Some("1"))
        .expect("a past point, through the daemon");
    assert_eq!(then["seq"], 1, "{then}");
}
