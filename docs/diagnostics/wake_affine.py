"""Diagnostic, not part of rtvm: what 4.1's ``wake_affine`` would do to the simple-rt table
(docs/model.md, "Where the threaded testbed's CFS threads run").

The model places a waking CFS task on its previous CPU unless a CPU is idle
(``select_idle_sibling``). 4.1's ``select_task_rq_fair`` first asks ``wake_affine`` whether the
task may move to the waker's CPU: it may when ``100 * (this_load + w) <= 108 * prev_load``
(MC domain, ``imbalance_pct`` 117, equal capacities, no sync wakeup), where the loads are the
CPUs' ``cfs.runnable_load_avg`` (``wake_idx`` 0) and ``w`` the task's ``load_avg_contrib``;
``wake_wide`` refuses when the waker switches wakees much more often than the wakee
(``wakee_flips``, halved every second). The loads come from per-entity load tracking, which
the model does not keep; here each CFS task's contribution is its weight (1024, nice 0) times
a geometrically decayed fraction of time runnable, halving every 32 ms as PELT's does
(``y^32 = 1/2``), updated at each wakeup and block. That is close to PELT's steady state, not
its 1,024 us steps. ``this_cpu`` is the CPU the wakeup runs on (``smp_processor_id()``, a hard
interrupt or the waking thread). The script hooks the kernel's methods, so it needs the plain
(not the mypyc-compiled) build.

    python docs/diagnostics/wake_affine.py threaded 3          # with and without, seed 1
"""

from __future__ import annotations

import sys
from typing import Any

from rtvm.experiments.runner import run_method
from rtvm.kernel.cpu import Cpu
from rtvm.kernel.host import Kernel
from rtvm.kernel.task import SLEEPING, Task
from rtvm.methods import METHODS

HALF_LIFE_NS = 32 * 1_024_000  # PELT: y^32 = 1/2, periods of 1,024 us
NICE_0_LOAD = 1024
IMBALANCE_PCT = 117  # sd_init(): SD_SHARE_PKG_RESOURCES, the MC domain (125 is the default)
LLC_SIZE = 2  # sd_llc_size on the 2-CPU testbed
HZ_NS = 1_000_000_000


class Pelt:
    """Each CFS task's decayed runnable fraction, and the wakeup bookkeeping of record_wakee."""

    def __init__(self) -> None:
        self.avg: dict[Task, float] = {}
        self.since: dict[Task, tuple[int, bool]] = {}
        self.flips: dict[Any, list[int]] = {}  # task -> [wakee_flips, decay_ts]
        self.last_wakee: dict[Any, Any] = {}
        self.moved = 0
        self.asked = 0

    def update(self, t: Task, now: int, runnable_now: bool) -> None:
        last, was = self.since.get(t, (now, runnable_now))
        d = 0.5 ** ((now - last) / HALF_LIFE_NS)
        self.avg[t] = self.avg.get(t, 0.0) * d + (1.0 - d) * (1.0 if was else 0.0)
        self.since[t] = (now, runnable_now)

    def contrib(self, t: Task, now: int) -> float:
        self.update(t, now, self.since.get(t, (now, t.state != SLEEPING))[1])
        return NICE_0_LOAD * self.avg[t]

    def cpu_load(self, kernel: Kernel, cpu: Cpu, now: int) -> float:
        return sum(
            self.contrib(t, now)
            for t in kernel.tasks
            if t.prio == 0 and t.cpu is cpu and t.state != SLEEPING
        )

    def record_wakee(self, current: Any, p: Task, now: int) -> None:
        f = self.flips.setdefault(current, [0, now])
        if now > f[1] + HZ_NS:
            f[0] >>= 1
            f[1] = now
        if self.last_wakee.get(current) is not p:
            self.last_wakee[current] = p
            f[0] += 1

    def wake_wide(self, current: Any, p: Task) -> bool:
        mine = self.flips.get(p, [0, 0])[0]
        theirs = self.flips.get(current, [0, 0])[0]
        return mine > LLC_SIZE and theirs > LLC_SIZE * mine


def hook_block(pelt: Pelt) -> None:
    """Each CFS task's load stops growing when it blocks."""
    block = Cpu._block

    def hooked_block(self: Cpu, ctx: Any) -> None:
        if isinstance(ctx, Task) and ctx.prio == 0:
            pelt.update(ctx, self.kernel.sim.now, False)
        block(self, ctx)

    Cpu._block = hooked_block  # type: ignore[method-assign]


def track_load(pelt: Pelt) -> None:
    """Only the load bookkeeping (the runnable fraction at each wakeup and block), for a
    diagnostic that reads the loads without moving wakeups (busy_balance.py)."""
    wake_up = Kernel.wake_up

    def hooked_wake_up(self: Kernel, t: Task, waker: Any = None) -> bool:
        woke = wake_up(self, t, waker)
        if woke and t.prio == 0:
            pelt.update(t, self.sim.now, True)
        return woke

    Kernel.wake_up = hooked_wake_up  # type: ignore[method-assign]
    hook_block(pelt)


def install(pelt: Pelt) -> None:
    wake_up, select = Kernel.wake_up, Kernel.select_task_rq
    waking: list[Cpu | None] = [None]

    def hooked_wake_up(self: Kernel, t: Task, waker: Any = None) -> bool:
        if t.state != SLEEPING:
            return wake_up(self, t, waker)
        now = self.sim.now
        this = waker if isinstance(waker, Cpu) else None
        if t.prio == 0 and this is not None and this.curr is not None:
            pelt.record_wakee(this.curr, t, now)
        waking[0] = this
        try:
            woke = wake_up(self, t, waker)
        finally:
            waking[0] = None
        if t.prio == 0:
            pelt.update(t, now, True)
        return woke

    def hooked_select(self: Kernel, t: Task, waker: Cpu | None = None) -> Cpu:
        this = waking[0]
        prev = t.cpu
        if (
            t.prio != 0
            or this is None
            or prev is None
            or this is prev
            or this.id not in t.allowed
            or (this.curr is not None and pelt.wake_wide(this.curr, t))
        ):
            return select(self, t, waker)
        pelt.asked += 1
        now = self.sim.now
        this_load = pelt.cpu_load(self, this, now)
        prev_load = pelt.cpu_load(self, prev, now)
        w = pelt.contrib(t, now)
        prev_pct = 100 + (IMBALANCE_PCT - 100) // 2
        balanced = this_load <= 0 or 100 * (this_load + w) <= prev_pct * prev_load
        if not balanced:
            return select(self, t, waker)
        # select_idle_sibling(p, this): this if idle, else prev if idle, else any idle CPU
        for c in (this, prev, *self.cpus):
            if c.id in t.allowed and c.curr is None and len(c.rq) == 0:
                if c is this:
                    pelt.moved += 1
                return c
        pelt.moved += 1
        return this

    Kernel.wake_up = hooked_wake_up  # type: ignore[method-assign]
    Kernel.select_task_rq = hooked_select  # type: ignore[method-assign]
    hook_block(pelt)


def _line(label: str, row: dict[str, Any]) -> str:
    return (
        f"{label:<14} {row['mean_us']:7.1f} {row['p99_us']:7.1f} {row['sd_us']:6.1f} "
        f"{row['heavy_gbps']:7.2f} {row['cpu_util_pct']:6.1f}"
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in METHODS:
        print(f"usage: wake_affine.py METHOD [SECONDS]; methods: {', '.join(METHODS)}")
        return 2
    method, seconds = argv[0], float(argv[1]) if len(argv) > 1 else 3.0
    print(f"{method}, seed 1, {seconds:g} s: mean / p99 / SD us, heavy Gb/s, CPU %")
    print(_line("model", run_method(method, seconds).row))
    pelt = Pelt()
    install(pelt)
    print(_line("wake_affine", run_method(method, seconds).row))
    print(f"affine checks {pelt.asked}, moved to the waker's CPU {pelt.moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
