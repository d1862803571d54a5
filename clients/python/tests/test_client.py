"""The Python client against the real binary (FLEETLOG_BIN): several clients coordinate on one
ledger with no daemon started by hand."""

import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

from fleetlog import FleetlogClient, FleetlogError, TelemetryAnalyzer, TelemetryLogger


def _daemon_conn(db: Path):
    from fleetlog._daemon import _UnixConnection, socket_path

    return _UnixConnection(str(socket_path(db)), 5.0)


def stop_daemon(db: Path) -> None:
    """Stops the daemon the clients started: SIGTERM to the `serve` process for `db`."""
    sock = db.with_name(db.name + ".sock")
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(db).encode() in argv and b"serve" in argv:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except (OSError, ValueError):
                pass
    deadline = time.monotonic() + 10
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


class FleetTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.db = Path(self.dir.name) / "fleet.redb"

    def tearDown(self) -> None:
        stop_daemon(self.db)
        self.dir.cleanup()

    def client(self, agent: str) -> FleetlogClient:
        client = FleetlogClient(db=str(self.db), agent=agent)
        client.register(role="worker", capabilities=["python"])
        return client

    def test_the_first_client_starts_a_daemon_and_a_second_process_uses_it(self) -> None:
        a = self.client("a")
        self.assertTrue(self.db.with_name("fleet.redb.sock").exists())
        # Another process (the CLI) reaches the same daemon: no "already open" refusal.
        out = subprocess.run(
            [os.environ["FLEETLOG_BIN"], "--db", str(self.db), "--json", "agents"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertIn('"a"', out.stdout)
        self.assertTrue(a.is_agent_alive("a"))

    def test_a_waiting_agent_is_woken_by_a_signal_from_another(self) -> None:
        producer, consumer = self.client("producer"), self.client("consumer")
        got = {}

        def wait() -> None:
            got["signal"] = consumer.wait_for_signal("task_complete", timeout=20.0)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # let the wait park; the send wakes it either way
        sent = producer.send_signal("task_complete", target_agent="consumer", payload={"n": 7})
        waiter.join(timeout=30)
        signal = got["signal"]
        self.assertIsNotNone(signal)
        self.assertEqual((signal.id, signal.payload, signal.source_agent), (sent, {"n": 7}, "producer"))
        self.assertIsNone(consumer.check_signal("task_complete"), "consumed once")
        self.assertIsNone(consumer.wait_for_signal("nothing", timeout=0.1))

    def test_request_and_response_are_matched(self) -> None:
        asker, answerer = self.client("asker"), self.client("answerer")
        replies = {}

        def serve() -> None:
            request = answerer.wait_for_signal("question", timeout=20.0)
            answerer.respond(request, {"answer": 42})

        server = threading.Thread(target=serve)
        server.start()
        reply = asker.request("answerer", "question", {"q": "?"}, timeout=20.0)
        server.join(timeout=30)
        self.assertIsNotNone(reply)
        self.assertEqual(reply.payload, {"answer": 42})

    def test_heartbeats_liveness_and_stale_agents(self) -> None:
        a = self.client("a")
        a.beat(status="coding", progress=0.5, current_task="T-1", ttl_seconds=30)
        a.beat()  # keeps status, progress and task
        agent = [x for x in a.get_active_agents() if x["id"] == "a"][0]
        self.assertEqual((agent["status"], agent["progress"], agent["current_task"]), ("coding", 0.5, "T-1"))
        self.assertTrue(a.is_agent_alive("a"))
        self.assertFalse(a.is_agent_alive("nobody"))
        self.assertEqual(a.get_stale_agents(threshold_seconds=3600), [])
        with a.heartbeat(interval=0.05) as beating:
            time.sleep(0.2)
        self.assertEqual(beating.errors, [])

    def test_lock_file_excludes_and_releases_on_exit(self) -> None:
        a, b = self.client("a"), self.client("b")
        with a.lock_file("src/lib.rs", intent="edit", ttl=30) as lock:
            self.assertGreater(lock["token"], 0)
            with self.assertRaises(FleetlogError) as refused:
                with b.lock_file("src/lib.rs", wait=0.1):
                    pass
            self.assertEqual(refused.exception.code, "timed_out")
        with b.lock_file("src/lib.rs", wait=1.0):
            pass

    def test_lock_file_with_slots_admits_that_many_holders(self) -> None:
        a, b, c = self.client("a"), self.client("b"), self.client("c")
        with a.lock_file("llm", slots=2, ttl=30) as first, b.lock_file("llm", slots=2, ttl=30) as second:
            self.assertEqual({first["resource"], second["resource"]}, {"llm/slot-0", "llm/slot-1"})
            with self.assertRaises(FleetlogError) as refused:
                with c.lock_file("llm", slots=2, wait=0.1):
                    pass
            self.assertEqual(refused.exception.code, "timed_out")
        with c.lock_file("llm", slots=2, wait=1.0) as slot:
            self.assertEqual(slot["resource"], "llm/slot-0", "the released slots are free again")

    def test_claim_task_completes_on_exit_and_fails_on_exception(self) -> None:
        boss, worker = self.client("boss"), self.client("worker")
        done = boss.enqueue_task("build", tags=["backend"], key="B-1")
        broken = boss.enqueue_task("deploy", tags=["backend"], max_attempts=1)
        with worker.claim_task(tags=["backend"]) as task:
            self.assertEqual(task.id, done)
            task.result = {"ok": True}
        with self.assertRaises(RuntimeError):
            with worker.claim_task(tags=["backend"]) as task:
                self.assertEqual(task.id, broken)
                raise RuntimeError("boom")
        states = {t["id"]: t["state"] for t in boss._get("/v1/tasks")["tasks"]}
        self.assertEqual(states, {done: "completed", broken: "dead_lettered"})
        with worker.claim_task() as nothing:
            self.assertIsNone(nothing)

    def test_board_decisions_and_an_approval_gate(self) -> None:
        dev, lead = self.client("dev"), self.client("lead")
        thread = dev.post_thread("Schema change", "renaming a column")
        lead.reply(thread, "fine")
        decision = dev.log_decision("architecture", "simpler", alternatives=["redis"])
        self.assertGreater(decision, thread)
        approval = dev.request_approval("deploy", approvers=["lead"], timeout=60)
        self.assertEqual(approval.wait(timeout=0.1), "pending")
        lead.decide(approval.id, approved=False, reason="not today")
        self.assertEqual(approval.wait(timeout=5), "rejected")

    def test_oak_telemetry_feeds_the_analyzer(self) -> None:
        orchestrator = self.client("orchestrator")
        log = TelemetryLogger(orchestrator)
        log.log_workflow_start("wf-1", project="shop", agents=["planner", "coder"])
        log.log_agent_invocation("wf-1", "planner", duration_seconds=20, success=True, cost_usd=0.01,
                                 description="API development plan", tags=["backend"])
        log.log_agent_handoff("wf-1", "planner", "coder", artifacts=["plan.md"])
        log.log_agent_invocation("wf-1", "coder", duration_seconds=30, success=True, cost_usd=0.02,
                                 description="backend API development", tags=["backend"])
        log.log_workflow_complete("wf-1", success=True, duration_seconds=60)
        analyzer = TelemetryAnalyzer(orchestrator)
        stats = analyzer.analyze_workflows()
        self.assertEqual(stats["total_workflows"], 1, stats)
        overhead = analyzer.calculate_coordination_overhead()
        self.assertIn("overhead", overhead)
        best = analyzer.query_best_agent("API development", domain="backend", min_confidence=0.0)
        self.assertIn(best[0]["agent"], ("planner", "coder"))

    def test_six_concurrent_starters_share_one_daemon(self) -> None:
        script = (
            "import sys; from fleetlog import FleetlogClient; "
            "c = FleetlogClient(db=sys.argv[1], agent=sys.argv[2]); c.register(); "
            "c.send_signal('hello', target_agent=None)"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(__import__("sys").path)}
        starters = [
            subprocess.Popen([__import__("sys").executable, "-c", script, str(self.db), f"w{n}"], env=env)
            for n in range(6)
        ]
        codes = [starter.wait(timeout=60) for starter in starters]
        self.assertEqual(codes, [0] * 6)
        agents = FleetlogClient(db=str(self.db), agent="w0").get_active_agents()
        self.assertEqual(sorted(a["id"] for a in agents), [f"w{n}" for n in range(6)])

    def test_a_started_daemon_exits_once_idle(self) -> None:
        os.environ["FLEETLOG_IDLE_EXIT_MS"] = "300"
        try:
            self.client("a")
        finally:
            del os.environ["FLEETLOG_IDLE_EXIT_MS"]
        sock = self.db.with_name("fleet.redb.sock")
        deadline = time.monotonic() + 20
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(sock.exists(), "the idle daemon is still serving")
        # The next client starts a new one, and nothing was lost.
        self.assertTrue(self.client("b").is_agent_alive("a"))

    def test_a_client_keeps_its_connection_alive_across_requests(self) -> None:
        a = self.client("a")

        def unix_accepted() -> int:
            conn = _daemon_conn(self.db)
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
            conn.close()
            for line in body.splitlines():
                if line.startswith('fleetlog_connections_accepted_total{listener="unix"}'):
                    return int(line.rsplit(" ", 1)[1])
            raise AssertionError("no accepted-connections counter in /metrics")

        before = unix_accepted()
        for _ in range(20):
            a.beat(status="working")
            a.get_active_agents()
        # One connection kept alive carried all forty requests (the count's own probes add 1).
        self.assertLessEqual(unix_accepted() - before, 2)
        a.close()
        a.beat(status="after close")  # opens a new one

    def test_a_forked_child_opens_its_own_connection(self) -> None:
        a = self.client("a")
        a.beat(status="parent")  # leaves a kept-alive connection in the pool
        pid = os.fork()
        if pid == 0:  # the child: its answers must be its own, not the parent's
            try:
                ok = a.is_agent_alive("a") and a.get_active_agents()[0]["id"] == "a"
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0)
        a.beat(status="parent again")  # the parent's connection still works
        self.assertEqual(a.get_active_agents()[0]["status"], "parent again")

    def test_errors_carry_the_code(self) -> None:
        a = self.client("a")
        with self.assertRaises(FleetlogError) as refused:
            a.send_signal("", target_agent="a")
        self.assertEqual(refused.exception.code, "invalid")
        with self.assertRaises(FleetlogError) as unknown:
            FleetlogClient(db=str(self.db), agent="ghost").beat()
        self.assertEqual(unknown.exception.code, "unknown_agent")


if __name__ == "__main__":
    unittest.main()
