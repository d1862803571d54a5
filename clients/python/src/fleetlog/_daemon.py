"""Reaching the daemon that serves a ledger: HTTP/1.1 over its Unix socket, and starting one in
the background when none answers (it exits by itself once idle)."""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

IDLE_EXIT_MS_DEFAULT = 30_000
START_TIMEOUT_S = 15.0


class FleetlogError(Exception):
    """A refusal from fleetlog: `code` is the stable error code (`lock_held`, `unknown_agent`,
    ...), `details` the refusal's fields, `status` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 0, details: Optional[dict] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def socket_path(db: Path) -> Path:
    return db.with_name(db.name + ".sock")


def _connect(endpoint: Tuple[str, str], timeout: Optional[float]) -> http.client.HTTPConnection:
    kind, where = endpoint
    if kind == "unix":
        return _UnixConnection(where, timeout)
    host, _, port = where.rpartition(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _encode(body: Optional[Dict[str, Any]], headers: Optional[Dict[str, str]]):
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    return data, sent


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"error": "not_json", "message": raw.decode(errors="replace")}


def request(
    endpoint: Tuple[str, str],
    method: str,
    path: str,
    body: Optional[Dict[str, Any]] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = 60.0,
) -> Tuple[int, Any]:
    """One request on a connection of its own; the status and the JSON answer. `endpoint` is
    ("unix", path) or ("tcp", "host:port")."""
    connections = Connections(endpoint)
    try:
        return connections.request(method, path, body, headers, timeout)
    finally:
        connections.close()


class Connections:
    """Keep-alive connections to one daemon, shared by a client's threads: a request takes an
    idle one (or opens one) and gives it back after a complete answer, so most requests pay no
    connect. A connection idle longer than `REUSE_IDLE_S` (the daemon closes idle ones after
    10 s), or that the daemon has already closed, is not reused. Only reads are retried on a
    fresh connection when a reused one turns out dead: a command is never sent twice."""

    REUSE_IDLE_S = 5.0
    IDLE_MAX = 8

    def __init__(self, endpoint: Tuple[str, str]):
        self.endpoint = endpoint
        self._idle: list = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _take(self) -> Optional[http.client.HTTPConnection]:
        if os.getpid() != self._pid:
            # A forked child must not talk on its parent's sockets: forget them (the parent
            # still owns and closes them) and open its own.
            self._lock = threading.Lock()
            self._idle = []
            self._pid = os.getpid()
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                since, conn = self._idle.pop()
            if now - since <= self.REUSE_IDLE_S and not _closed_by_peer(conn):
                return conn
            conn.close()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.IDLE_MAX:
                self._idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = 60.0,
    ) -> Tuple[int, Any]:
        data, sent = _encode(body, headers)
        read_only = method == "GET" or path == "/v1/queries"
        while True:
            conn = self._take()
            reused = conn is not None
            if conn is None:
                conn = _connect(self.endpoint, timeout)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(method, path, body=data, headers=sent)
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                if reused and read_only:
                    continue  # a keep-alive connection the daemon had just closed
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._give(conn)
            return response.status, _decode(raw)


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the daemon (an answer
    never arrives unasked)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def healthy(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        status, _ = request(("unix", str(sock)), "GET", "/v1/health/live", timeout=2.0)
        return status == 200
    except OSError:
        return False


BUNDLED_BINARY = Path(__file__).parent / "_bin" / "fleetlog"


def binary() -> str:
    """The fleetlog binary: FLEETLOG_BIN, else the one bundled in this wheel, else PATH."""
    named = os.environ.get("FLEETLOG_BIN")
    if named:
        return named
    if BUNDLED_BINARY.exists():
        return str(BUNDLED_BINARY)
    found = shutil.which("fleetlog")
    if found:
        return found
    raise FleetlogError(
        "no_binary",
        "the fleetlog binary was not found: set FLEETLOG_BIN to its path, put it on PATH "
        "(`cargo install --path cli` in the fleetlog repository builds it), or install a "
        "wheel that bundles it (`clients/python/build_wheel.sh` makes one)",
    )


def ensure_daemon(db: Path, idle_exit_ms: Optional[int] = None) -> Path:
    """The socket of a daemon serving `db`, starting one (detached, logging to `<db>.log`,
    exiting once idle) if none answers."""
    sock = socket_path(db)
    if healthy(sock):
        return sock
    idle = idle_exit_ms or int(os.environ.get("FLEETLOG_IDLE_EXIT_MS", IDLE_EXIT_MS_DEFAULT))
    log = db.with_name(db.name + ".log")
    db.parent.mkdir(parents=True, exist_ok=True)
    program = binary()
    if not os.access(program, os.X_OK):
        raise FleetlogError("no_binary", f"{program} (FLEETLOG_BIN or PATH) is not executable")
    # The shell backgrounds the daemon and exits at once: the daemon is re-parented away from
    # this process (no zombie, nothing to reap) and lives in its own session.
    subprocess.run(
        [
            "/bin/sh",
            "-c",
            'exec "$0" "$@" </dev/null >>"$FLEETLOG_LOG" 2>&1 &',
            program,
            "--db",
            str(db),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--idle-exit-ms",
            str(idle),
        ],
        env={**os.environ, "FLEETLOG_LOG": str(log)},
        check=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        # Concurrent starters race safely: the losers' daemons refuse to open the file, and
        # everyone reaches the winner's socket.
        if healthy(sock):
            return sock
        time.sleep(0.02)
    raise FleetlogError(
        "daemon_not_started",
        f"no daemon answered on {sock} within {START_TIMEOUT_S:.0f} s; see {log}",
    )
