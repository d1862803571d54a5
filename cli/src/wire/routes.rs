//! Every HTTP route, once: the daemon's router is built from this table and the OpenAPI
//! document is generated from it, so the two cannot disagree.

/// What serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// POST: the body is this state-machine command's fields (the `command` tag implied).
    Command(&'static str),
    /// GET: the query parameters are this query's fields.
    Query(&'static str),
    /// Served by the daemon itself (health, metrics, events, batch …).
    Daemon,
}

/// One route: method, path, what serves it, and the path segment that fills a field.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: Handler,
    /// `(field, numeric)`: the `{…}` segment of the path fills this field of the command or query.
    pub path_field: Option<(&'static str, bool)>,
    pub summary: &'static str,
}

const fn command(path: &'static str, name: &'static str, summary: &'static str) -> Route {
    Route {
        method: "POST",
        path,
        handler: Handler::Command(name),
        path_field: None,
        summary,
    }
}

const fn command_on(
    path: &'static str,
    name: &'static str,
    field: &'static str,
    numeric: bool,
    summary: &'static str,
) -> Route {
    on(command(path, name, summary), field, numeric)
}

/// `route` with its `{…}` path segment filling `field`.
const fn on(mut route: Route, field: &'static str, numeric: bool) -> Route {
    route.path_field = Some((field, numeric));
    route
}

const fn query(path: &'static str, name: &'static str, summary: &'static str) -> Route {
    Route {
        method: "GET",
        path,
        handler: Handler::Query(name),
        path_field: None,
        summary,
    }
}

const fn query_on(
    path: &'static str,
    name: &'static str,
    field: &'static str,
    numeric: bool,
    summary: &'static str,
) -> Route {
    on(query(path, name, summary), field, numeric)
}

const fn daemon(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        handler: Handler::Daemon,
        path_field: None,
        summary,
    }
}

pub const ROUTES: &[Route] = &[
    daemon(
        "GET",
        "/v1/health",
        "Health: ok, or degraded with the reason (503)",
    ),
    daemon(
        "GET",
        "/v1/health/ready",
        "Readiness: 503 while writes are refused",
    ),
    daemon(
        "GET",
        "/v1/health/live",
        "Liveness: 200 while the process serves",
    ),
    daemon(
        "GET",
        "/v1/head",
        "The newest record's seq and hash, the ledger id and record format",
    ),
    daemon(
        "GET",
        "/v1/verify",
        "Re-hash the whole chain (from genesis, through an optional trusted from=seq:hash)",
    ),
    daemon("GET", "/metrics", "Prometheus metrics, limits included"),
    daemon("GET", "/v1/openapi.json", "This document"),
    daemon(
        "POST",
        "/v1/commands",
        "Any command, as {\"command\": name, …}",
    ),
    daemon(
        "POST",
        "/mcp",
        "Model Context Protocol (Streamable HTTP): one JSON-RPC message per request, answered with JSON, as the agent in Fleetlog-Agent",
    ),
    daemon(
        "POST",
        "/v1/queries",
        "Any query, as {\"query\": name, …, \"as_of\"?}",
    ),
    daemon(
        "POST",
        "/v1/batch",
        "Up to 1,000 commands, each answered on its own",
    ),
    command("/v1/agents", "register", "Register an agent"),
    query(
        "/v1/agents",
        "agents",
        "Agents (alive; all=true for every one), one page",
    ),
    query(
        "/v1/agents/stale",
        "stale",
        "Agents whose heartbeat is older than threshold_ms",
    ),
    query(
        "/v1/agents/hung",
        "hung",
        "Agents whose progress has not changed for threshold_ms",
    ),
    query_on("/v1/agents/{agent}", "agent", "id", false, "One agent"),
    command_on(
        "/v1/agents/{agent}/deregister",
        "deregister",
        "agent",
        false,
        "Deregister an agent",
    ),
    command(
        "/v1/heartbeats",
        "heartbeat",
        "Heartbeat: status, progress, current task",
    ),
    command(
        "/v1/signals",
        "send_signal",
        "Send a signal to an agent or to all",
    ),
    query(
        "/v1/signals",
        "inbox",
        "What an agent can see now (a peek), one page",
    ),
    command(
        "/v1/signals/receive",
        "receive_signal",
        "Check or wait for a signal",
    ),
    command(
        "/v1/signals/ack",
        "ack_signal",
        "Acknowledge a delivered signal",
    ),
    command("/v1/locks", "acquire_lock", "Acquire (or wait for) a lock"),
    query("/v1/locks", "locks", "Locks held now, one page"),
    query(
        "/v1/locks/check",
        "lock_check",
        "Whether a token is the current one",
    ),
    command("/v1/locks/renew", "renew_lock", "Renew a held lock"),
    command("/v1/locks/release", "release_lock", "Release a held lock"),
    command("/v1/tasks", "enqueue", "Enqueue a task"),
    query("/v1/tasks", "tasks", "Tasks by state and tag, one page"),
    query("/v1/tasks/stats", "queue_stats", "Queue counts and ages"),
    command(
        "/v1/tasks/claim",
        "claim",
        "Claim (or wait for) the best task",
    ),
    query_on("/v1/tasks/{task}", "task", "id", true, "One task"),
    command_on(
        "/v1/tasks/{task}/renew",
        "renew_lease",
        "task",
        true,
        "Renew a task's lease",
    ),
    command_on(
        "/v1/tasks/{task}/complete",
        "complete",
        "task",
        true,
        "Complete a claimed task",
    ),
    command_on(
        "/v1/tasks/{task}/fail",
        "fail",
        "task",
        true,
        "Fail a claimed task",
    ),
    command_on(
        "/v1/tasks/{task}/cancel",
        "cancel",
        "task",
        true,
        "Cancel a pending task",
    ),
    command_on(
        "/v1/tasks/{task}/release",
        "release_task",
        "task",
        true,
        "Give a claimed task back without counting the attempt, or requeue an escalated one",
    ),
    command_on(
        "/v1/tasks/{task}/progress",
        "task_progress",
        "task",
        true,
        "Report progress on a claimed task",
    ),
    command_on(
        "/v1/tasks/{task}/escalate",
        "escalate_task",
        "task",
        true,
        "Put a task aside for a decision",
    ),
    command_on(
        "/v1/tasks/{task}/dead-letter",
        "dead_letter_task",
        "task",
        true,
        "Move an unfinished task to the dead-letter queue",
    ),
    command("/v1/approvals", "request_approval", "Request an approval"),
    query(
        "/v1/approvals",
        "approvals",
        "Approvals (pending=true for open ones), one page",
    ),
    query_on(
        "/v1/approvals/{approval}",
        "approval",
        "id",
        true,
        "One approval",
    ),
    command_on(
        "/v1/approvals/{approval}/decision",
        "decide",
        "approval",
        true,
        "Decide an approval",
    ),
    command_on(
        "/v1/approvals/{approval}/wait",
        "await_approval",
        "approval",
        true,
        "Wait for a decision",
    ),
    command("/v1/threads", "post", "Start a board thread"),
    query("/v1/threads", "threads", "Board threads, one page"),
    query_on(
        "/v1/threads/{thread}",
        "thread",
        "id",
        true,
        "One thread with its posts",
    ),
    command_on(
        "/v1/threads/{thread}/replies",
        "reply",
        "thread",
        true,
        "Reply in a thread",
    ),
    command("/v1/decisions", "log_decision", "Log a decision"),
    query(
        "/v1/decisions",
        "decisions",
        "Decisions by agent, type and time, one page",
    ),
    command("/v1/workflows", "start_workflow", "Start a workflow"),
    query("/v1/workflows", "workflows", "Workflows, one page"),
    query_on(
        "/v1/workflows/{workflow}",
        "workflow",
        "id",
        false,
        "One workflow",
    ),
    command_on(
        "/v1/workflows/{workflow}/stages",
        "start_stage",
        "workflow_id",
        false,
        "Start a stage",
    ),
    command_on(
        "/v1/workflows/{workflow}/stages/complete",
        "complete_stage",
        "workflow_id",
        false,
        "Report a finished stage",
    ),
    command_on(
        "/v1/workflows/{workflow}/handoffs",
        "handoff",
        "workflow_id",
        false,
        "Record a handoff",
    ),
    command_on(
        "/v1/workflows/{workflow}/checkpoints",
        "checkpoint",
        "workflow_id",
        false,
        "Record a checkpoint",
    ),
    command_on(
        "/v1/workflows/{workflow}/complete",
        "complete_workflow",
        "workflow_id",
        false,
        "Complete a workflow",
    ),
    command_on(
        "/v1/workflows/{workflow}/cancel",
        "cancel_workflow",
        "workflow_id",
        false,
        "Cancel a workflow",
    ),
    command_on(
        "/v1/workflows/{workflow}/budget",
        "set_budget",
        "workflow_id",
        false,
        "Set a workflow's budget",
    ),
    command(
        "/v1/spend-limits",
        "set_spend_limit",
        "Set or remove a daily spending limit of one agent or the whole fleet",
    ),
    query(
        "/v1/status",
        "status",
        "Agents, locks, queue and workflows at a glance",
    ),
    query(
        "/v1/analytics/workflows",
        "workflow_stats",
        "Workflow statistics",
    ),
    query(
        "/v1/analytics/overhead",
        "overhead",
        "Coordination overhead and the wait breakdown",
    ),
    query(
        "/v1/analytics/trends",
        "trends",
        "Every agent's trend, worst first",
    ),
    query_on(
        "/v1/analytics/trends/{agent}",
        "trends",
        "agent",
        false,
        "One agent's trend",
    ),
    query(
        "/v1/analytics/best-agent",
        "best_agent",
        "Agents ranked for a task",
    ),
    query(
        "/v1/staffing/agents",
        "staff",
        "Live agents with a capability, ranked by record and free capacity",
    ),
    daemon(
        "POST",
        "/v1/staffing/team",
        "Propose a team for tasks with capabilities, priorities and dependencies",
    ),
    query(
        "/v1/analytics/costs",
        "costs",
        "Cost and tokens by workflow, agent, tier and day",
    ),
    command("/v1/events", "custom", "Append a custom event"),
    daemon(
        "GET",
        "/v1/events",
        "Records by seq, one page bounded by records and bytes",
    ),
    daemon(
        "GET",
        "/v1/events/stream",
        "Server-Sent Events: history then live",
    ),
];
