"""The testbed helper: builds a host, its NICs, VMs and workloads from a method's wiring.

A method (rtvm.methods) is data: which threads exist, their policies, priorities and CPUs, where
each NIC's interrupt goes, whether the partitioned softirq is on, which I/O path each VM uses.
This helper turns it into the model (ns-3's model / helper split), so that method files stay
short and hold no costs. The testbed is Garcia et al.'s (DESIGN.md section 3): one RT VM (an RT
vCPU running the UDP RR server, a housekeeping vCPU) on the RT 10 GbE link, and two heavy
receiver VMs (one vCPU each, an iperf-like reader) on two other 10 GbE links.

The RT path's code has cache footprints: each stage that runs for an RT frame (host RX, vhost,
KVM's exit and entry code, the guest network stack or the VMRPC socket path, host TX) touches
a footprint in proportion to the code it runs (``rt_stage_ws_bytes_per_us`` per microsecond of
the stage's warm CPU cost, RT_STAGE_CODE) and the server touches ``rt_server_ws_bytes``; what
heavy traffic streamed through the LLC since costs misses (kernel/llc.py). The host stages are
host kernel code, which the heavy paths run too (the same driver, bridge, vhost, KVM and TX
code): they touch the same owners, so those lines stay resident while heavy traffic flows. The
guest stages and the server live in the RT VM's own memory, which nothing else touches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rtvm.engine import Simulator
from rtvm.kernel import Kernel, NetTunables, Packet, RxQueue, TcpSender, Wire
from rtvm.kernel.llc import Llc
from rtvm.kernel.napi import netif_rx_ni
from rtvm.kernel.nic import default_segment_cost
from rtvm.kernel.profile import CostProfile, load_profile
from rtvm.kernel.task import Code, Task
from rtvm.methods.base import MethodSpec, Sched, fifo
from rtvm.virt import (
    GuestSocket,
    GuestVirtioNet,
    OutsourcedSocket,
    VhostNet,
    VhostWorker,
    Virtqueue,
    Vm,
)
from rtvm.virt.vcpu import Vcpu
from rtvm.workloads.idle_compression import CfsStandIn, IdleCompression, floor_and_reference
from rtvm.workloads.rr import RrClient, RrConfig, rr_config, rr_server

GBPS = 1_000_000_000
SEC = 1_000_000_000

#: The RT path's stages (LLC owners) and the profile costs of the code each one runs for one
#: request. A stage's cache footprint is that code's warm CPU time times
#: ``rt_stage_ws_bytes_per_us``: a longer code path touches more lines (text, stack, the
#: structures it walks). RX and TX are different code (handle_rx / handle_tx, udp_recvmsg /
#: udp_sendmsg), so both count. Bridge and tap code runs only on the virtio path (see
#: rt_stage_footprints). ``host/`` stages are host kernel code that the heavy paths run as well
#: (HEAVY_PATH_STAGES); ``rt/`` stages are the RT guest's kernel, in the RT VM's own memory.
#: What the model leaves out: the RT path's private host data (its NIC ring's descriptors, its
#: vring and vhost_virtqueue, its vCPU's VMCS), a few KB against tens of KB of code.
RT_STAGE_CODE: dict[str, tuple[str, ...]] = {
    "host/rx": (
        "hardirq_entry_exit",
        "nic_irq_handler",
        "softirq_entry",
        "napi_poll_call",
        "rx_driver_per_packet",
        "rx_protocol_per_packet",
    ),
    "host/vhost": ("vhost_rx_per_packet", "vhost_tx_per_packet"),
    "host/kvm": ("vm_exit_entry",),
    "rt/guest-net": (
        "guest_irq",
        "guest_rx_per_packet",
        "guest_tx_per_packet",
        "syscall",
        "syscall",
    ),
    "rt/guest-vmrpc": ("vmrpc_call", "vmrpc_call", "syscall", "syscall"),
    "host/tx": ("tx_per_packet",),
}
#: The host stages each heavy receiver's path runs, by its I/O path: with virtio the NIC
#: driver, GRO and bridge/tap (host/rx), vhost handle_rx / handle_tx, KVM's exits and entries
#: and the ACKs' transmit; with socket outsourcing the driver and IP, KVM and the ACKs'
#: transmit from the host socket (the RT guest's VMRPC stub is in its own memory).
HEAVY_PATH_STAGES: dict[str, tuple[str, ...]] = {
    "virtio": ("host/rx", "host/vhost", "host/kvm", "host/tx"),
    "outsourcing": ("host/rx", "host/kvm", "host/tx"),
}
RT_STAGES = tuple(RT_STAGE_CODE)
#: a pure TCP ACK: IP 20 + TCP 20 + timestamps 12
ACK_BYTES = 52


def rt_stage_footprints(c: CostProfile, rt_io: str) -> dict[str, int]:
    """Bytes of LLC footprint of each RT stage for the RT VM's I/O path ``rt_io``."""
    out = {}
    for stage, names in RT_STAGE_CODE.items():
        ns = sum(getattr(c, n) for n in names)
        if stage == "host/rx" and rt_io == "virtio":
            ns += c.bridge_tap_per_packet  # br_handle_frame + tun_net_xmit run for this frame
        out[stage] = ns * c.rt_stage_ws_bytes_per_us // 1000
    return out


@dataclass
class Heavy:
    """One heavy receiver: its VM, NIC queue, remote sender and what its reader consumed."""

    vm: Vm
    rxq: RxQueue
    sender: TcpSender
    consumed_bytes: int = 0  # TCP payload read by the iperf-like reader


@dataclass
class Testbed:
    sim: Simulator
    kernel: Kernel
    llc: Llc
    method: MethodSpec
    vm: Vm
    rxq: RxQueue
    client: RrClient
    heavies: list[Heavy] = field(default_factory=list)
    vhost: VhostNet | None = None
    virtio: GuestVirtioNet | None = None
    sock: Any = None
    idle: IdleCompression | None = None


# -- shared pieces ------------------------------------------------------------------------------
def host_transmit(
    kernel: Kernel,
    wire: Wire,
    on_wire: Callable[[Packet], Any],
    llc: Llc | None = None,
    ws_owner: str | None = None,
) -> Callable[[Packet, Task], Code]:
    """The host's TX path for one NIC: UDP/IP + driver, then the wire."""

    def transmit(pkt: Packet, ctx: Any) -> Code:
        stall = llc.touch(ws_owner) if llc is not None and ws_owner is not None else 0
        yield kernel.costs.tx_per_packet + stall
        wire.transmit(pkt, on_wire)

    return transmit


def tun_sendmsg(xmit: Callable[[Packet, Any], Code]) -> Callable[[Packet, Task], Code]:
    """vhost TX's sendmsg on the tap: tun_get_user() -> netif_rx_ni() (Linux < 4.11), so the
    bridge and ``xmit`` run in NET_RX, from the per-CPU backlog of the vhost thread's CPU."""

    def sendmsg(pkt: Packet, t: Task) -> Code:
        yield from netif_rx_ni(t.cpu, t, pkt, xmit)

    return sendmsg


def _virtio_segment_cost(k: Kernel, pkt: Packet) -> int:
    """Host RX to the tap, per (GRO) segment: IP, then bridge forwarding and tun_net_xmit."""
    return default_segment_cost(k, pkt) + k.costs.bridge_tap_per_packet


def _vcpu(vm: Vm, s: Sched, halt_poll_ns: int | None) -> Vcpu:
    return vm.add_vcpu(s.policy, s.prio, s.allowed, halt_poll_ns=halt_poll_ns)


def _irq_sched(s: Sched) -> tuple[str, int]:
    return s.policy, s.prio or 50


# -- the RT VM --------------------------------------------------------------------------------
#: Which of the RT VM's vCPUs takes its device interrupt. The VM has a housekeeping vCPU (vCPU
#: 0, the boot CPU) and the RT vCPU that runs the server. With one queue pair, 4.1's
#: virtio-net sets no affinity hint (virtnet_set_affinity), so the vector keeps the default
#: affinity, all CPUs. A KVM guest runs x2APIC (KVM offers it without interrupt
#: remapping), and in both of 4.1's x2APIC modes the vector allocation gives an interrupt with
#: the default affinity a single destination CPU, the first it tries: CPU 0 (physical:
#: default_vector_allocation_domain; cluster: cluster_vector_allocation_domain, "default case
#: of boot, device bringup etc will use a single cpu"). Only an explicit smp_affinity
#: (irqbalance, an administrator) moves or spreads it. So by default the RT
#: packet's guest interrupt and NAPI run on the housekeeping vCPU, a normal-priority thread
#: on the host, which then wakes the server on the RT vCPU with a reschedule IPI: the
#: priority inversion in the guest kernel that Garcia et al. name, and that socket
#: outsourcing's idle-loop wakeup avoids. ``rt``: the vector's affinity set to the RT vCPU.
GUEST_IRQ_VCPUS = ("housekeeping", "rt")


def _build_rt(
    tb_kernel: Kernel,
    llc: Llc,
    m: MethodSpec,
    rr: RrConfig,
    request_times: list[int] | None,
    halt_poll_ns: int | None,
    event_idx: bool,
    itr_us: int | None = None,
    guest_irq_vcpu: str = "housekeeping",
) -> dict[str, Any]:
    k = tb_kernel
    c = k.costs
    sim = k.sim
    for owner, ws_bytes in rt_stage_footprints(c, m.rt_io).items():
        llc.register(owner, ws_bytes)
    vm = Vm(k, "rt-vm", llc=llc)
    hk_vcpu = _vcpu(vm, m.housekeeping_vcpu, halt_poll_ns)  # vCPU 0, the boot CPU
    rt_vcpu = _vcpu(vm, m.rt_vcpu, halt_poll_ns)
    hk_vcpu.ws_owner = rt_vcpu.ws_owner = "host/kvm"  # both exit through KVM's code
    if guest_irq_vcpu not in GUEST_IRQ_VCPUS:
        allowed = ", ".join(GUEST_IRQ_VCPUS)
        raise ValueError(f"guest_irq_vcpu {guest_irq_vcpu!r}; allowed: {allowed}")
    irq_vcpu = hk_vcpu if guest_irq_vcpu == "housekeeping" else rt_vcpu
    wire_in, wire_out = Wire(k, 10 * GBPS), Wire(k, 10 * GBPS)
    holder: dict[str, Any] = {}

    def on_wire(pkt: Packet) -> None:
        pkt.stamps["wire_out"] = sim.now
        holder["client"].response_on_wire(pkt)

    transmit = host_transmit(k, wire_out, on_wire, llc, "host/tx")
    out: dict[str, Any] = {"vm": vm}
    if m.rt_io == "virtio":
        rxvq, txvq = Virtqueue("rt-rx", 256, event_idx), Virtqueue("rt-tx", 256, event_idx)
        worker = VhostWorker(k, "vhost-rt", m.rt_vhost.policy, m.rt_vhost.prio, m.rt_vhost.allowed)
        sock = GuestSocket(vm.guest, "rr")
        virtio = GuestVirtioNet(vm.guest, irq_vcpu, rxvq, txvq, lambda pkt: sock)
        virtio.ws_owner = "rt/guest-net"

        def signal_guest(vq: Virtqueue) -> None:
            irq_vcpu.inject(virtio.rx_interrupt, waker=worker.task.cpu)

        vhost = VhostNet(k, worker, rxvq, txvq, signal_guest, tun_sendmsg(transmit), llc, "rt")
        vhost.ws_owner = "host/vhost"
        vhost.on_rx_used = lambda pkt: vm.await_entry(pkt, irq_vcpu)
        virtio.kick_host = vhost.kick
        virtio.kick_host_rx = vhost.rx_kick

        def tap_deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            vhost.tap_xmit(pkt, waker=cpu)

        def virtio_sendto(pkt: Packet, gt: Any) -> Code:
            yield from virtio.sendto(pkt, gt.vcpu)

        deliver, sendto = tap_deliver, virtio_sendto
        base_cost: Callable[[Kernel, Packet], int] = _virtio_segment_cost
        recvfrom = sock.recvfrom
        out.update(vhost=vhost, virtio=virtio, sock=sock)
    elif m.rt_io == "outsourcing":
        if m.rt_wake not in ("idle", "virq"):
            raise ValueError(f"rt_wake {m.rt_wake!r}; allowed: idle, virq")
        osock = OutsourcedSocket(
            vm, "rr", rt_vcpu, rt=m.rt_wake == "idle", transmit=transmit, irq_vcpu=irq_vcpu
        )
        osock.ws_owner = "rt/guest-vmrpc"

        def socket_deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            osock.deliver(pkt, waker=cpu)

        deliver = socket_deliver
        base_cost = default_segment_cost
        recvfrom, sendto = osock.recvfrom, osock.sendto
        out.update(sock=osock)
    else:
        raise ValueError(f"rt_io {m.rt_io!r}; allowed: virtio, outsourcing")

    def segment_cost(kk: Kernel, pkt: Packet) -> int:
        return base_cost(kk, pkt) + llc.touch("host/rx")

    policy, prio = _irq_sched(m.rt_irq)
    rxq = RxQueue(
        k,
        "eth0",
        irq=30,
        cpu=m.rt_nic_cpu,
        deliver=deliver,
        segment_cost=segment_cost,
        irq_thread_policy=policy,
        irq_thread_prio=prio,
        itr_us=itr_us,
    )
    client = RrClient(k, wire_in, rxq, rr, times=request_times)
    holder["client"] = client
    vm.guest.spawn("rr-server", rt_vcpu, rr_server(rr, recvfrom, sendto, llc), prio=90)
    out.update(rxq=rxq, client=client)
    return out


# -- the heavy receivers ----------------------------------------------------------------------
def _heavy_owner(llc: Llc, m: MethodSpec, stage: str) -> str | None:
    """The RT path's LLC owner for host ``stage`` if the heavy path runs that code too."""
    runs = stage in HEAVY_PATH_STAGES.get(m.heavy_io, ())
    return stage if runs and stage in llc.owners else None


def _build_heavy(
    k: Kernel,
    llc: Llc,
    m: MethodSpec,
    i: int,
    halt_poll_ns: int | None,
    event_idx: bool,
    itr_us: int | None = None,
) -> Heavy:
    vm = Vm(k, f"heavy{i}", llc=llc)
    vcpu = _vcpu(vm, m.heavy_vcpu, halt_poll_ns)
    vcpu.ws_owner = _heavy_owner(llc, m, "host/kvm")
    holder: dict[str, TcpSender] = {}
    wire = Wire(k, 10 * GBPS)
    if m.heavy_io == "virtio":
        rxvq, txvq = Virtqueue(f"h{i}-rx", 256, event_idx), Virtqueue(f"h{i}-tx", 256, event_idx)
        worker = VhostWorker(
            k, f"vhost-heavy{i}", m.heavy_vhost.policy, m.heavy_vhost.prio, m.heavy_vhost.allowed
        )
        sock = GuestSocket(vm.guest, f"tcp{i}")
        virtio = GuestVirtioNet(vm.guest, vcpu, rxvq, txvq, lambda pkt: sock)

        def signal_guest(vq: Virtqueue) -> None:
            vcpu.inject(virtio.rx_interrupt, waker=worker.task.cpu)

        def ack_on_wire(ack: Packet) -> None:
            holder["sender"].ack(ack.payload)

        ack_xmit = host_transmit(
            k, Wire(k, 10 * GBPS), ack_on_wire, llc, _heavy_owner(llc, m, "host/tx")
        )
        vhost = VhostNet(
            k, worker, rxvq, txvq, signal_guest, tun_sendmsg(ack_xmit), llc, f"heavy{i}"
        )
        vhost.ws_owner = _heavy_owner(llc, m, "host/vhost")
        virtio.kick_host = vhost.kick
        virtio.kick_host_rx = vhost.rx_kick

        def tap_deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            vhost.tap_xmit(pkt, waker=cpu)

        def virtio_send_ack(acked: int, gt: Any) -> Code:
            """tcp_recvmsg -> tcp_cleanup_rbuf -> tcp_send_ack, down the guest's virtio TX."""
            ack = Packet(None, ACK_BYTES, "ack", 1, payload=acked)
            yield from virtio.sendto(ack, gt.vcpu, syscall=False)

        deliver, send_ack = tap_deliver, virtio_send_ack
        segment_cost: Callable[[Kernel, Packet], int] = _virtio_segment_cost
        recvfrom = sock.recvfrom
    elif m.heavy_io == "outsourcing":
        osock = OutsourcedSocket(vm, f"tcp{i}", vcpu, rt=False)

        def socket_deliver(pkt: Packet, cpu: Any, ctx: Any) -> None:
            osock.deliver(pkt, waker=cpu)

        tx_owner = _heavy_owner(llc, m, "host/tx")

        def host_send_ack(acked: int, gt: Any) -> Code:
            """The host socket's tcp_recvmsg sends the ACK straight down the host stack."""
            yield k.costs.tx_per_packet + (llc.touch(tx_owner) if tx_owner else 0)
            holder["sender"].ack(acked)

        deliver, send_ack = socket_deliver, host_send_ack
        segment_cost = default_segment_cost
        recvfrom = osock.recvfrom
    else:
        raise ValueError(f"heavy_io {m.heavy_io!r}; allowed: virtio, outsourcing")

    rx_owner = _heavy_owner(llc, m, "host/rx")
    if rx_owner is not None:
        path_cost = segment_cost

        def shared_rx_segment_cost(kk: Kernel, pkt: Packet) -> int:
            """The protocol (or bridge) work; it runs the RT path's host RX code as well."""
            return path_cost(kk, pkt) + llc.touch(rx_owner)

        segment_cost = shared_rx_segment_cost

    policy, prio = _irq_sched(m.heavy_irq)
    rxq = RxQueue(
        k,
        f"eth{i + 1}",
        irq=31 + i,
        cpu=m.heavy_nic_cpus[i],
        deliver=deliver,
        segment_cost=segment_cost,
        irq_thread_policy=policy,
        irq_thread_prio=prio,
        gro_frames=k.costs.gro_segment,
        itr_us=itr_us,
    )
    # The receive window: a few bandwidth-delay products at 10 Gb/s, below what the NIC ring
    # and the tap queue hold, as autotuned receive buffers keep it for a LAN flow.
    sender = TcpSender(k, wire, rxq, name=f"iperf{i}", window_bytes=512 * 1024)
    holder["sender"] = sender
    h = Heavy(vm, rxq, sender)

    def reader(gt: Any) -> Code:
        """iperf -s: read and count; reading sends the ACK (one per GRO'd segment read)."""
        while True:
            pkt = yield from recvfrom(gt)
            h.consumed_bytes += sender.payload_bytes(pkt.nbytes)
            yield from send_ack(pkt.nbytes, gt)

    vm.guest.spawn("iperf", vcpu, reader)
    k.sim.after(1_000 + 7_919 * i, lambda _: sender.start())
    return h


# -- assembly ---------------------------------------------------------------------------------
def build_testbed(
    method: MethodSpec,
    seed: int = 1,
    costs: CostProfile | None = None,
    rr: RrConfig | None = None,
    heavy: int = 2,
    request_times: list[int] | None = None,
    tracer: Any = None,
    generation: str | None = None,
    ncpus: int = 2,
    halt_poll_ns: int | None = None,
    event_idx: bool = True,
    hz: int = 1000,
    nohz_full: tuple[int, ...] | None = None,
    rt_nic_cpu: int | None = None,
    heavy_nic_cpus: tuple[int, ...] | None = None,
    rt_nic_rx_usecs: int | None = None,
    heavy_nic_rx_usecs: int | None = None,
    idle_keep: int | None = None,
    guest_irq_vcpu: str = "housekeeping",
) -> Testbed:
    """Wire ``method`` on the testbed: host, RT VM and ``heavy`` heavy receiver VMs.
    ``rt_nic_cpu`` / ``heavy_nic_cpus`` re-route the NICs' interrupts (a scenario's [irq]).
    ``rt_nic_rx_usecs`` / ``heavy_nic_rx_usecs``: their interrupt moderation as ``ethtool -C
    ethN rx-usecs`` sets it on ixgbe (None or 1: adaptive, the driver's default; 0: off; more:
    at least that many us between interrupts).
    ``nohz_full``: the NO_HZ_FULL CPUs; None: every CPU but CPU 0 (the testbed runs
    NO_HZ_FULL, and 4.1 keeps the boot CPU's tick for timekeeping).
    ``idle_keep``: simulate 1/N of each RT gap beyond its floor (workloads.idle_compression);
    None or 1: every gap in full.
    ``guest_irq_vcpu``: which of the RT VM's vCPUs takes its virtio-net (or VMRPC) interrupt:
    ``housekeeping``, where a 4.1 guest sends it by default, or ``rt``, the server's, as
    ``/proc/irq/N/smp_affinity`` in the guest would set it (GUEST_IRQ_VCPUS)."""
    if rt_nic_cpu is not None:
        method = replace(method, rt_nic_cpu=rt_nic_cpu)
    if heavy_nic_cpus is not None:
        method = replace(method, heavy_nic_cpus=tuple(heavy_nic_cpus))
    costs = costs or load_profile()
    rr = rr or rr_config(costs)
    gen = generation or method.generation
    sim = Simulator(seed=seed)
    k = Kernel(
        sim,
        ncpus=ncpus,
        generation=gen,
        costs=costs,
        tracer=tracer,
        hz=hz,
        nohz_full=set(range(1, ncpus)) if nohz_full is None else set(nohz_full),
        net=NetTunables(rt_poll_list=method.rt_poll_list, rtnet_prio=method.rtnet_prio),
    )
    llc = Llc(costs.llc_bytes, costs.llc_line, costs.llc_miss)
    rt = _build_rt(
        k, llc, method, rr, request_times, halt_poll_ns, event_idx, rt_nic_rx_usecs, guest_irq_vcpu
    )
    heavies = [
        _build_heavy(k, llc, method, i, halt_poll_ns, event_idx, heavy_nic_rx_usecs)
        for i in range(heavy)
    ]
    idle = None
    if idle_keep is not None and idle_keep < 1:
        raise ValueError(f"idle_keep must be at least 1, got {idle_keep}")
    if idle_keep is not None and idle_keep > 1:
        if request_times is not None:
            raise ValueError("idle compression needs the client's random gaps, not request_times")
        cpus = k.cpus

        def probe() -> tuple[int, tuple[int, ...]]:
            return sum(h.consumed_bytes for h in heavies), tuple(c.busy_now_ns() for c in cpus)

        floor, ref = floor_and_reference(rr.interarrival_min_ns)
        cfs = CfsStandIn(cpus, k.tasks)
        idle = IdleCompression(
            sim, llc, probe, idle_keep, floor_ns=floor, reference_ns=ref, cfs=cfs
        )
        rt["client"].gap_map = idle.gap
    rt["client"].start()
    return Testbed(
        sim,
        k,
        llc,
        method,
        rt["vm"],
        rt["rxq"],
        rt["client"],
        heavies,
        rt.get("vhost"),
        rt.get("virtio"),
        rt.get("sock"),
        idle,
    )


# -- the RT path alone (the virtualization model's tests) ----------------------------------
@dataclass(frozen=True)
class RtPathSpec:
    """The RT VM's wiring without heavy traffic (tests, examples)."""

    io: str = "virtio"
    rt_wake: str = "idle"
    generation: str = "4.1-rt"
    rt_poll_list: bool = False
    halt_poll_ns: int | None = None
    event_idx: bool = True
    guest_irq_vcpu: str = "housekeeping"


def build_rt_path(
    spec: RtPathSpec,
    seed: int = 1,
    costs: CostProfile | None = None,
    rr: RrConfig | None = None,
    request_times: list[int] | None = None,
    tracer: Any = None,
) -> Testbed:
    method = MethodSpec(
        name=f"rt-path-{spec.io}",
        summary="RT path only",
        generation=spec.generation,
        rt_poll_list=spec.rt_poll_list,
        rt_io=spec.io,
        rt_wake=spec.rt_wake,
        rt_irq=fifo(50),
    )
    return build_testbed(
        method,
        seed,
        costs,
        rr,
        heavy=0,
        request_times=request_times,
        tracer=tracer,
        halt_poll_ns=spec.halt_poll_ns,
        event_idx=spec.event_idx,
        guest_irq_vcpu=spec.guest_irq_vcpu,
    )


__all__ = [
    "GUEST_IRQ_VCPUS",
    "HEAVY_PATH_STAGES",
    "RT_STAGE_CODE",
    "SEC",
    "Heavy",
    "RtPathSpec",
    "Testbed",
    "build_rt_path",
    "build_testbed",
]
