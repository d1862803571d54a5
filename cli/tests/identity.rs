//! Agent identity against the real binary: a process may act only as the agent whose
//! credential it holds (or as the operator); trusted-host mode is explicit and loopback-only;
//! the CLI keeps and sends credentials by itself.

use std::path::Path;
use std::process::{Command as Process, Output};

use serde_json::{Value, json};

#[path = "support/harness.rs"]
mod harness;

use harness::*;

/// Posts `body` to `path` with `credential` (if any); the status and the JSON answer.
fn post_as(daemon: &Daemon, credential: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(credential) = credential {
        headers.push(("Fleetlog-Credential", credential));
    }
    let body = body.to_string();
    let (status, _, answer) = http(&daemon.address, "POST", path, &headers, body.as_bytes());
    (status, answer)
}

fn command(daemon: &Daemon, credential: Option<&str>, body: Value) -> (u16, Value) {
    post_as(daemon, credential, "/v1/commands", body)
}

fn get(daemon: &Daemon, path: &str) -> Value {
    http(&daemon.address, "GET", path, &[], b"").2
}

/// Registers `agent`; its credential.
fn register(daemon: &Daemon, agent: &str) -> String {
    let (status, answer) = command(
        daemon,
        None,
        json!({"command": "register", "agent": agent, "role": "worker"}),
    );
    assert_eq!(status, 201, "{answer}");
    answer["credential"]
        .as_str()
        .unwrap_or_else(|| panic!("a registration answers a credential: {answer}"))
        .to_owned()
}

/// The refusal every impersonation must get: 403 `wrong_credential` naming the agent.
fn assert_impersonation_refused(answer: (u16, Value), agent: &str) {
    let (status, body) = answer;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "wrong_credential", "{body}");
    assert_eq!(body["details"]["agent"], agent, "{body}");
}

fn head(daemon: &Daemon) -> u64 {
    get(daemon, "/v1/head")["seq"].as_u64().expect("a head seq")
}

#[test]
fn an_agent_cannot_act_as_another_release_consume_approve_deregister_complete() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &["--auth", "agents"]);
    let a = register(&daemon, "a");
    let b = register(&daemon, "b");
    let human = register(&daemon, "human");

    // Release: b knows a's lock token (the lock list shows it) but is not a.
    let (status, lock) = command(
        &daemon,
        Some(&a),
        json!({"command": "acquire_lock", "agent": "a", "resource": "db", "ttl_ms": 60000}),
    );
    assert_eq!(status, 200, "{lock}");
    let token = lock["lock"]["token"].as_u64().expect("a fencing token");
    let release =
        json!({"command": "release_lock", "agent": "a", "resource": "db", "token": token});
    let before = head(&daemon);
    let (status, body) = command(&daemon, None, release.clone());
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "credential_required", "{body}");
    assert_impersonation_refused(command(&daemon, Some(&b), release.clone()), "a");
    assert_eq!(head(&daemon), before, "a refused command appended nothing");
    assert_eq!(command(&daemon, Some(&a), release).0, 200);

    // Consume: b cannot take (or read by consuming) a signal addressed to a.
    let (status, sent) = command(
        &daemon,
        Some(&b),
        json!({"command": "send_signal", "agent": "b", "kind": "secret", "target": {"agent": "a"}, "payload": {"k": 1}}),
    );
    assert_eq!(status, 201, "{sent}");
    let receive = json!({"command": "receive_signal", "agent": "a", "filter": {"kind": "secret"}, "consume": true});
    assert_impersonation_refused(command(&daemon, Some(&b), receive.clone()), "a");
    let (status, got) = command(&daemon, Some(&a), receive);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["signal"]["payload"]["k"], 1, "still there for a: {got}");

    // Approve: a asks `human`; a cannot decide in human's name, nor b.
    let (status, asked) = command(
        &daemon,
        Some(&a),
        json!({"command": "request_approval", "agent": "a", "action": "deploy", "approvers": ["human"], "timeout_ms": 60000}),
    );
    assert_eq!(status, 201, "{asked}");
    let approval = asked["id"].as_u64().expect("an approval id");
    let decide =
        json!({"command": "decide", "agent": "human", "approval": approval, "approved": true});
    assert_impersonation_refused(command(&daemon, Some(&a), decide.clone()), "human");
    assert_impersonation_refused(command(&daemon, Some(&b), decide.clone()), "human");
    assert_eq!(command(&daemon, Some(&human), decide).0, 200);

    // Complete: b claimed the task; a cannot complete it in b's name.
    let (status, queued) = command(
        &daemon,
        Some(&a),
        json!({"command": "enqueue", "agent": "a", "spec": {"title": "build"}}),
    );
    assert_eq!(status, 201, "{queued}");
    let (status, claimed) = command(&daemon, Some(&b), json!({"command": "claim", "agent": "b"}));
    assert_eq!(status, 200, "{claimed}");
    let task = claimed["task"]["id"].as_u64().expect("a task id");
    let complete = json!({"command": "complete", "agent": "b", "task": task});
    assert_impersonation_refused(command(&daemon, Some(&a), complete.clone()), "b");
    assert_eq!(command(&daemon, Some(&b), complete).0, 200);

    // Deregister, and taking over a registered id by registering it again.
    let deregister = json!({"command": "deregister", "agent": "b"});
    assert_impersonation_refused(command(&daemon, Some(&a), deregister.clone()), "b");
    let (status, body) = command(
        &daemon,
        None,
        json!({"command": "register", "agent": "b", "role": "thief"}),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("credential_required"))
    );
    assert_eq!(get(&daemon, "/v1/agents/b")["role"], "worker");

    // The operator may act for anyone; a deregistered agent's credential is void.
    let operator = std::fs::read_to_string(db.with_file_name("fleet.redb.keys/operator"))
        .expect("the operator's credential beside the database");
    assert_eq!(command(&daemon, Some(&operator), deregister).0, 200);
    let (status, body) = command(
        &daemon,
        Some(&b),
        json!({"command": "heartbeat", "agent": "b"}),
    );
    assert_eq!(status, 404, "b is gone: {body}");
    let fresh = register(&daemon, "b");
    assert_ne!(fresh, b, "a new registration, a new credential");
    assert_impersonation_refused(
        command(
            &daemon,
            Some(&b),
            json!({"command": "heartbeat", "agent": "b"}),
        ),
        "b",
    );

    // A batch is checked command by command.
    let (status, batch) = post_as(
        &daemon,
        Some(&a),
        "/v1/batch",
        json!({"commands": [
            {"command": "heartbeat", "agent": "a"},
            {"command": "heartbeat", "agent": "b"},
        ]}),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["outcome"], "appended", "{batch}");
    assert_eq!(batch["results"][1]["error"], "wrong_credential", "{batch}");
}

/// A registration retried with its idempotency key answers the first answer, credential and
/// all, to the holder of that credential; to anyone else it is a takeover attempt and refused
/// (idempotency keys are not secrets).
#[test]
fn a_retried_registration_is_answered_only_to_its_holder() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &["--auth", "agents"]);
    let body = json!({"command": "register", "agent": "a"}).to_string();
    let send = |credential: Option<&str>| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "register-a-1"),
        ];
        headers.extend(credential.map(|credential| ("Fleetlog-Credential", credential)));
        let (status, _, answer) = http(
            &daemon.address,
            "POST",
            "/v1/commands",
            &headers,
            body.as_bytes(),
        );
        (status, answer)
    };
    let (status, first) = send(None);
    assert_eq!(status, 201, "{first}");
    let credential = first["credential"]
        .as_str()
        .expect("a credential")
        .to_owned();
    let (status, stranger) = send(None);
    assert_eq!(
        (status, stranger["error"].as_str()),
        (401, Some("credential_required"))
    );
    let (status, retried) = send(Some(&credential));
    assert_eq!(status, 201, "{retried}");
    assert_eq!(
        first["seq"], retried["seq"],
        "the first answer, not a new registration"
    );
    assert_eq!(first["credential"], retried["credential"]);
}

#[test]
fn trusted_host_is_the_loopback_default_and_never_served_beyond_it() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    register(&daemon, "a");
    let (status, body) = command(&daemon, None, json!({"command": "heartbeat", "agent": "a"}));
    assert_eq!(
        status, 200,
        "no credential needed on a loopback daemon: {body}"
    );
    drop(daemon);

    let refused = Process::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--auth", "trusted-host", "--listen", "0.0.0.0:0"])
        .args(["--token", "secret"])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("trusted-host"), "{stderr}");
}

/// Beyond loopback, agents authenticate without being asked to.
#[test]
fn agents_authenticate_by_default_beyond_loopback() {
    use std::io::{BufRead, BufReader};
    let (_dir, db) = new_db();
    let mut child = Process::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--listen", "0.0.0.0:0", "--token", "secret"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let banner = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    let port = banner
        .split("http://0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let Some(port) = port else {
        let _ = child.kill();
        panic!("no address in {banner:?}");
    };
    let address = format!("127.0.0.1:{port}");
    let post = |body: Value| {
        let body = body.to_string();
        http(
            &address,
            "POST",
            "/v1/commands",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer secret"),
            ],
            body.as_bytes(),
        )
    };
    let (status, _, registered) = post(json!({"command": "register", "agent": "a"}));
    let (heartbeat, _, refused) = post(json!({"command": "heartbeat", "agent": "a"}));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 201, "{registered}");
    assert_eq!(heartbeat, 401, "{refused}");
    assert_eq!(refused["error"], "credential_required");
}

fn cli(db: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Process::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("FLEETLOG_CREDENTIAL")
        .envs(env.iter().copied())
        .output()
        .expect("the CLI runs")
}

/// The CLI stores what registration issues and sends it by itself, with a daemon and without;
/// a credential from the environment that is not the agent's is refused either way.
#[test]
fn the_cli_keeps_credentials_and_refuses_another_agents() {
    for served in [false, true] {
        let (_dir, db) = new_db();
        assert!(cli(&db, &[], &["init"]).status.success());
        let _daemon = served.then(|| Daemon::start(&db, &["--auth", "agents"]));
        let auth = [("FLEETLOG_AUTH", "agents")];
        for agent in ["a", "b"] {
            let out = cli(&db, &auth, &["register", "--agent", agent]);
            assert!(out.status.success(), "{out:?}");
        }
        let file = db.with_file_name("fleet.redb.keys/agents/a");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("a's credential file")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let acquire = ["lock", "acquire", "--agent", "a", "--resource", "db"];
        let out = cli(&db, &auth, &acquire);
        assert!(out.status.success(), "served={served}: {out:?}");

        let b = std::fs::read_to_string(db.with_file_name("fleet.redb.keys/agents/b"))
            .expect("b's credential");
        let out = cli(
            &db,
            &[("FLEETLOG_CREDENTIAL", b.as_str()), auth[0]],
            &["heartbeat", "--agent", "a"],
        );
        assert!(!out.status.success(), "served={served}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not agent \"a\"'s"),
            "served={served}: {stderr}"
        );
        let out = cli(&db, &[], &["--as-operator", "deregister", "--agent", "b"]);
        assert!(out.status.success(), "served={served}: {out:?}");
    }
}
