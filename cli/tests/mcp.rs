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
    let mut coder = Session::start(&db, "coder");
    let init = coder.request("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}));
    assert_eq!(init["result"]["serverInfo"]["name"], "fleetlog", "{init}");
    writeln!(
        coder.stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .expect("a notification gets no answer");
    let listed = coder.request("tools/list", json!({}));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    for wanted in [
        "register",
        "send_signal",
        "wait_for_signal",
        "acquire_lock",
        "claim_task",
    ] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    assert_eq!(
        coder.tool("register", json!({"role": "coder"}))["isError"],
        false
    );

    let mut reviewer = Session::start(&db, "reviewer");
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
        "wait_for_signal",
        json!({"kind": "review_ready", "timeout_ms": 10000}),
    );
    assert_eq!(
        got["structuredContent"]["signal"]["payload"]["pr"], 7,
        "{got}"
    );

    let bad = coder.tool(
        "acquire_lock",
        json!({"resource": "x", "ttl_ms": 1, "bogus": true}),
    );
    assert_eq!(bad["isError"], true);
    let parse = coder.send("nope");
    assert_eq!(parse["error"]["code"], -32700, "{parse}");
    let unknown = coder.request("resources/list", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    drop((coder, reviewer));
    let _ = Command::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["daemon", "stop"])
        .output();
}
