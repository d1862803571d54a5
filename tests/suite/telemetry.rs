//! Guards the import of existing agent telemetry (oak JSON Lines): every line becomes the event
//! it describes, with its original time; invocations join the workflow of their session whose
//! span contains them; success metrics override outcomes; bad lines are named by file and line,
//! and an import with bad lines writes nothing.

use fleetlog_projections::commands::ImportTelemetry;
use std::path::Path;

use fleetlog_ledger::{Event, Outcome, Timestamp};
use fleetlog_projections::analytics::{self, Window};
use fleetlog_projections::telemetry;
use fleetlog_projections::workflows::WorkflowStatus;
use fleetlog_projections::{Command, CommandError};
use fleetlog_suite::TestFleet;

fn fixture(name: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oak")
        .join(name);
    (
        name.to_owned(),
        std::fs::read_to_string(path).expect("fixture"),
    )
}

fn fixtures() -> Vec<(String, String)> {
    [
        "workflow_events.jsonl",
        "agent_invocations.jsonl",
        "success_metrics.jsonl",
    ]
    .map(fixture)
    .to_vec()
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("time")
}

#[test]
fn every_line_becomes_its_event_with_its_original_time() {
    let (events, errors) = telemetry::parse(&fixtures());
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    assert_eq!(
        kinds,
        [
            "workflow_started",   // wf-100, 09:00
            "stage_completed",    // i1, 09:15
            "handoff",            // 09:20
            "stage_completed",    // i2, 09:55
            "workflow_completed", // 10:00
            "workflow_started",   // wf-101
            "stage_completed",    // i3
            "workflow_completed",
            "stage_completed", // i4, no workflow
        ]
    );
    match &events[0] {
        Event::WorkflowStarted {
            workflow_id,
            project,
            estimated_duration_ms,
            occurred_at,
            ..
        } => {
            assert_eq!((workflow_id.as_str(), project.as_str()), ("wf-100", "shop"));
            assert_eq!(
                *estimated_duration_ms,
                Some(3_600_000),
                "seconds become milliseconds"
            );
            assert_eq!(
                *occurred_at,
                Some(at("2026-11-02T09:00:00Z")),
                "a naive time is UTC"
            );
        }
        other => panic!("{other:?}"),
    }
    match &events[3] {
        Event::StageCompleted {
            workflow_id,
            agent,
            outcome,
            quality,
            duration_ms,
            description,
            ..
        } => {
            assert_eq!(
                (workflow_id.as_str(), agent.as_str()),
                ("wf-100", "backend-dev")
            );
            assert_eq!(
                *outcome,
                Outcome::Success,
                "the success metric overrides \"partial\""
            );
            assert_eq!(*quality, Some(4.5));
            assert_eq!(*duration_ms, 2_100_000);
            assert_eq!(description, "API development for orders");
        }
        other => panic!("{other:?}"),
    }
    match &events[8] {
        Event::StageCompleted {
            workflow_id,
            outcome,
            ..
        } => {
            assert_eq!(
                workflow_id, "session:s9",
                "no workflow of session s9 spans it"
            );
            assert_eq!(*outcome, Outcome::Unknown);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn imported_telemetry_is_analysed_by_occurrence_time() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let (events, _) = telemetry::parse(&fixtures());
    fleet.run(Command::ImportTelemetry(ImportTelemetry {
        agent: "importer".into(),
        events,
    }));
    let state = fleet.coordinator.state();
    let wf = state.workflows.get("wf-100").expect("imported");
    assert_eq!(wf.status, WorkflowStatus::Completed);
    assert_eq!(wf.started_at, at("2026-11-02T09:00:00Z"));
    assert_eq!(wf.duration_ms, Some(3_600_000));
    let stats = analytics::workflow_stats(&state, &Window::default(), 3);
    assert_eq!((stats.total, stats.completed, stats.failed), (2, 1, 1));
    assert_eq!(stats.common_sequences[0].agents, ["backend-dev"]);
    // Overhead from the invocations that belong to each workflow:
    // wf-100: 60 min wall, 15 + 35 min of agent time → 10/60; wf-101: 30 min wall, 25 → 5/30.
    let overhead = analytics::overhead(&state, &Window::default());
    let share = |id: &str| {
        overhead
            .workflows
            .iter()
            .find(|w| w.workflow_id == id)
            .map(|w| w.overhead)
    };
    assert!((share("wf-100").expect("wf-100") - 10.0 / 60.0).abs() < 1e-12);
    assert!((share("wf-101").expect("wf-101") - 5.0 / 30.0).abs() < 1e-12);
    // A window by occurrence time picks the first day only.
    let day_one = Window {
        from: Some(at("2026-11-02T00:00:00Z")),
        to: Some(at("2026-11-03T00:00:00Z")),
        project: None,
    };
    assert_eq!(analytics::workflow_stats(&state, &day_one, 3).total, 1);
    let best = analytics::best_agents(
        &state,
        "API development",
        None,
        at("2026-11-05T00:00:00Z"),
        0.0,
        3,
    );
    assert_eq!(best[0].agent, "backend-dev");
    assert_eq!(best[0].relevant_tasks, 2);
    assert_eq!(best[0].success_rate, 0.5);
}

#[test]
fn bad_lines_are_named_by_file_and_line() {
    let files = vec![(
        "broken.jsonl".to_owned(),
        "{\"timestamp\": \"2026-11-02T09:00:00Z\", \"event\": \"workflow_start\", \"workflow_id\": \"w\"}\nnot json\n{\"timestamp\": \"yesterday\", \"event\": \"workflow_start\", \"workflow_id\": \"x\"}\n{\"timestamp\": 1.5, \"mystery\": true}\n".to_owned(),
    )];
    let (events, errors) = telemetry::parse(&files);
    assert_eq!(events.len(), 1, "the good line still parses");
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert!(
        errors[0]
            .to_string()
            .starts_with("broken.jsonl:2: not JSON"),
        "{}",
        errors[0]
    );
    assert!(errors[1].problem.contains("yesterday"));
}

#[test]
fn telemetry_importing_a_known_workflow_twice_is_refused_whole() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let (events, _) = telemetry::parse(&fixtures());
    fleet.run(Command::ImportTelemetry(ImportTelemetry {
        agent: "importer".into(),
        events: events.clone(),
    }));
    assert!(matches!(
        fleet.refused(Command::ImportTelemetry(ImportTelemetry {
            agent: "importer".into(),
            events
        })),
        CommandError::Invalid { .. }
    ));
}

fn stage_workflows(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::StageCompleted {
                workflow_id, agent, ..
            } => Some((workflow_id.clone(), agent.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn invocations_without_session_join_the_workflow_that_spans_them_and_names_their_agent() {
    // The seed's own format: invocations carry no session_id. Two workflows overlap in time;
    // each invocation belongs to the one whose plan, handoffs or executed agents name its agent.
    let workflows = r#"{"timestamp": "2026-10-02T09:00:00Z", "event": "workflow_start", "workflow_id": "wf-a", "project_name": "p", "agent_plan": ["planner"], "estimated_duration": 60}
{"timestamp": "2026-10-02T09:01:00Z", "event": "workflow_start", "workflow_id": "wf-b", "project_name": "p", "agent_plan": ["writer"], "estimated_duration": 60}
{"timestamp": "2026-10-02T09:05:00Z", "event": "agent_handoff", "workflow_id": "wf-a", "from_agent": "planner", "to_agent": "coder", "artifacts": []}
{"timestamp": "2026-10-02T09:30:00Z", "event": "workflow_complete", "workflow_id": "wf-a", "duration_seconds": 1800, "success": true, "agents_executed": ["planner", "coder"]}
{"timestamp": "2026-10-02T09:40:00Z", "event": "workflow_complete", "workflow_id": "wf-b", "duration_seconds": 2340, "success": true, "agents_executed": ["writer"]}
"#;
    let invocations = r#"{"timestamp": "2026-10-02T09:10:00Z", "invocation_id": "i1", "agent_name": "coder", "agent_type": "dev", "task_description": "code", "duration_seconds": 300, "outcome": {"status": "success"}}
{"timestamp": "2026-10-02T09:12:00Z", "invocation_id": "i2", "agent_name": "writer", "agent_type": "docs", "task_description": "write", "duration_seconds": 200, "outcome": {"status": "success"}}
{"timestamp": "2026-10-02T09:35:00Z", "invocation_id": "i3", "agent_name": "coder", "agent_type": "dev", "task_description": "late", "duration_seconds": 10, "outcome": {"status": "success"}}
"#;
    let (events, errors) = telemetry::parse(&[
        ("workflow_events.jsonl".to_owned(), workflows.to_owned()),
        ("agent_invocations.jsonl".to_owned(), invocations.to_owned()),
    ]);
    assert_eq!(
        stage_workflows(&events),
        [
            ("wf-a".to_owned(), "coder".to_owned()),
            ("wf-b".to_owned(), "writer".to_owned())
        ]
    );
    // i3 runs after wf-a ended and wf-b never names coder: reported, not guessed.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].file.as_str(), errors[0].line),
        ("agent_invocations.jsonl", 3)
    );
    assert!(errors[0].problem.contains("\"i3\""), "{}", errors[0]);
    assert!(errors[0].problem.contains("session_id"), "{}", errors[0]);
    assert!(
        !events.iter().any(|event| matches!(
            event,
            Event::StageCompleted { workflow_id, .. } if workflow_id.starts_with("session:")
        )),
        "no invocation lands in a workflow named `session:`"
    );
}

#[test]
fn analytics_as_of_a_past_moment_see_history_imported_later() {
    // October's history, imported on November 23rd (the test clock): as of October 31st, the
    // fleet had a month of work by backend-architect, failing in the last week.
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let day = |d: u32| at(&format!("2026-10-{d:02}T12:00:00Z"));
    let mut events = vec![Event::WorkflowStarted {
        workflow_id: "october".into(),
        project: "shop".into(),
        agent_plan: vec!["backend-architect".into()],
        estimated_duration_ms: None,
        session_id: None,
        occurred_at: Some(at("2026-10-01T00:00:00Z")),
    }];
    for d in 1..=30 {
        events.push(Event::StageCompleted {
            workflow_id: "october".into(),
            stage: "design".into(),
            agent: "backend-architect".into(),
            tier: String::new(),
            outcome: if d > 24 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            duration_ms: 60_000,
            cost_usd: 0.0,
            tokens: 0,
            description: "API design".into(),
            tags: vec![],
            quality: None,
            occurred_at: Some(day(d)),
        });
    }
    events.push(Event::WorkflowCompleted {
        workflow_id: "october".into(),
        success: true,
        error: None,
        agents_executed: vec!["backend-architect".into()],
        duration_ms: None,
        occurred_at: Some(at("2026-11-05T00:00:00Z")),
    });
    fleet.run(Command::ImportTelemetry(ImportTelemetry {
        agent: "importer".into(),
        events,
    }));

    let as_of = at("2026-10-31T00:00:00Z");
    let past = fleet
        .coordinator
        .state_as_of(fleetlog_projections::AsOf::Time(as_of))
        .expect("state as of October 31st");
    let trend = analytics::agent_trend(&past, "backend-architect", 30, as_of, 5.0);
    assert_eq!(trend.trend, analytics::Trend::Declining, "{trend:?}");
    assert_eq!(trend.recent.samples + trend.historical.samples, 30);
    // The workflow completed (by its own account) on November 5th: on October 31st it ran.
    assert_eq!(
        past.workflows.get("october").map(|w| w.status),
        Some(WorkflowStatus::Running)
    );
    assert_eq!(
        past.seq, 0,
        "still the state as of the ledger by then (it began in November)"
    );
    let later = fleet
        .coordinator
        .state_as_of(fleetlog_projections::AsOf::Time(at("2026-11-06T00:00:00Z")))
        .expect("state as of November 6th");
    assert_eq!(
        later.workflows.get("october").map(|w| w.status),
        Some(WorkflowStatus::Completed)
    );
}
