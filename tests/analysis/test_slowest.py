"""The flight recorder and the slowest responses it explains (rtvm sim --slowest)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rtvm.analysis.slowest import LEAD_NS, SETTLE_NS, SlowestResponses
from rtvm.engine import Simulator
from rtvm.experiments.runner import run_method
from rtvm.kernel.trace import FlightRecorder
from rtvm.workloads.rr import RrRecord


def test_the_recorder_keeps_the_last_slices_of_each_cpu_and_skips_idle():
    rec = FlightRecorder(depth=3)
    for i in range(5):
        rec.cpu_slice(0, f"t{i}", "thread", 10 * i, 10 * i + 5)
    rec.cpu_slice(1, "idle", "idle", 0, 50)
    rec.cpu_slice(1, "irq", "hardirq", 12, 14)
    ran, complete = rec.window(0, 100)
    assert [s[4] for s in ran] == ["irq", "t2", "t3", "t4"]  # t0, t1 were overwritten
    assert not complete  # CPU 0's ring dropped slices that overlap [0, 100]
    ran, complete = rec.window(21, 33)
    assert [s[4] for s in ran] == ["t2", "t3"] and complete
    lock = SimpleNamespace(name="softirq_lock[NET_RX]/0")
    rec.lock_wait_end(SimpleNamespace(name="irq/30-eth0"), lock, 22, 30)
    ran, _ = rec.window(21, 23)
    assert ("irq/30-eth0", "lock") in [(s[2], s[3]) for s in ran]


def _record(req_id: int, nic_rx: int, latency: int) -> RrRecord:
    return RrRecord(req_id=req_id, nic_rx=nic_rx, wire_out=nic_rx + latency)


def test_it_keeps_the_k_slowest_after_the_warm_up_with_what_overlapped_each():
    sim = Simulator(seed=1)
    rec = FlightRecorder()
    kept = SlowestResponses(sim, rec, keep=2, since_ns=1_000)
    lat = {1: 50, 2: 400, 3: 300, 4: 100, 5: 900}
    for i, (req, ns) in enumerate(lat.items()):
        start = 10_000 * (i + 1) if req != 5 else 500  # request 5 came in the warm-up
        rec.cpu_slice(0, f"during-{req}", "thread", start, start + ns)
        rec.cpu_slice(0, f"after-{req}", "thread", start + ns + LEAD_NS + 10, start + 9_000)
        kept.request_done(_record(req, start, ns))
    sim.run(until=10 * SETTLE_NS)
    slow = kept.slowest()
    assert [s.req_id for s in slow] == [2, 3]
    assert [x[4] for x in slow[0].ran] == ["after-1", "during-2"]  # 5 us before, and during
    assert slow[0].as_dict()["latency_us"] == 0.4 and slow[0].complete


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="allowed >= 1"):
        SlowestResponses(Simulator(seed=1), FlightRecorder(), keep=0)


def test_a_run_that_keeps_its_slowest_responses_gives_the_same_results():
    plain = run_method("threaded", 0.3, seed=3)
    kept = run_method("threaded", 0.3, seed=3, slowest=2)
    assert kept.row == plain.row and np.array_equal(kept.latencies_us, plain.latencies_us)
    slow = kept.extra["slowest"]
    after_warm = kept.probes_ns["nic_rx_at"] >= 100_000_000
    assert slow[0]["latency_us"] == pytest.approx(kept.latencies_us[after_warm].max(), abs=0.01)
    assert slow[0]["latency_us"] >= slow[1]["latency_us"]
    probes = list(slow[0]["probes_us"].values())
    assert probes == sorted(probes) and probes[-1] == slow[0]["latency_us"]
    names = {r["name"] for r in slow[0]["ran"]}
    assert {"irq/30-eth0", "vhost-rt", "CPU 0/KVM (rt-vm)"} <= names
    assert "slowest" not in plain.extra


def test_a_trace_file_and_the_slowest_responses_are_one_or_the_other(tmp_path):
    with pytest.raises(ValueError, match="allowed: one of them"):
        run_method("threaded", 0.05, trace_path=str(tmp_path / "t.json"), slowest=1)
