"""Only for wheels that bundle the fleetlog binary (see build_wheel.sh): such a wheel is
platform-specific (`py3-none-<platform>`), like ruff's and uv's. Without a bundled binary the
package is pure Python and pyproject.toml says everything."""

import sysconfig
from pathlib import Path

from setuptools import setup

BUNDLED = (Path(__file__).parent / "src" / "fleetlog" / "_bin" / "fleetlog").exists()

commands = {}
if BUNDLED:
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools < 70 ships it in the `wheel` package
        from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
            return "py3", "none", platform

    commands["bdist_wheel"] = PlatformWheel

setup(cmdclass=commands)
