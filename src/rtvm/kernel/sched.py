"""The scheduler: per-CPU runqueues with the RT class (SCHED_FIFO 1..99) above CFS.

What is modelled (kernel/sched/rt.c, fair.c; kernel-facts.md section 6):
- RT: a higher priority preempts at once; FIFO order within a priority; a preempted task goes
  back to the *head* of its list, a woken one to the tail. A woken RT task stays on its
  previous CPU, preempting what runs there, unless that is an RT task it cannot preempt or one
  that cannot move (select_task_rq_rt; Kernel.select_task_rq), even with another CPU idle.
  Push/pull: a woken RT task that cannot run on its CPU (task_woken_rt), and the RT tasks
  queued behind the one a CPU just switched to (post_schedule_rt), are pushed to an allowed
  CPU running something of lower priority (find_lowest_rq). A CPU whose RT task leaves it for
  lower work, or drops its priority, pulls a queued higher-priority RT task from an
  RT-overloaded CPU, but never one that beats what runs on its own CPU (pull_rt_task).
  find_lowest_rq ranks CPUs by cpupri, their highest RT priority, and an idle CPU stands with
  one running CFS tasks (4.1 never sets CPUPRI_IDLE): of the lowest level, the task's CPU,
  the CPU doing the wakeup or push, then the first by number. On the RT kernels a task in a
  migrate-disabled (BH-disabled) section does not move (Kernel.migratable).
- CFS: vruntime advances by delta * 1024 / weight, relative to its runqueue's min_vruntime
  when a task moves (a wakeup, push or pull to another CPU); the smallest vruntime runs; a
  woken task preempts the current CFS task if it is ahead by more than the wakeup granularity;
  a running task is preempted on the first tick after its slice (sched_latency / nr_running,
  at least min_granularity) is used up (tick.py); a woken sleeper is placed at
  min_vruntime - sched_latency / 2 (GENTLE_FAIR_SLEEPERS). The woken task that preempts
  becomes the runqueue's next buddy (check_preempt_wakeup -> set_next_buddy, whatever the
  NEXT_BUDDY feature says), and the next pick runs it rather than the leftmost task unless it
  stands more than the wakeup granularity to its right (pick_next_entity); a pick or a
  dequeue of the buddy clears it (clear_buddies). The last buddy (LAST_BUDDY) needs
  sched_nr_latency (8) runnable tasks on the CPU and is left out.
- CFS balancing (4.1's idle_balance, load_balance): a CPU about to idle pulls a queued CFS task
  only if it has been idle long enough on average (avg_idle >= sysctl_sched_migration_cost,
  0.5 ms) and the task is not cache-hot (it ran less than migration_cost ago). A CPU that stays
  idle beside queued work balances again every balance_interval (the nohz idle balancer), and
  after cache_nice_tries failed attempts it takes a cache-hot task too. The busy CPUs' own
  periodic balance (every 64 ms and more: busy_factor 32) is left out.
- RT throttling (sched_rt_runtime_us / sched_rt_period_us), off unless the scenario sets it.

Left out: a new task's placement (4.1's task_fork_fair puts it at min_vruntime plus a vslice,
START_DEBIT; here it is placed as a waking sleeper).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from rtvm.kernel.task import NICE_0_LOAD, Task

MS = 1_000_000


@dataclass(frozen=True)
class SchedTunables:
    """CFS and RT tunables. The defaults are 4.1's unscaled values (6 ms / 0.75 ms / 1 ms,
    kernel-facts.md section 6), i.e. one online CPU; ``for_cpus`` scales them as the kernel
    does at boot. A Kernel without explicit tunables uses ``for_cpus(ncpus)``."""

    sched_latency_ns: int = 6 * MS
    min_granularity_ns: int = 750_000
    wakeup_granularity_ns: int = 1 * MS
    #: sysctl_sched_migration_cost: the avg_idle gate of idle_balance and task_hot()'s window
    migration_cost_ns: int = 500_000
    #: sd->balance_interval of the MC domain at boot (1 ms), for an idle CPU's periodic balance
    balance_interval_ns: int = 1 * MS
    #: sd->cache_nice_tries of the MC domain: failed balances before a cache-hot task may move
    cache_nice_tries: int = 1
    #: None: no RT throttling; else (runtime, period) in ns, e.g. (950 ms, 1000 ms)
    rt_throttle_ns: tuple[int, int] | None = None

    @classmethod
    def for_cpus(cls, ncpus: int, **overrides: Any) -> SchedTunables:
        """sched_init_granularity(): scale by get_update_sysctl_factor(), which for the
        default SCHED_TUNABLESCALING_LOG is 1 + ilog2(min(num_online_cpus(), 8)). The
        testbed's host runs 2 cores (Hyper-Threading off): factor 2, so 12 / 1.5 / 2 ms."""
        factor = min(max(ncpus, 1), 8).bit_length()  # == 1 + ilog2(n) for n >= 1
        base = cls()
        scaled = replace(  # migration_cost and the domain's intervals are not scaled
            base,
            sched_latency_ns=base.sched_latency_ns * factor,
            min_granularity_ns=base.min_granularity_ns * factor,
            wakeup_granularity_ns=base.wakeup_granularity_ns * factor,
        )
        return replace(scaled, **overrides)


class RunQueue:
    """The runnable tasks of one CPU that are not running (struct rq, minus ``curr``)."""

    __slots__ = ("cfs", "min_vruntime", "next", "rt", "rt_prios")

    def __init__(self) -> None:
        self.rt: dict[int, deque[Task]] = {}
        self.rt_prios: list[int] = []  # non-empty RT priorities, highest first
        self.cfs: list[Task] = []
        self.min_vruntime = 0
        #: cfs_rq->next: the queued CFS task whose wakeup last preempted (set_next_buddy)
        self.next: Task | None = None

    def __len__(self) -> int:
        return sum(len(q) for q in self.rt.values()) + len(self.cfs)

    def enqueue(self, t: Task, head: bool = False) -> None:
        if t.prio > 0:
            q = self.rt.get(t.prio)
            if q is None:
                q = self.rt[t.prio] = deque()
                self.rt_prios.append(t.prio)
                self.rt_prios.sort(reverse=True)
            if head:
                q.appendleft(t)
            else:
                q.append(t)
        else:
            self.cfs.append(t)

    def dequeue(self, t: Task) -> None:
        q = self.rt.get(t.prio)
        if q is not None and t in q:
            q.remove(t)
            if not q:
                del self.rt[t.prio]
                self.rt_prios.remove(t.prio)
            return
        self.cfs.remove(t)
        if self.next is t:  # dequeue_entity() -> clear_buddies()
            self.next = None

    def __contains__(self, t: Task) -> bool:
        q = self.rt.get(t.prio)
        return (q is not None and t in q) or t in self.cfs

    def best_prio(self) -> int:
        """Priority of the best queued task: RT prio, 0 for CFS, -1 when empty."""
        if self.rt_prios:
            return self.rt_prios[0]
        return 0 if self.cfs else -1

    def pick_next(self, rt_allowed: bool = True, wakeup_gran_ns: int = 0) -> Task | None:
        """Remove and return the task to run next: the highest RT one, else the CFS task with
        the smallest vruntime, or the next buddy if it is not more than ``wakeup_gran_ns`` to
        its right (pick_next_entity: wakeup_preempt_entity(next, left) < 1)."""
        if self.rt_prios and rt_allowed:
            prio = self.rt_prios[0]
            q = self.rt[prio]
            t = q.popleft()
            if not q:
                del self.rt[prio]
                self.rt_prios.pop(0)
            return t
        if self.cfs:
            t = min(self.cfs, key=_vruntime_key)
            buddy = self.next
            if buddy is not None:
                if buddy.vruntime - t.vruntime <= wakeup_gran(wakeup_gran_ns, t):
                    t = buddy
                if buddy is t:  # clear_buddies(cfs_rq, se) for the entity picked
                    self.next = None
            self.cfs.remove(t)
            return t
        return None

    def rt_tasks(self) -> list[Task]:
        return [t for p in self.rt_prios for t in self.rt[p]]

    def cfs_weight(self) -> int:
        return sum(t.weight for t in self.cfs)


def wakeup_gran(gran_ns: int, se: Task) -> int:
    """wakeup_gran(): sysctl_sched_wakeup_granularity in ``se``'s vruntime (calc_delta_fair:
    scaled by NICE_0_LOAD / weight), for a wakeup's preemption test and the next-buddy pick."""
    return gran_ns * NICE_0_LOAD // se.weight


def _vruntime_key(t: Task) -> int:
    return t.vruntime


def cfs_slice(tun: SchedTunables, curr: Task, rq: RunQueue) -> int:
    """sched_slice(): curr's share of sched_latency (stretched beyond sched_nr_latency = 8)."""
    nr = len(rq.cfs) + 1
    period = max(tun.sched_latency_ns, nr * tun.min_granularity_ns)
    total = rq.cfs_weight() + curr.weight
    return max(tun.min_granularity_ns, period * curr.weight // total)


def place_entity(tun: SchedTunables, t: Task, rq: RunQueue) -> None:
    """place_entity() for a waking task: sleeper credit of half a latency period."""
    floor = rq.min_vruntime - tun.sched_latency_ns // 2
    if t.vruntime < floor:
        t.vruntime = floor
