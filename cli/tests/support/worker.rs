//! A worker process for the daemon tests, speaking to the daemon through the client library:
//! `lock-counter SOCKET AGENT FILE ROUNDS` increments a number in FILE while holding one lock;
//! `drain SOCKET AGENT HANG_AFTER` claims and completes tasks until none come for a while,
//! printing `completed ID`, and after HANG_AFTER tasks claims one more and hangs (`hanging ID`);
//! `append SOCKET AGENT` appends custom events until the daemon goes away, printing each
//! acknowledged seq.

use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteTask, CustomEvent, Heartbeat, Register, ReleaseLock,
};
use std::io::Write;
use std::path::PathBuf;

use fleetlog::client::{BlockingClient, Endpoint};
use fleetlog_ledger::Json;
use fleetlog_projections::{Command, Outcome};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client =
        |socket: &str| BlockingClient::new(Endpoint::Unix(PathBuf::from(socket))).expect("client");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["lock-counter", socket, agent, file, rounds] => {
            let client = client(socket);
            register(&client, agent);
            for _ in 0..rounds.parse::<u32>().expect("ROUNDS") {
                lock_and_increment(&client, agent, file);
            }
        }
        ["drain", socket, agent, hang_after] => {
            let client = client(socket);
            register(&client, agent);
            drain(&client, agent, hang_after.parse().expect("HANG_AFTER"));
        }
        ["append", socket, agent] => {
            let client = client(socket);
            register(&client, agent);
            append_until_gone(&client, agent);
        }
        _ => {
            eprintln!("usage: fleetlog-test-worker lock-counter|drain|append …");
            std::process::exit(2);
        }
    }
}

fn register(client: &BlockingClient, agent: &str) {
    for command in [
        Command::Register(Register {
            agent: agent.to_owned(),
            role: "worker".to_owned(),
            name: agent.to_owned(),
            working_on: String::new(),
            capabilities: vec![],
            metadata: Json::null(),
        }),
        Command::Heartbeat(Heartbeat {
            agent: agent.to_owned(),
            status: Some("ok".into()),
            progress: None,
            current_task: None,
            metadata: None,
            ttl_ms: 600_000,
        }),
    ] {
        client.execute(&command).expect("register");
    }
}

fn lock_and_increment(client: &BlockingClient, agent: &str, file: &str) {
    let acquire = Command::AcquireLock(AcquireLock {
        slots: None,
        agent: agent.to_owned(),
        resource: "counter".to_owned(),
        ttl_ms: 60_000,
        intent: "increment".to_owned(),
        wait_ms: Some(120_000),
    });
    let token = match client.execute(&acquire).expect("acquire") {
        Outcome::Lock { lock } => lock.token,
        other => panic!("expected a lock, got {other:?}"),
    };
    // Read-modify-write without any other protection: only the lock keeps it exact.
    let value: u64 = std::fs::read_to_string(file)
        .expect("read counter")
        .trim()
        .parse()
        .expect("a number");
    std::fs::write(file, (value + 1).to_string()).expect("write counter");
    let release = Command::ReleaseLock(ReleaseLock {
        agent: agent.to_owned(),
        resource: "counter".to_owned(),
        token,
    });
    client.execute(&release).expect("release");
}

fn drain(client: &BlockingClient, agent: &str, hang_after: u64) {
    let mut done = 0u64;
    loop {
        let claim = Command::Claim(Claim {
            agent: agent.to_owned(),
            tags: vec![],
            tag_match: Default::default(),
            task: None,
            lease_ttl_ms: 2_000,
            wait_ms: Some(5_000),
        });
        let task = match client.execute(&claim) {
            Ok(Outcome::Task { task: Some(task) }) => task,
            Ok(Outcome::Task { task: None }) => return,
            Err(error) if error.code() == Some("timed_out") => return,
            other => panic!("{agent}: claim failed: {other:?}"),
        };
        if done == hang_after {
            println!("hanging {}", task.id);
            std::io::stdout().flush().expect("stdout");
            loop {
                std::thread::park();
            }
        }
        let complete = Command::Complete(CompleteTask {
            agent: agent.to_owned(),
            task: task.id,
            result: Json::null(),
        });
        client.execute(&complete).expect("complete");
        println!("completed {}", task.id);
        done += 1;
    }
}

fn append_until_gone(client: &BlockingClient, agent: &str) {
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    for n in 0u64.. {
        let command = Command::Custom(CustomEvent {
            agent: agent.to_owned(),
            kind: "probe".to_owned(),
            payload: Json::from_value(&serde_json::json!(n)),
        });
        match client.execute(&command) {
            Ok(Outcome::Appended { seq }) => {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{seq}").expect("stdout");
            }
            _ => return,
        }
    }
}
