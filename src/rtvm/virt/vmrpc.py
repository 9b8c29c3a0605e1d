"""VMRPC and socket outsourcing (Eiraku et al. 2009; Garcia et al. 2018, method 4b).

The host kernel owns the socket and its protocol processing; the guest's recvfrom and sendto
are remote procedure calls over guest-host shared memory (a hypercall: VM exit, the socket
operation in the host on the vCPU thread, VM entry). Data is copied once, between the host
kernel and the guest user buffer. No vhost thread, no guest NIC softirq.

Wake-up modes when data arrives for a guest thread blocked in recvfrom:
- RT (``rt=True``): no interrupt. The host posts the socket on the shared event queue and wakes
  the vCPU thread; the guest's extended idle loop reads the event queue, makes the receiver
  runnable and returns to the scheduler. A request arriving while the server works is not
  signalled at all: the server finds it at its next recvfrom (FIFO).
- conventional (``rt=False``): the host injects a virtual interrupt whose guest handler reads
  the event queue and wakes the receiver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtvm.kernel.task import Code
from rtvm.virt.guest import GUEST_BLOCK, GuestThread
from rtvm.virt.vhost import copy_ns

if TYPE_CHECKING:
    from rtvm.kernel.nic import Packet
    from rtvm.virt.vcpu import Vcpu
    from rtvm.virt.vm import Vm


class OutsourcedSocket:
    """A host socket serving one guest thread through VMRPC."""

    def __init__(
        self,
        vm: Vm,
        name: str,
        vcpu: Vcpu,
        rt: bool,
        transmit: Callable[[Packet, Any], Code] | None = None,
        irq_vcpu: Vcpu | None = None,
    ) -> None:
        self.vm = vm
        self.name = name
        self.vcpu = vcpu
        #: the vCPU that takes the VMRPC virtual interrupt (rt=False): the receiver's unless
        #: the guest routes the vector elsewhere (testbed: guest_irq_vcpu)
        self.irq_vcpu = irq_vcpu or vcpu
        self.rt = rt
        self.transmit = transmit
        self.queue: deque[Packet] = deque()
        self.waiting: GuestThread | None = None
        self.rx_copies = 0  # host kernel -> guest user buffer
        self.tx_copies = 0  # guest user buffer -> host kernel
        self.copied_bytes = 0
        self.rpcs = 0
        self.virqs = 0
        #: LLC owner touched per RPC in the guest (the VMRPC stub's footprint), if any
        self.ws_owner: str | None = None
        if rt:
            vm.guest.idle_hooks.append(self._extended_idle)

    # -- host side: the host stack delivers (softirq context) ------------------------------
    def deliver(self, pkt: Packet, waker: Any = None) -> None:
        self.queue.append(pkt)
        if self.waiting is None:
            return  # the receiver is busy: it finds the data at its next recvfrom (FIFO)
        self.vm.events.append(self)
        if self.rt:
            self.vm.await_entry(pkt, self.vcpu)
            self.vcpu.notify(waker)  # wake the vCPU thread; no virtual interrupt
        else:
            self.vm.await_entry(pkt, self.irq_vcpu)
            self.virqs += 1
            self.irq_vcpu.inject(self._virq, waker)

    # -- guest side ---------------------------------------------------------------------------
    def _process_events(self, vcpu: Vcpu) -> Code:
        """Read the shared event queue and make the waiting receivers runnable."""
        yield self.vm.kernel.costs.vmrpc_call
        while self.vm.events:
            sock = self.vm.events.popleft()
            gt = sock.waiting
            if gt is not None:
                # made runnable: what arrives from now on it finds at its next recvfrom, and
                # a second event for the same socket wakes no one (try_to_wake_up on a
                # running task does nothing)
                sock.waiting = None
                remote = self.vm.guest.try_to_wake_up(gt, vcpu)
                if remote is not None:  # asleep on another vCPU: a reschedule IPI
                    yield from self.vm.guest.wake_remote(vcpu, remote)

    def _extended_idle(self, vcpu: Vcpu) -> Code | None:
        if vcpu is self.vcpu and self.vm.events:
            return self._process_events(vcpu)
        return None

    def _virq(self, vcpu: Vcpu) -> Code:
        yield self.vm.kernel.costs.guest_irq
        yield from self._process_events(vcpu)

    def recvfrom(self, gt: GuestThread) -> Code:
        """recvfrom() as an RPC: one copy, host kernel -> guest user buffer."""
        k = self.vm.kernel
        c = k.costs
        vcpu = gt.vcpu
        while True:
            yield c.syscall + c.vmrpc_call + self._touch()
            self.rpcs += 1
            vcpu._exit("vmrpc")
            yield c.vm_exit_entry // 2 + vcpu.kvm_stall()
            if self.queue:
                pkt = self.queue.popleft()
                self.rx_copies += 1
                self.copied_bytes += pkt.nbytes
                if self.vm.llc is not None:
                    self.vm.llc.stream(pkt.nbytes)
                yield copy_ns(k, pkt.nbytes)
                self.vm.await_entry(pkt)
                yield c.vm_exit_entry - c.vm_exit_entry // 2
                vcpu._enter()
                self.waiting = None
                pkt.stamps.setdefault("guest_recv", k.sim.now)
                return pkt
            self.waiting = gt
            yield c.vm_exit_entry - c.vm_exit_entry // 2
            vcpu._enter()
            yield GUEST_BLOCK
            self.waiting = None  # running again: data arriving now waits for the next call

    def _touch(self) -> int:
        llc = self.vm.llc
        if self.ws_owner is None or llc is None:
            return 0
        return llc.touch(self.ws_owner)

    def sendto(self, pkt: Packet, gt: GuestThread) -> Code:
        """sendto() as an RPC: the host copies from the user buffer and transmits."""
        k = self.vm.kernel
        c = k.costs
        vcpu = gt.vcpu
        yield c.syscall + c.vmrpc_call + self._touch()
        self.rpcs += 1
        pkt.stamps.setdefault("vm_exit", k.sim.now)
        vcpu._exit("vmrpc")
        yield c.vm_exit_entry // 2 + vcpu.kvm_stall()
        self.tx_copies += 1
        self.copied_bytes += pkt.nbytes
        if self.vm.llc is not None:
            self.vm.llc.stream(pkt.nbytes)
        yield copy_ns(k, pkt.nbytes)
        if self.transmit is not None:
            yield from self.transmit(pkt, vcpu.task)
        yield c.vm_exit_entry - c.vm_exit_entry // 2
        vcpu._enter()
