"""Interrupt lines: a vanilla kernel's hard handler, or PREEMPT_RT's forced-threaded handler.

- vanilla: the handler runs in hard-interrupt context at once, preempting any task (even
  FIFO 99); on irq_exit the pending softirqs run in the same frame (softirq.py).
- PREEMPT_RT: a short top half (irq_default_primary_handler) wakes the line's thread
  irq/N-name (SCHED_FIFO 50 by default), which runs the handler between local_bh_disable() and
  local_bh_enable() (irq_forced_thread_fn), and so runs the softirqs it raised
  (kernel/irq/manage.c).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rtvm.kernel.napi import uses_rt_partition
from rtvm.kernel.softirq import (
    NET_RX,
    NET_RX_RT,
    irq_exit_softirq,
    local_bh_disable,
    local_bh_enable,
)
from rtvm.kernel.task import BLOCK, SCHED_FIFO, SCHED_OTHER, Code, Context, IrqFrame, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

IRQ_THREAD_PRIO = 50

#: the device's handler: kernel code run in the handler's context (a generator)
IrqHandler = Callable[["Cpu", Context], Code]


class IrqLine:
    """One interrupt line (an MSI-X vector) routed to one CPU."""

    def __init__(
        self,
        kernel: Kernel,
        irq: int,
        name: str,
        handler: IrqHandler,
        cpu: int = 0,
        thread_policy: str = SCHED_FIFO,
        thread_prio: int = IRQ_THREAD_PRIO,
    ) -> None:
        self.kernel = kernel
        self.irq = irq
        self.name = name
        self.handler = handler
        self.cpu = kernel.cpus[cpu]
        self.count = 0
        self.thread: Task | None = None
        self._thread_pending = False
        if kernel.gen.preempt_rt:
            self.thread = kernel.create_task(
                f"irq/{irq}-{name}", self._irq_thread, policy=thread_policy,
                rt_priority=thread_prio if thread_policy == SCHED_FIFO else 0,
                allowed={cpu},
            )  # fmt: skip

    @property
    def threaded(self) -> bool:
        return self.thread is not None

    def set_thread_priority(self, policy: str, prio: int = 0) -> None:
        """chrt on the IRQ thread."""
        if self.thread is None:
            raise ValueError(f"irq {self.irq} is not threaded on a {self.kernel.gen.name} kernel")
        self.kernel.set_scheduler(self.thread, policy, prio if policy == SCHED_FIFO else 0)

    def fire(self) -> None:
        """The device raises the interrupt (MSI write reaches the CPU's local APIC)."""
        self.count += 1
        self.cpu.raise_irq(self._frame)

    def _frame(self) -> IrqFrame:
        frame = IrqFrame(f"hardirq/{self.irq}-{self.name}", None)  # type: ignore[arg-type]
        frame.code = self._hardirq(frame)
        return frame

    def _hardirq(self, frame: IrqFrame) -> Code:
        cpu = self.cpu
        yield self.kernel.costs.hardirq_entry_exit
        if self.thread is None:
            yield from self.handler(cpu, frame)
        else:  # irq_default_primary_handler -> __irq_wake_thread
            self._thread_pending = True
            self.kernel.wake_up(self.thread, waker=cpu)
        yield from irq_exit_softirq(cpu, frame)

    def _irq_thread(self, t: Task) -> Code:
        """irq_thread() -> irq_forced_thread_fn()."""
        cpu = self.cpu
        while True:
            while not self._thread_pending:
                yield BLOCK
            self._thread_pending = False
            # A thread at or above rtnet_prio uses the RT partition: its own vector and lock.
            vec = NET_RX_RT if uses_rt_partition(self.kernel, t) else NET_RX
            yield from local_bh_disable(cpu, t, vec)
            yield from self.handler(cpu, t)
            yield from local_bh_enable(cpu, t, vec)


def system_vector_frame(
    cpu: Cpu, name: str, cost_ns: int, handler: Callable[[Cpu], None]
) -> IrqFrame:
    """An APIC system vector (a reschedule IPI, the local timer): per CPU and never threaded,
    not even on PREEMPT_RT. Its frame pays ``cost_ns`` (entry, the handler's work, exit), then
    runs ``handler`` and irq_exit (pending softirqs on a vanilla kernel)."""
    frame = IrqFrame(name, None)  # type: ignore[arg-type]
    frame.code = _system_vector(cpu, frame, cost_ns, handler)
    return frame


def _system_vector(cpu: Cpu, frame: IrqFrame, cost_ns: int, handler: Callable[[Cpu], None]) -> Code:
    yield cost_ns
    handler(cpu)
    yield from irq_exit_softirq(cpu, frame)


__all__ = ["IRQ_THREAD_PRIO", "SCHED_FIFO", "SCHED_OTHER", "IrqLine", "system_vector_frame"]
