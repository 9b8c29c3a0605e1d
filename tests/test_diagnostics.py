"""The diagnostic scripts under docs/diagnostics still run against the model.

They are not part of rtvm, but docs/model.md quotes their figures and tells readers to run them.
They hook the kernel's methods, so a renamed method or a changed signature breaks them without
breaking anything else: each runs here for a fraction of a simulated second, in its own process
(the hooks replace class attributes), and must print the lines docs/model.md quotes.
"""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from rtvm.build import build_kind

DIAGNOSTICS = Path(__file__).resolve().parents[1] / "docs" / "diagnostics"

pytestmark = pytest.mark.skipif(
    build_kind() != "python", reason="the diagnostics hook the plain build's methods"
)


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(DIAGNOSTICS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_diagnostic_compiles(tmp_path: Path) -> None:
    scripts = sorted(DIAGNOSTICS.glob("*.py"))
    assert {p.name for p in scripts} >= {"busy_balance.py", "cfs_lag.py", "wake_affine.py"}
    for path in scripts:  # bar_search.py too, which takes minutes to run
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)


def test_cfs_lag_reports_the_vcpu_waits() -> None:
    out = _run("cfs_lag.py", "threaded", "0.3")
    assert "vhost-heavy0" in out


def test_wake_affine_compares_with_the_model() -> None:
    lines = _run("wake_affine.py", "threaded", "0.3").splitlines()
    assert any(line.startswith("model ") for line in lines)
    assert any(line.startswith("wake_affine ") for line in lines)
    assert any(line.startswith("affine checks ") for line in lines)


def test_busy_balance_looks_and_samples_placements() -> None:
    out = _run("busy_balance.py", "threaded", "0.3", "--only", "--capacity")
    assert "busy balance" in out
    looks = next(line for line in out.splitlines() if line.startswith("looks "))
    assert int(looks.split()[1].rstrip(",")) >= 4  # 0.3 s of two CPUs, each every 64-128 ms
    assert "%  CPU 0/KVM (rt-vm)@" in out


def test_a_diagnostic_refuses_an_unknown_method() -> None:
    done = subprocess.run(
        [sys.executable, str(DIAGNOSTICS / "busy_balance.py"), "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "methods: vanilla" in done.stdout
