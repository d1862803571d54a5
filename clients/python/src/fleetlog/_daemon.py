"""Reaching the daemon that serves a ledger: HTTP/1.1 over its Unix socket, and starting one in
the background when none answers (it exits by itself once idle)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
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


def request(
    endpoint: Tuple[str, str],
    method: str,
    path: str,
    body: Optional[Dict[str, Any]] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = 60.0,
) -> Tuple[int, Any]:
    """One request; the status and the JSON answer. `endpoint` is ("unix", path) or
    ("tcp", "host:port")."""
    kind, where = endpoint
    if kind == "unix":
        conn: http.client.HTTPConnection = _UnixConnection(where, timeout)
    else:
        host, _, port = where.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = {"error": "not_json", "message": raw.decode(errors="replace")}
    return response.status, answer


def healthy(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        status, _ = request(("unix", str(sock)), "GET", "/v1/health/live", timeout=2.0)
        return status == 200
    except OSError:
        return False


def binary() -> str:
    named = os.environ.get("FLEETLOG_BIN")
    if named:
        return named
    found = shutil.which("fleetlog")
    if found:
        return found
    raise FleetlogError(
        "no_binary",
        "the fleetlog binary was not found: set FLEETLOG_BIN to its path, or put it on PATH "
        "(`cargo install --path cli` in the fleetlog repository builds it)",
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
