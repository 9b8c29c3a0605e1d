"""Softirqs (kernel/softirq.c) by kernel generation, and ksoftirqd.

- vanilla: a hard interrupt's exit runs pending softirqs at once, in interrupt context, unless
  already inside softirq or a BH-disabled section; __do_softirq restarts while work is pending,
  for at most MAX_SOFTIRQ_RESTART (10) rounds, 2 ms (counted in jiffies), and while nothing
  needs the CPU (need_resched); then it wakes ksoftirqd (SCHED_OTHER).
- 4.1-rt ("vector" locks): a softirq raised in a thread is recorded in the thread's
  ``softirqs_raised``; on its last local_bh_enable the thread runs *its own* raised vectors, each
  under that vector's per-CPU lock (an rt_mutex with PI), re-checking the CPU's pending bit
  because somebody else may have run it meanwhile; a vector re-raised while running is run again
  by the same thread. Raised from hard-irq context: ksoftirqd (FIFO 1) runs it.
- 5.15-rt / 6.1-rt ("bh" lock): local_bh_disable takes the per-CPU BH lock (softirq_ctrl.lock,
  PI) in the outermost section; the holder runs *all* pending softirqs (with the restart limits)
  before releasing it; ksoftirqd is SCHED_OTHER and takes the same lock.
- 6.18-rt (no lock): each task runs the pending softirqs when it leaves its outermost section;
  nothing serialises two tasks, so a higher-priority thread preempts a lower one inside softirq.

The partitioned softirq of the outsourcing method is a separate vector, NET_RX_RT, with its own
per-CPU lock (rt_softirq_lock) and its own list (rt_poll_list); RT IRQ threads that use it never
take the normal lock (see napi.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from rtvm.kernel.rtmutex import RtMutex
from rtvm.kernel.task import BLOCK, COND_RESCHED, Code, Context, IrqFrame, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

NET_RX = 1 << 3  # NET_RX_SOFTIRQ = 3
NET_RX_RT = 1 << 10  # the partitioned RT vector (after NR_SOFTIRQS = 10)
VECTORS = (NET_RX, NET_RX_RT)

MAX_SOFTIRQ_TIME_NS = 2_000_000
MAX_SOFTIRQ_RESTART = 10

#: a softirq handler: ``handler(cpu, ctx)`` is kernel code (a generator) run for one vector
Handler = Callable[["Cpu", Context], Code]


class SoftirqCpu:
    """Per-CPU softirq state: pending mask, locks, ksoftirqd, counters."""

    def __init__(self, kernel: Kernel, cpu: Cpu) -> None:
        self.kernel = kernel
        self.cpu = cpu
        self.pending = 0
        self.serving = 0  # >0 while some context on this CPU runs softirq handlers
        self.restarts_exhausted = 0  # rounds ended by the restart limits -> ksoftirqd
        self.handlers: dict[int, Handler] = {}
        # 4.1-rt: one lock per vector; bh generation: one BH lock; rt_softirq_lock for NET_RX_RT
        self.vector_locks = {
            v: RtMutex(kernel, f"softirq_lock[{_vname(v)}]/{cpu.id}") for v in VECTORS
        }
        self.bh_lock = RtMutex(kernel, f"softirq_ctrl.lock/{cpu.id}")
        self.ksoftirqd: Task | None = None


def _vname(v: int) -> str:
    return {NET_RX: "NET_RX", NET_RX_RT: "NET_RX_RT"}.get(v, hex(v))


def setup(kernel: Kernel) -> None:
    """Create each CPU's softirq state and its ksoftirqd/N thread."""
    g = kernel.gen
    for cpu in kernel.cpus:
        cpu.softirq = SoftirqCpu(kernel, cpu)
        cpu.softirq.ksoftirqd = kernel.create_task(
            f"ksoftirqd/{cpu.id}", functools.partial(run_ksoftirqd, cpu),
            policy=g.ksoftirqd_policy, rt_priority=g.ksoftirqd_prio, allowed={cpu.id},
        )  # fmt: skip


def open_softirq(kernel: Kernel, vec: int, handler: Handler) -> None:
    for cpu in kernel.cpus:
        cpu.softirq.handlers[vec] = handler


# -- raising --------------------------------------------------------------------------------
def raise_softirq(cpu: Cpu, vec: int, ctx: Context) -> None:
    """raise_softirq_irqoff(): mark ``vec`` pending on ``cpu``; decide who will run it."""
    s = cpu.softirq
    s.pending |= vec
    k = s.kernel
    if isinstance(ctx, IrqFrame):
        if k.gen.preempt_rt and k.gen.softirq_lock == "vector" and s.ksoftirqd is not None:
            s.ksoftirqd.softirqs_raised |= vec  # handed to ksoftirqd on irq exit
        return  # vanilla runs it on irq exit; RT wakes ksoftirqd on irq exit
    t: Task = ctx  # type: ignore[assignment]
    if t.bh_count > 0:
        t.softirqs_raised |= vec  # run at this task's local_bh_enable
    elif t is not s.ksoftirqd:
        wakeup_softirqd(cpu)


def wakeup_softirqd(cpu: Cpu) -> None:
    s = cpu.softirq
    if s.ksoftirqd is not None:
        s.ksoftirqd.softirqs_raised |= s.pending
        s.kernel.wake_up(s.ksoftirqd, waker=cpu)


def irq_exit_softirq(cpu: Cpu, frame: IrqFrame) -> Code:
    """irq_exit() -> invoke_softirq(): what a hard interrupt's exit does with pending work."""
    s = cpu.softirq
    if not s.pending:
        return
    k = s.kernel
    if k.gen.preempt_rt:
        if k.gen.softirq_lock == "vector":
            # 4.1-rt invoke_softirq(): ksoftirqd runs what hard interrupts raised; a vector a
            # thread raised is that thread's to run at its local_bh_enable
            ks = s.ksoftirqd
            if ks is not None and ks.softirqs_raised:
                k.wake_up(ks, waker=cpu)
        elif not _bh_held_by_anyone(cpu):
            wakeup_softirqd(cpu)
        return
    if s.serving or (cpu.curr is not None and cpu.curr.bh_count > 0):
        return  # in_interrupt(): the softirq being served will see the pending bit
    frame.irqs_off = False  # softirqs run with interrupts enabled
    cpu.account()
    frame.account_as = "softirq"
    yield from do_softirq_loop(cpu, frame)


def _bh_held_by_anyone(cpu: Cpu) -> bool:
    return cpu.softirq.bh_lock.owner is not None


# -- BH sections ----------------------------------------------------------------------------
def local_bh_disable(cpu: Cpu, t: Task, vec_hint: int = NET_RX) -> Code:
    """local_bh_disable(): on the BH-lock generation the outermost section takes the lock."""
    if t.bh_count == 0 and cpu.softirq.kernel.gen.softirq_lock == "bh" and vec_hint != NET_RX_RT:
        yield from cpu.softirq.bh_lock.lock(t)
    t.bh_count += 1


def local_bh_enable(cpu: Cpu, t: Task, vec_hint: int = NET_RX) -> Code:
    """local_bh_enable(): the outermost enable runs pending softirqs, per generation."""
    t.bh_count -= 1
    if t.bh_count > 0:
        return
    s = cpu.softirq
    mode = s.kernel.gen.softirq_lock
    if vec_hint == NET_RX_RT:
        yield from do_current_softirqs(cpu, t)  # the RT partition: its own vector and lock
        return
    if mode == "vector":
        yield from do_current_softirqs(cpu, t)
    elif mode == "bh":
        t.bh_count += 1  # still inside the section while the holder serves softirqs
        if s.pending & ~NET_RX_RT:
            yield from do_softirq_loop(cpu, t, exclude=NET_RX_RT)
        t.bh_count -= 1
        t.softirqs_raised &= NET_RX_RT
        s.bh_lock.unlock(t)
    else:  # vanilla task context, or 6.18-rt
        # in_interrupt(): per CPU on vanilla (preempt_count), per task on RT, where a
        # preempted task inside softirq does not stop a higher one from serving softirqs.
        busy_elsewhere = s.serving and not s.kernel.gen.preempt_rt
        if s.pending & ~NET_RX_RT and not busy_elsewhere:
            t.bh_count += 1
            yield from do_softirq_loop(cpu, t, exclude=NET_RX_RT)
            t.bh_count -= 1
        t.softirqs_raised &= NET_RX_RT


def do_current_softirqs(cpu: Cpu, t: Task) -> Code:
    """4.1-rt do_current_softirqs(): run this thread's raised vectors, each under its lock."""
    s = cpu.softirq
    t.bh_count += 1  # softirq_nestcnt: re-raises while serving land in softirqs_raised
    while t.softirqs_raised:
        vec = t.softirqs_raised & -t.softirqs_raised  # lowest set bit first (__ffs)
        t.softirqs_raised &= ~vec
        lock = s.vector_locks[vec]
        yield from lock.lock(t)
        if s.pending & vec:  # somebody else may have taken care of it meanwhile
            s.pending &= ~vec
            yield from _run_vector(cpu, t, vec)
        lock.unlock(t)
    t.bh_count -= 1


def do_softirq_loop(cpu: Cpu, ctx: Context, exclude: int = 0) -> Code:
    """__do_softirq(): run all pending vectors, restarting within the limits, then defer.
    The time limit is in jiffies (end = jiffies + msecs_to_jiffies(2), restart while
    time_before(jiffies, end)): at HZ=1000 it ends 1 to 2 ms after the start, at the jiffy."""
    s = cpu.softirq
    jiffy = cpu.kernel.jiffy_ns
    limit_jiffies = -(-MAX_SOFTIRQ_TIME_NS // jiffy)  # msecs_to_jiffies() rounds up
    end = (cpu.sim.now // jiffy + limit_jiffies) * jiffy
    restart = MAX_SOFTIRQ_RESTART
    while True:
        pending = s.pending & ~exclude
        s.pending &= ~pending | exclude
        while pending:
            vec = pending & -pending
            pending &= ~vec
            yield from _run_vector(cpu, ctx, vec)
        if not s.pending & ~exclude:
            return
        restart -= 1
        if cpu.sim.now < end and not cpu.need_resched and restart:
            continue
        s.restarts_exhausted += 1
        wakeup_softirqd(cpu)
        return


def _run_vector(cpu: Cpu, ctx: Context, vec: int) -> Code:
    s = cpu.softirq
    handler = s.handlers.get(vec)
    if handler is None:
        return
    saved = ctx.account_as
    cpu.account()  # close the slice so far under its own kind before switching kinds
    ctx.account_as = "softirq"
    s.serving += 1
    try:
        yield s.kernel.costs.softirq_entry
        yield from handler(cpu, ctx)
    finally:
        s.serving -= 1
        cpu.account()
        ctx.account_as = saved


# -- ksoftirqd ------------------------------------------------------------------------------
def run_ksoftirqd(cpu: Cpu, t: Task) -> Code:
    """ksoftirqd/N: sleeps until softirqs are deferred to it, then serves them like any thread."""
    s = cpu.softirq
    mode = s.kernel.gen.softirq_lock
    while True:
        while not (s.pending & ~NET_RX_RT):
            t.softirqs_raised = 0
            yield BLOCK
        if mode == "vector":
            t.softirqs_raised |= s.pending & ~NET_RX_RT
            yield from do_current_softirqs(cpu, t)
        else:
            yield from local_bh_disable(cpu, t)
            t.softirqs_raised |= s.pending
            yield from local_bh_enable(cpu, t)
        yield COND_RESCHED  # run_ksoftirqd(): cond_resched() after each __do_softirq round
