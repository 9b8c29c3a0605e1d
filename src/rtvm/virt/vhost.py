"""vhost-net (drivers/vhost/net.c, vhost.c): one worker task per VM NIC running queued works.

The worker (``vhost-<pid>``) drains its work list in order; ``handle_rx`` copies packets from
the tap's queue into the guest's RX buffers (a packet fills as many of the guest's mergeable
buffers as its size needs, Virtqueue.rx_buffers) and ``handle_tx`` sends the guest's TX buffers
into the host stack. A handler run stops after VHOST_NET_WEIGHT (512 KiB) and requeues itself
at the tail (vhost_poll_queue), so other works on the same worker run in between; 5.1 added a
packet weight, VHOST_NET_PKT_WEIGHT (256 skbs, vhost_exceeds_weight). 4.1's handle_rx updates
the used ring and signals after every packet (vhost_add_used_and_signal_n), through
vhost_notify's event-index check and the irqfd; later kernels batch the used updates and signal
every VHOST_NET_BATCH (64) used buffers and at the end of a run (vhost_net_signal_used). Which
one runs follows the kernel generation (Generation.version).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtvm.kernel.task import BLOCK, COND_RESCHED, Code, Task
from rtvm.virt.virtio import Virtqueue

if TYPE_CHECKING:
    from rtvm.kernel.host import Kernel
    from rtvm.kernel.llc import Llc
    from rtvm.kernel.nic import Packet

VHOST_NET_WEIGHT = 0x80000
VHOST_NET_PKT_WEIGHT = 256
PKT_WEIGHT_SINCE = (5, 1)  # vhost_exceeds_weight (CVE-2019-3900)
VHOST_NET_BATCH = 64
BATCHED_SINCE = (4, 20)  # vhost_net: batched used-ring updates in handle_rx (2018)
TUN_READQ_SIZE = 500  # tun's default tx_queue_len: skbs queued on the tap socket
RUNS_KEPT = 256

Work = Callable[[Task], Code]


class VhostWorker:
    """The vhost worker thread of one device: a FIFO list of works, run one at a time."""

    def __init__(
        self,
        kernel: Kernel,
        name: str,
        policy: str,
        prio: int,
        allowed: set[int] | frozenset[int] | None = None,
    ) -> None:
        self.kernel = kernel
        self.works: deque[Work] = deque()
        self.runs: list[str] = []  # names of the first RUNS_KEPT works run (tests, traces)
        self.nr_runs = 0
        self.task = kernel.create_task(name, self._worker, policy, prio, allowed)

    def queue(self, work: Work, waker: Any = None) -> None:
        """vhost_work_queue(): append ``work`` unless queued, and wake the worker."""
        if work not in self.works:
            self.works.append(work)
        self.kernel.wake_up(self.task, waker=waker)

    def _worker(self, t: Task) -> Code:
        while True:
            while not self.works:
                yield BLOCK
            work = self.works.popleft()
            self.nr_runs += 1
            if len(self.runs) < RUNS_KEPT:  # bounded: memory stays flat in simulated time
                self.runs.append(getattr(work, "__name__", "work"))
            yield from work(t)
            yield COND_RESCHED  # vhost_worker(): if (need_resched()) schedule();


class VhostNet:
    """One virtio-net device's host side: tap queue, RX and TX virtqueues, handlers."""

    def __init__(
        self,
        kernel: Kernel,
        worker: VhostWorker,
        rxvq: Virtqueue,
        txvq: Virtqueue,
        signal_guest: Callable[[Virtqueue], None],
        transmit: Callable[[Packet, Task], Code],
        llc: Llc | None = None,
        name: str = "vnet",
    ) -> None:
        self.kernel = kernel
        self.worker = worker
        self.rxvq = rxvq
        self.txvq = txvq
        self.signal_guest = signal_guest
        self.transmit = transmit
        self.llc = llc
        self.name = name
        #: the cache footprint this device's handlers touch per run (LLC owner name), if any
        self.ws_owner: str | None = None
        #: called for each frame handed to the guest (the testbed's probes)
        self.on_rx_used: Callable[[Packet], None] | None = None
        self.tap: deque[Packet] = deque()
        self.rx_frames = 0
        self.tx_frames = 0
        self.rx_copies = 0  # host kernel -> guest buffer
        self.tx_copies = 0  # guest buffer -> host kernel
        self.copied_bytes = 0
        self.requeues = 0
        self.waits_for_buffers = 0
        # what the kernel generation's vhost does (fixed for the run): signal after this many
        # used buffers (0: after every packet, 4.1), and stop a run after this many skbs
        version = kernel.gen.version
        self.signal_batch = VHOST_NET_BATCH if version >= BATCHED_SINCE else 0
        self.pkt_weight = VHOST_NET_PKT_WEIGHT if version >= PKT_WEIGHT_SINCE else None

    # -- from the host stack (tun_net_xmit): runs in the softirq's context ----------------
    def tap_xmit(self, pkt: Packet, waker: Any = None) -> None:
        if len(self.tap) >= TUN_READQ_SIZE:  # tun_net_xmit: a full socket queue drops
            self.kernel.count_drop("tap_full", pkt)
            return
        self.tap.append(pkt)
        self.worker.queue(self.handle_rx, waker)  # vhost_poll_wakeup on the tap socket

    def kick(self, waker: Any = None) -> None:
        """The guest kicked the TX queue (ioeventfd): vhost_poll_wakeup -> handle_tx."""
        self.worker.queue(self.handle_tx, waker)

    def rx_kick(self, waker: Any = None) -> None:
        """The guest kicked the RX queue after a refill (its own ioeventfd): handle_rx_kick ->
        handle_rx, which resumes copying what waits in the tap."""
        self.worker.queue(self.handle_rx, waker)

    # -- handlers ----------------------------------------------------------------------------
    def handle_rx(self, t: Task) -> Code:
        vq = self.rxvq
        c = self.kernel.costs
        skbs = nbytes = since_signal = 0
        batch, pkt_weight = self.signal_batch, self.pkt_weight
        stall = self._touch()
        if stall:
            yield stall
        vq.disable_notify()
        while self.tap:
            pkt = self.tap[0]
            nbufs = vq.rx_buffers(pkt.nbytes)
            if not vq.take_avail_buffers(nbufs):
                # Out of guest buffers: ask for a kick on the next refill, then recheck
                # (vhost_enable_notify closes the race with a refill that just happened).
                if vq.enable_notify() or vq.avail_pending < nbufs:
                    self.waits_for_buffers += 1
                    break
                vq.disable_notify()
                continue
            self.tap.popleft()
            self.rx_copies += 1
            # per skb (a GRO'd skb fills several mergeable buffers in one run) + the copy
            yield self._copy_cost(pkt) + c.vhost_rx_per_packet
            pkt.stamps.setdefault("vhost_rx", self.kernel.sim.now)
            vq.push_used(pkt, nbufs)
            if self.on_rx_used is not None:
                self.on_rx_used(pkt)
            skbs += 1
            nbytes += pkt.nbytes
            since_signal += nbufs
            self.rx_frames += pkt.npkts
            if since_signal > batch:
                since_signal = 0
                self._signal(vq)
            if nbytes >= VHOST_NET_WEIGHT or (pkt_weight is not None and skbs >= pkt_weight):
                self.requeues += 1
                self.worker.queue(self.handle_rx, t.cpu)  # over its weight: requeue
                break
        if since_signal:
            self._signal(vq)

    def handle_tx(self, t: Task) -> Code:
        vq = self.txvq
        c = self.kernel.costs
        stall = self._touch()
        if stall:
            yield stall
        vq.disable_notify()
        skbs = nbytes = 0
        pkt_weight = self.pkt_weight
        while True:
            got = vq.pop_avail()
            if got is None:
                if vq.enable_notify():
                    break
                vq.disable_notify()
                continue
            nbufs, pkt = got
            self.tx_copies += 1
            yield self._copy_cost(pkt) + c.vhost_tx_per_packet
            pkt.stamps.setdefault("vhost_tx", self.kernel.sim.now)
            yield from self.transmit(pkt, t)
            vq.push_used(None, nbufs)
            skbs += 1
            nbytes += pkt.nbytes
            self.tx_frames += pkt.npkts
            if nbytes >= VHOST_NET_WEIGHT or (pkt_weight is not None and skbs >= pkt_weight):
                self.requeues += 1
                self.worker.queue(self.handle_tx, t.cpu)
                break
        # TX completions: virtio-net reclaims them lazily (no interrupt modelled)

    def _touch(self) -> int:
        if self.ws_owner is None or self.llc is None:
            return 0
        return self.llc.touch(self.ws_owner)

    def _signal(self, vq: Virtqueue) -> None:
        if vq.signal_needed():
            self.signal_guest(vq)  # eventfd -> irqfd -> interrupt injection

    def _copy_cost(self, pkt: Packet) -> int:
        """One copy between host kernel and guest memory, through the LLC."""
        self.copied_bytes += pkt.nbytes
        if self.llc is not None:
            self.llc.stream(pkt.nbytes)
        return copy_ns(self.kernel, pkt.nbytes)


def copy_ns(kernel: Kernel, nbytes: int) -> int:
    """A copy of cold data (no DDIO: DMA'd payloads are in DRAM)."""
    return nbytes * kernel.costs.copy_per_byte_cold_milli // 1000
