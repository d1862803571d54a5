//! Helpers shared by the integration tests (`tests/suite`) and the benchmarks (`benches/`):
//! temporary ledgers and realistic events. Nothing here is part of fleetlog's API.

use std::path::{Path, PathBuf};

use fleetlog_ledger::{Event, Json, Ledger, Outcome, SignalTarget, Timestamp};
use fleetlog_projections::commands::{Heartbeat, Register};

/// A ledger in its own temporary directory, removed on drop.
pub struct TempLedger {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempLedger {
    /// A fresh directory with no ledger in it yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("the temp directory is writable");
        let path = dir.path().join("fleet.redb");
        TempLedger { dir, path }
    }

    pub fn create(&self) -> Ledger {
        Ledger::create(&self.path).expect("a new ledger in a fresh directory")
    }

    pub fn open(&self) -> Ledger {
        Ledger::open(&self.path).expect("the ledger opens")
    }

    pub fn sibling(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempLedger {
    fn default() -> Self {
        Self::new()
    }
}

/// A user event carrying `payload` as JSON.
pub fn custom(kind: &str, payload: serde_json::Value) -> Event {
    Event::Custom {
        kind: kind.to_owned(),
        payload: Json::from_value(&payload),
    }
}

/// The `n`th append of writer thread `thread` of process `pid` in the crash tests: its
/// idempotency key, actor and event, the same every time so a retry after the crash can be
/// compared.
pub fn crash_probe(pid: u32, thread: usize, n: u64) -> (String, String, Event) {
    (
        format!("probe-{pid}-{thread}-{n}"),
        format!("writer-{thread}"),
        custom("crash-probe", serde_json::json!({"thread": thread, "n": n})),
    )
}

/// The `n`th event of a realistic fleet mix: heartbeats dominate, then signals, locks, tasks and
/// workflow telemetry. Deterministic in `n`.
pub fn fleet_event(n: u64) -> (String, Event) {
    let agent = format!("agent-{}", n % 16);
    let event = match n % 10 {
        0..=3 => Event::AgentHeartbeat {
            status: "working".to_owned(),
            progress: Some((n % 100) as f64 / 100.0),
            current_task: Some(format!("task-{}", n / 10)),
            metadata: Json::null(),
            ttl_ms: 30_000,
        },
        4 => Event::SignalSent {
            kind: "task_complete".to_owned(),
            target: SignalTarget::Agent(format!("agent-{}", (n + 1) % 16)),
            payload: Json::from_value(&serde_json::json!({"task": n, "ok": true})),
            ttl_ms: 60_000,
            correlation_id: None,
        },
        5 => Event::LockAcquired {
            resource: format!("src/module_{}.rs", n % 32),
            intent: "edit".to_owned(),
            ttl_ms: 10_000,
            requested_at: Timestamp(1_763_900_000_000_000 + n as i64),
            takeover_of: None,
        },
        6 => Event::LockReleased {
            resource: format!("src/module_{}.rs", n % 32),
            token: n.saturating_sub(1),
        },
        7 => Event::TaskEnqueued {
            title: format!("Implement endpoint {n}"),
            description: "Add the handler, validation and tests".to_owned(),
            priority: (n % 5) as i32,
            tags: vec!["backend".to_owned(), "api".to_owned()],
            payload: Json::from_value(&serde_json::json!({"ticket": n})),
            max_attempts: 3,
            depends_on: vec![],
            not_before: None,
            workflow_id: Some(format!("wf-{}", n / 100)),
        },
        8 => Event::TaskClaimed {
            task: n.saturating_sub(1),
            lease_ttl_ms: 60_000,
            attempt: 1,
        },
        _ => Event::StageCompleted {
            workflow_id: format!("wf-{}", n / 100),
            stage: "implement".to_owned(),
            agent: agent.clone(),
            tier: "standard".to_owned(),
            outcome: Outcome::Success,
            duration_ms: 1_000 + n % 5_000,
            cost_usd: 0.0125,
            tokens: 4_000,
            description: "API development".to_owned(),
            tags: vec!["backend".to_owned()],
            quality: None,
            occurred_at: None,
        },
    };
    (agent, event)
}

/// One event of every variant in the vocabulary, in variant order, with every optional field
/// set: the golden ledger is made of these, so any change to the encoding of any variant shows.
/// The variants added after the v1 golden ledger was written (appended at the enum's end).
pub fn variants_added_after_v1() -> Vec<(String, Event)> {
    let at = Timestamp(1_763_900_000_123_456);
    vec![
        (
            "w1".to_owned(),
            Event::SignalDelivered {
                signal: 5,
                ack_ms: 30_000,
            },
        ),
        ("w1".to_owned(), Event::SignalAcked { signal: 5 }),
        (
            "fleetlog".to_owned(),
            Event::SignalAckExpired {
                signal: 5,
                agent: "w1".to_owned(),
                deadline: at,
            },
        ),
        (
            "boss".to_owned(),
            Event::TaskOptions {
                task: 11,
                key: Some("JIRA-7".to_owned()),
                capabilities: vec!["rust".to_owned()],
                escalate_when_exhausted: true,
            },
        ),
        (
            "w1".to_owned(),
            Event::TaskProgressed {
                task: 11,
                progress: Some(0.25),
                status: "compiling".to_owned(),
            },
        ),
        (
            "w1".to_owned(),
            Event::TaskReleased {
                task: 11,
                reason: "shutting down".to_owned(),
            },
        ),
        (
            "w1".to_owned(),
            Event::TaskEscalated {
                task: 11,
                reason: "needs a human".to_owned(),
            },
        ),
        (
            "boss".to_owned(),
            Event::SpendLimitSet {
                spender: Some("w1".to_owned()),
                limit_usd: Some(25.0),
            },
        ),
        (
            "fleetlog".to_owned(),
            Event::SpendLimitExceeded {
                spender: None,
                day: "2025-11-23".to_owned(),
                limit_usd: 100.0,
                spent_usd: 100.5,
            },
        ),
    ]
}

pub fn every_variant() -> Vec<(String, Event)> {
    let json = |value: serde_json::Value| Json::from_value(&value);
    let at = Timestamp(1_763_900_000_123_456);
    let s = |text: &str| text.to_owned();
    let events = vec![
        Event::AgentRegistered {
            role: s("coder"),
            name: s("Ada"),
            working_on: s("api"),
            capabilities: vec![s("rust"), s("sql")],
            metadata: json(serde_json::json!({"model": "m1"})),
        },
        Event::AgentHeartbeat {
            status: s("working"),
            progress: Some(0.25),
            current_task: Some(s("t-1")),
            metadata: json(serde_json::json!({})),
            ttl_ms: 30_000,
        },
        Event::AgentDeregistered { reason: s("done") },
        Event::AgentExpired {
            agent: s("agent-2"),
            last_seen: at,
            deadline: Timestamp(at.0 + 30_000_000),
        },
        Event::SignalSent {
            kind: s("task_complete"),
            target: SignalTarget::Agent(s("agent-2")),
            payload: json(serde_json::json!({"ok": true, "n": 1.5})),
            ttl_ms: 60_000,
            correlation_id: Some(5),
        },
        Event::SignalSent {
            kind: s("abort"),
            target: SignalTarget::Broadcast,
            payload: Json::null(),
            ttl_ms: 1,
            correlation_id: None,
        },
        Event::SignalConsumed { signal: 5 },
        Event::SignalExpired {
            signal: 6,
            deadline: at,
        },
        Event::LockAcquired {
            resource: s("src/lib.rs"),
            intent: s("edit"),
            ttl_ms: 10_000,
            requested_at: at,
            takeover_of: Some(3),
        },
        Event::LockRenewed {
            resource: s("src/lib.rs"),
            token: 9,
            ttl_ms: 10_000,
        },
        Event::LockReleased {
            resource: s("src/lib.rs"),
            token: 9,
        },
        Event::LockExpired {
            resource: s("src/main.rs"),
            token: 4,
            holder: s("agent-3"),
            deadline: at,
        },
        Event::TaskEnqueued {
            title: s("Build API"),
            description: s("CRUD endpoints"),
            priority: -2,
            tags: vec![s("backend")],
            payload: json(serde_json::json!([1, 2, 3])),
            max_attempts: 3,
            depends_on: vec![1, 2],
            not_before: Some(at),
            workflow_id: Some(s("wf-1")),
        },
        Event::TaskClaimed {
            task: 13,
            lease_ttl_ms: 60_000,
            attempt: 1,
        },
        Event::TaskLeaseRenewed {
            task: 13,
            lease_ttl_ms: 60_000,
        },
        Event::TaskLeaseExpired {
            task: 13,
            agent: s("agent-1"),
            attempt: 1,
            deadline: at,
        },
        Event::TaskCompleted {
            task: 13,
            result: json(serde_json::json!({"files": 4})),
        },
        Event::TaskFailed {
            task: 13,
            error: s("tests failed"),
            retryable: true,
            retry_at: Some(at),
        },
        Event::TaskDeadLettered {
            task: 13,
            reason: s("3 attempts failed"),
        },
        Event::TaskCancelled {
            task: 14,
            reason: s("obsolete"),
        },
        Event::TaskSkipped {
            task: 15,
            blocked_by: 13,
        },
        Event::ApprovalRequested {
            action: s("deploy"),
            context: json(serde_json::json!({"env": "prod"})),
            approvers: vec![s("lead")],
            timeout_ms: 600_000,
        },
        Event::ApprovalDecided {
            approval: 22,
            approved: true,
            reason: s("looks good"),
        },
        Event::ApprovalExpired {
            approval: 22,
            deadline: at,
        },
        Event::ThreadPosted {
            title: s("Schema change"),
            message: s("Renaming a column"),
            priority: 1,
        },
        Event::ThreadReplied {
            thread: 25,
            message: s("Fine by me"),
        },
        Event::DecisionLogged {
            decision_type: s("architecture"),
            context: s("storage"),
            reason: s("embedded"),
            alternatives: vec![s("redis"), s("postgres")],
            metadata: json(serde_json::json!({"confidence": 0.8})),
        },
        Event::WorkflowStarted {
            workflow_id: s("wf-1"),
            project: s("shop"),
            agent_plan: vec![s("planner"), s("coder")],
            estimated_duration_ms: Some(3_600_000),
            session_id: Some(s("sess-1")),
            occurred_at: Some(at),
        },
        Event::StageStarted {
            workflow_id: s("wf-1"),
            stage: s("plan"),
            agent: s("planner"),
            tier: s("premium"),
            occurred_at: None,
        },
        Event::StageCompleted {
            workflow_id: s("wf-1"),
            stage: s("plan"),
            agent: s("planner"),
            tier: s("premium"),
            outcome: Outcome::Partial,
            duration_ms: 120_000,
            cost_usd: 0.42,
            tokens: 12_345,
            description: s("API development plan"),
            tags: vec![s("backend")],
            quality: Some(4.5),
            occurred_at: Some(at),
        },
        Event::Handoff {
            workflow_id: s("wf-1"),
            from_agent: s("planner"),
            to_agent: s("coder"),
            artifacts: vec![s("plan.md")],
            occurred_at: None,
        },
        Event::Checkpoint {
            workflow_id: s("wf-1"),
            stage: s("code"),
            state: json(serde_json::json!({"done": ["a"]})),
        },
        Event::WorkflowCompleted {
            workflow_id: s("wf-1"),
            success: false,
            error: Some(s("timeout")),
            agents_executed: vec![s("planner")],
            duration_ms: Some(4_000_000),
            occurred_at: Some(at),
        },
        Event::WorkflowCancelled {
            workflow_id: s("wf-2"),
            reason: s("superseded"),
        },
        Event::BudgetSet {
            workflow_id: s("wf-1"),
            limit_usd: 5.0,
        },
        Event::BudgetExceeded {
            workflow_id: s("wf-1"),
            limit_usd: 5.0,
            spent_usd: 5.25,
        },
        Event::Custom {
            kind: s("note"),
            payload: json(serde_json::json!({"text": "héllo \"quoted\"\n"})),
        },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(n, event)| (format!("agent-{}", n % 3), event))
        .collect()
}

/// Appends one `custom("n", n)` event per number as `actor`; returns their receipts.
pub fn append_numbered(
    ledger: &Ledger,
    actor: &str,
    numbers: std::ops::Range<u64>,
) -> Vec<fleetlog_ledger::Receipt> {
    numbers
        .map(|n| {
            ledger
                .append(actor, &custom("n", serde_json::json!(n)))
                .expect("append")
        })
        .collect()
}

/// `register` for a worker named after its id.
pub fn register(agent: &str) -> fleetlog_projections::Command {
    fleetlog_projections::Command::Register(Register {
        agent: agent.to_owned(),
        role: "worker".to_owned(),
        name: agent.to_owned(),
        working_on: String::new(),
        capabilities: Vec::new(),
        metadata: Json::null(),
    })
}

/// A heartbeat with status "ok" and the given TTL.
pub fn heartbeat(agent: &str, ttl_ms: u64) -> fleetlog_projections::Command {
    fleetlog_projections::Command::Heartbeat(Heartbeat {
        agent: agent.to_owned(),
        status: Some("ok".into()),
        progress: None,
        current_task: None,
        metadata: None,
        ttl_ms,
    })
}

/// A coordinator on a temporary ledger with a manual clock: time passes only when a test says.
pub struct TestFleet {
    pub temp: TempLedger,
    pub clock: fleetlog_ledger::ManualClock,
    pub coordinator: fleetlog_projections::Coordinator,
}

/// 2026-11-23T00:00:00Z, where test clocks start.
pub const TEST_EPOCH: Timestamp = Timestamp(1_795_392_000_000_000);

impl TestFleet {
    pub fn new() -> Self {
        Self::with_snapshots(0)
    }

    /// With a snapshot every `every` events (0: none).
    pub fn with_snapshots(every: u64) -> Self {
        let temp = TempLedger::new();
        let clock = fleetlog_ledger::ManualClock::starting_at(TEST_EPOCH);
        let coordinator = Self::open_at(&temp, &clock, every);
        TestFleet {
            temp,
            clock,
            coordinator,
        }
    }

    /// Opens the coordinator on `temp` with `clock`.
    pub fn open_at(
        temp: &TempLedger,
        clock: &fleetlog_ledger::ManualClock,
        every: u64,
    ) -> fleetlog_projections::Coordinator {
        fleetlog_projections::Coordinator::open(
            temp.path(),
            fleetlog_projections::CoordinatorOptions {
                snapshot_every_events: every,
                clock: std::sync::Arc::new(clock.clone()),
                skip_verify: false,
                exclusive: false,
            },
        )
        .expect("the test coordinator opens")
    }

    /// Runs `command`, which must succeed.
    pub fn run(&self, command: fleetlog_projections::Command) -> fleetlog_projections::Outcome {
        let described = format!("{command:?}");
        self.coordinator
            .execute(command)
            .unwrap_or_else(|error| panic!("{described} failed: {error}"))
    }

    /// Runs `command`, which must be refused.
    pub fn refused(
        &self,
        command: fleetlog_projections::Command,
    ) -> fleetlog_projections::CommandError {
        let head = self.coordinator.ledger().head().expect("head").seq;
        let described = format!("{command:?}");
        let error = self
            .coordinator
            .execute(command)
            .expect_err(&format!("{described} should be refused"));
        assert_eq!(
            self.coordinator.ledger().head().expect("head").seq,
            head,
            "a refused command appended events"
        );
        error
    }

    pub fn register(&self, agent: &str) {
        self.run(register(agent));
    }

    /// Registers `agent` with a heartbeat TTL of a day, for tests not about agent expiry.
    pub fn register_long_lived(&self, agent: &str) {
        self.run(register(agent));
        self.run(heartbeat(agent, 24 * 3_600_000));
    }

    /// Advances the clock and lets the writer record whatever expired.
    pub fn advance_ms(&self, millis: u64) {
        self.clock.advance_ms(millis);
        self.coordinator.sync().expect("sync");
    }

    /// Ledger time: where the writer will stamp the next batch.
    pub fn now(&self) -> Timestamp {
        self.coordinator.ledger().now()
    }

    /// Every record's event kind, in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let reader = self.coordinator.ledger().reader();
        let last = reader.last_seq().expect("last");
        reader
            .range(1..=last)
            .expect("read")
            .iter()
            .map(|record| record.event.kind())
            .collect()
    }
}

impl Default for TestFleet {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks invariants over a whole log, record by record: no lock has two holders at any seq;
/// no task is leased to two agents at once or completed twice; only the holder completes; and
/// every takeover names the token whose expiry was recorded. Panics naming the seq otherwise.
pub fn check_log(reader: &fleetlog_ledger::Reader) {
    use std::collections::{BTreeMap, BTreeSet};
    let last = reader.last_seq().expect("last seq");
    let mut lock_holders: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut expired_tokens: BTreeMap<String, u64> = BTreeMap::new();
    let mut task_holders: BTreeMap<u64, String> = BTreeMap::new();
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    reader
        .scan(1..=last, |record| {
            let seq = record.seq;
            match &record.event {
                Event::LockAcquired { resource, takeover_of, .. } => {
                    if let Some((holder, token)) = lock_holders.get(resource) {
                        panic!("seq {seq}: {resource} granted to {} while {holder} holds token {token}", record.actor);
                    }
                    if let Some(taken) = takeover_of {
                        assert_eq!(expired_tokens.get(resource), Some(taken), "seq {seq}: takeover of a token whose expiry was not recorded");
                    }
                    expired_tokens.remove(resource);
                    lock_holders.insert(resource.clone(), (record.actor.clone(), seq));
                }
                Event::LockReleased { resource, token } => {
                    let holder = lock_holders.remove(resource);
                    assert_eq!(holder, Some((record.actor.clone(), *token)), "seq {seq}: release by a non-holder");
                }
                Event::LockExpired { resource, token, holder, .. } => {
                    let current = lock_holders.remove(resource);
                    assert_eq!(current, Some((holder.clone(), *token)), "seq {seq}: expiry of a lock not held");
                    expired_tokens.insert(resource.clone(), *token);
                }
                Event::TaskClaimed { task, .. } => {
                    if let Some(holder) = task_holders.get(task) {
                        panic!("seq {seq}: task {task} claimed by {} while leased to {holder}", record.actor);
                    }
                    assert!(!completed.contains(task), "seq {seq}: completed task {task} claimed again");
                    task_holders.insert(*task, record.actor.clone());
                }
                Event::TaskCompleted { task, .. } => {
                    assert_eq!(task_holders.remove(task).as_deref(), Some(record.actor.as_str()), "seq {seq}: completion by a non-holder");
                    assert!(completed.insert(*task), "seq {seq}: task {task} completed twice");
                }
                Event::TaskFailed { task, .. } => {
                    assert_eq!(task_holders.remove(task).as_deref(), Some(record.actor.as_str()), "seq {seq}: failure by a non-holder");
                }
                Event::TaskLeaseExpired { task, agent, .. } => {
                    assert_eq!(task_holders.remove(task).as_ref(), Some(agent), "seq {seq}: lease expiry of a task not leased");
                }
                Event::TaskCancelled { task, .. } => {
                    task_holders.remove(task);
                }
                _ => {}
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .expect("scan the log");
}

/// Latencies of single operations, kept so a benchmark can report percentiles (criterion
/// reports means): the edge targets are stated as p50 and p99.
#[derive(Default)]
pub struct Latencies {
    samples: Vec<std::time::Duration>,
}

impl Latencies {
    /// Runs `op` `iters` times, recording each, and returns the total (for `iter_custom`).
    pub fn time(&mut self, iters: u64, mut op: impl FnMut()) -> std::time::Duration {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..iters {
            let started = std::time::Instant::now();
            op();
            let took = started.elapsed();
            self.samples.push(took);
            total += took;
        }
        total
    }

    /// The `q` quantile (0.0..=1.0) of everything recorded.
    pub fn quantile(&mut self, q: f64) -> std::time::Duration {
        if self.samples.is_empty() {
            return std::time::Duration::ZERO;
        }
        self.samples.sort_unstable();
        let index = ((self.samples.len() - 1) as f64 * q).round() as usize;
        self.samples[index]
    }

    /// `label: p50 … p99 … (n samples)`, for the bench output.
    pub fn report(&mut self, label: &str) -> String {
        format!(
            "{label}: p50 {:?} p99 {:?} ({} samples)",
            self.quantile(0.5),
            self.quantile(0.99),
            self.samples.len()
        )
    }
}
