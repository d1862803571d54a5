//! `/metrics` (Prometheus text), the named limits it exports, health and head.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;

/// Every bound the daemon enforces, by name: what `/metrics` exports as `fleetlog_limit`.
pub(super) fn limits(app: &App) -> Vec<(&'static str, u64)> {
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
        ("verify_runs_max", VERIFY_RUNS_MAX as u64),
        ("batch_commands_max", BATCH_COMMANDS_MAX as u64),
        (
            "waiters_per_key_max",
            fleetlog_projections::WAITERS_PER_KEY_MAX as u64,
        ),
        ("inbox_signals_max", fleetlog_projections::INBOX_SIGNALS_MAX),
        (
            "query_thread_nice",
            crate::daemon::query_threads::QUERY_THREAD_NICE as u64,
        ),
        (
            "store_cache_bytes",
            fleetlog_ledger::limits::STORE_CACHE_BYTES as u64,
        ),
        ("wal_bytes", fleetlog_ledger::limits::WAL_BYTES as u64),
        (
            "wal_checkpoint_interval_ms",
            fleetlog_ledger::limits::WAL_CHECKPOINT_INTERVAL_MS,
        ),
        (
            "head_ahead_of_wall_ms_max",
            fleetlog_ledger::limits::HEAD_AHEAD_OF_WALL_MS_MAX,
        ),
        (
            "snapshot_every_events",
            fleetlog_projections::SNAPSHOT_EVERY_EVENTS_DEFAULT,
        ),
        (
            "snapshot_bytes_per_event_max",
            fleetlog_projections::SNAPSHOT_BYTES_PER_EVENT_MAX,
        ),
        (
            "facts_kept_per_kind",
            fleetlog_projections::facts::FACTS_KEPT_PER_KIND as u64,
        ),
        (
            "published_backlog_records_max",
            fleetlog_projections::BACKLOG_RECORDS_MAX as u64,
        ),
        (
            "published_catch_up_records_max",
            fleetlog_projections::CATCH_UP_RECORDS_MAX as u64,
        ),
    ]
}

/// Liveness: the process answers. Always 200 while it serves.
pub(super) async fn health_live() -> Json<Value> {
    Json(json!({ "status": "ok", "live": true }))
}

/// Readiness (also `/v1/health`): 200 `ok` while writes are accepted, 503 `degraded` with the
/// reason while they are refused (a failed commit poisoned the writer: disk full, I/O error).
pub(super) async fn health(State(app): State<Shared>) -> Result<Response, ApiError> {
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
        "pid": std::process::id(),
        "on_demand": app.on_demand,
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

/// The head, with what an export's header names (the ledger and its record format), so a
/// client can export through the daemon page by page.
pub(super) async fn head(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let ledger = app.coordinator.ledger();
    let head = ledger.head()?;
    Ok(Json(json!({
        "seq": head.seq,
        "hash": head.hash,
        "ts": head.ts,
        "checkpoint": head.checkpoint().to_string(),
        "ledger_id": ledger.ledger_id(),
        "record_format_version": fleetlog_ledger::FORMAT_VERSION,
    })))
}

/// Which verification to run: from genesis, through an optional trusted `seq:hash`.
#[derive(serde::Deserialize)]
pub(super) struct VerifyParams {
    from: Option<String>,
}

/// Re-hashes the whole chain, as `fleetlog verify` does on the file: the report, 200 whether
/// the chain is intact or not (`problem` says). One run at a time ([`VERIFY_RUNS_MAX`]); its
/// threads run at the query threads' low priority, so commits go first.
pub(super) async fn verify(
    State(app): State<Shared>,
    params: Result<axum::extract::Query<VerifyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(params) =
        params.map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
    let from = params
        .from
        .map(|text| {
            text.parse::<fleetlog_ledger::Checkpoint>()
                .map_err(|error| {
                    ApiError::malformed(format!(
                        "from={text} is not a seq:hash checkpoint: {error}"
                    ))
                })
        })
        .transpose()?;
    let Ok(permit) = Arc::clone(&app.verify_permits).try_acquire_owned() else {
        return Err(ApiError::new(
            503,
            "verify_running",
            format!("{VERIFY_RUNS_MAX} verification is already running; retry when it finishes"),
        ));
    };
    let report = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // Threads inherit the priority of the thread that starts them.
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        app.coordinator
            .ledger()
            .verify(fleetlog_ledger::VerifyOptions {
                from,
                ..Default::default()
            })
    })
    .await
    .map_err(|error| ApiError::new(500, "internal", error.to_string()))??;
    Ok(Json(serde_json::to_value(&report).map_err(|error| {
        ApiError::new(500, "internal", error.to_string())
    })?))
}

pub(super) async fn metrics(State(app): State<Shared>) -> Response {
    let writer = app.coordinator.ledger().writer_stats();
    let now = app.coordinator.now();
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
        "Batches committed durably since the daemon started (held exclusively, the default: each durable in the write-ahead log; with --shared: a durable redb commit).",
        vec![(String::new(), writer.commits as f64)],
    );
    metric(
        &mut text,
        "fleetlog_checkpoints_total",
        "counter",
        "Held exclusively (the default): durable redb commits (checkpoints) since the daemon started; the batches between them are durable in the write-ahead log. Zero with --shared.",
        vec![(String::new(), writer.checkpoints as f64)],
    );
    metric(
        &mut text,
        "fleetlog_batch_events_mean",
        "gauge",
        "Mean events per commit (group commit).",
        vec![(String::new(), writer.mean_batch_events())],
    );
    if let Some((_, offset_micros)) = app.coordinator.ledger().clock_report() {
        metric(
            &mut text,
            "fleetlog_clock_wall_offset_seconds",
            "gauge",
            "Wall clock minus ledger time. Ledger time advances with the monotonic clock from max(wall, head) at open, so a wall-clock step shows here instead of in TTLs.",
            vec![(String::new(), offset_micros as f64 / 1e6)],
        );
    }
    histogram(
        &mut text,
        "fleetlog_commit_latency_seconds",
        "Time to make a batch durable: its redb commit, or (held exclusively, the default) its write-ahead-log frame (redb commits it when a reader needs it, or durably at a checkpoint, which is counted here too).",
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
    // A stat per file and one directory read: cheap enough per scrape, and never stale.
    if let Ok(disk) = fleetlog_ledger::disk_usage(app.coordinator.ledger().path()) {
        metric(
            &mut text,
            "fleetlog_disk_bytes",
            "gauge",
            "Bytes the file system allocated for the ledger file, its write-ahead log (fixed size; none with --shared) and its snapshot files.",
            [
                ("ledger", disk.ledger),
                ("wal", disk.wal),
                ("snapshots", disk.snapshots),
            ]
            .into_iter()
            .map(|(file, usage)| (format!("{{file=\"{file}\"}}"), usage.allocated as f64))
            .collect(),
        );
    }
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
        "fleetlog_connections_accepted_total",
        "counter",
        "Client connections accepted (a client that keeps connections alive opens few).",
        per_listener(|stats| stats.accepted_total.load(Ordering::Relaxed)),
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
pub(super) fn histogram(
    text: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
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
