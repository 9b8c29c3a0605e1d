"""One RT request through virtio and through socket outsourcing (both wake-up modes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtvm.testbed import RtPathSpec, build_rt_path
from rtvm.workloads.rr import PATH_PROBES

MS = 1_000_000


def _run(io, wake="idle", times=(1 * MS,), until=20 * MS, **kw):
    p = build_rt_path(RtPathSpec(io=io, rt_wake=wake, **kw), request_times=list(times))
    p.sim.run(until=until)
    return p


def test_virtio_copies_twice_and_the_llc_sees_both():
    p = _run("virtio")
    rec = p.client.stats.completed()
    assert len(rec) == 1
    # receive: host kernel -> guest kernel (vhost handle_rx), guest kernel -> user buffer
    assert p.vhost.rx_copies == 1 and p.vm.guest.user_copies == 1
    assert p.vhost.tx_copies == 1
    # request in twice, response out twice (user -> guest kernel, guest -> host): 64 B each
    assert p.vm.guest.user_tx_copies == 1
    assert p.llc.streamed == 4 * 64


def test_outsourcing_copies_once_host_to_user():
    p = _run("outsourcing")
    assert len(p.client.stats.completed()) == 1
    assert p.vm.guest.user_copies == 0
    assert p.sock.rx_copies == 1 and p.sock.tx_copies == 1  # host <-> user buffer, once each
    assert p.llc.streamed == 64 + 64


def test_rt_outsourcing_does_not_interrupt_a_busy_server_fifo():
    # the second request arrives while the server computes its answer to the first
    p = _run("outsourcing", "idle", times=(1 * MS, 1 * MS + 8_000))
    recs = sorted(p.client.stats.completed(), key=lambda r: r.req_id)
    assert len(recs) == 2
    assert recs[0].vm_entry < recs[1].nic_rx < recs[0].vm_exit
    assert p.sock.virqs == 0 and sum(v.injections for v in p.vm.vcpus) == 0
    # it was picked up only by the server's next recvfrom, after the first response
    assert recs[1].vm_entry >= recs[0].vm_exit


def test_conventional_outsourcing_uses_virtual_interrupts():
    p = _run("outsourcing", "virq", times=(1 * MS, 5 * MS))
    assert len(p.client.stats.completed()) == 2
    assert p.sock.virqs == 2
    # by default the guest takes the vector on its housekeeping vCPU 0, which wakes the server
    # on the RT vCPU with a reschedule IPI (a VM exit of its own: the ICR write)
    housekeeping, rt = p.vm.vcpus
    assert housekeeping.injections == 2 and rt.injections == 2 == p.vm.guest.ipis_sent
    assert p.vm.exits_by_reason["msr_write"] == 2


def test_a_second_request_for_a_receiver_already_woken_costs_no_extra_rpc():
    """Two requests 1 us apart to a blocked server: the first event makes the server
    runnable; the second finds it so and wakes no one (its data waits for the next recvfrom),
    so the server makes the same RPCs as for two requests far apart, less the one blocking
    call between them (here 6 against 7). The second MSI merges into the pending one."""
    near = _run("outsourcing", "virq", times=(1 * MS, 1 * MS + 1_000))
    far = _run("outsourcing", "virq", times=(1 * MS, 4 * MS))
    assert len(near.client.stats.completed()) == 2 and len(far.client.stats.completed()) == 2
    assert sum(v.merged_injections for v in near.vm.vcpus) == 1
    assert near.sock.rpcs == far.sock.rpcs - 1


def test_segments_add_up_and_are_ordered():
    for io, wake in (("virtio", "idle"), ("outsourcing", "idle"), ("outsourcing", "virq")):
        p = _run(io, wake, times=(1 * MS, 4 * MS))
        for r in p.client.stats.completed():
            assert r.nic_rx <= r.vm_entry <= r.vm_exit <= r.wire_out
            host_rx = r.vm_entry - r.nic_rx
            guest = r.vm_exit - r.vm_entry
            host_tx = r.wire_out - r.vm_exit
            assert host_rx + guest + host_tx == r.latency_ns
            assert min(host_rx, guest, host_tx) > 0


def test_virtio_path_is_slower_than_rt_outsourcing_at_idle():
    v = _run("virtio", times=(1 * MS,)).client.stats.completed()[0].latency_ns
    o = _run("outsourcing", times=(1 * MS,)).client.stats.completed()[0].latency_ns
    assert o < v  # one copy, no vhost hop, no guest softirq


@given(
    io=st.sampled_from(["virtio", "outsourcing"]),
    wake=st.sampled_from(["idle", "virq"]),
    gaps=st.lists(st.integers(1_000, 200_000), min_size=1, max_size=25),
)
def test_property_each_request_answered_once_with_ordered_probes(io, wake, gaps):
    times, t = [], 1 * MS
    for g in gaps:
        t += g
        times.append(t)
    p = _run(io, wake, times=times, until=t + 50 * MS)
    st_ = p.client.stats
    done = st_.completed()
    assert len(done) + st_.dropped + sum(p.kernel.drops.values()) == st_.sent
    assert len({r.req_id for r in done}) == len(done)
    # every probe the path passes fires, in path order; the outsourced path has no vhost or
    # guest NAPI
    skipped = set() if io == "virtio" else {"vhost_rx", "guest_napi", "vhost_tx"}
    for r in done:
        stamps = [getattr(r, probe) for probe in PATH_PROBES if probe not in skipped]
        assert None not in stamps
        assert stamps == sorted(stamps)
        assert all(getattr(r, probe) is None for probe in skipped)


def test_more_requests_than_ring_slots_are_all_answered():
    # 600 requests > 256 TX ring slots: sent buffers must be reclaimed (free_old_xmit_skbs)
    times = [1 * MS + i * 50_000 for i in range(600)]
    for io in ("virtio", "outsourcing"):
        p = _run(io, times=times, until=40 * MS)
        assert len(p.client.stats.completed()) == 600, io


def test_the_guest_takes_the_virtio_interrupt_on_its_housekeeping_vcpu_by_default():
    """4.1's default: the vector goes to vCPU 0, whose NAPI wakes the server on the RT vCPU
    with a reschedule IPI (an ICR-write exit on the sender, an interrupt on the target)."""
    times = (1 * MS, 4 * MS, 7 * MS)
    p = _run("virtio", times=times)
    housekeeping, rt = p.vm.vcpus
    assert len(p.client.stats.completed()) == 3
    assert housekeeping.injections == 3 and rt.injections == 3 == p.vm.guest.ipis_sent
    assert p.vm.exits_by_reason["msr_write"] == 3
    assert p.virtio.vcpu is housekeeping


def test_with_the_vector_on_the_rt_vcpu_no_ipi_is_needed_and_the_response_is_sooner():
    times = (1 * MS, 4 * MS, 7 * MS)
    on_rt = _run("virtio", times=times, guest_irq_vcpu="rt")
    default = _run("virtio", times=times)
    housekeeping, rt = on_rt.vm.vcpus
    assert housekeeping.injections == 0 and rt.injections == 3
    assert on_rt.vm.guest.ipis_sent == 0 and "msr_write" not in on_rt.vm.exits_by_reason
    c = on_rt.kernel.costs
    for fast, slow in zip(
        on_rt.client.stats.completed(), default.client.stats.completed(), strict=True
    ):
        # at least the IPI's exit and entry, and its handler on the RT vCPU
        assert slow.latency_ns - fast.latency_ns >= c.vm_exit_entry + c.guest_irq


def test_a_reader_already_being_woken_gets_no_second_ipi():
    """Two requests 1 us apart reach the guest in one NAPI poll: the server, asleep on the RT
    vCPU, is put on its wake list once, and the second delivery finds it there (4.1's
    try_to_wake_up() of a TASK_WAKING task does nothing): one IPI, one ICR-write exit. The
    two vCPUs run on different host CPUs here, so the poll goes on while the RT vCPU wakes."""
    p = build_rt_path(RtPathSpec(io="virtio"), request_times=[1 * MS, 1 * MS + 1_000])
    housekeeping, rt = (v.task for v in p.vm.vcpus)
    housekeeping.allowed, rt.allowed = {0}, {1}
    p.sim.run(until=20 * MS)
    assert len(p.client.stats.completed()) == 2
    assert p.vm.guest.ipis_sent == 1 == p.vm.exits_by_reason["msr_write"]
    assert p.vm.vcpus[1].merged_injections == 0


def test_an_rt_vcpu_woken_on_the_polling_vcpus_host_cpu_preempts_the_poll():
    """4.1's select_task_rq_rt(): the FIFO RT vCPU, woken by the guest's IPI where the
    housekeeping vCPU (a CFS thread) runs, stays on that host CPU and preempts it. The server
    takes the first request before the poll delivers the second, which needs an IPI of its own."""
    times = [1 * MS, 10 * MS, 10 * MS + 1_000]
    p = build_rt_path(RtPathSpec(io="virtio"), request_times=times)
    housekeeping, rt = (v.task for v in p.vm.vcpus)
    housekeeping.allowed, rt.allowed = {0}, {0}  # the first request puts both on host CPU 0
    p.sim.run(until=5 * MS)
    assert housekeeping.cpu is rt.cpu is p.kernel.cpus[0]
    rt.allowed = {0, 1}  # now the RT vCPU may move, and host CPU 1 is idle
    p.sim.run(until=20 * MS)
    assert len(p.client.stats.completed()) == 3
    assert housekeeping.cpu is rt.cpu
    assert p.vm.guest.ipis_sent == 3 == p.vm.exits_by_reason["msr_write"]


def test_an_unknown_guest_irq_vcpu_is_refused():
    with pytest.raises(ValueError, match="allowed: housekeeping, rt"):
        _run("virtio", guest_irq_vcpu="both")
