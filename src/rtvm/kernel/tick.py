"""The scheduling-clock tick: a hard interrupt every jiffy on each busy CPU.

kernel/time/tick-sched.c and kernel/sched/core.c, fair.c (Linux 4.1):

- The local timer interrupt runs tick_sched_timer -> update_process_times -> scheduler_tick.
  Every CPU's tick falls on the same jiffy boundaries (sched_skew_tick is off by default).
- NO_HZ_IDLE: a CPU that goes idle stops its tick (tick_nohz_idle_enter) and restarts it on
  the next jiffy boundary once it runs a task again. An interrupt on an idle CPU does not
  restart it.
- NO_HZ_FULL (``nohz_full`` CPUs; never CPU 0, which keeps time): an interrupt exit that finds
  one task alone on a nohz_full CPU stops the tick (tick_nohz_irq_exit ->
  sched_can_stop_tick(): nr_running <= 1), the tick's own exit included, so a lone task takes
  at most one tick after it starts. Whenever an enqueue takes a nohz_full CPU's nr_running
  from below 2 to 2 or more, add_nr_running() kicks it (tick_nohz_full_kick_cpu ->
  irq_work_queue_on: an IPI, to the CPU itself too), whether or not its tick is stopped: a
  wakeup, an RT push or pull, a priority change's requeue (rt_mutex_setprio and
  sched_setscheduler dequeue and enqueue the task, curr included); an RT enqueue counts only
  the CPU's non-RT tasks as already there. A task switch with the tick stopped and a task
  queued kicks too (tick_nohz_task_switch). The kick's handler (__tick_nohz_full_check)
  restarts a stopped tick if the CPU still has more than one task. While any CPU is
  nohz_full, the timekeeping CPU 0 keeps its tick even when idle (can_stop_idle_tick():
  tick_do_timer_cpu), so such a kernel never runs out of events: run it with an end time.
- It is an interrupt like any other: a vCPU thread in guest mode exits for it
  (external-interrupt exiting, Cpu._enter_irq), and a vanilla kernel runs pending softirqs on
  its irq_exit.
- scheduler_tick -> task_tick_fair -> check_preempt_tick, with more than one CFS task on the
  CPU: the running CFS task is preempted (resched_curr) once it has run more than its ideal
  slice since it was last picked (sum_exec_runtime - prev_sum_exec_runtime > sched_slice), or,
  after min_granularity, once it is ahead of the leftmost queued task's vruntime by more than
  that slice. So a CFS slice ends on a tick, not at the exact nanosecond it expires.

Left out: the timer wheel (TIMER_SOFTIRQ; the model has no kernel timers to expire), RCU
callbacks, the busy CPU's periodic load balance (sched.py), the guest kernel's own tick, and on
NO_HZ_FULL the 1 Hz residual tick (scheduler_tick_max_deferment).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from rtvm.kernel.irq import system_vector_frame
from rtvm.kernel.sched import cfs_slice
from rtvm.kernel.task import IrqFrame, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu


def tick_nohz_restart(cpu: Cpu) -> None:
    """A CPU leaves idle to run a task (tick_nohz_idle_exit): its tick, stopped while it was
    idle (or, on a nohz_full CPU, before it), fires again from the next jiffy, however short
    the idle period was."""
    cpu.tick_stopped = False
    if cpu.tick_running:
        return
    cpu.tick_running = True
    jiffy = cpu.kernel.jiffy_ns
    cpu.sim.at((cpu.sim.now // jiffy + 1) * jiffy, _tick_sched_timer, cpu)


def tick_nohz_irq_exit(cpu: Cpu) -> None:
    """The last interrupt frame leaves a nohz_full CPU: with one task alone there, the tick
    stops (tick_nohz_full_stop_tick)."""
    if cpu.curr is not None and len(cpu.rq) == 0:
        cpu.tick_stopped = True


def nr_running_change(cpu: Cpu, t: Task, in_schedule: bool = False) -> tuple[int, int]:
    """What add_nr_running() sees when ``t`` is enqueued on ``cpu`` (``t`` not yet counted):
    (previous count, new count). For a CFS task, every other task there (curr included), then
    one more. For an RT task the previous count is only the non-RT tasks, since
    enqueue_rt_entity() first takes the whole RT runqueue off nr_running (dequeue_rt_stack ->
    dequeue_top_rt_rq) and adds it back with the new task (enqueue_top_rt_rq). Inside
    schedule() (``in_schedule``) curr is the previous task, already back on the runqueue or
    off it, so it is not counted apart."""
    curr = None if in_schedule else cpu.curr
    other_curr = curr is not None and curr is not t
    total = int(other_curr) + len(cpu.rq)
    if t.prio > 0:
        cfs = int(other_curr and curr.prio == 0) + len(cpu.rq.cfs)  # type: ignore[union-attr]
        return cfs, total + 1
    return total, total + 1


def add_nr_running(
    cpu: Cpu, change: tuple[int, int], waker: Cpu | None, defer: bool = False
) -> None:
    """add_nr_running(): a task was enqueued on ``cpu``, taking nr_running from ``change[0]``
    to ``change[1]`` (nr_running_change). Going from below 2 to 2 or more on a nohz_full CPU
    kicks it (tick_nohz_full_kick_cpu -> irq_work_queue_on: the CALL_FUNCTION_SINGLE IPI, to
    the CPU itself too), whether or not its tick is stopped. It lands ``ipi_cross_cpu`` later
    from a remote ``waker``, at once from a local one (``waker`` None counts as local, as in
    Kernel._check_preempt), or, with ``defer``, when the CPU next takes its pending
    interrupts (an enqueue inside schedule(): a pull)."""
    before, after = change
    if before < 2 <= after and cpu.nohz_full:
        _kick(cpu, "call-function", waker, defer)


def rt_dequeued(cpu: Cpu, by: Cpu | None = None) -> None:
    """An RT task left ``cpu``'s runqueue (it blocked, or moved away): dequeue_rt_entity()
    takes the RT runqueue off nr_running and adds what is left back (enqueue_top_rt_rq ->
    add_nr_running), from the CFS count up. Called with the task gone from ``cpu.rq``.

    ``by`` None: ``cpu``'s own schedule() deactivated its previous task, which is still
    ``cpu.curr`` but no longer counted; the kick comes with its pending interrupts. Otherwise
    ``by`` is the CPU that moved a queued task away (a push from the waker's CPU, a pull from
    another one): what runs on ``cpu`` is still on its runqueue and counts, and the kick is an
    IPI from ``by``."""
    rt_left = len(cpu.rq) - len(cpu.rq.cfs)
    cfs = len(cpu.rq.cfs)
    curr = cpu.curr
    if by is not None and curr is not None:
        if curr.prio > 0:
            rt_left += 1
        else:
            cfs += 1
    if rt_left:
        add_nr_running(cpu, (cfs, cfs + rt_left), by if by is not None else cpu, defer=True)


def tick_nohz_task_switch(cpu: Cpu) -> None:
    """finish_task_switch() -> tick_nohz_task_switch(): a nohz_full CPU that switches tasks
    with its tick stopped and another task queued kicks itself (tick_nohz_full_kick:
    irq_work_queue, the IRQ_WORK self-IPI), taken once the switch is done. It catches a
    second task that arrived without a kick of its own (an RT pull inside schedule())."""
    if cpu.tick_stopped and cpu.rq and cpu.nohz_full:
        _kick(cpu, "irq-work", None, True)


def _kick(cpu: Cpu, vector: str, sender: Cpu | None, defer: bool) -> None:
    """Queue the CPU's nohz_full_kick_work irq_work and send its IPI. irq_work_claim()
    queues it only if it is not already pending: one kick in flight at a time."""
    if cpu.kick_pending:
        return
    cpu.kick_pending = True
    factory = functools.partial(_kick_interrupt, cpu, vector)
    if sender is not None and sender is not cpu:
        cpu.sim.after(cpu.kernel.costs.ipi_cross_cpu, cpu.raise_irq, factory)
    elif defer:
        cpu.pending_irqs.append(factory)
    else:
        cpu.raise_irq(factory)


def _kick_interrupt(cpu: Cpu, vector: str) -> IrqFrame:
    """smp_call_function_single_interrupt (CAL) or smp_irq_work_interrupt (IWI) ->
    irq_work_run -> nohz_full_kick_work_func. Its cost is a system vector's entry and exit
    (hardirq_entry_exit, as for a reschedule IPI); the check itself, and a restart's hrtimer
    reprogramming, are not costed apart. On PREEMPT_RT the kick work is flagged
    IRQ_WORK_HARD_IRQ and runs here too."""
    if vector == "irq-work":
        cpu.nr_irq_work_ipis += 1
    else:
        cpu.nr_call_function_ipis += 1
    cost = cpu.kernel.costs.hardirq_entry_exit
    return system_vector_frame(cpu, f"IPI/{vector}/{cpu.id}", cost, _tick_nohz_full_check)


def _tick_nohz_full_check(cpu: Cpu) -> None:
    """__tick_nohz_full_check(): irq_work_run() cleared the work's pending flag first; a
    stopped tick restarts (from the next jiffy: the sched_timer is forwarded past now) if
    the CPU cannot stop it, i.e. runs a task with another one queued."""
    cpu.kick_pending = False
    if cpu.tick_stopped and cpu.curr is not None and len(cpu.rq) > 0:
        cpu.tick_stopped = False


def _tick_sched_timer(cpu: Cpu) -> int | None:
    """The per-CPU tick hrtimer expires: raise the local timer interrupt unless the tick is
    stopped; stay armed (HRTIMER_RESTART, one jiffy on) while the CPU is busy."""
    if cpu.curr is None:
        if cpu.id == 0 and cpu.kernel.nohz_full:
            cpu.raise_irq(functools.partial(_local_timer_interrupt, cpu))  # it keeps time
            return cpu.kernel.jiffy_ns
        cpu.tick_running = False  # tick_nohz_idle_enter() stopped the tick
        return None
    if cpu.tick_stopped:
        return cpu.kernel.jiffy_ns  # NO_HZ_FULL: stopped until a kick or idle exit restarts it
    cpu.raise_irq(functools.partial(_local_timer_interrupt, cpu))
    return cpu.kernel.jiffy_ns


def _local_timer_interrupt(cpu: Cpu) -> IrqFrame:
    """local_apic_timer_interrupt -> tick_sched_timer -> update_process_times."""
    cpu.nr_ticks += 1
    costs = cpu.kernel.costs
    cost = costs.hardirq_entry_exit + costs.sched_tick
    return system_vector_frame(cpu, f"tick/{cpu.id}", cost, scheduler_tick)


def scheduler_tick(cpu: Cpu) -> None:
    """task_tick_fair() -> check_preempt_tick() for the running CFS task (an RT task, or a
    CFS task PI-boosted into the RT class, is left alone: FIFO has no time slice)."""
    curr = cpu.curr
    rq = cpu.rq
    if curr is None or curr.prio != 0 or not rq.cfs:
        return
    cpu.account()  # update_curr()
    tun = cpu.kernel.tunables
    ideal = cfs_slice(tun, curr, rq)
    ran = curr.exec_ns - curr.slice_exec_start
    if ran > ideal:
        cpu.resched(lazy=True)
        return
    if ran < tun.min_granularity_ns:
        return
    leftmost = min(t.vruntime for t in rq.cfs)
    if curr.vruntime - leftmost > ideal:
        cpu.resched(lazy=True)
