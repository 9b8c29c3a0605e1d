"""Helpers for the measure tests: fixtures directory, tool and root requirements."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def need_tools(*tools: str) -> None:
    """Skip (with the Debian package to install) when a real tool is missing."""
    from rtvm.measure.tools import DEBIAN_PACKAGES

    for t in tools:
        if shutil.which(t) is None and not Path("/usr/sbin", t).exists():
            pkg = DEBIAN_PACKAGES.get(t, t)
            pytest.skip(f"{t} not installed (Debian package {pkg}; .ci/run installs it)")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, RT priorities)")


def rtvm_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rtvm", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
    )
