"""fleetlog's MCP servers driven by the official MCP Python SDK (the `mcp` package), as Claude
Code or any SDK-built agent would: over stdio (`fleetlog mcp`) and over Streamable HTTP (the
daemon's `/mcp`). Skipped where the SDK is not installed (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from test_client import stop_daemon

try:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client

    HAVE_SDK = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_SDK = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failed(result) -> bool:
    # The SDK's 2.x models name it `is_error`, 1.x `isError`.
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


def text_of(result) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


@unittest.skipUnless(HAVE_SDK, "the official MCP SDK (pip install mcp) is not installed")
class McpSdkTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.db = Path(self.dir.name) / "fleet.redb"
        self.binary = os.environ["FLEETLOG_BIN"]

    def tearDown(self) -> None:
        stop_daemon(self.db)
        self.dir.cleanup()

    async def use(self, session: ClientSession, other: ClientSession) -> None:
        await session.initialize()
        await other.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        self.assertTrue({"register", "acquire_lock", "send_signal", "receive_signal", "workflow_stage"} <= tools)
        for s in (session, other):
            registered = await s.call_tool("register", {"role": "coder"})
            self.assertFalse(failed(registered), text_of(registered))
        held = await session.call_tool("acquire_lock", {"resource": "src/lib.rs", "ttl_ms": 60000})
        self.assertFalse(failed(held), text_of(held))
        refused = await other.call_tool("acquire_lock", {"resource": "src/lib.rs", "ttl_ms": 60000})
        self.assertTrue(failed(refused))
        self.assertTrue(text_of(refused).startswith("lock_held"), text_of(refused))
        sent = await other.call_tool("send_signal", {"kind": "review", "target": "a", "payload": {"pr": 7}})
        self.assertFalse(failed(sent), text_of(sent))
        got = await session.call_tool("receive_signal", {"kind": "review", "timeout_ms": 5000})
        self.assertEqual(json.loads(text_of(got))["signal"]["payload"], {"pr": 7})

    def test_the_stdio_server_with_the_official_sdk(self) -> None:
        def server(agent: str) -> StdioServerParameters:
            return StdioServerParameters(
                command=self.binary, args=["--db", str(self.db), "mcp", "--agent", agent]
            )

        async def run() -> None:
            async with stdio_client(server("a")) as (ra, wa), stdio_client(server("b")) as (rb, wb):
                async with ClientSession(ra, wa) as a, ClientSession(rb, wb) as b:
                    await self.use(a, b)

        asyncio.run(run())

    def test_the_daemons_streamable_http_endpoint_with_the_official_sdk(self) -> None:
        port = free_port()
        env = {**os.environ, "FLEETLOG_IDLE_EXIT_MS": "0"}
        daemon = subprocess.Popen(
            [self.binary, "--db", str(self.db), "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self.assertIn("fleetlog serving", daemon.stderr.readline())
            url = f"http://127.0.0.1:{port}/mcp"

            async def run() -> None:
                import httpx2 as httpx  # the SDK's HTTP client

                def client(agent: str):
                    return httpx.AsyncClient(headers={"Fleetlog-Agent": agent})

                async with client("a") as ha, client("b") as hb:
                    async with streamable_http_client(url, http_client=ha) as (ra, wa, *_), \
                            streamable_http_client(url, http_client=hb) as (rb, wb, *_):
                        async with ClientSession(ra, wa) as a, ClientSession(rb, wb) as b:
                            await self.use(a, b)

            asyncio.run(run())
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


if __name__ == "__main__":
    unittest.main()
