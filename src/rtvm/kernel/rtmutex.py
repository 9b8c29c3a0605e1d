"""rt_mutex with priority inheritance (kernel/locking/rtmutex.c).

Waiters are ordered by effective priority, FIFO among equals. The owner runs at the highest
priority among the top waiters of all locks it holds (rt_mutex_adjust_prio), and the boost
follows the chain: if the owner itself waits on another lock, that lock's owner is boosted too
(rt_mutex_adjust_prio_chain). Unlock does not hand the lock over: it wakes the top waiter and
drops the old owner's boost; the woken waiter takes the lock when it runs, unless a task of
strictly higher priority took it first (rt_mutex_steal; no lateral steals for RT tasks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtvm.kernel.task import BLOCK, Code, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

MAX_CHAIN = 1024  # the kernel's max_lock_depth


class RtMutex:
    __slots__ = ("acquisitions", "contended", "kernel", "name", "owner", "wait_ns", "waiters")

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name
        self.owner: Task | None = None
        self.waiters: list[Task] = []
        self.acquisitions = 0
        self.contended = 0
        self.wait_ns = 0

    def lock(self, t: Task) -> Code:
        """rt_mutex_lock(): ``yield from lock.lock(task)``; blocks (boosting the owner)."""
        if self.owner is t:
            raise RuntimeError(f"{t.name} locks {self.name} twice (rt_mutex is not recursive)")
        self.acquisitions += 1
        if self._may_take(t):
            self._take(t)
            return
        self.contended += 1
        since = self.kernel.sim.now
        t.blocked_on = self
        self._insert_waiter(t)
        tracer = self.kernel.tracer
        if tracer is not None:
            tracer.lock_wait_begin(t, self, since)
        adjust_chain(self.kernel, self.owner, t.cpu)
        while True:
            yield BLOCK
            if self._may_take(t):
                break
        self.waiters.remove(t)
        t.blocked_on = None
        self._take(t)
        adjust_chain(self.kernel, t, t.cpu)  # inherit from the waiters still queued
        waited = self.kernel.sim.now - since
        self.wait_ns += waited
        n, ns = self.kernel.lock_stats.get(t.name, (0, 0))
        self.kernel.lock_stats[t.name] = (n + 1, ns + waited)
        if tracer is not None:
            tracer.lock_wait_end(t, self, since, self.kernel.sim.now)

    def _may_take(self, t: Task) -> bool:
        """try_to_take_rt_mutex(): free, and ``t`` is the top waiter or outranks it."""
        if self.owner is not None:
            return False
        if not self.waiters:
            return True
        top = self.waiters[0]
        return top is t or t.prio > top.prio

    def unlock(self, t: Task) -> None:
        if self.owner is not t:
            raise RuntimeError(f"{t.name} unlocks {self.name} owned by {self.owner}")
        t.pi_held.remove(self)
        self.owner = None
        if self.waiters:
            self.kernel.wake_up(self.waiters[0], waker=t.cpu)
        adjust_chain(self.kernel, t, t.cpu)  # deboost

    def _take(self, t: Task) -> None:
        self.owner = t
        t.pi_held.append(self)

    def _insert_waiter(self, t: Task) -> None:
        ws = self.waiters
        i = len(ws)
        while i > 0 and ws[i - 1].prio < t.prio:
            i -= 1
        ws.insert(i, t)

    def requeue_waiter(self, t: Task) -> None:
        self.waiters.remove(t)
        self._insert_waiter(t)

    def __repr__(self) -> str:
        owner = self.owner.name if self.owner else None
        return f"<RtMutex {self.name} owner={owner} waiters={len(self.waiters)}>"


def pi_prio(t: Task) -> int:
    """The priority ``t`` should run at: its own, or its top waiters' if higher."""
    prio = t.normal_prio
    for lock in t.pi_held:
        if lock.waiters and lock.waiters[0].prio > prio:
            prio = lock.waiters[0].prio
    return prio


def adjust_chain(kernel: Kernel, t: Task | None, by: Cpu | None = None) -> None:
    """Walk the PI chain from ``t``: fix its priority, then its lock owner's, transitively.
    ``by`` is the CPU walking it (the blocking or unlocking task's): a requeue on another
    CPU reaches that CPU through IPIs."""
    depth = 0
    while t is not None and depth < MAX_CHAIN:
        depth += 1
        prio = pi_prio(t)
        if prio == t.prio:
            return
        kernel.set_effective_prio(t, prio, by)
        lock = t.blocked_on
        if lock is None:
            return
        lock.requeue_waiter(t)
        t = lock.owner
