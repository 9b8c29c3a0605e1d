"""NICs (an Intel X520 / ixgbe-like device): RX queues with their interrupt and NAPI, TX on a
wire with a line rate, packets, and a window-limited TCP-like sender for heavy traffic.

RT traffic is one ``Packet`` per frame. Heavy traffic travels as batches (``npkts`` > 1): on the
wire a batch is a burst of back-to-back MTU frames whose frames become visible to the driver one
frame-time apart; in the host it is split and merged as the driver polls and GRO builds
segments, so CPU time, NAPI weights and budgets still count frames (DESIGN.md section 4).
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


def default_segment_cost(kernel: Kernel, pkt: Packet) -> int:
    """Protocol work per GRO segment: one IP + TCP/UDP traversal up to the socket or bridge."""
    return kernel.costs.rx_protocol_per_packet


# ixgbe's EITR values in the driver's units of 0.25 us (ixgbe.h, Linux 4.1):
# IXGBE_100K_ITR 40 (10 us), IXGBE_20K_ITR 200 (50 us), IXGBE_8K_ITR 500 (125 us).
ITR_100K, ITR_20K, ITR_8K = 40, 200, 500
LOWEST_LATENCY, LOW_LATENCY, BULK_LATENCY = 0, 1, 2
_ITR_OF_LATENCY = {LOWEST_LATENCY: ITR_100K, LOW_LATENCY: ITR_20K, BULK_LATENCY: ITR_8K}


class Itr:
    """Interrupt moderation of one queue vector (EITR): the least time between two interrupts.

    Adaptive by default, as ixgbe with ``rx-usecs 1`` (its default): on every NAPI completion
    ``ixgbe_set_itr()`` classifies the bytes per microsecond since the last update into
    lowest (100K ints/s), low (20K) or bulk (8K) latency, with ixgbe_update_itr()'s
    thresholds (10 and 20 B/us) and hysteresis, and moves towards that rate by exponential
    smoothing (new = 10 new old / (9 new + old)). A bulk TCP stream settles at about 125 us
    between interrupts (~100 MTU frames per interrupt at 10 Gb/s); a sparse RT flow at 10 us,
    which never delays it since its requests are milliseconds apart. ``fixed_us`` models
    ``ethtool -C rx-usecs N`` as ixgbe_set_coalesce() takes it: 1 (and None) is the adaptive
    ITR, 0 no moderation, a larger N a fixed N us. The 82599 keeps the interval in 2 us steps
    (ixgbe_write_eitr masks it with IXGBE_MAX_EITR: rx-usecs 125, or the bulk rate's 500
    units, give 124 us); the model takes N and the rates' intervals as they are. Linux 4.1's
    values; a later ixgbe raised the bulk floor to 12K ints/s (commit 8ac34f10a5ea4).
    """

    def __init__(self, fixed_us: int | None = None) -> None:
        if fixed_us == 1:  # rx-usecs 1 selects the adaptive ITR (ixgbe's default)
            fixed_us = None
        self.adaptive = fixed_us is None
        self.itr = ITR_20K if fixed_us is None else fixed_us * 4  # q_vector->itr at alloc
        self.latency = LOWEST_LATENCY  # ring_container->itr (kzalloc'd)
        self.total_bytes = 0
        self.total_packets = 0

    @property
    def interval_ns(self) -> int:
        return self.itr * 250

    def update(self) -> None:
        """ixgbe_set_itr() after napi_complete (RX container only: TX is not modelled)."""
        packets, self.total_packets = self.total_packets, 0
        nbytes, self.total_bytes = self.total_bytes, 0
        if not self.adaptive or packets == 0:
            return
        timepassed_us = self.itr >> 2
        if timepassed_us == 0:
            return
        per_us = nbytes // timepassed_us
        lat = self.latency
        if lat == LOWEST_LATENCY and per_us > 10:
            lat = LOW_LATENCY
        elif lat == LOW_LATENCY:
            lat = BULK_LATENCY if per_us > 20 else LOWEST_LATENCY if per_us <= 10 else lat
        elif lat == BULK_LATENCY and per_us <= 20:
            lat = LOW_LATENCY
        self.latency = lat
        new = _ITR_OF_LATENCY[lat]
        if new != self.itr:
            self.itr = (10 * new * self.itr) // (9 * new + self.itr)


class RxQueue:
    """One RX ring with its MSI-X interrupt and NAPI instance (ixgbe_q_vector).

    Frames become visible to the driver as they arrive: a batch being received from the wire
    (``begin_arrival``) yields its frames one frame-time apart, so a poll that runs while a
    stream arrives keeps finding work, as ixgbe_clean_rx_irq() does when it reads descriptors
    one by one. The interrupt follows the queue vector's state: masked from the interrupt
    until napi_complete, then asserted for the next frame no sooner than the ITR allows.
    GRO (``gro_frames`` per segment: 43 MSS frames for TCP, 1 for UDP, which 4.1 does not
    merge) gathers frames; a segment pays the protocol work once and is delivered when full
    or at the end of the poll: 4.1's ixgbe_poll() ends in ixgbe_qv_unlock_napi(), which
    flushes GRO whatever the poll did (Generation.ixgbe_busy_poll_lock). On later kernels a
    segment survives a full-weight poll unless it started in an earlier jiffy
    (napi_gro_flush(n, HZ >= 1000) in napi_poll) and is flushed by napi_complete_done.
    """

    def __init__(
        self,
        kernel: Kernel,
        name: str,
        irq: int,
        cpu: int,
        deliver: Callable[[Packet, Cpu, Context], None],
        ring_size: int = 512,
        segment_cost: Callable[[Kernel, Packet], int] = default_segment_cost,
        irq_thread_policy: str = SCHED_FIFO,
        irq_thread_prio: int = 50,
        gro_frames: int = 1,
        itr_us: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.name = name
        self.deliver = deliver
        self.ring_size = ring_size
        self.segment_cost = segment_cost
        self.gro_frames = gro_frames
        self.itr = Itr(itr_us)
        self.ring: deque[Packet] = deque()
        self.ring_pkts = 0
        self.masked = False
        self.last_irq: int | None = None
        self.irq_ev: Any = None
        self.rx_packets = 0
        self.drops = 0
        # the batch now arriving from the wire: frames become visible one frame-time apart
        self.incoming: Packet | None = None
        self.in_start = 0
        self.in_frame_ns = 1
        self.in_total = 0
        self.in_taken = 0
        # the GRO segment being built, and when it started
        self.gro: Packet | None = None
        self.gro_since = 0
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

    # -- frames arriving ---------------------------------------------------------------------
    def begin_arrival(self, pkt: Packet, start: int, frame_ns: int) -> None:
        """A batch starts arriving at ``start``, one frame every ``frame_ns``; ``dma(pkt)``
        follows when its last frame is in (the frames not polled by then join the ring)."""
        self.incoming = pkt
        self.in_start = start
        self.in_frame_ns = max(1, frame_ns)
        self.in_total = pkt.npkts
        self.in_taken = 0
        self._arm_irq()

    def dma(self, pkt: Packet) -> None:
        """The frame(s) arrived from the wire and were written to host memory."""
        if pkt is self.incoming:
            self.incoming = None
            if pkt.npkts == 0:  # every frame was polled while it arrived
                return
        space = self.ring_size - self.ring_pkts
        if pkt.npkts > space:
            if space <= 0:
                self._drop(pkt)
                return
            kept = pkt.split(space)
            self._drop(pkt)  # the frames that found the ring full
            pkt = kept
        pkt.stamps.setdefault("nic_rx", self.kernel.sim.now)
        self.ring.append(pkt)
        self.ring_pkts += pkt.npkts
        if self.kernel.tracer is not None:
            self.kernel.tracer.flow(pkt, "nic_rx", self.irq.cpu.id, self.kernel.sim.now)
        self._arm_irq()

    def _drop(self, pkt: Packet) -> None:
        self.drops += pkt.npkts
        self.kernel.count_drop("rx_ring_full", pkt)

    def _arrived_untaken(self, now: int) -> int:
        if self.incoming is None:
            return 0
        arrived = min(self.in_total, (now - self.in_start) // self.in_frame_ns)
        return arrived - self.in_taken

    # -- the interrupt -----------------------------------------------------------------------
    def _arm_irq(self) -> None:
        """Assert the vector for pending frames, if unmasked, once the ITR interval allows."""
        if self.masked or self.irq_ev is not None:
            return
        now = self.kernel.sim.now
        if self.ring or self._arrived_untaken(now) > 0:
            when = now
        elif self.incoming is not None and self.in_taken < self.in_total:
            when = self.in_start + (self.in_taken + 1) * self.in_frame_ns
        else:
            return
        if self.last_irq is not None:
            when = max(when, self.last_irq + self.itr.interval_ns)
        if when <= now:
            self._assert_irq()
        else:
            self.irq_ev = self.kernel.sim.at(when, self._itr_expired)

    def _itr_expired(self, _: Any) -> None:
        self.irq_ev = None
        if not self.masked:
            self._assert_irq()

    def _assert_irq(self) -> None:
        self.masked = True  # EIAM: the vector masks itself; ixgbe_poll unmasks on completion
        self.last_irq = self.kernel.sim.now
        self.irq.fire()

    def _irq_handler(self, cpu: Cpu, ctx: Context) -> Code:
        """ixgbe_msix_clean_rings(): schedule the queue's NAPI."""
        yield self.kernel.costs.nic_irq_handler
        napi_schedule(cpu, self.napi, ctx)

    # -- NAPI --------------------------------------------------------------------------------
    def _take(self, limit: int, per_frame: int) -> Packet | None:
        """Up to ``limit`` frames: the ring first (older), then the arriving batch.

        From the arriving batch the driver takes every frame that has arrived by the time it
        reaches it: frame i of the pass is reached after i-1 frames of ``per_frame`` work, so
        when frames arrive slower than the driver cleans them the pass ends where it catches
        up with the wire (ixgbe_clean_rx_irq() stops at the first descriptor not yet done).
        One pass is one CPU request instead of one per frame-time: same times, fewer events.
        """
        ring = self.ring
        if ring:
            head = ring[0]
            take = min(head.npkts, limit)
            pkt = head.split(take) if take < head.npkts else ring.popleft()
            self.ring_pkts -= take
            return pkt
        now = self.kernel.sim.now
        if self._arrived_untaken(now) <= 0:
            return None
        take = self.in_total - self.in_taken
        gap = self.in_frame_ns - per_frame
        if gap > 0:  # frame i arrives at in_start + (in_taken + i) a, is reached at now + (i-1) p
            reach = (now - per_frame - self.in_start - self.in_taken * self.in_frame_ns) // gap
            take = min(take, reach)
        take = min(take, limit)
        self.in_taken += take
        return self.incoming.split(take)  # type: ignore[union-attr]

    def _flush(self, cpu: Cpu, ctx: Context) -> Code:
        """Hand the GRO segment up the stack: one protocol traversal, then deliver."""
        seg = self.gro
        self.gro = None
        if seg is None:
            return
        yield self.segment_cost(self.kernel, seg)
        seg.stamps.setdefault("napi_poll", self.kernel.sim.now)
        self.deliver(seg, cpu, ctx)

    def _poll(self, napi: NapiStruct, weight: int, ctx: Context) -> Code:
        """ixgbe_poll(): clean up to ``weight`` frames; on fewer, complete, set ITR, unmask.
        It returns ``weight`` when it did not complete; once it did, 0 on 4.1 (so completed
        polls spend no netdev_budget), its work on later kernels."""
        cpu = ctx.cpu
        k = self.kernel
        per_frame = k.costs.rx_driver_per_packet
        gro_frames = self.gro_frames
        done = 0
        while done < weight:
            gro = self.gro
            room = gro_frames - (gro.npkts if gro is not None else 0)
            part = self._take(min(weight - done, room), per_frame)
            if part is None:
                break
            yield part.npkts * per_frame
            done += part.npkts
            napi.work += part.npkts
            self.rx_packets += part.npkts
            self.itr.total_packets += part.npkts
            self.itr.total_bytes += part.nbytes
            if gro is not None and gro.flow is not part.flow:
                yield from self._flush(cpu, ctx)
                gro = None
            if gro is None:
                self.gro, self.gro_since = part, k.sim.now
            else:
                gro.npkts += part.npkts
                gro.nbytes += part.nbytes
            if self.gro.npkts >= gro_frames:  # type: ignore[union-attr]
                yield from self._flush(cpu, ctx)
        busy_poll_lock = k.gen.ixgbe_busy_poll_lock
        if done < weight:
            yield from self._flush(cpu, ctx)  # napi_complete flushes GRO
            if napi_complete_done(cpu, napi, ctx):
                self.masked = False
                self.itr.update()
                self._arm_irq()
            return 0 if busy_poll_lock else done
        if self.gro is not None and (
            busy_poll_lock or self.gro_since // k.jiffy_ns < k.sim.now // k.jiffy_ns
        ):
            yield from self._flush(cpu, ctx)  # ixgbe_qv_unlock_napi(), or an old segment
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

    It keeps at most min(``window_bytes``, cwnd) unacknowledged. The receiver's host calls
    ``ack(nbytes)`` when the ACK for data its application consumed leaves on the wire (the
    testbed sends it down the receiver's real TX path); it takes effect ``ack_delay_ns`` later
    (the wire and the remote sender's own receive path, not modelled). A frame dropped on the
    way (full RX ring, full tap queue) is a loss: its bytes leave the flight and cwnd halves
    (fast retransmit / recovery), then grows by about one batch per window acknowledged. Data
    leaves in bursts of ``batch_frames`` MSS-sized frames at line rate; ``rxq`` sees each
    frame as it arrives.
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
        ser = self.wire.serialise_ns(pkt.nbytes, pkt.npkts)
        end = self.wire.transmit(pkt, self._arrived)
        self.rxq.begin_arrival(pkt, end - ser, ser // pkt.npkts)

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
