//! Guards the `fleetlog` binary end to end: each command's output, `--json`, exit codes, and
//! that bad input changes nothing.

use std::path::Path;
use std::process::{Command, Output};

fn fleetlog(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetlog"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("the fleetlog binary runs")
}

/// `fleetlog append --agent a --kind k --payload PAYLOAD`.
fn append(db: &Path, payload: &str) -> Output {
    fleetlog(
        db,
        &[
            "append",
            "--agent",
            "a",
            "--kind",
            "k",
            "--payload",
            payload,
        ],
    )
}

/// `fleetlog init` then `fleetlog register --agent a`.
fn init_with_agent(db: &Path) {
    assert!(fleetlog(db, &["init"]).status.success());
    let output = fleetlog(db, &["register", "--agent", "a", "--role", "tester"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not one JSON document ({error}): {}", stdout(output)))
}

#[test]
fn init_append_head_verify_events_and_stats_work_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    init_with_agent(&db);
    for n in 0..5 {
        let output = append(&db, &format!("{{\"n\": {n}}}"));
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // Seq 1 registers the agent; its five appends are seqs 2 to 6.
    let head = json(&fleetlog(&db, &["--json", "head"]));
    assert_eq!(head["seq"], 6);
    let checkpoint = head["checkpoint"].as_str().expect("checkpoint").to_owned();
    assert_eq!(stdout(&fleetlog(&db, &["head"])).trim(), checkpoint);

    let verify = fleetlog(&db, &["verify"]);
    assert!(verify.status.success());
    assert!(
        stdout(&verify).starts_with("ok: 6 records verified from genesis"),
        "{}",
        stdout(&verify)
    );
    let verify = json(&fleetlog(&db, &["--json", "verify", "--from", &checkpoint]));
    assert_eq!(
        verify["checked"], 6,
        "a checkpoint is checked, from genesis"
    );
    assert_eq!(verify["problem"], serde_json::Value::Null);

    let events = json(&fleetlog(
        &db,
        &["--json", "events", "--from", "3", "--limit", "2"],
    ));
    let seqs: Vec<u64> = events
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(events[0]["event"]["payload"]["n"], 1);
    let table = stdout(&fleetlog(&db, &["events"]));
    assert!(table.starts_with("SEQ"), "{table}");
    assert_eq!(table.lines().count(), 7);

    let stats = json(&fleetlog(&db, &["--json", "stats", "--as-of", "4"]));
    assert_eq!(stats["events"], 4);
    assert_eq!(stats["by_actor"]["a"], 4);
}

#[test]
fn export_then_import_round_trips_through_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    init_with_agent(&db);
    assert!(append(&db, "1").status.success());
    let export = dir.path().join("fleet.jsonl");
    // An existing, world-readable file is narrowed too.
    std::fs::write(&export, "old").expect("a file in the way");
    let output = fleetlog(&db, &["export", "--out", export.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export)
            .expect("export")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the backup is the owner's alone");
    }
    let copy = dir.path().join("copy.redb");
    let output = fleetlog(&copy, &["import", export.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&fleetlog(&copy, &["head"])),
        stdout(&fleetlog(&db, &["head"]))
    );
    // Piping to stdout gives the same text as the file.
    let piped = fleetlog(&db, &["export"]);
    assert_eq!(piped.stdout, std::fs::read(&export).expect("export file"));
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    let missing = fleetlog(&db, &["head"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr(&missing).contains("fleetlog init"),
        "{}",
        stderr(&missing)
    );

    assert!(fleetlog(&db, &["init"]).status.success());
    let again = fleetlog(&db, &["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));

    let bad_json = append(&db, "{nope");
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(
        stderr(&bad_json).contains("--payload is not valid JSON"),
        "{}",
        stderr(&bad_json)
    );
    let stranger = fleetlog(
        &db,
        &["--json", "append", "--agent", "stranger", "--kind", "k"],
    );
    assert_eq!(
        stranger.status.code(),
        Some(1),
        "an unknown acting agent is an error"
    );
    let error: serde_json::Value = serde_json::from_slice(&stranger.stderr).expect("JSON error");
    assert_eq!(error["error"], "unknown_agent", "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("\"stranger\" is not registered"),
        "{message}"
    );
    let bad_checkpoint = fleetlog(&db, &["verify", "--from", "12"]);
    assert_eq!(bad_checkpoint.status.code(), Some(1));
    assert!(stderr(&bad_checkpoint).contains("SEQ:HASH"));
    let usage = fleetlog(&db, &["events", "--limit", "many"]);
    assert_eq!(usage.status.code(), Some(2));

    assert_eq!(
        json(&fleetlog(&db, &["--json", "head"]))["seq"],
        0,
        "nothing was appended"
    );
}

#[test]
fn verify_exits_nonzero_when_history_differs_from_a_kept_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    init_with_agent(&db);
    for _ in 0..3 {
        assert!(append(&db, "\"abc\"").status.success());
    }
    let head = stdout(&fleetlog(&db, &["head"])).trim().to_owned();
    // A checkpoint from another history: same seq, different hash.
    let forged = format!("3:{}", "0".repeat(64));
    let output = fleetlog(&db, &["verify", "--from", &forged]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("BROKEN: seq 3: history was rewritten"),
        "{}",
        stdout(&output)
    );
    assert!(fleetlog(&db, &["verify", "--from", &head]).status.success());
}

#[test]
fn oak_telemetry_imports_atomically_and_feeds_every_analytic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    assert!(fleetlog(&db, &["init"]).status.success());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/oak");
    let files: Vec<String> = [
        "workflow_events.jsonl",
        "agent_invocations.jsonl",
        "success_metrics.jsonl",
    ]
    .iter()
    .map(|name| fixtures.join(name).to_string_lossy().into_owned())
    .collect();

    // A file with a bad line is refused whole, naming the line.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "not json\n").expect("write");
    let refused = fleetlog(
        &db,
        &[
            "import",
            "--format",
            "oak",
            &files[0],
            broken.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("broken.jsonl:1: not JSON"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        json(&fleetlog(&db, &["--json", "head"]))["seq"],
        0,
        "nothing was imported"
    );

    let mut args = vec!["--json", "import", "--format", "oak"];
    args.extend(files.iter().map(String::as_str));
    let imported = json(&fleetlog(&db, &args));
    assert_eq!(imported["imported"], 9);

    let stats = json(&fleetlog(
        &db,
        &["--json", "workflows", "stats", "--project", "shop"],
    ));
    assert_eq!(
        (stats["total"].as_u64(), stats["completed"].as_u64()),
        (Some(2), Some(1))
    );
    let overhead = json(&fleetlog(&db, &["--json", "overhead"]));
    assert_eq!(overhead["band"], "moderate");
    let costs = json(&fleetlog(
        &db,
        &["--json", "costs", "--since", "2026-11-03T00:00:00Z"],
    ));
    assert_eq!(
        costs["by_agent"]["backend-dev"]["stages"], 1,
        "only the second day"
    );
    let trends = json(&fleetlog(&db, &["--json", "trends", "backend-dev"]));
    assert_eq!(trends["trend"], "insufficient_data");
    let best = fleetlog(
        &db,
        &[
            "--json",
            "best-agent",
            "--task",
            "API development",
            "--min-confidence",
            "0",
        ],
    );
    assert!(best.status.success());
    assert!(
        json(&best)["candidates"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let none = fleetlog(&db, &["best-agent", "--task", "quantum chemistry"]);
    assert_eq!(none.status.code(), Some(3), "no bad guesses");
    // As of before the import, there was nothing to analyse.
    let before = json(&fleetlog(
        &db,
        &["--json", "workflows", "stats", "--as-of", "1"],
    ));
    assert_eq!(before["total"], 0);
}

#[test]
fn the_quick_demo_runs_every_pattern_and_verifies_its_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.redb");
    let output = fleetlog(&db, &["--json", "demo", "--quick"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["passed"], true, "{report}");
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 5);
    assert!(
        checks.iter().all(|check| check["passed"] == true),
        "{checks:?}"
    );
    assert_eq!(report["verify"]["problem"], serde_json::Value::Null);
    assert_eq!(report["workflow_stats"]["completed"], 2);
    // The demo's ledger stays for inspection, and verifies on its own.
    assert!(fleetlog(&db, &["verify"]).status.success());
}

#[test]
fn bench_runs_every_workload_embedded_and_through_a_daemon_with_sane_figures() {
    for workload in ["append", "heartbeat", "signal", "lock", "queue", "mixed"] {
        for embedded in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = dir.path().join("bench.redb");
            let mut args = vec![
                "--json",
                "bench",
                "--workload",
                workload,
                "--clients",
                "4",
                "--ops",
                "120",
            ];
            if embedded {
                args.push("--embedded");
            }
            let output = fleetlog(&db, &args);
            assert!(
                output.status.success(),
                "{workload} embedded={embedded}: {}",
                stderr(&output)
            );
            let result = json(&output);
            let number = |field: &str| {
                result[field]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{field} in {result}"))
            };
            assert_eq!(result["ops"], 120, "{result}");
            assert_eq!(result["errors"], 0, "{result}");
            assert!(number("ops_per_sec") > 0.0);
            assert!(
                number("events_per_sec") >= number("ops_per_sec") * 0.99,
                "every op appends at least one event: {result}"
            );
            assert!(number("mean_batch_events") >= 1.0);
            assert!(number("bytes_on_disk_per_event") > 0.0);
            // The disk's floor is measured beside the ledger, and the p50 read against it.
            let floor = &result["disk_floor"];
            assert!(
                floor["in_place_p50_us"].as_u64().is_some_and(|us| us > 0),
                "{result}"
            );
            assert!(
                floor["growing_p50_us"].as_u64().is_some_and(|us| us > 0),
                "{result}"
            );
            assert!(number("p50_over_floor") > 0.0);
            // Where the CPU went, per op (ticks are 10 ms, so a short run may read zero): the
            // in-process daemon's threads and the load generator; embedded, the ledger commits
            // on its callers' threads, so the whole process is the server's.
            assert!(number("server_cpu_us_per_op") >= 0.0, "{result}");
            match embedded {
                true => assert!(result["client_cpu_us_per_op"].is_null(), "{result}"),
                false => assert!(number("client_cpu_us_per_op") >= 0.0, "{result}"),
            }
            let latency = &result["latency"];
            let at = |field: &str| latency[field].as_u64().expect("latency");
            assert!(
                at("p50_us") > 0 && at("p50_us") <= at("p99_us") && at("p99_us") <= at("max_us"),
                "{latency}"
            );
            assert_eq!(
                result["target"].as_str().map(|t| t.starts_with("embedded")),
                Some(embedded)
            );
        }
    }
    let refused = fleetlog(
        std::path::Path::new("unused.redb"),
        &["bench", "--workload", "teleport", "--ops", "1"],
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown workload is a usage error"
    );
    assert!(stderr(&refused).contains("teleport"));
}

#[test]
fn every_list_table_shows_the_values_not_placeholders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    init_with_agent(&db);
    let run = |args: &[&str]| {
        let output = fleetlog(&db, args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    run(&[
        "heartbeat",
        "--agent",
        "a",
        "--status",
        "busy",
        "--progress",
        "0.5",
    ]);
    run(&[
        "task",
        "add",
        "--agent",
        "a",
        "--title",
        "compile-docs",
        "--priority",
        "7",
    ]);
    run(&[
        "lock",
        "acquire",
        "--agent",
        "a",
        "--resource",
        "src/main.rs",
        "--intent",
        "refactor",
    ]);
    run(&[
        "approval",
        "request",
        "--agent",
        "a",
        "--action",
        "deploy-prod",
    ]);
    run(&[
        "board",
        "post",
        "--agent",
        "a",
        "--title",
        "release-plan",
        "--message",
        "ship it",
    ]);
    run(&[
        "decision",
        "log",
        "--agent",
        "a",
        "--type",
        "architecture",
        "--reason",
        "fewer-moving-parts",
    ]);
    run(&[
        "workflow",
        "start",
        "--agent",
        "a",
        "wf-9",
        "--project",
        "apollo",
    ]);

    let agents = run(&["agents"]);
    assert!(
        agents.contains("tester") && agents.contains("busy") && agents.contains("50 %"),
        "{agents}"
    );
    let tasks = run(&["task", "list"]);
    assert!(
        tasks.contains("compile-docs") && tasks.contains("pending") && tasks.contains('7'),
        "{tasks}"
    );
    let locks = run(&["lock", "list"]);
    assert!(
        locks.contains("src/main.rs") && locks.contains("refactor"),
        "{locks}"
    );
    let approvals = run(&["approval", "list"]);
    assert!(
        approvals.contains("deploy-prod") && approvals.contains("pending"),
        "{approvals}"
    );
    let threads = run(&["board", "list"]);
    assert!(threads.contains("release-plan"), "{threads}");
    let decisions = run(&["decision", "list"]);
    assert!(
        decisions.contains("architecture") && decisions.contains("fewer-moving-parts"),
        "{decisions}"
    );
    let workflows = run(&["workflow", "list"]);
    assert!(
        workflows.contains("wf-9") && workflows.contains("apollo") && workflows.contains("running"),
        "{workflows}"
    );
    let status = run(&["status"]);
    assert!(
        status.contains("src/main.rs") && status.contains("wf-9"),
        "{status}"
    );
}

#[test]
fn bench_ping_measures_requests_that_append_nothing_and_needs_a_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.redb");
    let args = [
        "--json",
        "bench",
        "--workload",
        "ping",
        "--clients",
        "3",
        "--ops",
        "90",
    ];
    let output = fleetlog(&db, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    let result = json(&output);
    assert_eq!(result["workload"], "ping", "{result}");
    assert_eq!(result["ops"], 90, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert!(
        result["ops_per_sec"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0)
    );
    // The three clients' registrations are the only events: a ping writes nothing.
    let events = result["events_per_sec"].as_f64().expect("events/s")
        * result["seconds"].as_f64().expect("seconds");
    assert_eq!(events.round(), 3.0, "{result}");
    // The run lasts as long as its clients were busy, not until the progress loop next looked
    // (it sleeps 100 ms at a time): three clients sharing 90 requests.
    let busy = result["latency"]["mean_us"].as_f64().expect("mean") * 90.0 / 3.0 / 1e6;
    let seconds = result["seconds"].as_f64().expect("seconds");
    assert!(
        seconds <= busy * 1.5 + 0.01,
        "{seconds} s for {busy} s of requests: {result}"
    );

    let embedded_db = dir.path().join("embedded.redb");
    let mut embedded = args.to_vec();
    embedded.push("--embedded");
    let refused = fleetlog(&embedded_db, &embedded);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("drop --embedded"),
        "{}",
        stderr(&refused)
    );
    assert!(!embedded_db.exists(), "refused before the ledger was made");
}

#[test]
fn bench_refuses_a_comparison_it_cannot_make_before_running_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.redb");
    let unknown = fleetlog(&db, &["bench", "--duration", "30", "--against", "etcd"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("only redis"),
        "{}",
        stderr(&unknown)
    );
    #[cfg(not(feature = "redis"))]
    {
        let redis = fleetlog(&db, &["bench", "--duration", "30", "--against", "redis"]);
        assert_eq!(redis.status.code(), Some(1));
        assert!(
            stderr(&redis).contains("--features redis"),
            "{}",
            stderr(&redis)
        );
    }
    // Neither ran the fleetlog half first: that would have made the ledger.
    assert!(!db.exists());
}
