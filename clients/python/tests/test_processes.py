"""Separate agent processes coordinating through one ledger, with no daemon started by hand."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from fleetlog import AsyncFleetlogClient, FleetlogClient

from test_client import stop_daemon

WORKER = str(Path(__file__).with_name("worker.py"))


class ProcessesTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.db = Path(self.dir.name) / "fleet.redb"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def tearDown(self) -> None:
        stop_daemon(self.db)
        self.dir.cleanup()

    def worker(self, agent: str, role: str, *extra: str, **popen) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, WORKER, str(self.db), agent, role, *extra], env=self.env, **popen
        )

    def test_a_checkpoint_barrier_of_three_worker_processes(self) -> None:
        coordinator = FleetlogClient(db=str(self.db), agent="coordinator")
        coordinator.register(role="coordinator")
        workers = [self.worker(f"w{n}", "barrier") for n in range(3)]
        ready = {coordinator.wait_for_signal("ready", timeout=30).payload for _ in range(3)}
        self.assertEqual(ready, {"w0", "w1", "w2"})
        for n in range(3):
            coordinator.send_signal("go", target_agent=f"w{n}")
        done = {coordinator.wait_for_signal("done", timeout=30).payload for _ in range(3)}
        self.assertEqual(done, {"w0", "w1", "w2"})
        self.assertEqual([w.wait(timeout=30) for w in workers], [0, 0, 0])

    def test_lock_contention_between_processes_loses_no_update(self) -> None:
        counter = Path(self.dir.name) / "counter"
        counter.write_text("0")
        workers = [self.worker(f"c{n}", "counter", str(counter)) for n in range(3)]
        self.assertEqual([w.wait(timeout=60) for w in workers], [0, 0, 0])
        self.assertEqual(counter.read_text(), "30")

    def test_a_killed_workers_task_is_recovered_by_another(self) -> None:
        boss = FleetlogClient(db=str(self.db), agent="boss")
        boss.register()
        task = boss.enqueue_task("fragile work", tags=["fragile"])
        doomed = self.worker("doomed", "doomed", stdout=subprocess.PIPE, text=True)
        self.assertEqual(int(doomed.stdout.readline()), task)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        doomed.stdout.close()
        rescuer = FleetlogClient(db=str(self.db), agent="rescuer")
        rescuer.register()
        with rescuer.claim_task(tags=["fragile"], wait=20.0) as recovered:
            self.assertIsNotNone(recovered, "the lease ran out and the task came back")
            self.assertEqual((recovered.id, recovered.attempts), (task, 2))
            recovered.result = "done"

    def test_asyncio_agents_coordinate(self) -> None:
        async def scenario() -> None:
            producer = AsyncFleetlogClient(db=str(self.db), agent="producer")
            consumer = AsyncFleetlogClient(db=str(self.db), agent="consumer")
            await producer.register()
            await consumer.register()
            waiting = asyncio.create_task(consumer.wait_for_signal("ping", timeout=20))
            await asyncio.sleep(0.1)
            await producer.send_signal("ping", target_agent="consumer", payload=1)
            got = await waiting
            self.assertEqual(got.payload, 1)
            async with consumer.lock_file("a.rs", ttl=10) as lock:
                self.assertGreater(lock["token"], 0)
            approval = await producer.request_approval("ship", approvers=["consumer"], timeout=30)
            self.assertEqual(await approval.wait(timeout=0.05), "pending")

        asyncio.run(scenario())


if __name__ == "__main__":
    unittest.main()
