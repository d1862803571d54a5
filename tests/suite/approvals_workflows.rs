//! Guards approvals (allowed approvers, one decision, recorded timeout, waits woken by the
//! decision), the board, logged decisions, and workflows (stages, checkpoints, budgets, refusing
//! work after completion).

use fleetlog_ledger::{Json, Outcome as Work};
use fleetlog_projections::approvals::ApprovalState;
use fleetlog_projections::commands::{
    AwaitApproval, CancelWorkflow, Checkpoint, CompleteStage, CompleteWorkflow, DecideApproval,
    Heartbeat, LogDecision, PostThread, RecordHandoff, ReplyToThread, RequestApproval, SetBudget,
    SetSpendLimit, StartStage, StartWorkflow,
};
use fleetlog_projections::decisions::DecisionQuery;
use fleetlog_projections::workflows::WorkflowStatus;
use fleetlog_projections::{Command, CommandError, Outcome, StageReport};
use fleetlog_suite::TestFleet;

fn fleet(agents: &[&str]) -> TestFleet {
    let fleet = TestFleet::new();
    for agent in agents {
        fleet.register_long_lived(agent);
    }
    fleet
}

fn seq(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Appended { seq } => seq,
        other => panic!("{other:?}"),
    }
}

fn request(fleet: &TestFleet, approvers: &[&str], timeout_ms: u64) -> u64 {
    seq(fleet.run(Command::RequestApproval(RequestApproval {
        agent: "deployer".to_owned(),
        action: "deploy to production".to_owned(),
        context: Json::from_value(&serde_json::json!({"version": "1.4.2"})),
        approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
        timeout_ms,
    })))
}

fn decide(agent: &str, approval: u64, approved: bool) -> Command {
    Command::Decide(DecideApproval {
        agent: agent.to_owned(),
        approval,
        approved,
        reason: "reviewed".to_owned(),
    })
}

#[test]
fn only_an_allowed_approver_decides_and_only_once() {
    let fleet = fleet(&["deployer", "lead", "intern"]);
    let approval = request(&fleet, &["lead"], 600_000);
    assert!(matches!(
        fleet.refused(decide("intern", approval, true)),
        CommandError::NotAnApprover { .. }
    ));
    fleet.run(decide("lead", approval, true));
    assert!(matches!(
        fleet.refused(decide("lead", approval, false)),
        CommandError::AlreadyDecided { .. }
    ));
    assert!(matches!(
        fleet.refused(decide("lead", 999_999, true)),
        CommandError::UnknownApproval { .. }
    ));
    let state = fleet.coordinator.state();
    let found = state.approvals.get(approval).expect("kept forever");
    assert_eq!(found.state, ApprovalState::Approved);
    assert_eq!(found.decided_by.as_deref(), Some("lead"));
}

#[test]
fn a_waiting_requester_is_woken_by_the_decision() {
    let fleet = fleet(&["deployer", "lead"]);
    let approval = request(&fleet, &[], 600_000);
    let waiting = fleet
        .coordinator
        .submit(Command::AwaitApproval(AwaitApproval {
            agent: "deployer".to_owned(),
            approval,
            wait_ms: 600_000,
        }))
        .expect("queued");
    fleet.coordinator.sync().expect("parked");
    fleet.run(decide("lead", approval, false));
    match waiting.wait().expect("woken") {
        Outcome::Approval { approval } => assert_eq!(approval.state, ApprovalState::Rejected),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_undecided_approval_expires_and_the_expiry_is_recorded() {
    let fleet = fleet(&["deployer", "lead"]);
    let approval = request(&fleet, &["lead"], 10_000);
    let waiting = fleet
        .coordinator
        .submit(Command::AwaitApproval(AwaitApproval {
            agent: "deployer".to_owned(),
            approval,
            wait_ms: 600_000,
        }))
        .expect("queued");
    fleet.advance_ms(10_000);
    assert_eq!(fleet.kinds().last(), Some(&"approval_expired"));
    match waiting.wait().expect("answered") {
        Outcome::Approval { approval } => assert_eq!(approval.state, ApprovalState::Expired),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fleet.refused(decide("lead", approval, true)),
        CommandError::ApprovalExpired { .. }
    ));
}

#[test]
fn board_threads_collect_replies_and_decisions_are_queryable() {
    let fleet = fleet(&["a", "b"]);
    let thread = seq(fleet.run(Command::Post(PostThread {
        agent: "a".to_owned(),
        title: "Schema change".to_owned(),
        message: "Renaming users.name".to_owned(),
        priority: 1,
    })));
    fleet.run(Command::Reply(ReplyToThread {
        agent: "b".to_owned(),
        thread,
        message: "Fine by me".to_owned(),
    }));
    assert!(matches!(
        fleet.refused(Command::Reply(ReplyToThread {
            agent: "b".into(),
            thread: thread + 100,
            message: "?".into()
        })),
        CommandError::UnknownThread { .. }
    ));
    for (agent, kind) in [
        ("a", "architecture"),
        ("b", "architecture"),
        ("a", "tooling"),
    ] {
        fleet.run(Command::LogDecision(LogDecision {
            agent: agent.to_owned(),
            decision_type: kind.to_owned(),
            context: "storage".to_owned(),
            reason: "embedded is simpler".to_owned(),
            alternatives: vec!["redis".to_owned()],
            metadata: Json::null(),
        }));
        fleet.advance_ms(1_000);
    }
    let state = fleet.coordinator.state();
    let posts = &state.board.threads[&thread].posts;
    assert_eq!(
        posts.iter().map(|p| p.author.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let by_a = state.decisions.query(&DecisionQuery {
        agent: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(by_a.len(), 2);
    let architecture = state.decisions.query(&DecisionQuery {
        decision_type: Some("architecture".into()),
        // Logged at +0 s, +1 s, +2 s; now is +3 s: from +0.5 s.
        from: Some(fleetlog_ledger::Timestamp(
            fleet.now().as_micros() - 2_500_000,
        )),
        ..Default::default()
    });
    assert_eq!(
        architecture
            .iter()
            .map(|d| d.agent.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
}

fn stage(agent: &str, name: &str, cost_usd: f64) -> StageReport {
    StageReport {
        stage: name.to_owned(),
        agent: agent.to_owned(),
        tier: "standard".to_owned(),
        outcome: Work::Success,
        duration_ms: 60_000,
        cost_usd,
        tokens: 1_000,
        description: "API development".to_owned(),
        tags: vec!["backend".to_owned()],
        quality: None,
    }
}

#[test]
fn a_workflow_runs_stages_keeps_its_latest_checkpoint_and_refuses_work_once_finished() {
    let fleet = fleet(&["orchestrator", "planner", "coder"]);
    let start = |id: &str| {
        Command::StartWorkflow(StartWorkflow {
            agent: "orchestrator".to_owned(),
            workflow_id: id.to_owned(),
            project: "shop".to_owned(),
            agent_plan: vec!["planner".to_owned(), "coder".to_owned()],
            estimated_duration_ms: Some(3_600_000),
        })
    };
    fleet.run(start("wf-1"));
    assert!(matches!(
        fleet.refused(start("wf-1")),
        CommandError::WorkflowExists { .. }
    ));
    fleet.run(Command::StartStage(StartStage {
        agent: "orchestrator".into(),
        workflow_id: "wf-1".into(),
        stage: "plan".into(),
        stage_agent: "planner".into(),
        tier: "premium".into(),
    }));
    fleet.run(Command::CompleteStage(CompleteStage {
        agent: "orchestrator".into(),
        workflow_id: "wf-1".into(),
        report: stage("planner", "plan", 0.5),
    }));
    for step in [1, 2] {
        fleet.run(Command::Checkpoint(Checkpoint {
            agent: "coder".into(),
            workflow_id: "wf-1".into(),
            stage: "code".into(),
            state: Json::from_value(&serde_json::json!({"step": step})),
        }));
    }
    fleet.run(Command::Handoff(RecordHandoff {
        agent: "orchestrator".into(),
        workflow_id: "wf-1".into(),
        from_agent: "planner".into(),
        to_agent: "coder".into(),
        artifacts: vec!["plan.md".into()],
    }));
    {
        let state = fleet.coordinator.state();
        let workflow = state.workflows.get("wf-1").expect("started");
        assert_eq!(workflow.progress(), Some(0.5));
        assert_eq!(
            workflow
                .latest_checkpoint
                .as_ref()
                .map(|c| c.state.to_value()),
            Some(serde_json::json!({"step": 2}))
        );
        assert_eq!(workflow.timeline.len(), 6);
    }
    fleet.run(Command::CompleteWorkflow(CompleteWorkflow {
        agent: "orchestrator".into(),
        workflow_id: "wf-1".into(),
        success: true,
        error: None,
        duration_ms: None,
        agents_executed: vec![],
    }));
    assert_eq!(
        fleet
            .coordinator
            .state()
            .workflows
            .get("wf-1")
            .map(|w| w.agents_executed.clone()),
        Some(vec!["planner".to_owned()]),
        "derived from the completed stages"
    );
    assert_eq!(
        fleet
            .coordinator
            .state()
            .workflows
            .get("wf-1")
            .map(|w| w.status),
        Some(WorkflowStatus::Completed)
    );
    assert!(matches!(
        fleet.refused(Command::Checkpoint(Checkpoint {
            agent: "coder".into(),
            workflow_id: "wf-1".into(),
            stage: "x".into(),
            state: Json::null()
        })),
        CommandError::WorkflowFinished { .. }
    ));
    assert!(matches!(
        fleet.refused(Command::CancelWorkflow(CancelWorkflow {
            agent: "orchestrator".into(),
            workflow_id: "nope".into(),
            reason: String::new()
        })),
        CommandError::UnknownWorkflow { .. }
    ));
}

#[test]
fn a_stage_past_the_budget_records_it_and_further_stages_wait_for_a_raise() {
    let fleet = fleet(&["orchestrator", "coder"]);
    fleet.run(Command::StartWorkflow(StartWorkflow {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        project: "shop".into(),
        agent_plan: vec![],
        estimated_duration_ms: None,
    }));
    let budget = |limit_usd: f64| {
        Command::SetBudget(SetBudget {
            agent: "orchestrator".into(),
            workflow_id: "wf".into(),
            limit_usd,
        })
    };
    let start_stage = || {
        Command::StartStage(StartStage {
            agent: "orchestrator".into(),
            workflow_id: "wf".into(),
            stage: "code".into(),
            stage_agent: "coder".into(),
            tier: "standard".into(),
        })
    };
    fleet.run(budget(1.0));
    fleet.run(Command::CompleteStage(CompleteStage {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        report: stage("coder", "code", 0.75),
    }));
    fleet.run(start_stage());
    fleet.run(Command::CompleteStage(CompleteStage {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        report: stage("coder", "code", 0.5),
    }));
    assert_eq!(fleet.kinds().last(), Some(&"budget_exceeded"));
    assert!(matches!(
        fleet.refused(start_stage()),
        CommandError::OverBudget { .. }
    ));
    fleet.run(budget(2.0));
    fleet.run(start_stage());
}

#[test]
fn every_path_that_adds_cost_passes_the_budget_breaker() {
    let fleet = fleet(&["orchestrator", "coder"]);
    fleet.run(Command::StartWorkflow(StartWorkflow {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        project: "p".into(),
        agent_plan: vec![],
        estimated_duration_ms: None,
    }));
    fleet.run(Command::SetBudget(SetBudget {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        limit_usd: 1.0,
    }));
    let complete = |cost: f64| {
        Command::CompleteStage(CompleteStage {
            agent: "orchestrator".into(),
            workflow_id: "wf".into(),
            report: stage("coder", "code", cost),
        })
    };
    // A completed stage that was never started trips the breaker like any other.
    fleet.run(complete(1.5));
    assert_eq!(fleet.kinds().last(), Some(&"budget_exceeded"));
    let spent = |fleet: &TestFleet| {
        fleet
            .coordinator
            .state()
            .workflows
            .get("wf")
            .expect("wf")
            .spent_usd
    };
    assert_eq!(spent(&fleet), 1.5);
    // Once over, no completion adds cost, started or not.
    assert!(matches!(
        fleet.refused(complete(0.25)),
        CommandError::OverBudget { .. }
    ));
    assert_eq!(spent(&fleet), 1.5, "nothing counted past the breaker");
}

#[test]
fn a_workflow_completed_with_its_measured_duration_keeps_it() {
    let fleet = fleet(&["orchestrator"]);
    fleet.run(Command::StartWorkflow(StartWorkflow {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        project: "p".into(),
        agent_plan: vec![],
        estimated_duration_ms: None,
    }));
    fleet.run(Command::CompleteWorkflow(CompleteWorkflow {
        agent: "orchestrator".into(),
        workflow_id: "wf".into(),
        success: true,
        error: None,
        agents_executed: vec![],
        duration_ms: Some(90_000),
    }));
    let state = fleet.coordinator.state();
    let workflow = state.workflows.get("wf").expect("wf");
    assert_eq!(workflow.duration_ms, Some(90_000));
}

fn workflow(fleet: &TestFleet, id: &str) {
    fleet.run(Command::StartWorkflow(StartWorkflow {
        agent: "orchestrator".into(),
        workflow_id: id.into(),
        project: "p".into(),
        agent_plan: vec![],
        estimated_duration_ms: None,
    }));
}

fn complete_in(id: &str, agent: &str, cost: f64) -> Command {
    Command::CompleteStage(CompleteStage {
        agent: "orchestrator".into(),
        workflow_id: id.into(),
        report: stage(agent, "code", cost),
    })
}

fn spend_limit(spender: Option<&str>, limit_usd: Option<f64>) -> Command {
    Command::SetSpendLimit(SetSpendLimit {
        agent: "orchestrator".into(),
        spender: spender.map(str::to_owned),
        limit_usd,
    })
}

#[test]
fn an_agents_daily_spend_limit_holds_across_workflows_and_resets_the_next_day() {
    let fleet = fleet(&["orchestrator", "coder", "tester"]);
    workflow(&fleet, "wf-1");
    workflow(&fleet, "wf-2");
    fleet.run(spend_limit(Some("coder"), Some(1.0)));
    fleet.run(complete_in("wf-1", "coder", 0.75));
    // The same agent in another workflow: the day's spend crosses its limit, recorded.
    fleet.run(complete_in("wf-2", "coder", 0.5));
    assert_eq!(fleet.kinds().last(), Some(&"spend_limit_exceeded"));
    match fleet.refused(complete_in("wf-1", "coder", 0.1)) {
        CommandError::OverSpendLimit {
            spender,
            limit_usd,
            spent_usd,
            ..
        } => {
            assert_eq!(spender.as_deref(), Some("coder"));
            assert_eq!((limit_usd, spent_usd), (1.0, 1.25));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fleet.refused(Command::StartStage(StartStage {
            agent: "orchestrator".into(),
            workflow_id: "wf-2".into(),
            stage: "more".into(),
            stage_agent: "coder".into(),
            tier: "standard".into(),
        })),
        CommandError::OverSpendLimit { .. }
    ));
    // Another agent is not held back by coder's limit.
    fleet.run(complete_in("wf-1", "tester", 5.0));
    // A new UTC day starts from zero.
    fleet.advance_ms(24 * 3_600_000);
    fleet.run(Command::Heartbeat(Heartbeat {
        agent: "orchestrator".into(),
        status: None,
        progress: None,
        current_task: None,
        metadata: None,
        ttl_ms: 30_000,
    }));
    fleet.run(complete_in("wf-1", "coder", 0.5));
}

#[test]
fn a_fleet_daily_limit_counts_every_agent_and_can_be_removed() {
    let fleet = fleet(&["orchestrator", "coder", "tester"]);
    workflow(&fleet, "wf");
    fleet.run(spend_limit(None, Some(1.0)));
    fleet.run(complete_in("wf", "coder", 0.6));
    fleet.run(complete_in("wf", "tester", 0.6));
    assert!(matches!(
        fleet.refused(complete_in("wf", "coder", 0.1)),
        CommandError::OverSpendLimit { spender: None, .. }
    ));
    let costs = fleetlog_projections::analytics::costs(
        &fleet.coordinator.state(),
        &fleetlog_projections::analytics::Window::default(),
        fleet.now(),
    );
    assert_eq!(costs.spend_limits.len(), 1);
    assert!(costs.spend_limits[0].exceeded);
    assert!((costs.spend_limits[0].spent_usd - 1.2).abs() < 1e-12);
    fleet.run(spend_limit(None, None));
    fleet.run(complete_in("wf", "coder", 0.1));
    assert!(matches!(
        fleet.refused(spend_limit(None, Some(-1.0))),
        CommandError::Invalid {
            field: "limit_usd",
            ..
        }
    ));
    assert!(matches!(
        fleet.refused(spend_limit(Some("ghost"), Some(1.0))),
        CommandError::UnknownAgent { .. }
    ));
}
