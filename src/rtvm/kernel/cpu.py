"""One CPU: it executes one context at a time and accounts for every nanosecond.

The context on top is the innermost hard-interrupt frame if any, else the current task, else
idle. Covering a context (an interrupt arrives, a task is preempted) pauses its CPU-time request;
uncovering it resumes the remainder. Busy + idle = elapsed, per CPU, by construction: every
change of the top context first charges the time since the last change to the old top.

Preemption points: a wakeup that should preempt sets ``need_resched``. It takes effect at once
if the CPU is idle or its task is in the middle of a CPU-time request, at the next yield if the
CPU is executing that task's code right now, and on the last interrupt exit if interrupt frames
cover the task (interrupts are never preempted by tasks). On a kernel without forced
preemption (PREEMPT_NONE/VOLUNTARY) a task in kernel code is preempted only where it offers
(``COND_RESCHED``, blocking) or once it is back in user or guest mode (``Task.user_mode``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from rtvm.kernel.sched import RunQueue
from rtvm.kernel.schedstat import WakeupLatency
from rtvm.kernel.task import (
    BLOCK,
    COND_RESCHED,
    DEAD,
    RUNNING,
    SLEEPING,
    Context,
    IrqFrame,
    Task,
)
from rtvm.kernel.tick import (
    rt_dequeued,
    tick_nohz_irq_exit,
    tick_nohz_restart,
    tick_nohz_task_switch,
)

if TYPE_CHECKING:
    from rtvm.kernel.host import Kernel


class Cpu:
    """A logical CPU with its runqueue (struct rq) and per-CPU kernel state."""

    def __init__(self, kernel: Kernel, cpu_id: int) -> None:
        self.kernel = kernel
        self.sim = kernel.sim
        self.id = cpu_id
        self.curr: Task | None = None
        self.last_ran: Task | None = None
        self.irq_stack: list[IrqFrame] = []
        self.pending_irqs: deque[Any] = deque()  # raised while interrupts were off
        self.rq = RunQueue()
        self.need_resched = False
        self.stepping: Context | None = None  # the context whose code runs right now
        self.tick_running = False  # the scheduling-clock tick is armed (tick.py)
        self.tick_stopped = False  # NO_HZ_FULL: stopped on an irq exit with one task (tick.py)
        self.nohz_full = cpu_id in kernel.nohz_full
        #: a remote waker set need_resched (resched_curr) and sent the IPI that acts on it
        self.resched_requested = False
        #: the pending reschedule is lazy (PREEMPT_LAZY: a CFS task asked to preempt a CFS
        #: task): it waits for the end of a migrate-disabled section (Generation.preempt_lazy)
        self.resched_lazy = False
        #: the remote waker's request (resched_requested) was a lazy one
        self.resched_requested_lazy = False
        self.rt_time = 0  # RT throttling: RT runtime used in the current period
        self.rt_throttled = False
        # CFS balancing (host.Kernel.balance): rq->idle_stamp, rq->avg_idle (2 x migration_cost
        # at boot), the pending periodic idle balance and the domain's failed-balance count
        self.idle_stamp: int | None = None
        self.avg_idle = 2 * kernel.tunables.migration_cost_ns
        self.balance_ev: Any = None
        self.nr_balance_failed = 0
        # accounting
        self.mark = self.sim.now
        self.busy_ns = {"thread": 0, "hardirq": 0, "softirq": 0}
        self.idle_ns = 0
        self.by_name: dict[str, int] = {}
        #: per task, the interrupt time this CPU took while that task was current: how long
        #: interrupts held it off (a vCPU's guest run stretched by host interrupts, say)
        self.irq_over: dict[str, int] = {}
        self.nr_switches = 0
        self.nr_irqs = 0  # hard interrupts taken, reschedule IPIs included
        self.nr_resched_ipis = 0  # /proc/interrupts "RES": IPIs taken as interrupts
        self.nr_call_function_ipis = 0  # /proc/interrupts "CAL": NO_HZ_FULL kicks (tick.py)
        self.nr_irq_work_ipis = 0  # /proc/interrupts "IWI": a switch's NO_HZ_FULL self-kick
        self.kick_pending = False  # NO_HZ_FULL: the nohz_full_kick_work irq_work is queued
        self.nr_ticks = 0  # /proc/interrupts "LOC": local timer (tick) interrupts taken
        # per-CPU kernel state attached by other modules (softirq, napi)
        self.softirq: Any = None
        self.softnet: Any = None

    # -- accounting ------------------------------------------------------------------------
    @property
    def top(self) -> Context | None:
        return self.irq_stack[-1] if self.irq_stack else self.curr

    def account(self) -> None:
        """Charge the time since the last mark to whatever was on top."""
        now = self.sim.now
        delta = now - self.mark
        if delta <= 0:
            return
        top = self.irq_stack[-1] if self.irq_stack else self.curr
        tracer = self.kernel.tracer
        if top is None:
            self.idle_ns += delta
            if tracer is not None:
                tracer.cpu_slice(self.id, "idle", "idle", self.mark, now)
        else:
            kind = top.account_as
            self.busy_ns[kind] += delta
            self.by_name[top.name] = self.by_name.get(top.name, 0) + delta
            if top is self.curr:
                self._charge_task(top, delta)
            elif self.curr is not None:
                name = self.curr.name
                self.irq_over[name] = self.irq_over.get(name, 0) + delta
            if tracer is not None:
                tracer.cpu_slice(self.id, top.name, kind, self.mark, now)
        self.mark = now

    def _charge_task(self, t: Task, delta: int) -> None:
        t.exec_ns += delta
        if t.prio > 0:
            if self.kernel.tunables.rt_throttle_ns is not None:
                self.rt_time += delta
        else:
            t.vruntime += delta * 1024 // t.weight
            rq = self.rq
            lowest = min((c.vruntime for c in rq.cfs), default=t.vruntime)
            rq.min_vruntime = max(rq.min_vruntime, min(lowest, t.vruntime))

    @property
    def busy_total_ns(self) -> int:
        return sum(self.busy_ns.values())

    def busy_now_ns(self) -> int:
        """Busy time up to now, the running slice included, without charging it (``account``
        would: reading the CPU must not split its slices)."""
        busy = self.busy_total_ns
        if self.irq_stack or self.curr is not None:
            busy += self.sim.now - self.mark
        return busy

    # -- running contexts ------------------------------------------------------------------
    def _start(self, ctx: Context) -> None:
        """Let ``ctx`` (now on top) continue: resume its request or advance its code."""
        if ctx.remaining > 0:
            ctx.run_start = self.sim.now
            ctx.run_ev = self.sim.after(ctx.remaining, self._request_done, ctx)
        else:
            value = ctx.resume_value
            ctx.resume_value = None
            self.step(ctx, value)

    def _pause(self, ctx: Context | None) -> None:
        """``ctx`` is being covered or switched out: keep the rest of its request for later."""
        if ctx is not None and ctx.run_ev is not None:
            self.sim.cancel(ctx.run_ev)
            ctx.run_ev = None
            ctx.remaining -= self.sim.now - ctx.run_start

    def _request_done(self, ctx: Context) -> None:
        ctx.run_ev = None
        ctx.remaining = 0
        value = ctx.resume_value
        if value is not None:
            ctx.resume_value = None
        self.step(ctx, value, inline=True)

    def step(self, ctx: Context, value: Any = None, inline: bool = False) -> None:
        """Advance ``ctx``'s code until it asks for CPU time, blocks, or ends.

        ``inline``: called straight from the engine (a request just completed), so when the
        next request would end before any other event, the clock jumps over it here instead of
        going through the heap (Simulator.advance_inline; same order, same results).
        """
        code = ctx.code
        sim = self.sim
        while True:
            self.stepping = ctx
            try:
                # next() goes through the generator's tp_iternext slot; .send() is a method
                # looked up by name on every call. Almost every resume sends None.
                req = next(code) if value is None else code.send(value)
            except StopIteration:
                self.stepping = None
                self._exit(ctx)
                return
            finally:
                self.stepping = None
            value = None
            if req.__class__ is int:
                if req <= 0:
                    continue
                ctx.remaining = req
                if self._should_yield_cpu(ctx):
                    self._preempt_now()
                    return
                if inline and sim.advance_inline(sim.now + req):
                    ctx.remaining = 0
                    continue
                ctx.run_start = sim.now
                ctx.run_ev = sim.after(req, self._request_done, ctx)
                return
            if req is BLOCK:
                self._block(ctx)
                return
            if req is COND_RESCHED:
                if self._resched_here(ctx):
                    self.schedule()  # still RUNNING: requeued, resumes here later
                    return
                continue
            raise TypeError(
                f"{ctx.name} yielded {req!r}: expected an int (ns), BLOCK or COND_RESCHED"
            )

    def _resched_here(self, ctx: Context) -> bool:
        """cond_resched(): a reschedule is pending and ``ctx`` is a task that may sleep here
        (not an interrupt, not in an atomic section; for a lazy request, not migrate-disabled:
        -rt's should_resched() checks preempt_lazy_count too)."""
        if not self.need_resched or ctx is not self.curr or self.irq_stack:
            return False
        if self._lazy_held(ctx):
            return False
        return not self._atomic(ctx)

    def _lazy_held(self, t: Task) -> bool:
        """A lazy request waits while ``t`` is migrate-disabled (PREEMPT_LAZY: on 4.1-rt a
        BH-disabled section; preempt_lazy_count > 0)."""
        return self.resched_lazy and t.bh_count > 0

    def _atomic(self, t: Task) -> bool:
        """preempt_count raised: a BH-disabled section on a non-RT kernel (on RT it sleeps)."""
        return t.bh_count > 0 and not self.kernel.gen.preempt_rt

    def _should_yield_cpu(self, ctx: Context) -> bool:
        """At a preemption point: a pending interrupt or reschedule must run first?"""
        if self.pending_irqs and not (isinstance(ctx, IrqFrame) and ctx.irqs_off):
            return True
        return self.need_resched and ctx is self.curr and not self.irq_stack and self.preemptible()

    def preemptible(self) -> bool:
        """Can the current task be preempted now? On RT kernels always (spinlocks sleep),
        except that a lazy request (PREEMPT_LAZY) waits while the task is migrate-disabled:
        on 4.1-rt local_bh_disable() and rt_spin_lock() call migrate_disable(), which raises
        preempt_lazy_count, and the interrupt return path preempts kernel code for
        TIF_NEED_RESCHED_LAZY only when that count is 0. On others not inside a BH-disabled
        section (local_bh_disable raises preempt_count), and without CONFIG_PREEMPT not in
        kernel code at all, only in user or guest mode."""
        curr = self.curr
        if curr is None or curr.user_mode:
            return True
        if self._lazy_held(curr):
            return False
        return self.kernel.gen.preempt_kernel and not self._atomic(curr)

    def _preempt_now(self) -> None:
        if self.pending_irqs and not (self.irq_stack and self.irq_stack[-1].irqs_off):
            self._take_pending_irq()
        elif self.need_resched and not self.irq_stack:
            self.schedule()

    def cut_short(self, t: Task) -> bool:
        """End ``t``'s current CPU-time request now; its code resumes at once (if it is on this
        CPU's top) or when next scheduled, receiving the nanoseconds it did not run.

        This is how an event reaches code that is busy: a kick ends a vCPU's guest run (VM
        exit), an interrupt ends a halt-polling loop. Returns False if ``t`` has no request
        in progress.
        """
        if t.remaining <= 0 or self.stepping is t or t.resume_value is not None:
            return False
        if t.run_ev is not None:  # running right now
            self.account()
            self._pause(t)
            left = t.remaining
            t.remaining = 0
            self.step(t, left)
            return True
        # preempted or covered: the code gets the leftover when it next runs
        t.resume_value = t.remaining
        t.remaining = 0
        return True

    def _block(self, ctx: Context) -> None:
        if ctx is not self.curr:
            raise RuntimeError(f"{ctx.name}: only a task can block (not an interrupt frame)")
        t: Task = ctx
        t.state = SLEEPING
        self.schedule()

    def _exit(self, ctx: Context) -> None:
        if isinstance(ctx, IrqFrame):
            self.account()
            self.irq_stack.pop()
            if self.nohz_full and not self.irq_stack:
                tick_nohz_irq_exit(self)
            if self.pending_irqs and not (self.irq_stack and self.irq_stack[-1].irqs_off):
                self._take_pending_irq()
                return
            if not self.irq_stack and self.need_resched and self.preemptible():
                self.schedule()
                return
            top = self.top
            if top is not None:
                self._start(top)
            return
        t: Task = ctx  # type: ignore[assignment]
        t.state = DEAD
        self.schedule()

    # -- interrupts ------------------------------------------------------------------------
    def raise_irq(self, frame_factory: Any) -> None:
        """A device interrupt reaches this CPU. ``frame_factory()`` builds the IrqFrame."""
        top = self.irq_stack[-1] if self.irq_stack else None
        if (top is not None and top.irqs_off) or self.stepping is not None:
            self.pending_irqs.append(frame_factory)
            return
        self._enter_irq(frame_factory)

    def _take_pending_irq(self) -> None:
        self._enter_irq(self.pending_irqs.popleft())

    def _enter_irq(self, frame_factory: Any) -> None:
        self.account()
        guest_exit = self._guest_exit_hook()
        self._pause(self.top)
        # the VM exit, if the interrupt found guest code running: paid first, by the interrupt
        exit_ns = guest_exit() if guest_exit is not None else 0
        frame: IrqFrame = frame_factory()
        frame.cpu = self
        self.irq_stack.append(frame)
        self.nr_irqs += 1
        if exit_ns > 0:  # the VM exit first, then the handler (a fresh generator)
            frame.remaining = exit_ns
            self._start(frame)
        else:
            self.step(frame)

    def _guest_exit_hook(self) -> Any:
        """An interrupt that finds a vCPU thread executing guest code makes it exit the guest
        (external-interrupt exiting; the host handles the interrupt, then enters the guest
        again): the task's ``guest_exit`` hook, called once the task is paused, or None."""
        curr = self.curr
        if self.irq_stack or curr is None or not curr.user_mode or curr.run_ev is None:
            return None
        return curr.guest_exit

    # -- scheduling ------------------------------------------------------------------------
    def full_resched_pending(self) -> bool:
        """TIF_NEED_RESCHED is set for what runs here (test_tsk_need_resched): a full request,
        taken or with its IPI on the way; -rt's lazy flag does not count."""
        return (self.need_resched and not self.resched_lazy) or (
            self.resched_requested and not self.resched_requested_lazy
        )

    def resched(self, lazy: bool = False) -> None:
        """resched_curr(): switch as soon as this CPU reaches a preemption point.

        ``lazy``: resched_curr_lazy(), the fair class's request (a CFS wakeup or the tick
        preempting a CFS task). On a generation with PREEMPT_LAZY it sets
        TIF_NEED_RESCHED_LAZY, which a migrate-disabled section defers (``preemptible``); a
        full request is never downgraded by a later lazy one."""
        if lazy and self.kernel.gen.preempt_lazy:
            if self.need_resched:
                return  # test_tsk_need_resched() or test_tsk_need_resched_lazy(): set already
            self.resched_lazy = True
        else:
            self.resched_lazy = False
        self.need_resched = True
        if self.stepping is not None or self.irq_stack or not self.preemptible():
            return  # at the next yield, on the last irq exit, or at local_bh_enable
        self.account()
        self._pause(self.curr)
        self.schedule()

    def schedule(self) -> None:
        """__schedule(): put ``curr`` back if still runnable, pick the next task, switch."""
        self.account()
        k = self.kernel
        # clear_tsk_need_resched(prev): a remote waker's request went with the task it asked
        # to preempt, so an IPI that lands after this switch finds nothing to act on
        self.need_resched = False
        self.resched_requested = False
        self.resched_requested_lazy = False
        self.resched_lazy = False
        prev = self.curr
        if prev is not None:
            self._pause(prev)
            prev.last_ran_ns = self.sim.now
            if prev.state == RUNNING:
                # A preempted RT task keeps its place at the head of its priority list.
                self.rq.enqueue(prev, head=prev.prio > 0)
            elif prev.prio > 0:
                rt_dequeued(self)  # deactivate_task(): the RT runqueue is counted again
        k.balance(self, prev)
        nxt = self.rq.pick_next(not self.rt_throttled, k.tunables.wakeup_granularity_ns)
        self.curr = nxt
        if prev is not None and prev is not nxt and prev.sched_out is not None:
            prev.sched_out()  # fire_sched_out_preempt_notifiers(), in prepare_task_switch()
        if nxt is None:
            self.last_ran = None  # the idle task runs: coming back from it is a switch
            if k.tracer is not None and prev is not None:
                k.tracer.sched_switch(self.id, prev, None, self.sim.now)
            if self.pending_irqs:
                self._take_pending_irq()
            return
        nxt.cpu = self
        if nxt.woken_at >= 0:  # sched_switch after sched_wakeup: perf sched latency's delay
            lat = k.wakeup_latency.get(nxt.name)
            if lat is None:
                lat = k.wakeup_latency[nxt.name] = WakeupLatency()
            lat.record(self.sim.now - nxt.woken_at)
            nxt.woken_at = -1
        if nxt is not self.last_ran:
            # The switch itself costs CPU time, charged to the incoming task as it runs first.
            nxt.remaining += k.costs.context_switch
            nxt.nr_switches += 1
            self.nr_switches += 1
            if k.tracer is not None:
                k.tracer.sched_switch(self.id, prev, nxt, self.sim.now)
        self.last_ran = nxt
        if nxt is not prev:  # set_next_entity(), for a new pick only (FAIR_GROUP_SCHED)
            nxt.slice_exec_start = nxt.exec_ns  # prev_sum_exec_runtime
        if prev is None or not self.tick_running:
            tick_nohz_restart(self)  # tick_nohz_idle_exit(): leaving idle restarts the tick
        if nxt is not prev:
            tick_nohz_task_switch(self)  # finish_task_switch()
        if nxt.prio > 0 and self.rq.rt_prios:
            k.push_rt_tasks(self)  # post_schedule_rt(): the queued RT tasks may move away
        if self.pending_irqs:  # an interrupt raised while code ran here comes first
            self._take_pending_irq()
            return
        self._start(nxt)

    def curr_prio(self) -> int:
        """Priority of what runs here for preemption decisions: -1 idle, 0 CFS, 1..99 RT."""
        return -1 if self.curr is None else self.curr.prio

    def __repr__(self) -> str:
        return f"<Cpu {self.id} curr={self.curr} irqs={len(self.irq_stack)} rq={len(self.rq)}>"
