"""`FleetlogClient`: signals, heartbeats, locks, tasks, board, decisions and approvals, with the
call shapes of the tools fleets come from (Attune AI's signals and HeartbeatCoordinator,
AgentCoord's CoordinationClient)."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from fleetlog import _daemon
from fleetlog._daemon import FleetlogError


@dataclass
class Signal:
    id: int
    signal_type: str
    source_agent: str
    target: Any
    payload: Any
    sent_at: str
    correlation_id: Optional[int] = None

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "Signal":
        return cls(
            id=value["id"],
            signal_type=value["kind"],
            source_agent=value["from"],
            target=value.get("target"),
            payload=value.get("payload"),
            sent_at=value.get("sent_at", ""),
            correlation_id=value.get("correlation_id"),
        )


@dataclass
class Task:
    """A claimed task. Set `result` before the `claim_task` block ends to complete it with it."""

    id: int
    title: str
    payload: Any
    tags: List[str]
    attempts: int
    raw: Dict[str, Any] = field(repr=False)
    result: Any = None


class Approval:
    """A pending approval; `wait()` answers "approved", "rejected", "expired" or "pending"."""

    def __init__(self, client: "FleetlogClient", approval_id: int):
        self._client = client
        self.id = approval_id

    def wait(self, timeout: float = 600.0) -> str:
        answer = self._client._command(
            {
                "command": "await_approval",
                "approval": self.id,
                "wait_ms": max(1, int(timeout * 1000)),
            },
            timeout=timeout + 30,
        )
        if answer.get("timed_out"):
            return "pending"
        return answer["approval"]["state"]

    def state(self) -> str:
        return self._client._get(f"/v1/approvals/{self.id}")["state"]


class FleetlogClient:
    """A client acting as `agent` on the ledger `db` (default `FLEETLOG_DB`, else
    `./fleetlog.redb`). With no daemon serving it, one is started in the background. `url`
    (`host:port` or `http://host:port`, or `FLEETLOG_URL`) uses a daemon elsewhere, with
    `token` (or `FLEETLOG_TOKEN`)."""

    def __init__(
        self,
        db: Optional[str] = None,
        agent: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        start_daemon: bool = True,
    ):
        self.agent = agent or os.environ.get("FLEETLOG_AGENT")
        self.db = Path(db or os.environ.get("FLEETLOG_DB") or "fleetlog.redb").absolute()
        url = url or os.environ.get("FLEETLOG_URL")
        self._token = token or os.environ.get("FLEETLOG_TOKEN")
        self._credentials: Dict[str, str] = {}
        if url:
            where = url.split("://", 1)[-1].rstrip("/")
            self._endpoint = ("tcp", where)
        else:
            sock = (
                _daemon.ensure_daemon(self.db)
                if start_daemon
                else _daemon.socket_path(self.db)
            )
            self._endpoint = ("unix", str(sock))
        self._connections = _daemon.Connections(self._endpoint)

    # --- plumbing ----------------------------------------------------------------------
    def close(self) -> None:
        """Closes the kept-alive connections (a later call opens new ones)."""
        self._connections.close()

    def __enter__(self) -> "FleetlogClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        connections = getattr(self, "_connections", None)
        if connections is not None:
            connections.close()

    def _agent(self, agent: Optional[str]) -> str:
        chosen = agent or self.agent
        if not chosen:
            raise ValueError("name the agent: FleetlogClient(agent=...) or agent=...")
        return chosen

    def _credential(self, agent: str) -> Optional[str]:
        if os.environ.get("FLEETLOG_CREDENTIAL"):
            return os.environ["FLEETLOG_CREDENTIAL"].strip()
        if agent in self._credentials:
            return self._credentials[agent]
        stored = self.db.with_name(self.db.name + ".keys") / "agents" / _file_name(agent)
        try:
            return stored.read_text().strip() or None
        except OSError:
            return None

    def _keep_credential(self, agent: str, credential: str) -> None:
        self._credentials[agent] = credential
        folder = self.db.with_name(self.db.name + ".keys") / "agents"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / _file_name(agent)
            temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(credential)
            os.replace(temporary, path)
        except OSError:
            pass  # kept in memory for this process

    def _headers(self, agent: Optional[str] = None) -> Dict[str, str]:
        headers: Dict[str, str] = {}
        if self._token and self._endpoint[0] == "tcp":
            headers["Authorization"] = f"Bearer {self._token}"
        if agent:
            credential = self._credential(agent)
            if credential:
                headers["Fleetlog-Credential"] = credential
        return headers

    def _call(self, method: str, path: str, body=None, agent=None, timeout=60.0) -> Any:
        status, answer = self._connections.request(
            method, path, body, self._headers(agent), timeout
        )
        if status >= 400:
            answer = answer or {}
            raise FleetlogError(
                answer.get("error", "error"),
                answer.get("message", f"HTTP {status}"),
                status,
                answer.get("details"),
            )
        return answer

    def _command(self, body: Dict[str, Any], agent: Optional[str] = None, timeout=60.0) -> Any:
        acting = self._agent(agent or body.get("agent"))
        body = {**body, "agent": acting}
        return self._call("POST", "/v1/commands", body, agent=acting, timeout=timeout)

    def _get(self, path: str) -> Any:
        return self._call("GET", path)

    def _query(self, query: Dict[str, Any]) -> Any:
        return self._call("POST", "/v1/queries", query)

    # --- agents and heartbeats ------------------------------------------------------------
    def register(
        self,
        agent: Optional[str] = None,
        role: str = "",
        name: str = "",
        capabilities: Sequence[str] = (),
        working_on: str = "",
        metadata: Any = None,
    ) -> str:
        """Registers (or re-registers) the agent; answers its credential, which this client
        keeps and sends from then on."""
        acting = self._agent(agent)
        answer = self._command(
            {
                "command": "register",
                "role": role,
                "name": name or acting,
                "capabilities": list(capabilities),
                "working_on": working_on,
                "metadata": metadata,
            },
            agent=acting,
        )
        credential = answer.get("credential", "")
        if credential:
            self._keep_credential(acting, credential)
        return credential

    def deregister(self, agent: Optional[str] = None, reason: str = "") -> None:
        self._command({"command": "deregister", "reason": reason}, agent=agent)

    def beat(
        self,
        status: Optional[str] = None,
        progress: Optional[float] = None,
        current_task: Optional[str] = None,
        ttl_seconds: float = 30.0,
        agent: Optional[str] = None,
    ) -> None:
        """A heartbeat; what is left out keeps its last value."""
        body: Dict[str, Any] = {"command": "heartbeat", "ttl_ms": int(ttl_seconds * 1000)}
        if status is not None:
            body["status"] = status
        if progress is not None:
            body["progress"] = progress
        if current_task is not None:
            body["current_task"] = current_task
        self._command(body, agent=agent)

    def heartbeat(
        self, interval: float = 10.0, ttl_seconds: Optional[float] = None, **fields: Any
    ) -> "HeartbeatThread":
        """A background thread that beats every `interval` seconds while the `with` block
        runs (or until `.stop()`)."""
        return HeartbeatThread(self, interval, ttl_seconds or interval * 3, fields)

    def get_active_agents(self) -> List[Dict[str, Any]]:
        return self._get("/v1/agents?limit=1000")["agents"]

    def is_agent_alive(self, agent_id: str) -> bool:
        try:
            return bool(self._get(f"/v1/agents/{agent_id}")["alive"])
        except FleetlogError as error:
            if error.status == 404:
                return False
            raise

    def get_stale_agents(self, threshold_seconds: float = 60.0) -> List[Dict[str, Any]]:
        threshold = int(threshold_seconds * 1000)
        return self._get(f"/v1/agents/stale?threshold_ms={threshold}&limit=1000")["agents"]

    # --- signals -----------------------------------------------------------------------------
    def send_signal(
        self,
        signal_type: str,
        target_agent: Optional[str] = None,
        payload: Any = None,
        ttl_seconds: Optional[float] = None,
        correlation_id: Optional[int] = None,
        agent: Optional[str] = None,
    ) -> int:
        """Sends to `target_agent` (None: broadcast); answers the signal's id.
        `correlation_id` names the signal this one answers."""
        body: Dict[str, Any] = {
            "command": "send_signal",
            "kind": signal_type,
            "target": target_agent,
            "payload": payload,
            "correlation_id": correlation_id,
        }
        if ttl_seconds is not None:
            body["ttl_ms"] = max(1, int(ttl_seconds * 1000))
        return self._command(body, agent=agent)["id"]

    def _receive(self, signal_type, source_agent, consume, wait_ms, correlation_id, agent):
        selector: Dict[str, Any] = {"kind": signal_type}
        if source_agent:
            selector["from"] = source_agent
        if correlation_id:
            selector["correlation_id"] = correlation_id
        body: Dict[str, Any] = {
            "command": "receive_signal",
            "filter": selector,
            "consume": consume,
        }
        if wait_ms is not None:
            body["wait_ms"] = max(1, wait_ms)
        timeout = (wait_ms or 0) / 1000 + 30
        answer = self._command(body, agent=agent, timeout=timeout)
        signal = answer.get("signal")
        return Signal.from_json(signal) if signal else None

    def wait_for_signal(
        self,
        signal_type: str,
        source_agent: Optional[str] = None,
        timeout: float = 30.0,
        consume: bool = True,
        agent: Optional[str] = None,
    ) -> Optional[Signal]:
        """Blocks until a matching signal arrives (woken by the send, not polling) or `timeout`
        seconds pass (None)."""
        return self._receive(
            signal_type, source_agent, consume, int(timeout * 1000), None, agent
        )

    def check_signal(
        self,
        signal_type: str,
        source_agent: Optional[str] = None,
        consume: bool = True,
        agent: Optional[str] = None,
    ) -> Optional[Signal]:
        """The oldest matching signal now, or None."""
        return self._receive(signal_type, source_agent, consume, None, None, agent)

    def request(
        self,
        target_agent: str,
        signal_type: str,
        payload: Any = None,
        timeout: float = 30.0,
        agent: Optional[str] = None,
    ) -> Optional[Signal]:
        """Request/response: sends, then waits for the reply `respond` sends back (kind
        `<signal_type>.reply`, correlated by the request's id)."""
        request_id = self.send_signal(signal_type, target_agent, payload, agent=agent)
        return self._receive(
            f"{signal_type}.reply", target_agent, True, int(timeout * 1000), request_id, agent
        )

    def respond(self, request: Signal, payload: Any = None, agent: Optional[str] = None) -> int:
        """Answers a `request`: the reply goes to its sender with its correlation id."""
        return self.send_signal(
            f"{request.signal_type}.reply",
            request.source_agent,
            payload,
            correlation_id=request.id,
            agent=agent,
        )

    # --- locks ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock_file(
        self,
        path: str,
        intent: str = "",
        ttl: float = 60.0,
        wait: float = 30.0,
        agent: Optional[str] = None,
        slots: Optional[int] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Holds the lock on `path` for the block (waiting up to `wait` seconds for it), and
        releases it on exit, whatever happens. Yields the lock (its `token` fences writes).

        With `slots=N`, `path` is a counting semaphore: up to N holders at once (e.g. LLM rate
        slots); the lock yielded is the slot granted (`resource` is `<path>/slot-<i>`)."""
        request: Dict[str, Any] = {
            "command": "acquire_lock",
            "resource": path,
            "ttl_ms": int(ttl * 1000),
            "intent": intent,
            "wait_ms": max(1, int(wait * 1000)),
        }
        if slots is not None:
            request["slots"] = slots
        answer = self._command(
            request,
            agent=agent,
            timeout=wait + 30,
        )
        if answer.get("timed_out"):
            raise FleetlogError("timed_out", f"{path} stayed locked for {wait} s", 408)
        lock = answer["lock"]
        try:
            yield lock
        finally:
            with contextlib.suppress(FleetlogError):
                self._command(
                    {
                        "command": "release_lock",
                        "resource": lock["resource"],
                        "token": lock["token"],
                    },
                    agent=agent,
                )

    # --- tasks ----------------------------------------------------------------------------------
    def enqueue_task(
        self,
        title: str,
        payload: Any = None,
        priority: int = 0,
        tags: Sequence[str] = (),
        key: Optional[str] = None,
        max_attempts: int = 3,
        agent: Optional[str] = None,
        **spec: Any,
    ) -> int:
        body = {
            "title": title,
            "payload": payload,
            "priority": priority,
            "tags": list(tags),
            "max_attempts": max_attempts,
            **spec,
        }
        if key is not None:
            body["key"] = key
        return self._command({"command": "enqueue", "spec": body}, agent=agent)["id"]

    @contextlib.contextmanager
    def claim_task(
        self,
        tags: Sequence[str] = (),
        wait: float = 0.0,
        lease_seconds: float = 60.0,
        tag_match: str = "all",
        agent: Optional[str] = None,
    ) -> Iterator[Optional[Task]]:
        """Claims the best task (waiting up to `wait` seconds); yields it, or None if there
        is none. On exit it is completed (with `task.result`), or failed with the exception."""
        body: Dict[str, Any] = {
            "command": "claim",
            "tags": list(tags),
            "tag_match": tag_match,
            "lease_ttl_ms": int(lease_seconds * 1000),
        }
        if wait > 0:
            body["wait_ms"] = int(wait * 1000)
        answer = self._command(body, agent=agent, timeout=wait + 30)
        raw = answer.get("task")
        if not raw:
            yield None
            return
        task = Task(
            id=raw["id"],
            title=raw["title"],
            payload=raw.get("payload"),
            tags=raw.get("tags", []),
            attempts=raw.get("attempts", 1),
            raw=raw,
        )
        try:
            yield task
        except BaseException as error:
            with contextlib.suppress(FleetlogError):
                self._command(
                    {"command": "fail", "task": task.id, "error": repr(error), "retryable": True},
                    agent=agent,
                )
            raise
        else:
            self._command(
                {"command": "complete", "task": task.id, "result": task.result}, agent=agent
            )

    # --- board, decisions, approvals ---------------------------------------------------------
    def post_thread(self, title: str, message: str, priority: int = 0, agent=None) -> int:
        return self._command(
            {"command": "post", "title": title, "message": message, "priority": priority},
            agent=agent,
        )["id"]

    def reply(self, thread: int, message: str, agent=None) -> None:
        self._command({"command": "reply", "thread": thread, "message": message}, agent=agent)

    def log_decision(
        self,
        decision_type: str,
        reason: str,
        alternatives: Sequence[str] = (),
        context: str = "",
        agent: Optional[str] = None,
    ) -> int:
        return self._command(
            {
                "command": "log_decision",
                "decision_type": decision_type,
                "reason": reason,
                "alternatives": list(alternatives),
                "context": context,
            },
            agent=agent,
        )["id"]

    def request_approval(
        self,
        action: str,
        approvers: Sequence[str] = (),
        timeout: float = 3600.0,
        context: Any = None,
        agent: Optional[str] = None,
    ) -> Approval:
        answer = self._command(
            {
                "command": "request_approval",
                "action": action,
                "approvers": list(approvers),
                "timeout_ms": int(timeout * 1000),
                "context": context,
            },
            agent=agent,
        )
        return Approval(self, answer["id"])

    def decide(self, approval: int, approved: bool, reason: str = "", agent=None) -> None:
        self._command(
            {"command": "decide", "approval": approval, "approved": approved, "reason": reason},
            agent=agent,
        )

    # --- analytics --------------------------------------------------------------------------
    def query_best_agent(
        self, task: str, domain: Optional[str] = None, min_confidence: float = 0.3, top: int = 5
    ) -> List[Dict[str, Any]]:
        return self._query(
            {
                "query": "best_agent",
                "task": task,
                "domain": domain,
                "min_confidence": min_confidence,
                "top": top,
            }
        )["candidates"]


class HeartbeatThread:
    """Beats on a daemon thread until stopped; a context manager."""

    def __init__(self, client: FleetlogClient, interval: float, ttl: float, fields: Dict):
        self._client = client
        self._interval = interval
        self._ttl = ttl
        self._fields = fields
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: List[Exception] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._client.beat(ttl_seconds=self._ttl, **self._fields)
            except Exception as error:  # noqa: BLE001 - kept for the caller to inspect
                self.errors.append(error)
            self._stop.wait(self._interval)

    def start(self) -> "HeartbeatThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "HeartbeatThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _file_name(agent: str) -> str:
    """The file an agent's credential is kept in (the same encoding the CLI uses)."""
    out = []
    for index, byte in enumerate(agent.encode()):
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_"):
            out.append(char)
        elif char == "." and index > 0:
            out.append(".")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)
