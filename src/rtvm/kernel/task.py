"""Execution contexts: tasks (task_struct) and hard-interrupt frames.

Kernel code paths are written as generators that run *in* a context. A generator yields:

- an ``int``: consume that many nanoseconds of CPU time (preemptible, resumable);
- ``BLOCK``: sleep (TASK_INTERRUPTIBLE) until somebody calls ``Kernel.wake_up`` on this task;
- ``COND_RESCHED``: an explicit preemption point (cond_resched(), or ``if (need_resched())
  schedule();``): switch away if a reschedule is pending, else go on at no cost. It matters on
  kernels without forced preemption, where kernel code is preempted only at such points.

Everything else a code path does (napi_schedule, raising a softirq, waking a thread, taking a
lock) happens synchronously between two yields, at the simulated instant the previous CPU-time
request completed, exactly like straight-line kernel code between two expensive steps.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtvm.engine.core import Event
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.rtmutex import RtMutex

#: ``yield BLOCK``: sleep until woken.
BLOCK = object()
#: ``yield COND_RESCHED``: schedule() here if need_resched is set (stay runnable).
COND_RESCHED = object()

Code = Generator[Any, Any, Any]

SCHED_FIFO = "SCHED_FIFO"
SCHED_OTHER = "SCHED_OTHER"

# task states
RUNNING = "R"  # on a CPU or on a runqueue
SLEEPING = "S"
DEAD = "X"

NICE_0_LOAD = 1024


class Context:
    """Something a CPU executes: a task, or a hard-interrupt frame pushed on top of one."""

    __slots__ = (
        "account_as",
        "code",
        "cpu",
        "name",
        "remaining",
        "resume_value",
        "run_ev",
        "run_start",
    )

    def __init__(self, name: str, code: Code | None, account_as: str) -> None:
        self.name = name
        #: the code path it runs; a task gets it right after creation (Kernel.create_task)
        self.code: Code = code  # type: ignore[assignment]
        #: accounting bucket kind: "thread", "hardirq" or "softirq" (changes while running)
        self.account_as = account_as
        #: ns of the current CPU-time request still to run (0: the code must be advanced)
        self.remaining = 0
        self.run_ev: Event | None = None  # the engine event that completes the current request
        #: what the code receives when the current request completes (Cpu.cut_short's leftover)
        self.resume_value: int | None = None
        self.run_start = 0
        #: the CPU it runs or last ran on; set before it first runs (create_task, raise_irq)
        self.cpu: Cpu = None  # type: ignore[assignment]


class Task(Context):
    """A schedulable thread: policy, priorities (with PI boosting), CFS state, affinity."""

    __slots__ = (
        "allowed",
        "bh_count",
        "blocked_on",
        "exec_ns",
        "guest_exit",
        "last_ran_ns",
        "normal_prio",
        "nr_migrations",
        "nr_switches",
        "nr_wakeups",
        "pi_held",
        "policy",
        "prio",
        "sched_out",
        "slice_exec_start",
        "softirqs_raised",
        "state",
        "user_mode",
        "vruntime",
        "weight",
        "woken_at",
    )

    def __init__(
        self,
        name: str,
        policy: str = SCHED_OTHER,
        rt_priority: int = 0,
        allowed: frozenset[int] | set[int] | None = None,
        nice: int = 0,
    ) -> None:
        super().__init__(name, None, "thread")
        if policy not in (SCHED_FIFO, SCHED_OTHER):
            raise ValueError(f"policy {policy!r}: allowed SCHED_FIFO, SCHED_OTHER")
        if policy == SCHED_FIFO and not 1 <= rt_priority <= 99:
            raise ValueError(f"SCHED_FIFO priority {rt_priority}: allowed 1..99")
        self.policy = policy
        #: static priority: 1..99 for SCHED_FIFO, 0 for SCHED_OTHER (higher wins)
        self.normal_prio = rt_priority if policy == SCHED_FIFO else 0
        #: effective priority, >= normal_prio while PI-boosted
        self.prio = self.normal_prio
        self.weight = _nice_to_weight(nice)
        self.vruntime = 0
        #: CPUs it may run on (Kernel.create_task gives all CPUs when none is named)
        self.allowed: frozenset[int] = frozenset(allowed) if allowed is not None else frozenset()
        self.state = SLEEPING
        self.pi_held: list[RtMutex] = []  # rt_mutexes this task owns
        self.blocked_on: RtMutex | None = None
        #: 4.1-rt: softirqs raised by this thread (current->softirqs_raised)
        self.softirqs_raised = 0
        #: local_bh_disable nesting (current->softirq_disable_cnt / softirq_nestcnt)
        self.bh_count = 0
        #: running user or guest code (not kernel code): preemptible on any kernel
        self.user_mode = False
        #: when try_to_wake_up() last made it runnable, until it next runs (-1: not waiting)
        self.woken_at = -1
        #: a vCPU thread's VM exit on a host interrupt (virt/vcpu.py sets it): called when an
        #: interrupt arrives while the task runs guest code (the task already paused), it
        #: returns the CPU time of the exit and the entry back, which the interrupt pays first
        #: (Cpu._enter_irq); it may end the task's request (Cpu.cut_short), for KVM to deliver
        #: pending events before it enters again
        self.guest_exit: Callable[[], int] | None = None
        #: a preempt notifier's sched_out (kvm_sched_out for a vCPU thread): called when the
        #: task leaves its CPU for another (Cpu.schedule), whether it blocked or was preempted
        self.sched_out: Callable[[], None] | None = None
        self.exec_ns = 0
        #: exec_ns when it was last picked to run (se.prev_sum_exec_runtime): its CFS slice
        #: is measured from here (tick.scheduler_tick)
        self.slice_exec_start = 0
        #: when it last left a CPU (se.exec_start as a queued task sees it): task_hot()
        self.last_ran_ns = -(1 << 62)
        self.nr_switches = 0
        self.nr_wakeups = 0
        self.nr_migrations = 0

    @property
    def is_rt(self) -> bool:
        """Scheduled by the RT class: a FIFO task, or a normal one PI-boosted to an RT prio."""
        return self.prio > 0

    def __repr__(self) -> str:
        pol = f"FIFO {self.prio}" if self.prio else "OTHER"
        return f"<Task {self.name} {pol} {self.state}>"


class IrqFrame(Context):
    """A hard-interrupt frame: runs on top of whatever the CPU was doing, never preempted by a
    task. ``irqs_off`` is true in the handler proper and false in the softirq part run on
    irq_exit (vanilla kernels), where another interrupt may nest."""

    __slots__ = ("irqs_off",)

    def __init__(self, name: str, code: Code) -> None:
        super().__init__(name, code, "hardirq")
        self.irqs_off = True


# kernel/sched/core.c sched_prio_to_weight[] for nice -20..19
_PRIO_TO_WEIGHT = (
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
)  # fmt: skip


def _nice_to_weight(nice: int) -> int:
    if not -20 <= nice <= 19:
        raise ValueError(f"nice {nice}: allowed -20..19")
    return _PRIO_TO_WEIGHT[nice + 20]
