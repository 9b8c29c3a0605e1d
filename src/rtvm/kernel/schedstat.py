"""Wakeup latency per thread: from try_to_wake_up() to the switch that first runs the task.

This is what ``perf sched latency`` reports from the sched_wakeup and sched_switch events
(per task: how many times it ran after a wakeup, the average and the longest delay), and the
delay that schedstats add to a task's ``run_delay`` for its wait after a wakeup. It is where a
thread's tail comes from when it has to wait for a CPU: the RT guest's housekeeping vCPU
behind the heavy threads, an RT vhost behind a higher-priority IRQ thread. The model's threads
record it as they run; the result JSON's ``details.wakeup_latency`` has it per thread.

Memory stays flat in simulated time (the memory bar): each thread keeps a fixed histogram,
1 us bins up to 1 ms and 10 us bins up to 10 ms, and its exact total and maximum. A p99 is read
from the histogram as the upper edge of its bin, so it is at most one bin (1 us below 1 ms)
above the exact figure, never below it.
"""

from __future__ import annotations

from array import array

FINE_NS = 1_000  # bin width below FINE_LIMIT_NS
FINE_LIMIT_NS = 1_000_000
COARSE_NS = 10_000  # bin width from FINE_LIMIT_NS to COARSE_LIMIT_NS
COARSE_LIMIT_NS = 10_000_000
_FINE_BINS = FINE_LIMIT_NS // FINE_NS
_BINS = _FINE_BINS + (COARSE_LIMIT_NS - FINE_LIMIT_NS) // COARSE_NS + 1  # + overflow


def _bin(ns: int) -> int:
    if ns < FINE_LIMIT_NS:
        return ns // FINE_NS
    if ns < COARSE_LIMIT_NS:
        return _FINE_BINS + (ns - FINE_LIMIT_NS) // COARSE_NS
    return _BINS - 1


def _upper_edge_ns(b: int) -> int:
    if b < _FINE_BINS:
        return (b + 1) * FINE_NS
    return FINE_LIMIT_NS + (b - _FINE_BINS + 1) * COARSE_NS


class WakeupLatency:
    """One thread's wakeup-to-run delays: count, total, maximum and a fixed histogram."""

    __slots__ = ("_hist", "count", "max_ns", "total_ns")

    def __init__(self) -> None:
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self._hist = array("I", bytes(4 * _BINS))

    def record(self, ns: int) -> None:
        self.count += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        self._hist[_bin(ns)] += 1

    def quantile_ns(self, q: float) -> int:
        """The smallest bin edge at or above which no more than (1 - q) of the delays lie; the
        exact maximum when the quantile falls in the overflow bin or the maximum's own bin."""
        if not self.count:
            return 0
        need = q * self.count
        seen = 0
        for b, n in enumerate(self._hist):
            seen += n
            if seen >= need and n:
                return min(_upper_edge_ns(b), self.max_ns) if b < _BINS - 1 else self.max_ns
        return self.max_ns

    def summary(self) -> dict[str, float | int]:
        """perf sched latency's columns (runs after a wakeup, average and longest delay, us)
        and the p99."""
        n = self.count
        return {
            "wakeups": n,
            "mean_us": round(self.total_ns / n / 1000, 2) if n else 0.0,
            "p99_us": round(self.quantile_ns(0.99) / 1000, 2),
            "max_us": round(self.max_ns / 1000, 2),
        }
