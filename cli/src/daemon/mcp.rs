//! `/mcp`: the Model Context Protocol over Streamable HTTP, served by the official SDK (`rmcp`)
//! without sessions: each POST carries one JSON-RPC message and is answered on its own (a
//! notification or a client's response: 202). The caller acts as the agent named in the
//! `Fleetlog-Agent` header, with that agent's credential as for any command; tools run on this
//! daemon's coordinator directly. There is no server-initiated stream (`GET /mcp` answers 405),
//! as the spec allows.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;

use super::routes::{execute, presented};
use super::*;
use crate::mcp::FleetServer;
use crate::wire::{self, Query};

/// The header naming the agent an MCP session over HTTP acts as.
pub(super) const AGENT_HEADER: &str = "fleetlog-agent";

/// Tools run on a blocking thread: each command is submitted to the writer and awaited as the
/// command routes do, with the caller's credential.
struct DaemonFleet {
    app: Shared,
    credential: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl crate::mcp::Fleet for DaemonFleet {
    fn command(&self, command: &fleetlog_projections::Command) -> Result<Value, String> {
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        let answered = self.runtime.block_on(execute(
            &self.app,
            self.credential.as_deref(),
            command.clone(),
            None,
        ));
        answered
            .map(|(_, value)| value)
            .map_err(|error| format!("{}: {}", error.code, error.message))
    }

    fn query(&self, query: &Query) -> Result<Value, String> {
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        wire::answer_at(&self.app.coordinator, query, None).map_err(|error| error.to_string())
    }
}

/// The caller a request names: its agent (required) and credential.
fn caller(headers: &HeaderMap) -> Result<(String, Option<String>), ApiError> {
    let agent = match headers.get(AGENT_HEADER).map(|value| value.to_str()) {
        Some(Ok(agent)) if !agent.trim().is_empty() => agent.trim().to_owned(),
        _ => {
            return Err(ApiError::new(
                400,
                "malformed",
                "an MCP session over HTTP acts as one agent: name it in the Fleetlog-Agent header (and send its credential in Fleetlog-Credential)",
            ));
        }
    };
    Ok((agent, presented(headers)?))
}

pub(super) async fn mcp(
    State(app): State<Shared>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (agent, credential) = match caller(&parts.headers) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    if body.trim_ascii_start().starts_with(b"[") {
        // JSON-RPC batches were removed from MCP (2025-06-18).
        let failure = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
            "message": "send one JSON-RPC message (an object) per request; batches are not supported"}});
        return (StatusCode::BAD_REQUEST, axum::Json(failure)).into_response();
    }
    let request = Request::from_parts(parts, axum::body::Body::from(body));
    let fleet = Arc::new(DaemonFleet {
        app,
        credential,
        runtime: tokio::runtime::Handle::current(),
    });
    // Stateless: a server per request, acting as the agent this request names. The Host and
    // Origin were checked by the daemon's guard already, for every route alike.
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(Vec::<String>::new())
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(BODY_BYTES_MAX);
    let service = StreamableHttpService::new(
        move || Ok(FleetServer::new(Arc::clone(&fleet), agent.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    service.handle(request).await.into_response()
}
