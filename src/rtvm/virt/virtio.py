"""A split virtqueue (virtio 1.0) seen from both sides, with notification suppression.

Indices are free-running u16 counters in units of buffers. The driver (guest) publishes
buffers on the avail ring and consumes the used ring; the device (vhost) does the opposite.
With VIRTIO_RING_F_EVENT_IDX each side says when it wants to be told: the driver's
``used_event`` ("interrupt me once used passes this") and the device's ``avail_event`` ("kick me
once avail passes this"); a notification is sent iff vring_need_event(event, new, old) holds
for the indices published since the last one. Without EVENT_IDX the flags
VRING_AVAIL_F_NO_INTERRUPT / VRING_USED_F_NO_NOTIFY switch notifications off wholesale.
(include/uapi/linux/virtio_ring.h; drivers/vhost/vhost.c vhost_notify; virtio_ring.c)
"""

from __future__ import annotations

from collections import deque
from typing import Any

U16 = 0xFFFF


def vring_need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """(u16)(new_idx - event_idx - 1) < (u16)(new_idx - old)"""
    return ((new_idx - event_idx - 1) & U16) < ((new_idx - old) & U16)


#: virtio_net_hdr_mrg_rxbuf, at the head of a packet's first mergeable RX buffer
MRG_RXBUF_HDR = 12
ETH_HLEN = 14
GOOD_PACKET_LEN = 1518  # ETH_HLEN + VLAN_HLEN + ETH_DATA_LEN: virtio-net's smallest RX buffer
PAGE_SIZE = 4096
MERGEABLE_BUFFER_ALIGN = 256


def mergeable_buf_len(avg_pkt_len: int) -> int:
    """virtio-net's get_mergeable_buf_len(): header plus the average packet length clamped to
    [GOOD_PACKET_LEN, PAGE_SIZE - header], aligned to MERGEABLE_BUFFER_ALIGN."""
    length = MRG_RXBUF_HDR + min(max(avg_pkt_len, GOOD_PACKET_LEN), PAGE_SIZE - MRG_RXBUF_HDR)
    return -(-length // MERGEABLE_BUFFER_ALIGN) * MERGEABLE_BUFFER_ALIGN


class Virtqueue:
    def __init__(self, name: str, num: int = 256, event_idx: bool = True) -> None:
        self.name = name
        self.num = num
        self.event_idx = event_idx
        #: the size of the RX buffers the driver posts (mergeable buffers); the guest driver
        #: sets it at each refill (mergeable_buf_len of its average packet length); it starts
        #: at the small-packet size. One size for the whole ring: buffers posted before a
        #: refill changed it count at the new size (4.1 keeps each buffer's own; in the
        #: testbed that touches only the first heavy packets, inside the warm-up)
        self.buf_len = mergeable_buf_len(0)
        # published by the driver
        self.avail_idx = 0
        self.used_event = 0
        self.no_interrupt = False  # VRING_AVAIL_F_NO_INTERRUPT
        self.last_used_idx = 0  # driver's consumer index (private)
        # published by the device
        self.used_idx = 0
        self.avail_event = 0
        self.no_notify = False  # VRING_USED_F_NO_NOTIFY
        self.last_avail_idx = 0  # device's consumer index (private)
        # notification bookkeeping: the index at the last kick / interrupt decision
        self._kick_old = 0
        self._signal_old = 0
        self._avail: deque[tuple[int, Any]] = deque()  # (buffers, item)
        self._used: deque[tuple[int, Any]] = deque()
        self.kicks = 0
        self.kicks_suppressed = 0
        self.interrupts = 0
        self.interrupts_suppressed = 0

    # -- occupancy ---------------------------------------------------------------------------
    @property
    def avail_pending(self) -> int:
        """Buffers published by the driver that the device has not taken."""
        return (self.avail_idx - self.last_avail_idx) & U16

    @property
    def used_pending(self) -> int:
        """Buffers returned by the device that the driver has not consumed."""
        return (self.used_idx - self.last_used_idx) & U16

    @property
    def num_free(self) -> int:
        """Descriptors the driver has free (not published, or returned and consumed)."""
        return self.num - self.in_flight

    def rx_buffers(self, nbytes: int) -> int:
        """How many of the posted RX buffers a packet of ``nbytes`` (IP) fills, with its
        Ethernet and virtio-net headers (vhost's get_rx_bufs, mergeable RX buffers)."""
        return max(1, -(-(MRG_RXBUF_HDR + ETH_HLEN + nbytes) // self.buf_len))

    @property
    def in_flight(self) -> int:
        """Buffers owned by the driver's published-but-not-consumed window."""
        return (self.avail_idx - self.last_used_idx) & U16

    # -- driver (guest) side -------------------------------------------------------------
    def add_buf(self, item: Any = None, nbufs: int = 1) -> bool:
        """virtqueue_add(): publish ``nbufs`` buffers; False if the ring is full."""
        if self.in_flight + nbufs > self.num:
            return False
        self._avail.append((nbufs, item))
        self.avail_idx = (self.avail_idx + nbufs) & U16
        return True

    def kick_prepare(self) -> bool:
        """virtqueue_kick_prepare(): must the driver notify the device now?"""
        new, old = self.avail_idx, self._kick_old
        self._kick_old = new
        if new == old:
            return False
        need = (
            vring_need_event(self.avail_event, new, old) if self.event_idx else not self.no_notify
        )
        if need:
            self.kicks += 1
        else:
            self.kicks_suppressed += 1
        return need

    def get_used(self) -> tuple[int, Any] | None:
        """virtqueue_get_buf(): the next used (nbufs, item), or None."""
        if not self._used:
            return None
        nbufs, item = self._used.popleft()
        self.last_used_idx = (self.last_used_idx + nbufs) & U16
        return nbufs, item

    def disable_cb(self) -> None:
        """virtqueue_disable_cb(): no interrupts while the driver polls (NAPI)."""
        self.no_interrupt = True  # with EVENT_IDX, used_event simply goes stale

    def enable_cb(self) -> bool:
        """virtqueue_enable_cb(): interrupt me on the next used buffer. False if some are
        already pending (the caller must poll again: the race close of virtnet_poll)."""
        self.no_interrupt = False
        self.used_event = self.last_used_idx
        return self.used_pending == 0

    def enable_cb_delayed(self) -> bool:
        """virtqueue_enable_cb_delayed(): interrupt after about 3/4 of the outstanding ones."""
        self.no_interrupt = False
        bufs = (self.avail_idx - self.last_used_idx) * 3 // 4
        self.used_event = (self.last_used_idx + bufs) & U16
        return ((self.used_idx - self.last_used_idx) & U16) <= bufs

    # -- device (vhost) side ---------------------------------------------------------------
    def pop_avail(self) -> tuple[int, Any] | None:
        """vhost_get_vq_desc(): the next available (nbufs, item), or None."""
        if not self._avail:
            return None
        nbufs, item = self._avail.popleft()
        self.last_avail_idx = (self.last_avail_idx + nbufs) & U16
        return nbufs, item

    def take_avail_buffers(self, nbufs: int) -> bool:
        """Consume ``nbufs`` empty buffers (RX: the guest posts empty buffers in bulk)."""
        if self.avail_pending < nbufs:
            return False
        need = nbufs
        while need:
            head_n, item = self._avail[0]
            if head_n <= need:
                self._avail.popleft()
                need -= head_n
            else:
                self._avail[0] = (head_n - need, item)
                need = 0
        self.last_avail_idx = (self.last_avail_idx + nbufs) & U16
        return True

    def push_used(self, item: Any, nbufs: int = 1) -> None:
        """vhost_add_used(): return ``nbufs`` buffers (carrying ``item``) to the driver."""
        self._used.append((nbufs, item))
        self.used_idx = (self.used_idx + nbufs) & U16

    def signal_needed(self) -> bool:
        """vhost_notify(): must the device interrupt the driver for what it used since the
        last decision?"""
        new, old = self.used_idx, self._signal_old
        self._signal_old = new
        if new == old:
            return False
        need = (vring_need_event(self.used_event, new, old) if self.event_idx
                else not self.no_interrupt)  # fmt: skip
        if need:
            self.interrupts += 1
        else:
            self.interrupts_suppressed += 1
        return need

    def disable_notify(self) -> None:
        """vhost_disable_notify(): no kicks while the handler runs."""
        self.no_notify = True

    def enable_notify(self) -> bool:
        """vhost_enable_notify(): kick me on the next buffer. False if some are already there
        (the caller must process again)."""
        self.no_notify = False
        self.avail_event = self.avail_idx  # kick me when the driver publishes past this
        return self.avail_pending == 0
