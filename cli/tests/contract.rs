//! Guards the HTTP contract as a client sees it over the wire: every error is one JSON shape
//! (`error`, `message`, `details`) whatever produced it — an oversized body on any route, a
//! wrong method, an undecodable path, an unknown query parameter or nested field, a refused
//! command with its typed details; creates answer 201 with the object; every list pages with
//! `limit`/`cursor`/`next_cursor`, and a walk visits each item exactly once; the daemon logs
//! its lifecycle and refused requests as JSON lines.

use std::collections::BTreeSet;

use serde_json::{Value, json};

#[path = "support/harness.rs"]
mod harness;

use harness::*;

fn send(daemon: &Daemon, method: &str, target: &str, body: &Value) -> (u16, Value) {
    let bytes = match body {
        Value::Null => Vec::new(),
        body => serde_json::to_vec(body).expect("json"),
    };
    let (status, _, answer) = http(
        &daemon.address,
        method,
        target,
        &[("Content-Type", "application/json")],
        &bytes,
    );
    (status, answer)
}

/// The one error shape: a code, a message naming the problem, and a details object.
fn assert_error(status: u16, answer: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{answer}");
    assert_eq!(answer["error"], code, "{answer}");
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    assert!(answer["details"].is_object(), "{answer}");
}

fn head_seq(daemon: &Daemon) -> u64 {
    let (status, head) = send(daemon, "GET", "/v1/head", &Value::Null);
    assert_eq!(status, 200);
    head["seq"].as_u64().expect("seq")
}

fn started() -> (tempfile::TempDir, Daemon) {
    let (dir, db) = new_db();
    let daemon = Daemon::start(&db, &[]);
    let (status, _) = send(&daemon, "POST", "/v1/agents", &json!({"agent": "a"}));
    assert_eq!(status, 201);
    (dir, daemon)
}

#[test]
fn an_oversized_body_is_413_on_every_write_route() {
    let (_dir, daemon) = started();
    let before = head_seq(&daemon);
    let huge = vec![b' '; fleetlog::daemon::BODY_BYTES_MAX + 1];
    for route in [
        "/v1/commands",
        "/v1/batch",
        "/v1/queries",
        "/v1/locks",
        "/v1/events",
        "/v1/tasks",
    ] {
        let (status, _, answer) = http(
            &daemon.address,
            "POST",
            route,
            &[("Content-Type", "application/json")],
            &huge,
        );
        assert_error(status, &answer, 413, "too_large");
    }
    assert_eq!(head_seq(&daemon), before, "nothing was appended");
}

#[test]
fn a_wrong_method_is_a_json_405_listing_the_allowed_ones() {
    let (_dir, daemon) = started();
    let (status, head, answer) = http(&daemon.address, "DELETE", "/v1/locks", &[], b"");
    assert_error(status, &answer, 405, "method_not_allowed");
    let allowed: Vec<&str> = answer["details"]["allowed"]
        .as_array()
        .expect("allowed methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        allowed.contains(&"GET") && allowed.contains(&"POST"),
        "{answer}"
    );
    assert!(head.to_ascii_lowercase().contains("\nallow:"), "{head}");
}

#[test]
fn undecodable_paths_and_unknown_routes_answer_json() {
    let (_dir, daemon) = started();
    for target in ["/v1/tasks/%FF", "/v1/agents/%FF%FE", "/v1/approvals/x%C3"] {
        let (status, _, answer) = http(&daemon.address, "GET", target, &[], b"");
        assert_error(status, &answer, 400, "malformed");
    }
    let (status, _, answer) = http(&daemon.address, "GET", "/v1/nowhere", &[], b"");
    assert_error(status, &answer, 404, "not_found");
}

#[test]
fn unknown_query_parameters_and_nested_fields_are_refused_by_name() {
    let (_dir, daemon) = started();
    let before = head_seq(&daemon);
    let (status, answer) = send(&daemon, "GET", "/v1/tasks?sate=pending", &Value::Null);
    assert_error(status, &answer, 400, "malformed");
    assert!(
        answer["message"].as_str().unwrap_or("").contains("sate"),
        "{answer}"
    );
    let (status, answer) = send(&daemon, "GET", "/v1/approvals?pending=True", &Value::Null);
    assert_error(status, &answer, 400, "malformed");
    assert!(
        answer["message"].as_str().unwrap_or("").contains("True"),
        "{answer}"
    );
    let (status, answer) = send(
        &daemon,
        "POST",
        "/v1/tasks",
        &json!({"agent": "a", "spec": {"title": "t", "prioirty": 9}}),
    );
    assert_error(status, &answer, 400, "malformed");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("prioirty"),
        "{answer}"
    );
    let (status, answer) = send(
        &daemon,
        "POST",
        "/v1/queries",
        &json!({"query": "tasks", "sate": "pending"}),
    );
    assert_error(status, &answer, 400, "malformed");
    assert_eq!(head_seq(&daemon), before, "nothing was appended");
}

#[test]
fn a_refused_command_carries_its_typed_details() {
    let (_dir, daemon) = started();
    send(&daemon, "POST", "/v1/agents", &json!({"agent": "b"}));
    let (status, granted) = send(
        &daemon,
        "POST",
        "/v1/locks",
        &json!({"agent": "a", "resource": "src/lib.rs", "ttl_ms": 60000}),
    );
    assert_eq!(status, 200, "{granted}");
    let (status, answer) = send(
        &daemon,
        "POST",
        "/v1/locks",
        &json!({"agent": "b", "resource": "src/lib.rs", "ttl_ms": 60000}),
    );
    assert_error(status, &answer, 409, "lock_held");
    assert_eq!(answer["details"]["holder"], "a", "{answer}");
    assert_eq!(
        answer["details"]["token"], granted["lock"]["token"],
        "{answer}"
    );
    assert_eq!(
        answer["details"]["expires_at"], granted["lock"]["expires_at"],
        "{answer}"
    );
    let (status, answer) = send(
        &daemon,
        "POST",
        "/v1/locks",
        &json!({"agent": "ghost", "resource": "r", "ttl_ms": 1000}),
    );
    assert_error(status, &answer, 404, "unknown_agent");
    assert_eq!(answer["details"]["agent"], "ghost", "{answer}");
}

#[test]
fn creates_answer_201_with_the_created_object() {
    let (_dir, daemon) = started();
    let (status, task) = send(
        &daemon,
        "POST",
        "/v1/tasks",
        &json!({"agent": "a", "spec": {"title": "build", "priority": 3}}),
    );
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["kind"], "task");
    assert_eq!(task["task"]["id"], task["id"], "{task}");
    assert_eq!(task["task"]["title"], "build");
    assert_eq!(task["task"]["priority"], 3);
    let (status, agent) = send(
        &daemon,
        "POST",
        "/v1/agents",
        &json!({"agent": "b", "role": "dev"}),
    );
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["id"], "b");
    assert_eq!(agent["agent"]["role"], "dev", "{agent}");
    let (status, signal) = send(
        &daemon,
        "POST",
        "/v1/signals",
        &json!({"agent": "a", "kind": "ping", "target": "b", "payload": {"n": 1}}),
    );
    assert_eq!(status, 201, "{signal}");
    assert_eq!(signal["signal"]["id"], signal["id"], "{signal}");
    assert_eq!(signal["signal"]["payload"], json!({"n": 1}), "{signal}");
    // What a create answers is what a read of it answers.
    let id = task["id"].as_u64().expect("task id");
    let (status, read) = send(&daemon, "GET", &format!("/v1/tasks/{id}"), &Value::Null);
    assert_eq!(status, 200);
    assert_eq!(read, task["task"]);
}

#[test]
fn a_walk_of_a_thousand_tasks_by_cursor_visits_each_exactly_once() {
    let (_dir, daemon) = started();
    let commands: Vec<Value> = (0..1_000)
        .map(|n| json!({"command": "enqueue", "agent": "a", "spec": {"title": format!("t{n}")}}))
        .collect();
    let (status, batch) = send(
        &daemon,
        "POST",
        "/v1/batch",
        &json!({ "commands": commands }),
    );
    assert_eq!(status, 200, "{batch}");
    let enqueued: BTreeSet<u64> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["id"].as_u64().expect("each enqueue names its task"))
        .collect();
    assert_eq!(enqueued.len(), 1_000);

    let (status, first) = send(&daemon, "GET", "/v1/tasks", &Value::Null);
    assert_eq!(status, 200);
    assert_eq!(
        first["tasks"].as_array().map(Vec::len),
        Some(fleetlog::wire::PAGE_ITEMS_DEFAULT),
        "a list without a limit is one bounded page"
    );
    assert!(first["next_cursor"].is_string());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let target = match &cursor {
            None => "/v1/tasks?limit=64".to_owned(),
            Some(cursor) => format!("/v1/tasks?limit=64&cursor={cursor}"),
        };
        let (status, page) = send(&daemon, "GET", &target, &Value::Null);
        assert_eq!(status, 200, "{page}");
        let tasks = page["tasks"].as_array().expect("tasks");
        assert!(tasks.len() <= 64);
        seen.extend(tasks.iter().map(|task| task["id"].as_u64().expect("id")));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 1_000usize.div_ceil(64));
    assert_eq!(seen.len(), 1_000, "no task twice");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), enqueued);

    for bad in [
        "/v1/tasks?limit=0",
        "/v1/tasks?limit=1001",
        "/v1/tasks?cursor=nope",
    ] {
        let (status, answer) = send(&daemon, "GET", bad, &Value::Null);
        assert_error(status, &answer, 400, "invalid");
    }
}

/// Every page of `target` (which has a query already), walked by cursor: the ids in order.
fn walk(daemon: &Daemon, target: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_target = match &cursor {
            None => target.to_owned(),
            Some(cursor) => format!("{target}&cursor={cursor}"),
        };
        let (status, page) = send(daemon, "GET", &page_target, &Value::Null);
        assert_eq!(status, 200, "{page}");
        seen.extend(page["tasks"].as_array().expect("tasks").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
}

fn batch(daemon: &Daemon, commands: Vec<Value>) {
    let (status, answer) = send(
        daemon,
        "POST",
        "/v1/batch",
        &json!({ "commands": commands }),
    );
    assert_eq!(status, 200, "{answer}");
    for result in answer["results"].as_array().expect("results") {
        assert!(result.get("error").is_none(), "{result}");
    }
}

#[test]
fn finished_tasks_leave_the_live_queue_but_read_and_list_as_before() {
    let (_dir, daemon) = started();
    let commands: Vec<Value> = (0..300)
        .map(|n| {
            let tag = if n % 2 == 0 { "even" } else { "odd" };
            let mut spec = json!({"title": format!("t{n}"), "tags": [tag]});
            if n == 42 {
                spec["key"] = json!("JIRA-42");
            }
            json!({"command": "enqueue", "agent": "a", "spec": spec})
        })
        .collect();
    batch(&daemon, commands);
    let all = walk(&daemon, "/v1/tasks?limit=1000");
    let ids: Vec<u64> = all.iter().map(|t| t["id"].as_u64().expect("id")).collect();
    assert_eq!(ids.len(), 300);
    // Every third task completed (with a result naming it), every fifth of the rest cancelled.
    let completed: Vec<u64> = ids.iter().copied().step_by(3).collect();
    let cancelled: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !completed.contains(id))
        .step_by(5)
        .collect();
    let mut commands = Vec::new();
    for id in &completed {
        commands.push(json!({"command": "claim", "agent": "a", "task": id}));
        commands
            .push(json!({"command": "complete", "agent": "a", "task": id, "result": {"done": id}}));
    }
    for id in &cancelled {
        commands.push(json!({"command": "cancel", "agent": "a", "task": id, "reason": "dropped"}));
    }
    batch(&daemon, commands);

    // All of them still list, in id order, each once, live and finished merged.
    let walked = walk(&daemon, "/v1/tasks?limit=37");
    let walked_ids: Vec<u64> = walked
        .iter()
        .map(|t| t["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(walked_ids, ids);
    for task in &walked {
        let id = task["id"].as_u64().expect("id");
        let expected = match (completed.contains(&id), cancelled.contains(&id)) {
            (true, _) => "completed",
            (_, true) => "cancelled",
            _ => "pending",
        };
        assert_eq!(task["state"], expected, "{task}");
        let n: u64 = task["title"].as_str().expect("title")[1..]
            .parse()
            .expect("n");
        assert_eq!(
            task["tags"][0],
            if n.is_multiple_of(2) { "even" } else { "odd" }
        );
    }
    // A finished task by id: what it was, from the log.
    let id = completed[4];
    let (status, read) = send(&daemon, "GET", &format!("/v1/tasks/{id}"), &Value::Null);
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        (
            &read["state"],
            &read["result"],
            &read["attempts"],
            &read["holder"]
        ),
        (
            &json!("completed"),
            &json!({"done": id}),
            &json!(1),
            &json!("a")
        )
    );
    assert!(read["finished_at"].is_string(), "{read}");
    // Filters select among finished tasks too, and page the same way.
    let done = walk(&daemon, "/v1/tasks?state=completed&limit=7");
    let done_ids: Vec<u64> = done.iter().map(|t| t["id"].as_u64().expect("id")).collect();
    assert_eq!(done_ids, completed);
    let odd_cancelled = walk(&daemon, "/v1/tasks?state=cancelled&tag=odd&limit=3");
    let expected: Vec<u64> = walked
        .iter()
        .filter(|t| t["state"] == "cancelled" && t["tags"][0] == "odd")
        .map(|t| t["id"].as_u64().expect("id"))
        .collect();
    assert!(!expected.is_empty());
    let got: Vec<u64> = odd_cancelled
        .iter()
        .map(|t| t["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, expected);
    let keyed = walk(&daemon, "/v1/tasks?key=JIRA-42");
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0]["key"], "JIRA-42");
    assert_eq!(keyed[0]["state"], "completed", "task 42 is a multiple of 3");
    // Acting on a finished task is refused by how it ended.
    let (status, answer) = send(
        &daemon,
        "POST",
        &format!("/v1/tasks/{id}/complete"),
        &json!({"agent": "a"}),
    );
    assert_error(status, &answer, 409, "already_completed");
    let (status, answer) = send(&daemon, "GET", "/v1/tasks/999999", &Value::Null);
    assert_error(status, &answer, 404, "unknown_task");
}

#[test]
fn the_daemon_logs_its_lifecycle_and_refused_requests_as_json_lines() {
    let (_dir, db) = new_db();
    let mut daemon = Daemon::start(&db, &["--log-format", "json"]);
    let (status, _, _) = http(&daemon.address, "DELETE", "/v1/locks", &[], b"");
    assert_eq!(status, 405);
    daemon.terminate();
    let logs = daemon.logs_after_exit();
    let lines: Vec<Value> = logs
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"serving"), "{logs:?}");
    assert!(
        messages.contains(&"stopped; the ledger is closed"),
        "{logs:?}"
    );
    let refused = lines
        .iter()
        .find(|line| line["fields"]["message"] == "request refused")
        .unwrap_or_else(|| panic!("no request line: {logs:?}"));
    assert_eq!(refused["fields"]["method"], "DELETE");
    assert_eq!(refused["fields"]["route"], "/v1/locks");
    assert_eq!(refused["fields"]["status"], 405);
    assert!(refused["fields"]["latency_ms"].is_number());
}

#[test]
fn the_served_openapi_document_is_the_checked_in_one_and_names_every_route() {
    let (_dir, daemon) = started();
    let (status, served) = send(&daemon, "GET", "/v1/openapi.json", &Value::Null);
    assert_eq!(status, 200);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json"))
            .expect("docs/openapi.json is JSON");
    assert!(
        served == checked_in,
        "docs/openapi.json is stale: regenerate it with `fleetlog openapi > docs/openapi.json`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    for route in fleetlog::wire::routes::ROUTES {
        let operation = &served["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
    }
    // A command's body is its variant without the tag, closed to unknown fields, and nested
    // types are closed too.
    let enqueue = &served["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(enqueue["additionalProperties"], false, "{enqueue}");
    assert!(enqueue["properties"]["spec"].is_object());
    assert!(enqueue["properties"]["command"].is_null());
    assert_eq!(
        served["components"]["schemas"]["TaskSpec"]["additionalProperties"],
        false
    );
    // A route's path segment is a parameter, not a body field.
    let complete = &served["paths"]["/v1/tasks/{task}/complete"]["post"];
    assert!(
        complete["requestBody"]["content"]["application/json"]["schema"]["properties"]["task"]
            .is_null()
    );
    assert_eq!(complete["parameters"][0]["name"], "task");
}

#[test]
fn api_md_names_every_route() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    let missing: Vec<String> = fleetlog::wire::routes::ROUTES
        .iter()
        .map(|route| format!("{} {}", route.method, route.path))
        .filter(|route| !guide.contains(route.as_str()))
        .collect();
    assert!(missing.is_empty(), "docs/api.md does not name: {missing:?}");
}

#[test]
fn every_route_in_the_table_is_served() {
    let (_dir, daemon) = started();
    for route in fleetlog::wire::routes::ROUTES {
        let path = route
            .path
            .replace("{agent}", "a")
            .replace("{workflow}", "w")
            .replace(['{'], "")
            .replace("task}", "1")
            .replace("approval}", "1")
            .replace("thread}", "1");
        if path.ends_with("/stream") || path.ends_with("/wait") {
            continue; // these stay open by design
        }
        let (status, _, _) = http(
            &daemon.address,
            route.method,
            &path,
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert!(
            status != 405 && status != 415 && !(status == 404 && route.path == path),
            "{} {} answered {status}",
            route.method,
            route.path
        );
    }
}

/// One raw request over the Unix socket: the status and the JSON body.
fn unix_http(daemon: &Daemon, request: &str) -> (u16, Value) {
    let (status, response) = raw_unix_http(&daemon.socket, request.as_bytes());
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn web_pages_and_rebinding_hosts_are_refused_on_both_listeners_and_change_nothing() {
    let (_dir, daemon) = started();
    let before = head_seq(&daemon);
    let body = br#"{"agent":"a","kind":"pwned"}"#;
    // A cross-origin "simple" request a page can send without a preflight.
    let (status, _, answer) = http(
        &daemon.address,
        "POST",
        "/v1/events",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        body,
    );
    assert_error(status, &answer, 403, "foreign_origin");
    let (status, answer) = unix_http(
        &daemon,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{\"agent\":\"a\",\"kind\":\"pwned\"}",
    );
    assert_error(status, &answer, 403, "foreign_origin");
    // DNS rebinding: the page's own name in Host, reading the log.
    let (status, _, answer) = http(&daemon.address, "GET", "/v1/events?from=1", &[], b"");
    assert_eq!(status, 200, "localhost is ours: {answer}");
    let mut request = format!(
        "GET /v1/events?from=1 HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        daemon.address.rsplit(':').next().expect("port")
    )
    .into_bytes();
    let (status, response) = raw_http(&daemon.address, &request);
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("foreign_host"), "{response}");
    request.clear();
    // No Origin at all, but not JSON: refused as well.
    let (status, _, answer) = http(
        &daemon.address,
        "POST",
        "/v1/events",
        &[("Content-Type", "text/plain")],
        body,
    );
    assert_error(status, &answer, 415, "unsupported_media_type");
    assert_eq!(head_seq(&daemon), before, "nothing was appended");
}

#[test]
fn an_empty_token_is_refused_at_start() {
    let (_dir, db) = new_db();
    for (args, env) in [
        (vec!["--listen", "127.0.0.1:0", "--token", ""], None),
        (vec!["--listen", "0.0.0.0:0"], Some("")),
        (vec!["--listen", "0.0.0.0:0", "--token", " "], None),
    ] {
        let mut command = std::process::Command::new(FLEETLOG);
        command
            .arg("--db")
            .arg(&db)
            .arg("serve")
            .args(&args)
            .env_remove("FLEETLOG_TOKEN");
        if let Some(value) = env {
            command.env("FLEETLOG_TOKEN", value);
        }
        let output = command.output().expect("serve runs");
        assert!(!output.status.success(), "{args:?} {env:?} served");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("token is empty"), "{stderr}");
    }
}
