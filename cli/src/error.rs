//! The crate's one error type (the binary wraps it in `anyhow` at its edge).

/// What can go wrong serving, calling or configuring fleetlog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Ledger(#[from] fleetlog_ledger::Error),
    #[error(transparent)]
    Projections(#[from] fleetlog_projections::Error),
    #[error("{0}")]
    Config(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A refusal from the embedded state machine.
    #[error(transparent)]
    Command(#[from] fleetlog_projections::CommandError),
    #[error(transparent)]
    Query(#[from] crate::wire::QueryError),
    #[error("JSON that does not fit: {0}")]
    Json(#[from] serde_json::Error),
    #[error("talking to the daemon failed: {0}")]
    Transport(String),
    /// Refused by the identity check (embedded: the same check the daemon runs).
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

impl Error {
    /// The stable code of a refusal, whichever side refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::Command(error) => Some(error.code()),
            Error::Query(error) => Some(error.code()),
            Error::Identity(error) => Some(error.code()),
            _ => None,
        }
    }

    /// "Not found" or "timed out": what the CLI reports with exit code 3. An unknown *acting*
    /// agent is an error (exit 1), not an empty answer.
    pub fn is_not_found_or_timeout(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "not_found"
                    | "timed_out"
                    | "unknown_task"
                    | "unknown_approval"
                    | "unknown_thread"
                    | "unknown_workflow"
            )
        ) || matches!(self, Error::Ledger(fleetlog_ledger::Error::NotFound { .. }))
    }
}
