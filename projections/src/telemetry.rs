//! Reading the JSON Lines telemetry that agent fleets already write ("oak" format) into ledger
//! events, so existing history can be analysed at once. Each line is recognised by its fields:
//!
//! - workflow events: `{"timestamp", "event": "workflow_start", "workflow_id", "session_id",
//!   "project_name", "agent_plan", "estimated_duration"}`, `agent_handoff` (`from_agent`,
//!   `to_agent`, `artifacts`), `workflow_complete` (`duration_seconds`, `success`,
//!   `agents_executed`);
//! - agent invocations: `{"timestamp", "session_id", "invocation_id", "agent_name",
//!   "agent_type", "task_description", "duration_seconds", "outcome": {"status"}}`, which belong
//!   to the workflow with the same `session_id` whose time span contains them. Without a
//!   `session_id` (the seed's own format) an invocation joins the workflow whose span contains it
//!   and which names its agent (plan, handoffs or `agents_executed`); one that no such workflow
//!   holds is reported as an unreadable line rather than guessed;
//! - success metrics: `{"timestamp", "invocation_id", "success", "quality_rating"}`, which
//!   override the invocation's outcome.
//!
//! Durations in seconds (`estimated_duration` too) become milliseconds; every event keeps its
//! original time in `occurred_at`.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeZone, Utc};
use fleetlog_ledger::{Event, Outcome, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A line that could not be read, named by file and line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

/// What the lines of all files say, before it becomes events.
#[derive(Default)]
struct Parsed {
    workflows: Vec<WorkflowLine>,
    handoffs: Vec<(Timestamp, Event)>,
    completions: Vec<(Timestamp, String, Event)>,
    invocations: Vec<Invocation>,
    /// invocation id → (success, quality)
    metrics: BTreeMap<String, (bool, Option<f64>)>,
}

struct WorkflowLine {
    at: Timestamp,
    workflow_id: String,
    session_id: Option<String>,
    event: Event,
}

struct Invocation {
    file: String,
    line: usize,
    at: Timestamp,
    id: String,
    session_id: Option<String>,
    agent: String,
    agent_type: String,
    description: String,
    duration_ms: u64,
    outcome: Outcome,
}

/// Parses telemetry files (`(name, contents)`) into events in time order (starts before the
/// stages and completions at the same instant). Returns every unreadable line; the caller
/// decides whether to skip them.
pub fn parse(files: &[(String, String)]) -> (Vec<Event>, Vec<LineError>) {
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
    for (file, contents) in files {
        for (index, line) in contents.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line, &mut parsed) {
                Ok(None) => {}
                Ok(Some(mut invocation)) => {
                    invocation.file.clone_from(file);
                    invocation.line = index + 1;
                    parsed.invocations.push(invocation);
                }
                Err(problem) => errors.push(LineError {
                    file: file.clone(),
                    line: index + 1,
                    problem,
                }),
            }
        }
    }
    let events = assemble(parsed, &mut errors);
    (events, errors)
}

fn text(value: &Value, field: &str) -> Result<String, String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("missing or non-text field `{field}`"))
}

fn optional_text(value: &Value, field: &str) -> Option<String> {
    value[field].as_str().map(str::to_owned)
}

fn texts(value: &Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn seconds_to_ms(value: &Value) -> Option<u64> {
    value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0).round() as u64)
}

/// RFC 3339, or a naive ISO time (taken as UTC), or seconds since 1970.
fn time(value: &Value) -> Result<Timestamp, String> {
    if let Some(seconds) = value.as_f64() {
        return Ok(Timestamp((seconds * 1e6) as i64));
    }
    let text = value.as_str().ok_or("missing `timestamp`")?;
    if let Ok(ts) = Timestamp::parse_rfc3339(text) {
        return Ok(ts);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map(|naive| Timestamp(Utc.from_utc_datetime(&naive).timestamp_micros()))
        .map_err(|_| format!("timestamp {text:?} is not an ISO 8601 time"))
}

/// Reads one line into `parsed`; an agent invocation is returned instead, for the caller to place.
fn parse_line(line: &str, parsed: &mut Parsed) -> Result<Option<Invocation>, String> {
    let value: Value = serde_json::from_str(line).map_err(|error| format!("not JSON: {error}"))?;
    if !value.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let at = time(&value["timestamp"])?;
    match value["event"].as_str() {
        Some("workflow_start") => {
            let workflow_id = text(&value, "workflow_id")?;
            parsed.workflows.push(WorkflowLine {
                at,
                session_id: optional_text(&value, "session_id"),
                event: Event::WorkflowStarted {
                    workflow_id: workflow_id.clone(),
                    project: optional_text(&value, "project_name").unwrap_or_default(),
                    agent_plan: texts(&value, "agent_plan"),
                    estimated_duration_ms: seconds_to_ms(&value["estimated_duration"]),
                    session_id: optional_text(&value, "session_id"),
                    occurred_at: Some(at),
                },
                workflow_id,
            });
            Ok(None)
        }
        Some("agent_handoff") => {
            parsed.handoffs.push((
                at,
                Event::Handoff {
                    workflow_id: text(&value, "workflow_id")?,
                    from_agent: text(&value, "from_agent")?,
                    to_agent: text(&value, "to_agent")?,
                    artifacts: texts(&value, "artifacts"),
                    occurred_at: Some(at),
                },
            ));
            Ok(None)
        }
        Some("workflow_complete") => {
            let workflow_id = text(&value, "workflow_id")?;
            parsed.completions.push((
                at,
                workflow_id.clone(),
                Event::WorkflowCompleted {
                    workflow_id,
                    success: value["success"]
                        .as_bool()
                        .ok_or("missing or non-boolean `success`")?,
                    error: optional_text(&value, "error"),
                    agents_executed: texts(&value, "agents_executed"),
                    duration_ms: seconds_to_ms(&value["duration_seconds"]),
                    occurred_at: Some(at),
                },
            ));
            Ok(None)
        }
        Some(other) => Err(format!("unknown workflow event {other:?}")),
        None if value.get("agent_name").is_some() => {
            let status = value["outcome"]["status"].as_str().unwrap_or("unknown");
            Ok(Some(Invocation {
                file: String::new(),
                line: 0,
                at,
                id: text(&value, "invocation_id")?,
                session_id: optional_text(&value, "session_id"),
                agent: text(&value, "agent_name")?,
                agent_type: optional_text(&value, "agent_type").unwrap_or_default(),
                description: optional_text(&value, "task_description").unwrap_or_default(),
                duration_ms: seconds_to_ms(&value["duration_seconds"])
                    .ok_or("missing or negative `duration_seconds`")?,
                outcome: match status {
                    "success" => Outcome::Success,
                    "failure" => Outcome::Failure,
                    "partial" => Outcome::Partial,
                    "unknown" => Outcome::Unknown,
                    other => {
                        return Err(format!(
                            "outcome status {other:?} is not success, failure, partial or unknown"
                        ));
                    }
                },
            }))
        }
        None if value.get("invocation_id").is_some() && value.get("success").is_some() => {
            let success = value["success"].as_bool().ok_or("non-boolean `success`")?;
            let quality = value["quality_rating"].as_f64().filter(|q| q.is_finite());
            parsed
                .metrics
                .insert(text(&value, "invocation_id")?, (success, quality));
            Ok(None)
        }
        None => Err("not a workflow event, agent invocation or success metric".to_owned()),
    }
}

/// Orders everything in time; each invocation becomes a completed stage of the workflow it
/// belongs to (see the module doc). Invocations that belong nowhere are added to `errors`.
fn assemble(parsed: Parsed, errors: &mut Vec<LineError>) -> Vec<Event> {
    let spans = Spans::of(&parsed);
    // (time, order at equal times, event): starts, then stages and handoffs, then completions.
    let mut events: Vec<(Timestamp, u8, Event)> = Vec::new();
    for invocation in &parsed.invocations {
        let workflow_id = match spans.workflow_of(invocation) {
            Ok(id) => id,
            Err(problem) => {
                errors.push(LineError {
                    file: invocation.file.clone(),
                    line: invocation.line,
                    problem,
                });
                continue;
            }
        };
        let (outcome, quality) = match parsed.metrics.get(&invocation.id) {
            Some((success, quality)) => (
                if *success {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                *quality,
            ),
            None => (invocation.outcome, None),
        };
        events.push((
            invocation.at,
            1,
            Event::StageCompleted {
                workflow_id,
                stage: match invocation.agent_type.is_empty() {
                    true => "invocation".to_owned(),
                    false => invocation.agent_type.clone(),
                },
                agent: invocation.agent.clone(),
                tier: String::new(),
                outcome,
                duration_ms: invocation.duration_ms,
                cost_usd: 0.0,
                tokens: 0,
                description: invocation.description.clone(),
                tags: Vec::new(),
                quality,
                occurred_at: Some(invocation.at),
            },
        ));
    }
    events.extend(parsed.workflows.into_iter().map(|w| (w.at, 0, w.event)));
    events.extend(
        parsed
            .handoffs
            .into_iter()
            .map(|(at, event)| (at, 1, event)),
    );
    events.extend(
        parsed
            .completions
            .into_iter()
            .map(|(at, _, event)| (at, 2, event)),
    );
    events.sort_by_key(|(at, order, _)| (*at, *order));
    events.into_iter().map(|(_, _, event)| event).collect()
}

/// Each imported workflow's time span, session and the agents it names.
struct Spans<'a> {
    workflows: Vec<Span<'a>>,
}

struct Span<'a> {
    id: &'a str,
    session: Option<&'a str>,
    start: Timestamp,
    end: Timestamp,
    agents: Vec<&'a str>,
}

impl<'a> Spans<'a> {
    fn of(parsed: &'a Parsed) -> Self {
        let mut workflows: Vec<Span<'a>> = parsed
            .workflows
            .iter()
            .map(|w| Span {
                id: &w.workflow_id,
                session: w.session_id.as_deref(),
                start: w.at,
                end: Timestamp::MAX,
                agents: match &w.event {
                    Event::WorkflowStarted { agent_plan, .. } => {
                        agent_plan.iter().map(String::as_str).collect()
                    }
                    _ => Vec::new(),
                },
            })
            .collect();
        let mut named =
            |id: &str, agents: &mut dyn Iterator<Item = &'a str>, end: Option<Timestamp>| {
                for span in workflows.iter_mut().filter(|span| span.id == id) {
                    span.agents.extend(&mut *agents);
                    if let Some(end) = end {
                        span.end = end;
                    }
                }
            };
        for (_, event) in &parsed.handoffs {
            if let Event::Handoff {
                workflow_id,
                from_agent,
                to_agent,
                ..
            } = event
            {
                let mut agents = [from_agent.as_str(), to_agent.as_str()].into_iter();
                named(workflow_id, &mut agents, None);
            }
        }
        for (at, workflow_id, event) in &parsed.completions {
            if let Event::WorkflowCompleted {
                agents_executed, ..
            } = event
            {
                named(
                    workflow_id,
                    &mut agents_executed.iter().map(String::as_str),
                    Some(*at),
                );
            }
        }
        Spans { workflows }
    }

    /// The workflow an invocation belongs to: by session when it has one (a session with no
    /// workflow spanning it keeps its own `session:<id>` workflow), else by time span and agent,
    /// the latest-started when several qualify.
    fn workflow_of(&self, invocation: &Invocation) -> Result<String, String> {
        let spanning = self
            .workflows
            .iter()
            .filter(|span| span.start <= invocation.at && invocation.at <= span.end);
        if let Some(session) = &invocation.session_id {
            return Ok(spanning
                .filter(|span| span.session == Some(session.as_str()))
                .max_by_key(|span| span.start)
                .map_or_else(|| format!("session:{session}"), |span| span.id.to_owned()));
        }
        spanning
            .filter(|span| span.agents.contains(&invocation.agent.as_str()))
            .max_by_key(|span| span.start)
            .map(|span| span.id.to_owned())
            .ok_or_else(|| {
                format!(
                    "invocation {:?} of agent {:?} has no session_id and no imported workflow \
                     running at {} names that agent; add its session_id, or import the \
                     workflow events that cover it",
                    invocation.id, invocation.agent, invocation.at
                )
            })
    }
}

/// Appends existing telemetry (workflow starts, stages, handoffs, completions, with their
/// original times in `occurred_at`) atomically: all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportTelemetry {
    pub agent: String,
    pub events: Vec<fleetlog_ledger::Event>,
}
