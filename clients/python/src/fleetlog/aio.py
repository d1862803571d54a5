"""`AsyncFleetlogClient`: the same API for asyncio agents. Each call runs the blocking client
on a worker thread (`asyncio.to_thread`), so a wait parks a thread, never the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, AsyncIterator, Callable, Dict, Optional, Sequence

from fleetlog.client import Approval, FleetlogClient, Signal, Task


class AsyncFleetlogClient:
    """Wraps a `FleetlogClient` (made from the same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.sync = FleetlogClient(*args, **kwargs)

    async def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

    async def register(self, *args: Any, **kwargs: Any) -> str:
        return await self._run(self.sync.register, *args, **kwargs)

    async def beat(self, *args: Any, **kwargs: Any) -> None:
        await self._run(self.sync.beat, *args, **kwargs)

    async def send_signal(self, *args: Any, **kwargs: Any) -> int:
        return await self._run(self.sync.send_signal, *args, **kwargs)

    async def wait_for_signal(self, *args: Any, **kwargs: Any) -> Optional[Signal]:
        return await self._run(self.sync.wait_for_signal, *args, **kwargs)

    async def check_signal(self, *args: Any, **kwargs: Any) -> Optional[Signal]:
        return await self._run(self.sync.check_signal, *args, **kwargs)

    async def get_active_agents(self) -> list:
        return await self._run(self.sync.get_active_agents)

    async def is_agent_alive(self, agent_id: str) -> bool:
        return await self._run(self.sync.is_agent_alive, agent_id)

    async def get_stale_agents(self, threshold_seconds: float = 60.0) -> list:
        return await self._run(self.sync.get_stale_agents, threshold_seconds)

    async def enqueue_task(self, *args: Any, **kwargs: Any) -> int:
        return await self._run(self.sync.enqueue_task, *args, **kwargs)

    async def log_decision(self, *args: Any, **kwargs: Any) -> int:
        return await self._run(self.sync.log_decision, *args, **kwargs)

    async def post_thread(self, *args: Any, **kwargs: Any) -> int:
        return await self._run(self.sync.post_thread, *args, **kwargs)

    async def request_approval(self, *args: Any, **kwargs: Any) -> "AsyncApproval":
        approval = await self._run(self.sync.request_approval, *args, **kwargs)
        return AsyncApproval(approval)

    @contextlib.asynccontextmanager
    async def lock_file(self, path: str, **kwargs: Any) -> AsyncIterator[Dict[str, Any]]:
        manager = self.sync.lock_file(path, **kwargs)
        lock = await asyncio.to_thread(manager.__enter__)
        try:
            yield lock
        except BaseException as error:
            await asyncio.to_thread(manager.__exit__, type(error), error, error.__traceback__)
            raise
        else:
            await asyncio.to_thread(manager.__exit__, None, None, None)

    @contextlib.asynccontextmanager
    async def claim_task(
        self, tags: Sequence[str] = (), **kwargs: Any
    ) -> AsyncIterator[Optional[Task]]:
        manager = self.sync.claim_task(tags, **kwargs)
        task = await asyncio.to_thread(manager.__enter__)
        try:
            yield task
        except BaseException as error:
            # The sync manager fails the task with the error, then re-raises it.
            with contextlib.suppress(BaseException):
                await asyncio.to_thread(
                    manager.__exit__, type(error), error, error.__traceback__
                )
            raise
        else:
            await asyncio.to_thread(manager.__exit__, None, None, None)


class AsyncApproval:
    def __init__(self, approval: Approval):
        self._approval = approval
        self.id = approval.id

    async def wait(self, timeout: float = 600.0) -> str:
        return await asyncio.to_thread(self._approval.wait, timeout)
