//! `fleetlog demo`: a real fleet against a real daemon, using the client API agents use. Runs
//! the coordination patterns fleets rely on, checks each one, shows live progress, then prints
//! the analytics, the chain's verification and how to inspect what happened.

use fleetlog_projections::commands::{
    AcquireLock, AwaitApproval, Checkpoint, Claim, CompleteStage, CompleteTask, CompleteWorkflow,
    DecideApproval, Enqueue, Heartbeat, ReceiveSignal, RecordHandoff, Register, ReleaseLock,
    RequestApproval, SendSignal, SetBudget, StartWorkflow,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetlog_ledger::{Json, Outcome as Work, SignalTarget};
use fleetlog_projections::signals::SignalFilter;
use fleetlog_projections::{Command, Outcome, StageReport, TaskSpec};
use serde_json::{Value, json};

use crate::client::{BlockingClient, Endpoint};
use crate::daemon::BackgroundDaemon;
use crate::error::Error;
use crate::wire::Query;

/// How big a demo to run.
#[derive(Clone, Copy, Debug)]
pub struct DemoSize {
    pub tasks: u64,
    pub workers: u64,
    /// How long a killed worker's lease lasts before its task is recovered.
    pub lease_ms: u64,
}

impl DemoSize {
    pub const FULL: DemoSize = DemoSize {
        tasks: 50,
        workers: 8,
        lease_ms: 2_000,
    };
    pub const QUICK: DemoSize = DemoSize {
        tasks: 20,
        workers: 4,
        lease_ms: 600,
    };
}

/// One pattern's result.
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The demo's daemon, and clients of it.
struct Daemon {
    inner: BackgroundDaemon,
    socket: PathBuf,
    /// Clients keep the credentials agents are issued beside it, so any thread can act as any
    /// agent registered before it.
    db: PathBuf,
}

impl Daemon {
    fn start(db: &Path) -> Result<Daemon, Error> {
        let inner = BackgroundDaemon::start(db)?;
        let socket = inner.socket().to_owned();
        Ok(Daemon {
            inner,
            socket,
            db: db.to_owned(),
        })
    }

    fn client(&self) -> Result<BlockingClient, Error> {
        Ok(BlockingClient::new(Endpoint::Unix(self.socket.clone()))?.with_db(&self.db))
    }
}

fn register(client: &BlockingClient, agent: &str, role: &str) -> Result<(), Error> {
    client.execute(&Command::Register(Register {
        agent: agent.into(),
        role: role.into(),
        name: agent.into(),
        working_on: String::new(),
        capabilities: vec![],
        metadata: Json::null(),
    }))?;
    client.execute(&Command::Heartbeat(Heartbeat {
        agent: agent.into(),
        status: Some("ready".into()),
        progress: None,
        current_task: None,
        metadata: None,
        ttl_ms: 60_000,
    }))?;
    Ok(())
}

fn send(
    client: &BlockingClient,
    from: &str,
    to: Option<&str>,
    kind: &str,
    payload: Value,
) -> Result<u64, Error> {
    match client.execute(&Command::SendSignal(SendSignal {
        agent: from.into(),
        kind: kind.into(),
        target: to.map_or(SignalTarget::Broadcast, |to| SignalTarget::Agent(to.into())),
        payload: Json::from_value(&payload),
        ttl_ms: 60_000,
        correlation_id: None,
    }))? {
        Outcome::Appended { seq } => Ok(seq),
        other => Err(Error::Config(format!("unexpected answer {other:?}"))),
    }
}

fn wait_for(
    client: &BlockingClient,
    agent: &str,
    kind: &str,
    wait_ms: u64,
) -> Result<Option<Value>, Error> {
    match client.execute(&Command::ReceiveSignal(ReceiveSignal {
        ack_ms: None,
        agent: agent.into(),
        filter: SignalFilter {
            kind: kind.into(),
            ..Default::default()
        },
        consume: true,
        wait_ms: Some(wait_ms),
    })) {
        Ok(Outcome::Signal { signal }) => Ok(signal.map(|s| s.payload.to_value())),
        Err(error) if error.code() == Some("timed_out") => Ok(None),
        Err(error) => Err(error),
        Ok(other) => Err(Error::Config(format!("unexpected answer {other:?}"))),
    }
}

/// Runs `work` on a thread with its own client connection.
fn agent_thread<T: Send + 'static>(
    daemon: &Daemon,
    work: impl FnOnce(BlockingClient) -> Result<T, Error> + Send + 'static,
) -> JoinHandle<Result<T, Error>> {
    let client = daemon.client();
    std::thread::spawn(move || work(client?))
}

fn joined<T>(handle: JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Config("an agent thread panicked".to_owned())))
}

fn producer_consumer(daemon: &Daemon) -> Result<Check, Error> {
    let client = daemon.client()?;
    register(&client, "producer", "producer")?;
    register(&client, "consumer", "consumer")?;
    let consumer = agent_thread(daemon, |client| {
        wait_for(&client, "consumer", "task_complete", 30_000)
    });
    send(
        &client,
        "producer",
        Some("consumer"),
        "task_complete",
        json!({"task": "build-api", "ok": true}),
    )?;
    let got = joined(consumer)?;
    Ok(Check {
        name: "producer → consumer handoff (targeted signal, blocking wait)",
        passed: got == Some(json!({"task": "build-api", "ok": true})),
        detail: format!(
            "consumer received {}",
            got.map_or("nothing".to_owned(), |v| v.to_string())
        ),
    })
}

fn barrier(daemon: &Daemon) -> Result<Check, Error> {
    let client = daemon.client()?;
    register(&client, "orchestrator", "orchestrator")?;
    let workers: Vec<String> = (1..=3).map(|n| format!("barrier-worker-{n}")).collect();
    for worker in &workers {
        register(&client, worker, "worker")?;
    }
    let handles: Vec<_> = workers
        .iter()
        .map(|worker| {
            let worker = worker.clone();
            agent_thread(daemon, move |client| {
                send(
                    &client,
                    &worker,
                    Some("orchestrator"),
                    "checkpoint",
                    json!({"from": worker}),
                )?;
                wait_for(&client, &worker, "proceed", 30_000)
            })
        })
        .collect();
    let mut arrived = 0;
    while arrived < workers.len()
        && wait_for(&client, "orchestrator", "checkpoint", 30_000)?.is_some()
    {
        arrived += 1;
    }
    send(
        &client,
        "orchestrator",
        None,
        "proceed",
        json!({"phase": 2}),
    )?;
    let released = handles
        .into_iter()
        .map(joined)
        .collect::<Result<Vec<_>, _>>()?;
    let all = released.iter().all(|got| got.is_some());
    Ok(Check {
        name: "checkpoint barrier (3 workers signal, orchestrator broadcasts proceed)",
        passed: arrived == workers.len() && all,
        detail: format!(
            "{arrived} arrived, {} released",
            released.iter().filter(|got| got.is_some()).count()
        ),
    })
}

fn abort(daemon: &Daemon) -> Result<Check, Error> {
    let client = daemon.client()?;
    let workers: Vec<String> = (1..=4).map(|n| format!("abort-worker-{n}")).collect();
    for worker in &workers {
        register(&client, worker, "worker")?;
    }
    let listeners: Vec<_> = workers[1..]
        .iter()
        .map(|worker| {
            let worker = worker.clone();
            agent_thread(daemon, move |client| {
                wait_for(&client, &worker, "abort", 30_000)
            })
        })
        .collect();
    send(
        &client,
        &workers[0],
        None,
        "abort",
        json!({"reason": "schema migration failed"}),
    )?;
    let seen = listeners
        .into_iter()
        .map(joined)
        .collect::<Result<Vec<_>, _>>()?;
    let count = seen.iter().filter(|got| got.is_some()).count();
    Ok(Check {
        name: "abort broadcast (one worker fails, every other worker sees it)",
        passed: count == workers.len() - 1,
        detail: format!("{count} of {} workers saw the abort", workers.len() - 1),
    })
}

/// Workflows of plan → code → review stages over a dependency graph of tasks; workers hold
/// locks on shared files while they write; one worker is killed mid-task.
fn task_graph(daemon: &Daemon, size: DemoSize) -> Result<Check, Error> {
    let client = daemon.client()?;
    register(&client, "lead", "orchestrator")?;
    let features = (size.tasks / 10).max(1);
    let mut task_ids = Vec::new();
    for feature in 0..features {
        let workflow = format!("feature-{feature}");
        client.execute(&Command::StartWorkflow(StartWorkflow {
            agent: "lead".into(),
            workflow_id: workflow.clone(),
            project: "shop".into(),
            agent_plan: vec!["planner".into(), "coder".into(), "reviewer".into()],
            estimated_duration_ms: Some(2_000),
        }))?;
        client.execute(&Command::SetBudget(SetBudget {
            agent: "lead".into(),
            workflow_id: workflow.clone(),
            limit_usd: 5.0,
        }))?;
        // Ten tasks per feature: a plan, then code tasks that need it, then a review of them.
        let plan = enqueue(&client, &workflow, "plan", "Plan the API", vec![])?;
        let code: Vec<u64> = (0..8)
            .map(|n| {
                enqueue(
                    &client,
                    &workflow,
                    "code",
                    &format!("API development: endpoint {n}"),
                    vec![plan],
                )
            })
            .collect::<Result<_, _>>()?;
        let review = enqueue(
            &client,
            &workflow,
            "review",
            "Review the backend",
            code.clone(),
        )?;
        task_ids.push(plan);
        task_ids.extend(code);
        task_ids.push(review);
    }
    // The victim claims one task and dies holding it: no completion, no heartbeat.
    register(&client, "victim", "worker")?;
    let victim_task = match client.execute(&Command::Claim(Claim {
        agent: "victim".into(),
        tags: vec![],
        tag_match: Default::default(),
        task: None,
        lease_ttl_ms: size.lease_ms,
        wait_ms: None,
    }))? {
        Outcome::Task { task: Some(task) } => task.id,
        other => {
            return Err(Error::Config(format!(
                "the victim could not claim: {other:?}"
            )));
        }
    };
    let workers: Vec<_> = (0..size.workers)
        .map(|n| {
            let agent = format!("worker-{n}");
            let lease_ms = size.lease_ms * 5;
            agent_thread(daemon, move |client| work(&client, &agent, lease_ms))
        })
        .collect();
    let done: u64 = workers
        .into_iter()
        .map(joined)
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    for feature in 0..features {
        let workflow = format!("feature-{feature}");
        client.execute(&Command::Handoff(RecordHandoff {
            agent: "lead".into(),
            workflow_id: workflow.clone(),
            from_agent: "coder".into(),
            to_agent: "reviewer".into(),
            artifacts: vec![format!("{workflow}.diff")],
        }))?;
        client.execute(&Command::CompleteWorkflow(CompleteWorkflow {
            agent: "lead".into(),
            workflow_id: workflow,
            success: true,
            error: None,
            duration_ms: None,
            agents_executed: vec![],
        }))?;
    }
    let stats = client.query(&Query::QueueStats)?;
    let completed = stats["by_state"]["completed"].as_u64().unwrap_or(0);
    let task = client.query(&Query::Task { id: victim_task })?;
    let recovered = task["state"] == "completed" && task["attempts"].as_u64().unwrap_or(0) >= 2;
    Ok(Check {
        name: "task graph (dependencies, locks on shared files, a killed worker's task recovered)",
        passed: completed == task_ids.len() as u64 && done == completed && recovered,
        detail: format!(
            "{completed}/{} tasks completed by {} workers; the killed worker's task {victim_task} was {}",
            task_ids.len(),
            size.workers,
            if recovered {
                "recovered through its lease"
            } else {
                "NOT recovered"
            }
        ),
    })
}

fn enqueue(
    client: &BlockingClient,
    workflow: &str,
    stage: &str,
    title: &str,
    depends_on: Vec<u64>,
) -> Result<u64, Error> {
    match client.execute(&Command::Enqueue(Enqueue {
        agent: "lead".into(),
        spec: TaskSpec {
            tags: vec![stage.into()],
            payload: Json::from_value(&json!({"workflow": workflow, "stage": stage})),
            depends_on,
            workflow_id: Some(workflow.into()),
            ..TaskSpec::new(title)
        },
    }))? {
        Outcome::Appended { seq } => Ok(seq),
        other => Err(Error::Config(format!("unexpected answer {other:?}"))),
    }
}

/// A worker: claims tasks until none come, writes a shared file under its lock, records the
/// stage with its figures, and completes the task. Returns how many it completed.
fn work(client: &BlockingClient, agent: &str, lease_ms: u64) -> Result<u64, Error> {
    register(client, agent, "worker")?;
    let mut completed = 0;
    loop {
        let task = match client.execute(&Command::Claim(Claim {
            agent: agent.into(),
            tags: vec![],
            tag_match: Default::default(),
            task: None,
            lease_ttl_ms: lease_ms,
            wait_ms: Some(lease_ms),
        })) {
            Ok(Outcome::Task { task: Some(task) }) => task,
            Ok(_) => return Ok(completed),
            Err(error) if error.code() == Some("timed_out") => return Ok(completed),
            Err(error) => return Err(error),
        };
        let payload = task.payload.to_value();
        let workflow = payload["workflow"].as_str().unwrap_or_default().to_owned();
        let stage = payload["stage"].as_str().unwrap_or("code").to_owned();
        let started = Instant::now();
        let file = format!("src/{}.rs", task.id % 5);
        let lock = match client.execute(&Command::AcquireLock(AcquireLock {
            slots: None,
            agent: agent.into(),
            resource: file.clone(),
            ttl_ms: 10_000,
            intent: task.title.clone(),
            wait_ms: Some(10_000),
        }))? {
            Outcome::Lock { lock } => lock,
            other => return Err(Error::Config(format!("unexpected answer {other:?}"))),
        };
        client.execute(&Command::Checkpoint(Checkpoint {
            agent: agent.into(),
            workflow_id: workflow.clone(),
            stage: stage.clone(),
            state: Json::from_value(&json!({"task": task.id, "file": file})),
        }))?;
        std::thread::sleep(Duration::from_millis(5 + task.id % 7));
        client.execute(&Command::ReleaseLock(ReleaseLock {
            agent: agent.into(),
            resource: file,
            token: lock.token,
        }))?;
        let report = StageReport {
            stage: stage.clone(),
            agent: agent.into(),
            tier: if stage == "plan" {
                "premium".into()
            } else {
                "standard".into()
            },
            outcome: Work::Success,
            duration_ms: started.elapsed().as_millis() as u64,
            cost_usd: if stage == "plan" { 0.05 } else { 0.01 },
            tokens: 500 + task.id % 100,
            description: task.title.clone(),
            tags: vec![stage.clone(), "backend".into()],
            quality: None,
        };
        client.execute(&Command::CompleteStage(CompleteStage {
            agent: agent.into(),
            workflow_id: workflow,
            report,
        }))?;
        client.execute(&Command::Complete(CompleteTask {
            agent: agent.into(),
            task: task.id,
            result: Json::null(),
        }))?;
        completed += 1;
    }
}

fn approval_gate(daemon: &Daemon) -> Result<Check, Error> {
    let client = daemon.client()?;
    register(&client, "deployer", "deployer")?;
    register(&client, "reviewer", "reviewer")?;
    let reviewer = agent_thread(daemon, |client| {
        let request = wait_for(&client, "reviewer", "review_requested", 30_000)?;
        let approval = request.and_then(|r| r["approval"].as_u64()).unwrap_or(0);
        client.execute(&Command::Decide(DecideApproval {
            agent: "reviewer".into(),
            approval,
            approved: true,
            reason: "tests green, diff reviewed".into(),
        }))?;
        Ok(approval)
    });
    let approval = match client.execute(&Command::RequestApproval(RequestApproval {
        agent: "deployer".into(),
        action: "deploy shop to production".into(),
        context: Json::from_value(&json!({"version": "1.4.2"})),
        approvers: vec!["reviewer".into()],
        timeout_ms: 30_000,
    }))? {
        Outcome::Appended { seq } => seq,
        other => return Err(Error::Config(format!("unexpected answer {other:?}"))),
    };
    send(
        &client,
        "deployer",
        Some("reviewer"),
        "review_requested",
        json!({"approval": approval}),
    )?;
    let decided = client.execute(&Command::AwaitApproval(AwaitApproval {
        agent: "deployer".into(),
        approval,
        wait_ms: 30_000,
    }))?;
    joined(reviewer)?;
    let state = match decided {
        Outcome::Approval { approval } => format!("{:?}", approval.state).to_lowercase(),
        other => format!("{other:?}"),
    };
    Ok(Check {
        name: "approval gate (deployer waits, reviewer decides)",
        passed: state == "approved",
        detail: format!("approval {approval} was {state}"),
    })
}

/// Everything the demo produced, for printing.
pub struct Report {
    pub db: PathBuf,
    pub checks: Vec<Check>,
    pub elapsed: Duration,
}

/// Runs the demo on `db` (created if missing). `on_status` is called with a one-line summary
/// of the fleet every half second while the patterns run.
pub fn run(
    db: &Path,
    size: DemoSize,
    on_status: impl Fn(&str) + Send + 'static,
) -> Result<Report, Error> {
    let started = Instant::now();
    let daemon = Daemon::start(db)?;
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (running, socket) = (Arc::clone(&running), daemon.socket.clone());
        std::thread::spawn(move || {
            let Ok(client) = BlockingClient::new(Endpoint::Unix(socket)) else {
                return;
            };
            while running.load(Ordering::Relaxed) {
                if let Ok(status) = client.query(&Query::Status) {
                    on_status(&format!(
                        "{} agents alive · queue {} · {} locks held · seq {}",
                        status["agents_active"],
                        status["queue"]["by_state"],
                        status["locks"].as_array().map_or(0, Vec::len),
                        status["seq"]
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let patterns: [&dyn Fn() -> Result<Check, Error>; 5] = [
        &|| producer_consumer(&daemon),
        &|| barrier(&daemon),
        &|| abort(&daemon),
        &|| task_graph(&daemon, size),
        &|| approval_gate(&daemon),
    ];
    let checks: Result<Vec<Check>, Error> = patterns.iter().map(|pattern| pattern()).collect();
    running.store(false, Ordering::Relaxed);
    let _ = watcher.join();
    let checks = checks?;
    drop(daemon.inner);
    Ok(Report {
        db: db.to_owned(),
        checks,
        elapsed: started.elapsed(),
    })
}
