//! The Model Context Protocol (JSON-RPC 2.0), so coding agents (Claude Code, Codex, Gemini CLI)
//! coordinate through fleetlog with tools: over stdio (`fleetlog mcp`, one message per line,
//! each tool run on the daemon serving the ledger, started on demand) and over HTTP (the
//! daemon's `/mcp`, Streamable HTTP answering each message with JSON). A session acts as one
//! agent; each tool is one command or query, so its answers and refusals are the daemon's.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

use crate::client::backend::Backend;
use crate::error::Error;
use crate::wire::Query;

/// The protocol revision this server speaks when the client asks for none it knows.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

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
/// timed-out wait as `{"timed_out": true}`), or a query's.
pub trait Fleet {
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

/// Answers one JSON-RPC message (`None` for a notification, which gets no answer).
pub fn answer(fleet: &dyn Fleet, agent: &str, message: &Value) -> Option<Value> {
    handle(fleet, agent, &tools(), message)
}

/// A JSON-RPC error answer to a message that could not be read.
pub fn parse_failure(problem: &str) -> Value {
    failure(Value::Null, -32700, problem)
}

/// Serves MCP on `input`/`output` as `agent` until `input` ends.
pub fn serve(
    backend: &Backend,
    agent: &str,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<(), Error> {
    let tools = tools();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(error) => Some(failure(Value::Null, -32700, &format!("not JSON: {error}"))),
            Ok(message) => handle(backend as &dyn Fleet, agent, &tools, &message),
        };
        if let Some(reply) = reply {
            writeln!(output, "{reply}")?;
            output.flush()?;
        }
    }
    Ok(())
}

fn handle(backend: &dyn Fleet, agent: &str, tools: &[Tool], message: &Value) -> Option<Value> {
    let id = message.get("id").cloned();
    let method = message["method"].as_str().unwrap_or_default();
    // Notifications (no id) get no answer.
    let id = id?;
    let params = &message["params"];
    let result = match method {
        "initialize" => Ok(json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or(PROTOCOL_VERSION),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "fleetlog", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!("You are agent {agent:?} in a fleet coordinated by fleetlog. Register first, heartbeat while working, lock files before editing them, and log decisions."),
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({
            "tools": tools.iter().map(|tool| json!({
                "name": tool.name,
                "description": tool.description,
                "inputSchema": {
                    "type": "object",
                    "properties": (tool.properties)(),
                    "required": tool.required,
                    "additionalProperties": false,
                },
            })).collect::<Vec<_>>(),
        })),
        "tools/call" => Ok(call(backend, agent, tools, params)),
        other => Err((-32601, format!("method {other:?} is not supported"))),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, text)) => failure(id, code, &text),
    })
}

fn failure(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A tool's result: the answer as JSON text, or the refusal with `isError` (so the model sees
/// what was wrong and can act on it).
fn call(backend: &dyn Fleet, agent: &str, tools: &[Tool], params: &Value) -> Value {
    let name = params["name"].as_str().unwrap_or_default();
    let arguments = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let answer = match tools.iter().find(|tool| tool.name == name) {
        None => Err(format!("no tool named {name:?}; tools/list names them")),
        Some(tool) => run(backend, agent, tool, arguments),
    };
    match answer {
        Ok(value) => json!({
            "content": [{"type": "text", "text": value.to_string()}],
            "structuredContent": value,
            "isError": false,
        }),
        Err(message) => json!({
            "content": [{"type": "text", "text": message}],
            "isError": true,
        }),
    }
}

fn run(backend: &dyn Fleet, agent: &str, tool: &Tool, arguments: Value) -> Result<Value, String> {
    let Value::Object(mut fields) = arguments else {
        return Err("arguments must be a JSON object".to_owned());
    };
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
