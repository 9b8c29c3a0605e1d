"""The paper's Figure 3 on one CPU: softirq priority inversion, and its absence with the
partitioned rt_poll_list (asserted from counters and from the trace)."""

from __future__ import annotations

import json

from rtvm.scenarios.figure3 import run


def test_shared_poll_list_on_4_1_rt_inverts_priorities():
    r = run(rt_poll_list=False, trace=True)
    # the RT IRQ thread blocked on the NET_RX lock held by the non-RT IRQ thread ...
    assert r.rt_lock_waits >= 1 and r.rt_lock_wait_ns > 0
    # ... boosting it to 50 ...
    assert r.rt_irq_thread_boosted_holder
    # ... then polled its own NAPI and went on draining the non-RT NAPI at FIFO 50
    assert r.napis_polled_by_rt_thread[0] == "eth0-rt"
    assert "eth1" in r.napis_polled_by_rt_thread[1:]
    # so the RT vhost thread ran long after the frame arrived
    assert r.rt_irq_to_vhost_ns > 30_000
    names = [e["name"] for e in r.tracer.events]
    assert any(n.startswith("PI boost irq/31-eth1 0->50") for n in names)
    assert any(n.startswith("wait softirq_lock[NET_RX]") for n in names)


def test_rt_poll_list_removes_the_inversion():
    r = run(rt_poll_list=True, trace=True)
    assert r.rt_lock_waits == 0 and r.rt_lock_wait_ns == 0
    assert not r.rt_irq_thread_boosted_holder
    assert r.napis_polled_by_rt_thread == ["eth0-rt"]
    assert r.rt_irq_to_vhost_ns < 10_000
    assert not any(e.get("cat") == "pi" for e in r.tracer.events)


def test_same_inversion_through_the_bh_lock_on_6_1_rt():
    shared = run(rt_poll_list=False, generation="6.1-rt")
    parted = run(rt_poll_list=True, generation="6.1-rt")
    assert shared.rt_lock_waits >= 1 and shared.rt_irq_thread_boosted_holder
    assert parted.rt_lock_waits == 0
    assert parted.rt_irq_to_vhost_ns < shared.rt_irq_to_vhost_ns


def test_6_18_rt_no_lock_so_no_wait_for_the_spliced_round():
    # Without the BH lock the RT IRQ thread preempts the non-RT one inside softirq; the non-RT
    # NAPI sits in that thread's spliced local list, so the RT thread polls only its own.
    r = run(rt_poll_list=False, generation="6.18-rt")
    parted = run(rt_poll_list=True, generation="6.18-rt")
    assert r.rt_lock_waits == 0 and not r.rt_irq_thread_boosted_holder
    assert r.napis_polled_by_rt_thread == ["eth0-rt"]
    assert r.rt_irq_to_vhost_ns == parted.rt_irq_to_vhost_ns


def test_6_18_rt_rt_thread_still_polls_non_rt_napis_on_the_shared_poll_list():
    from helpers import US, FakeNapi, kernel

    from rtvm.kernel import SCHED_FIFO, napi_schedule
    from rtvm.kernel.irq import IrqLine

    k = kernel(generation="6.18-rt", switch_ns=0)
    other = FakeNapi(k, "eth2", backlog=64 * 4, cost_per_pkt=1 * US)
    rt = FakeNapi(k, "eth0-rt", backlog=1)

    def rt_handler(cpu, ctx):
        yield 100
        napi_schedule(cpu, rt.napi, ctx)

    line = IrqLine(k, 30, "eth0-rt", rt_handler)

    # a FIFO 60 task keeps the CPU while eth2 is scheduled from hard-irq context (its softirq
    # goes to ksoftirqd, SCHED_OTHER, which cannot run) and while the RT interrupt arrives
    def hog(t):
        yield 10 * US
        napi_schedule(k.cpus[0], other.napi, k.cpus[0].softirq.ksoftirqd)
        yield 40 * US

    k.create_task("hog", hog, SCHED_FIFO, 60)
    k.sim.after(20 * US, lambda _: line.fire())
    k.sim.run(until=2_000 * US)
    assert other.polled_by[0][1] == "irq/30-eth0-rt"  # drained by the RT IRQ thread


def test_trace_is_loadable_chrome_json(tmp_path):
    r = run(rt_poll_list=False, trace=True)
    path = r.tracer.write(tmp_path / "f3.json")
    data = json.loads(path.read_text())
    assert {"ph", "pid", "name"} <= set(data["traceEvents"][-1])
    phases = {e["ph"] for e in data["traceEvents"]}
    assert {"X", "i", "M", "s"} <= phases
