"""Methods are wirings only; the testbed builds each; runs are deterministic per seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rtvm.experiments.runner import run_method
from rtvm.methods import METHODS, PAPER_METHODS
from rtvm.methods.base import MethodSpec, Sched
from rtvm.testbed import build_testbed
from rtvm.workloads.rr import RrRecord, RrStats


def test_a_method_holds_no_costs():
    allowed = (str, int, bool, tuple, Sched)
    for m in METHODS.values():
        for f in dataclasses.fields(MethodSpec):
            assert isinstance(getattr(m, f.name), allowed), (m.name, f.name)
        assert not any("cost" in f.name or "_ns" in f.name for f in dataclasses.fields(m))


def test_priorities_follow_the_testbed_table():
    for name in ("threaded", "exclusive", "outsourcing"):
        m = METHODS[name]
        assert (m.rt_irq.prio, m.rt_vhost.prio, m.rt_vcpu.prio) == (50, 48, 47)
        assert m.heavy_irq.prio == m.heavy_vhost.prio == m.heavy_vcpu.prio == 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_builds_and_serves_requests(name):
    tb = build_testbed(METHODS[name], request_times=[1_000_000, 3_000_000])
    tb.sim.run(until=20_000_000)
    assert len(tb.client.stats.completed()) == 2
    assert sum(h.consumed_bytes for h in tb.heavies) > 0


def test_exclusive_keeps_non_rt_work_off_the_rt_cpu():
    tb = build_testbed(METHODS["exclusive"])
    tb.sim.run(until=50_000_000)
    rt_cpu = tb.kernel.cpus[1]
    for name in rt_cpu.by_name:
        assert "heavy" not in name and "eth1" not in name and "eth2" not in name, name


def test_a_scenario_can_route_every_nic_interrupt_to_one_cpu():
    tb = build_testbed(METHODS["vanilla"], heavy_nic_cpus=(0, 0))
    tb.sim.run(until=50_000_000)
    assert [h.rxq.irq.cpu.id for h in tb.heavies] == [0, 0]
    assert all(h.rxq.irq.cpu.nr_irqs > 0 for h in tb.heavies)
    cpu1 = tb.kernel.cpus[1]  # the RT NIC is on CPU 0 as well (vanilla's routing)
    # no device interrupt: reschedule IPIs, NO_HZ_FULL kicks and the tick only
    assert cpu1.nr_irqs == cpu1.nr_resched_ipis + cpu1.nr_call_function_ipis + cpu1.nr_ticks
    threaded = build_testbed(METHODS["threaded"], rt_nic_cpu=1)
    rt_irq_thread = threaded.rxq.irq.thread
    assert rt_irq_thread is not None and rt_irq_thread.allowed == {1}  # the thread follows


def test_outsourcing_has_no_vhost_threads_and_uses_the_rt_poll_list():
    tb = build_testbed(METHODS["outsourcing"])
    names = {t.name for t in tb.kernel.tasks}
    assert not any(n.startswith("vhost") for n in names)
    tb.sim.run(until=50_000_000)
    assert tb.rxq.napi.on_rt_list


def test_same_seed_same_result_other_seed_other_result():
    a = run_method("threaded", 0.15, seed=3)
    b = run_method("threaded", 0.15, seed=3)
    c = run_method("threaded", 0.15, seed=4)
    assert a.row == b.row and (a.latencies_us == b.latencies_us).all()
    assert a.row != c.row


def test_row_has_the_contract_keys():
    r = run_method("outsourcing", 0.15).row
    for key in (
        "method",
        "mean_us",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "sd_us",
        "samples",
        "heavy_gbps",
        "cpu_util_pct",
        "cpu_util_pct_by_cpu",
    ):
        assert key in r
    assert len(r["cpu_util_pct_by_cpu"]) == 2
    assert set(PAPER_METHODS) <= set(METHODS)


@pytest.mark.parametrize("name", ["vanilla", "outsourcing"])
def test_the_engine_fast_path_changes_wall_time_only(name, monkeypatch):
    """Simulator.advance_inline skips heap round trips; the run must be the same without it."""

    def summary():
        r = run_method(name, 0.05, seed=3)
        return r.latencies_us.tolist(), r.row["cpu_util_pct_by_cpu"], r.row["heavy_gbps"]

    fast = summary()
    from rtvm.engine.core import Simulator

    monkeypatch.setattr(Simulator, "advance_inline", lambda self, t: False)
    assert summary() == fast


def test_request_columns_can_be_read_mid_run_and_match_the_records():
    tb = build_testbed(METHODS["exclusive"], request_times=[1_000_000, 3_000_000, 30_000_000])
    tb.sim.run(until=20_000_000)
    first = tb.client.stats.columns()
    tb.sim.run(until=40_000_000)  # appends after a read must still work
    cols = tb.client.stats.columns()
    assert len(first["req_id"]) == 2 and len(cols["req_id"]) == 3
    recs = tb.client.stats.completed()
    assert [r.latency_ns for r in recs] == list(cols["wire_out"] - cols["nic_rx"])
    assert all(r.vm_entry is not None and r.nic_rx < r.vm_entry < r.vm_exit for r in recs)
    views = tb.client.stats.path_ns()  # a finished run's probes after nic_rx, without copies
    for c, v in views.items():
        assert (v == np.where(cols[c] >= 0, cols[c] - cols["nic_rx"], -1)).all(), c
        assert v.dtype == np.int32 and (c == "nic_rx" or not v.flags.writeable)


def test_a_probe_beyond_int32_widens_its_column_and_loses_nothing():
    stats = RrStats()
    late = 3 * 10**9  # 3 s after the NIC: more than int32 ns hold
    for rid, wire_out in ((0, 50_000), (1, late)):
        stats.pending[rid] = RrRecord(rid, 10**12, vm_entry=10**12 + 10, wire_out=10**12 + wire_out)
        stats.complete(stats.pending[rid])
    assert stats.path_ns()["wire_out"].tolist() == [50_000, late]
    assert stats.path_ns()["vm_entry"].dtype == np.int32  # the other columns stay narrow
    assert [r.latency_ns for r in stats.completed()] == [50_000, late]
    assert stats.completed()[0].napi_poll is None


@pytest.mark.parametrize("name", ["threaded", "outsourcing"])
def test_probe_segments_partition_each_response(name):
    """Host receive + guest + host send is each request's response time, for both I/O paths."""
    r = run_method(name, 0.1, 1)
    seg = r.segments_us
    total = seg["host_receive_us"] + seg["guest_us"] + seg["host_send_us"]
    assert len(r.latencies_us) > 5
    assert total == pytest.approx(r.latencies_us, abs=1e-6)
    assert all((v > 0).all() for v in seg.values())
    summary = r.extra["segments"]
    mean_sum = sum(s["mean_us"] for s in summary.values())
    assert mean_sum == pytest.approx(r.row["mean_us"], abs=0.01)
    assert all(s["samples"] == r.row["samples"] for s in summary.values())
    # the path stages split each response too, finer: every probe of the path fires
    stages = r.extra["stages"]
    assert len(stages) == (5 if name == "outsourcing" else 8)
    assert sum(s["mean_us"] for s in stages) == pytest.approx(r.row["mean_us"], abs=0.01)
    assert all(s["samples"] == r.row["samples"] for s in stages)


def test_a_probe_that_did_not_fire_leaves_its_segments_out():
    from rtvm.analysis.stages import us_between
    from rtvm.experiments.runner import SEGMENTS

    col = {
        "nic_rx": np.array([0, 100]),
        "vm_entry": np.array([4000, -1]),
        "vm_exit": np.array([9000, -1]),
        "wire_out": np.array([10000, 20000]),
    }
    host, guest = (us_between(col, *SEGMENTS[k]) for k in ("host_receive_us", "guest_us"))
    assert host[0] == 4.0 and guest[0] == 5.0
    assert np.isnan(host[1]) and np.isnan(guest[1])


def test_rt_stage_footprints_follow_the_code_each_stage_runs():
    """A stage's LLC footprint is its code's warm CPU cost times one density: the outsourced
    path skips bridge/tap in host RX, and the registered owners carry those sizes."""
    from rtvm.kernel.profile import load_profile
    from rtvm.testbed import RT_STAGE_CODE, rt_stage_footprints

    c = load_profile()
    virtio, outs = rt_stage_footprints(c, "virtio"), rt_stage_footprints(c, "outsourcing")
    assert set(virtio) == set(RT_STAGE_CODE)
    extra = virtio["host/rx"] - outs["host/rx"]
    density = c.rt_stage_ws_bytes_per_us
    assert extra == pytest.approx(c.bridge_tap_per_packet * density / 1000, abs=1)
    assert virtio["host/tx"] == c.tx_per_packet * c.rt_stage_ws_bytes_per_us // 1000
    assert virtio["rt/guest-net"] > virtio["host/tx"]  # a longer path touches more lines
    doubled = rt_stage_footprints(
        c.with_values(rt_stage_ws_bytes_per_us=2 * c.rt_stage_ws_bytes_per_us), "virtio"
    )
    assert all(abs(doubled[s] - 2 * virtio[s]) <= 1 for s in virtio)
    tb = build_testbed(METHODS["outsourcing"])
    assert {s: tb.llc.owners[s].ws_bytes for s in outs} == outs


@pytest.mark.parametrize("name", ["threaded", "exclusive", "outsourcing"])
def test_host_code_the_heavy_paths_run_stays_in_the_llc(name):
    """The heavy paths run the same host code as the RT path (driver, bridge, vhost, KVM, TX)
    and touch it every few microseconds, so under heavy traffic the RT path's host stages
    rarely miss; its guest kernel and server, in the RT VM's own memory, lose most of their
    lines between requests. Each owner is touched only by the paths that run its code."""
    from rtvm.testbed import HEAVY_PATH_STAGES

    tb = build_testbed(METHODS[name])
    tb.sim.run(until=200_000_000)
    owners = tb.llc.owners
    guest = "rt/guest-net" if tb.method.rt_io == "virtio" else "rt/guest-vmrpc"
    assert owners[guest].miss_ratio > 0.15 and owners["rt-server"].miss_ratio > 0.5
    shared = HEAVY_PATH_STAGES[tb.method.heavy_io]
    for stage in shared:
        assert owners[stage].references > 5 * owners[guest].references  # the heavy paths
        assert owners[stage].miss_ratio < owners[guest].miss_ratio / 5
    if tb.method.rt_io == "outsourcing":
        assert "host/vhost" not in shared and owners["host/vhost"].references == 0


def test_host_code_is_evicted_when_no_heavy_path_runs_it():
    """The same RT path on a host whose heavy VMs use socket outsourcing: no heavy vhost runs,
    so the RT vhost worker's code is the RT path's alone and loses lines like guest code."""
    from dataclasses import replace

    tb = build_testbed(replace(METHODS["threaded"], heavy_io="outsourcing"))
    tb.sim.run(until=200_000_000)
    owners = tb.llc.owners
    assert owners["host/vhost"].miss_ratio > 0.2  # touched twice a request: RX, then TX
    assert owners["host/rx"].miss_ratio < 0.05


@pytest.mark.parametrize("name", ["threaded", "outsourcing"])
def test_heavy_acks_take_the_real_tx_path(name):
    """Each GRO'd segment the iperf reader consumes sends one ACK back to its sender: on virtio
    through the guest's TX queue, vhost handle_tx and netif_rx_ni (the per-CPU backlog in NET_RX);
    with outsourcing straight from the host socket. Acknowledged never exceeds consumed."""
    tb = build_testbed(METHODS[name], request_times=[1_000_000])
    tb.sim.run(until=20_000_000)
    backlog_pkts = sum(c.softnet.backlog.work for c in tb.kernel.cpus)
    for h in tb.heavies:
        consumed_ip = h.consumed_bytes * (h.sender.mss + 52) // h.sender.mss
        assert h.sender.acked_bytes > 0
        assert h.sender.acked_bytes <= consumed_ip + h.sender.batch_bytes
    if name == "outsourcing":
        assert backlog_pkts == 0  # the host stack sends; nothing is fed back into NET_RX
    else:
        assert backlog_pkts > 0.5 * sum(h.sender.acked_bytes for h in tb.heavies) / 65536


def test_cpu_time_by_thread_adds_up_to_each_cpus_busy_time():
    """details' cpu_by_thread_pct says where each thread ran; it partitions each CPU's busy."""
    r = run_method("threaded", 0.15, seed=3)
    by_thread = r.extra["cpu_by_thread_pct"]
    for cpu, busy in enumerate(r.row["cpu_util_pct_by_cpu"]):
        assert sum(shares[cpu] for shares in by_thread.values()) == pytest.approx(busy, abs=0.2)
    assert by_thread["irq/31-eth1"][1] == 0.0  # a NIC's IRQ thread runs where its IRQ goes
    assert by_thread["irq/31-eth1"][0] > 0
    assert any(name.startswith("IPI/reschedule") for name in by_thread)


def test_details_say_how_long_interrupts_held_each_thread_off():
    """On vanilla, heavy NIC interrupts (and the softirqs run on their exit) land on the RT
    vCPU while it runs guest code; threaded moves that work into threads, which a FIFO vCPU
    does not let run."""
    held_off = {}
    for method in ("vanilla", "threaded"):
        r = run_method(method, 0.15, seed=3)
        by_thread = r.extra["interrupted_us_by_thread"]
        assert list(by_thread.values()) == sorted(by_thread.values(), reverse=True)
        held_off[method] = by_thread.get("CPU 1/KVM (rt-vm)", 0.0) / r.row["samples"]
    assert held_off["vanilla"] > 5 * held_off["threaded"]


def test_details_give_each_threads_wakeup_latency():
    """details' wakeup_latency (perf sched latency): on threaded the housekeeping vCPU, a CFS
    thread on the heavy threads' CPUs, waits for a CPU after its wakeups, where the RT path's
    FIFO threads hardly do; on exclusive it shares the RT CPU with the RT group alone."""
    hk = "CPU 0/KVM (rt-vm)"
    thr = run_method("threaded", 0.3, seed=3).extra["wakeup_latency"]
    exc = run_method("exclusive", 0.3, seed=3).extra["wakeup_latency"]
    assert thr[hk]["wakeups"] == thr["CPU 1/KVM (rt-vm)"]["wakeups"] > 20  # one per request
    assert thr[hk]["max_us"] > 10 and thr[hk]["p99_us"] > 5 * thr["vhost-rt"]["p99_us"]
    assert exc[hk]["max_us"] < 1.0
    assert {"vhost-heavy0", "irq/31-eth1"} <= set(thr)


def test_rx_usecs_set_each_nics_interrupt_moderation_as_ixgbe_does():
    tb = build_testbed(METHODS["threaded"], rt_nic_rx_usecs=50, heavy_nic_rx_usecs=0)
    assert not tb.rxq.itr.adaptive and tb.rxq.itr.interval_ns == 50_000
    assert all(not h.rxq.itr.adaptive and h.rxq.itr.interval_ns == 0 for h in tb.heavies)
    default = build_testbed(METHODS["threaded"], rt_nic_rx_usecs=1)  # 1: adaptive
    assert default.rxq.itr.adaptive and all(h.rxq.itr.adaptive for h in default.heavies)
    fixed2 = build_testbed(METHODS["threaded"], rt_nic_rx_usecs=2)  # 2 is fixed, not adaptive
    assert not fixed2.rxq.itr.adaptive and fixed2.rxq.itr.interval_ns == 2_000
