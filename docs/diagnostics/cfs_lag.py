"""Diagnostic, not part of rtvm: where CFS places the RT guest's housekeeping vCPU when it wakes
(docs/model.md, "Idle compression (for sweeps)" and "Where the response time goes").

Runs METHOD on the simple-rt testbed for SECONDS (under idle compression if KEEP > 1) and, at
every wakeup of the housekeeping vCPU (``CPU 0/KVM (rt-vm)``), records its vruntime against its
runqueue's min_vruntime, and, when a CFS thread runs there, how far that thread's vruntime is
ahead of the vCPU's: more than ``sched_wakeup_granularity`` (2 ms on the testbed) and the wakeup
preempts it. It also counts the picks at which CFS ran another thread while the vCPU waited.
It hooks the kernel's methods, so it needs the plain (not the mypyc-compiled) build.

    python docs/diagnostics/cfs_lag.py threaded 4          # a full run, 4 s
    python docs/diagnostics/cfs_lag.py threaded 1.5 20     # compressed, N = 20
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from typing import Any

from rtvm.kernel.host import Kernel
from rtvm.kernel.sched import RunQueue
from rtvm.methods import METHODS
from rtvm.testbed import build_testbed

VCPU = "CPU 0/KVM (rt-vm)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in METHODS:
        print(f"usage: cfs_lag.py METHOD [SECONDS] [KEEP]; methods: {', '.join(METHODS)}")
        return 2
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    keep = int(argv[2]) if len(argv) > 2 else None
    behind: list[float] = []  # vCPU vruntime - min_vruntime at its wakeups, us
    ahead: list[float] = []  # running CFS thread's vruntime - vCPU's, us
    passed_over: Counter[str] = Counter()
    wake_up, pick_next = Kernel.wake_up, RunQueue.pick_next

    def traced_wake_up(self: Kernel, t: Any, waker: Any = None) -> bool:
        woke = wake_up(self, t, waker)
        if woke and t.name == VCPU and t.prio == 0:
            behind.append((t.vruntime - t.cpu.rq.min_vruntime) / 1e3)
            curr = t.cpu.curr
            if curr is not None and curr.prio == 0:
                ahead.append((curr.vruntime - t.vruntime) / 1e3)
        return woke

    def traced_pick_next(self: RunQueue, rt_allowed: bool = True) -> Any:
        waiting = any(c.name == VCPU for c in self.cfs)
        t = pick_next(self, rt_allowed)
        if waiting and t is not None and t.prio == 0 and t.name != VCPU:
            passed_over[t.name] += 1
        return t

    Kernel.wake_up = traced_wake_up  # type: ignore[method-assign]
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
