"""OaK's workflow telemetry shapes over fleetlog: `TelemetryLogger` appends (each call an event,
durable when it returns) and `TelemetryAnalyzer` reads the analytics the daemon folds from them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from fleetlog.client import FleetlogClient


class TelemetryLogger:
    """Logs workflows as OaK's TelemetryLogger does; `agent` is who records (default: the
    client's agent)."""

    def __init__(self, client: FleetlogClient, agent: Optional[str] = None):
        self._client = client
        self._agent = agent

    def log_workflow_start(
        self,
        workflow_id: str,
        project: str = "",
        agents: Sequence[str] = (),
        estimated_duration_seconds: Optional[float] = None,
    ) -> None:
        body: Dict[str, Any] = {
            "command": "start_workflow",
            "workflow_id": workflow_id,
            "project": project,
            "agent_plan": list(agents),
        }
        if estimated_duration_seconds is not None:
            body["estimated_duration_ms"] = int(estimated_duration_seconds * 1000)
        self._client._command(body, agent=self._agent)

    def log_agent_invocation(
        self,
        workflow_id: str,
        agent_name: str,
        duration_seconds: float,
        success: bool = True,
        stage: Optional[str] = None,
        tier: str = "",
        cost_usd: float = 0.0,
        tokens: int = 0,
        description: str = "",
        tags: Sequence[str] = (),
        quality: Optional[float] = None,
    ) -> None:
        """One agent's stage of the workflow, completed."""
        self._client._command(
            {
                "command": "complete_stage",
                "workflow_id": workflow_id,
                "report": {
                    "stage": stage or agent_name,
                    "agent": agent_name,
                    "tier": tier,
                    "outcome": "success" if success else "failure",
                    "duration_ms": int(duration_seconds * 1000),
                    "cost_usd": cost_usd,
                    "tokens": tokens,
                    "description": description,
                    "tags": list(tags),
                    "quality": quality,
                },
            },
            agent=self._agent,
        )

    def log_agent_handoff(
        self,
        workflow_id: str,
        from_agent: str,
        to_agent: str,
        artifacts: Sequence[str] = (),
    ) -> None:
        self._client._command(
            {
                "command": "handoff",
                "workflow_id": workflow_id,
                "from_agent": from_agent,
                "to_agent": to_agent,
                "artifacts": list(artifacts),
            },
            agent=self._agent,
        )

    def log_workflow_complete(
        self,
        workflow_id: str,
        success: bool = True,
        duration_seconds: Optional[float] = None,
        agents_executed: Sequence[str] = (),
        error: Optional[str] = None,
    ) -> None:
        body: Dict[str, Any] = {
            "command": "complete_workflow",
            "workflow_id": workflow_id,
            "success": success,
            "error": error,
            "agents_executed": list(agents_executed),
        }
        if duration_seconds is not None:
            body["duration_ms"] = int(duration_seconds * 1000)
        self._client._command(body, agent=self._agent)


class TelemetryAnalyzer:
    """OaK's TelemetryAnalyzer: the same questions, answered from the log."""

    def __init__(self, client: FleetlogClient):
        self._client = client

    def analyze_workflows(self, project: Optional[str] = None) -> Dict[str, Any]:
        """fleetlog's workflow statistics, with OaK's names beside them
        (`total_workflows`, `successful_workflows`, `failed_workflows`,
        `average_duration_seconds`)."""
        stats = self._client._query({"query": "workflow_stats", "project": project})
        mean_ms = (stats.get("duration_ms") or {}).get("mean")
        stats.update(
            total_workflows=stats.get("total"),
            successful_workflows=stats.get("completed"),
            failed_workflows=stats.get("failed"),
            average_duration_seconds=None if mean_ms is None else mean_ms / 1000,
        )
        return stats

    def calculate_coordination_overhead(self, project: Optional[str] = None) -> Dict[str, Any]:
        return self._client._query({"query": "overhead", "project": project})

    def get_agent_performance_trends(
        self, agent_name: Optional[str] = None, days: int = 30
    ) -> Any:
        answer = self._client._query({"query": "trends", "agent": agent_name, "days": days})
        return answer

    def query_best_agent(
        self, task: str, domain: Optional[str] = None, min_confidence: float = 0.3
    ) -> List[Dict[str, Any]]:
        return self._client.query_best_agent(task, domain, min_confidence)
