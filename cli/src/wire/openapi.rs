//! The OpenAPI 3.1 document of the HTTP API, generated from the route table and the JSON
//! Schemas of the wire types (`schemars`): a command route's body is its `Command` variant, a
//! query route's parameters are its `Query` variant's fields. `docs/openapi.json` is this
//! document checked in; a test keeps them equal.

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::wire::Query;
use crate::wire::routes::{Handler, ROUTES, Route};
use fleetlog_projections::{Command, CommandError, Outcome};

/// The one error shape, as the daemon sends it.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `lock_held`.
    pub error: String,
    /// What was wrong and what to do.
    pub message: String,
    /// The refusal's fields (e.g. `holder`, `token`, `expires_at` for `lock_held`).
    pub details: Map<String, Value>,
}

/// The document, as `GET /v1/openapi.json` serves it.
pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|settings| {
        settings.definitions_path = "/components/schemas".into();
        settings.meta_schema = None;
    });
    let mut generator = SchemaGenerator::new(settings);
    let commands = variants(generator.root_schema_for::<Command>().to_value(), "command");
    let queries = variants(generator.root_schema_for::<Query>().to_value(), "query");
    let outcome = generator.subschema_for::<Outcome>().to_value();
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let _ = generator.subschema_for::<CommandError>();
    let answers: Map<String, Value> = ROUTES
        .iter()
        .filter_map(|route| match route.handler {
            Handler::Query(name) => Some(name),
            _ => None,
        })
        .map(|name| (name.to_owned(), answer_schema(&mut generator, name)))
        .collect();
    let mut paths = Map::new();
    for route in ROUTES {
        let operation = operation(route, &commands, &queries, &answers, &outcome, &error);
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    let mut schemas = generator.take_definitions(true);
    // The enums' own schemas are not referenced by any route (each route takes one variant).
    schemas.remove("Command");
    schemas.remove("Query");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fleetlog",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One hash-chained coordination log served over HTTP/1.1 + JSON. See docs/api.md.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// What a query answers: a page of items, one object, or an analytic's report.
fn answer_schema(generator: &mut SchemaGenerator, name: &str) -> Value {
    use crate::wire::views;
    use fleetlog_projections::{analytics, board, queue};
    let schema = match name {
        "agents" | "stale" | "hung" => generator.subschema_for::<views::AgentsPage>(),
        "inbox" => generator.subschema_for::<views::SignalsPage>(),
        "locks" => generator.subschema_for::<views::LocksPage>(),
        "lock_check" => generator.subschema_for::<views::LockCheck>(),
        "tasks" => generator.subschema_for::<views::TasksPage>(),
        "approvals" => generator.subschema_for::<views::ApprovalsPage>(),
        "threads" => generator.subschema_for::<views::ThreadsPage>(),
        "decisions" => generator.subschema_for::<views::DecisionsPage>(),
        "workflows" => generator.subschema_for::<views::WorkflowsPage>(),
        "status" => generator.subschema_for::<views::StatusView>(),
        "agent" => generator.subschema_for::<views::AgentView>(),
        "approval" => generator.subschema_for::<views::ApprovalView>(),
        "task" => generator.subschema_for::<queue::Task>(),
        "thread" => generator.subschema_for::<board::Thread>(),
        "workflow" => generator.subschema_for::<views::WorkflowView>(),
        "queue_stats" => generator.subschema_for::<queue::QueueStats>(),
        "workflow_stats" => generator.subschema_for::<analytics::WorkflowStats>(),
        "overhead" => generator.subschema_for::<analytics::Overhead>(),
        "costs" => generator.subschema_for::<analytics::Costs>(),
        "trends" => {
            let trend = generator
                .subschema_for::<analytics::AgentTrend>()
                .to_value();
            let all = generator.subschema_for::<views::TrendsView>().to_value();
            return json!({ "oneOf": [trend, all] });
        }
        "best_agent" => generator.subschema_for::<views::CandidatesView>(),
        "staff" => generator.subschema_for::<views::StaffView>(),
        "team" => generator.subschema_for::<analytics::TeamPlan>(),
        _ => return json!({ "type": "object" }),
    };
    schema.to_value()
}

/// The variants of an internally tagged enum's schema, by tag value.
fn variants(schema: Value, tag: &str) -> Map<String, Value> {
    let mut found = Map::new();
    for variant in schema["oneOf"].as_array().into_iter().flatten() {
        if let Some(name) = variant["properties"][tag]["const"].as_str() {
            found.insert(name.to_owned(), variant.clone());
        }
    }
    found
}

fn operation(
    route: &Route,
    commands: &Map<String, Value>,
    queries: &Map<String, Value>,
    answers: &Map<String, Value>,
    outcome: &Value,
    error: &Value,
) -> Value {
    let errors = json!({
        "description": "An error: see the codes in docs/api.md",
        "content": { "application/json": { "schema": error } },
    });
    let mut parameters: Vec<Value> = Vec::new();
    if let Some((field, numeric)) = route.path_field {
        let name = path_parameter(route.path);
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": format!("fills `{field}`"),
            "schema": { "type": if numeric { "integer" } else { "string" } },
        }));
    }
    let mut operation = json!({ "summary": route.summary });
    match route.handler {
        Handler::Command(name) => {
            let mut body = commands.get(name).cloned().unwrap_or_else(|| json!({}));
            strip(&mut body, "command");
            if let Some((field, _)) = route.path_field {
                strip(&mut body, field);
            }
            body["properties"]["idempotency_key"] = json!({
                "type": "string",
                "description": "Same as the Idempotency-Key header",
            });
            operation["operationId"] = json!(operation_id(route));
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": body } } });
            parameters.push(json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "schema": { "type": "string", "maxLength": 128 },
            }));
            operation["responses"] = json!({
                "200": { "description": "The outcome", "content": { "application/json": { "schema": outcome } } },
                "201": { "description": "Created: the object and its id", "content": { "application/json": { "schema": { "type": "object" } } } },
                "default": errors,
            });
        }
        Handler::Query(name) => {
            let variant = queries.get(name).cloned().unwrap_or_else(|| json!({}));
            let required: Vec<&str> = variant["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (field, schema) in variant["properties"].as_object().into_iter().flatten() {
                let from_path = route
                    .path_field
                    .is_some_and(|(path_field, _)| path_field == field);
                if field == "query" || from_path {
                    continue;
                }
                parameters.push(json!({
                    "name": field,
                    "in": "query",
                    "required": required.contains(&field.as_str()),
                    "schema": schema,
                }));
            }
            operation["operationId"] = json!(operation_id(route));
            operation["responses"] = json!({
                "200": { "description": "The answer", "content": { "application/json": { "schema": answers.get(name).cloned().unwrap_or_else(|| json!({ "type": "object" })) } } },
                "default": errors,
            });
        }
        Handler::Daemon => {
            operation["operationId"] = json!(operation_id(route));
            operation["responses"] = json!({
                "200": { "description": "OK" },
                "default": errors,
            });
        }
    }
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    operation
}

/// Removes `field` from an object schema's properties and required list.
fn strip(schema: &mut Value, field: &str) {
    if let Some(properties) = schema["properties"].as_object_mut() {
        properties.remove(field);
    }
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|name| name != field);
    }
}

fn path_parameter(path: &str) -> &str {
    path.split('{')
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default()
}

fn operation_id(route: &Route) -> String {
    let what = route
        .path
        .trim_start_matches('/')
        .replace(['/', '-', '.'], "_")
        .replace(['{', '}'], "");
    format!("{}_{what}", route.method.to_ascii_lowercase())
}
