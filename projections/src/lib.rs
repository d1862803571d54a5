//! fleetlog-projections: everything users query, derived from the ledger by folding its events,
//! and the coordination state machine that turns commands into events.
//!
//! Invariants:
//! - a projection is a pure function of the records it was given (and, for queries, a `now`
//!   passed in): no I/O inside a fold, no wall clock, no randomness. Replaying the same records
//!   always gives the same state, so any past moment can be rebuilt exactly.
//! - records are applied in seq order, each exactly once.
//! - commands are validated by the machine on the ledger's writer thread, against state that
//!   includes every earlier event; a rejected command appends nothing.
//! - readers see only committed state; the machine's working state is never shown.

mod activity;
pub mod agents;
pub mod analytics;
pub mod approvals;
pub mod board;
pub mod budgets;
mod command;
/// One type per command, each defined beside the projection it changes.
pub mod commands {
    pub use crate::agents::{Deregister, Heartbeat, Register};
    pub use crate::approvals::{AwaitApproval, DecideApproval, RequestApproval};
    pub use crate::board::{PostThread, ReplyToThread};
    pub use crate::budgets::SetSpendLimit;
    pub use crate::decisions::{CustomEvent, LogDecision};
    pub use crate::locks::{AcquireLock, ReleaseLock, RenewLock};
    pub use crate::queue::{
        CancelTask, Claim, CompleteTask, DeadLetterTask, Enqueue, EscalateTask, FailTask,
        ReleaseTask, RenewLease, TaskProgress,
    };
    pub use crate::signals::{AckSignal, ReceiveSignal, SendSignal};
    pub use crate::telemetry::ImportTelemetry;
    pub use crate::workflows::{
        CancelWorkflow, Checkpoint, CompleteStage, CompleteWorkflow, RecordHandoff, SetBudget,
        StartStage, StartWorkflow,
    };
}
mod coordinator;
pub mod decisions;
pub mod facts;
pub mod history;
pub mod locks;
mod machine;
mod published;
pub mod queue;
mod replay;
pub mod signals;
mod snapshot;
mod state;
pub mod telemetry;
mod waits;
pub mod workflows;

pub use activity::{Activity, KindCount};
pub use command::{Command, CommandError, Outcome};
pub use coordinator::{
    CallerGuard, Coordinator, CoordinatorOptions, PendingCommand, SNAPSHOT_BYTES_PER_EVENT_MAX,
    SNAPSHOT_EVERY_EVENTS_DEFAULT, rebuild, rebuild_reporting,
};
pub use machine::{INBOX_SIGNALS_MAX, Machine, Reply, SYSTEM_ACTOR};
pub use published::{BACKLOG_RECORDS_MAX, CATCH_UP_RECORDS_MAX};
pub use queue::TaskSpec;
pub use replay::{AsOf, Error, Projection, replay, replay_range, resolve};
pub use snapshot::SNAPSHOT_VERSION;
pub use state::{Due, State};
pub use waits::WAITERS_PER_KEY_MAX;
pub use workflows::StageReport;
