"""fleetlog for Python: coordinate agent processes through one durable, hash-chained log.

`FleetlogClient` finds (or starts) the daemon serving a ledger and offers signals, heartbeats,
locks, tasks, board threads, decisions and approvals; `TelemetryLogger` and
`TelemetryAnalyzer` record and analyse workflows. Standard library only."""

from fleetlog._daemon import FleetlogError
from fleetlog.aio import AsyncApproval, AsyncFleetlogClient
from fleetlog.client import Approval, FleetlogClient, HeartbeatThread, Signal, Task
from fleetlog.telemetry import TelemetryAnalyzer, TelemetryLogger

__all__ = [
    "Approval",
    "AsyncApproval",
    "AsyncFleetlogClient",
    "FleetlogClient",
    "FleetlogError",
    "HeartbeatThread",
    "Signal",
    "Task",
    "TelemetryAnalyzer",
    "TelemetryLogger",
]
__version__ = "0.1.0"
