"""A VM: its vCPUs (host tasks), its guest kernel, and the per-request probes.

Probes (DESIGN.md section 3, "lightweight probes"): a request frame is stamped ``nic_rx`` when
the host NIC receives it, ``vm_entry`` at the first VM entry after it became available to the
guest, ``vm_exit`` at the VM exit that sends the response, and ``wire_out`` when the response's
last bit leaves the host NIC. Host receive = nic_rx..vm_entry, guest = vm_entry..vm_exit, host
send = vm_exit..wire_out.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from rtvm.virt.guest import GuestKernel
from rtvm.virt.vcpu import HaltPolling, Vcpu

if TYPE_CHECKING:
    from rtvm.kernel.host import Kernel
    from rtvm.kernel.llc import Llc
    from rtvm.kernel.nic import Packet


class Vm:
    def __init__(
        self, kernel: Kernel, name: str, llc: Llc | None = None, guest_preempt_rt: bool = False
    ) -> None:
        self.kernel = kernel
        self.name = name
        self.llc = llc
        self.guest = GuestKernel(self, guest_preempt_rt)
        self.vcpus: list[Vcpu] = []
        self._awaiting_entry: list[Packet] = []
        #: the shared-memory event queue of socket outsourcing (vmrpc.py)
        self.events: deque[Any] = deque()
        self.exits_by_reason: dict[str, int] = {}

    def add_vcpu(
        self,
        policy: str,
        prio: int = 0,
        allowed: set[int] | None = None,
        halt_poll_ns: int | None = None,
    ) -> Vcpu:
        poll_max = self.kernel.costs.halt_poll_ns if halt_poll_ns is None else halt_poll_ns
        v = Vcpu(self, len(self.vcpus), policy, prio, allowed, HaltPolling(max_ns=poll_max))
        self.vcpus.append(v)
        return v

    # -- probes -----------------------------------------------------------------------------
    def await_entry(self, pkt: Packet, vcpu: Vcpu | None = None) -> None:
        """``pkt`` is now available to the guest: stamp it at the next VM entry, or now if
        ``vcpu`` is running guest code already (no entry needed)."""
        if vcpu is not None and vcpu.in_guest and vcpu.task is vcpu.task.cpu.curr:
            pkt.stamps.setdefault("vm_entry", self.kernel.sim.now)
        else:
            self._awaiting_entry.append(pkt)

    def on_entry(self, vcpu: Vcpu) -> None:
        if self._awaiting_entry:
            now = self.kernel.sim.now
            for pkt in self._awaiting_entry:
                pkt.stamps.setdefault("vm_entry", now)
            self._awaiting_entry.clear()

    def on_exit(self, vcpu: Vcpu, reason: str) -> None:
        self.exits_by_reason[reason] = self.exits_by_reason.get(reason, 0) + 1
