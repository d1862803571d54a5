//! Accepting connections with limits in count, bytes and time, and stopping within a grace
//! period whatever clients do.
//!
//! Invariants:
//! - each listener has its own connection bound, so a flood on TCP never starves the Unix
//!   socket; the bound is set below the process's open-file limit.
//! - at the bound, the connection idle the longest (no request in flight, no stream open) is
//!   closed to make room; when every connection is busy, the newcomer gets a JSON 503 and is
//!   closed: never left hanging in the backlog.
//! - a connection must deliver a request's header within `HEADER_READ_TIMEOUT`, counted from
//!   when the server starts waiting for it, so a half-sent header and an idle keep-alive
//!   connection both end.
//! - after the stop signal no connection is accepted; in-flight requests get `SHUTDOWN_GRACE`
//!   to finish, then every connection is dropped (which withdraws its parked waits).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::daemon::rewake::Rewake;

/// A request's header must arrive within this long of the server waiting for it (also how long
/// an idle keep-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once on one listener (lowered to fit the open-file limit).
pub const CONNECTIONS_MAX: usize = 4096;
/// How long in-flight requests get to finish after the stop signal, by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// File descriptors kept for the database, the log and the other listener.
const FILES_RESERVED: u64 = 64;

/// Counters of one daemon's connections, for `/metrics`.
#[derive(Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub accepted_total: AtomicU64,
    pub refused_total: AtomicU64,
    pub evicted_total: AtomicU64,
}

/// Raises the soft open-file limit to the hard one and returns the connection bound each of
/// `listeners` may use.
pub fn connection_bound(listeners: u64) -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let files = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let wanted = limit.rlim_max.min(1 << 20);
            if wanted > limit.rlim_cur {
                let raised = libc::rlimit {
                    rlim_cur: wanted,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = wanted;
                }
            }
            limit.rlim_cur
        } else {
            1024
        }
    };
    let per_listener = files.saturating_sub(FILES_RESERVED) / listeners.max(1);
    (per_listener as usize).clamp(16, CONNECTIONS_MAX)
}

/// One open connection as the listener sees it.
struct Slot {
    /// Requests in flight, counting response bodies still streaming.
    busy: AtomicU64,
    /// When it last became idle, in ms since the listener started.
    idle_since_ms: AtomicU64,
    evict: Notify,
}

struct Registry {
    started: Instant,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Closes the connection idle the longest; false if every one is busy.
    fn evict_idlest(&self) -> bool {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let idlest = slots
            .values()
            .filter(|slot| slot.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|slot| slot.idle_since_ms.load(Ordering::Relaxed));
        match idlest {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks its connection busy while alive.
struct Busy {
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(slot: &Arc<Slot>, registry: &Arc<Registry>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            slot: Arc::clone(slot),
            registry: Arc::clone(registry),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is fully sent or dropped.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Something connections arrive on: TCP or the Unix socket.
pub trait Accept: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

/// How one listener serves.
pub struct Limits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// TLS on this listener: the handshake must finish within `header_read_timeout`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `router` on `listener` until `stop` turns true, then drains within the grace period.
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry {
        started: Instant::now(),
        slots: Mutex::new(HashMap::new()),
    });
    let (drain_tx, drain) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let io = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let io = match io {
            Ok(io) => io,
            Err(error) => {
                // Out of file descriptors or a reset before accept: back off briefly rather
                // than spin; existing connections keep being served.
                eprintln!("fleetlog: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let open = registry.slots.lock().map_or(0, |slots| slots.len());
        if open >= limits.connections_max {
            if registry.evict_idlest() {
                stats.evicted_total.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.refused_total.fetch_add(1, Ordering::Relaxed);
                connections.spawn(refuse(io, limits.connections_max));
                continue;
            }
        }
        next_id += 1;
        let slot = Arc::new(Slot {
            busy: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(registry.now_ms()),
            evict: Notify::new(),
        });
        if let Ok(mut slots) = registry.slots.lock() {
            slots.insert(next_id, Arc::clone(&slot));
        }
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        connections.spawn(connection(
            io,
            limits.tls.clone(),
            next_id,
            slot,
            Arc::clone(&registry),
            router.clone(),
            limits.header_read_timeout,
            drain.clone(),
            Arc::clone(&stats),
        ));
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "fleetlog: {} connections still busy after the {} ms shutdown grace; closing them",
            connections.len(),
            limits.shutdown_grace.as_millis()
        );
        connections.shutdown().await;
    }
}

/// One connection: the TLS handshake if the listener has TLS (bounded by the header timeout,
/// so a client that never finishes it holds a slot no longer than one that never sends a
/// header), then HTTP until it closes, is evicted or the daemon drains.
#[allow(clippy::too_many_arguments)]
async fn connection<Io>(
    io: Io,
    tls: Option<tokio_rustls::TlsAcceptor>,
    id: u64,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    router: Router,
    header_read_timeout: Duration,
    drain: watch::Receiver<bool>,
    stats: Arc<ConnectionStats>,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = (&slot, &registry, router, header_read_timeout, drain);
    match tls {
        None => http(io, served).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(header_read_timeout, acceptor.accept(io));
            let evicted = slot.evict.notified();
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => http(stream, served).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
                () = evicted => {}
            }
        }
    }
    if let Ok(mut slots) = registry.slots.lock() {
        slots.remove(&id);
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// Serves HTTP/1.1 on an established stream.
async fn http<Io>(
    io: Io,
    (slot, registry, router, header_read_timeout, mut drain): (
        &Arc<Slot>,
        &Arc<Registry>,
        Router,
        Duration,
        watch::Receiver<bool>,
    ),
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (slot, registry) = (Arc::clone(slot), Arc::clone(registry));
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let busy = Busy::new(&slot, &registry);
            let call = tower_call(router.clone(), request);
            async move {
                let response = call.await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(TrackedBody { body, _busy: busy })),
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let mut conn = Rewake::new(builder.serve_connection(TokioIo::new(io), service));
    let mut draining = false;
    loop {
        tokio::select! {
            _ = &mut conn => break,
            () = slot.evict.notified() => break,
            _ = drain.wait_for(|drain| *drain), if !draining => {
                draining = true;
                conn.inner().graceful_shutdown();
            }
        }
    }
}

fn tower_call(
    router: Router,
    request: hyper::Request<hyper::body::Incoming>,
) -> impl Future<Output = axum::response::Response> + Send {
    use tower_service::Service;
    let mut router = router;
    let future = router.call(request.map(Body::new));
    async move {
        match future.await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Answers a connection over the bound with a JSON 503 and closes it.
async fn refuse<Io: tokio::io::AsyncWrite + Unpin>(mut io: Io, connections_max: usize) {
    let body = format!(
        "{{\"error\":\"too_many_connections\",\"message\":\"{connections_max} connections are open and busy on this listener; retry shortly\",\"details\":{{\"limit\":{connections_max}}}}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(response.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}
