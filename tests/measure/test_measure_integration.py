"""Integration: the real tools, briefly (a few seconds each), and one real guest boot.

The tools come from Debian packages that .ci/run installs; without them these tests skip and say
which package is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from measure_helpers import need_root, need_tools, rtvm_cli

from rtvm.analysis import stats

pytestmark = pytest.mark.integration


def _json(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout  # exactly one JSON object on stdout
    return json.loads(lines[0])


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _namespaces(pid: int) -> list[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith(f"rtvm{pid}-")]


def test_timer_idle_and_under_stress(tmp_path):
    need_tools("cyclictest", "stress-ng")
    r = rtvm_cli(
        "measure", "timer", "--duration", "2", "--load", "none",
        "--load", "stress-ng:timer=1,switch=1", "--json", "--out", str(tmp_path),
    )  # fmt: skip
    env = _json(r)
    assert env["experiment"] == "measure-timer" and len(env["rows"]) == 2
    idle, loaded = env["rows"]
    assert idle["load"] == "idle" and loaded["load"] == "stress-ng:timer=1,switch=1"
    for row in env["rows"]:
        assert row["samples"] >= 1000 and row["min_us"] <= row["p50_us"] <= row["max_us"]
        assert row["accelerator"] == "none (host)"
    assert env["host"]["kernel"] and env["host"]["preemption"]
    assert "order-statistics" in env["ci_method"]
    # the raw histogram re-makes the statistics
    raw = np.load(tmp_path / "measure-timer-raw.npz")
    h = dict(zip(raw["idle_hist_us"].tolist(), raw["idle_hist_count"].tolist(), strict=True))
    again = stats.from_histogram(h, int(raw["idle_overflows"][0])).row()
    assert again["p99_us"] == idle["p99_us"] and again["samples"] == idle["samples"]
    assert json.loads((tmp_path / "measure-timer.json").read_text())["rows"] == env["rows"]
    assert (tmp_path / "measure-timer-tools.json.gz").exists()


def test_rr_loopback_probe_and_sockperf_with_a_heavy_receiver(tmp_path):
    need_tools("sockperf", "iperf3")
    r = rtvm_cli(
        "measure", "rr", "--duration", "2", "--driver", "probe", "--driver", "sockperf",
        "--heavy", "1", "--json", "--out", str(tmp_path),
    )  # fmt: skip
    env = _json(r)
    rows = {row["driver"]: row for row in env["rows"]}
    assert set(rows) == {"probe", "sockperf"}
    for row in rows.values():
        assert row["samples"] >= 150 and row["metric"] == "rtt"
        assert row["heavy_receivers"] == 1 and row["heavy_gbps"] > 0
        assert row["lost"] <= row["sent"] * 0.05
    assert rows["probe"]["server_p50_us"] > 0
    raw = np.load(tmp_path / "measure-rr-raw.npz")
    rec = raw["probe_heavy1_records"]
    assert len(rec) == rows["probe"]["sent"]


def test_rr_between_namespaces_with_priorities(tmp_path):
    need_root()
    need_tools("ip")
    r = rtvm_cli(
        "measure", "rr", "--net", "netns", "--duration", "2", "--rate", "200",
        "--server-sched", "fifo:80", "--server-cpus", "0", "--client-sched", "fifo:70",
        "--json", "--out", str(tmp_path),
    )  # fmt: skip
    env = _json(r)
    (row,) = env["rows"]
    assert row["net"] == "netns" and row["server_sched"] == "fifo:80@0"
    assert row["samples"] >= 300 and row["lost"] == 0
    # the run's namespaces are gone: any rtvm namespace left belongs to a live process
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for ln in r.stdout.splitlines():
        m = re.fullmatch(r"rtvm(\d+)-\S+", ln.split()[0])
        assert m is None or _alive(int(m.group(1))), ln


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cleans_up_children_and_namespaces(tmp_path, sig):
    need_root()
    need_tools("ip", "iperf3")
    p = subprocess.Popen(
        [sys.executable, "-m", "rtvm", "measure", "rr", "--net", "netns", "--heavy", "1",
         "--duration", "30", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        kids: set[int] = set()
        while time.monotonic() < deadline:
            kids |= _children(p.pid)
            if len(_namespaces(p.pid)) >= 3 and len(_children(p.pid)) >= 3:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        kids |= _children(p.pid)
        assert _namespaces(p.pid), "rr never created its namespaces"
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    # Ctrl-C: 130; SIGTERM: 128 + 15, as a shell expects of a killed command
    assert p.returncode == 128 + sig, err
    assert ("interrupted" if sig == signal.SIGINT else "terminated by SIGTERM") in err
    assert kids and not [k for k in kids if _alive(k)]
    assert _namespaces(p.pid) == []


# -- real guests ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stock_kernel():
    need_tools("qemu-system-x86_64", "busybox", "cpio", "cyclictest", "apt-get")
    from rtvm.cli_support import RunFailed
    from rtvm.measure.guest import kernel

    try:
        return kernel.fetch("stock")
    except RunFailed as exc:
        pytest.skip(f"cannot fetch the Debian guest kernel here: {exc.format_message()}")


def test_real_guest_boots_and_returns_cyclictest_results(tmp_path, stock_kernel):
    """One real boot (TCG here; KVM on a real host), qemu's vCPU thread at SCHED_FIFO."""
    need_root()
    t0 = time.monotonic()
    r = rtvm_cli(
        "measure", "vm-timer", "--guest-kernel", "stock", "--duration", "3",
        "--qemu-sched", "fifo:80", "--load", "none", "--json", "--out", str(tmp_path),
    )  # fmt: skip
    env = _json(r)
    (row,) = env["rows"]
    assert row["target"] == "guest" and row["guest_kernel"] == stock_kernel.release
    assert row["accelerator"] in ("tcg", "kvm") and env["host"]["accelerator"] in ("tcg", "kvm")
    assert row["samples"] >= 2000 and row["p99_us"] is not None
    assert row["qemu_sched"] == "fifo:80"
    if row["accelerator"] == "tcg":
        assert any("emulator" in n for n in env["notes"])
    assert len(env["combinations"]) == 4
    import gzip

    tools = json.loads(gzip.decompress((tmp_path / "measure-vm-timer-tools.json.gz").read_bytes()))
    threads = json.loads(next(v for k, v in tools.items() if k.endswith("qemu_threads")))
    roles = {t["role"]: t for t in threads.values()}
    assert roles["vcpu"]["policy"] == "fifo" and roles["vcpu"]["priority"] == 80
    assert roles["main"]["policy"] == "fifo" and roles["main"]["priority"] == 81
    assert "RTVM:DONE" in next(v for k, v in tools.items() if k.endswith("console"))
    assert time.monotonic() - t0 < 90


def test_real_guest_rr_over_user_networking(tmp_path, stock_kernel):
    need_tools("sockperf")
    r = rtvm_cli(
        "measure", "vm-rr", "--quick", "--net", "user", "--duration", "2", "--json",
        "--out", str(tmp_path),
    )  # fmt: skip
    env = _json(r)
    (row,) = env["rows"]
    assert row["driver"] == "probe" and row["net"] == "user"
    assert row["samples"] >= 150 and row["lost"] <= row["sent"] * 0.05


def _qemu_with(token: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if token.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return [p for p in out if _alive(p)]


def test_guest_that_never_prints_is_killed_with_a_clear_error(tmp_path, stock_kernel):
    token = str(uuid.uuid4())
    r = rtvm_cli(
        "measure", "vm-timer", "--guest-kernel", "stock", "--duration", "2", "--load", "none",
        "--qemu-sched", "other", "--boot-timeout", "5", "--out", str(tmp_path),
        env={"RTVM_QEMU_EXTRA_ARGS": f"-S -uuid {token}"},  # -S: the CPU never starts
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("rtvm: error:") and "did not print RTVM:BOOTED within 5 s" in err
    assert _qemu_with(token) == []


def test_interrupt_during_guest_boot_ends_qemu(tmp_path, stock_kernel):
    token = str(uuid.uuid4())
    env = dict(os.environ, RTVM_QEMU_EXTRA_ARGS=f"-uuid {token}")
    p = subprocess.Popen(
        [sys.executable, "-m", "rtvm", "measure", "vm-timer", "--guest-kernel", "stock",
         "--duration", "30", "--load", "none", "--qemu-sched", "other", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _qemu_with(token):
            time.sleep(0.2)
        assert _qemu_with(token), "qemu never started"
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert _qemu_with(token) == []
