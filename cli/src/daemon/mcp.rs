//! `POST /mcp`: the Model Context Protocol over Streamable HTTP. Each request carries one
//! JSON-RPC message and is answered with JSON (a notification or a client's response: 202 with
//! no body). The session acts as the agent named in the `Fleetlog-Agent` header, with that
//! agent's credential as for any command; tools run on this daemon's coordinator directly.
//! There is no server-initiated stream (`GET /mcp` answers 405), as the spec allows.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::routes::{execute, presented};
use super::*;
use crate::wire::{self, Query};

/// The header naming the agent an MCP session over HTTP acts as.
pub(super) const AGENT_HEADER: &str = "fleetlog-agent";

/// Tools run from a blocking thread: each command is submitted to the writer and awaited as the
/// command routes do, with the session's credential.
struct DaemonFleet {
    app: Shared,
    credential: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl crate::mcp::Fleet for DaemonFleet {
    fn command(&self, command: &fleetlog_projections::Command) -> Result<Value, String> {
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
        wire::answer_at(&self.app.coordinator, query, None).map_err(|error| error.to_string())
    }
}

pub(super) async fn mcp(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let agent = match headers.get(AGENT_HEADER).map(|value| value.to_str()) {
        Some(Ok(agent)) if !agent.trim().is_empty() => agent.trim().to_owned(),
        _ => {
            return ApiError::new(
                400,
                "malformed",
                "an MCP session over HTTP acts as one agent: name it in the Fleetlog-Agent header (and send its credential in Fleetlog-Credential)",
            )
            .into_response();
        }
    };
    let credential = match presented(&headers) {
        Ok(credential) => credential,
        Err(error) => return error.into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(error) => {
            let failure = crate::mcp::parse_failure(&format!("not JSON: {error}"));
            return (StatusCode::BAD_REQUEST, axum::Json(failure)).into_response();
        }
    };
    if !message.is_object() {
        // JSON-RPC batches were removed from MCP (2025-06-18); anything else is no message.
        let failure = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
            "message": "send one JSON-RPC message (an object) per request; batches are not supported"}});
        return (StatusCode::BAD_REQUEST, axum::Json(failure)).into_response();
    }
    if message.get("id").is_none() || message.get("method").is_none() {
        // A notification, or the client's answer to a request: nothing to say back.
        return StatusCode::ACCEPTED.into_response();
    }
    let fleet = DaemonFleet {
        app,
        credential,
        runtime: tokio::runtime::Handle::current(),
    };
    let answered = tokio::task::spawn_blocking(move || {
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        crate::mcp::answer(&fleet, &agent, &message)
    })
    .await;
    match answered {
        Ok(Some(answer)) => axum::Json(answer).into_response(),
        Ok(None) => StatusCode::ACCEPTED.into_response(),
        Err(error) => ApiError::new(500, "internal", error.to_string()).into_response(),
    }
}
