"""A separate agent process for the multi-process tests: `python worker.py DB AGENT ROLE`."""

import sys
import time
from pathlib import Path

from fleetlog import FleetlogClient


def main() -> None:
    db, agent, role = sys.argv[1], sys.argv[2], sys.argv[3]
    client = FleetlogClient(db=db, agent=agent)
    client.register(role=role)
    if role == "barrier":
        client.send_signal("ready", target_agent="coordinator", payload=agent)
        go = client.wait_for_signal("go", source_agent="coordinator", timeout=30)
        assert go is not None, "no go signal"
        client.send_signal("done", target_agent="coordinator", payload=agent)
    elif role == "counter":
        counter = Path(sys.argv[4])
        for _ in range(10):
            with client.lock_file("counter", intent="increment", ttl=30, wait=30):
                value = int(counter.read_text())
                time.sleep(0.001)  # widen the read-modify-write window
                counter.write_text(str(value + 1))
    elif role == "doomed":
        with client.claim_task(tags=["fragile"], lease_seconds=1.0) as task:
            assert task is not None
            print(task.id, flush=True)
            time.sleep(3600)  # killed here, holding the task


if __name__ == "__main__":
    main()
