//! History and live events: `GET /v1/events` pages bounded by records and bytes, and the SSE
//! stream, each subscriber reading the ledger itself within a byte budget.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Query as UrlQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use fleetlog_ledger::{Record, Timestamp};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::*;

/// Which records a reader wants.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct EventFilter {
    from: Option<u64>,
    to: Option<u64>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<u64>,
    /// The newest `limit` records of the range instead of the oldest (still in seq order).
    #[serde(default)]
    last: bool,
    kind: Option<String>,
    actor: Option<String>,
}

impl EventFilter {
    fn wants(&self, record: &Record) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|kind| kind == record.event.kind())
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| *actor == record.actor)
    }
}

pub(super) async fn events(
    State(app): State<Shared>,
    filter: Result<UrlQuery<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(filter) =
        filter.map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
    if filter.last && (filter.kind.is_some() || filter.actor.is_some()) {
        // The newest N matching records would take a backward scan of unbounded length.
        return Err(ApiError::malformed(
            "last=true takes a range (from, to, since, until), not kind or actor",
        ));
    }
    let reader = app.coordinator.ledger().reader().clone();
    let page = tokio::task::spawn_blocking(move || -> Result<String, fleetlog_ledger::Error> {
        crate::daemon::query_threads::yield_cpu_to_the_writer();
        let last = reader.last_seq()?;
        let mut first = filter.from.unwrap_or(1).max(1);
        let mut end = filter.to.unwrap_or(last).min(last);
        if filter.since.is_some() || filter.until.is_some() {
            let window = reader.seqs_between(
                filter.since.unwrap_or(Timestamp::MIN),
                filter.until.unwrap_or(Timestamp::MAX),
            )?;
            first = first.max(*window.start());
            end = end.min(*window.end());
        }
        let limit = filter.limit.unwrap_or(1_000).clamp(1, EVENTS_PAGE_MAX) as usize;
        if filter.last {
            first = first.max(end.saturating_sub(limit as u64 - 1));
        }
        // Built as text, record by record, so a page is bounded by bytes as it is read.
        let mut body = String::from("{\"events\":[");
        let (mut count, mut next) = (0usize, None);
        reader.scan(first..=end, |record| {
            if filter.wants(&record) {
                let text = serde_json::to_string(&record).unwrap_or_else(|_| "null".to_owned());
                if count > 0 && body.len() + text.len() > EVENTS_PAGE_BYTES_MAX {
                    next = Some(record.seq);
                    return Ok(ControlFlow::Break(()));
                }
                if count > 0 {
                    body.push(',');
                }
                body.push_str(&text);
                count += 1;
            }
            Ok(match count >= limit {
                true => {
                    next = (record.seq < end).then_some(record.seq + 1);
                    ControlFlow::Break(())
                }
                false => ControlFlow::Continue(()),
            })
        })?;
        let next = next.map_or("null".to_owned(), |seq| seq.to_string());
        body.push_str(&format!("],\"next\":{next}}}"));
        Ok(body)
    })
    .await
    .map_err(|error| ApiError::new(500, "internal", error.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], page).into_response())
}

/// Server-Sent Events: every record from `from` (or after `Last-Event-ID`), history then live,
/// in order, read from the ledger itself. A subscriber is dropped, with a final `lagged` event,
/// when it falls `SSE_LAG_RECORDS_MAX` behind the head or takes nothing for
/// `SSE_STALL_TIMEOUT` while events wait; at most `SSE_UNSENT_BYTES_MAX` bytes wait for it.
pub(super) async fn stream(
    State(app): State<Shared>,
    headers: HeaderMap,
    filter: Result<UrlQuery<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(UrlQuery(filter)) = filter else {
        return ApiError::malformed("bad query parameters for /v1/events/stream").into_response();
    };
    let Ok(permit) = Arc::clone(&app.sse_permits).try_acquire_owned() else {
        return ApiError::new(
            503,
            "too_many_subscribers",
            format!("{SSE_SUBSCRIBERS_MAX} streams are open; try later"),
        )
        .into_response();
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .map(|last| last + 1);
    let from = resume.or(filter.from).unwrap_or(1).max(1);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Unsent>(64);
    let budget = Arc::new(Semaphore::new(SSE_UNSENT_BYTES_MAX));
    tokio::spawn(pump(Arc::clone(&app), filter, from, sender, budget, permit));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let unsent = tokio::select! {
            unsent = receiver.recv() => unsent?,
            // A comment line keeps proxies and idle timers from closing a quiet stream.
            () = tokio::time::sleep(SSE_KEEP_ALIVE) => Unsent::frame(b":\n\n".to_vec(), None),
        };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_owner(unsent)),
            receiver,
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// How long a quiet stream waits before sending a keep-alive comment.
pub(super) const SSE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// One SSE event's wire bytes, holding its share of the subscriber's unsent budget until the
/// connection has written them: hyper drops the bytes only then, so the budget covers its
/// buffers too.
pub(super) struct Unsent {
    wire: Vec<u8>,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Unsent {
    fn frame(wire: Vec<u8>, bytes: Option<OwnedSemaphorePermit>) -> Unsent {
        Unsent {
            wire,
            _bytes: bytes,
        }
    }

    /// `id:`, `event:` and one `data:` line per line of `data`, as the SSE format has them.
    fn event(
        id: Option<u64>,
        name: &str,
        data: &str,
        bytes: Option<OwnedSemaphorePermit>,
    ) -> Unsent {
        let mut wire = Vec::with_capacity(data.len() + 64);
        if let Some(id) = id {
            wire.extend_from_slice(format!("id: {id}\n").as_bytes());
        }
        wire.extend_from_slice(format!("event: {name}\n").as_bytes());
        for line in data.split('\n') {
            wire.extend_from_slice(b"data: ");
            wire.extend_from_slice(line.as_bytes());
            wire.push(b'\n');
        }
        wire.push(b'\n');
        Unsent::frame(wire, bytes)
    }
}

impl AsRef<[u8]> for Unsent {
    fn as_ref(&self) -> &[u8] {
        &self.wire
    }
}

/// Feeds one SSE subscriber from the ledger: what is committed after `next`, then each new
/// commit as the head moves.
pub(super) async fn pump(
    app: Shared,
    filter: EventFilter,
    mut next: u64,
    sender: tokio::sync::mpsc::Sender<Unsent>,
    budget: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
) {
    const CHUNK: u64 = 256;
    // Read ahead a quarter of the unsent budget: a stuck subscriber holds at most both.
    const READ_AHEAD_BYTES: usize = SSE_UNSENT_BYTES_MAX / 4;
    let mut head = app.live.clone();
    let final_event = |name: &str, message: String| Unsent::event(None, name, &message, None);
    loop {
        let committed = *head.borrow_and_update();
        if committed >= next {
            let behind = committed + 1 - next;
            if behind > SSE_LAG_RECORDS_MAX as u64 {
                app.metrics
                    .sse_dropped_total
                    .fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "this subscriber fell {behind} records behind and was dropped; reconnect with Last-Event-ID: {}",
                    next.saturating_sub(1)
                );
                let _ = sender.try_send(final_event("lagged", message));
                return;
            }
            let reader = app.coordinator.ledger().reader().clone();
            let first = next;
            let chunk = tokio::task::spawn_blocking(move || {
                crate::daemon::query_threads::yield_cpu_to_the_writer();
                reader.range_available(first, CHUNK, READ_AHEAD_BYTES)
            })
            .await;
            let Ok(Ok(records)) = chunk else { return };
            for record in &records {
                next = record.seq + 1;
                if !filter.wants(record) {
                    continue;
                }
                let data = serde_json::to_string(record)
                    .unwrap_or_else(|error| json!({ "error": error.to_string() }).to_string());
                let bytes = (data.len() + 64).min(SSE_UNSENT_BYTES_MAX) as u32;
                let granted = tokio::select! {
                    granted = Arc::clone(&budget).acquire_many_owned(bytes) => granted.ok(),
                    () = tokio::time::sleep(SSE_STALL_TIMEOUT) => None,
                    () = stopped(app.shutdown.clone()) => return,
                };
                let Some(granted) = granted else {
                    app.metrics
                        .sse_dropped_total
                        .fetch_add(1, Ordering::Relaxed);
                    let message = format!(
                        "this subscriber took nothing for {} s and was dropped; reconnect with Last-Event-ID: {}",
                        SSE_STALL_TIMEOUT.as_secs(),
                        record.seq.saturating_sub(1)
                    );
                    let _ = sender.try_send(final_event("lagged", message));
                    return;
                };
                let unsent =
                    Unsent::event(Some(record.seq), record.event.kind(), &data, Some(granted));
                if sender.send(unsent).await.is_err() {
                    return;
                }
            }
            if !records.is_empty() {
                continue;
            }
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = stopped(app.shutdown.clone()) => {
                let _ = sender.try_send(final_event("closing", "the daemon is shutting down; reconnect with Last-Event-ID".to_owned()));
                return;
            }
        }
    }
}
