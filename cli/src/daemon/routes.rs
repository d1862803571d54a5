//! The router: command routes (one state-machine command each, answered after its commit), query
//! routes, `/v1/commands`, `/v1/queries` and `/v1/batch`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query as UrlQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetlog_projections::{Command, CommandError, Outcome};
use serde_json::{Value, json};

use super::*;
use crate::wire::routes::Handler;
use crate::wire::{self, Query};

/// A command route: the body's JSON object, plus the route's command name and path field.
pub(super) fn command_route(name: &'static str) -> axum::routing::MethodRouter<Shared> {
    post(
        move |State(app): State<Shared>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            run_command(&app, &headers, body, name, None).await
        },
    )
}

/// A command route whose URL names its subject: `field` is taken from the path.
pub(super) fn command_route_with(
    name: &'static str,
    field: &'static str,
    numeric: bool,
) -> axum::routing::MethodRouter<Shared> {
    post(
        move |State(app): State<Shared>,
              UrlPath(id): UrlPath<String>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            let value = match numeric {
                true => match id.parse::<u64>() {
                    Ok(number) => json!(number),
                    Err(_) => {
                        return ApiError::malformed(format!(
                            "{field} {id:?} in the URL is not a number"
                        ))
                        .into_response();
                    }
                },
                false => json!(id),
            };
            run_command(&app, &headers, body, name, Some((field, value))).await
        },
    )
}

pub(super) async fn run_command(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    name: &'static str,
    from_path: Option<(&'static str, Value)>,
) -> Response {
    match command(app, headers, body, name, from_path).await {
        Ok((status, answer)) => (status, Json(answer)).into_response(),
        Err(error) => error.into_response(),
    }
}

impl From<BytesRejection> for ApiError {
    /// An unreadable body: 413 when it is over [`BODY_BYTES_MAX`], whatever the route.
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            true => ApiError::new(
                413,
                "too_large",
                format!("the request body is over {BODY_BYTES_MAX} bytes; send less per request"),
            ),
            false => ApiError::malformed(rejection.body_text()),
        }
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(ApiError::from)
}

/// The `Idempotency-Key` header, if sent.
pub(super) fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|key| Some(key.to_owned()))
            .map_err(|_| ApiError::malformed("the Idempotency-Key header must be visible ASCII")),
    }
}

/// Takes a per-command `idempotency_key` field out of a command object.
pub(super) fn take_key(
    object: &mut serde_json::Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    match object.remove("idempotency_key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => Ok(Some(key)),
        Some(other) => Err(ApiError::malformed(format!(
            "idempotency_key must be a string, not {other}"
        ))),
    }
}

pub(super) async fn command(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    name: &'static str,
    from_path: Option<(&'static str, Value)>,
) -> Result<(StatusCode, Value), ApiError> {
    let body = body_bytes(body)?;
    let mut value: Value = match body.is_empty() {
        true => json!({}),
        false => serde_json::from_slice(&body)
            .map_err(|error| ApiError::malformed(format!("the body is not valid JSON: {error}")))?,
    };
    let object = value
        .as_object_mut()
        .ok_or_else(|| ApiError::malformed("the body must be a JSON object"))?;
    let key = take_key(object)?.map_or_else(|| header_key(headers), |key| Ok(Some(key)))?;
    object.insert("command".to_owned(), json!(name));
    if let Some((field, id)) = from_path {
        object.insert(field.to_owned(), id);
    }
    let command: Command = serde_json::from_value(value)
        .map_err(|error| ApiError::malformed(format!("not a valid {name} command: {error}")))?;
    execute(app, presented(headers)?.as_deref(), command, key).await
}

/// The credential a request carries (the `Fleetlog-Credential` header), if any.
pub(super) fn presented(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(crate::identity::CREDENTIAL_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|credential| Some(credential.trim().to_owned()))
            .map_err(|_| {
                ApiError::malformed("the Fleetlog-Credential header must be visible ASCII")
            }),
    }
}

/// Refuses `command` unless `credential` may act as its agent (always allowed in trusted-host
/// mode). Checked before the command is validated or queued.
pub(super) fn authorize(
    app: &App,
    credential: Option<&str>,
    command: &Command,
) -> Result<(), ApiError> {
    if app.trusted_host {
        return Ok(());
    }
    app.keys
        .check(&app.coordinator.state(), command, credential)
        .map_err(ApiError::from)
}

/// Resolves once the daemon is shutting down.
pub(super) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How a request's command reaches the writer.
#[derive(Clone, Copy)]
pub(super) enum Alone {
    /// The request's only command: committed on this runtime thread when the writer is idle
    /// and the runtime has another worker to serve the other connections meanwhile, which
    /// saves two thread wake-ups (the thread would only wait for the answer otherwise).
    Yes,
    /// One of a batch's commands: queued, so they share a commit.
    No,
}

/// Submits `command` and awaits its answer; a shutdown answers `closing`. If this future is
/// dropped first (the client went away), the guard it holds withdraws the command's wait, so
/// nothing is granted, claimed or consumed for nobody. A command sent `Alone` may commit on
/// this runtime thread (one commit, bounded); a wait never blocks it.
pub(super) async fn submit(
    app: &App,
    command: Command,
    key: Option<String>,
    alone: Alone,
) -> Result<Outcome, CommandError> {
    let (sender, receiver) = oneshot::channel();
    let answer = move |answer| {
        let _ = sender.send(answer);
    };
    let mut caller = match alone {
        // A runtime with one worker (a one-CPU machine) must not block it for a commit: the
        // requests waiting on other connections would go unread, each committed alone in
        // turn (50 clients: 0.1× Redis instead of 0.4×), where queued they share commits.
        Alone::Yes if tokio::runtime::Handle::current().metrics().num_workers() > 1 => {
            app.coordinator.run_watched(command, key, answer)?
        }
        Alone::Yes | Alone::No => app.coordinator.submit_watched(command, key, answer)?,
    };
    let answer = tokio::select! {
        answer = receiver => answer.unwrap_or(Err(CommandError::Closing)),
        () = stopped(app.shutdown.clone()) => Err(CommandError::Closing),
    };
    caller.answered();
    answer
}

/// Runs `command` and answers it: 201 with the created object for creates (agents, signals,
/// tasks, approvals, threads, decisions, workflows), else 200 with the outcome.
pub(super) async fn execute(
    app: &App,
    credential: Option<&str>,
    command: Command,
    key: Option<String>,
) -> Result<(StatusCode, Value), ApiError> {
    authorize(app, credential, &command)?;
    let answer = submit(app, command.clone(), key, Alone::Yes).await;
    answer_of(app, &command, answer).map_err(ApiError::from)
}

/// A command's answer: 201 with the created object for creates (agents, signals, tasks,
/// approvals, threads, decisions, workflows), else 200 with the outcome.
pub(super) fn answer_of(
    app: &App,
    command: &Command,
    answer: Result<Outcome, CommandError>,
) -> Result<(StatusCode, Value), CommandError> {
    if let Ok(Outcome::Appended { seq }) = &answer {
        let state = app.coordinator.state();
        let now = app.coordinator.now();
        let log = app.coordinator.ledger().reader();
        if let Some(created) =
            wire::created_with_credential(&state, log, now, command, *seq, &app.keys)
        {
            return Ok((StatusCode::CREATED, created));
        }
    }
    if let Err(CommandError::NotDurable { cause }) = &answer
        && !app.refusal_logged.swap(true, Ordering::Relaxed)
    {
        tracing::error!(%cause, "the writer refuses writes after a failed commit; restart the daemon once the cause is fixed");
    }
    Ok((StatusCode::OK, outcome_json(command.name(), answer)?))
}

/// A command's answer on the wire. A wait that timed out is an answer, not an error: 200 with
/// the empty result and `"timed_out": true`, so HTTP stacks do not retry it.
pub(super) fn outcome_json(
    kind: &str,
    answer: Result<Outcome, CommandError>,
) -> Result<Value, CommandError> {
    match answer {
        Ok(outcome) => Ok(serde_json::to_value(outcome).unwrap_or(Value::Null)),
        Err(CommandError::TimedOut { waited_ms }) => {
            let (outcome, field) = match kind {
                "receive_signal" => ("signal", "signal"),
                "acquire_lock" => ("lock", "lock"),
                "claim" => ("task", "task"),
                _ => ("approval", "approval"),
            };
            Ok(
                json!({ "outcome": outcome, field: null, "timed_out": true, "waited_ms": waited_ms }),
            )
        }
        Err(error) => Err(error),
    }
}

/// Query parameters that are numbers or booleans (everything else stays a string, so agent
/// ids that look like numbers keep working).
pub(super) const NUMERIC_PARAMS: &[&str] = &["threshold_ms", "token", "top", "days", "limit"];
pub(super) const FLOAT_PARAMS: &[&str] = &["threshold_points", "min_confidence"];
pub(super) const BOOLEAN_PARAMS: &[&str] = &["all", "pending"];

pub(super) fn query_route(
    name: &'static str,
    path_field: Option<(&'static str, bool)>,
) -> axum::routing::MethodRouter<Shared> {
    get(
        move |State(app): State<Shared>,
              path: Option<UrlPath<String>>,
              UrlQuery(params): UrlQuery<HashMap<String, String>>| async move {
            let mut object = serde_json::Map::new();
            object.insert("query".to_owned(), json!(name));
            for (key, text) in params {
                let value = match (
                    NUMERIC_PARAMS.contains(&key.as_str()),
                    BOOLEAN_PARAMS.contains(&key.as_str()),
                ) {
                    (true, _) => match text.parse::<u64>() {
                        Ok(number) => json!(number),
                        Err(_) => {
                            return ApiError::malformed(format!(
                                "{key}={text:?} is not a whole number"
                            ))
                            .into_response();
                        }
                    },
                    (_, true) => match text.as_str() {
                        "true" | "1" => json!(true),
                        "false" | "0" => json!(false),
                        _ => {
                            return ApiError::malformed(format!(
                                "{key}={text:?} is not a boolean; use true or false"
                            ))
                            .into_response();
                        }
                    },
                    _ if FLOAT_PARAMS.contains(&key.as_str()) => match text.parse::<f64>() {
                        Ok(number) => json!(number),
                        Err(_) => {
                            return ApiError::malformed(format!("{key}={text:?} is not a number"))
                                .into_response();
                        }
                    },
                    _ => json!(text),
                };
                object.insert(key, value);
            }
            if let (Some((field, numeric)), Some(UrlPath(id))) = (path_field, path) {
                let value = match numeric {
                    true => match id.parse::<u64>() {
                        Ok(number) => json!(number),
                        Err(_) => {
                            return ApiError::malformed(format!("{id:?} is not a number"))
                                .into_response();
                        }
                    },
                    false => json!(id),
                };
                object.insert(field.to_owned(), value);
            }
            answer_query(&app, Value::Object(object)).await
        },
    )
}

pub(super) fn router(app: Shared) -> Router {
    // One method router per path, from the route table the OpenAPI document is made from.
    let mut by_path: std::collections::BTreeMap<&str, axum::routing::MethodRouter<Shared>> =
        std::collections::BTreeMap::new();
    for route in wire::routes::ROUTES {
        let serving = match route.handler {
            Handler::Command(name) => match route.path_field {
                None => command_route(name),
                Some((field, numeric)) => command_route_with(name, field, numeric),
            },
            Handler::Query(name) => query_route(name, route.path_field),
            Handler::Daemon => daemon_route(route.method, route.path),
        };
        let merged = match by_path.remove(route.path) {
            Some(earlier) => earlier.merge(serving),
            None => serving,
        };
        by_path.insert(route.path, merged);
    }
    let routes = by_path
        .into_iter()
        .fold(Router::new(), |router, (path, serving)| {
            router.route(path, serving)
        })
        .fallback(|| async {
            ApiError::new(404, "not_found", "no such route; see docs/api.md").into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_request,
        ))
        .with_state(app);
    // Outside the routes, so it sees responses as they leave them (with axum's `Allow`).
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(json_errors))
}

/// The handler of a route the daemon serves itself. Every `Handler::Daemon` row of the route
/// table must have one: building the router (which every daemon test does) checks it.
fn daemon_route(method: &str, path: &str) -> axum::routing::MethodRouter<Shared> {
    match (method, path) {
        ("GET", "/v1/health" | "/v1/health/ready") => get(health),
        ("GET", "/v1/health/live") => get(health_live),
        ("GET", "/v1/head") => get(head),
        ("GET", "/v1/verify") => get(verify),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/openapi.json") => get(|| async { Json(wire::openapi::document()) }),
        ("POST", "/v1/commands") => post(generic_command),
        ("POST", "/v1/queries") => post(generic_query),
        ("POST", "/v1/batch") => post(batch),
        ("POST", "/v1/staffing/team") => post(team),
        ("POST", "/mcp") => post(super::mcp::mcp),
        ("GET", "/v1/events") => get(events),
        ("GET", "/v1/events/stream") => get(stream),
        (method, path) => {
            unreachable!("the route table names {method} {path}, which the daemon does not serve")
        }
    }
}

/// Every error leaves as JSON in the one shape, also those produced before a handler runs: a
/// wrong method (405, listing the allowed ones), an undecodable path, a rejected extractor.
pub(super) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed: Vec<&str> = allow
                .as_ref()
                .and_then(|value| value.to_str().ok())
                .map(|value| {
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|method| !method.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            ApiError {
                details: json!({ "allowed": allowed }),
                ..ApiError::new(
                    405,
                    "method_not_allowed",
                    format!("this route accepts {}", allowed.join(", ")),
                )
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            413,
            "too_large",
            format!("the request body is over {BODY_BYTES_MAX} bytes; send less per request"),
        ),
        StatusCode::NOT_FOUND => ApiError::new(404, "not_found", text),
        status if status.is_client_error() => ApiError::new(status.as_u16(), "malformed", text),
        status => ApiError::new(status.as_u16(), "internal", text),
    };
    let mut response = error.into_response();
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Requests slower than this are logged (waits excepted: waiting is what they are for).
pub const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

/// Counts every request and logs the ones worth a line: errors (5xx at error, 4xx at info),
/// slow requests at warn, the rest at debug. One line: method, route, status, latency.
pub(super) async fn count_request(
    State(app): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let latency_ms = took.as_secs_f64() * 1e3;
    let waits = route.ends_with("/receive")
        || route.ends_with("/claim")
        || route.ends_with("/wait")
        || route == "/v1/locks"
        || route.ends_with("/stream");
    match status {
        500.. => tracing::error!(%method, route, status, latency_ms, "request failed"),
        400..=499 => tracing::info!(%method, route, status, latency_ms, "request refused"),
        _ if took > SLOW_REQUEST && !waits => {
            tracing::warn!(%method, route, status, latency_ms, "slow request")
        }
        _ => tracing::debug!(%method, route, status, latency_ms, "request"),
    }
    response
}

pub(super) async fn generic_command(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = body
        .map_err(ApiError::from)
        .and_then(|body| {
            serde_json::from_slice::<Value>(&body).map_err(|error| {
                ApiError::malformed(format!("the body is not valid JSON: {error}"))
            })
        })
        .and_then(|value| keyed_command(value, header_key(&headers)?));
    let credential = match presented(&headers) {
        Ok(credential) => credential,
        Err(error) => return error.into_response(),
    };
    match parsed {
        Ok((command, key)) => match execute(&app, credential.as_deref(), command, key).await {
            Ok((status, answer)) => (status, Json(answer)).into_response(),
            Err(error) => error.into_response(),
        },
        Err(error) => error.into_response(),
    }
}

/// A command object with an optional `idempotency_key` field (else `fallback`).
pub(super) fn keyed_command(
    mut value: Value,
    fallback: Option<String>,
) -> Result<(Command, Option<String>), ApiError> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| ApiError::malformed("a command must be a JSON object"))?;
    let key = take_key(object)?.or(fallback);
    let command = serde_json::from_value(value)
        .map_err(|error| ApiError::malformed(format!("not a valid command: {error}")))?;
    Ok((command, key))
}

/// Many commands in one request: submitted in order (so they usually share a commit), each
/// answered on its own — a batch is not a transaction. Each item may carry its own
/// `idempotency_key`; with an `Idempotency-Key` header, item `i` without one uses `KEY/i`.
pub(super) async fn batch(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        commands: Vec<Value>,
    }
    let parsed = body.map_err(ApiError::from).and_then(|body| {
        serde_json::from_slice::<Batch>(&body)
            .map_err(|error| ApiError::malformed(format!("not a valid batch: {error}")))
    });
    let items = match parsed {
        Ok(batch) if batch.commands.len() > BATCH_COMMANDS_MAX => {
            return ApiError::new(
                413,
                "too_large",
                format!(
                    "{} commands; a batch holds at most {BATCH_COMMANDS_MAX}",
                    batch.commands.len()
                ),
            )
            .into_response();
        }
        Ok(batch) => batch.commands,
        Err(error) => return error.into_response(),
    };
    let base = match header_key(&headers) {
        Ok(base) => base,
        Err(error) => return error.into_response(),
    };
    let credential = match presented(&headers) {
        Ok(credential) => credential,
        Err(error) => return error.into_response(),
    };
    let mut commands = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let fallback = base.as_ref().map(|base| format!("{base}/{index}"));
        match keyed_command(item, fallback) {
            Ok(keyed) => commands.push(keyed),
            Err(error) => {
                return ApiError::malformed(format!("command {index}: {}", error.message))
                    .into_response();
            }
        }
    }
    // Each command's identity is checked first; the rest are submitted together (so they
    // usually share a commit) and answered in order.
    let allowed: Vec<Result<(), ApiError>> = commands
        .iter()
        .map(|(command, _)| authorize(&app, credential.as_deref(), command))
        .collect();
    let app_ref: &App = &app;
    let answers = futures_util::future::join_all(commands.iter().zip(&allowed).map(
        |((command, key), allowed)| async move {
            match allowed {
                Ok(()) => Some(submit(app_ref, command.clone(), key.clone(), Alone::No).await),
                Err(_) => None,
            }
        },
    ))
    .await;
    let results: Vec<Value> = commands
        .iter()
        .zip(answers)
        .zip(allowed)
        .map(
            |(((command, _), answer), allowed)| match (allowed, answer) {
                (Err(refused), _) => refused.body(),
                (Ok(()), None) => ApiError::new(500, "internal", "unanswered").body(),
                (Ok(()), Some(answer)) => match answer_of(&app, command, answer) {
                    Ok((_, value)) => value,
                    Err(error) => ApiError::from(error).body(),
                },
            },
        )
        .collect();
    Json(json!({ "results": results })).into_response()
}

/// A request body as JSON: 413 when oversized, 400 naming the problem when not JSON.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    body.map_err(ApiError::from).and_then(|body| {
        serde_json::from_slice::<Value>(&body)
            .map_err(|error| ApiError::malformed(format!("not JSON: {error}")))
    })
}

pub(super) async fn generic_query(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match json_body(body) {
        Ok(value) => answer_query(&app, value).await,
        Err(error) => error.into_response(),
    }
}

/// `POST /v1/staffing/team`: the body is the team query's fields (`{"tasks": [...]}`).
pub(super) async fn team(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match json_body(body) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("query".to_owned(), json!("team"));
            answer_query(&app, Value::Object(fields)).await
        }
        Ok(_) => {
            ApiError::malformed("the body must be an object: {\"tasks\": [...]}").into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// Answers a query given as a JSON object, with an optional `as_of` (`head`, a seq or a time):
/// live state now, or the state rebuilt as of then (off the runtime's threads).
pub(super) async fn answer_query(app: &App, mut value: Value) -> Response {
    let as_of = match value
        .as_object_mut()
        .and_then(|object| object.remove("as_of"))
    {
        None => None,
        Some(Value::String(text)) => match text.parse::<fleetlog_projections::AsOf>() {
            Ok(as_of) => Some(as_of),
            Err(error) => return ApiError::malformed(error.to_string()).into_response(),
        },
        Some(Value::Number(seq)) => seq.as_u64().map(fleetlog_projections::AsOf::Seq),
        Some(other) => {
            return ApiError::malformed(format!("as_of {other} is not head, a seq or a time"))
                .into_response();
        }
    };
    let query: Query = match serde_json::from_value(value) {
        Ok(query) => query,
        Err(error) => {
            return ApiError::malformed(format!("not a valid query: {error}")).into_response();
        }
    };
    let coordinator = app.coordinator.clone();
    let answered = tokio::task::spawn_blocking(move || {
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        wire::answer_at(&coordinator, &query, as_of)
    })
    .await;
    match answered {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(crate::Error::Query(error))) => ApiError::from(error).into_response(),
        Ok(Err(crate::Error::Projections(
            error @ fleetlog_projections::Error::BeyondHead { .. },
        ))) => ApiError::new(400, "invalid", error.to_string()).into_response(),
        Ok(Err(error)) => ApiError::new(500, "internal", error.to_string()).into_response(),
        Err(error) => ApiError::new(500, "internal", error.to_string()).into_response(),
    }
}
