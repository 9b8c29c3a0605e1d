"""Diagnostic, not part of rtvm: what 4.1's periodic balancing of *busy* CPUs would do to the
simple-rt table (docs/model.md, "CFS balancing").

The model balances CFS tasks only towards a CPU that is idle or about to idle. On 4.1 every CPU
also balances from its tick (``rebalance_domains`` from ``SCHED_SOFTIRQ``) while busy, every
``balance_interval * busy_factor``: the MC domain of a 2-CPU host starts at ``min_interval`` =
``sd_weight`` = 2 ms, doubles after each balanced look up to ``max_interval`` 4 ms, and returns
to 2 ms after a move; ``busy_factor`` 32, so every 64 to 128 ms. ``load_balance`` then
(``find_busiest_group``, ``calculate_imbalance``, ``detach_tasks``; reduced to two one-CPU
groups of equal capacity):

- pulls only if the other CPU's CFS load is above this CPU's and above the average, and by more
  than ``imbalance_pct`` (117 for the MC domain: ``100 * busiest <= 117 * local`` is balanced);
- the imbalance is half the difference; if that is less than the busiest CPU's load per task, it
  is one task's load when ``busiest + lpt >= local + 2 lpt`` (``fix_small_imbalance``);
- it moves queued (not running) tasks, first in the busiest CPU's list, whose load is at most
  twice what is left of the imbalance, not cache-hot (ran within 0.5 ms) unless the domain has
  failed more than ``cache_nice_tries`` (1) times; a look that finds an imbalance but moves
  nothing counts a failure; after ``cache_nice_tries + 2`` failures the running task is pushed
  over (active balance, through the stopper).

The loads are ``wake_affine.py``'s approximation of PELT (each CFS task's runnable fraction,
halving every 32 ms, times 1,024), summed over each CPU's runnable CFS tasks
(``cfs.runnable_load_avg``); the CPUs' decayed ``cpu_load[]`` are left out. ``--capacity``
divides each CPU's load by what RT tasks and hard and soft interrupts leave of it
(``scale_rt_capacity`` with IRQ_TIME_ACCOUNTING, a decayed average of half-life ~500 ms).
The script hooks the kernel's methods, so it needs the plain (not the mypyc-compiled) build.

    python docs/diagnostics/busy_balance.py threaded 3             # with and without, seed 1
    python docs/diagnostics/busy_balance.py vanilla 3 --wake-affine  # both 4.1 placements
    python docs/diagnostics/busy_balance.py vanilla 3 --irqs-on-cpu0 --capacity --only
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from rtvm.experiments.runner import run_method
from rtvm.kernel.cpu import Cpu
from rtvm.kernel.host import Kernel, _migrate_vruntime
from rtvm.kernel.task import RUNNING, Task
from rtvm.methods import METHODS

MS = 1_000_000
MIN_INTERVAL_NS = 2 * MS  # sd_init(): min_interval = sd_weight ms
MAX_INTERVAL_NS = 4 * MS  # max_interval = 2 * sd_weight
BUSY_FACTOR = 32
CACHE_NICE_TRIES = 1
SCHED_CAPACITY_SCALE = 1024


def _load_wake_affine() -> Any:
    path = Path(__file__).with_name("wake_affine.py")
    spec = importlib.util.spec_from_file_location("wake_affine_diag", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wake_affine = _load_wake_affine()


class BusyBalance:
    """Per-CPU periodic load_balance() with CPU_NOT_IDLE, on the Pelt approximation."""

    def __init__(self, kernel: Kernel, pelt: Any, capacity: bool = False) -> None:
        self.k = kernel
        self.capacity = capacity
        self._rt_avg: dict[int, tuple[int, int, float]] = {}
        self.pelt = pelt
        self.interval = {c.id: MIN_INTERVAL_NS for c in kernel.cpus}
        self.failed = {c.id: 0 for c in kernel.cpus}
        self.looks = 0
        self.moved = 0
        self.active = 0
        self.placements: dict[tuple[str, ...], int] = {}
        self._since = 0
        self._placement: tuple[str, ...] = ()
        for c in kernel.cpus:  # the CPUs' ticks are not in phase: stagger the first looks
            kernel.sim.after(MIN_INTERVAL_NS * BUSY_FACTOR // (c.id + 1), self._tick, c)

    def _cfs(self, cpu: Cpu) -> list[Task]:
        return [t for t in self.k.tasks if t.prio == 0 and t.cpu is cpu and t.state == RUNNING]

    def _load(self, cpu: Cpu, now: int) -> tuple[float, int]:
        """The CPU's CFS load per unit of capacity (avg_load), and its CFS tasks."""
        tasks = self._cfs(cpu)
        load = sum(self.pelt.contrib(t, now) for t in tasks)
        if self.capacity:
            load = load * SCHED_CAPACITY_SCALE / self._capacity(cpu, now)
        return load, len(tasks)

    def _capacity(self, cpu: Cpu, now: int) -> float:
        """scale_rt_capacity(): what RT tasks and (IRQ_TIME_ACCOUNTING) hard and soft
        interrupts left of the CPU, as a decayed average (rt_avg, half-life ~500 ms)."""
        rt_names = {t.name for t in self.k.tasks if t.prio > 0}
        nonfair = cpu.busy_ns["hardirq"] + cpu.busy_ns["softirq"]
        nonfair += sum(ns for name, ns in cpu.by_name.items() if name in rt_names)
        last_t, last_nf, avg = self._rt_avg.get(cpu.id, (0, 0, 0.0))
        if now > last_t:
            frac = (nonfair - last_nf) / (now - last_t)
            d = 0.5 ** ((now - last_t) / (500 * MS))
            avg = avg * d + (1 - d) * frac
            self._rt_avg[cpu.id] = (now, nonfair, avg)
        return max(1.0, SCHED_CAPACITY_SCALE * (1 - avg))

    def _tick(self, cpu: Cpu) -> int:
        self._note_placement()
        if cpu.curr is not None:  # an idle CPU is the model's own idle balance
            self._balance(cpu)
        return self.interval[cpu.id] * BUSY_FACTOR

    def _balance(self, cpu: Cpu) -> None:
        self.looks += 1
        now = self.k.sim.now
        local, n_local = self._load(cpu, now)
        others = [c for c in self.k.cpus if c is not cpu]
        busiest = max(others, key=lambda c: (self._load(c, now)[0], -c.id))
        load_b, n_b = self._load(busiest, now)
        avg = (local + load_b) / 2
        within_pct = 100 * load_b <= wake_affine.IMBALANCE_PCT * local
        if n_b == 0 or local >= load_b or local >= avg or within_pct:
            self._balanced(cpu)
            return
        lpt = load_b / n_b
        imbalance = min(load_b - avg, avg - local)
        if imbalance < lpt:
            imbn = 2 if n_local else 1
            imbalance = lpt if load_b + lpt >= local + lpt * imbn else 0.0
        moved = self._detach_attach(busiest, cpu, imbalance, now)
        if moved:
            self.failed[cpu.id] = 0
            self.interval[cpu.id] = MIN_INTERVAL_NS
            return
        self.failed[cpu.id] += 1
        if self.failed[cpu.id] > CACHE_NICE_TRIES + 2:
            self._active_balance(busiest, cpu)
            self.failed[cpu.id] = CACHE_NICE_TRIES + 1

    def _balanced(self, cpu: Cpu) -> None:
        self.failed[cpu.id] = 0
        self.interval[cpu.id] = min(MAX_INTERVAL_NS, self.interval[cpu.id] * 2)

    def _detach_attach(self, src: Cpu, dst: Cpu, imbalance: float, now: int) -> int:
        hot_ok = self.failed[dst.id] > CACHE_NICE_TRIES
        moved = 0
        for t in list(src.rq.cfs):
            if dst.id not in t.allowed:
                continue
            if not hot_ok and now - t.last_ran_ns < self.k.tunables.migration_cost_ns:
                continue
            load = self.pelt.contrib(t, now)
            if load / 2 > imbalance:
                continue
            self._move(t, src, dst)
            moved += 1
            imbalance -= load
            if imbalance <= 0:
                break
        return moved

    def _move(self, t: Task, src: Cpu, dst: Cpu) -> None:
        src.rq.dequeue(t)
        _migrate_vruntime(t, src, dst)
        t.cpu = dst
        t.nr_migrations += 1
        dst.rq.enqueue(t)
        self.moved += 1
        self.k._check_preempt(dst, t, dst)

    def _active_balance(self, src: Cpu, dst: Cpu) -> None:
        """active_load_balance_cpu_stop(): the stopper preempts src's running CFS task, which
        then moves; modelled as a reschedule of src followed by a pull at its next switch."""
        curr = src.curr
        if not isinstance(curr, Task) or curr.prio != 0 or dst.id not in curr.allowed:
            return
        if len(src.rq.cfs) == 0:  # one CFS task there: nothing to balance by moving it
            return
        self.active += 1
        src.resched()

        def pull(_: Any) -> None:  # the stopper ran: curr is queued again, move it
            if (
                curr.cpu is src
                and curr.state == RUNNING
                and curr is not src.curr
                and curr in src.rq.cfs
            ):
                self._move(curr, src, dst)

        self.k.sim.after(3_000, pull)

    def _note_placement(self) -> None:
        now = self.k.sim.now
        where = tuple(
            f"{t.name}@{t.cpu.id}"
            for t in self.k.tasks
            if t.normal_prio == 0 and len(t.allowed) > 1 and t.cpu is not None
        )
        if self._placement:
            self.placements[self._placement] = (
                self.placements.get(self._placement, 0) + now - self._since
            )
        self._placement, self._since = where, now


def install(wake_affine_too: bool, capacity: bool = False) -> list[BusyBalance]:
    pelt = wake_affine.Pelt()
    if wake_affine_too:
        wake_affine.install(pelt)
    else:
        wake_affine.track_load(pelt)
    made: list[BusyBalance] = []
    init = Kernel.__init__

    def hooked_init(self: Kernel, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(BusyBalance(self, pelt, capacity))

    Kernel.__init__ = hooked_init  # type: ignore[method-assign]
    return made


def _line(label: str, row: dict[str, Any]) -> str:
    return (
        f"{label:<14} {row['mean_us']:7.1f} {row['p99_us']:7.1f} {row['sd_us']:6.1f} "
        f"{row['heavy_gbps']:7.2f} {row['cpu_util_pct']:6.1f}"
    )


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if not args or args[0] not in METHODS:
        print(
            "usage: busy_balance.py METHOD [SECONDS] [--wake-affine] [--only] [--irqs-on-cpu0] "
            f"[--capacity]; methods: {', '.join(METHODS)}"
        )
        return 2
    method, seconds = args[0], float(args[1]) if len(args) > 1 else 3.0
    # --irqs-on-cpu0: every NIC's interrupt on CPU 0 (examples/whatif-irqs-on-cpu0.toml)
    testbed = {"rt_nic_cpu": 0, "heavy_nic_cpus": (0, 0)} if "--irqs-on-cpu0" in argv else None
    print(f"{method}, seed 1, {seconds:g} s: mean / p99 / SD us, heavy Gb/s, CPU %")
    if "--only" not in argv:
        print(_line("model", run_method(method, seconds, testbed=testbed).row), flush=True)
    made = install("--wake-affine" in argv, "--capacity" in argv)
    print(_line("busy balance", run_method(method, seconds, testbed=testbed).row))
    bb = made[-1]
    print(f"looks {bb.looks}, tasks moved {bb.moved}, active balances {bb.active}")
    total = sum(bb.placements.values()) or 1
    for where, ns in sorted(bb.placements.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {100 * ns / total:5.1f}%  {' '.join(where)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
