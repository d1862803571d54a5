//! `fleetlog mcp`: an MCP client (as Claude Code would be) lists the tools and coordinates
//! through them; bad calls come back as tool errors naming the problem, bad JSON as a JSON-RPC
//! parse error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

#[path = "support/harness.rs"]
mod harness;

use harness::{FLEETLOG, new_db};

struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    next_id: u64,
}

impl Session {
    fn start(db: &std::path::Path, agent: &str) -> Session {
        let mut child = Command::new(FLEETLOG)
            .arg("--db")
            .arg(db)
            .args(["mcp", "--agent", agent])
            .env_remove("FLEETLOG_NO_DAEMON")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the MCP server starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Session {
            child,
            stdin,
            stdout,
            next_id: 0,
        }
    }

    /// A session past the handshake (initialize, then the initialized notification).
    fn initialized(db: &std::path::Path, agent: &str) -> Session {
        let mut session = Session::start(db, agent);
        let init = session.request("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}));
        assert_eq!(init["result"]["serverInfo"]["name"], "fleetlog", "{init}");
        writeln!(
            session.stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .expect("a notification gets no answer");
        session
    }

    fn send(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").expect("sent");
        let answer = self.stdout.next().expect("an answer").expect("utf-8");
        serde_json::from_str(&answer).expect("JSON-RPC")
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let message =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let answer = self.send(&message.to_string());
        assert_eq!(answer["id"], self.next_id, "{answer}");
        answer
    }

    fn tool(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))["result"].clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_mcp_client_coordinates_two_agents_through_the_tools() {
    let (_dir, db) = new_db();
    // The handshake (and its serverInfo check) is Session::initialized's.
    let mut coder = Session::initialized(&db, "coder");
    let listed = coder.request("tools/list", json!({}));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    for wanted in [
        "status",
        "register",
        "heartbeat",
        "acquire_lock",
        "release_lock",
        "claim_task",
        "complete_task",
        "fail_task",
        "send_signal",
        "receive_signal",
        "request_approval",
        "await_approval",
        "log_decision",
        "workflow_stage",
    ] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    assert!(
        names.len() <= 14,
        "a small tool set, so agents' context is not eaten: {names:?}"
    );
    assert_eq!(
        coder.tool("register", json!({"role": "coder"}))["isError"],
        false
    );

    let mut reviewer = Session::initialized(&db, "reviewer");
    assert_eq!(reviewer.tool("register", json!({}))["isError"], false);
    let locked = coder.tool(
        "acquire_lock",
        json!({"resource": "src/lib.rs", "ttl_ms": 60000}),
    );
    assert_eq!(locked["isError"], false, "{locked}");
    let held = reviewer.tool(
        "acquire_lock",
        json!({"resource": "src/lib.rs", "ttl_ms": 60000}),
    );
    assert_eq!(held["isError"], true, "{held}");
    assert!(
        held["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("lock_held")),
        "{held}"
    );

    let sent = coder.tool(
        "send_signal",
        json!({"kind": "review_ready", "target": "reviewer", "payload": {"pr": 7}}),
    );
    assert_eq!(sent["isError"], false, "{sent}");
    let got = reviewer.tool(
        "receive_signal",
        json!({"kind": "review_ready", "timeout_ms": 10000}),
    );
    assert_eq!(
        got["structuredContent"]["signal"]["payload"]["pr"], 7,
        "{got}"
    );

    let nothing = reviewer.tool("receive_signal", json!({"kind": "review_ready"}));
    assert_eq!(
        nothing["structuredContent"]["signal"],
        Value::Null,
        "without timeout_ms it answers now: {nothing}"
    );

    // A workflow stage, recorded as the session's agent.
    let started = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args([
            "workflow",
            "start",
            "--agent",
            "coder",
            "wf-1",
            "--project",
            "p",
        ])
        .output()
        .expect("the CLI runs");
    assert!(started.status.success(), "{started:?}");
    let stage = coder.tool(
        "workflow_stage",
        json!({"workflow_id": "wf-1", "stage": "implement", "outcome": "success",
               "duration_ms": 1200, "cost_usd": 0.05}),
    );
    assert_eq!(stage["isError"], false, "{stage}");
    let status = coder.tool("status", json!({}));
    assert_eq!(status["isError"], false, "{status}");

    let bad = coder.tool(
        "acquire_lock",
        json!({"resource": "x", "ttl_ms": 1, "bogus": true}),
    );
    assert_eq!(bad["isError"], true);
    // A line that is not JSON-RPC is dropped (the SDK's choice) and the session goes on.
    writeln!(coder.stdin, "nope").expect("sent");
    let unknown = coder.request("resources/list", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    drop((coder, reviewer));
    let _ = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["daemon", "stop"])
        .output();
}

/// One JSON-RPC message to the daemon's `/mcp` as `agent` (with `credential` if given).
fn over_http(
    daemon: &harness::Daemon,
    agent: Option<&str>,
    credential: Option<&str>,
    message: &Value,
) -> (u16, Value) {
    let body = message.to_string();
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    if let Some(agent) = agent {
        headers.push(("Fleetlog-Agent", agent));
    }
    if let Some(credential) = credential {
        headers.push(("Fleetlog-Credential", credential));
    }
    let (status, _, answer) =
        harness::http(&daemon.address, "POST", "/mcp", &headers, body.as_bytes());
    (status, answer)
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

#[test]
fn the_daemon_serves_mcp_over_http_as_the_agent_the_session_names() {
    let (_dir, db) = new_db();
    let daemon = harness::Daemon::start(&db, &[]);
    let (status, init) = over_http(
        &daemon,
        Some("a"),
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "test", "version": "0"}}}),
    );
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "fleetlog");
    let (status, _) = over_http(
        &daemon,
        Some("a"),
        None,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(status, 202, "a notification is accepted with no answer");
    let (_, listed) = over_http(
        &daemon,
        Some("a"),
        None,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    assert!(
        listed["result"]["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == "acquire_lock")),
        "{listed}"
    );
    for agent in ["a", "b"] {
        let (_, registered) = over_http(
            &daemon,
            Some(agent),
            None,
            &tool_call(3, "register", json!({})),
        );
        assert_eq!(registered["result"]["isError"], false, "{registered}");
    }
    let (_, held) = over_http(
        &daemon,
        Some("a"),
        None,
        &tool_call(
            4,
            "acquire_lock",
            json!({"resource": "src/lib.rs", "ttl_ms": 60_000}),
        ),
    );
    assert_eq!(held["result"]["isError"], false, "{held}");
    assert_eq!(held["result"]["structuredContent"]["lock"]["holder"], "a");
    // The session's agent is the one acting: b is refused the lock a holds, naming a.
    let (_, refused) = over_http(
        &daemon,
        Some("b"),
        None,
        &tool_call(
            5,
            "acquire_lock",
            json!({"resource": "src/lib.rs", "ttl_ms": 60_000}),
        ),
    );
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let text = refused["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.starts_with("lock_held") && text.contains("\"a\""),
        "{text}"
    );

    let (status, nameless) = over_http(&daemon, None, None, &tool_call(6, "register", json!({})));
    assert_eq!(status, 400, "{nameless}");
    assert!(
        nameless["message"]
            .as_str()
            .is_some_and(|m| m.contains("Fleetlog-Agent"))
    );
    let (status, _, wrong) = harness::http(&daemon.address, "GET", "/mcp", &[], b"");
    assert_eq!(status, 405, "no server-initiated stream: {wrong}");
    let (status, batch) = over_http(
        &daemon,
        Some("a"),
        None,
        &json!([tool_call(7, "status", json!({}))]),
    );
    assert_eq!(status, 400, "{batch}");
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    // A web page the user opened must not drive the fleet through MCP either.
    let body = tool_call(8, "register", json!({})).to_string();
    let (status, _, foreign) = harness::http(
        &daemon.address,
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Fleetlog-Agent", "c"),
            ("Origin", "http://evil.example"),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 403, "{foreign}");
}

#[test]
fn mcp_over_http_needs_the_agents_credential_when_the_daemon_checks_them() {
    let (_dir, db) = new_db();
    let daemon = harness::Daemon::start(&db, &["--auth", "agents"]);
    let (_, registered) = over_http(
        &daemon,
        Some("a"),
        None,
        &tool_call(1, "register", json!({})),
    );
    let credential = registered["result"]["structuredContent"]["credential"]
        .as_str()
        .expect("registration answers the credential")
        .to_owned();
    let (_, refused) = over_http(
        &daemon,
        Some("a"),
        None,
        &tool_call(2, "heartbeat", json!({})),
    );
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(
        refused["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("credential_required")),
        "{refused}"
    );
    let (_, beat) = over_http(
        &daemon,
        Some("a"),
        Some(&credential),
        &tool_call(3, "heartbeat", json!({})),
    );
    assert_eq!(beat["result"]["isError"], false, "{beat}");
    let (_, impostor) = over_http(
        &daemon,
        Some("b"),
        Some(&credential),
        &tool_call(4, "register", json!({})),
    );
    // b is new: registering needs no credential, but a's credential does not make it a.
    assert_eq!(impostor["result"]["isError"], false, "{impostor}");
    let (_, as_a) = over_http(
        &daemon,
        Some("a"),
        Some("fla_wrong"),
        &tool_call(5, "heartbeat", json!({})),
    );
    assert!(
        as_a["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("wrong_credential")),
        "{as_a}"
    );
}
