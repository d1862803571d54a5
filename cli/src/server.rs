//! `fleetlog serve`: one process owns the ledger and serves agents over HTTP/1.1 + JSON on
//! loopback TCP and on a Unix socket beside the database.
//!
//! Invariants:
//! - every write is a state-machine command answered after its commit; long-polls are parked
//!   inside the machine and answered by the event that satisfies them, never by polling.
//! - malformed or oversized bodies are refused before anything reaches the ledger.
//! - everything is bounded: body size, open connections, SSE subscribers, subscriber lag, and
//!   waiters per key (in the machine).
//! - TCP beyond loopback needs a token, compared in constant time; the Unix socket is 0600.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query as UrlQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetlog_ledger::{Next as TailNext, Record, Timestamp};
use fleetlog_projections::{Command, CommandError, Coordinator, CoordinatorOptions, Outcome};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::api::{self, Query};
use crate::error::Error;
use crate::listen::ConnectionStats;

/// Largest request body.
pub const BODY_BYTES_MAX: usize = 1024 * 1024 + 64 * 1024;
pub use crate::listen::{CONNECTIONS_MAX, HEADER_READ_TIMEOUT, SHUTDOWN_GRACE};
/// Most SSE subscribers at once.
pub const SSE_SUBSCRIBERS_MAX: usize = 256;
/// Records a live subscriber may fall behind the head before it is dropped.
pub const SSE_LAG_RECORDS_MAX: usize = 4096;
/// Bytes of events read for one SSE subscriber but not yet written to its connection.
pub const SSE_UNSENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long an SSE subscriber may take nothing while events wait for it before it is dropped.
pub const SSE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most records one `GET /v1/events` returns.
pub const EVENTS_PAGE_MAX: u64 = 10_000;
/// Most bytes of JSON one `GET /v1/events` page holds (at least one record is always sent).
pub const EVENTS_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most commands in one `POST /v1/batch`.
pub const BATCH_COMMANDS_MAX: usize = 1_000;

/// How to run the daemon.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub db: PathBuf,
    pub listen: SocketAddr,
    pub socket: PathBuf,
    /// Required for TCP requests when set; must be set to listen beyond loopback.
    pub token: Option<String>,
    /// How long in-flight requests get to finish after the stop signal.
    pub shutdown_grace: std::time::Duration,
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Metrics {
    requests: AtomicU64,
    tcp: Arc<ConnectionStats>,
    unix: Arc<ConnectionStats>,
    connections_max: AtomicU64,
    sse_dropped_total: AtomicU64,
}

struct App {
    coordinator: Coordinator,
    token: Option<String>,
    /// The committed head's seq, published by the fan-out thread after each commit.
    live: watch::Receiver<u64>,
    shutdown_grace: std::time::Duration,
    sse_permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

type Shared = Arc<App>;

/// An error response: `{"error": code, "message": text}` with a fitting status.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "malformed", message)
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
    }
}

impl From<api::QueryError> for ApiError {
    fn from(error: api::QueryError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
    }
}

impl From<fleetlog_ledger::Error> for ApiError {
    fn from(error: fleetlog_ledger::Error) -> Self {
        ApiError::new(500, "ledger", error.to_string())
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({ "error": self.code, "message": self.message, "details": self.details })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Runs the daemon until `stop` resolves, then stops accepting, lets the batch in flight
/// finish, answers parked waits with `closing`, and closes the ledger.
pub async fn serve(
    config: ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(Error::Config(format!(
            "listening on {} (beyond loopback) requires --token",
            config.listen
        )));
    }
    let coordinator = Coordinator::open(&config.db, CoordinatorOptions::default())?;
    let (live_tx, live) = watch::channel(coordinator.ledger().head()?.seq);
    let fanout = spawn_fanout(&coordinator, live_tx)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let app = Arc::new(App {
        coordinator,
        token: config.token.clone(),
        live,
        shutdown_grace: config.shutdown_grace,
        sse_permits: Arc::new(Semaphore::new(SSE_SUBSCRIBERS_MAX)),
        metrics: Arc::clone(&metrics),
        shutdown,
    });

    let unix = bind_socket(&config.socket)?;
    let tcp = tokio::net::TcpListener::bind(config.listen).await?;
    let connections_max = crate::listen::connection_bound(2);
    metrics
        .connections_max
        .store(connections_max as u64, Ordering::Relaxed);
    let limits = || crate::listen::Limits {
        connections_max,
        header_read_timeout: HEADER_READ_TIMEOUT,
        shutdown_grace: config.shutdown_grace,
    };
    let routes = router(Arc::clone(&app));
    let tcp_routes = match &config.token {
        Some(_) => routes.clone().layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        )),
        None => routes.clone(),
    };
    eprintln!(
        "fleetlog serving {} on http://{} and unix:{}",
        config.db.display(),
        tcp.local_addr()?,
        config.socket.display()
    );

    let watching = shutdown_tx.subscribe();
    tokio::spawn(async move {
        stop.await;
        let _ = shutdown_tx.send(true);
    });
    let tcp_server = crate::listen::serve(
        tcp,
        tcp_routes,
        limits(),
        Arc::clone(&metrics.tcp),
        watching.clone(),
    );
    let unix_server = crate::listen::serve(
        unix,
        routes,
        limits(),
        Arc::clone(&metrics.unix),
        watching.clone(),
    );
    tokio::join!(tcp_server, unix_server);
    let _ = std::fs::remove_file(&config.socket);
    // Dropping the last handle stops the writer after its batch in flight and closes the file
    // once the fan-out thread, woken by the close, has dropped its reader.
    drop(app);
    tokio::task::spawn_blocking(move || fanout.join())
        .await
        .map_err(|error| Error::Config(format!("the fan-out thread failed: {error}")))?
        .map_err(|_| Error::Config("the fan-out thread panicked".to_owned()))?;
    Ok(())
}

/// Binds the Unix socket at `path` with mode 0600. A socket left by a crashed daemon (nobody
/// answers on it) is replaced; a live one is an error.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::Config(format!(
                    "another daemon is already listening on {}; stop it first",
                    path.display()
                )));
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    // Bind under a temporary name and rename into place once private, so nobody can connect
    // while the socket still has the default permissions.
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    Ok(listener)
}

/// Follows the ledger's tail on a thread and publishes the committed head's seq to SSE
/// streams, which read the records themselves: the ledger is the buffer, so no record is held
/// in memory for a slow subscriber. The thread ends when the ledger closes; joining it
/// guarantees its reader let go of the file.
fn spawn_fanout(
    coordinator: &Coordinator,
    live: watch::Sender<u64>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let head = coordinator.ledger().head()?.seq;
    let mut subscription = coordinator.ledger().subscribe(head + 1);
    let thread = std::thread::Builder::new()
        .name("fleetlog-fanout".to_owned())
        .spawn(move || {
            while let Ok(TailNext::Record(record)) = subscription.next(None) {
                live.send_replace(record.seq);
            }
        })?;
    Ok(thread)
}

async fn require_token(State(app): State<Shared>, request: Request, next: Next) -> Response {
    use subtle::ConstantTimeEq;
    let expected = app.token.as_deref().unwrap_or_default().as_bytes();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    match bool::from(given.ct_eq(expected)) {
        true => next.run(request).await,
        false => ApiError::new(
            401,
            "unauthorized",
            "missing or wrong token: send `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// A command route: the body's JSON object, plus the route's command name and path field.
fn command_route(name: &'static str) -> axum::routing::MethodRouter<Shared> {
    post(
        move |State(app): State<Shared>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            run_command(&app, &headers, body, name, None).await
        },
    )
}

/// A command route whose URL names its subject: `field` is taken from the path.
fn command_route_with(
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

async fn run_command(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    name: &'static str,
    from_path: Option<(&'static str, Value)>,
) -> Response {
    match command(app, headers, body, name, from_path).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The `Idempotency-Key` header, if sent.
fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|key| Some(key.to_owned()))
            .map_err(|_| ApiError::malformed("the Idempotency-Key header must be visible ASCII")),
    }
}

/// Takes a per-command `idempotency_key` field out of a command object.
fn take_key(object: &mut serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match object.remove("idempotency_key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => Ok(Some(key)),
        Some(other) => Err(ApiError::malformed(format!(
            "idempotency_key must be a string, not {other}"
        ))),
    }
}

async fn command(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    name: &'static str,
    from_path: Option<(&'static str, Value)>,
) -> Result<Value, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        match status == StatusCode::PAYLOAD_TOO_LARGE {
            true => ApiError::new(
                413,
                "too_large",
                format!("the request body is over {BODY_BYTES_MAX} bytes"),
            ),
            false => ApiError::malformed(rejection.body_text()),
        }
    })?;
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
    execute(app, command, key).await
}

/// Resolves once the daemon is shutting down.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Submits `command` and awaits its answer without blocking a runtime thread; a shutdown
/// answers `closing`. If this future is dropped first (the client went away), the guard it
/// holds withdraws the command's wait, so nothing is granted, claimed or consumed for nobody.
async fn submit(app: &App, command: Command, key: Option<String>) -> Result<Outcome, CommandError> {
    let (sender, receiver) = oneshot::channel();
    let mut caller = app
        .coordinator
        .submit_watched(command, key, move |answer| {
            let _ = sender.send(answer);
        })?;
    let answer = tokio::select! {
        answer = receiver => answer.unwrap_or(Err(CommandError::Closing)),
        () = stopped(app.shutdown.clone()) => Err(CommandError::Closing),
    };
    caller.answered();
    answer
}

async fn execute(app: &App, command: Command, key: Option<String>) -> Result<Value, ApiError> {
    let kind = command.name();
    outcome_json(kind, submit(app, command, key).await).map_err(ApiError::from)
}

/// A command's answer on the wire. A wait that timed out is an answer, not an error: 200 with
/// the empty result and `"timed_out": true`, so HTTP stacks do not retry it.
fn outcome_json(kind: &str, answer: Result<Outcome, CommandError>) -> Result<Value, CommandError> {
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
const NUMERIC_PARAMS: &[&str] = &["threshold_ms", "token", "top", "days"];
const FLOAT_PARAMS: &[&str] = &["threshold_points", "min_confidence"];
const BOOLEAN_PARAMS: &[&str] = &["all", "pending"];

fn query_route(
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
                    (_, true) => json!(matches!(text.as_str(), "true" | "1" | "yes")),
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

fn router(app: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/health/ready", get(health))
        .route("/v1/health/live", get(health_live))
        .route("/v1/head", get(head))
        .route("/metrics", get(metrics))
        .route("/v1/commands", post(generic_command))
        .route("/v1/queries", post(generic_query))
        .route("/v1/batch", post(batch))
        .route(
            "/v1/agents",
            command_route("register").merge(query_route("agents", None)),
        )
        .route("/v1/agents/stale", query_route("stale", None))
        .route("/v1/agents/hung", query_route("hung", None))
        .route(
            "/v1/agents/{agent}",
            query_route("agent", Some(("id", false))),
        )
        .route(
            "/v1/agents/{agent}/deregister",
            command_route_with("deregister", "agent", false),
        )
        .route("/v1/heartbeats", command_route("heartbeat"))
        .route(
            "/v1/signals",
            command_route("send_signal").merge(query_route("inbox", None)),
        )
        .route("/v1/signals/receive", command_route("receive_signal"))
        .route("/v1/signals/ack", command_route("ack_signal"))
        .route(
            "/v1/locks",
            command_route("acquire_lock").merge(query_route("locks", None)),
        )
        .route("/v1/locks/check", query_route("lock_check", None))
        .route("/v1/locks/renew", command_route("renew_lock"))
        .route("/v1/locks/release", command_route("release_lock"))
        .route(
            "/v1/tasks",
            command_route("enqueue").merge(query_route("tasks", None)),
        )
        .route("/v1/tasks/stats", query_route("queue_stats", None))
        .route("/v1/tasks/claim", command_route("claim"))
        .route("/v1/tasks/{task}", query_route("task", Some(("id", true))))
        .route(
            "/v1/tasks/{task}/renew",
            command_route_with("renew_lease", "task", true),
        )
        .route(
            "/v1/tasks/{task}/complete",
            command_route_with("complete", "task", true),
        )
        .route(
            "/v1/tasks/{task}/fail",
            command_route_with("fail", "task", true),
        )
        .route(
            "/v1/tasks/{task}/cancel",
            command_route_with("cancel", "task", true),
        )
        .route(
            "/v1/approvals",
            command_route("request_approval").merge(query_route("approvals", None)),
        )
        .route(
            "/v1/approvals/{approval}",
            query_route("approval", Some(("id", true))),
        )
        .route(
            "/v1/approvals/{approval}/decision",
            command_route_with("decide", "approval", true),
        )
        .route(
            "/v1/approvals/{approval}/wait",
            command_route_with("await_approval", "approval", true),
        )
        .route(
            "/v1/threads",
            command_route("post").merge(query_route("threads", None)),
        )
        .route(
            "/v1/threads/{thread}",
            query_route("thread", Some(("id", true))),
        )
        .route(
            "/v1/threads/{thread}/replies",
            command_route_with("reply", "thread", true),
        )
        .route(
            "/v1/decisions",
            command_route("log_decision").merge(query_route("decisions", None)),
        )
        .route(
            "/v1/workflows",
            command_route("start_workflow").merge(query_route("workflows", None)),
        )
        .route(
            "/v1/workflows/{workflow}",
            query_route("workflow", Some(("id", false))),
        )
        .route(
            "/v1/workflows/{workflow}/stages",
            command_route_with("start_stage", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/stages/complete",
            command_route_with("complete_stage", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/handoffs",
            command_route_with("handoff", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/checkpoints",
            command_route_with("checkpoint", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/complete",
            command_route_with("complete_workflow", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/cancel",
            command_route_with("cancel_workflow", "workflow_id", false),
        )
        .route(
            "/v1/workflows/{workflow}/budget",
            command_route_with("set_budget", "workflow_id", false),
        )
        .route("/v1/status", query_route("status", None))
        .route(
            "/v1/analytics/workflows",
            query_route("workflow_stats", None),
        )
        .route("/v1/analytics/overhead", query_route("overhead", None))
        .route("/v1/analytics/trends", query_route("trends", None))
        .route(
            "/v1/analytics/trends/{agent}",
            query_route("trends", Some(("agent", false))),
        )
        .route("/v1/analytics/best-agent", query_route("best_agent", None))
        .route("/v1/analytics/costs", query_route("costs", None))
        .route(
            "/v1/events",
            get(events).post(
                |State(app): State<Shared>,
                 headers: HeaderMap,
                 body: Result<Bytes, BytesRejection>| async move {
                    run_command(&app, &headers, body, "custom", None).await
                },
            ),
        )
        .route("/v1/events/stream", get(stream))
        .fallback(|| async {
            ApiError::new(404, "not_found", "no such route; see docs/api.md").into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_request,
        ))
        .with_state(app)
}

async fn count_request(State(app): State<Shared>, request: Request, next: Next) -> Response {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    next.run(request).await
}

async fn generic_command(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = body
        .map_err(|rejection| ApiError::malformed(rejection.body_text()))
        .and_then(|body| {
            serde_json::from_slice::<Value>(&body).map_err(|error| {
                ApiError::malformed(format!("the body is not valid JSON: {error}"))
            })
        })
        .and_then(|value| keyed_command(value, header_key(&headers)?));
    match parsed {
        Ok((command, key)) => match execute(&app, command, key).await {
            Ok(answer) => Json(answer).into_response(),
            Err(error) => error.into_response(),
        },
        Err(error) => error.into_response(),
    }
}

/// A command object with an optional `idempotency_key` field (else `fallback`).
fn keyed_command(
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
async fn batch(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        commands: Vec<Value>,
    }
    let parsed = body
        .map_err(|rejection| ApiError::malformed(rejection.body_text()))
        .and_then(|body| {
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
    // Submitted together (so they usually share a commit), answered in order.
    let kinds: Vec<&'static str> = commands.iter().map(|(command, _)| command.name()).collect();
    let answers = futures_util::future::join_all(
        commands
            .into_iter()
            .map(|(command, key)| submit(&app, command, key)),
    )
    .await;
    let results: Vec<Value> = kinds
        .into_iter()
        .zip(answers)
        .map(|(kind, answer)| match outcome_json(kind, answer) {
            Ok(value) => value,
            Err(error) => ApiError::from(error).body(),
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn generic_query(State(app): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let parsed = body
        .map_err(|rejection| ApiError::malformed(rejection.body_text()))
        .and_then(|body| {
            serde_json::from_slice::<Value>(&body)
                .map_err(|error| ApiError::malformed(format!("not JSON: {error}")))
        });
    match parsed {
        Ok(value) => answer_query(&app, value).await,
        Err(error) => error.into_response(),
    }
}

/// Answers a query given as a JSON object, with an optional `as_of` (`head`, a seq or a time):
/// live state now, or the state rebuilt as of then (off the runtime's threads).
async fn answer_query(app: &App, mut value: Value) -> Response {
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
        crate::query_threads::yield_cpu_to_the_writer();
        api::answer_at(&coordinator, &query, as_of)
    })
    .await;
    match answered {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(crate::Error::Query(error))) => ApiError::from(error).into_response(),
        Ok(Err(error)) => ApiError::new(500, "internal", error.to_string()).into_response(),
        Err(error) => ApiError::new(500, "internal", error.to_string()).into_response(),
    }
}

/// Every bound the daemon enforces, by name: what `/metrics` exports as `fleetlog_limit`.
fn limits(app: &App) -> Vec<(&'static str, u64)> {
    vec![
        ("body_bytes_max", BODY_BYTES_MAX as u64),
        (
            "connections_per_listener_max",
            app.metrics.connections_max.load(Ordering::Relaxed),
        ),
        (
            "header_read_timeout_ms",
            HEADER_READ_TIMEOUT.as_millis() as u64,
        ),
        ("shutdown_grace_ms", app.shutdown_grace.as_millis() as u64),
        ("sse_subscribers_max", SSE_SUBSCRIBERS_MAX as u64),
        ("sse_lag_records_max", SSE_LAG_RECORDS_MAX as u64),
        ("sse_unsent_bytes_max", SSE_UNSENT_BYTES_MAX as u64),
        ("sse_stall_timeout_ms", SSE_STALL_TIMEOUT.as_millis() as u64),
        ("events_page_records_max", EVENTS_PAGE_MAX),
        ("events_page_bytes_max", EVENTS_PAGE_BYTES_MAX as u64),
        ("batch_commands_max", BATCH_COMMANDS_MAX as u64),
        (
            "waiters_per_key_max",
            fleetlog_projections::WAITERS_PER_KEY_MAX as u64,
        ),
        ("inbox_signals_max", fleetlog_projections::INBOX_SIGNALS_MAX),
        (
            "query_thread_nice",
            crate::query_threads::QUERY_THREAD_NICE as u64,
        ),
        (
            "store_cache_bytes",
            fleetlog_ledger::limits::STORE_CACHE_BYTES as u64,
        ),
        (
            "published_backlog_records_max",
            fleetlog_projections::BACKLOG_RECORDS_MAX as u64,
        ),
    ]
}

/// Liveness: the process answers. Always 200 while it serves.
async fn health_live() -> Json<Value> {
    Json(json!({ "status": "ok", "live": true }))
}

/// Readiness (also `/v1/health`): 200 `ok` while writes are accepted, 503 `degraded` with the
/// reason while they are refused (a failed commit poisoned the writer: disk full, I/O error).
async fn health(State(app): State<Shared>) -> Result<Response, ApiError> {
    let ledger = app.coordinator.ledger();
    let head = ledger.head()?;
    let refusal = ledger.write_refusal();
    let status = match refusal {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = Json(json!({
        "status": if refusal.is_some() { "degraded" } else { "ok" },
        "live": true,
        "ready": refusal.is_none(),
        "reason": refusal.map(|cause| format!("writes are refused: {cause}; restart the daemon once the cause (disk space, permissions, the disk itself) is fixed")),
        "db": ledger.path(),
        "ledger_id": ledger.ledger_id(),
        "head": head.checkpoint().to_string(),
        "seq": head.seq,
        "waiters": app.coordinator.waiting(),
        "writer": {
            "events": ledger.writer_stats().events,
            "commits": ledger.writer_stats().commits,
        },
    }));
    Ok((status, body).into_response())
}

async fn head(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let head = app.coordinator.ledger().head()?;
    Ok(Json(
        json!({ "seq": head.seq, "hash": head.hash, "ts": head.ts, "checkpoint": head.checkpoint().to_string() }),
    ))
}

async fn metrics(State(app): State<Shared>) -> Response {
    let writer = app.coordinator.ledger().writer_stats();
    let now = Timestamp::now();
    let state = app.coordinator.state();
    let mut text = String::new();
    let metric =
        |text: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                text.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
    metric(
        &mut text,
        "fleetlog_events_appended_total",
        "counter",
        "Events appended since the daemon started.",
        vec![(String::new(), writer.events as f64)],
    );
    metric(
        &mut text,
        "fleetlog_commits_total",
        "counter",
        "Durable commits since the daemon started.",
        vec![(String::new(), writer.commits as f64)],
    );
    metric(
        &mut text,
        "fleetlog_batch_events_mean",
        "gauge",
        "Mean events per commit (group commit).",
        vec![(String::new(), writer.mean_batch_events())],
    );
    histogram(
        &mut text,
        "fleetlog_commit_latency_seconds",
        "Time inside durable redb commits.",
        &fleetlog_ledger::COMMIT_MICROS_BUCKETS.map(|micros| micros as f64 / 1e6),
        &writer.commit_micros_buckets,
        writer.commit_micros_total as f64 / 1e6,
    );
    histogram(
        &mut text,
        "fleetlog_batch_events",
        "Events per commit (group commit).",
        &fleetlog_ledger::BATCH_EVENTS_BUCKETS.map(|events| events as f64),
        &writer.batch_events_buckets,
        writer.events as f64,
    );
    let stats = state.queue.stats(now);
    metric(
        &mut text,
        "fleetlog_queue_tasks",
        "gauge",
        "Tasks by state.",
        stats
            .by_state
            .iter()
            .map(|(state, count)| (format!("{{state=\"{state}\"}}"), *count as f64))
            .collect(),
    );
    metric(
        &mut text,
        "fleetlog_agents_active",
        "gauge",
        "Agents alive now.",
        vec![(String::new(), state.agents.active(now).len() as f64)],
    );
    metric(
        &mut text,
        "fleetlog_waiters",
        "gauge",
        "Requests parked in waits.",
        vec![(String::new(), app.coordinator.waiting() as f64)],
    );
    metric(
        &mut text,
        "fleetlog_locks_held",
        "gauge",
        "Locks held now.",
        vec![(String::new(), state.locks.list(now).len() as f64)],
    );
    let listeners = [("tcp", &app.metrics.tcp), ("unix", &app.metrics.unix)];
    let per_listener = |read: fn(&ConnectionStats) -> u64| {
        listeners
            .iter()
            .map(|(name, stats)| (format!("{{listener=\"{name}\"}}"), read(stats) as f64))
            .collect::<Vec<_>>()
    };
    metric(
        &mut text,
        "fleetlog_connections_open",
        "gauge",
        "Open client connections.",
        per_listener(|stats| stats.open.load(Ordering::Relaxed)),
    );
    metric(
        &mut text,
        "fleetlog_connections_refused_total",
        "counter",
        "Connections answered 503 because the listener was full of busy connections.",
        per_listener(|stats| stats.refused_total.load(Ordering::Relaxed)),
    );
    metric(
        &mut text,
        "fleetlog_connections_evicted_total",
        "counter",
        "Idle connections closed to make room for a new one at the bound.",
        per_listener(|stats| stats.evicted_total.load(Ordering::Relaxed)),
    );
    metric(
        &mut text,
        "fleetlog_sse_dropped_total",
        "counter",
        "SSE subscribers dropped for falling behind (lag or unsent bytes).",
        vec![(
            String::new(),
            app.metrics.sse_dropped_total.load(Ordering::Relaxed) as f64,
        )],
    );
    metric(
        &mut text,
        "fleetlog_limit",
        "gauge",
        "Every bound the daemon enforces, by name (units in the name); see docs/operations.md.",
        limits(&app)
            .into_iter()
            .map(|(name, value)| (format!("{{name=\"{name}\"}}"), value as f64))
            .collect(),
    );
    metric(
        &mut text,
        "fleetlog_http_requests_total",
        "counter",
        "HTTP requests served.",
        vec![(
            String::new(),
            app.metrics.requests.load(Ordering::Relaxed) as f64,
        )],
    );
    drop(state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Appends a Prometheus histogram from per-bucket (non-cumulative) counts.
fn histogram(text: &mut String, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
    let mut cumulative = 0;
    for (index, count) in counts.iter().enumerate() {
        cumulative += count;
        let bound = bounds
            .get(index)
            .map_or("+Inf".to_owned(), |bound| bound.to_string());
        text.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
    }
    text.push_str(&format!("{name}_sum {sum}\n{name}_count {cumulative}\n"));
}

/// Which records a reader wants.
#[derive(Debug, Default, serde::Deserialize)]
struct EventFilter {
    from: Option<u64>,
    to: Option<u64>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<u64>,
    kind: Option<String>,
    actor: Option<String>,
}

impl EventFilter {
    fn wants(&self, record: &Record) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|kind| kind == record.event.kind())
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| *actor == record.actor)
    }
}

async fn events(
    State(app): State<Shared>,
    filter: Result<UrlQuery<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(filter) =
        filter.map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
    let reader = app.coordinator.ledger().reader().clone();
    let page = tokio::task::spawn_blocking(move || -> Result<String, fleetlog_ledger::Error> {
        crate::query_threads::yield_cpu_to_the_writer();
        let last = reader.last_seq()?;
        let mut first = filter.from.unwrap_or(1).max(1);
        let mut end = filter.to.unwrap_or(last).min(last);
        if filter.since.is_some() || filter.until.is_some() {
            let window = reader.seqs_between(
                filter.since.unwrap_or(Timestamp::MIN),
                filter.until.unwrap_or(Timestamp::MAX),
            )?;
            first = first.max(*window.start());
            end = end.min(*window.end());
        }
        let limit = filter.limit.unwrap_or(1_000).clamp(1, EVENTS_PAGE_MAX) as usize;
        // Built as text, record by record, so a page is bounded by bytes as it is read.
        let mut body = String::from("{\"events\":[");
        let (mut count, mut next) = (0usize, None);
        reader.scan(first..=end, |record| {
            if filter.wants(&record) {
                let text = serde_json::to_string(&record).unwrap_or_else(|_| "null".to_owned());
                if count > 0 && body.len() + text.len() > EVENTS_PAGE_BYTES_MAX {
                    next = Some(record.seq);
                    return Ok(ControlFlow::Break(()));
                }
                if count > 0 {
                    body.push(',');
                }
                body.push_str(&text);
                count += 1;
            }
            Ok(match count >= limit {
                true => {
                    next = (record.seq < end).then_some(record.seq + 1);
                    ControlFlow::Break(())
                }
                false => ControlFlow::Continue(()),
            })
        })?;
        let next = next.map_or("null".to_owned(), |seq| seq.to_string());
        body.push_str(&format!("],\"next\":{next}}}"));
        Ok(body)
    })
    .await
    .map_err(|error| ApiError::new(500, "internal", error.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], page).into_response())
}

/// Server-Sent Events: every record from `from` (or after `Last-Event-ID`), history then live,
/// in order, read from the ledger itself. A subscriber is dropped, with a final `lagged` event,
/// when it falls `SSE_LAG_RECORDS_MAX` behind the head or takes nothing for
/// `SSE_STALL_TIMEOUT` while events wait; at most `SSE_UNSENT_BYTES_MAX` bytes wait for it.
async fn stream(
    State(app): State<Shared>,
    headers: HeaderMap,
    filter: Result<UrlQuery<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(UrlQuery(filter)) = filter else {
        return ApiError::malformed("bad query parameters for /v1/events/stream").into_response();
    };
    let Ok(permit) = Arc::clone(&app.sse_permits).try_acquire_owned() else {
        return ApiError::new(
            503,
            "too_many_subscribers",
            format!("{SSE_SUBSCRIBERS_MAX} streams are open; try later"),
        )
        .into_response();
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .map(|last| last + 1);
    let from = resume.or(filter.from).unwrap_or(1).max(1);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Unsent>(64);
    let budget = Arc::new(Semaphore::new(SSE_UNSENT_BYTES_MAX));
    tokio::spawn(pump(Arc::clone(&app), filter, from, sender, budget, permit));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let unsent = tokio::select! {
            unsent = receiver.recv() => unsent?,
            // A comment line keeps proxies and idle timers from closing a quiet stream.
            () = tokio::time::sleep(SSE_KEEP_ALIVE) => Unsent::frame(b":\n\n".to_vec(), None),
        };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_owner(unsent)),
            receiver,
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// How long a quiet stream waits before sending a keep-alive comment.
const SSE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// One SSE event's wire bytes, holding its share of the subscriber's unsent budget until the
/// connection has written them: hyper drops the bytes only then, so the budget covers its
/// buffers too.
struct Unsent {
    wire: Vec<u8>,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Unsent {
    fn frame(wire: Vec<u8>, bytes: Option<OwnedSemaphorePermit>) -> Unsent {
        Unsent {
            wire,
            _bytes: bytes,
        }
    }

    /// `id:`, `event:` and one `data:` line per line of `data`, as the SSE format has them.
    fn event(
        id: Option<u64>,
        name: &str,
        data: &str,
        bytes: Option<OwnedSemaphorePermit>,
    ) -> Unsent {
        let mut wire = Vec::with_capacity(data.len() + 64);
        if let Some(id) = id {
            wire.extend_from_slice(format!("id: {id}\n").as_bytes());
        }
        wire.extend_from_slice(format!("event: {name}\n").as_bytes());
        for line in data.split('\n') {
            wire.extend_from_slice(b"data: ");
            wire.extend_from_slice(line.as_bytes());
            wire.push(b'\n');
        }
        wire.push(b'\n');
        Unsent::frame(wire, bytes)
    }
}

impl AsRef<[u8]> for Unsent {
    fn as_ref(&self) -> &[u8] {
        &self.wire
    }
}

/// Feeds one SSE subscriber from the ledger: what is committed after `next`, then each new
/// commit as the head moves.
async fn pump(
    app: Shared,
    filter: EventFilter,
    mut next: u64,
    sender: tokio::sync::mpsc::Sender<Unsent>,
    budget: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
) {
    const CHUNK: u64 = 256;
    // Read ahead a quarter of the unsent budget: a stuck subscriber holds at most both.
    const READ_AHEAD_BYTES: usize = SSE_UNSENT_BYTES_MAX / 4;
    let mut head = app.live.clone();
    let final_event = |name: &str, message: String| Unsent::event(None, name, &message, None);
    loop {
        let committed = *head.borrow_and_update();
        if committed >= next {
            let behind = committed + 1 - next;
            if behind > SSE_LAG_RECORDS_MAX as u64 {
                app.metrics
                    .sse_dropped_total
                    .fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "this subscriber fell {behind} records behind and was dropped; reconnect with Last-Event-ID: {}",
                    next.saturating_sub(1)
                );
                let _ = sender.try_send(final_event("lagged", message));
                return;
            }
            let reader = app.coordinator.ledger().reader().clone();
            let first = next;
            let chunk = tokio::task::spawn_blocking(move || {
                crate::query_threads::yield_cpu_to_the_writer();
                reader.range_available(first, CHUNK, READ_AHEAD_BYTES)
            })
            .await;
            let Ok(Ok(records)) = chunk else { return };
            for record in &records {
                next = record.seq + 1;
                if !filter.wants(record) {
                    continue;
                }
                let data = serde_json::to_string(record)
                    .unwrap_or_else(|error| json!({ "error": error.to_string() }).to_string());
                let bytes = (data.len() + 64).min(SSE_UNSENT_BYTES_MAX) as u32;
                let granted = tokio::select! {
                    granted = Arc::clone(&budget).acquire_many_owned(bytes) => granted.ok(),
                    () = tokio::time::sleep(SSE_STALL_TIMEOUT) => None,
                    () = stopped(app.shutdown.clone()) => return,
                };
                let Some(granted) = granted else {
                    app.metrics
                        .sse_dropped_total
                        .fetch_add(1, Ordering::Relaxed);
                    let message = format!(
                        "this subscriber took nothing for {} s and was dropped; reconnect with Last-Event-ID: {}",
                        SSE_STALL_TIMEOUT.as_secs(),
                        record.seq.saturating_sub(1)
                    );
                    let _ = sender.try_send(final_event("lagged", message));
                    return;
                };
                let unsent =
                    Unsent::event(Some(record.seq), record.event.kind(), &data, Some(granted));
                if sender.send(unsent).await.is_err() {
                    return;
                }
            }
            if !records.is_empty() {
                continue;
            }
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = stopped(app.shutdown.clone()) => {
                let _ = sender.try_send(final_event("closing", "the daemon is shutting down; reconnect with Last-Event-ID".to_owned()));
                return;
            }
        }
    }
}

/// A daemon run on a background thread of this process (for `fleetlog demo` and
/// `fleetlog bench`): serves until dropped, and returns only once the file is closed.
pub struct BackgroundDaemon {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl BackgroundDaemon {
    /// Serves `db` on an ephemeral loopback port and `<db>.sock`; returns once it answers.
    pub fn start(db: &Path) -> Result<BackgroundDaemon, Error> {
        let socket = api::socket_path(db);
        let config = ServerConfig {
            db: db.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            socket: socket.clone(),
            token: None,
            shutdown_grace: SHUTDOWN_GRACE,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(config, async {
                let _ = stopped.await;
            }))
        });
        let started = std::time::Instant::now();
        while crate::client::BlockingClient::for_db(db).is_none() {
            if thread.is_finished() || started.elapsed() > std::time::Duration::from_secs(10) {
                return match thread.join() {
                    Ok(Err(error)) => Err(error),
                    _ => Err(Error::Config("the daemon did not start".to_owned())),
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(BackgroundDaemon {
            socket,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for BackgroundDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
