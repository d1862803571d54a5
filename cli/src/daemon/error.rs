//! One error shape for every route: `{"error": code, "message": text, "details": {...}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetlog_projections::CommandError;
use serde_json::{Value, json};

use crate::wire::{self};

/// An error response: `{"error": code, "message": text, "details": {...}}` with a fitting status.
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
        let details = match serde_json::to_value(&error) {
            Ok(Value::Object(mut tagged)) => match tagged.remove("details") {
                Some(Value::Object(fields)) => Value::Object(fields),
                Some(Value::String(problem)) => json!({ "problem": problem }),
                _ => json!({}),
            },
            _ => json!({}),
        };
        ApiError {
            details,
            ..ApiError::new(status_of(&error), error.code(), error.to_string())
        }
    }
}

/// The HTTP status that fits a refused command: 400 invalid, 403 not allowed, 404 unknown id,
/// 408 timed out, 409 conflict with current state, 413 too large, 429 too many waiters or a
/// full inbox, 503 not durable or closing. Chosen here: only this crate knows HTTP.
pub fn status_of(error: &CommandError) -> u16 {
    match error {
        CommandError::Invalid { .. } | CommandError::Rejected(_) => 400,
        CommandError::NotAnApprover { .. }
        | CommandError::SelfApproval { .. }
        | CommandError::NotCapable { .. } => 403,
        CommandError::UnknownAgent { .. }
        | CommandError::UnknownTask { .. }
        | CommandError::UnknownApproval { .. }
        | CommandError::UnknownThread { .. }
        | CommandError::UnknownWorkflow { .. } => 404,
        CommandError::TimedOut { .. } => 408,
        CommandError::TooLarge(_) => 413,
        CommandError::TooManyWaiters { .. } | CommandError::InboxFull { .. } => 429,
        CommandError::NotDurable { .. } | CommandError::Closing => 503,
        CommandError::LockHeld { .. }
        | CommandError::SlotsFull { .. }
        | CommandError::OverSpendLimit { .. }
        | CommandError::AlreadyHeld { .. }
        | CommandError::NotLocked { .. }
        | CommandError::NotHolder { .. }
        | CommandError::WrongToken { .. }
        | CommandError::AlreadyCompleted { .. }
        | CommandError::TaskFinished { .. }
        | CommandError::NotYourTask { .. }
        | CommandError::NotDelivered { .. }
        | CommandError::IdempotencyConflict { .. }
        | CommandError::NotClaimed { .. }
        | CommandError::AlreadyDecided { .. }
        | CommandError::ApprovalExpired { .. }
        | CommandError::WorkflowExists { .. }
        | CommandError::WorkflowFinished { .. }
        | CommandError::OverBudget { .. }
        | CommandError::AgentExpired { .. }
        | CommandError::TaskKeyExists { .. } => 409,
    }
}

impl From<wire::QueryError> for ApiError {
    fn from(error: wire::QueryError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
    }
}

impl From<crate::identity::IdentityError> for ApiError {
    /// 401 without a credential, 403 with someone else's.
    fn from(error: crate::identity::IdentityError) -> Self {
        use crate::identity::IdentityError;
        let status = match &error {
            IdentityError::CredentialRequired { .. } => 401,
            IdentityError::WrongCredential { .. } => 403,
            IdentityError::Files { .. } => 500,
        };
        let details = match error.agent() {
            Some(agent) => json!({ "agent": agent, "header": "Fleetlog-Credential" }),
            None => json!({}),
        };
        ApiError {
            details,
            ..ApiError::new(status, error.code(), error.to_string())
        }
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
