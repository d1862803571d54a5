//! The seed tools' behaviours as their users expect them, through the CLI and HTTP: approvals
//! whose exit codes can gate a deploy, reads that never write, unknown agents named, and the
//! CLI's edges.

use std::path::Path;
use std::process::{Command as Process, Output};

use serde_json::Value;

#[path = "support/harness.rs"]
mod harness;

use harness::*;

fn cli(db: &Path, args: &[&str]) -> Output {
    Process::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("FLEETLOG_CREDENTIAL")
        .env_remove("FLEETLOG_AUTH")
        .output()
        .expect("the CLI runs")
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = cli(db, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("one JSON document")
}

fn head(db: &Path) -> String {
    ok(db, &["head"])
}

/// A ledger with agents `a` and `b`, served by a daemon or not.
fn fleet(served: bool) -> (tempfile::TempDir, std::path::PathBuf, Option<Daemon>) {
    let (dir, db) = new_db();
    ok(&db, &["init"]);
    let daemon = served.then(|| Daemon::start(&db, &[]));
    for agent in ["a", "b"] {
        ok(&db, &["register", "--agent", agent]);
    }
    (dir, db, daemon)
}

fn request(db: &Path, approvers: &[&str], timeout_ms: &str) -> String {
    let mut args = vec![
        "approval",
        "request",
        "--agent",
        "a",
        "--action",
        "deploy",
        "--timeout-ms",
        timeout_ms,
    ];
    for approver in approvers {
        args.extend(["--approver", approver]);
    }
    json(db, &args)["id"]
        .as_u64()
        .expect("the request answers its id")
        .to_string()
}

#[test]
fn approval_wait_exit_codes_tell_approved_rejected_expired_and_pending_apart() {
    for served in [false, true] {
        let (_dir, db, _daemon) = fleet(served);
        let wait = |id: &str| {
            cli(
                &db,
                &[
                    "approval",
                    "wait",
                    "--agent",
                    "a",
                    id,
                    "--timeout-ms",
                    "200",
                ],
            )
            .status
            .code()
        };
        let approved = request(&db, &["b"], "60000");
        ok(&db, &["approval", "approve", "--agent", "b", &approved]);
        assert_eq!(wait(&approved), Some(0), "served={served}: approved");

        let rejected = request(&db, &["b"], "60000");
        ok(&db, &["approval", "reject", "--agent", "b", &rejected]);
        assert_eq!(wait(&rejected), Some(4), "served={served}: rejected");

        let expired = request(&db, &["b"], "1");
        assert_eq!(wait(&expired), Some(5), "served={served}: expired");

        let pending = request(&db, &["b"], "60000");
        assert_eq!(wait(&pending), Some(3), "served={served}: still pending");
    }
}

#[test]
fn a_requester_cannot_approve_its_own_request_unless_it_named_itself() {
    let (_dir, db, _daemon) = fleet(true);
    let unnamed = request(&db, &[], "60000");
    let out = cli(&db, &["approval", "approve", "--agent", "a", &unnamed]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requested by this agent"),
        "{out:?}"
    );
    ok(&db, &["approval", "approve", "--agent", "b", &unnamed]);
    let named_self = request(&db, &["a"], "60000");
    ok(&db, &["approval", "approve", "--agent", "a", &named_self]);
}

#[test]
fn reading_never_writes_even_when_ttls_have_lapsed() {
    let (_dir, db, _) = fleet(false);
    ok(&db, &["heartbeat", "--agent", "a", "--ttl-ms", "1"]);
    ok(
        &db,
        &[
            "lock",
            "acquire",
            "--agent",
            "b",
            "--resource",
            "r",
            "--ttl-ms",
            "1",
        ],
    );
    // The daemon those commands started records expiries on its own clock; reads with no
    // daemon must not.
    ok(&db, &["daemon", "stop"]);
    let before = head(&db);
    for read in [
        vec!["status"],
        vec!["agents"],
        vec!["agents", "--all"],
        vec!["lock", "list"],
        vec!["task", "list"],
        vec!["workflow", "list"],
    ] {
        ok(&db, &read);
        assert_eq!(head(&db), before, "{read:?} appended");
    }
    let agents = json(&db, &["agents", "--all"]);
    let a = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|agent| agent["id"] == "a")
        .expect("a listed")
        .clone();
    assert_eq!(
        a["alive"], false,
        "the lapsed TTL is judged, not recorded: {a}"
    );
}

#[test]
fn an_unknown_acting_agent_is_an_error_not_an_empty_answer() {
    for served in [false, true] {
        let (_dir, db, _daemon) = fleet(served);
        let out = cli(
            &db,
            &[
                "--json", "signal", "check", "--agent", "ghsot", "--kind", "x",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "served={served}: {out:?}");
        let error: Value = serde_json::from_slice(&out.stderr).expect("a JSON error on stderr");
        assert_eq!(error["error"], "unknown_agent", "served={served}: {error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("ghsot"))
        );
        // Nothing there for a registered agent is still exit 3.
        let none = cli(&db, &["signal", "check", "--agent", "a", "--kind", "x"]);
        assert_eq!(none.status.code(), Some(3), "served={served}");
    }
}

#[test]
fn an_empty_signal_kind_is_refused_and_changes_nothing() {
    let (_dir, db, _) = fleet(false);
    let before = head(&db);
    let out = cli(
        &db,
        &["signal", "send", "--agent", "a", "--to", "b", "--kind", " "],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kind"));
    assert_eq!(head(&db), before);
}

#[test]
fn replay_past_the_head_is_refused_not_shown_as_the_head() {
    let (_dir, db, _) = fleet(false);
    let out = cli(&db, &["replay", "--as-of", "999"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the newest record"));
    ok(&db, &["replay", "--as-of", "2"]);
}

#[test]
fn tail_without_follow_ends_on_an_empty_ledger_and_past_the_head() {
    let (_dir, db) = new_db();
    ok(&db, &["init"]);
    let _daemon = Daemon::start(&db, &[]);
    // Each returns (a hang fails the test by never finishing; the harness has no timeout,
    // so bound it here).
    for args in [vec!["tail"], vec!["tail", "--from", "50"]] {
        let mut child = Process::new(FLEETLOG)
            .arg("--db")
            .arg(&db)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("runs");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waits") {
                break Some(status);
            }
            if started.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                break None;
            }
            std::thread::yield_now();
        };
        assert!(
            status.is_some_and(|status| status.success()),
            "{args:?} did not end"
        );
    }
}

#[test]
fn tail_follow_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let (_dir, db, _daemon) = fleet(true);
    let mut child = Process::new(FLEETLOG)
        .arg("--db")
        .arg(&db)
        .args(["tail", "-f", "--from", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // Read one byte, then close the pipe, as `| head -c1` would; the next events written to it
    // hit the closed pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).expect("some output");
    drop(stdout);
    for n in 0..3 {
        ok(
            &db,
            &[
                "append",
                "--agent",
                "a",
                "--kind",
                "k",
                "--payload",
                &n.to_string(),
            ],
        );
    }
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "tail -f kept running into a closed pipe"
        );
        std::thread::yield_now();
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
}

fn post(daemon: &Daemon, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let (status, _, answer) = http(
        &daemon.address,
        "POST",
        "/v1/commands",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (status, answer)
}

fn get(daemon: &Daemon, path: &str) -> Value {
    let (status, _, answer) = http(&daemon.address, "GET", path, &[], b"");
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

#[test]
fn agents_are_found_by_capability_and_tasks_by_key_and_escalation_over_http() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    for (agent, capabilities) in [
        ("api", vec!["backend-development"]),
        ("ui", vec!["frontend-development"]),
    ] {
        let (status, _) = post(
            &daemon,
            serde_json::json!({"command": "register", "agent": agent, "capabilities": capabilities}),
        );
        assert_eq!(status, 201);
    }
    let found = get(&daemon, "/v1/agents?capability=backend-development");
    let ids: Vec<&str> = found["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|agent| agent["id"].as_str())
        .collect();
    assert_eq!(ids, ["api"], "{found}");

    let (status, created) = post(
        &daemon,
        serde_json::json!({"command": "enqueue", "agent": "api", "spec": {
            "title": "schema migration", "key": "OPS-12",
            "required_capabilities": ["backend-development"], "max_attempts": 1,
            "escalate_when_exhausted": true}}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("id");
    let by_key = get(&daemon, "/v1/tasks?key=OPS-12");
    assert_eq!(by_key["tasks"][0]["id"], id, "{by_key}");
    assert_eq!(by_key["tasks"].as_array().map(Vec::len), Some(1));

    let (status, nothing) = post(
        &daemon,
        serde_json::json!({"command": "claim", "agent": "ui"}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        nothing["task"],
        Value::Null,
        "ui lacks the capability: {nothing}"
    );
    let (_, claimed) = post(
        &daemon,
        serde_json::json!({"command": "claim", "agent": "api"}),
    );
    assert_eq!(claimed["task"]["id"], id, "{claimed}");
    let (status, _) = post(
        &daemon,
        serde_json::json!({"command": "fail", "agent": "api", "task": id, "error": "lock timeout"}),
    );
    assert_eq!(status, 200);
    let escalated = get(&daemon, "/v1/tasks?state=escalated");
    assert_eq!(escalated["tasks"][0]["id"], id, "{escalated}");
    assert!(
        escalated["tasks"][0]["escalation"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("attempts")),
        "{escalated}"
    );
}

#[test]
fn alive_answers_one_agent_by_exit_code() {
    let (_dir, db, _) = fleet(false);
    ok(&db, &["heartbeat", "--agent", "b", "--ttl-ms", "1"]);
    assert_eq!(cli(&db, &["alive", "--agent", "a"]).status.code(), Some(0));
    let expired = cli(&db, &["alive", "--agent", "b"]);
    assert_eq!(expired.status.code(), Some(1), "{expired:?}");
    assert!(String::from_utf8_lossy(&expired.stdout).contains("not alive (expired)"));
    assert_eq!(cli(&db, &["alive", "--agent", "zz"]).status.code(), Some(3));
}

#[test]
fn agents_and_status_read_like_the_tools_users_come_from() {
    let (_dir, db, _) = fleet(false);
    ok(
        &db,
        &[
            "heartbeat",
            "--agent",
            "a",
            "--progress",
            "0.3333333",
            "--task",
            "T-9",
        ],
    );
    ok(
        &db,
        &["workflow", "start", "--agent", "a", "wf1", "--plan", "a,b"],
    );
    ok(
        &db,
        &[
            "workflow", "stage", "--agent", "a", "wf1", "--stage", "plan",
        ],
    );
    ok(&db, &["task", "add", "--agent", "a", "--title", "t"]);
    let agents = ok(&db, &["agents"]);
    let row = agents
        .lines()
        .find(|line| line.starts_with("a "))
        .unwrap_or_else(|| panic!("{agents}"));
    for expected in ["33 %", "T-9", "wf1", "s ago"] {
        assert!(row.contains(expected), "{expected:?} missing: {agents}");
    }
    let status = ok(&db, &["status"]);
    assert!(status.contains("queue: 1 pending"), "{status}");
    assert!(!status.contains('{'), "no raw JSON: {status}");
    assert!(!status.contains("0.333"), "{status}");
}

#[test]
fn serve_on_a_taken_port_names_it_and_leaves_nothing_behind() {
    let (dir, db) = new_db();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let out = cli(&db, &["serve", "--listen", &address]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&address), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn signal_list_shows_an_inbox_without_consuming_it() {
    let (_dir, db, _) = fleet(false);
    ok(
        &db,
        &[
            "signal",
            "send",
            "--agent",
            "a",
            "--to",
            "b",
            "--kind",
            "review",
            "--payload",
            "7",
        ],
    );
    for _ in 0..2 {
        let listed = json(&db, &["signal", "list", "--agent", "b"]);
        assert_eq!(listed["signals"][0]["kind"], "review", "{listed}");
    }
    assert_ne!(
        cli(&db, &["signal", "list", "--agent", "zz"]).status.code(),
        Some(0)
    );
}

#[test]
fn workflow_cancel_ends_a_running_workflow() {
    let (_dir, db, _) = fleet(false);
    ok(&db, &["workflow", "start", "--agent", "a", "wf"]);
    ok(
        &db,
        &[
            "workflow",
            "cancel",
            "--agent",
            "a",
            "wf",
            "--reason",
            "superseded",
        ],
    );
    let shown = json(&db, &["workflow", "show", "wf"]);
    assert_eq!(shown["status"], "cancelled", "{shown}");
}

#[test]
fn best_agent_refuses_a_confidence_outside_zero_to_one() {
    let (_dir, db, _) = fleet(false);
    let out = cli(
        &db,
        &["best-agent", "--task", "api", "--min-confidence", "1.5"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("min_confidence"));
}

#[test]
fn durations_take_units_and_a_bad_unit_is_a_usage_error() {
    let (_dir, db, _daemon) = fleet(true);
    let lock = json(
        &db,
        &[
            "lock",
            "acquire",
            "--agent",
            "a",
            "--resource",
            "r",
            "--ttl-ms",
            "1.5s",
        ],
    );
    let at = |field: &str| {
        fleetlog_ledger::Timestamp::parse_rfc3339(lock["lock"][field].as_str().expect("time"))
            .expect("RFC 3339")
            .as_micros()
    };
    assert_eq!(at("expires_at") - at("acquired_at"), 1_500_000, "{lock}");
    let bad = cli(
        &db,
        &["heartbeat", "--agent", "a", "--ttl-ms", "3fortnights"],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a unit"));
}

#[test]
fn enum_like_flags_refuse_unknown_words_as_usage_errors_and_priorities_take_words() {
    let (_dir, db, _) = fleet(false);
    for args in [
        vec!["task", "list", "--state", "pendng"],
        vec!["import", "--format", "csv", "x"],
        vec![
            "workflow",
            "stage",
            "--agent",
            "a",
            "wf",
            "--stage",
            "s",
            "--done",
            "--outcome",
            "great",
        ],
    ] {
        let out = cli(&db, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("possible values"),
            "{args:?}"
        );
    }
    let low = json(
        &db,
        &[
            "task",
            "add",
            "--agent",
            "a",
            "--title",
            "later",
            "--priority",
            "low",
        ],
    );
    let high = json(
        &db,
        &[
            "task",
            "add",
            "--agent",
            "a",
            "--title",
            "now",
            "--priority",
            "high",
        ],
    );
    assert_eq!(
        (
            low["task"]["priority"].as_i64(),
            high["task"]["priority"].as_i64()
        ),
        (Some(-10), Some(10))
    );
    let claimed = json(&db, &["task", "claim", "--agent", "b"]);
    assert_eq!(claimed["task"]["id"], high["id"], "high first: {claimed}");
}

#[test]
fn staffing_ranks_capable_agents_by_record_and_free_capacity_and_plans_a_team() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    for (agent, capabilities, limit) in [
        ("steady", vec!["backend"], 1),
        ("shaky", vec!["backend"], 2),
        ("pixel", vec!["frontend"], 1),
    ] {
        let (status, _) = post(
            &daemon,
            serde_json::json!({"command": "register", "agent": agent, "capabilities": capabilities,
                "metadata": {"max_concurrent_tasks": limit}}),
        );
        assert_eq!(status, 201);
    }
    // steady finishes two backend tasks; shaky fails two.
    for (agent, success) in [
        ("steady", true),
        ("steady", true),
        ("shaky", false),
        ("shaky", false),
    ] {
        let (_, created) = post(
            &daemon,
            serde_json::json!({"command": "enqueue", "agent": agent, "spec": {
                "title": "endpoint", "required_capabilities": ["backend"], "max_attempts": 1}}),
        );
        let id = created["id"].as_u64().expect("id");
        let (_, claimed) = post(
            &daemon,
            serde_json::json!({"command": "claim", "agent": agent, "task": id}),
        );
        assert_eq!(claimed["task"]["id"], id, "{claimed}");
        let finish = match success {
            true => serde_json::json!({"command": "complete", "agent": agent, "task": id}),
            false => {
                serde_json::json!({"command": "fail", "agent": agent, "task": id, "error": "x", "retryable": false})
            }
        };
        let (status, answer) = post(&daemon, finish);
        assert_eq!(status, 200, "{answer}");
    }
    let ranked = get(&daemon, "/v1/staffing/agents?capability=backend");
    let order: Vec<&str> = ranked["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["agent"].as_str())
        .collect();
    assert_eq!(order, ["steady", "shaky"], "{ranked}");
    assert_eq!(ranked["agents"][0]["successes"], 2);

    // Busy now: steady holds a task, so its one slot is taken.
    let (_, created) = post(
        &daemon,
        serde_json::json!({"command": "enqueue", "agent": "steady", "spec": {"title": "hold"}}),
    );
    let held = created["id"].as_u64().expect("id");
    post(
        &daemon,
        serde_json::json!({"command": "claim", "agent": "steady", "task": held}),
    );
    let busy = get(&daemon, "/v1/staffing/agents?capability=backend");
    assert_eq!(busy["agents"][0]["load"], 1, "{busy}");
    assert_eq!(busy["agents"][0]["availability"], 0.0, "{busy}");

    let body = serde_json::json!({"tasks": [
        {"id": "schema", "required_capabilities": ["backend"], "priority": 1},
        {"id": "api", "required_capabilities": ["backend"], "priority": 9},
        {"id": "worker", "required_capabilities": ["backend"]},
        {"id": "page", "required_capabilities": ["frontend"], "depends_on": ["api"]},
        {"id": "docs", "required_capabilities": ["writing"]}
    ]})
    .to_string();
    let (status, _, plan) = http(
        &daemon.address,
        "POST",
        "/v1/staffing/team",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{plan}");
    let assigned = |task: &str| {
        plan["assignments"]
            .as_array()
            .expect("assignments")
            .iter()
            .find(|a| a["task"] == task)
            .map(|a| (a["agent"].as_str().map(str::to_owned), a["wave"].clone()))
    };
    // steady is full; shaky takes two backend tasks (its limit), by priority: api, then schema.
    assert_eq!(
        assigned("api"),
        Some((Some("shaky".into()), serde_json::json!(1)))
    );
    assert_eq!(
        assigned("schema"),
        Some((Some("shaky".into()), serde_json::json!(1)))
    );
    assert_eq!(
        assigned("page"),
        Some((Some("pixel".into()), serde_json::json!(2)))
    );
    let unassigned: Vec<(&str, &str)> = plan["unassigned"]
        .as_array()
        .expect("unassigned")
        .iter()
        .map(|u| {
            (
                u["task"].as_str().unwrap_or_default(),
                u["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(unassigned.len(), 2, "{plan}");
    assert!(
        unassigned
            .iter()
            .any(|(task, reason)| *task == "worker" && reason.contains("concurrency limit"))
    );
    assert!(
        unassigned
            .iter()
            .any(|(task, reason)| *task == "docs" && reason.contains("writing"))
    );

    // A cycle is refused, naming the tasks.
    let cycle = serde_json::json!({"tasks": [
        {"id": "x", "depends_on": ["y"]}, {"id": "y", "depends_on": ["x"]}]})
    .to_string();
    let (status, _, refused) = http(
        &daemon.address,
        "POST",
        "/v1/staffing/team",
        &[("Content-Type", "application/json")],
        cycle.as_bytes(),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("cycle")),
        "{refused}"
    );

    // The CLI: the same plan from --task specs; exit 3 because docs cannot be staffed.
    let out = cli(
        &db,
        &[
            "team",
            "--task",
            "api:backend:9",
            "--task",
            "page:frontend::api",
            "--task",
            "docs:writing",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shaky") && text.contains("pixel"), "{text}");
    let staff = ok(&db, &["staff", "--capability", "frontend"]);
    assert!(
        staff.contains("pixel") && !staff.contains("shaky"),
        "{staff}"
    );
}

#[test]
fn workflow_status_names_the_current_step_and_the_estimated_completion() {
    let (_dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    post(
        &daemon,
        serde_json::json!({"command": "register", "agent": "orch"}),
    );
    let (status, _) = post(
        &daemon,
        serde_json::json!({"command": "start_workflow", "agent": "orch", "workflow_id": "wf",
            "project": "shop", "agent_plan": ["planner", "coder"], "estimated_duration_ms": 3_600_000}),
    );
    assert_eq!(status, 201);
    let (status, answer) = post(
        &daemon,
        serde_json::json!({"command": "start_stage", "agent": "orch", "workflow_id": "wf",
            "stage": "plan", "stage_agent": "planner", "tier": "standard"}),
    );
    assert_eq!(status, 200, "{answer}");
    let shown = get(&daemon, "/v1/workflows/wf");
    assert_eq!(shown["current_step"]["stage"], "plan", "{shown}");
    assert_eq!(shown["current_step"]["agent"], "planner", "{shown}");
    let started = shown["started_at"].as_str().expect("started_at");
    let expected = chrono::DateTime::parse_from_rfc3339(started).expect("a time")
        + chrono::Duration::milliseconds(3_600_000);
    let estimated = chrono::DateTime::parse_from_rfc3339(
        shown["estimated_completion"].as_str().expect("an estimate"),
    )
    .expect("a time");
    assert_eq!(estimated, expected, "{shown}");

    post(
        &daemon,
        serde_json::json!({"command": "complete_stage", "agent": "orch", "workflow_id": "wf",
            "report": {"stage": "plan", "agent": "planner", "tier": "standard", "outcome": "success",
                "duration_ms": 1000}}),
    );
    let between = get(&daemon, "/v1/workflows/wf");
    assert_eq!(between["current_step"]["stage"], Value::Null, "{between}");
    assert_eq!(
        between["current_step"]["agent"], "coder",
        "the next planned agent"
    );
    assert_eq!(between["progress"], 0.5);
}

#[test]
fn since_and_until_take_a_duration_ago_as_well_as_a_time() {
    let (_dir, db, _) = fleet(false);
    let recent = json(&db, &["events", "--since", "2h"]);
    let count = |value: &Value| value.as_array().map_or(0, Vec::len);
    assert_eq!(
        count(&recent),
        2,
        "both registrations are within 2 h: {recent}"
    );
    let old = json(&db, &["events", "--until", "1h ago"]);
    assert_eq!(count(&old), 0, "nothing is older than an hour: {old}");
    let bad = cli(&db, &["events", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("duration ago"));
}
