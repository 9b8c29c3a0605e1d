"""The host kernel: CPUs, tasks, wakeups and load balancing, and the kernel generation.

A ``Kernel`` knows nothing of RT methods: a method creates tasks, sets their policies and
affinities, routes interrupts and switches mechanisms on (see rtvm.methods).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtvm.engine import Simulator
from rtvm.kernel.cpu import Cpu
from rtvm.kernel.irq import system_vector_frame
from rtvm.kernel.profile import CostProfile, load_profile
from rtvm.kernel.sched import SchedTunables, place_entity, wakeup_gran
from rtvm.kernel.schedstat import WakeupLatency
from rtvm.kernel.task import RUNNING, SCHED_FIFO, SCHED_OTHER, SLEEPING, Code, IrqFrame, Task
from rtvm.kernel.tick import add_nr_running, nr_running_change, rt_dequeued


@dataclass(frozen=True)
class Generation:
    """What differs between kernel versions for the mechanisms modelled (DESIGN.md section 3,
    kernel-facts.md section 2)."""

    name: str
    preempt_rt: bool
    #: "vector": 4.1-rt per-CPU per-softirq locks; "bh": 5.13..6.17-rt per-CPU BH lock held
    #: by any BH-disabled section; "none": vanilla, or 6.18-rt without the BH lock
    softirq_lock: str
    ksoftirqd_policy: str
    ksoftirqd_prio: int
    label: str
    #: CONFIG_PREEMPT*: "none" (PREEMPT_NONE, 4.1's Kconfig default) or "voluntary" leave a
    #: task in kernel code running until it reaches an explicit preemption point (cond_resched,
    #: blocking, return to user or guest mode); "full" (PREEMPT, and every RT kernel) preempts
    #: kernel code anywhere outside preempt- and BH-disabled sections.
    preempt: str = "full"
    #: CONFIG_PREEMPT_LAZY as the -rt patch "sched: Add support for lazy preemption" made it
    #: (in -rt from 3.x to 6.x, on with PREEMPT_RT_FULL wherever the arch has it, x86
    #: included): the fair class's preemption requests wait for the end of a migrate-disabled
    #: section (Cpu.resched). Mainline's PREEMPT_LAZY (6.13+), which instead promotes a lazy
    #: request at the next tick, is not modelled: 6.18-rt preempts as full PREEMPT does.
    preempt_lazy: bool = False
    #: the mainline version the generation is built on: it decides the NAPI API (4.11 added
    #: NAPI_STATE_MISSED and made ixgbe report its work to napi_complete_done)
    version: tuple[int, int] = (4, 1)

    @property
    def napi_state_missed(self) -> bool:
        """4.11+: napi_schedule() on a scheduled NAPI marks it MISSED, and napi_complete_done()
        reschedules it; 4.1's napi_schedule_prep() just fails."""
        return self.version >= (4, 11)

    @property
    def ixgbe_busy_poll_lock(self) -> bool:
        """4.1's ixgbe_poll() runs between ixgbe_qv_lock_napi() and ixgbe_qv_unlock_napi()
        (CONFIG_NET_RX_BUSY_POLL, default y), which flushes GRO at the end of every poll, and
        returns 0 once it completed (only full polls spend netdev_budget). Once ixgbe moved
        to the core's native busy polling and napi_complete_done (the 4.11 era), both went:
        GRO is flushed by napi_complete_done, or for segments from an earlier jiffy after a
        full poll, and a completed poll returns its work (min(work, budget - 1))."""
        return self.version < (4, 11)

    @property
    def preempt_kernel(self) -> bool:
        """Can a wakeup preempt a task in the middle of kernel code?"""
        return self.preempt_rt or self.preempt == "full"


GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation("vanilla", False, "none", SCHED_OTHER, 0,
                   "Linux 4.1 (PREEMPT_NONE), interrupt-first softirq on irq exit", "none"),
        Generation("vanilla-preempt", False, "none", SCHED_OTHER, 0,
                   "Linux 4.1 with CONFIG_PREEMPT: kernel code preemptible (what-if)", "full"),
        Generation("4.1-rt", True, "vector", SCHED_FIFO, 1,
                   "Linux 4.1-rt: per-CPU per-vector softirq locks, ksoftirqd FIFO 1",
                   preempt_lazy=True),
        Generation("5.15-rt", True, "bh", SCHED_OTHER, 0,
                   "Linux 5.15-rt: one per-CPU BH lock (prediction)", version=(5, 15),
                   preempt_lazy=True),
        Generation("6.1-rt", True, "bh", SCHED_OTHER, 0,
                   "Linux 6.1-rt: one per-CPU BH lock (prediction)", version=(6, 1),
                   preempt_lazy=True),
        Generation("6.18-rt", True, "none", SCHED_OTHER, 0,
                   "Linux 6.18-rt: no BH lock by default (prediction)", version=(6, 18)),
    )
}  # fmt: skip


class Kernel:
    """One host kernel on ``ncpus`` CPUs, driven by ``sim``."""

    def __init__(
        self,
        sim: Simulator,
        ncpus: int = 2,
        generation: str = "4.1-rt",
        costs: CostProfile | None = None,
        tunables: SchedTunables | None = None,
        hz: int = 1000,
        tracer: Any = None,
        net: Any = None,
        nohz_full: frozenset[int] | set[int] = frozenset(),
    ) -> None:
        if generation not in GENERATIONS:
            raise ValueError(f"kernel generation {generation!r}; allowed: {', '.join(GENERATIONS)}")
        if ncpus < 1:
            raise ValueError(f"ncpus {ncpus}: allowed >= 1")
        if not set(nohz_full) <= set(range(1, ncpus)):
            # tick_nohz_init(): the boot CPU keeps its tick for timekeeping
            raise ValueError(
                f"nohz_full {sorted(nohz_full)}: allowed CPUs 1..{ncpus - 1} (CPU 0 keeps time)"
            )
        self.sim = sim
        self.gen = GENERATIONS[generation]
        self.costs = costs if costs is not None else load_profile()
        self.tunables = tunables or SchedTunables.for_cpus(ncpus)
        self.hz = hz
        self.jiffy_ns = 1_000_000_000 // hz
        #: NO_HZ_FULL CPUs (nohz_full=): no tick while they run one task alone (tick.py)
        self.nohz_full = frozenset(nohz_full)
        self.tracer = tracer
        self.tasks: list[Task] = []
        self.drops: dict[str, int] = {}  # frames dropped, by reason
        self.lock_stats: dict[str, tuple[int, int]] = {}  # task -> (lock waits, ns waited)
        #: context -> [net_rx_action passes, packets, most packets, ns, longest ns] (napi.py)
        self.net_rx_passes: dict[str, list[int]] = {}
        self.boosted_tasks: set[str] = set()  # tasks that were ever PI-boosted
        #: task -> its wakeup-to-run delays (schedstat.py; perf sched latency)
        self.wakeup_latency: dict[str, WakeupLatency] = {}
        self.cpus = [Cpu(self, i) for i in range(ncpus)]
        self.all_cpus = frozenset(range(ncpus))
        if self.tunables.rt_throttle_ns is not None:
            self._arm_rt_period()
        # Imported here: softirq needs Kernel's task API and Kernel needs per-CPU softirq state.
        from rtvm.kernel import napi, softirq

        softirq.setup(self)
        self.net = napi.setup(self, net)

    # -- tasks -----------------------------------------------------------------------------
    def create_task(
        self,
        name: str,
        code: Callable[[Task], Code],
        policy: str = SCHED_OTHER,
        rt_priority: int = 0,
        allowed: set[int] | frozenset[int] | None = None,
        nice: int = 0,
        start: bool = True,
    ) -> Task:
        """kthread_create / clone: a task running ``code(task)``; woken at once if ``start``."""
        t = Task(name, policy, rt_priority, allowed if allowed is not None else self.all_cpus, nice)
        bad = set(t.allowed) - self.all_cpus
        if bad or not t.allowed:
            raise ValueError(
                f"task {name}: affinity {sorted(t.allowed)} outside CPUs 0..{len(self.cpus) - 1}"
            )
        t.code = code(t)
        t.cpu = self.cpus[min(t.allowed)]
        self.tasks.append(t)
        if self.tracer is not None:
            self.tracer.task_created(t)
        if start:
            self.wake_up(t)
        return t

    def set_scheduler(self, t: Task, policy: str, rt_priority: int = 0) -> None:
        """sched_setscheduler(): change policy and static priority (keeps PI boosts)."""
        boost = t.prio - t.normal_prio
        old = t.prio
        was_queued = self._dequeue_if_queued(t)
        t.policy = policy
        t.normal_prio = rt_priority if policy == SCHED_FIFO else 0
        t.prio = max(t.normal_prio, t.normal_prio + boost if boost > 0 else t.normal_prio)
        self._requeue_after_prio_change(t, was_queued, old)

    # -- wakeups ---------------------------------------------------------------------------
    def wake_up(self, t: Task, waker: Cpu | None = None) -> bool:
        """try_to_wake_up(): make a sleeping task runnable on a CPU it may run on."""
        if t.state != SLEEPING:
            return False
        t.state = RUNNING
        t.nr_wakeups += 1
        t.woken_at = self.sim.now
        cpu = self.select_task_rq(t, waker)
        if cpu is not t.cpu:
            t.nr_migrations += 1
            if t.cpu is not None:  # task_waking_fair(), enqueue_entity(ENQUEUE_WAKING)
                _migrate_vruntime(t, t.cpu, cpu)
        t.cpu = cpu
        if t.prio == 0:
            # enqueue_entity() and check_preempt_wakeup() call update_curr() first: what runs
            # there is charged up to now, so min_vruntime and curr's vruntime are current
            cpu.account()
            place_entity(self.tunables, t, cpu.rq)
        change = nr_running_change(cpu, t)
        cpu.rq.enqueue(t)
        add_nr_running(cpu, change, waker)
        if cpu.idle_stamp is not None:
            self._update_avg_idle(cpu)
        if self.tracer is not None:
            self.tracer.wakeup(t, cpu.id, self.sim.now)
        self._check_preempt(cpu, t, waker)
        return True

    def select_task_rq(self, t: Task, waker: Cpu | None = None) -> Cpu:
        """Wakeup placement. A CFS task: its previous CPU if idle, else an idle allowed CPU,
        else the previous one (select_idle_sibling). An RT task (select_task_rq_rt): its
        previous CPU, unless what runs there is an RT task that it cannot preempt or that
        cannot move (curr->nr_cpus_allowed < 2 || curr->prio <= p->prio); only then the CPU
        that find_lowest_rq() names, if its highest priority is below the wakee's. So a FIFO
        thread woken where a CFS thread runs stays and preempts it, on a vanilla kernel at
        that thread's next preemption point, even with another CPU idle. A task without a
        previous CPU (its first start) takes an idle allowed CPU, as a CFS task does."""
        prev = t.cpu if t.cpu is not None and t.cpu.id in t.allowed else None
        if prev is not None and not self.migratable(t):
            return prev  # select_task_rq(): only if tsk_nr_cpus_allowed(p) > 1
        if prev is not None and prev.curr_prio() < 0 and not prev.rq.cfs and not prev.rq.rt_prios:
            return prev
        if t.prio > 0 and prev is not None:
            curr = prev.curr
            if curr is None or curr.prio == 0 or (curr.prio < t.prio and self.migratable(curr)):
                return prev
            target = self.find_lowest_rq(t, waker)
            return target if target is not None else prev
        allowed = [c for c in self.cpus if c.id in t.allowed]
        idle = [c for c in allowed if c.curr is None and len(c.rq) == 0]
        if idle:
            return idle[0]
        if t.prio > 0:
            target = self.find_lowest_rq(t, waker)
            if target is not None:
                return target
        return prev if prev is not None else allowed[0]

    def migratable(self, t: Task) -> bool:
        """May ``t`` move to another CPU (p->nr_cpus_allowed > 1)? On the RT kernels not inside
        a migrate-disabled section: local_bh_disable() and rt_spin_lock() call migrate_disable(),
        after which -rt's tsk_cpus_allowed() is the task's own CPU ("the task can't be pushed
        to another CPU but can be preempted"), so it is neither pushed nor pulled, and it wakes
        where it slept."""
        return len(t.allowed) > 1 and not (t.bh_count > 0 and self.gen.preempt_rt)

    def find_lowest_rq(self, t: Task, this_cpu: Cpu | None) -> Cpu | None:
        """find_lowest_rq() (4.1): among the CPUs ``t`` may run on, those at the lowest cpupri
        level below ``t``'s priority (cpupri_find); of them ``t``'s own CPU, else the CPU
        doing the wakeup or push (``this_cpu``: smp_processor_id(), inside the shared
        SD_WAKE_AFFINE domain), else the first by number. None if ``t`` is pinned or no CPU
        stands below it. An idle CPU is no better than one running CFS tasks: both are
        CPUPRI_NORMAL, as 4.1 never sets CPUPRI_IDLE."""
        if not self.migratable(t):
            return None
        levels = [(cpupri(c), c) for c in self.cpus if c.id in t.allowed]
        below = [(level, c) for level, c in levels if level < t.prio]
        if not below:
            return None
        low = min(level for level, _ in below)
        lowest_mask = [c for level, c in below if level == low]
        if t.cpu in lowest_mask:
            return t.cpu
        if this_cpu in lowest_mask:
            return this_cpu
        return lowest_mask[0]

    def _check_preempt(self, cpu: Cpu, t: Task, waker: Cpu | None) -> None:
        """check_preempt_curr(): does ``t`` preempt what runs on ``cpu``? Remote CPUs learn of
        it through a reschedule IPI, which takes time."""
        curr = cpu.curr
        if curr is None or t.prio > curr.prio:
            preempt = True
        elif t.prio == 0 and curr.prio == 0:
            # check_preempt_wakeup(): nothing to decide while a reschedule is already pending
            # for curr (test_tsk_need_resched: TIF_NEED_RESCHED, not -rt's lazy flag); else a
            # wakee far enough behind preempts, lazily on -rt (resched_curr_lazy), and becomes
            # the next buddy (set_next_buddy), which the next pick prefers (RunQueue.pick_next)
            if cpu.full_resched_pending():
                return
            if curr.vruntime - t.vruntime > wakeup_gran(self.tunables.wakeup_granularity_ns, t):
                cpu.rq.next = t
                self.resched_curr(cpu, waker, lazy=True)
            return
        else:
            preempt = False
            if t.prio > 0:
                self._push_rt(cpu, t, waker)
        if preempt:
            self.resched_curr(cpu, waker)

    def resched_curr(self, cpu: Cpu, by: Cpu | None, lazy: bool = False) -> None:
        """resched_curr(): the local CPU (``by`` None or ``cpu``) just sets need_resched; a
        remote one sets its flag and sends the IPI, none if the flag is already set (an IPI
        is on its way, or the CPU reschedules anyway). ``lazy``: resched_curr_lazy(); a full
        request still goes out when only a lazy one is pending, since a migrate-disabled
        section would hold that one back (Cpu.preemptible)."""
        if by is None or by is cpu:
            cpu.resched(lazy)
            return
        lazy = lazy and self.gen.preempt_lazy
        if cpu.full_resched_pending() or (lazy and (cpu.need_resched or cpu.resched_requested)):
            return
        if cpu.resched_requested:  # a lazy request's IPI is on its way: it carries this one
            cpu.resched_requested_lazy = False
            return
        cpu.resched_requested = True
        cpu.resched_requested_lazy = lazy
        self.smp_send_reschedule(cpu)

    def smp_send_reschedule(self, cpu: Cpu) -> None:
        """Send ``cpu`` a reschedule IPI: it lands ``ipi_cross_cpu`` later (_ipi_resched). The
        one path for every reschedule IPI: a remote wakeup, an RT push, a vCPU kick."""
        self.sim.after(self.costs.ipi_cross_cpu, _ipi_resched, cpu)

    # -- balancing -------------------------------------------------------------------------
    def _push_rt(self, cpu: Cpu, t: Task, by: Cpu | None = None) -> bool:
        """push_rt_task(): move ``t``, queued on ``cpu``, to an allowed CPU running lower
        priority (find_lowest_rq). ``by`` is the CPU doing it, which sends the kicks and the
        reschedule: the waker in task_woken_rt, ``cpu`` itself after its own switch (None:
        ``cpu``). Returns whether it moved."""
        src = by if by is not None else cpu
        dest = self.find_lowest_rq(t, src)
        if dest is None or dest is cpu:
            return False
        _move_queued_rt(t, cpu, dest, src)
        self.resched_curr(dest, src)
        return True

    def push_rt_tasks(self, cpu: Cpu) -> None:
        """post_schedule_rt() -> push_rt_tasks() (4.1): after ``cpu`` switched to an RT task,
        push its queued RT tasks that may run elsewhere (the pushable list, highest first)
        to CPUs of lower priority, until one finds none. So an RT task preempted by a higher
        one does not wait behind it while another CPU runs CFS work."""
        while True:
            t = next((x for x in cpu.rq.rt_tasks() if self.migratable(x)), None)
            if t is None or not self._push_rt(cpu, t, cpu):
                return

    def balance(self, cpu: Cpu, prev: Task | None) -> None:
        """Before picking: pull_rt_task() if an RT task is leaving this CPU to lower-priority
        work (need_pull_rt_task: prev is RT and nothing of its priority is queued here),
        then idle_balance() if nothing is left to run."""
        if prev is not None and prev.prio > cpu.rq.best_prio() and prev.prio > 0:
            self.pull_rt_task(cpu, in_schedule=True)
        if cpu.rq.best_prio() >= 0:
            return
        self._idle_balance(cpu)

    def pull_rt_task(self, cpu: Cpu, in_schedule: bool = False) -> bool:
        """pull_rt_task() (4.1): from each other CPU that is RT-overloaded (two or more RT
        tasks, one of which may move: rt_set_overload), take its highest queued RT task that
        may run here, if that beats what this CPU has queued, unless it beats what runs on
        its own CPU: then it is about to run there, and 4.1 leaves it ("p->prio <
        src_rq->curr->prio: goto skip"). So a CPU never pulls a task queued behind a CFS
        thread or an idle task, nor one waiting only for its reschedule IPI to land. Returns
        whether it pulled. ``in_schedule``: called from schedule(), whose switch carries the
        nohz kick."""
        best_here = cpu.rq.best_prio()
        curr = cpu.curr
        if not in_schedule and curr is not None and curr.prio > best_here:
            best_here = curr.prio  # rt.highest_prio.curr counts the running task (lowered)
        pulled = False
        for src in self.cpus:
            if src is cpu or not _rt_overloaded(src):
                continue
            p = next(
                (t for t in src.rq.rt_tasks() if cpu.id in t.allowed and self.migratable(t)), None
            )
            if p is None or p.prio <= best_here:
                continue
            running = src.curr
            if running is None or p.prio > running.prio:
                continue  # it is about to run on its own CPU
            _move_queued_rt(p, src, cpu, cpu, in_schedule)
            best_here = p.prio
            pulled = True
        return pulled

    def _idle_balance(self, cpu: Cpu) -> None:
        """idle_balance() (4.1): stamp the start of idle; pull a queued CFS task only if this
        CPU's idle periods are long on average (avg_idle >= migration_cost: a CPU that will be
        woken soon anyway does not pay for a migration) and the task is not cache-hot."""
        cpu.idle_stamp = self.sim.now
        queued = self._cfs_candidates(cpu)
        if not queued:
            cpu.nr_balance_failed = 0  # balanced: load_balance()'s out_balanced
            return
        if cpu.avg_idle >= self.tunables.migration_cost_ns and self._pull_cfs(cpu, queued, False):
            cpu.idle_stamp = None
            return
        self._arm_idle_rebalance(cpu, queued)

    def _update_avg_idle(self, cpu: Cpu) -> None:
        """ttwu_do_wakeup(): fold the idle period that a wakeup ends into rq->avg_idle
        (update_avg: an eighth of the difference), capped at 2 x max_idle_balance_cost."""
        delta = self.sim.now - cpu.idle_stamp  # type: ignore[operator]
        cap = 2 * self.tunables.migration_cost_ns
        cpu.avg_idle = min(cap, cpu.avg_idle + ((delta - cpu.avg_idle) >> 3))
        cpu.idle_stamp = None

    def _cfs_candidates(self, cpu: Cpu) -> list[Task]:
        """Queued CFS tasks of other CPUs that ``cpu`` may run, busiest CPU first (not one in
        a migrate-disabled section: can_migrate_task() tests tsk_cpus_allowed())."""
        others = sorted(
            (c for c in self.cpus if c is not cpu and c.rq.cfs),
            key=lambda c: (-len(c.rq.cfs), c.id),
        )
        return [t for c in others for t in c.rq.cfs if cpu.id in t.allowed and self.migratable(t)]

    def _pull_cfs(self, cpu: Cpu, queued: list[Task], hot_ok: bool) -> bool:
        """load_balance() for an idle CPU, reduced to what two CPUs need: move one of the
        ``queued`` CFS tasks here; can_migrate_task() refuses a cache-hot one (task_hot(): it
        left a CPU less than migration_cost ago) unless ``hot_ok``."""
        now = self.sim.now
        window = self.tunables.migration_cost_ns
        for t in queued:
            if not hot_ok and now - t.last_ran_ns < window:
                continue
            other = t.cpu
            other.rq.dequeue(t)
            _migrate_vruntime(t, other, cpu)
            t.cpu = cpu
            t.nr_migrations += 1
            cpu.rq.enqueue(t)
            return True
        return False

    def _arm_idle_rebalance(self, cpu: Cpu, queued: list[Task]) -> None:
        """The periodic balance of a CPU without CFS work (the tick's rebalance_domains, or the
        nohz idle balancer for a tickless idle CPU): while other CPUs have ``queued`` CFS tasks
        it may run, it looks again every balance_interval."""
        curr = cpu.curr
        has_cfs = (curr is not None and curr.prio == 0) or cpu.rq.cfs
        if cpu.balance_ev is None and not has_cfs:
            cpu.balance_ev = self.sim.after(
                self.tunables.balance_interval_ns, self._idle_rebalance, cpu
            )

    def _idle_rebalance(self, cpu: Cpu) -> None:
        """rebalance_domains() with CPU_IDLE: a balance that finds only cache-hot tasks fails;
        after cache_nice_tries failures a hot task moves too. A CPU that runs an RT task at the
        tick is not idle: its CPU_NOT_IDLE interval (x busy_factor 32) has not passed, so it
        looks again at the next interval."""
        cpu.balance_ev = None
        queued = self._cfs_candidates(cpu)
        if not queued:
            cpu.nr_balance_failed = 0  # balanced: load_balance()'s out_balanced
            return
        if cpu.curr is None and not len(cpu.rq):
            hot_ok = cpu.nr_balance_failed > self.tunables.cache_nice_tries
            if self._pull_cfs(cpu, queued, hot_ok):
                cpu.nr_balance_failed = 0
                cpu.resched()
                return
            cpu.nr_balance_failed += 1
        self._arm_idle_rebalance(cpu, queued)

    # -- priorities (PI) -------------------------------------------------------------------
    def set_effective_prio(self, t: Task, prio: int, by: Cpu | None = None) -> None:
        """rt_mutex_setprio(): change the effective priority, requeue, and re-check preemption.
        ``by`` is the CPU doing it (None: ``t``'s own); from another CPU, the requeue's kick
        and reschedule are IPIs."""
        if prio == t.prio:
            return
        was_queued = self._dequeue_if_queued(t)
        old = t.prio
        t.prio = prio
        if prio > t.normal_prio:
            self.boosted_tasks.add(t.name)
        if self.tracer is not None:
            self.tracer.prio_change(t, old, prio, self.sim.now)
        self._requeue_after_prio_change(t, was_queued, old, by)

    def _dequeue_if_queued(self, t: Task) -> bool:
        if t.state == RUNNING and t.cpu is not None and t is not t.cpu.curr and t in t.cpu.rq:
            t.cpu.rq.dequeue(t)
            return True
        return False

    def _requeue_after_prio_change(
        self, t: Task, was_queued: bool, old: int, by: Cpu | None = None
    ) -> None:
        cpu = t.cpu  # ``by`` None: done on ``cpu`` itself (local kick and resched)
        if was_queued or (t is cpu.curr and t.state == RUNNING):
            # dequeue_task() + enqueue_task() of a task on its runqueue (curr included) take
            # nr_running down and up again: add_nr_running() sees the count without it
            add_nr_running(cpu, nr_running_change(cpu, t), by)
        if was_queued:
            if t.prio == 0:
                cpu.account()  # enqueue_entity() -> update_curr()
            cpu.rq.enqueue(t)
            self._check_preempt(cpu, t, by)
        elif t is cpu.curr:
            if old > 0 and t.prio == 0:
                # switched_from_rt(): the last RT task here left the class, so pull; then
                # switched_to_fair(): back in CFS, its slice starts again (set_curr_task_fair)
                # and the running task is rescheduled at once, to let CFS pick
                if not cpu.rq.rt_prios:
                    self.pull_rt_task(cpu)
                t.slice_exec_start = t.exec_ns
                self.resched_curr(cpu, by)
                return
            if 0 < t.prio < old:
                self.pull_rt_task(cpu)  # prio_changed_rt(): lowered while running: pull
            if cpu.rq.best_prio() > t.prio:
                self.resched_curr(cpu, by)  # lowered below a queued task

    # -- RT throttling ---------------------------------------------------------------------
    def _arm_rt_period(self) -> None:
        runtime, period = self.tunables.rt_throttle_ns  # type: ignore[misc]

        def period_tick(_: Any) -> int:
            for c in self.cpus:
                c.account()
                unthrottle = c.rt_throttled
                c.rt_time = 0
                c.rt_throttled = False
                if unthrottle:
                    c.resched()
            return period

        def check(_: Any) -> int:
            for c in self.cpus:
                c.account()
                if not c.rt_throttled and c.rt_time >= runtime and c.rq.cfs:
                    c.rt_throttled = True
                    c.resched()
            return self.jiffy_ns

        self.sim.after(period, period_tick)
        self.sim.after(self.jiffy_ns, check)

    def count_drop(self, reason: str, pkt: Any) -> None:
        """A frame (or batch) is dropped: count it by reason and tell its flow (TCP loss)."""
        self.drops[reason] = self.drops.get(reason, 0) + getattr(pkt, "npkts", 1)
        on_loss = getattr(getattr(pkt, "flow", None), "on_loss", None)
        if on_loss is not None:
            on_loss(pkt.nbytes)

    # -- hooks -----------------------------------------------------------------------------
    def utilisation(self) -> dict[str, Any]:
        """Busy time per CPU and in total, in percent of elapsed time (DESIGN.md section 7)."""
        for c in self.cpus:
            c.account()
        elapsed = self.sim.now
        by_cpu = [100.0 * c.busy_total_ns / elapsed if elapsed else 0.0 for c in self.cpus]
        return {"cpu_util_pct": sum(by_cpu) / len(by_cpu), "cpu_util_pct_by_cpu": by_cpu}


def cpupri(cpu: Cpu) -> int:
    """``cpu``'s level in 4.1's cpupri: the highest RT priority running or queued there
    (rq->rt.highest_prio.curr), else 0 (CPUPRI_NORMAL). An idle CPU stands at the same level as
    one running CFS tasks: 4.1 never sets CPUPRI_IDLE (Eggemann's 2020 cleanup, "sched/cpupri:
    Remove pri_to_cpu[CPUPRI_IDLE]", removed the level as never used)."""
    curr = cpu.curr
    level = curr.prio if curr is not None and curr.prio > 0 else 0
    queued = cpu.rq.rt_prios
    return max(level, queued[0]) if queued else level


def _rt_overloaded(cpu: Cpu) -> bool:
    """rt_rq->overloaded (update_rt_migration): two or more RT tasks on ``cpu``, what runs
    there included, at least one of which may run elsewhere (rt_nr_migratory, which on 4.1-rt
    counts affinity only, not migrate_disable)."""
    curr = cpu.curr
    tasks = cpu.rq.rt_tasks()
    if curr is not None and curr.prio > 0 and curr not in tasks:
        tasks = [curr, *tasks]
    return len(tasks) > 1 and any(len(t.allowed) > 1 for t in tasks)


def _move_queued_rt(t: Task, src: Cpu, dest: Cpu, by: Cpu, in_schedule: bool = False) -> None:
    """Move the queued RT task ``t`` from ``src`` to ``dest`` (a push or a pull:
    deactivate_task, set_task_cpu, activate_task), done by ``by``: the nohz kicks of both
    runqueues leave from there (``in_schedule``: from inside ``by``'s schedule(), whose switch
    carries the kick)."""
    src.rq.dequeue(t)
    rt_dequeued(src, by)
    _migrate_vruntime(t, src, dest)
    t.cpu = dest
    t.nr_migrations += 1
    change = nr_running_change(dest, t, in_schedule=in_schedule)
    dest.rq.enqueue(t)
    add_nr_running(dest, change, by, defer=in_schedule)


def _migrate_vruntime(t: Task, src: Cpu, dest: Cpu) -> None:
    """A CFS task (PI-boosted into the RT class or not) moved from ``src`` to ``dest`` keeps
    its vruntime relative to the runqueue's min_vruntime: dequeue_entity() takes the old one
    off, enqueue_entity() adds the new one."""
    if t.normal_prio == 0:
        t.vruntime += dest.rq.min_vruntime - src.rq.min_vruntime


def _ipi_resched(cpu: Cpu) -> None:
    """The reschedule IPI (smp_send_reschedule) reaches ``cpu``.

    An idle CPU waits in MWAIT on its thread flags with TIF_POLLING_NRFLAG set (intel_idle),
    so the waker only sets need_resched and the CPU wakes on that write: no interrupt to
    handle. A busy CPU takes the interrupt (smp_reschedule_interrupt -> scheduler_ipi, then
    irq_exit, which runs pending softirqs on a vanilla kernel) and reschedules on its exit;
    a vCPU thread in guest mode exits the guest first (Cpu._enter_irq)."""
    if cpu.curr is None and not cpu.irq_stack:
        _resched_if_needed(cpu)
        return
    cpu.raise_irq(functools.partial(_reschedule_interrupt, cpu))


def _reschedule_interrupt(cpu: Cpu) -> IrqFrame:
    """smp_reschedule_interrupt -> scheduler_ipi."""
    cpu.nr_resched_ipis += 1
    name = f"IPI/reschedule/{cpu.id}"
    return system_vector_frame(cpu, name, cpu.kernel.costs.hardirq_entry_exit, _resched_if_needed)


def _resched_if_needed(cpu: Cpu) -> None:
    """scheduler_ipi(): the IPI itself decides nothing; it makes the CPU act on the
    need_resched its sender set (resched_curr). So it preempts if a queued task outranks what
    runs there, or a waker asked for a CFS-on-CFS preemption (check_preempt_wakeup); an IPI
    that asked for nothing (a vCPU kick: kvm_vcpu_kick sets no need_resched) only costs the
    interrupt."""
    requested = cpu.resched_requested
    lazy = cpu.resched_requested_lazy
    cpu.resched_requested = False
    cpu.resched_requested_lazy = False
    curr = cpu.curr
    best = cpu.rq.best_prio()
    if curr is None or best > curr.prio:
        if best >= 0:
            cpu.resched()
    elif requested and best == 0 and curr.prio == 0:
        cpu.resched(lazy)
