"""A wheel with the fleetlog binary inside (build_wheel.sh) is all a Python agent needs: installed
into an empty directory, with no FLEETLOG_BIN and no fleetlog on PATH, it starts its daemon and
coordinates. Builds a wheel (about 20 s), so it runs where FLEETLOG_TEST_WHEEL=1 (.ci/run sets
it once pip has shown it can reach PyPI for the build's setuptools)."""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


@unittest.skipUnless(os.environ.get("FLEETLOG_TEST_WHEEL") == "1", "set FLEETLOG_TEST_WHEEL=1")
class WheelTest(unittest.TestCase):
    def test_a_wheel_bundling_the_binary_needs_nothing_else(self) -> None:
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            subprocess.run(
                [str(HERE / "build_wheel.sh"), "--binary", os.environ["FLEETLOG_BIN"], "--out", str(work / "dist")],
                check=True,
            )
            wheels = list((work / "dist").glob("fleetlog-*-py3-none-*.whl"))
            self.assertEqual(len(wheels), 1, wheels)
            self.assertNotIn("any", wheels[0].name, "a wheel with a binary is platform-specific")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--target", str(work / "site"), str(wheels[0])],
                check=True,
            )
            env = {k: v for k, v in os.environ.items() if k not in ("FLEETLOG_BIN", "PYTHONPATH")}
            env["PATH"] = "/usr/bin:/bin"
            env["PYTHONPATH"] = str(work / "site")
            script = (
                "from fleetlog import FleetlogClient, _daemon\n"
                "assert _daemon.binary().startswith(%r), _daemon.binary()\n"
                "c = FleetlogClient(db='fleet.redb', agent='w1')\n"
                "c.register(); c.beat(status='from the wheel')\n"
                "print(c.get_active_agents()[0]['status'])\n"
                "import subprocess; subprocess.run([_daemon.binary(), '--db', 'fleet.redb', 'daemon', 'stop'])\n"
            ) % str(work / "site")
            out = subprocess.run(
                [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=60
            )
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("from the wheel", out.stdout)


if __name__ == "__main__":
    unittest.main()
