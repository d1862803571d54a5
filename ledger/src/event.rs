//! The coordination vocabulary: every event a fleet can record.
//!
//! The order of [`Event`]'s variants and of each variant's fields *is* the on-disk format (bincode
//! writes the variant index and then the fields in order). New variants are only ever appended at
//! the end; a change to an existing variant needs a new format version. `docs/format.md` lists
//! every variant with its index.
//!
//! Ids of things created by an event (signals, tasks, approvals, threads) are the `seq` of the
//! event that created them, and a lock's fencing token is the `seq` of its grant: strictly
//! increasing, and free of any extra state. So events refer to them as `u64`.
//!
//! Events name their subject (`agent`, `holder`) only where it can differ from the record's
//! `actor`: expiry events are appended by the ledger itself, and workflow telemetry is often
//! reported by an orchestrator on behalf of the agent that did the work.

use std::fmt;

use bincode::{Decode, Encode};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::ID_BYTES_MAX;

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 0001-01-01T00:00:00Z: the earliest time RFC 3339 (and so a JSON export) can express.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// 9999-12-31T23:59:59.999999Z: the latest.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The wall clock now. Only the writer calls this: projections take time from events.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Whether the time lies in `MIN..=MAX`; events may only carry such times.
    pub fn is_representable(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// The time as a chrono value; `None` outside `MIN..=MAX`.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        match self.is_representable() {
            true => Utc.timestamp_micros(self.0).single(),
            false => None,
        }
    }

    /// Parses RFC 3339 (`2026-11-23T10:00:00.123456Z`).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|error| {
            TimestampError(format!("{text:?} is not an RFC 3339 time: {error}"))
        })?;
        let ts = Timestamp(parsed.with_timezone(&Utc).timestamp_micros());
        match ts.is_representable() {
            true => Ok(ts),
            false => Err(TimestampError(format!(
                "{text:?} is outside years 1 to 9999"
            ))),
        }
    }

    /// `self - millis`, saturating at [`Timestamp::MIN`].
    pub fn minus_millis(self, millis: u64) -> Self {
        let micros = i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(micros)).max(Self::MIN)
    }

    /// `self + millis`, saturating at [`Timestamp::MAX`] instead of leaving the representable
    /// range on absurd TTLs.
    pub fn plus_millis(self, millis: u64) -> Self {
        let micros = i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros)).min(Self::MAX)
    }
}

/// A time that cannot be parsed or represented.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimestampError(String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(time) => f.write_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "<unrepresentable time: {} µs since 1970>", self.0),
        }
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339, UTC, microseconds",
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_representable() {
            return Err(serde::ser::Error::custom(format!(
                "time {} µs since 1970 is outside years 1 to 9999",
                self.0
            )));
        }
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Free-form JSON, stored as compact canonical text (object keys sorted), because bincode cannot
/// encode `serde_json::Value`. Canonical text makes a JSON Lines export re-encode to the exact
/// bytes that were hashed, so an import can re-verify the chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Json(String);

impl Json {
    pub fn null() -> Self {
        Json("null".to_owned())
    }

    /// Parses JSON text and stores it canonically.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Ok(Self::from_value(&value))
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        Json(value.to_string())
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("Json always holds valid JSON text")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::null()
    }
}

impl Encode for Json {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

impl<Context> Decode<Context> for Json {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        // The chain hash already vouches for these bytes; re-parsing here would double the cost
        // of replay for no gain.
        Ok(Json(String::decode(decoder)?))
    }
}
bincode::impl_borrow_decode!(Json);

impl schemars::JsonSchema for Json {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Json".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "any JSON value" })
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Json::from_value(&value))
    }
}

/// Who a signal is for.
#[derive(
    Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalTarget {
    /// One agent, by id.
    Agent(String),
    /// Every agent: each consumes its own copy.
    Broadcast,
}

/// How a unit of agent work ended.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Encode,
    Decode,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "WorkOutcome")]
pub enum Outcome {
    Success,
    Failure,
    Partial,
    Unknown,
}

/// One coordination action. See the module docs for the stability rules.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    // --- agents and heartbeats -------------------------------------------------------------
    AgentRegistered {
        role: String,
        name: String,
        working_on: String,
        capabilities: Vec<String>,
        metadata: Json,
    },
    AgentHeartbeat {
        status: String,
        /// 0.0 ..= 1.0 when the agent reports it.
        progress: Option<f64>,
        current_task: Option<String>,
        metadata: Json,
        ttl_ms: u64,
    },
    AgentDeregistered {
        reason: String,
    },
    AgentExpired {
        agent: String,
        last_seen: Timestamp,
        deadline: Timestamp,
    },

    // --- signals ---------------------------------------------------------------------------
    SignalSent {
        kind: String,
        target: SignalTarget,
        payload: Json,
        ttl_ms: u64,
        /// The signal this one answers, for request/response.
        correlation_id: Option<u64>,
    },
    SignalConsumed {
        signal: u64,
    },
    SignalExpired {
        signal: u64,
        deadline: Timestamp,
    },

    // --- locks -----------------------------------------------------------------------------
    LockAcquired {
        resource: String,
        intent: String,
        ttl_ms: u64,
        /// When the acquire request arrived; equals the record's time unless it waited.
        requested_at: Timestamp,
        /// The expired token this grant took over, if any.
        takeover_of: Option<u64>,
    },
    LockRenewed {
        resource: String,
        token: u64,
        ttl_ms: u64,
    },
    LockReleased {
        resource: String,
        token: u64,
    },
    LockExpired {
        resource: String,
        token: u64,
        holder: String,
        deadline: Timestamp,
    },

    // --- task queue ------------------------------------------------------------------------
    TaskEnqueued {
        title: String,
        description: String,
        priority: i32,
        tags: Vec<String>,
        payload: Json,
        max_attempts: u32,
        depends_on: Vec<u64>,
        not_before: Option<Timestamp>,
        workflow_id: Option<String>,
    },
    TaskClaimed {
        task: u64,
        lease_ttl_ms: u64,
        attempt: u32,
    },
    TaskLeaseRenewed {
        task: u64,
        lease_ttl_ms: u64,
    },
    TaskLeaseExpired {
        task: u64,
        agent: String,
        attempt: u32,
        deadline: Timestamp,
    },
    TaskCompleted {
        task: u64,
        result: Json,
    },
    TaskFailed {
        task: u64,
        error: String,
        retryable: bool,
        /// When the task may be claimed again; `None` when it will not be retried.
        retry_at: Option<Timestamp>,
    },
    TaskDeadLettered {
        task: u64,
        reason: String,
    },
    TaskCancelled {
        task: u64,
        reason: String,
    },
    TaskSkipped {
        task: u64,
        /// The dependency that was dead-lettered, cancelled or skipped.
        blocked_by: u64,
    },

    // --- approvals -------------------------------------------------------------------------
    ApprovalRequested {
        action: String,
        context: Json,
        /// Empty means any agent may decide.
        approvers: Vec<String>,
        timeout_ms: u64,
    },
    ApprovalDecided {
        approval: u64,
        approved: bool,
        reason: String,
    },
    ApprovalExpired {
        approval: u64,
        deadline: Timestamp,
    },

    // --- board -----------------------------------------------------------------------------
    ThreadPosted {
        title: String,
        message: String,
        priority: i32,
    },
    ThreadReplied {
        thread: u64,
        message: String,
    },

    // --- decisions -------------------------------------------------------------------------
    DecisionLogged {
        decision_type: String,
        context: String,
        reason: String,
        alternatives: Vec<String>,
        metadata: Json,
    },

    // --- workflows -------------------------------------------------------------------------
    // `occurred_at` is set for imported telemetry; `None` means "when it was appended".
    WorkflowStarted {
        workflow_id: String,
        project: String,
        agent_plan: Vec<String>,
        estimated_duration_ms: Option<u64>,
        session_id: Option<String>,
        occurred_at: Option<Timestamp>,
    },
    StageStarted {
        workflow_id: String,
        stage: String,
        agent: String,
        tier: String,
        occurred_at: Option<Timestamp>,
    },
    StageCompleted {
        workflow_id: String,
        stage: String,
        agent: String,
        tier: String,
        outcome: Outcome,
        duration_ms: u64,
        cost_usd: f64,
        tokens: u64,
        /// What the stage did, in words: feeds relevance ranking.
        description: String,
        tags: Vec<String>,
        quality: Option<f64>,
        occurred_at: Option<Timestamp>,
    },
    Handoff {
        workflow_id: String,
        from_agent: String,
        to_agent: String,
        artifacts: Vec<String>,
        occurred_at: Option<Timestamp>,
    },
    Checkpoint {
        workflow_id: String,
        stage: String,
        state: Json,
    },
    WorkflowCompleted {
        workflow_id: String,
        success: bool,
        error: Option<String>,
        agents_executed: Vec<String>,
        duration_ms: Option<u64>,
        occurred_at: Option<Timestamp>,
    },
    WorkflowCancelled {
        workflow_id: String,
        reason: String,
    },
    BudgetSet {
        workflow_id: String,
        limit_usd: f64,
    },
    BudgetExceeded {
        workflow_id: String,
        limit_usd: f64,
        spent_usd: f64,
    },

    // --- user actions ----------------------------------------------------------------------
    Custom {
        kind: String,
        payload: Json,
    },

    // --- acknowledged signal delivery (format 1, added after `custom`: variant order is the
    // encoding, so new variants only ever go at the end) -----------------------------------
    /// The actor received `signal` and must acknowledge it within `ack_ms`; until then the
    /// signal is the actor's and nobody else receives it.
    SignalDelivered {
        signal: u64,
        ack_ms: u64,
    },
    /// The actor acknowledged `signal`: it is consumed.
    SignalAcked {
        signal: u64,
    },
    /// `agent` did not acknowledge `signal` by `deadline`: it is receivable again.
    SignalAckExpired {
        signal: u64,
        agent: String,
        deadline: Timestamp,
    },
}

/// A field of an event that breaks a limit the format promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: &'static str,
    pub problem: String,
}

impl Event {
    /// The variant's name as it appears in JSON (`"lock_acquired"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentRegistered { .. } => "agent_registered",
            Event::AgentHeartbeat { .. } => "agent_heartbeat",
            Event::AgentDeregistered { .. } => "agent_deregistered",
            Event::AgentExpired { .. } => "agent_expired",
            Event::SignalSent { .. } => "signal_sent",
            Event::SignalConsumed { .. } => "signal_consumed",
            Event::SignalExpired { .. } => "signal_expired",
            Event::LockAcquired { .. } => "lock_acquired",
            Event::LockRenewed { .. } => "lock_renewed",
            Event::LockReleased { .. } => "lock_released",
            Event::LockExpired { .. } => "lock_expired",
            Event::TaskEnqueued { .. } => "task_enqueued",
            Event::TaskClaimed { .. } => "task_claimed",
            Event::TaskLeaseRenewed { .. } => "task_lease_renewed",
            Event::TaskLeaseExpired { .. } => "task_lease_expired",
            Event::TaskCompleted { .. } => "task_completed",
            Event::TaskFailed { .. } => "task_failed",
            Event::TaskDeadLettered { .. } => "task_dead_lettered",
            Event::TaskCancelled { .. } => "task_cancelled",
            Event::TaskSkipped { .. } => "task_skipped",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::ApprovalDecided { .. } => "approval_decided",
            Event::ApprovalExpired { .. } => "approval_expired",
            Event::ThreadPosted { .. } => "thread_posted",
            Event::ThreadReplied { .. } => "thread_replied",
            Event::DecisionLogged { .. } => "decision_logged",
            Event::WorkflowStarted { .. } => "workflow_started",
            Event::StageStarted { .. } => "stage_started",
            Event::StageCompleted { .. } => "stage_completed",
            Event::Handoff { .. } => "handoff",
            Event::Checkpoint { .. } => "checkpoint",
            Event::WorkflowCompleted { .. } => "workflow_completed",
            Event::WorkflowCancelled { .. } => "workflow_cancelled",
            Event::BudgetSet { .. } => "budget_set",
            Event::BudgetExceeded { .. } => "budget_exceeded",
            Event::Custom { .. } => "custom",
            Event::SignalDelivered { .. } => "signal_delivered",
            Event::SignalAcked { .. } => "signal_acked",
            Event::SignalAckExpired { .. } => "signal_ack_expired",
        }
    }

    /// The times an event carries (at most two), named by field.
    fn times(&self) -> [Option<(&'static str, Timestamp)>; 2] {
        let opt = |field, time: &Option<Timestamp>| time.map(|time| (field, time));
        match self {
            Event::AgentExpired {
                last_seen,
                deadline,
                ..
            } => [
                Some(("last_seen", *last_seen)),
                Some(("deadline", *deadline)),
            ],
            Event::SignalExpired { deadline, .. }
            | Event::SignalAckExpired { deadline, .. }
            | Event::LockExpired { deadline, .. }
            | Event::TaskLeaseExpired { deadline, .. }
            | Event::ApprovalExpired { deadline, .. } => [Some(("deadline", *deadline)), None],
            Event::LockAcquired { requested_at, .. } => {
                [Some(("requested_at", *requested_at)), None]
            }
            Event::TaskEnqueued { not_before, .. } => [opt("not_before", not_before), None],
            Event::TaskFailed { retry_at, .. } => [opt("retry_at", retry_at), None],
            Event::WorkflowStarted { occurred_at, .. }
            | Event::StageStarted { occurred_at, .. }
            | Event::StageCompleted { occurred_at, .. }
            | Event::Handoff { occurred_at, .. }
            | Event::WorkflowCompleted { occurred_at, .. } => {
                [opt("occurred_at", occurred_at), None]
            }
            _ => [None, None],
        }
    }

    /// Checks the per-field limits: identifiers within [`ID_BYTES_MAX`], times within
    /// [`Timestamp::MIN`]`..=`[`Timestamp::MAX`], numbers finite and in range. The total size is
    /// checked by the codec.
    pub fn check_fields(&self) -> Result<(), FieldProblem> {
        for (field, time) in self.times().into_iter().flatten() {
            if !time.is_representable() {
                return Err(FieldProblem {
                    field,
                    problem: format!("{} µs since 1970 is outside years 1 to 9999", time.0),
                });
            }
        }
        match self {
            Event::AgentRegistered {
                role,
                name,
                capabilities,
                ..
            } => {
                id("role", role)?;
                id("name", name)?;
                ids("capabilities", capabilities)
            }
            Event::AgentHeartbeat {
                status,
                progress,
                current_task,
                ..
            } => {
                id("status", status)?;
                if let Some(progress) = progress
                    && !(0.0..=1.0).contains(progress)
                {
                    return Err(FieldProblem {
                        field: "progress",
                        problem: format!("{progress} is outside 0.0..=1.0"),
                    });
                }
                opt_id("current_task", current_task)
            }
            Event::AgentDeregistered { .. } => Ok(()),
            Event::AgentExpired { agent, .. } => id("agent", agent),
            Event::SignalSent { kind, target, .. } => {
                id("kind", kind)?;
                match target {
                    SignalTarget::Agent(agent) => id("target", agent),
                    SignalTarget::Broadcast => Ok(()),
                }
            }
            Event::SignalConsumed { .. }
            | Event::SignalExpired { .. }
            | Event::SignalDelivered { .. }
            | Event::SignalAcked { .. } => Ok(()),
            Event::SignalAckExpired { agent, .. } => id("agent", agent),
            Event::LockAcquired {
                resource, intent, ..
            } => {
                id("resource", resource)?;
                id("intent", intent)
            }
            Event::LockRenewed { resource, .. } | Event::LockReleased { resource, .. } => {
                id("resource", resource)
            }
            Event::LockExpired {
                resource, holder, ..
            } => {
                id("resource", resource)?;
                id("holder", holder)
            }
            Event::TaskEnqueued {
                tags, workflow_id, ..
            } => {
                ids("tags", tags)?;
                opt_id("workflow_id", workflow_id)
            }
            Event::TaskLeaseExpired { agent, .. } => id("agent", agent),
            Event::TaskClaimed { .. }
            | Event::TaskLeaseRenewed { .. }
            | Event::TaskCompleted { .. }
            | Event::TaskFailed { .. }
            | Event::TaskDeadLettered { .. }
            | Event::TaskCancelled { .. }
            | Event::TaskSkipped { .. } => Ok(()),
            Event::ApprovalRequested {
                action, approvers, ..
            } => {
                id("action", action)?;
                ids("approvers", approvers)
            }
            Event::ApprovalDecided { .. } | Event::ApprovalExpired { .. } => Ok(()),
            Event::ThreadPosted { title, .. } => id("title", title),
            Event::ThreadReplied { .. } => Ok(()),
            Event::DecisionLogged { decision_type, .. } => id("decision_type", decision_type),
            Event::WorkflowStarted {
                workflow_id,
                project,
                agent_plan,
                session_id,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("project", project)?;
                ids("agent_plan", agent_plan)?;
                opt_id("session_id", session_id)
            }
            Event::StageStarted {
                workflow_id,
                stage,
                agent,
                tier,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)?;
                id("agent", agent)?;
                id("tier", tier)
            }
            Event::StageCompleted {
                workflow_id,
                stage,
                agent,
                tier,
                cost_usd,
                tags,
                quality,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)?;
                id("agent", agent)?;
                id("tier", tier)?;
                money("cost_usd", *cost_usd)?;
                ids("tags", tags)?;
                if let Some(quality) = quality
                    && !quality.is_finite()
                {
                    return Err(FieldProblem {
                        field: "quality",
                        problem: "must be a finite number".to_owned(),
                    });
                }
                Ok(())
            }
            Event::Handoff {
                workflow_id,
                from_agent,
                to_agent,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                id("from_agent", from_agent)?;
                id("to_agent", to_agent)
            }
            Event::Checkpoint {
                workflow_id, stage, ..
            } => {
                id("workflow_id", workflow_id)?;
                id("stage", stage)
            }
            Event::WorkflowCompleted {
                workflow_id,
                agents_executed,
                ..
            } => {
                id("workflow_id", workflow_id)?;
                ids("agents_executed", agents_executed)
            }
            Event::WorkflowCancelled { workflow_id, .. } => id("workflow_id", workflow_id),
            Event::BudgetSet {
                workflow_id,
                limit_usd,
            } => {
                id("workflow_id", workflow_id)?;
                money("limit_usd", *limit_usd)
            }
            Event::BudgetExceeded {
                workflow_id,
                limit_usd,
                spent_usd,
            } => {
                id("workflow_id", workflow_id)?;
                money("limit_usd", *limit_usd)?;
                money("spent_usd", *spent_usd)
            }
            Event::Custom { kind, .. } => id("kind", kind),
        }
    }
}

fn id(field: &'static str, value: &str) -> Result<(), FieldProblem> {
    if value.len() > ID_BYTES_MAX {
        return Err(FieldProblem {
            field,
            problem: format!(
                "is {} bytes; the limit is {ID_BYTES_MAX} bytes",
                value.len()
            ),
        });
    }
    Ok(())
}

fn opt_id(field: &'static str, value: &Option<String>) -> Result<(), FieldProblem> {
    value.as_deref().map_or(Ok(()), |value| id(field, value))
}

fn ids(field: &'static str, values: &[String]) -> Result<(), FieldProblem> {
    values.iter().try_for_each(|value| id(field, value))
}

fn money(field: &'static str, value: f64) -> Result<(), FieldProblem> {
    if !value.is_finite() || value < 0.0 {
        return Err(FieldProblem {
            field,
            problem: format!("{value} is not a finite, non-negative amount"),
        });
    }
    Ok(())
}
