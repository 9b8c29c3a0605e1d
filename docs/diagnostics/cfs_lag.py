"""Diagnostic, not part of rtvm: where CFS places the RT guest's housekeeping vCPU when it wakes
(docs/model.md, "Idle compression (for sweeps)" and "Where the response time goes").

Runs METHOD on the simple-rt testbed for SECONDS (under idle compression if KEEP > 1) and, at
every wakeup of the housekeeping vCPU (``CPU 0/KVM (rt-vm)``), records its vruntime against its
runqueue's min_vruntime, and, when a CFS thread runs there, how far that thread's vruntime is
ahead of the vCPU's: more than ``sched_wakeup_granularity`` (2 ms on the testbed) and the wakeup
preempts it. It also counts the picks at which CFS ran another thread while the vCPU waited,
how long the vCPU waited from its wakeup to its first run, and how long each CFS thread ran at a
stretch (from a switch to it to the next switch on its CPU; interrupts included), which is
what bounds such a wait.
It hooks the kernel's methods, so it needs the plain (not the mypyc-compiled) build.

    python docs/diagnostics/cfs_lag.py threaded 4          # a full run, 4 s
    python docs/diagnostics/cfs_lag.py threaded 1.5 20     # compressed, N = 20
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from typing import Any

from rtvm.kernel.cpu import Cpu
from rtvm.kernel.host import Kernel
from rtvm.kernel.sched import RunQueue
from rtvm.methods import METHODS
from rtvm.testbed import build_testbed

VCPU = "CPU 0/KVM (rt-vm)"


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in METHODS:
        print(f"usage: cfs_lag.py METHOD [SECONDS] [KEEP]; methods: {', '.join(METHODS)}")
        return 2
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    keep = int(argv[2]) if len(argv) > 2 else None
    behind: list[float] = []  # vCPU vruntime - min_vruntime at its wakeups, us
    ahead: list[float] = []  # running CFS thread's vruntime - vCPU's, us
    passed_over: Counter[str] = Counter()
    waits: list[float] = []  # the vCPU's wakeup to its first run, us
    runs: dict[str, list[float]] = {}  # CFS thread -> its stretches on a CPU, us
    woke_at: list[int] = []
    started: dict[int, tuple[str, int]] = {}  # cpu id -> (CFS thread, since)
    wake_up, pick_next, schedule = Kernel.wake_up, RunQueue.pick_next, Cpu.schedule

    def traced_wake_up(self: Kernel, t: Any, waker: Any = None) -> bool:
        woke = wake_up(self, t, waker)
        if woke and t.name == VCPU:
            woke_at.append(self.sim.now)
        if woke and t.name == VCPU and t.prio == 0:
            behind.append((t.vruntime - t.cpu.rq.min_vruntime) / 1e3)
            curr = t.cpu.curr
            if curr is not None and curr.prio == 0:
                ahead.append((curr.vruntime - t.vruntime) / 1e3)
        return woke

    def traced_pick_next(self: RunQueue, rt_allowed: bool = True, gran_ns: int = 0) -> Any:
        waiting = any(c.name == VCPU for c in self.cfs)
        t = pick_next(self, rt_allowed, gran_ns)
        if waiting and t is not None and t.prio == 0 and t.name != VCPU:
            passed_over[t.name] += 1
        return t

    def traced_schedule(self: Cpu) -> None:
        now = self.sim.now
        ran = started.pop(self.id, None)
        if ran is not None:
            runs.setdefault(ran[0], []).append((now - ran[1]) / 1e3)
        schedule(self)
        nxt = self.curr
        if nxt is not None and nxt.prio == 0:
            started[self.id] = (nxt.name, now)
            if nxt.name == VCPU and woke_at:
                waits.append((now - woke_at.pop()) / 1e3)
                woke_at.clear()

    Kernel.wake_up = traced_wake_up  # type: ignore[method-assign]
    Cpu.schedule = traced_schedule  # type: ignore[method-assign]
    RunQueue.pick_next = traced_pick_next  # type: ignore[method-assign]
    tb = build_testbed(METHODS[argv[0]], seed=1, idle_keep=keep)
    tb.sim.run(until=int(seconds * 1e9))
    label = f"N = {keep}" if keep else "full"
    print(f"{argv[0]}, seed 1, {seconds:g} s simulated, {label}: {len(behind)} vCPU wakeups")
    if behind:
        print(
            f"  vruntime - min_vruntime at wakeup, us: median {statistics.median(behind):.0f},"
            f" at the floor (-6 ms): {sum(b <= -5999 for b in behind)}"
        )
    if ahead:
        print(
            f"  a CFS thread ran there ({len(ahead)}): ahead of the vCPU by a median"
            f" {statistics.median(ahead):.0f} us; by more than 2 ms (the wakeup preempts):"
            f" {sum(a > 2000 for a in ahead)}"
        )
    print(f"  picks that ran another CFS thread while the vCPU waited: {dict(passed_over)}")
    if waits:
        print(
            f"  the vCPU's wakeup to its first run, us: median {_q(waits, 0.5):.1f},"
            f" p99 {_q(waits, 0.99):.1f}, max {max(waits):.1f} ({len(waits)} runs)"
        )
    print("  CFS threads' stretches on a CPU, us (median / p99 / max):")
    for name, r in sorted(runs.items()):
        print(f"    {name:>20}: {_q(r, 0.5):7.1f} / {_q(r, 0.99):7.1f} / {max(r):7.1f}  ({len(r)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
