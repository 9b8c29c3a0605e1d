"""NICs (an Intel X520 / ixgbe-like device): RX queues with their interrupt and NAPI, TX on a
wire with a line rate, packets, and a window-limited TCP-like sender for heavy traffic.

RT traffic is one ``Packet`` per frame. Heavy traffic may travel as batches (``npkts`` > 1,
e.g. a GRO segment of 43 MSS frames): a batch is split when a poll's weight ends inside it, so
CPU time, NAPI weights and budgets still count frames (DESIGN.md section 4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any

from rtvm.kernel.irq import IrqLine
from rtvm.kernel.napi import NapiStruct, napi_complete_done, napi_schedule
from rtvm.kernel.task import SCHED_FIFO, Code, Context

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

_packet_ids = count(1)

#: Ethernet framing on the wire per frame: preamble 8 + header 14 + FCS 4 + IFG 12
WIRE_OVERHEAD_BYTES = 38


class Packet:
    """One frame, or a batch of ``npkts`` frames of one flow (heavy traffic)."""

    __slots__ = ("flow", "id", "kind", "nbytes", "npkts", "payload", "payload_request", "stamps")

    def __init__(
        self,
        flow: Any,
        nbytes: int,
        kind: str = "rt",
        npkts: int = 1,
        payload: Any = None,
        pkt_id: int | None = None,
    ) -> None:
        self.id = pkt_id if pkt_id is not None else next(_packet_ids)
        self.flow = flow
        self.nbytes = nbytes  # IP bytes of all frames in the batch
        self.npkts = npkts
        self.kind = kind
        self.payload = payload
        self.stamps: dict[str, int] = {}
        self.payload_request: Packet | None = None  # a response's request (probes)

    def split(self, n: int) -> Packet:
        """Take the first ``n`` frames off this batch as a new Packet."""
        part_bytes = self.nbytes * n // self.npkts
        part = Packet(self.flow, part_bytes, self.kind, n, self.payload)
        self.npkts -= n
        self.nbytes -= part_bytes
        return part

    def __repr__(self) -> str:
        return f"<Packet {self.id} {self.kind} {self.npkts}x {self.nbytes}B>"


def default_rx_cost(kernel: Kernel, pkt: Packet) -> int:
    """Driver work per frame, protocol work per GRO segment (one traversal per segment)."""
    c = kernel.costs
    segments = -(-pkt.npkts // c.gro_segment) if pkt.npkts > 1 else 1
    return pkt.npkts * c.rx_driver_per_packet + segments * c.rx_protocol_per_packet


class RxQueue:
    """One RX ring with its MSI-X interrupt and NAPI instance (ixgbe_q_vector)."""

    def __init__(
        self,
        kernel: Kernel,
        name: str,
        irq: int,
        cpu: int,
        deliver: Callable[[Packet, Cpu, Context], None],
        ring_size: int = 512,
        rx_cost: Callable[[Kernel, Packet], int] = default_rx_cost,
        irq_thread_policy: str = SCHED_FIFO,
        irq_thread_prio: int = 50,
    ) -> None:
        self.kernel = kernel
        self.name = name
        self.deliver = deliver
        self.ring_size = ring_size
        self.rx_cost = rx_cost
        self.ring: deque[Packet] = deque()
        self.ring_pkts = 0
        self.masked = False
        self.rx_packets = 0
        self.drops = 0
        self.napi = NapiStruct(name, self._poll)
        self.irq = IrqLine(
            kernel,
            irq,
            name,
            self._irq_handler,
            cpu,
            thread_policy=irq_thread_policy,
            thread_prio=irq_thread_prio,
        )

    def dma(self, pkt: Packet) -> None:
        """The frame(s) arrived from the wire and were written to host memory."""
        if self.ring_pkts + pkt.npkts > self.ring_size:
            self.drops += pkt.npkts
            self.kernel.count_drop("rx_ring_full", pkt)
            return
        pkt.stamps.setdefault("nic_rx", self.kernel.sim.now)
        self.ring.append(pkt)
        self.ring_pkts += pkt.npkts
        if self.kernel.tracer is not None:
            self.kernel.tracer.flow(pkt, "nic_rx", self.irq.cpu.id, self.kernel.sim.now)
        if not self.masked:
            self.masked = True  # the handler masks the queue vector; napi_complete unmasks
            self.irq.fire()

    def _irq_handler(self, cpu: Cpu, ctx: Context) -> Code:
        """ixgbe_msix_clean_rings(): schedule the queue's NAPI."""
        yield self.kernel.costs.nic_irq_handler
        napi_schedule(cpu, self.napi, ctx)

    def _poll(self, napi: NapiStruct, weight: int, ctx: Context) -> Code:
        """ixgbe_poll(): clean up to ``weight`` frames, complete and unmask if fewer."""
        cpu = ctx.cpu
        done = 0
        ring = self.ring
        while done < weight and ring:
            head = ring[0]
            take = min(head.npkts, weight - done)
            pkt = head.split(take) if take < head.npkts else ring.popleft()
            self.ring_pkts -= take
            yield self.rx_cost(self.kernel, pkt)
            done += take
            self.rx_packets += take
            pkt.stamps.setdefault("napi_poll", self.kernel.sim.now)
            self.deliver(pkt, cpu, ctx)
        if done < weight and napi_complete_done(cpu, napi, ctx):
            self.masked = False
            if ring:  # frames arrived after the last check: the unmasked vector fires again
                self.masked = True
                self.irq.fire()
        return done


class Wire:
    """One direction of a link: serialises frames at the line rate (first come first served)."""

    def __init__(self, kernel: Kernel, rate_bps: int, mtu: int = 1500) -> None:
        self.kernel = kernel
        self.rate_bps = rate_bps
        self.mtu = mtu
        self.free_at = 0
        self.bytes = 0
        self.frames = 0

    def serialise_ns(self, nbytes: int, nframes: int = 1) -> int:
        return (nbytes + nframes * WIRE_OVERHEAD_BYTES) * 8 * 1_000_000_000 // self.rate_bps

    def transmit(self, pkt: Packet, on_done: Callable[[Packet], Any]) -> int:
        """Queue ``pkt``; ``on_done(pkt)`` when its last bit is on the wire. Returns that time."""
        now = self.kernel.sim.now
        start = max(now, self.free_at)
        end = start + self.serialise_ns(pkt.nbytes, pkt.npkts)
        self.free_at = end
        self.bytes += pkt.nbytes
        self.frames += pkt.npkts
        self.kernel.sim.at(end, on_done, pkt)
        return end


class TcpSender:
    """A remote bulk sender (iperf client) at line rate, limited by a window and by AIMD.

    It keeps at most min(``window_bytes``, cwnd) unacknowledged. The receiver calls
    ``ack(nbytes)`` when its application has consumed data (the ACK arrives ``ack_delay_ns``
    later); a frame dropped on the way (full RX ring, full tap queue) is a loss: its bytes leave
    the flight and cwnd halves (fast retransmit / recovery), then grows by about one batch per
    window acknowledged. Data leaves in batches of ``batch_frames`` MSS-sized frames, which
    reach ``rxq`` when their last frame has arrived.
    """

    def __init__(
        self,
        kernel: Kernel,
        wire: Wire,
        rxq: RxQueue,
        name: str = "iperf",
        window_bytes: int = 4 * 1024 * 1024,
        mss: int = 1448,
        batch_frames: int = 43,
        ack_delay_ns: int = 10_000,
    ) -> None:
        self.kernel = kernel
        self.wire = wire
        self.rxq = rxq
        self.name = name
        self.window = window_bytes
        self.mss = mss
        self.batch_frames = batch_frames
        self.batch_bytes = batch_frames * (mss + 52)  # IP + TCP headers with timestamps
        self.cwnd = window_bytes
        self.ack_delay_ns = ack_delay_ns
        self.inflight = 0
        self.sent_bytes = 0
        self.acked_bytes = 0
        self.lost_bytes = 0
        self.losses = 0
        self._sending = False

    def start(self) -> None:
        self._pump()

    def _pump(self) -> None:
        batch = self.batch_bytes
        limit = min(self.window, self.cwnd)
        if self._sending or self.inflight + batch > limit:
            return
        pkt = Packet(self, batch, "heavy", self.batch_frames)
        self.inflight += batch
        self.sent_bytes += batch
        self._sending = True
        self.wire.transmit(pkt, self._arrived)

    def _arrived(self, pkt: Packet) -> None:
        self._sending = False
        self.rxq.dma(pkt)
        self._pump()

    def payload_bytes(self, nbytes: int) -> int:
        """TCP payload in ``nbytes`` of IP packets (what iperf counts)."""
        return nbytes * self.mss // (self.mss + 52)

    def ack(self, nbytes: int) -> None:
        self.kernel.sim.after(self.ack_delay_ns, self._acked, nbytes)

    def _acked(self, nbytes: int) -> None:
        self.inflight -= nbytes
        self.acked_bytes += nbytes
        if self.cwnd < self.window:
            self.cwnd = min(self.window, self.cwnd + self.batch_bytes * nbytes // self.cwnd + 1)
        self._pump()

    def on_loss(self, nbytes: int) -> None:
        """Frames of this flow were dropped in the host."""
        self.inflight -= nbytes
        self.lost_bytes += nbytes
        self.losses += 1
        self.cwnd = max(2 * self.batch_bytes, self.cwnd // 2)
        self._pump()
