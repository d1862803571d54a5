//! One error shape for every route: `{"error": code, "message": text, "details": {...}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetlog_projections::CommandError;
use serde_json::{Value, json};

use crate::wire::{self};

/// An error response: `{"error": code, "message": text}` with a fitting status.
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) details: Value,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    pub(super) fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "malformed", message)
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
    }
}

impl From<wire::QueryError> for ApiError {
    fn from(error: wire::QueryError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
    }
}

impl From<fleetlog_ledger::Error> for ApiError {
    fn from(error: fleetlog_ledger::Error) -> Self {
        ApiError::new(500, "ledger", error.to_string())
    }
}

impl ApiError {
    pub(super) fn body(&self) -> Value {
        json!({ "error": self.code, "message": self.message, "details": self.details })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
