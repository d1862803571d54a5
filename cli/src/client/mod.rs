//! The Rust client for a fleetlog daemon, over its Unix socket or loopback TCP: async
//! ([`Client`]) and blocking ([`BlockingClient`]). Commands and queries travel as the same JSON
//! the state machine and `wire::answer` use, so the client adds no vocabulary of its own.

pub mod backend;
pub mod connection;
pub mod spawn;

use fleetlog_projections::commands::Register;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use fleetlog_ledger::Record;
use fleetlog_projections::{Command, Outcome};
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use crate::error::Error;
use crate::wire::Query;
use connection::Connection;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, with the bearer token if the daemon requires one.
    Tcp {
        address: String,
        token: Option<String>,
    },
}

#[derive(Clone)]
enum Transport {
    Unix(HyperClient<hyperlocal::UnixConnector, Full<Bytes>>),
    Tcp(HyperClient<HttpConnector, Full<Bytes>>),
}

/// A pooled connection idle longer than this is not reused: the daemon closes a keep-alive
/// connection that sends no request within its `HEADER_READ_TIMEOUT` (10 s).
pub const REUSE_IDLE_MAX: Duration = Duration::from_secs(5);

/// An async client.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    transport: Transport,
    credentials: Credentials,
}

/// Where the client finds the credential each command is sent with (see [`crate::identity`]):
/// `FLEETLOG_CREDENTIAL`, else the operator's (when acting as operator), else the one a
/// registration through this client was issued, else the one stored beside the database.
#[derive(Clone, Default)]
struct Credentials {
    /// The database whose `<db>.keys/` holds stored credentials (and receives issued ones).
    db: Option<PathBuf>,
    as_operator: bool,
    issued: Arc<Mutex<HashMap<String, String>>>,
}

impl Credentials {
    fn for_agent(&self, agent: &str) -> Option<String> {
        if std::env::var(crate::identity::CREDENTIAL_ENV).is_ok() || self.as_operator {
            return crate::identity::credential_for(self.db.as_deref(), agent, self.as_operator);
        }
        let issued = self
            .issued
            .lock()
            .expect("the credentials map is never poisoned")
            .get(agent)
            .cloned();
        issued.or_else(|| crate::identity::credential_for(self.db.as_deref(), agent, false))
    }

    /// The credential header for a command acting as `agent`, if there is a credential.
    fn header(&self, agent: &str) -> Vec<(&'static str, String)> {
        self.for_agent(agent)
            .map(|credential| (crate::identity::CREDENTIAL_HEADER, credential))
            .into_iter()
            .collect()
    }

    /// One credential per batch: the first command's agent's (a batch acting as several agents
    /// needs the operator's).
    fn batch_header(&self, commands: &[Command]) -> Vec<(&'static str, String)> {
        commands
            .first()
            .map(|command| self.header(command.agent()))
            .unwrap_or_default()
    }

    /// Keeps the credential a registration was answered with.
    fn command_answered(&self, command: &Command, answer: &Value) {
        if let Command::Register(Register { agent, .. }) = command {
            self.issued(agent, answer);
        }
    }

    /// Each command's own answer from a batch's, keeping the credentials registrations issued.
    fn batch_answered(&self, commands: &[Command], answer: &Value) -> Vec<Result<Outcome, Error>> {
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        for (command, result) in commands.iter().zip(&results) {
            self.command_answered(command, result);
        }
        results
            .into_iter()
            .map(|result| match result.get("error") {
                Some(code) => Err(Error::Api {
                    status: 200,
                    code: code.as_str().unwrap_or("unknown").to_owned(),
                    message: result["message"].as_str().unwrap_or_default().to_owned(),
                }),
                None => outcome(&result),
            })
            .collect()
    }

    /// Uses `credential` when acting as `agent`, in this process.
    fn remember(&self, agent: &str, credential: &str) {
        self.issued
            .lock()
            .expect("the credentials map is never poisoned")
            .insert(agent.to_owned(), credential.to_owned());
    }

    /// Keeps a credential a registration answered with, in memory and beside the database.
    fn issued(&self, agent: &str, answer: &Value) {
        let Some(credential) = answer.get("credential").and_then(Value::as_str) else {
            return;
        };
        self.remember(agent, credential);
        if let Some(db) = &self.db
            && let Err(error) = crate::identity::store_agent_credential(db, agent, credential)
        {
            eprintln!(
                "warning: {agent:?}'s credential could not be stored in {}: {error}; it is kept in this process only",
                crate::identity::agent_file(db, agent).display()
            );
        }
    }
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        let mut builder = HyperClient::builder(TokioExecutor::new());
        // Never send on a connection the daemon may already have closed as idle: a blocking
        // client's runtime does not run between requests, so it cannot notice the close.
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(REUSE_IDLE_MAX);
        let transport = match &endpoint {
            Endpoint::Unix(_) => Transport::Unix(builder.build(hyperlocal::UnixConnector)),
            Endpoint::Tcp { .. } => Transport::Tcp(builder.build(HttpConnector::new())),
        };
        Client {
            endpoint,
            transport,
            credentials: Credentials::default(),
        }
    }

    /// Reads stored credentials from, and stores issued ones in, `<db>.keys/`.
    pub fn with_db(mut self, db: &Path) -> Self {
        self.credentials.db = Some(db.to_owned());
        self
    }

    /// Sends the operator's credential (from `<db>.keys/operator`) with every command.
    pub fn as_operator(mut self, as_operator: bool) -> Self {
        self.credentials.as_operator = as_operator;
        self
    }

    /// Uses `credential` when acting as `agent`.
    pub fn set_credential(&self, agent: &str, credential: &str) {
        self.credentials.remember(agent, credential);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn uri(&self, path: &str) -> Result<Uri, Error> {
        let uri: Result<Uri, _> = match &self.endpoint {
            Endpoint::Unix(socket) => Ok(hyperlocal::Uri::new(socket, path).into()),
            Endpoint::Tcp { address, .. } => format!("http://{address}{path}").parse(),
        };
        uri.map_err(|error| Error::Transport(format!("bad request path {path:?}: {error}")))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        let mut request = Request::builder().method(method).uri(self.uri(path)?);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Endpoint::Tcp {
            token: Some(token), ..
        } = &self.endpoint
        {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| Error::Transport(error.to_string()))?;
        let response = match &self.transport {
            Transport::Unix(client) => client.request(request).await,
            Transport::Tcp(client) => client.request(request).await,
        };
        response.map_err(|error| Error::Transport(format!("{error} ({:?})", self.endpoint)))
    }

    /// Sends a request and returns the JSON answer; an error status becomes [`Error::Api`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.request_with(method, path, body, &[]).await
    }

    async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, Error> {
        let body = body.map(|body| serde_json::to_vec(body).expect("JSON values serialise"));
        let response = self.send(method, path, body, headers).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| Error::Transport(error.to_string()))?
            .to_bytes();
        answer_value(status.as_u16(), &bytes)
    }

    /// Runs a command; returns once the daemon answered (after the commit, or when a wait ends).
    pub async fn execute(&self, command: &Command) -> Result<Outcome, Error> {
        Ok(self.execute_answer(command).await?.0)
    }

    /// As [`Client::execute`], with the daemon's whole answer (a create's object and id).
    pub async fn execute_answer(&self, command: &Command) -> Result<(Outcome, Value), Error> {
        let body = serde_json::to_value(command).expect("commands serialise");
        let headers = self.credentials.header(command.agent());
        let value = self
            .request_with(Method::POST, "/v1/commands", Some(&body), &headers)
            .await?;
        self.credentials.command_answered(command, &value);
        Ok((outcome(&value)?, value))
    }

    /// Runs several commands in one request (`POST /v1/batch`); each has its own answer.
    pub async fn execute_batch(
        &self,
        commands: &[Command],
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
        let body = serde_json::json!({ "commands": commands });
        let headers = self.credentials.batch_header(commands);
        let value = self
            .request_with(Method::POST, "/v1/batch", Some(&body), &headers)
            .await?;
        Ok(self.credentials.batch_answered(commands, &value))
    }

    pub async fn query(&self, query: &Query) -> Result<Value, Error> {
        let body = query_body(query, None);
        self.request(Method::POST, "/v1/queries", Some(&body)).await
    }

    /// A query answered as of a past point: `head`, a seq, or an RFC 3339 time.
    pub async fn query_as_of(&self, query: &Query, as_of: &str) -> Result<Value, Error> {
        let body = query_body(query, Some(as_of));
        self.request(Method::POST, "/v1/queries", Some(&body)).await
    }

    pub async fn health(&self) -> Result<Value, Error> {
        self.request(Method::GET, "/v1/health", None).await
    }

    /// Follows `/v1/events/stream` from `from`, calling `on_record` for each record in order
    /// until it returns false or the stream ends. Returns the last seq seen, to resume from.
    pub async fn follow(
        &self,
        from: u64,
        mut on_record: impl FnMut(Record) -> bool,
    ) -> Result<u64, Error> {
        // Resuming is what `Last-Event-ID` is for: the daemon starts right after it.
        let resume = [("last-event-id", from.saturating_sub(1).to_string())];
        let mut response = self
            .send(Method::GET, "/v1/events/stream", None, &resume)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(Error::Api {
                status: response.status().as_u16(),
                code: "stream".to_owned(),
                message: format!("the daemon refused the stream with {}", response.status()),
            });
        }
        let mut parser = SseParser::default();
        let mut last = from.saturating_sub(1);
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|error| Error::Transport(error.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            for event in parser.push(data) {
                match event.name.as_str() {
                    "lagged" | "closing" => return Err(Error::Transport(event.data)),
                    _ => {}
                }
                let record: Record = serde_json::from_str(&event.data)
                    .map_err(|error| Error::Transport(format!("bad stream record: {error}")))?;
                last = record.seq;
                if !on_record(record) {
                    return Ok(last);
                }
            }
        }
        Ok(last)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub name: String,
    pub data: String,
}

/// Incremental SSE parser: feed it bytes as they arrive, get whole events back.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: String,
    current: SseEvent,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                if !event.data.is_empty() || !event.name.is_empty() {
                    events.push(event);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.name = value.to_owned(),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {} // comments (keep-alives) and unknown fields
            }
        }
        events
    }
}

/// A blocking client: plain HTTP/1.1 on a kept connection (see [`connection`]), no runtime.
/// Streams (`follow`) use the async client, on a runtime made when first needed.
pub struct BlockingClient {
    endpoint: Endpoint,
    credentials: Credentials,
    /// The kept connection, when no request is using it. Callers on several threads at once
    /// each take or open their own.
    idle: Mutex<Option<Connection>>,
    streaming: OnceLock<(tokio::runtime::Runtime, Client)>,
}

/// How long [`BlockingClient::for_db`] waits for a daemon's health answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl BlockingClient {
    pub fn new(endpoint: Endpoint) -> Result<Self, Error> {
        Ok(BlockingClient {
            endpoint,
            credentials: Credentials::default(),
            idle: Mutex::new(None),
            streaming: OnceLock::new(),
        })
    }

    /// The daemon that holds `db` exclusively: one still starting (verifying the chain before
    /// it listens) is waited for, up to `patience`. For a reader refused the file because a
    /// daemon holds it.
    pub fn wait_for_db(db: &Path, patience: Duration) -> Option<Self> {
        let started = std::time::Instant::now();
        loop {
            if let Some(client) = Self::for_db(db) {
                return Some(client);
            }
            if started.elapsed() > patience {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client for the daemon serving `db`, if one answers on its socket within a second.
    pub fn for_db(db: &Path) -> Option<Self> {
        let socket = crate::wire::socket_path(db);
        if !socket.exists() {
            return None;
        }
        let client = Self::new(Endpoint::Unix(socket)).ok()?.with_db(db);
        let mut connection = Connection::open(&client.endpoint).ok()?;
        connection.set_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let health = connection.exchange("GET", "/v1/health", &[], None);
        if !health.is_ok_and(|answer| answer.status == 200) {
            return None;
        }
        connection.set_timeout(None).ok()?;
        client.keep(connection);
        Some(client)
    }

    /// The kept connection if it can carry another request, else a new one.
    fn connection(&self) -> Result<Connection, Error> {
        let kept = self
            .idle
            .lock()
            .expect("the idle connection slot is never poisoned")
            .take();
        match kept {
            Some(connection) if connection.reusable() => Ok(connection),
            _ => Connection::open(&self.endpoint),
        }
    }

    fn keep(&self, connection: Connection) {
        let mut idle = self
            .idle
            .lock()
            .expect("the idle connection slot is never poisoned");
        if idle.is_none() {
            *idle = Some(connection);
        }
    }

    /// Sends a request whose body is already JSON bytes and returns the JSON answer.
    fn request_with(
        &self,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<Value, Error> {
        let mut connection = self.connection()?;
        let answer = connection.exchange(method.as_str(), path, headers, body.as_deref())?;
        self.keep(connection);
        answer_value(answer.status, &answer.body)
    }

    pub fn execute(&self, command: &Command) -> Result<Outcome, Error> {
        Ok(self.execute_answer(command)?.0)
    }

    /// See [`Client::execute_answer`].
    pub fn execute_answer(&self, command: &Command) -> Result<(Outcome, Value), Error> {
        let body = serde_json::to_vec(command).expect("commands serialise");
        let headers = self.credentials.header(command.agent());
        let value = self.request_with(&Method::POST, "/v1/commands", Some(body), &headers)?;
        self.credentials.command_answered(command, &value);
        Ok((outcome(&value)?, value))
    }

    /// Another connection to the same daemon that shares this client's credentials (what one
    /// registers, the other can use).
    pub fn fork(&self) -> Result<BlockingClient, Error> {
        let mut forked = BlockingClient::new(self.endpoint.clone())?;
        forked.credentials = self.credentials.clone();
        Ok(forked)
    }

    /// See [`Client::with_db`].
    pub fn with_db(mut self, db: &Path) -> Self {
        self.credentials.db = Some(db.to_owned());
        self
    }

    /// See [`Client::as_operator`].
    pub fn as_operator(mut self, as_operator: bool) -> Self {
        self.credentials.as_operator = as_operator;
        self
    }

    /// See [`Client::set_credential`].
    pub fn set_credential(&self, agent: &str, credential: &str) {
        self.credentials.remember(agent, credential);
    }

    /// See [`Client::execute_batch`].
    pub fn execute_batch(
        &self,
        commands: &[Command],
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
        let body = serde_json::to_vec(&serde_json::json!({ "commands": commands }))
            .expect("commands serialise");
        let headers = self.credentials.batch_header(commands);
        let value = self.request_with(&Method::POST, "/v1/batch", Some(body), &headers)?;
        Ok(self.credentials.batch_answered(commands, &value))
    }

    pub fn query(&self, query: &Query) -> Result<Value, Error> {
        let body = query_body(query, None);
        self.request(Method::POST, "/v1/queries", Some(&body))
    }

    /// See [`Client::query_as_of`].
    pub fn query_as_of(&self, query: &Query, as_of: &str) -> Result<Value, Error> {
        let body = query_body(query, Some(as_of));
        self.request(Method::POST, "/v1/queries", Some(&body))
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let body = body.map(|body| serde_json::to_vec(body).expect("JSON values serialise"));
        self.request_with(&method, path, body, &[])
    }

    /// See [`Client::follow`].
    pub fn follow(&self, from: u64, on_record: impl FnMut(Record) -> bool) -> Result<u64, Error> {
        let (runtime, client) = match self.streaming.get() {
            Some(streaming) => streaming,
            None => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let client = runtime.block_on(async { Client::new(self.endpoint.clone()) });
                self.streaming.get_or_init(|| (runtime, client))
            }
        };
        runtime.block_on(client.follow(from, on_record))
    }
}

/// The body of `POST /v1/queries`, answered now or as of `as_of`.
fn query_body(query: &Query, as_of: Option<&str>) -> Value {
    let mut body = serde_json::to_value(query).expect("queries serialise");
    if let Some(as_of) = as_of {
        body["as_of"] = Value::String(as_of.to_owned());
    }
    body
}

/// An answer's JSON; an error status becomes [`Error::Api`].
fn answer_value(status: u16, body: &[u8]) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        Error::Transport(format!(
            "the daemon answered {status} with something that is not JSON: {error}"
        ))
    })?;
    match (200..300).contains(&status) {
        true => Ok(value),
        false => Err(Error::Api {
            status,
            code: value["error"].as_str().unwrap_or("unknown").to_owned(),
            message: value["message"].as_str().unwrap_or("no message").to_owned(),
        }),
    }
}

/// A command's answer from the wire. A wait that timed out arrives as 200 with
/// `"timed_out": true`; the Rust API keeps it the typed `TimedOut` refusal callers match on.
fn outcome(value: &Value) -> Result<Outcome, Error> {
    if value.get("timed_out").and_then(Value::as_bool) == Some(true) {
        let waited_ms = value["waited_ms"].as_u64().unwrap_or(0);
        return Err(Error::Command(
            fleetlog_projections::CommandError::TimedOut { waited_ms },
        ));
    }
    <Outcome as serde::Deserialize>::deserialize(value)
        .map_err(|error| Error::Transport(format!("unexpected answer: {error}")))
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn sse_events_are_parsed_across_chunk_boundaries() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"id: 7\nevent: lock_acq").is_empty());
        let events = parser
            .push(b"uired\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: lagged\ndata: x\ndata: y\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].name, "lock_acquired");
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].name, "lagged");
        assert_eq!(events[1].data, "x\ny");
    }
}
