//! `fleetlog serve`: one process owns the ledger and serves agents over HTTP/1.1 + JSON on
//! loopback TCP and on a Unix socket beside the database.
//!
//! Invariants:
//! - every write is a state-machine command answered after its commit; long-polls are parked
//!   inside the machine and answered by the event that satisfies them, never by polling.
//! - malformed or oversized bodies are refused before anything reaches the ledger.
//! - everything is bounded: body size, open connections, SSE subscribers, subscriber lag, and
//!   waiters per key (in the machine).
//! - TCP beyond loopback needs a token, compared in constant time; the Unix socket is 0600.

mod error;
mod guard;
pub(crate) mod listen;
mod mcp;
mod metrics;
pub mod query_threads;
mod rewake;
mod routes;
mod stream;

pub use error::ApiError;
use metrics::*;
use routes::*;
use stream::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fleetlog_projections::{Coordinator, CoordinatorOptions};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::daemon::listen::ConnectionStats;
use crate::error::Error;
use crate::wire::{self};

/// Largest request body.
pub const BODY_BYTES_MAX: usize = 1024 * 1024 + 64 * 1024;
pub use crate::daemon::listen::{CONNECTIONS_MAX, HEADER_READ_TIMEOUT, SHUTDOWN_GRACE};
/// Most SSE subscribers at once.
pub const SSE_SUBSCRIBERS_MAX: usize = 256;
/// Records a live subscriber may fall behind the head before it is dropped.
pub const SSE_LAG_RECORDS_MAX: usize = 4096;
/// Bytes of events read for one SSE subscriber but not yet written to its connection.
pub const SSE_UNSENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long an SSE subscriber may take nothing while events wait for it before it is dropped.
pub const SSE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most records one `GET /v1/events` returns.
pub const EVENTS_PAGE_MAX: u64 = 10_000;
/// Most `GET /v1/verify` runs at once: each re-hashes the whole chain on every core (at query
/// threads' low priority), so a second one is refused rather than queued behind the first.
pub const VERIFY_RUNS_MAX: usize = 1;
/// Most bytes of JSON one `GET /v1/events` page holds (at least one record is always sent).
pub const EVENTS_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most commands in one `POST /v1/batch`.
pub const BATCH_COMMANDS_MAX: usize = 1_000;

/// How to run the daemon.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub db: PathBuf,
    pub listen: SocketAddr,
    pub socket: PathBuf,
    /// Required for TCP requests when set; must be set to listen beyond loopback.
    pub token: Option<String>,
    /// How long in-flight requests get to finish after the stop signal.
    pub shutdown_grace: std::time::Duration,
    /// Serve without re-hashing the whole chain at start (logged as a warning).
    pub skip_verify: bool,
    /// Hold the file exclusively for one-fsync commits (no other process may open it).
    pub exclusive: bool,
    /// Who may act as an agent; `None`: [`AuthMode::Agents`] when listening beyond loopback,
    /// else [`AuthMode::TrustedHost`].
    pub auth: Option<AuthMode>,
    /// Serve TCP over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Exit after this long with no connection, parked wait or event stream (a daemon started
    /// on demand by a client); `None`: serve until stopped.
    pub idle_exit: Option<std::time::Duration>,
}

/// How long a daemon started on demand retries a file another daemon still has open (one that
/// went idle and is closing as this one starts).
pub const ON_DEMAND_OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends SIGTERM to the daemon `pid` (its in-flight requests finish) and waits up to `within`
/// for the process to exit; false if it is still running. A zombie counts as exited: it holds
/// no file.
pub fn terminate(pid: i32, within: std::time::Duration) -> Result<bool, Error> {
    // SAFETY: kill only sends a signal to the process the daemon named as itself.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() == Some(libc::ESRCH) {
            true => Ok(true),
            false => Err(Error::Config(format!(
                "could not signal pid {pid}: {error}"
            ))),
        };
    }
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z" && state != "X")
            })
            .unwrap_or(false)
    };
    let started = std::time::Instant::now();
    while running() {
        if started.elapsed() >= within {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(true)
}

/// A daemon started by hand replaces one a command started on demand for the same file: that
/// one is asked to stop (SIGTERM: its in-flight requests finish) and its socket awaited. A
/// daemon started by hand is never replaced: the new start is refused by the socket check.
/// Answers the pid of the daemon it replaced, if any.
async fn take_over_from_on_demand(socket: &Path) -> Result<Option<i32>, Error> {
    if !socket.exists() {
        return Ok(None);
    }
    let client = crate::client::Client::new(crate::client::Endpoint::Unix(socket.to_owned()));
    let health = tokio::time::timeout(std::time::Duration::from_secs(2), client.health()).await;
    let Ok(Ok(health)) = health else {
        return Ok(None);
    };
    let (Some(true), Some(pid)) = (health["on_demand"].as_bool(), health["pid"].as_u64()) else {
        return Ok(None);
    };
    let pid = i32::try_from(pid).map_err(|_| Error::Config(format!("pid {pid} out of range")))?;
    let stopped = tokio::task::spawn_blocking(move || terminate(pid, SHUTDOWN_GRACE * 3))
        .await
        .map_err(|error| Error::Config(format!("waiting for pid {pid}: {error}")))??;
    if !stopped {
        return Err(Error::Config(format!(
            "the daemon started on demand (pid {pid}) did not stop; `fleetlog daemon stop`, then start again"
        )));
    }
    Ok(Some(pid))
}

/// Resolves once the daemon has had no connection, parked wait or event stream for `idle`;
/// never without one.
async fn idle_exit(app: Arc<App>, idle: Option<std::time::Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let tick = (idle / 4).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(1),
    );
    let mut idle_since = std::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let connections = app.metrics.tcp.open.load(Ordering::Relaxed)
            + app.metrics.unix.open.load(Ordering::Relaxed);
        let streams = SSE_SUBSCRIBERS_MAX - app.sse_permits.available_permits();
        if connections > 0 || streams > 0 || app.coordinator.waiting() > 0 {
            idle_since = std::time::Instant::now();
        } else if idle_since.elapsed() >= idle {
            tracing::info!(
                idle_ms = idle.as_millis() as u64,
                "no clients, waits or streams for the idle period: exiting"
            );
            return;
        }
    }
}

/// Where the TLS certificate chain and private key are (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// A TLS acceptor for the TCP listener: TLS 1.2 and 1.3, no client certificates.
    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let named = |path: &Path, what: &str, error: String| {
            Error::Config(format!("{what} {}: {error}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| named(&self.cert, "the TLS certificate", error.to_string()))?;
        if certs.is_empty() {
            return Err(named(
                &self.cert,
                "the TLS certificate",
                "no PEM certificate in it".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|error| named(&self.key, "the TLS private key", error.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Config(format!("TLS: {error}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|error| {
                Error::Config(format!(
                    "the TLS certificate {} and key {} do not make a usable pair: {error}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Who may act as an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Each command carries its agent's credential (issued at registration) or the operator's.
    Agents,
    /// Anyone who reaches the daemon may act as any agent. Loopback and the socket only.
    TrustedHost,
}

impl AuthMode {
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Agents => "agents",
            AuthMode::TrustedHost => "trusted-host",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Metrics {
    requests: AtomicU64,
    tcp: Arc<ConnectionStats>,
    unix: Arc<ConnectionStats>,
    connections_max: AtomicU64,
    sse_dropped_total: AtomicU64,
}

struct App {
    coordinator: Coordinator,
    token: Option<String>,
    /// Derives and checks agents' and the operator's credentials.
    keys: crate::identity::Keys,
    /// Trusted-host mode: credentials are issued but not required.
    trusted_host: bool,
    /// Started on demand (exits once idle): a daemon started by hand takes over from it.
    on_demand: bool,
    /// The committed head's seq, published by the fan-out thread after each commit.
    live: watch::Receiver<u64>,
    shutdown_grace: std::time::Duration,
    sse_permits: Arc<Semaphore>,
    verify_permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Set once the refusal of writes (a poisoned writer) has been logged.
    refusal_logged: std::sync::atomic::AtomicBool,
}

type Shared = Arc<App>;

/// Runs the daemon until `stop` resolves, then stops accepting, lets the batch in flight
/// finish, answers parked waits with `closing`, and closes the ledger.
/// The routes for each listener: the socket's, and TCP's, which also require the token when
/// one is set. Checked first on both: the Origin, the Host (TCP) and JSON on writes.
fn guarded_routes(app: &Arc<App>, tcp_address: SocketAddr) -> (axum::Router, axum::Router) {
    let routes = router(Arc::clone(app));
    let tcp_routes = match &app.token {
        Some(_) => routes.clone().layer(middleware::from_fn_with_state(
            Arc::clone(app),
            require_token,
        )),
        None => routes.clone(),
    };
    let tcp_routes = tcp_routes.layer(middleware::from_fn_with_state(
        guard::Served {
            tcp: Some(tcp_address),
        },
        guard::check,
    ));
    let routes = routes.layer(middleware::from_fn_with_state(
        guard::Served { tcp: None },
        guard::check,
    ));
    (routes, tcp_routes)
}

/// Refuses a configuration that would expose the fleet, and picks the auth mode: trusted-host on
/// loopback, per-agent credentials beyond it.
fn checked_auth(config: &ServerConfig) -> Result<AuthMode, Error> {
    if config
        .token
        .as_deref()
        .is_some_and(|token| token.trim().is_empty())
    {
        return Err(Error::Config(
            "the token is empty (--token \"\" or FLEETLOG_TOKEN=): give a real secret, or none on loopback".to_owned(),
        ));
    }
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(Error::Config(format!(
            "listening on {} (beyond loopback) requires --token",
            config.listen
        )));
    }
    let local = config.listen.ip().is_loopback();
    let auth = config.auth.unwrap_or(match local {
        true => AuthMode::TrustedHost,
        false => AuthMode::Agents,
    });
    if auth == AuthMode::TrustedHost && !local {
        return Err(Error::Config(format!(
            "--auth trusted-host lets anyone who reaches the daemon act as any agent, so it serves loopback and the socket only, not {}: use --auth agents (the default there) or listen on 127.0.0.1",
            config.listen
        )));
    }
    Ok(auth)
}

/// Opens the ledger. A daemon started on demand retries a file that an idle one, exiting, still
/// holds; one started by hand is told at once.
async fn open_coordinator(config: &ServerConfig) -> Result<Coordinator, Error> {
    let open = || {
        Coordinator::open(
            &config.db,
            CoordinatorOptions {
                skip_verify: config.skip_verify,
                exclusive: config.exclusive,
                ..CoordinatorOptions::default()
            },
        )
    };
    let mut opened = open();
    if config.idle_exit.is_some() {
        let deadline = std::time::Instant::now() + ON_DEMAND_OPEN_PATIENCE;
        while matches!(
            opened,
            Err(fleetlog_projections::Error::Ledger(
                fleetlog_ledger::Error::AlreadyOpen { .. }
            ))
        ) && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            opened = open();
        }
    }
    Ok(opened?)
}

/// The first line on stderr (scripts and tests read the address from it), then the log lines
/// that say how the daemon serves and what to watch out for.
fn announce(
    config: &ServerConfig,
    app: &App,
    auth: AuthMode,
    tcp_address: SocketAddr,
    connections_max: usize,
    open_ms: f64,
    took_over: Option<i32>,
) -> Result<(), Error> {
    eprintln!(
        "fleetlog serving {} on {}://{} and unix:{}",
        config.db.display(),
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        tcp_address,
        config.socket.display()
    );
    tracing::info!(
        db = %config.db.display(),
        tcp = %tcp_address,
        socket = %config.socket.display(),
        token = config.token.is_some(),
        auth = auth.name(),
        tls = config.tls.is_some(),
        connections_max,
        head = app.coordinator.ledger().head()?.seq,
        chain_verified = !config.skip_verify,
        open_ms,
        "serving"
    );
    if config.skip_verify {
        tracing::warn!(
            "--skip-verify: the chain was not verified before serving; a broken history is served as it is"
        );
    }
    if let Some(pid) = took_over {
        tracing::info!(
            pid,
            "took over from the daemon started on demand for this file"
        );
    }
    if auth == AuthMode::TrustedHost {
        tracing::info!(
            "auth trusted-host: any process that reaches the daemon may act as any agent; --auth agents requires each agent's credential"
        );
    }
    if let Some(ahead) = crate::client::backend::clock_warning(app.coordinator.ledger()) {
        tracing::warn!("{ahead}");
    }

    Ok(())
}

pub async fn serve(
    config: ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let auth = checked_auth(&config)?;
    if let Some(dir) = config.db.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::Config(format!(
            "cannot serve {}: its directory {} does not exist (create it, or choose another --db)",
            config.db.display(),
            dir.display()
        )));
    }
    let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    let took_over = match config.idle_exit {
        None => take_over_from_on_demand(&config.socket).await?,
        Some(_) => None,
    };
    // The address first: a taken port must not leave a new database or a socket behind.
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| {
            Error::Config(format!(
                "cannot listen on {}: {error} (is another daemon or program using it? choose another with --listen)",
                config.listen
            ))
        })?;
    let verifying = std::time::Instant::now();
    // A daemon asked to stop before it serves (an on-demand one still waiting for the file that
    // a stopping daemon holds) leaves without binding a socket or creating anything.
    let mut stop = Box::pin(stop);
    let coordinator = tokio::select! {
        opened = open_coordinator(&config) => opened?,
        () = &mut stop => {
            tracing::info!("stopped before serving");
            return Ok(());
        }
    };
    if futures_util::FutureExt::now_or_never(&mut stop).is_some() {
        tracing::info!("stopped before serving");
        return Ok(());
    }
    let keys = crate::identity::Keys::load_or_create(&config.db)
        .map_err(|error| Error::Config(error.to_string()))?;
    let open_ms = verifying.elapsed().as_secs_f64() * 1e3;
    let (live_tx, live) = watch::channel(coordinator.ledger().head()?.seq);
    fan_out(&coordinator, live_tx);
    let closing = coordinator.ledger().follow_head();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let app = Arc::new(App {
        coordinator,
        token: config.token.clone(),
        keys,
        trusted_host: auth == AuthMode::TrustedHost,
        on_demand: config.idle_exit.is_some(),
        live,
        shutdown_grace: config.shutdown_grace,
        sse_permits: Arc::new(Semaphore::new(SSE_SUBSCRIBERS_MAX)),
        verify_permits: Arc::new(Semaphore::new(VERIFY_RUNS_MAX)),
        metrics: Arc::clone(&metrics),
        shutdown,
        refusal_logged: std::sync::atomic::AtomicBool::new(false),
    });

    let unix = bind_socket(&config.socket)?;
    // Which socket file is ours: at exit only that one is removed, never a successor's.
    let our_socket = socket_inode(&config.socket);
    let our_link = link_default_socket(&config.db, &config.socket);
    let connections_max = crate::daemon::listen::connection_bound(2);
    metrics
        .connections_max
        .store(connections_max as u64, Ordering::Relaxed);
    let limits = |tls: Option<tokio_rustls::TlsAcceptor>| crate::daemon::listen::Limits {
        connections_max,
        header_read_timeout: HEADER_READ_TIMEOUT,
        shutdown_grace: config.shutdown_grace,
        tls,
    };
    let tcp_address = tcp.local_addr()?;
    let (routes, tcp_routes) = guarded_routes(&app, tcp_address);
    announce(
        &config,
        &app,
        auth,
        tcp_address,
        connections_max,
        open_ms,
        took_over,
    )?;

    let watching = shutdown_tx.subscribe();
    let idle = idle_exit(Arc::clone(&app), config.idle_exit);
    tokio::spawn(async move {
        tokio::select! {
            () = stop => {}
            () = idle => {}
        }
        tracing::info!(
            "shutting down: no new connections; in-flight requests get the grace period"
        );
        let _ = shutdown_tx.send(true);
    });
    let tcp_server = crate::daemon::listen::serve(
        tcp,
        tcp_routes,
        limits(tls),
        Arc::clone(&metrics.tcp),
        watching.clone(),
    );
    let unix_server = crate::daemon::listen::serve(
        unix,
        routes,
        limits(None),
        Arc::clone(&metrics.unix),
        watching.clone(),
    );
    tokio::join!(tcp_server, unix_server);
    // Dropping the last handle stops the writer after what is queued and closes the file
    // (a request still in flight holds a handle until it is answered).
    drop(app);
    let closed = tokio::task::spawn_blocking(move || closing.wait_closed()).await;
    // The socket goes last: once it is gone the file is free, so whoever waits for it (a
    // daemon taking over, a client starting a new one) can open the file at once.
    if let Some((link, inode)) = our_link
        && socket_inode(&link) == Some(inode)
    {
        let _ = std::fs::remove_file(&link);
    }
    if our_socket.is_some() && socket_inode(&config.socket) == our_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    closed.map_err(|error| Error::Config(format!("waiting for the ledger to close: {error}")))?;
    tracing::info!("stopped; the ledger is closed");
    Ok(())
}

/// With `--socket` elsewhere, links the default path (`<db>.sock`) to it, so that every command
/// and client given only the database finds this daemon (it found none there, waited for one to
/// start and gave up). Best effort: a daemon that answers there is left alone, and a failure is
/// logged. Returns the link and its inode, to remove at exit only if it is still ours.
fn link_default_socket(db: &Path, socket: &Path) -> Option<(PathBuf, u64)> {
    let default = wire::socket_path(db);
    let target = std::path::absolute(socket).ok()?;
    if std::path::absolute(&default).ok()? == target {
        return None;
    }
    // `exists` follows links: a dangling one (a daemon gone) or a dead socket is replaced.
    if default.exists() && std::os::unix::net::UnixStream::connect(&default).is_ok() {
        tracing::warn!(
            default = %default.display(),
            "another daemon answers on the default socket; commands given only --db reach it, not this one"
        );
        return None;
    }
    let linked = std::fs::remove_file(&default)
        .or_else(|error| match error.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(error),
        })
        .and_then(|()| std::os::unix::fs::symlink(&target, &default));
    if let Err(error) = linked {
        tracing::warn!(
            default = %default.display(),
            %error,
            "cannot link the default socket to --socket; commands given only --db will not find this daemon"
        );
        return None;
    }
    socket_inode(&default).map(|inode| (default, inode))
}

fn socket_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|meta| meta.ino())
}

/// Binds the Unix socket at `path` with mode 0600. A socket left by a crashed daemon (nobody
/// answers on it) is replaced; a live one is an error.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::Config(format!(
                    "another daemon is already listening on {}; stop it first",
                    path.display()
                )));
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    // Bind under a temporary name and rename into place once private, so nobody can connect
    // while the socket still has the default permissions.
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    Ok(listener)
}

/// Publishes each committed seq to SSE streams, which read the records themselves: the ledger
/// is the buffer, so no record is held in memory for a slow subscriber. Runs on the committing
/// thread (a watch channel's send never blocks); the sender is dropped when the ledger closes.
fn fan_out(coordinator: &Coordinator, live: watch::Sender<u64>) {
    coordinator.ledger().on_commit(move |head| {
        live.send_replace(head.seq);
    });
}

async fn require_token(State(app): State<Shared>, request: Request, next: Next) -> Response {
    use subtle::ConstantTimeEq;
    let expected = app.token.as_deref().unwrap_or_default().as_bytes();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    match bool::from(given.ct_eq(expected)) {
        true => next.run(request).await,
        false => ApiError::new(
            401,
            "unauthorized",
            "missing or wrong token: send `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// A daemon run on a background thread of this process (for `fleetlog demo` and
/// `fleetlog bench`): serves until dropped, and returns only once the file is closed.
pub struct BackgroundDaemon {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl BackgroundDaemon {
    /// Serves `db` on an ephemeral loopback port and `<db>.sock`, holding it exclusively as
    /// `serve` does; returns once it answers.
    pub fn start(db: &Path) -> Result<BackgroundDaemon, Error> {
        Self::start_with(db, true)
    }

    /// As [`BackgroundDaemon::start`]; without `exclusive`, as `serve --shared`.
    pub fn start_with(db: &Path, exclusive: bool) -> Result<BackgroundDaemon, Error> {
        let socket = wire::socket_path(db);
        let config = ServerConfig {
            db: db.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            socket: socket.clone(),
            token: None,
            shutdown_grace: SHUTDOWN_GRACE,
            skip_verify: false,
            exclusive,
            auth: Some(AuthMode::Agents),
            tls: None,
            idle_exit: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        // Threads named so `bench` can tell the daemon's CPU time from its clients'.
        let thread = std::thread::Builder::new()
            .name("fleetlog-daemon".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("fleetlog-daemon")
                    .build()?;
                runtime.block_on(serve(config, async {
                    let _ = stopped.await;
                }))
            })?;
        let started = std::time::Instant::now();
        while crate::client::BlockingClient::for_db(db).is_none() {
            if thread.is_finished() || started.elapsed() > std::time::Duration::from_secs(10) {
                return match thread.join() {
                    Ok(Err(error)) => Err(error),
                    _ => Err(Error::Config("the daemon did not start".to_owned())),
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(BackgroundDaemon {
            socket,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for BackgroundDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
