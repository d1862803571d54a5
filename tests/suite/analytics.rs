//! Guards the analytics against hand-computed fixtures: workflow statistics, coordination
//! overhead (negative when stages ran in parallel) and its wait breakdown, trends, best-agent
//! ranking, and cost; empty windows, single samples and agents with no history; and the same
//! answers from the live state and from a replay as of the same point.

use fleetlog_ledger::{Event, Json, Outcome as Work, Timestamp};
use fleetlog_projections::analytics::{self, Trend, Window};
use fleetlog_projections::commands::{
    AcquireLock, Claim, CompleteStage, CompleteWorkflow, DecideApproval, Enqueue, ImportTelemetry,
    ReceiveSignal, ReleaseLock, RequestApproval, SendSignal, SetBudget, StartStage, StartWorkflow,
};
use fleetlog_projections::{AsOf, Command, Outcome, StageReport, TaskSpec};
use fleetlog_suite::TestFleet;

const MINUTE: u64 = 60_000;

fn stage(
    agent: &str,
    name: &str,
    outcome: Work,
    minutes: u64,
    cost_usd: f64,
    tier: &str,
) -> StageReport {
    StageReport {
        stage: name.to_owned(),
        agent: agent.to_owned(),
        tier: tier.to_owned(),
        outcome,
        duration_ms: minutes * MINUTE,
        cost_usd,
        tokens: minutes * 100,
        description: String::new(),
        tags: vec![],
        quality: None,
    }
}

fn start(fleet: &TestFleet, id: &str, project: &str, plan: &[&str], estimate_minutes: u64) {
    fleet.run(Command::StartWorkflow(StartWorkflow {
        agent: "orch".into(),
        workflow_id: id.into(),
        project: project.into(),
        agent_plan: plan.iter().map(|a| (*a).to_owned()).collect(),
        estimated_duration_ms: Some(estimate_minutes * MINUTE),
    }));
}

fn start_stage(fleet: &TestFleet, id: &str, name: &str, agent: &str) {
    fleet.run(Command::StartStage(StartStage {
        agent: "orch".into(),
        workflow_id: id.into(),
        stage: name.into(),
        stage_agent: agent.into(),
        tier: "standard".into(),
    }));
}

fn complete_stage(fleet: &TestFleet, id: &str, report: StageReport) {
    fleet.run(Command::CompleteStage(CompleteStage {
        agent: "orch".into(),
        workflow_id: id.into(),
        report,
    }));
}

fn finish(fleet: &TestFleet, id: &str, success: bool) {
    fleet.run(Command::CompleteWorkflow(CompleteWorkflow {
        agent: "orch".into(),
        workflow_id: id.into(),
        success,
        error: (!success).then(|| "tests failed".to_owned()),
        duration_ms: None,
        agents_executed: vec![],
    }));
}

/// Three finished workflows and one running:
/// - wf-a (shop): plan 10 min, 5 min handoff gap, code 30 min; wall 45 min → overhead 5/45.
/// - wf-b (shop): two 15-minute stages in parallel within 20 minutes → overhead -10/20.
/// - wf-c (lab): one failed 10-minute stage; wall 10 → overhead 0.
/// - wf-d (lab): running.
fn workflows() -> TestFleet {
    let fleet = TestFleet::new();
    for agent in ["orch", "planner", "coder"] {
        fleet.register_long_lived(agent);
    }
    start(&fleet, "wf-a", "shop", &["planner", "coder"], 60);
    start_stage(&fleet, "wf-a", "plan", "planner");
    fleet.advance_ms(10 * MINUTE);
    complete_stage(
        &fleet,
        "wf-a",
        stage("planner", "plan", Work::Success, 10, 0.5, "premium"),
    );
    fleet.advance_ms(5 * MINUTE);
    start_stage(&fleet, "wf-a", "code", "coder");
    fleet.advance_ms(30 * MINUTE);
    complete_stage(
        &fleet,
        "wf-a",
        stage("coder", "code", Work::Success, 30, 1.0, "standard"),
    );
    finish(&fleet, "wf-a", true);

    start(&fleet, "wf-b", "shop", &["planner", "coder"], 20);
    fleet.advance_ms(20 * MINUTE);
    complete_stage(
        &fleet,
        "wf-b",
        stage("planner", "plan", Work::Success, 15, 0.25, "premium"),
    );
    complete_stage(
        &fleet,
        "wf-b",
        stage("coder", "code", Work::Success, 15, 0.25, "standard"),
    );
    finish(&fleet, "wf-b", true);

    start(&fleet, "wf-c", "lab", &["coder"], 5);
    fleet.advance_ms(10 * MINUTE);
    complete_stage(
        &fleet,
        "wf-c",
        stage("coder", "experiment", Work::Failure, 10, 2.0, "standard"),
    );
    finish(&fleet, "wf-c", false);

    start(&fleet, "wf-d", "lab", &["coder"], 5);
    fleet
}

#[test]
fn workflow_stats_count_rates_durations_estimates_and_sequences() {
    let fleet = workflows();
    let state = fleet.coordinator.state();
    let all = analytics::workflow_stats(&state, &Window::default(), 5);
    assert_eq!(
        (
            all.total,
            all.completed,
            all.failed,
            all.running,
            all.cancelled
        ),
        (4, 2, 1, 1, 0)
    );
    assert_eq!(all.success_rate, Some(2.0 / 3.0));
    // Wall times 45, 20 and 10 minutes.
    assert_eq!(all.duration_ms.count, 3);
    assert_eq!(all.duration_ms.p50, Some((20 * MINUTE) as f64));
    assert_eq!(all.duration_ms.p90, Some((45 * MINUTE) as f64));
    assert_eq!(all.duration_ms.mean, Some((25 * MINUTE) as f64));
    // Estimates 60 + 20 + 5 = 85 minutes against 75 actual, over the finished three.
    assert_eq!(all.estimated_ms_mean, Some((85 * MINUTE) as f64 / 3.0));
    assert_eq!(all.actual_over_estimated, Some(75.0 / 85.0));
    assert_eq!(all.common_sequences[0].agents, ["planner", "coder"]);
    assert_eq!(all.common_sequences[0].count, 2);
    assert_eq!(
        all.average_agents,
        Some(5.0 / 3.0),
        "agents per finished workflow: the running wf-d is not counted"
    );

    let shop = analytics::workflow_stats(
        &state,
        &Window {
            project: Some("shop".into()),
            ..Default::default()
        },
        5,
    );
    assert_eq!(
        (shop.total, shop.completed, shop.success_rate),
        (2, 2, Some(1.0))
    );
    let empty = analytics::workflow_stats(
        &state,
        &Window {
            from: Some(Timestamp::MAX),
            ..Default::default()
        },
        5,
    );
    assert_eq!(
        (empty.total, empty.success_rate, empty.duration_ms.p50),
        (0, None, None)
    );
    let single = analytics::workflow_stats(
        &state,
        &Window {
            project: Some("lab".into()),
            ..Default::default()
        },
        5,
    );
    assert_eq!(
        single.duration_ms.p50, single.duration_ms.p90,
        "one sample is every percentile"
    );
}

#[test]
fn overhead_is_reported_per_workflow_unclamped_with_a_band() {
    let fleet = workflows();
    let state = fleet.coordinator.state();
    let report = analytics::overhead(&state, &Window::default());
    let share = |id: &str| {
        report
            .workflows
            .iter()
            .find(|w| w.workflow_id == id)
            .map(|w| w.overhead)
    };
    assert_eq!(share("wf-a"), Some(5.0 / 45.0));
    assert_eq!(
        share("wf-b"),
        Some(-0.5),
        "parallel stages give negative overhead, not clamped"
    );
    assert_eq!(share("wf-c"), Some(0.0));
    assert_eq!(
        share("wf-d"),
        None,
        "a running workflow has no wall time yet"
    );
    let mean = (5.0 / 45.0 - 0.5 + 0.0) / 3.0;
    assert!((report.overhead.mean.expect("mean") - mean).abs() < 1e-12);
    assert!(
        (report.coordination_minutes_mean.expect("minutes") - (5.0 - 10.0 + 0.0) / 3.0).abs()
            < 1e-12
    );
    // The headline is over totals: (5 - 10 + 0) coordination minutes of 75 wall minutes.
    assert_eq!(report.wall_ms_total, 75 * MINUTE);
    assert_eq!(report.coordination_ms_total, -5 * MINUTE as i64);
    assert!((report.overhead_percent.expect("headline") - (-5.0 / 75.0 * 100.0)).abs() < 1e-9);
    assert_eq!(report.band.as_deref(), Some("efficient"));
    // The one real handoff: plan ended, code started 5 minutes later (wf-b's stages overlapped).
    assert_eq!(report.handoff_gap_ms.fleet.count, 1);
    assert_eq!(report.handoff_gap_ms.fleet.total, (5 * MINUTE) as f64);
    assert_eq!(report.handoff_gap_ms.by_agent["coder"].count, 1);
}

#[test]
fn the_breakdown_measures_queue_lock_signal_and_approval_waits() {
    let fleet = TestFleet::new();
    for agent in ["a", "b"] {
        fleet.register_long_lived(agent);
    }
    // Queue: claimed after 2 and 4 minutes.
    for title in ["t1", "t2"] {
        fleet.run(Command::Enqueue(Enqueue {
            agent: "a".into(),
            spec: TaskSpec {
                workflow_id: Some("wf-x".into()),
                ..TaskSpec::new(title)
            },
        }));
    }
    fleet.advance_ms(2 * MINUTE);
    fleet.run(Command::Claim(Claim {
        agent: "b".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: None,
        lease_ttl_ms: 3_600_000,
        wait_ms: None,
    }));
    fleet.advance_ms(2 * MINUTE);
    fleet.run(Command::Claim(Claim {
        agent: "b".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: None,
        lease_ttl_ms: 3_600_000,
        wait_ms: None,
    }));
    // Lock: b waits 3 minutes for a's release.
    let token = match fleet.run(Command::AcquireLock(AcquireLock {
        slots: None,
        agent: "a".into(),
        resource: "db".into(),
        ttl_ms: 3_600_000,
        intent: String::new(),
        wait_ms: None,
    })) {
        Outcome::Lock { lock } => lock.token,
        other => panic!("{other:?}"),
    };
    let waiting = fleet
        .coordinator
        .submit(Command::AcquireLock(AcquireLock {
            slots: None,
            agent: "b".into(),
            resource: "db".into(),
            ttl_ms: 3_600_000,
            intent: String::new(),
            wait_ms: Some(3_600_000),
        }))
        .expect("queued");
    fleet.coordinator.sync().expect("parked");
    fleet.advance_ms(3 * MINUTE);
    fleet.run(Command::ReleaseLock(ReleaseLock {
        agent: "a".into(),
        resource: "db".into(),
        token,
    }));
    waiting.wait().expect("granted");
    // Signal: consumed a minute after it was sent. Approval: decided after 7 minutes.
    fleet.run(Command::SendSignal(SendSignal {
        agent: "a".into(),
        kind: "ping".into(),
        target: fleetlog_ledger::SignalTarget::Agent("b".into()),
        payload: Json::null(),
        ttl_ms: 3_600_000,
        correlation_id: None,
    }));
    fleet.advance_ms(MINUTE);
    fleet.run(Command::ReceiveSignal(ReceiveSignal {
        ack_ms: None,
        agent: "b".into(),
        filter: fleetlog_projections::signals::SignalFilter {
            kind: "ping".into(),
            ..Default::default()
        },
        consume: true,
        wait_ms: None,
    }));
    let approval = match fleet.run(Command::RequestApproval(RequestApproval {
        agent: "a".into(),
        action: "ship".into(),
        context: Json::null(),
        approvers: vec![],
        timeout_ms: 3_600_000,
    })) {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    };
    fleet.advance_ms(7 * MINUTE);
    fleet.run(Command::Decide(DecideApproval {
        agent: "b".into(),
        approval,
        approved: true,
        reason: String::new(),
    }));

    let report = analytics::overhead(&fleet.coordinator.state(), &Window::default());
    assert_eq!(report.queue_wait_ms.fleet.count, 2);
    assert_eq!(report.queue_wait_ms.fleet.p50, Some((2 * MINUTE) as f64));
    assert_eq!(report.queue_wait_ms.fleet.p90, Some((4 * MINUTE) as f64));
    assert_eq!(
        report.queue_wait_ms.by_workflow["wf-x"].total,
        (6 * MINUTE) as f64
    );
    assert_eq!(report.queue_wait_ms.by_agent["b"].count, 2);
    // a's own grant waited 0; b's waited 3 minutes.
    assert_eq!(report.lock_wait_ms.by_agent["b"].total, (3 * MINUTE) as f64);
    assert_eq!(report.lock_wait_ms.by_agent["a"].total, 0.0);
    assert_eq!(report.signal_latency_ms.fleet.total, MINUTE as f64);
    assert_eq!(
        report.approval_wait_ms.by_agent["a"].total,
        (7 * MINUTE) as f64
    );
}

/// Imports stage history for `agent` with outcomes at days before `now`.
fn history(fleet: &TestFleet, now: Timestamp, agent: &str, runs: &[(u64, Work, &str)]) {
    let events = runs
        .iter()
        .map(|(days_ago, outcome, description)| Event::StageCompleted {
            workflow_id: "history".into(),
            stage: "work".into(),
            agent: agent.into(),
            tier: "standard".into(),
            outcome: *outcome,
            duration_ms: 10 * MINUTE + days_ago * 1_000,
            cost_usd: 0.1,
            tokens: 10,
            description: (*description).into(),
            tags: vec!["backend".into()],
            quality: None,
            occurred_at: Some(now.minus_millis(days_ago * 24 * 60 * MINUTE)),
        })
        .collect();
    fleet.run(Command::ImportTelemetry(ImportTelemetry {
        agent: "importer".into(),
        events,
    }));
}

#[test]
fn trends_compare_the_last_week_with_the_rest_of_the_window() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let now = fleet.now();
    use Work::{Failure, Success};
    history(
        &fleet,
        now,
        "coder",
        &[
            (20, Success, "x"),
            (15, Failure, "x"),
            (12, Success, "x"),
            (10, Failure, "x"),
            (3, Success, "x"),
            (2, Success, "x"),
            (1, Success, "x"),
            (1, Success, "x"),
        ],
    );
    history(
        &fleet,
        now,
        "tester",
        &[(20, Success, "x"), (2, Failure, "x")],
    );
    history(&fleet, now, "old", &[(60, Success, "x")]);
    let state = fleet.coordinator.state();
    let coder = analytics::agent_trend(&state, "coder", 30, now, 5.0);
    assert_eq!(
        (coder.historical.samples, coder.historical.success_rate),
        (4, Some(0.5))
    );
    assert_eq!(
        (coder.recent.samples, coder.recent.success_rate),
        (4, Some(1.0))
    );
    assert_eq!(coder.change_points, Some(50.0));
    assert_eq!(coder.trend, Trend::Improving);
    assert_eq!(coder.daily.len(), 7, "one entry per day with work");
    assert_eq!(
        analytics::agent_trend(&state, "tester", 30, now, 5.0).trend,
        Trend::InsufficientData
    );
    let nobody = analytics::agent_trend(&state, "nobody", 30, now, 5.0);
    assert_eq!(
        (nobody.recent.samples, nobody.trend),
        (0, Trend::InsufficientData)
    );
    // Worst first: tester (0% recently) before coder (100%); "old" has nothing in the window.
    let all = analytics::all_trends(&state, 30, now, 5.0);
    assert_eq!(
        all.iter().map(|t| t.agent.as_str()).collect::<Vec<_>>(),
        ["tester", "coder"]
    );
    // A higher threshold makes the same change "stable".
    assert_eq!(
        analytics::agent_trend(&state, "coder", 30, now, 60.0).trend,
        Trend::Stable
    );
}

#[test]
fn the_best_agent_is_ranked_by_relevant_successful_experience() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let now = fleet.now();
    use Work::{Failure, Success};
    history(
        &fleet,
        now,
        "coder",
        &[
            (3, Success, "API development for the backend"),
            (2, Success, "REST API endpoints"),
            (1, Success, "backend API development"),
        ],
    );
    history(
        &fleet,
        now,
        "planner",
        &[(2, Failure, "plan the API roadmap")],
    );
    history(
        &fleet,
        now,
        "designer",
        &[(1, Success, "UI design for the frontend")],
    );
    let state = fleet.coordinator.state();
    let ranked = analytics::best_agents(&state, "API development", Some("backend"), now, 0.0, 5);
    assert_eq!(ranked[0].agent, "coder");
    assert_eq!(ranked[0].relevant_tasks, 3);
    assert_eq!(ranked[0].success_rate, 1.0);
    assert!(
        ranked[0].reason.contains("3 relevant tasks"),
        "{}",
        ranked[0].reason
    );
    // The planner is relevant through the tag, but failed every relevant task: no 0 %
    // success agent is recommended.
    assert!(ranked.iter().all(|c| c.agent != "planner"), "{ranked:?}");
    assert!(
        ranked
            .iter()
            .all(|c| c.confidence >= 0.0 && c.confidence <= 1.0)
    );
    assert!(
        analytics::best_agents(&state, "API development", Some("backend"), now, 0.99, 5).is_empty(),
        "no bad guesses"
    );
    assert!(
        analytics::best_agents(&state, "the and of", None, now, 0.0, 5).is_empty(),
        "only stop words"
    );
}

#[test]
fn costs_sum_by_workflow_agent_tier_and_day_with_budget_status() {
    let fleet = workflows();
    fleet.run(Command::SetBudget(SetBudget {
        agent: "orch".into(),
        workflow_id: "wf-d".into(),
        limit_usd: 1.0,
    }));
    let state = fleet.coordinator.state();
    let costs = analytics::costs(&state, &Window::default(), fleet.now());
    assert!((costs.total.cost_usd - 4.0).abs() < 1e-12);
    assert_eq!(costs.total.stages, 5);
    assert!((costs.by_workflow["wf-a"].cost_usd - 1.5).abs() < 1e-12);
    assert!((costs.by_agent["coder"].cost_usd - 3.25).abs() < 1e-12);
    assert!((costs.by_tier["premium"].cost_usd - 0.75).abs() < 1e-12);
    assert_eq!(costs.by_day.len(), 1);
    assert_eq!(costs.budgets.len(), 1);
    assert!(!costs.budgets[0].exceeded);
    let lab = analytics::costs(
        &state,
        &Window {
            project: Some("lab".into()),
            ..Default::default()
        },
        fleet.now(),
    );
    assert!((lab.total.cost_usd - 2.0).abs() < 1e-12);
}

#[test]
fn analytics_from_live_state_equal_a_replay_as_of_the_same_point() {
    let fleet = workflows();
    let live = fleet.coordinator.state().clone();
    let replayed = fleet.coordinator.state_as_of(AsOf::Head).expect("replay");
    let window = Window::default();
    assert_eq!(
        analytics::workflow_stats(&live, &window, 5),
        analytics::workflow_stats(&replayed, &window, 5)
    );
    assert_eq!(
        analytics::overhead(&live, &window),
        analytics::overhead(&replayed, &window)
    );
    assert_eq!(
        analytics::costs(&live, &window, fleet.now()),
        analytics::costs(&replayed, &window, fleet.now())
    );
    // As of just after wf-a finished, only wf-a is complete.
    let reader = fleet.coordinator.ledger().reader();
    let records = reader
        .range(1..=reader.last_seq().expect("last"))
        .expect("read");
    let wf_a_done = records
        .iter()
        .find(|r| matches!(&r.event, Event::WorkflowCompleted { workflow_id, .. } if workflow_id == "wf-a"))
        .expect("wf-a completes");
    let then = fleet
        .coordinator
        .state_as_of(AsOf::Seq(wf_a_done.seq))
        .expect("as of");
    let stats = analytics::workflow_stats(&then, &window, 5);
    assert_eq!((stats.total, stats.completed), (1, 1));
}

#[test]
fn imported_telemetry_must_be_workflow_history_and_is_imported_once() {
    let fleet = TestFleet::new();
    fleet.register_long_lived("importer");
    let started = Event::WorkflowStarted {
        workflow_id: "w".into(),
        project: "p".into(),
        agent_plan: vec![],
        estimated_duration_ms: None,
        session_id: None,
        occurred_at: Some(fleet.now()),
    };
    fleet.run(Command::ImportTelemetry(ImportTelemetry {
        agent: "importer".into(),
        events: vec![started.clone()],
    }));
    assert!(matches!(
        fleet.refused(Command::ImportTelemetry(ImportTelemetry {
            agent: "importer".into(),
            events: vec![started]
        })),
        fleetlog_projections::CommandError::Invalid { .. }
    ));
    let lock = Event::LockReleased {
        resource: "r".into(),
        token: 1,
    };
    assert!(matches!(
        fleet.refused(Command::ImportTelemetry(ImportTelemetry {
            agent: "importer".into(),
            events: vec![lock]
        })),
        fleetlog_projections::CommandError::Invalid { .. }
    ));
}

#[test]
fn the_overhead_headline_weighs_workflows_by_their_wall_time() {
    // One long workflow at 1 % overhead and one short one at 75 %: the unweighted mean of the
    // shares is 38 % ("high"), but of the fleet's time only 4 of 104 minutes went to
    // coordination, which is what the headline (the seed tools' formula) reports.
    let fleet = TestFleet::new();
    for agent in ["orch", "coder"] {
        fleet.register_long_lived(agent);
    }
    start(&fleet, "long", "p", &["coder"], 100);
    fleet.advance_ms(100 * MINUTE);
    complete_stage(
        &fleet,
        "long",
        stage("coder", "code", Work::Success, 99, 0.0, "standard"),
    );
    finish(&fleet, "long", true);
    start(&fleet, "short", "p", &["coder"], 4);
    fleet.advance_ms(4 * MINUTE);
    complete_stage(
        &fleet,
        "short",
        stage("coder", "code", Work::Success, 1, 0.0, "standard"),
    );
    finish(&fleet, "short", true);

    let report = analytics::overhead(&fleet.coordinator.state(), &Window::default());
    let headline = report.overhead_percent.expect("two finished workflows");
    assert!((headline - 4.0 / 104.0 * 100.0).abs() < 1e-9, "{headline}");
    assert!((report.overhead.mean.expect("mean") - 0.38).abs() < 1e-9);
    assert_eq!(report.band.as_deref(), Some("efficient"));
    assert_eq!(
        report.phase_recommendation.as_deref(),
        Some("Stay Phase 1-2")
    );
}
