"""The measure commands' CLI contract: --help with examples, one-line errors with the right
exit codes for bad input, missing tools and tools that fail."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from measure_helpers import rtvm_cli


@pytest.mark.parametrize("cmd", [[], ["timer"], ["rr"], ["vm-timer"], ["vm-rr"]])
def test_help_has_examples(cmd):
    r = rtvm_cli("measure", *cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "Examples:" in r.stdout and "rtvm measure" in r.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["timer", "--load", "bogus"], "unknown load generator"),
        (["timer", "--load", "stress-ng:cpu=x"], "bad item"),
        (["timer", "--cpus", "999"], "not available"),
        (["rr", "--client-sched", "fifo"], "needs a priority"),
        (["rr", "--server-sched", "deadline:3"], "unknown policy"),
        (["rr", "--interval", "10:1"], "out of range"),
        (["rr", "--driver", "ping"], "ping"),
        (["vm-timer", "--qemu-sched", "fifo:100"], "needs a priority"),
        (["vm-rr", "--accel", "xen"], "xen"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle):
    r = rtvm_cli("measure", *args, "--duration", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("rtvm: error:")
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("args", "tool", "package", "others"),
    [
        (["timer"], "cyclictest", "rt-tests", ()),
        (["timer", "--load", "stress-ng"], "stress-ng", "stress-ng", ()),
        (["rr", "--driver", "sockperf"], "sockperf", "sockperf", ()),
        (["rr", "--heavy", "1"], "iperf3", "iperf3", ()),
        (["vm-timer", "--load", "none"], "qemu-system-x86_64", "qemu-system-x86", ()),
        (["vm-rr", "--net", "user"], "sockperf", "sockperf", ("qemu-system-x86_64",)),
    ],
)
def test_missing_tool_names_its_debian_package(args, tool, package, others, tmp_path):
    # a command names the first tool it misses: the ``others`` it checks first must be there
    absent = [t for t in others if shutil.which(t) is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed: the command would name it first")
    r = rtvm_cli(
        "measure", *args, "--duration", "1", "--out", str(tmp_path),
        env={"RTVM_HIDE_TOOLS": tool},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1
    assert f"{tool} not found" in r.stderr and f"apt-get install {package}" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def _error_line(stderr: str) -> str:
    """The one error line (progress lines may precede it); it is the last line."""
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("rtvm: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


def _fake_tool(tmp_path, name: str, script: str) -> dict[str, str]:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{d}{os.pathsep}{os.environ['PATH']}"}


def test_failing_tool_is_quoted(tmp_path):
    env = _fake_tool(
        tmp_path, "cyclictest", 'echo "starting"; echo "FATAL: mlockall failed: oom" >&2; exit 3\n'
    )
    r = rtvm_cli("measure", "timer", "--duration", "1", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 1 and _error_line(r.stderr)
    assert "cyclictest exited with status 3" in r.stderr and "mlockall failed" in r.stderr


def test_tool_printing_nonsense_is_a_clear_error(tmp_path):
    env = _fake_tool(tmp_path, "cyclictest", 'echo "hello, I am not cyclictest"; exit 0\n')
    r = rtvm_cli("measure", "timer", "--duration", "1", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 1 and _error_line(r.stderr)
    assert "cyclictest printed no histogram" in r.stderr and "not cyclictest" in r.stderr
