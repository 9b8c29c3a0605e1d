"""vCPU halt and injection costs, halt polling, vhost weights and requeueing."""

from __future__ import annotations

import pytest

from rtvm.engine import Simulator
from rtvm.kernel import SCHED_FIFO, SCHED_OTHER, Kernel, Packet
from rtvm.virt import GUEST_BLOCK, VhostNet, VhostWorker, Virtqueue, Vm

US = 1_000


def _vm(halt_poll_ns=0):
    k = Kernel(Simulator(1), 2, "4.1-rt")
    vm = Vm(k, "vm")
    v = vm.add_vcpu(SCHED_FIFO, 47, {1}, halt_poll_ns=halt_poll_ns)
    seen = []

    def handler(vcpu):
        seen.append(k.sim.now)
        yield 100

    def idle_thread(gt):
        while True:
            yield GUEST_BLOCK

    vm.guest.spawn("sleeper", v, idle_thread)
    return k, vm, v, handler, seen


def test_halted_vcpu_woken_by_injection_pays_wake_switch_and_entry():
    k, _, v, handler, seen = _vm()
    k.sim.run(until=100 * US)
    assert v.halted and v.task.state == "S"
    switches = v.task.nr_switches
    # injected by a thread on CPU 0 (vhost, an IRQ thread) into the vCPU halted on CPU 1
    k.sim.at(200 * US, lambda _: v.inject(handler, waker=k.cpus[0]))
    k.sim.run(until=300 * US)
    c = k.costs
    # (the exit was paid when it halted) wake IPI + context switch + VM entry
    assert seen == [200 * US + c.ipi_cross_cpu + c.context_switch + c.vm_exit_entry // 2]
    assert v.task.nr_switches == switches + 1


def test_halt_polling_catches_a_quick_wake_without_a_context_switch():
    k, _, v, handler, seen = _vm(halt_poll_ns=200_000)
    # first halt: no poll yet (poll_ns starts at 0); a short block grows it to 10 us
    k.sim.at(50 * US, lambda _: v.inject(handler))
    k.sim.run(until=55 * US)
    assert v.halt_poll.poll_ns == 10_000
    assert v.polling  # the second halt polls (10 us) instead of blocking at once
    switches = v.task.nr_switches
    k.sim.at(57 * US, lambda _: v.inject(handler))
    k.sim.run(until=100 * US)
    assert v.polls_ok == 1
    assert v.task.nr_switches == switches  # no block, no switch
    assert seen[-1] == 57 * US + k.costs.vm_exit_entry // 2  # just the entry


def _vm_with_worker(cpus: int, vcpu_cpu: int, generation: str = "4.1-rt"):
    """A host; a guest thread computes 100 us on a FIFO 47 vCPU pinned to ``vcpu_cpu``, then
    sleeps. Returns (kernel, vm, vcpu, a 1 us guest handler, its run times, work ends)."""
    k = Kernel(Simulator(1), cpus, generation)
    vm = Vm(k, "vm")
    v = vm.add_vcpu(SCHED_FIFO, 47, {vcpu_cpu})
    seen, done = [], []

    def worker(gt):
        yield 100 * US
        done.append(k.sim.now)
        while True:
            yield GUEST_BLOCK

    def handler(vcpu):
        seen.append(k.sim.now)
        yield 1 * US

    vm.guest.spawn("w", v, worker)
    return k, vm, v, handler, seen, done


def _worker_kicked(at_ns: int | None, guest_code_us: int = 0):
    """The worker on CPU 1 (after ``guest_code_us`` of guest interrupt code, which is not
    cut); CPU 0 injects an interrupt at ``at_ns`` (None: never).
    Returns (guest handler times, work end, kernel, vm, vcpu)."""
    k, vm, v, handler, seen, done = _vm_with_worker(2, 1)

    def guest_irq_code(vcpu):
        yield guest_code_us * US

    if guest_code_us:
        k.sim.at(20 * US, lambda _: v.inject(guest_irq_code, waker=k.cpus[0]))
    if at_ns is not None:
        k.sim.at(at_ns, lambda _: v.inject(handler, waker=k.cpus[0]))
    k.sim.run(until=1_000 * US)
    return seen, done[0], k, vm, v


def test_running_guest_thread_is_kicked_out_by_injection_and_resumes():
    _, undisturbed, *_ = _worker_kicked(None)
    seen, end, k, vm, v = _worker_kicked(30 * US)
    c = k.costs
    # the kick is a reschedule IPI: its flight, then the external-interrupt exit and the
    # host's handler (the shared IPI path), then the injection on the entry
    assert v.kicks == 1 and vm.exits_by_reason.get("external_interrupt") == 1
    assert k.cpus[1].nr_resched_ipis == 1
    assert k.cpus[1].by_name.get("IPI/reschedule/1", 0) > 0
    assert seen == [30 * US + c.ipi_cross_cpu + c.vm_exit_entry + c.hardirq_entry_exit]
    # the thread's work is not lost: it ends later by the exit, the host handler and the guest's
    assert end == undisturbed + c.vm_exit_entry + c.hardirq_entry_exit + 1 * US


def test_a_kick_during_guest_interrupt_code_exits_at_once_and_injects_after_it():
    _, undisturbed, *_ = _worker_kicked(None, guest_code_us=20)
    seen, end, k, vm, v = _worker_kicked(30 * US, guest_code_us=20)
    c = k.costs
    first = 20 * US + c.ipi_cross_cpu + c.vm_exit_entry + c.hardirq_entry_exit  # the first kick
    # the second kick lands mid-handler: the exit now, the injection when the handler ends
    assert v.kicks == 2 and vm.exits_by_reason.get("external_interrupt") == 2
    assert seen == [first + 20 * US + c.vm_exit_entry + c.hardirq_entry_exit]
    assert end == undisturbed + c.vm_exit_entry + c.hardirq_entry_exit + 1 * US


def test_a_preempted_vcpu_needs_no_kick_and_takes_the_interrupt_when_it_runs_again():
    k, _, v, handler, seen, done = _vm_with_worker(1, 0)

    def rt_thread(t):  # a higher-priority host thread takes the CPU, and injects meanwhile
        yield 5 * US
        v.inject(handler, waker=k.cpus[0])
        yield 5 * US

    k.sim.at(30 * US, lambda _: k.create_task("vhost-rt", rt_thread, SCHED_FIFO, 48, {0}))
    k.sim.run(until=1_000 * US)
    assert v.kicks == 0 and k.cpus[0].nr_resched_ipis == 0
    # handled as soon as the vCPU runs again, before the rest of the guest thread's chunk
    back = 30 * US + 10 * US + k.costs.context_switch
    assert back <= seen[0] < back + 2 * k.costs.context_switch
    assert done[0] > seen[0] + 1 * US


@pytest.mark.parametrize(
    ("generation", "frame_bytes", "requeues"),
    [
        ("4.1-rt", 1500, 1),  # VHOST_NET_WEIGHT: 350 x 1500 B >= 512 KiB, then 150
        ("4.1-rt", 500, 0),  # 4.1 has no packet weight: 250,000 B in one run
        ("5.15-rt", 500, 1),  # 5.1+: VHOST_NET_PKT_WEIGHT, 256 skbs, then 244
    ],
)
def test_vhost_worker_stops_at_its_weight_and_requeues_other_work_runs_between(
    generation: str, frame_bytes: int, requeues: int
):
    k = Kernel(Simulator(1), 1, generation)
    rxvq, txvq = Virtqueue("rx", 1024), Virtqueue("tx", 256)
    while rxvq.add_buf(None):
        pass
    worker = VhostWorker(k, "vhost", SCHED_OTHER, 0)

    def transmit(pkt, ctx):
        yield 100

    vh = VhostNet(k, worker, rxvq, txvq, lambda vq: None, transmit)
    for _ in range(500):  # TUN_READQ_SIZE
        vh.tap_xmit(Packet("f", frame_bytes, "heavy"))
    vh.tap_xmit(Packet("f", frame_bytes, "heavy"))  # the tap socket's queue is full: dropped
    txvq.add_buf(Packet("g", 64), 1)
    vh.kick()
    k.sim.run(until=10_000 * US)
    assert vh.rx_frames == 500 and vh.tx_frames == 1
    assert k.drops.get("tap_full") == 1
    assert vh.requeues == requeues
    if requeues:
        assert worker.runs[:3] == ["handle_rx", "handle_tx", "handle_rx"]


@pytest.mark.parametrize(
    ("generation", "first", "count"),
    [
        ("4.1-rt", [1, 2, 3], 200),  # vhost_add_used_and_signal_n after every packet
        ("5.15-rt", [65, 130, 195], 4),  # VHOST_NET_BATCH, then the end of the run
    ],
)
def test_vhost_rx_signals_per_packet_on_4_1_and_in_batches_later(
    generation: str, first: list[int], count: int
):
    k = Kernel(Simulator(1), 1, generation)
    rxvq = Virtqueue("rx", 1024, event_idx=False)  # every decision can interrupt
    while rxvq.add_buf(None):
        pass
    signals = []
    worker = VhostWorker(k, "vhost", SCHED_OTHER, 0)
    vh = VhostNet(
        k,
        worker,
        rxvq,
        Virtqueue("tx"),
        lambda vq: signals.append(vq.used_idx),
        lambda p, c: iter(()),
    )
    for _ in range(200):
        vh.tap_xmit(Packet("f", 1500, "heavy"))
    k.sim.run(until=10_000 * US)
    assert signals[:3] == first and signals[-1] == 200 and len(signals) == count


def test_an_rx_refill_kick_restarts_handle_rx_not_handle_tx():
    """Each virtqueue has its own ioeventfd: the guest's kick after refilling its RX ring
    runs handle_rx, which copies what waited in the tap for buffers."""
    k = Kernel(Simulator(1), 1, "4.1-rt")
    rxvq = Virtqueue("rx", 4)
    worker = VhostWorker(k, "vhost", SCHED_OTHER, 0)
    vh = VhostNet(k, worker, rxvq, Virtqueue("tx"), lambda vq: None, lambda p, c: iter(()))
    vh.tap_xmit(Packet("f", 1500, "heavy"))
    k.sim.run(until=100 * US)
    assert vh.rx_frames == 0 and vh.waits_for_buffers == 1  # no buffers yet
    rxvq.add_buf(None, 4)
    assert rxvq.kick_prepare()
    vh.rx_kick()
    k.sim.run(until=200 * US)
    assert vh.rx_frames == 1 and worker.runs[-1] == "handle_rx"


def _rt_wait_behind(generation: str, busy_thread: str) -> int:
    """A FIFO 48 task woken at 50 us on a CPU busy with a CFS vhost worker in a 300 us handler,
    or with a CFS vCPU running guest code: how long until it runs?"""
    k = Kernel(Simulator(1), 1, generation)
    k.costs = k.costs.with_values(context_switch=0)
    if busy_thread == "vhost":
        worker = VhostWorker(k, "vhost-heavy", SCHED_OTHER, 0)

        def long_handler(t):
            yield 300 * US  # e.g. handle_rx copying 512 KiB: no preemption point inside

        worker.queue(long_handler)
    else:
        vm = Vm(k, "heavy")
        v = vm.add_vcpu(SCHED_OTHER, 0, {0})

        def guest_work(gt):
            yield 1_000 * US

        vm.guest.spawn("iperf", v, guest_work)
    ran = []

    def rt(t):
        ran.append(k.sim.now)
        yield 1 * US

    k.sim.at(50 * US, lambda _: k.create_task("vhost-rt", rt, SCHED_FIFO, 48, {0}))
    k.sim.run(until=2_000 * US)
    return ran[0] - 50 * US


def test_vanilla_fifo_thread_waits_for_a_cfs_vhost_handler_but_not_for_guest_code():
    # PREEMPT_NONE: the FIFO thread waits for vhost_worker's need_resched check after the work
    assert _rt_wait_behind("vanilla", "vhost") >= 250 * US
    # a vCPU in guest mode is preempted at once (the reschedule IPI exits the guest)
    assert _rt_wait_behind("vanilla", "vcpu") < 5 * US
    # with CONFIG_PREEMPT (and on RT) kernel code is preempted at once
    assert _rt_wait_behind("vanilla-preempt", "vhost") < 5 * US
    assert _rt_wait_behind("4.1-rt", "vhost") < 5 * US


def _guest_worker_hit_by_a_host_interrupt(at_ns: int | None):
    """A vanilla host; a guest thread computes 100 us on a vCPU of CPU 1; a device interrupt
    of CPU 1 fires at ``at_ns`` (None: never). Returns (handler times, work end, kernel, vm)."""
    from rtvm.kernel.irq import IrqLine

    k, vm, _, _, _, done = _vm_with_worker(2, 1, "vanilla")
    seen = []

    def handler(cpu, ctx):
        seen.append(k.sim.now)
        yield 2 * US

    line = IrqLine(k, 40, "dev", handler, cpu=1)
    if at_ns is not None:
        k.sim.at(at_ns, lambda _: line.fire())
    k.sim.run(until=1_000 * US)
    return seen, done[0], k, vm


def test_a_host_interrupt_in_guest_mode_pays_the_vm_exit_and_entry_first():
    _, undisturbed, _, _ = _guest_worker_hit_by_a_host_interrupt(None)
    seen, end, k, vm = _guest_worker_hit_by_a_host_interrupt(50 * US)
    c = k.costs
    assert seen == [50 * US + c.vm_exit_entry + c.hardirq_entry_exit]
    assert vm.exits_by_reason.get("external_interrupt") == 1
    # the guest's work is not lost; it ends later by the exit, the entry and the handler
    assert end == undisturbed + c.vm_exit_entry + c.hardirq_entry_exit + 2 * US


def test_a_host_interrupt_while_the_vcpu_is_halted_costs_no_vm_exit():
    seen, _, k, vm = _guest_worker_hit_by_a_host_interrupt(500 * US)  # long after the work
    assert seen == [500 * US + k.costs.hardirq_entry_exit]
    assert "external_interrupt" not in vm.exits_by_reason


def test_a_kick_whose_ipi_finds_the_vcpu_preempted_is_delivered_when_it_runs_again():
    # the IPI is in flight when a local wakeup preempts the vCPU (no interrupt, so no exit hook):
    # kvm_sched_out tells it it left guest mode, and a later kick sends a new IPI
    k, _, v, handler, seen, _ = _vm_with_worker(2, 1)

    def rt_thread(t):
        yield 5 * US

    k.sim.at(30 * US, lambda _: v.inject(handler, waker=k.cpus[0]))
    k.sim.at(30 * US + 500, lambda _: k.create_task("rt48", rt_thread, SCHED_FIFO, 48, {1}))
    k.sim.at(60 * US, lambda _: v.inject(handler, waker=k.cpus[0]))
    k.sim.run(until=1_000 * US)
    c = k.costs
    # the IPI lands on the FIFO 48 task (its handler only); the vCPU injects as soon as it is back
    back = 30 * US + 500 + c.context_switch + 5 * US + c.hardirq_entry_exit + c.context_switch
    assert seen[0] == back
    assert v.kicks == 2 and k.cpus[1].nr_resched_ipis == 2 and not v.kick_in_flight
    assert seen[1] == 60 * US + c.ipi_cross_cpu + c.vm_exit_entry + c.hardirq_entry_exit


def test_a_kick_from_another_cpu_takes_the_ipi_flight_then_the_exit_and_the_host_handler():
    k, vm, v, handler, seen, _ = _vm_with_worker(2, 1)

    def two_injections(_):  # e.g. vhost on CPU 0 signals twice before the IPI lands
        v.inject(handler, waker=k.cpus[0])
        v.inject(handler, waker=k.cpus[0])

    k.sim.at(30 * US, two_injections)
    k.sim.run(until=1_000 * US)
    c = k.costs
    # one IPI (the second kick finds the vCPU already exiting), one exit; the second MSI
    # finds the vector's IRR bit still set and merges into it: one handler run
    assert v.kicks == 1 and vm.exits_by_reason.get("external_interrupt") == 1
    assert k.cpus[1].nr_resched_ipis == 1
    assert seen == [30 * US + c.ipi_cross_cpu + c.vm_exit_entry + c.hardirq_entry_exit]
    assert v.injections == 1 and v.merged_injections == 1


def test_an_interrupt_injected_once_its_handler_began_is_taken_again():
    """The IRR bit is cleared when the vector is delivered: an MSI during the handler sets it
    anew, and the handler runs a second time."""
    k, _vm, v, handler, seen, _ = _vm_with_worker(2, 1)
    k.sim.at(30 * US, lambda _: v.inject(handler, waker=k.cpus[0]))
    c = k.costs
    first = 30 * US + c.ipi_cross_cpu + c.vm_exit_entry + c.hardirq_entry_exit
    k.sim.at(first + 500, lambda _: v.inject(handler, waker=k.cpus[0]))  # mid-handler
    k.sim.run(until=1_000 * US)
    assert seen[0] == first and len(seen) == 2 and seen[1] >= first + 1 * US
    assert v.injections == 2 and v.merged_injections == 0


def _guest_nic(ring: int = 256):
    """A guest virtio-net driver on a vCPU, with the host side fed by hand."""
    from rtvm.virt.guest import GuestVirtioNet

    k, vm, v, _, _ = _vm()
    rxvq, txvq = Virtqueue("rx", ring), Virtqueue("tx", ring)
    got: list[Packet] = []
    nic = GuestVirtioNet(vm.guest, v, rxvq, txvq, demux=lambda p: None)
    nic.on_consumed = got.append
    return k, v, nic, rxvq, got


def _host_delivers(k, v, nic, rxvq, pkts) -> None:
    """vhost's side: fill buffers, return them used, interrupt the guest once."""
    for pkt in pkts:
        nbufs = rxvq.rx_buffers(pkt.nbytes)
        assert rxvq.take_avail_buffers(nbufs)
        rxvq.push_used(pkt, nbufs)
    v.inject(nic.rx_interrupt, waker=k.cpus[0])


def test_guest_napi_polls_64_skbs_however_many_buffers_each_filled():
    """virtnet_receive counts skbs against the NAPI budget: receive_mergeable takes a GRO'd
    packet's extra buffers itself. 70 packets of 3 buffers each: 64 in the first poll."""
    k, v, nic, rxvq, got = _guest_nic(ring=256)
    assert rxvq.rx_buffers(4000) == 3  # 1536 B buffers
    pkts = [Packet("f", 4000, "heavy", 1) for _ in range(70)]
    k.sim.at(10 * US, lambda _: _host_delivers(k, v, nic, rxvq, pkts))
    k.sim.run(until=5_000 * US)
    assert len(got) == 70
    assert nic.napi_polls == 2  # 64 skbs (192 buffers), then 6


def test_guest_refills_its_rx_ring_only_once_more_than_half_is_free():
    """4.1 virtnet_receive refills (try_fill_recv) only when num_free > size / 2, then fills
    the ring, with buffers sized from the average packet length (mergeable: up to a page)."""
    k, v, nic, rxvq, got = _guest_nic(ring=256)
    assert rxvq.buf_len == 1536  # the first fill: GOOD_PACKET_LEN, aligned to 256
    big = [Packet("f", 43 * 1500, "heavy", 43) for _ in range(2)]
    assert rxvq.rx_buffers(big[0].nbytes) == 43  # 64,526 B in 1536 B buffers
    k.sim.at(10 * US, lambda _: _host_delivers(k, v, nic, rxvq, big))
    k.sim.run(until=1_000 * US)
    assert len(got) == 2 and rxvq.num_free == 86  # 86 <= 128: not refilled yet
    k.sim.at(1_100 * US, lambda _: _host_delivers(k, v, nic, rxvq, big[:1]))
    k.sim.run(until=2_000 * US)
    assert len(got) == 3 and rxvq.num_free == 0  # 129 free: refilled, in page-sized buffers
    assert rxvq.buf_len == 4096 and rxvq.rx_buffers(big[0].nbytes) == 16


def test_every_vm_exit_runs_kvms_exit_code_so_another_vcpus_exits_keep_it_warm():
    """KVM's exit and entry code (the ``host/kvm`` owner) runs on every exit, whatever its
    reason: a vCPU that only takes external-interrupt exits keeps those lines resident for a
    halted vCPU's return, which then misses only on what streamed since."""
    from rtvm.kernel.llc import Llc

    k = Kernel(Simulator(1), 2, "4.1-rt")
    llc = Llc(8 * 1024 * 1024, 64, 65)
    llc.register("host/kvm", 30_000)
    busy, idle = Vm(k, "busy", llc=llc), Vm(k, "idle", llc=llc)
    a = busy.add_vcpu(SCHED_OTHER, 0, {0})
    b = idle.add_vcpu(SCHED_FIFO, 47, {1})
    a.ws_owner = b.ws_owner = "host/kvm"
    llc.stream(64 * 1024 * 1024)  # 8x the LLC since anyone ran the KVM code: all lost
    cold = a._external_interrupt_exit() - k.costs.vm_exit_entry
    assert cold >= 469 * 65 * 0.99  # ~469 lines of 64 B, each a miss
    llc.stream(64 * 1024)
    warm = b.kvm_stall()  # 64 KB streamed since a's exit: a few lines lost
    assert 0 < warm < cold / 50
