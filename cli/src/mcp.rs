//! The Model Context Protocol, so coding agents (Claude Code, Codex, Gemini CLI) coordinate
//! through fleetlog with tools: over stdio (`fleetlog mcp`, each tool run on the daemon serving
//! the ledger, started on demand) and over HTTP (the daemon's `/mcp`, Streamable HTTP). The
//! protocol — handshake, framing, version negotiation, errors — is the official Rust SDK's
//! (`rmcp`, pinned); this module is the tool set. A session acts as one agent; each tool is one
//! command or query, so its answers and refusals are the daemon's.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use crate::client::backend::Backend;
use crate::error::Error;
use crate::wire::Query;

/// What a tool does when called.
enum Action {
    /// The command named, built from the arguments plus `agent`.
    Command(&'static str),
    /// A command with a wait: `timeout_ms` becomes the named wait field.
    Wait(&'static str, &'static str),
    Query(&'static str),
}

struct Tool {
    name: &'static str,
    description: &'static str,
    action: Action,
    /// JSON Schema `properties` and `required`.
    properties: fn() -> Value,
    required: &'static [&'static str],
}

/// A small set (context is precious): status, identity, locks, tasks, signals, approvals,
/// decisions and workflow stages.
fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "status",
            description: "The fleet at a glance: agents alive, locks, queue, workflows.",
            action: Action::Query("status"),
            properties: || json!({}),
            required: &[],
        },
        Tool {
            name: "register",
            description: "Join the fleet as this agent (again after expiring).",
            action: Action::Command("register"),
            properties: || {
                json!({"role": {"type": "string"}, "working_on": {"type": "string"},
                       "capabilities": {"type": "array", "items": {"type": "string"}}})
            },
            required: &[],
        },
        Tool {
            name: "heartbeat",
            description: "Say this agent is alive; fields left out keep their value.",
            action: Action::Command("heartbeat"),
            properties: || {
                json!({"status": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
                       "current_task": {"type": "string"}})
            },
            required: &[],
        },
        Tool {
            name: "acquire_lock",
            description: "Lock a resource (e.g. a file path) for ttl_ms; wait_ms waits for the holder. slots: N makes it a semaphore of N holders. Returns the fencing token.",
            action: Action::Command("acquire_lock"),
            properties: || {
                json!({"resource": {"type": "string"}, "ttl_ms": {"type": "integer", "minimum": 1},
                       "intent": {"type": "string"}, "wait_ms": {"type": "integer", "minimum": 1},
                       "slots": {"type": "integer", "minimum": 1}})
            },
            required: &["resource", "ttl_ms"],
        },
        Tool {
            name: "release_lock",
            description: "Release a lock this agent holds (the resource as granted, and its token).",
            action: Action::Command("release_lock"),
            properties: || json!({"resource": {"type": "string"}, "token": {"type": "integer"}}),
            required: &["resource", "token"],
        },
        Tool {
            name: "claim_task",
            description: "Claim the best task this agent may take (optionally by tags), waiting up to wait_ms.",
            action: Action::Command("claim"),
            properties: || {
                json!({"tags": {"type": "array", "items": {"type": "string"}},
                       "wait_ms": {"type": "integer", "minimum": 1},
                       "lease_ttl_ms": {"type": "integer", "minimum": 1}})
            },
            required: &[],
        },
        Tool {
            name: "complete_task",
            description: "Complete a task this agent claimed, with its result.",
            action: Action::Command("complete"),
            properties: || json!({"task": {"type": "integer"}, "result": {}}),
            required: &["task"],
        },
        Tool {
            name: "fail_task",
            description: "Fail a task this agent claimed (retried unless retryable is false).",
            action: Action::Command("fail"),
            properties: || {
                json!({"task": {"type": "integer"}, "error": {"type": "string"},
                       "retryable": {"type": "boolean"}})
            },
            required: &["task", "error"],
        },
        Tool {
            name: "send_signal",
            description: "Signal another agent (target), or every agent without one.",
            action: Action::Command("send_signal"),
            properties: || {
                json!({"kind": {"type": "string"}, "target": {"type": "string"},
                       "payload": {}, "ttl_ms": {"type": "integer", "minimum": 1}})
            },
            required: &["kind"],
        },
        Tool {
            name: "receive_signal",
            description: "Take the oldest signal of this kind (optionally from one agent); timeout_ms waits for one, else answers now.",
            action: Action::Wait("receive_signal", "wait_ms"),
            properties: || {
                json!({"kind": {"type": "string"}, "from": {"type": "string"},
                       "timeout_ms": {"type": "integer", "minimum": 1}})
            },
            required: &["kind"],
        },
        Tool {
            name: "request_approval",
            description: "Ask for approval before acting (from approvers, else any other agent); returns its id.",
            action: Action::Command("request_approval"),
            properties: || {
                json!({"action": {"type": "string"}, "approvers": {"type": "array", "items": {"type": "string"}},
                       "timeout_ms": {"type": "integer", "minimum": 1}})
            },
            required: &["action", "timeout_ms"],
        },
        Tool {
            name: "await_approval",
            description: "Wait up to timeout_ms for an approval's decision.",
            action: Action::Wait("await_approval", "wait_ms"),
            properties: || json!({"approval": {"type": "integer"}, "timeout_ms": {"type": "integer", "minimum": 1}}),
            required: &["approval", "timeout_ms"],
        },
        Tool {
            name: "log_decision",
            description: "Record a decision and why, for the audit trail.",
            action: Action::Command("log_decision"),
            properties: || {
                json!({"decision_type": {"type": "string"}, "reason": {"type": "string"},
                       "context": {"type": "string"},
                       "alternatives": {"type": "array", "items": {"type": "string"}}})
            },
            required: &["decision_type", "reason"],
        },
        Tool {
            name: "workflow_stage",
            description: "Record a stage this agent finished in a running workflow: outcome, time, cost.",
            action: Action::Command("complete_stage"),
            properties: || {
                json!({"workflow_id": {"type": "string"}, "stage": {"type": "string"},
                       "outcome": {"enum": ["success", "failure", "partial", "unknown"]},
                       "duration_ms": {"type": "integer", "minimum": 0},
                       "cost_usd": {"type": "number", "minimum": 0},
                       "tokens": {"type": "integer", "minimum": 0},
                       "description": {"type": "string"}})
            },
            required: &["workflow_id", "stage", "outcome"],
        },
    ]
}

/// Where tools run: a command's answer as the HTTP API gives it (errors as `code: message`, a
/// timed-out wait as `{"timed_out": true}`), or a query's. Called from a blocking thread.
pub trait Fleet: Send + Sync + 'static {
    fn command(&self, command: &fleetlog_projections::Command) -> Result<Value, String>;
    fn query(&self, query: &Query) -> Result<Value, String>;
}

impl Fleet for Backend {
    fn command(&self, command: &fleetlog_projections::Command) -> Result<Value, String> {
        match self.execute_answer(command) {
            Ok((_, value)) => Ok(value),
            Err(error) if error.code() == Some("timed_out") => Ok(json!({"timed_out": true})),
            Err(error) => Err(match error.code() {
                Some(code) => format!("{code}: {error}"),
                None => error.to_string(),
            }),
        }
    }

    fn query(&self, query: &Query) -> Result<Value, String> {
        Backend::query(self, query).map_err(|error| error.to_string())
    }
}

/// One MCP session's server: it acts as `agent` and runs its tools on `fleet`.
pub struct FleetServer<F> {
    fleet: Arc<F>,
    agent: String,
}

impl<F: Fleet> FleetServer<F> {
    pub fn new(fleet: Arc<F>, agent: impl Into<String>) -> Self {
        FleetServer {
            fleet,
            agent: agent.into(),
        }
    }
}

impl<F: Fleet> ServerHandler for FleetServer<F> {
    fn get_info(&self) -> InitializeResult {
        let agent = &self.agent;
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("fleetlog", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "You are agent {agent:?} in a fleet coordinated by fleetlog. Register first, heartbeat while working, lock files before editing them, and log decisions."
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            tools().iter().map(Tool::definition).collect(),
        ))
    }

    /// A refusal is a result with `isError` (so the model reads what was wrong and can act on
    /// it), not a protocol error.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = tools().into_iter().find(|tool| tool.name == request.name) else {
            let name = request.name;
            return Ok(refused(format!(
                "no tool named {name:?}; tools/list names them"
            )));
        };
        let (fleet, agent) = (Arc::clone(&self.fleet), self.agent.clone());
        let arguments = request.arguments.unwrap_or_default();
        let answer = tokio::task::spawn_blocking(move || run(&*fleet, &agent, &tool, arguments))
            .await
            .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
        Ok(match answer {
            Ok(value) => {
                let mut result = CallToolResult::structured(value);
                // Said outright: some clients treat an absent isError as unknown.
                result.is_error = Some(false);
                result.into()
            }
            Err(message) => refused(message),
        })
    }
}

fn refused(message: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(message)]).into()
}

impl Tool {
    fn definition(&self) -> rmcp::model::Tool {
        let schema = JsonObject::from_iter([
            ("type".to_owned(), json!("object")),
            ("properties".to_owned(), (self.properties)()),
            ("required".to_owned(), json!(self.required)),
            ("additionalProperties".to_owned(), json!(false)),
        ]);
        rmcp::model::Tool::new(self.name, self.description, Arc::new(schema))
    }
}

/// Serves MCP on stdin/stdout as `agent` until the client closes stdin.
pub fn serve_stdio(backend: Backend, agent: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let server = FleetServer::new(Arc::new(backend), agent);
    runtime.block_on(async move {
        let session = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|error| Error::Config(format!("MCP session did not start: {error}")))?;
        session
            .waiting()
            .await
            .map_err(|error| Error::Config(format!("MCP session failed: {error}")))?;
        Ok(())
    })
}

fn run(
    backend: &dyn Fleet,
    agent: &str,
    tool: &Tool,
    mut fields: JsonObject,
) -> Result<Value, String> {
    if let Some(unknown) = fields
        .keys()
        .find(|key| (tool.properties)().get(key.as_str()).is_none())
    {
        return Err(format!("unknown argument {unknown:?} for {}", tool.name));
    }
    let name = match tool.action {
        Action::Query(query) => {
            let query: Query = serde_json::from_value(json!({ "query": query }))
                .map_err(|error| error.to_string())?;
            return backend.query(&query);
        }
        Action::Command(name) => name,
        Action::Wait(name, field) => {
            if let Some(timeout) = fields.remove("timeout_ms") {
                fields.insert(field.to_owned(), timeout);
            }
            name
        }
    };
    if name == "complete_stage" {
        // The report's fields are the tool's arguments; the stage is this agent's.
        let mut report = serde_json::Map::new();
        for key in [
            "stage",
            "outcome",
            "duration_ms",
            "cost_usd",
            "tokens",
            "description",
        ] {
            if let Some(value) = fields.remove(key) {
                report.insert(key.to_owned(), value);
            }
        }
        report.insert("agent".to_owned(), json!(agent));
        report.entry("duration_ms").or_insert(json!(0));
        fields.insert("report".to_owned(), Value::Object(report));
    }
    if name == "receive_signal" {
        // The filter's fields are the tool's top-level arguments.
        let mut filter = serde_json::Map::new();
        for key in ["kind", "from"] {
            if let Some(value) = fields.remove(key) {
                filter.insert(key.to_owned(), value);
            }
        }
        fields.insert("filter".to_owned(), Value::Object(filter));
        fields.insert("consume".to_owned(), json!(true));
    }
    fields.insert("command".to_owned(), json!(name));
    fields.insert("agent".to_owned(), json!(agent));
    let command = serde_json::from_value(Value::Object(fields))
        .map_err(|error| format!("not a valid {name}: {error}"))?;
    backend.command(&command)
}
