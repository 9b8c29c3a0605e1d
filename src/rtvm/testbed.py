"""The testbed helper: builds a host, its NICs, VMs and workloads from a method's wiring.

A method (rtvm.methods) is data: which threads exist, their policies, priorities and CPUs, where
each NIC's interrupt goes, whether the partitioned softirq is on, which I/O path each VM uses.
This helper turns that into the model (ns-3's model / helper split) so that method files stay
short and hold no costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtvm.engine import Simulator
from rtvm.kernel import SCHED_FIFO, SCHED_OTHER, Kernel, NetTunables, Packet, RxQueue, Wire
from rtvm.kernel.llc import Llc
from rtvm.kernel.nic import default_rx_cost
from rtvm.kernel.profile import CostProfile
from rtvm.kernel.task import Code, Task
from rtvm.virt import (
    GuestSocket,
    GuestVirtioNet,
    OutsourcedSocket,
    VhostNet,
    VhostWorker,
    Virtqueue,
    Vm,
)
from rtvm.workloads.rr import RrClient, RrConfig, rr_server

GBPS = 1_000_000_000


@dataclass(frozen=True)
class Sched:
    """A thread's policy, priority and allowed CPUs (None: all)."""

    policy: str = SCHED_OTHER
    prio: int = 0
    cpus: tuple[int, ...] | None = None

    @property
    def allowed(self) -> set[int] | None:
        return set(self.cpus) if self.cpus is not None else None


FIFO = SCHED_FIFO
NORMAL = Sched()


@dataclass(frozen=True)
class RtPathSpec:
    """How the RT server's VM is wired (one method's choices)."""

    generation: str = "4.1-rt"
    ncpus: int = 2
    rt_nic_cpu: int = 0
    rt_irq: Sched = Sched(FIFO, 50)
    rt_vhost: Sched = Sched(FIFO, 48)
    rt_vcpu: Sched = Sched(FIFO, 47)
    housekeeping_vcpu: Sched = NORMAL
    io: str = "virtio"  # "virtio" | "outsourcing"
    rt_wake: str = "idle"  # outsourcing: "idle" (extended idle loop) | "virq"
    rt_poll_list: bool = False
    rtnet_prio: int = 47
    halt_poll_ns: int | None = None  # None: the profile's (the modelled kernel's default)
    event_idx: bool = True


@dataclass
class RtPath:
    """The built RT path: handles for tests, experiments and traces."""

    sim: Simulator
    kernel: Kernel
    llc: Llc
    vm: Vm
    rxq: RxQueue
    client: RrClient
    tx_wire: Wire
    vhost: VhostNet | None = None
    virtio: GuestVirtioNet | None = None
    sock: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def host_transmit(
    kernel: Kernel, wire: Wire, on_wire: Callable[[Packet], Any]
) -> Callable[[Packet, Task], Code]:
    """The host's TX path for one NIC: protocol + driver cost, then the wire."""

    def transmit(pkt: Packet, ctx: Task) -> Code:
        yield kernel.costs.tx_per_packet
        wire.transmit(pkt, on_wire)

    return transmit


def build_rt_path(
    spec: RtPathSpec,
    seed: int = 1,
    costs: CostProfile | None = None,
    rr: RrConfig | None = None,
    request_times: list[int] | None = None,
    tracer: Any = None,
    kernel: Kernel | None = None,
    llc: Llc | None = None,
) -> RtPath:
    """One RT VM (RT vCPU + housekeeping vCPU) serving UDP RR through ``spec.io``."""
    if kernel is None:
        sim = Simulator(seed=seed)
        kernel = Kernel(
            sim,
            ncpus=spec.ncpus,
            generation=spec.generation,
            costs=costs,
            tracer=tracer,
            net=NetTunables(rt_poll_list=spec.rt_poll_list, rtnet_prio=spec.rtnet_prio),
        )
    sim = kernel.sim
    c = kernel.costs
    if llc is None:
        llc = Llc(c.llc_bytes, c.llc_line, c.llc_miss)
    rr = rr or RrConfig()
    vm = Vm(kernel, "rt-vm", llc=llc)
    rt_vcpu = vm.add_vcpu(
        spec.rt_vcpu.policy, spec.rt_vcpu.prio, spec.rt_vcpu.allowed, halt_poll_ns=spec.halt_poll_ns
    )
    vm.add_vcpu(
        spec.housekeeping_vcpu.policy,
        spec.housekeeping_vcpu.prio,
        spec.housekeeping_vcpu.allowed,
        halt_poll_ns=spec.halt_poll_ns,
    )

    wire_in = Wire(kernel, 10 * GBPS)
    wire_out = Wire(kernel, 10 * GBPS)
    holder: dict[str, Any] = {}

    def on_wire(pkt: Packet) -> None:
        pkt.stamps["wire_out"] = sim.now
        holder["client"].response_on_wire(pkt)

    transmit = host_transmit(kernel, wire_out, on_wire)
    path = RtPath(sim, kernel, llc, vm, None, None, wire_out)  # type: ignore[arg-type]

    if spec.io == "virtio":
        rxvq = Virtqueue("rt-rx", 256, spec.event_idx)
        txvq = Virtqueue("rt-tx", 256, spec.event_idx)
        worker = VhostWorker(
            kernel, "vhost-rt", spec.rt_vhost.policy, spec.rt_vhost.prio, spec.rt_vhost.allowed
        )
        sock = GuestSocket(vm.guest, "rr")
        virtio = GuestVirtioNet(vm.guest, rt_vcpu, rxvq, txvq, lambda pkt: sock)

        def signal_guest(vq: Virtqueue) -> None:
            rt_vcpu.inject(virtio.rx_interrupt, waker=worker.task.cpu)

        vhost = VhostNet(kernel, worker, rxvq, txvq, signal_guest, transmit, llc, "rt")
        vhost.on_rx_used = lambda pkt: vm.await_entry(pkt, rt_vcpu)
        virtio.kick_host = vhost.kick

        def deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            vhost.tap_xmit(pkt, waker=cpu)

        def rx_cost(k: Kernel, pkt: Packet) -> int:
            return default_rx_cost(k, pkt) + pkt.npkts * k.costs.bridge_tap_per_packet

        recvfrom = sock.recvfrom

        def sendto(pkt: Packet, gt: Any) -> Code:
            yield from virtio.sendto(pkt, gt.vcpu)

        path.vhost, path.virtio, path.sock = vhost, virtio, sock
    elif spec.io == "outsourcing":
        if spec.rt_wake not in ("idle", "virq"):
            raise ValueError(f"rt_wake {spec.rt_wake!r}; allowed: idle, virq")
        osock = OutsourcedSocket(vm, "rr", rt_vcpu, rt=spec.rt_wake == "idle", transmit=transmit)

        def deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            osock.deliver(pkt, waker=cpu)

        rx_cost = default_rx_cost
        recvfrom = osock.recvfrom
        sendto = osock.sendto
        path.sock = osock
    else:
        raise ValueError(f"io {spec.io!r}; allowed: virtio, outsourcing")

    rxq = RxQueue(
        kernel,
        "eth0",
        irq=30,
        cpu=spec.rt_nic_cpu,
        deliver=deliver,
        rx_cost=rx_cost,
        irq_thread_policy=spec.rt_irq.policy,
        irq_thread_prio=spec.rt_irq.prio or 50,
    )
    client = RrClient(kernel, wire_in, rxq, rr, times=request_times)
    holder["client"] = client
    vm.guest.spawn("rr-server", rt_vcpu, rr_server(rr, recvfrom, sendto, llc), prio=90)
    client.start()
    path.rxq, path.client = rxq, client
    return path
