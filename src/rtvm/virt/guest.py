"""A small guest kernel inside each VM: guest threads and their scheduler, the virtio-net
driver with its RX NAPI (weight 64), UDP sockets with the copy to the user buffer, and the TX
path (sendto, virtqueue_add, kick).

Guest threads are generators like host kernel code: they yield an ``int`` (CPU time, on the
vCPU) or ``GUEST_BLOCK`` (sleep until ``GuestKernel.wake``). Each is pinned to one vCPU; the
highest priority runnable one runs (FIFO priorities 1..99 above normal ones, FIFO order).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtvm.kernel.napi import NAPI_POLL_WEIGHT
from rtvm.kernel.task import Code
from rtvm.virt.vhost import copy_ns
from rtvm.virt.virtio import Virtqueue, mergeable_buf_len

if TYPE_CHECKING:
    from rtvm.kernel.nic import Packet
    from rtvm.virt.vcpu import Vcpu
    from rtvm.virt.vm import Vm

GUEST_BLOCK = object()


class GuestThread:
    __slots__ = (
        "blocked",
        "code",
        "done",
        "leftover",
        "name",
        "prio",
        "resume",
        "vcpu",
        "wake_pending",
    )

    def __init__(self, name: str, vcpu: Vcpu, prio: int = 0) -> None:
        self.name = name
        self.vcpu = vcpu
        self.prio = prio
        self.code: Any = None
        self.blocked = False
        self.done = False
        self.leftover = 0  # ns of a chunk cut short by a guest interrupt
        self.resume: Any = None  # value sent into the code when it next runs
        #: woken while still running (between "I wait" and GUEST_BLOCK): the next GUEST_BLOCK
        #: returns at once, as set_current_state() before the check does in a real kernel
        self.wake_pending = False

    def __repr__(self) -> str:
        return f"<GuestThread {self.name} prio={self.prio} blocked={self.blocked}>"


class GuestSocket:
    """A UDP socket's receive queue in the guest kernel (virtio path)."""

    def __init__(self, guest: GuestKernel, name: str) -> None:
        self.guest = guest
        self.name = name
        self.queue: deque[Packet] = deque()
        self.waiter: GuestThread | None = None

    def deliver(self, pkt: Packet, vcpu: Vcpu | None = None) -> GuestThread | None:
        """Queue ``pkt`` (softirq on ``vcpu``) and wake the reader. A reader asleep on another
        vCPU is returned instead: waking it takes a reschedule IPI (GuestKernel.wake_remote)."""
        self.queue.append(pkt)
        return None if self.waiter is None else self.guest.try_to_wake_up(self.waiter, vcpu)

    def recvfrom(self, gt: GuestThread) -> Code:
        """recvfrom(): sleep until a datagram is queued, then copy it to the user buffer."""
        k = self.guest.vm.kernel
        yield k.costs.syscall
        while not self.queue:
            self.waiter = gt
            yield GUEST_BLOCK
        self.waiter = None
        pkt = self.queue.popleft()
        pkt.stamps.setdefault("guest_recv", k.sim.now)
        yield self.guest.copy_to_user(pkt.nbytes)
        return pkt


class GuestKernel:
    def __init__(self, vm: Vm, preempt_rt: bool = False) -> None:
        self.vm = vm
        self.preempt_rt = preempt_rt
        self.threads: list[GuestThread] = []
        self.napi_pending: dict[int, deque[Callable[[Vcpu], Code]]] = {}
        #: extra idle-loop work (socket outsourcing's extended idle loop), per vCPU
        self.idle_hooks: list[Callable[[Vcpu], Code | None]] = []
        self.user_copies = 0  # guest kernel -> user buffer (receive)
        self.user_copy_bytes = 0
        self.user_tx_copies = 0  # user buffer -> guest kernel (send)
        self.ipis_sent = 0  # reschedule IPIs between this guest's vCPUs (wake_remote)
        #: threads woken from another vCPU, per target vCPU, until it takes the IPI
        self._wake_list: dict[int, list[GuestThread]] = {}

    # -- threads ------------------------------------------------------------------------------
    def spawn(
        self, name: str, vcpu: Vcpu, code: Callable[[GuestThread], Code], prio: int = 0
    ) -> GuestThread:
        gt = GuestThread(name, vcpu, prio)
        gt.code = code(gt)
        self.threads.append(gt)
        vcpu.notify()
        return gt

    def wake(self, gt: GuestThread, waker: Any = None) -> None:
        if gt.blocked:
            gt.blocked = False
            gt.vcpu.notify(waker)
        else:
            gt.wake_pending = True

    def try_to_wake_up(self, gt: GuestThread, vcpu: Vcpu | None = None) -> GuestThread | None:
        """Wake ``gt`` from code running on ``vcpu`` (None: from the host). A thread asleep on
        another vCPU is returned instead: the caller's code sends the reschedule IPI
        (``wake_remote``), so that the IPI's cost falls on it; a thread already on a wake list
        is left alone (try_to_wake_up() of a TASK_WAKING task does nothing)."""
        if self.wake_queued(gt):
            return None
        if vcpu is not None and gt.blocked and gt.vcpu is not vcpu:
            return gt
        self.wake(gt)
        return None

    def wake_remote(self, vcpu: Vcpu, gt: GuestThread) -> Code:
        """try_to_wake_up() from ``vcpu`` of a thread asleep on another vCPU (4.1's
        TTWU_QUEUE): the thread goes on the target's wake list, and the guest sends the target
        a reschedule IPI, a write of the x2APIC ICR MSR, which exits to KVM (the i7-6700K has
        no APICv, so no IPI virtualization; kernel-facts.md s5). KVM delivers the vector
        (kvm_apic_send_ipi) and kicks the target vCPU (kvm_vcpu_kick: its thread is woken from
        this vCPU's host CPU), then enters again. The thread runs once the target has taken
        the IPI (scheduler_ipi)."""

        def send_ipi() -> None:
            self.ipis_sent += 1
            self._wake_list.setdefault(gt.vcpu.index, []).append(gt)
            gt.vcpu.inject(self.scheduler_ipi, waker=vcpu.task.cpu)

        yield from vcpu.trap("msr_write", send_ipi)

    def wake_queued(self, gt: GuestThread) -> bool:
        """On a wake list, its IPI not taken yet (TASK_WAKING): another try_to_wake_up() of it
        does nothing."""
        return gt in self._wake_list.get(gt.vcpu.index, ())

    def scheduler_ipi(self, vcpu: Vcpu) -> Code:
        """The reschedule IPI's handler: sched_ttwu_pending() makes the threads queued for
        this vCPU runnable (vector entry, the handler, EOI by paravirtual EOI, irq_exit)."""
        yield self.vm.kernel.costs.guest_irq
        for gt in self._wake_list.pop(vcpu.index, ()):
            self.wake(gt)

    def pick(self, vcpu: Vcpu) -> GuestThread | None:
        best = None
        for gt in self.threads:
            if (
                gt.vcpu is vcpu
                and not gt.blocked
                and not gt.done
                and (best is None or gt.prio > best.prio)
            ):
                best = gt
        return best

    def has_work(self, vcpu: Vcpu) -> bool:
        if self.napi_pending.get(vcpu.index) or (self.idle_hooks and self.vm.events):
            return True
        return self.pick(vcpu) is not None

    # -- softirq (guest NAPI) -----------------------------------------------------------------
    def raise_napi(self, vcpu: Vcpu, poll: Callable[[Vcpu], Code]) -> None:
        q = self.napi_pending.setdefault(vcpu.index, deque())
        if poll not in q:
            q.append(poll)

    def softirq_work(self, vcpu: Vcpu) -> Code | None:
        q = self.napi_pending.get(vcpu.index)
        if not q:
            return None
        return q.popleft()(vcpu)

    def idle_work(self, vcpu: Vcpu) -> Code | None:
        for hook in self.idle_hooks:
            work = hook(vcpu)
            if work is not None:
                return work
        return None

    # -- copies -------------------------------------------------------------------------------
    def copy_from_user(self, nbytes: int) -> int:
        """The guest kernel copies a user buffer into an skb (send): cost (ns), via the LLC."""
        self.user_tx_copies += 1
        if self.vm.llc is not None:
            self.vm.llc.stream(nbytes)
        return copy_ns(self.vm.kernel, nbytes)

    def copy_to_user(self, nbytes: int) -> int:
        """The guest kernel copies into the user buffer: cost (ns), through the LLC."""
        self.user_copies += 1
        self.user_copy_bytes += nbytes
        if self.vm.llc is not None:
            self.vm.llc.stream(nbytes)
        return copy_ns(self.vm.kernel, nbytes)


def nbytes_copy(guest: GuestKernel, pkt: Packet) -> int:
    """sendto's copy of the user buffer into a guest kernel skb."""
    return guest.copy_from_user(pkt.nbytes)


class GuestVirtioNet:
    """The guest's virtio-net driver for one device: RX NAPI and TX."""

    def __init__(
        self,
        guest: GuestKernel,
        vcpu: Vcpu,
        rxvq: Virtqueue,
        txvq: Virtqueue,
        demux: Callable[[Packet], GuestSocket | None],
    ) -> None:
        self.guest = guest
        self.vcpu = vcpu  # the vCPU that takes this device's interrupts
        self.rxvq = rxvq
        self.txvq = txvq
        self.demux = demux
        #: the TX and RX virtqueues' kicks: each has its own ioeventfd and vhost poll
        #: (handle_tx_kick, handle_rx_kick)
        self.kick_host: Callable[[Any], None] = lambda waker: None
        self.kick_host_rx: Callable[[Any], None] = lambda waker: None
        self.rx_frames = 0
        self.avg_pkt_len = 0  # mrg_avg_pkt_len, an EWMA of received packet lengths
        self.napi_polls = 0
        self.on_consumed: Callable[[Packet], None] | None = None
        #: LLC owner touched per NAPI poll (the guest network stack's footprint), if any
        self.ws_owner: str | None = None
        rxvq.add_buf(None, rxvq.num)  # try_fill_recv: the RX ring starts full
        rxvq.enable_cb()

    def rx_interrupt(self, vcpu: Vcpu) -> Code:
        """vring_interrupt -> skb_recv_done: schedule NAPI, callbacks off while polling."""
        yield self.guest.vm.kernel.costs.guest_irq
        self.rxvq.disable_cb()
        self.guest.raise_napi(vcpu, self.poll)

    def poll(self, vcpu: Vcpu) -> Code:
        """virtnet_poll() as in 4.1: up to 64 skbs (a GRO'd packet is one skb, whatever
        buffers it filled: receive_mergeable takes them itself), then, once more than half the
        ring is free, refill it all (try_fill_recv) and kick if vhost asked; complete and
        re-enable callbacks."""
        k = self.guest.vm.kernel
        self.napi_polls += 1
        done = 0
        llc = self.guest.vm.llc
        if self.ws_owner is not None and llc is not None:
            yield llc.touch(self.ws_owner)
        while done < NAPI_POLL_WEIGHT:
            got = self.rxvq.get_used()
            if got is None:
                break
            _nbufs, pkt = got
            # one skb per used entry (receive_mergeable joins a GRO'd packet's buffers)
            yield k.costs.guest_rx_per_packet
            pkt.stamps.setdefault("guest_napi", k.sim.now)
            done += 1
            self.rx_frames += pkt.npkts
            self._account_len(pkt.nbytes)
            sock = self.demux(pkt)
            if sock is not None:
                remote = sock.deliver(pkt, vcpu)
                if remote is not None:  # the reader sleeps on another vCPU
                    yield from self.guest.wake_remote(vcpu, remote)
            elif self.on_consumed is not None:
                self.on_consumed(pkt)
        if done < NAPI_POLL_WEIGHT:
            if not self.rxvq.enable_cb():  # used buffers raced in: poll again
                self.rxvq.disable_cb()
                self.guest.raise_napi(vcpu, self.poll)
        else:
            self.guest.raise_napi(vcpu, self.poll)
        rxvq = self.rxvq
        if rxvq.num_free > rxvq.num // 2:
            rxvq.buf_len = mergeable_buf_len(self.avg_pkt_len)
            rxvq.add_buf(None, rxvq.num_free)  # try_fill_recv: fill the ring
            if rxvq.kick_prepare():  # tell vhost if it waits for buffers
                # the ioeventfd write wakes vhost during the exit
                yield from vcpu.trap("ioeventfd", lambda: self.kick_host_rx(vcpu.task.cpu))

    def _account_len(self, nbytes: int) -> None:
        """ewma_add(&rq->mrg_avg_pkt_len, len): weight 64 (RECEIVE_AVG_WEIGHT)."""
        avg = self.avg_pkt_len
        self.avg_pkt_len = (avg * 63 + nbytes) // 64 if avg else nbytes

    def sendto(self, pkt: Packet, vcpu: Vcpu, syscall: bool = True) -> Code:
        """sendto() on the virtio path: UDP/IP in the guest, virtqueue_add, kick (VM exit).
        ``syscall=False``: a packet the guest kernel sends by itself (a TCP ACK)."""
        k = self.guest.vm.kernel
        entry = k.costs.syscall if syscall else 0
        yield entry + k.costs.guest_tx_per_packet + nbytes_copy(self.guest, pkt)
        while self.txvq.get_used() is not None:  # free_old_xmit_skbs(): reclaim sent buffers
            pass
        while not self.txvq.add_buf(pkt, pkt.npkts):
            yield 1_000  # ring full: the real driver stops the queue; retry later
            while self.txvq.get_used() is not None:
                pass
        # The host has the frame from here: at the kick's VM exit, or now if vhost is
        # running and the kick is suppressed (EVENT_IDX).
        pkt.stamps.setdefault("vm_exit", k.sim.now)
        if self.txvq.kick_prepare():
            yield from vcpu.trap("ioeventfd", lambda: self.kick_host(vcpu.task.cpu))
