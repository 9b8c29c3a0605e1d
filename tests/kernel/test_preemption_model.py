"""Preemption models: without CONFIG_PREEMPT a task in kernel code runs on to its next explicit
preemption point, while user or guest code (and every RT kernel) is preempted at once."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import MS, US, kernel

from rtvm.kernel import SCHED_FIFO, SCHED_OTHER
from rtvm.kernel.host import GENERATIONS
from rtvm.kernel.task import COND_RESCHED


def kthread(work_ns: int, chunk_ns: int, log: list, sim, user_mode: bool = False):
    """A CFS kernel thread doing ``work_ns`` in chunks, offering cond_resched() after each
    ``work_ns`` block (like vhost_worker between works)."""

    def code(t):
        t.user_mode = user_mode
        for _ in range(3):
            left = work_ns
            while left > 0:
                yield chunk_ns
                left -= chunk_ns
            log.append((sim.now, t.name))
            yield COND_RESCHED

    return code


def rt_first_run(generation: str, user_mode: bool = False) -> int:
    """When does a FIFO task woken at 105 us get the CPU from a CFS kthread busy in 100 us
    blocks of kernel code (preemption points at 100, 200, 300 us)?"""
    k = kernel(generation=generation, switch_ns=0)
    log: list = []
    k.create_task("kthread", kthread(100 * US, 10 * US, log, k.sim, user_mode), SCHED_OTHER)
    started: list[int] = []

    def rt(t):
        started.append(k.sim.now)
        yield 5 * US

    k.sim.after(105 * US, lambda _: k.create_task("rt", rt, SCHED_FIFO, 48))
    k.sim.run()
    return started[0]


def test_vanilla_kernel_code_runs_to_its_next_preemption_point():
    # PREEMPT_NONE: the FIFO task waits for the kthread's cond_resched() at 200 us
    assert rt_first_run("vanilla") == 200 * US


@pytest.mark.parametrize("generation", ["vanilla-preempt", "4.1-rt", "6.1-rt"])
def test_preemptible_kernels_switch_at_once(generation):
    assert rt_first_run(generation) == 105 * US


def test_user_or_guest_code_is_preempted_at_once_even_without_kernel_preemption():
    assert rt_first_run("vanilla", user_mode=True) == 105 * US


def test_cond_resched_without_a_pending_reschedule_costs_nothing():
    k = kernel(generation="vanilla", switch_ns=0)
    log: list = []
    t = k.create_task("kthread", kthread(100 * US, 10 * US, log, k.sim), SCHED_OTHER)
    k.sim.run()
    assert [when for when, _ in log] == [100 * US, 200 * US, 300 * US]
    assert t.nr_switches == 1  # switched in once, never out until it ended


def test_the_paper_kernels_preemption_models():
    assert not GENERATIONS["vanilla"].preempt_kernel  # Kconfig default PREEMPT_NONE
    assert GENERATIONS["vanilla-preempt"].preempt_kernel
    assert all(g.preempt_kernel for g in GENERATIONS.values() if g.preempt_rt)


# -- PREEMPT_LAZY (the -rt patch "sched: Add support for lazy preemption") ------------------
def bh_section_thread(log: list, sim, lead_ns: int = 2 * MS):
    """A CFS kernel thread: ``lead_ns`` of plain kernel code (so that a fresh sleeper lags it by
    more than the wakeup granularity), then 100 us inside local_bh_disable() (on -rt:
    migrate_disable(), preempt_lazy_count raised), then 100 us more."""

    def code(t):
        yield lead_ns
        t.bh_count += 1
        for _ in range(10):
            yield 10 * US
        t.bh_count -= 1
        log.append(("bh_enable", sim.now))
        for _ in range(10):
            yield 10 * US

    return code


def first_run_of_woken(
    generation: str, lazy: bool | None = None, policy: str = SCHED_OTHER
) -> tuple[int, int]:
    """When does a task woken at 2.05 ms, inside the kthread's BH section, first run, and when
    did the section end (the ticks' interrupts stretch it a little past 2.1 ms)?"""
    k = kernel(generation=generation, switch_ns=0)
    if lazy is not None:
        k.gen = replace(k.gen, preempt_lazy=lazy)
    log: list = []
    k.create_task("kthread", bh_section_thread(log, k.sim), SCHED_OTHER)
    started: list[int] = []

    def woken(t):
        started.append(k.sim.now)
        yield 5 * US

    prio = 48 if policy == SCHED_FIFO else 0
    k.sim.after(2050 * US, lambda _: k.create_task("woken", woken, policy, prio))
    k.sim.run()
    [(_, bh_enable)] = log
    return started[0], bh_enable


def test_rt_kernels_with_the_lazy_patch():
    assert all(GENERATIONS[g].preempt_lazy for g in ("4.1-rt", "5.15-rt", "6.1-rt"))
    # vanilla has no lazy preemption; mainline's (6.13+, under 6.18-rt) is not modelled
    assert not any(GENERATIONS[g].preempt_lazy for g in ("vanilla", "vanilla-preempt", "6.18-rt"))


def test_a_cfs_wakeup_waits_for_the_end_of_a_migrate_disabled_section_on_4_1_rt():
    # check_preempt_wakeup() asks lazily; preempt_lazy_count holds it back until the
    # section ends, and the thread's next preemption point acts on it
    started, bh_enable = first_run_of_woken("4.1-rt")
    assert bh_enable >= 2100 * US and started == bh_enable


def test_without_lazy_preemption_the_cfs_wakeup_preempts_inside_the_section():
    started, bh_enable = first_run_of_woken("4.1-rt", lazy=False)
    assert started == 2050 * US and bh_enable > started


def test_an_rt_wakeup_is_never_lazy():
    started, bh_enable = first_run_of_woken("4.1-rt", policy=SCHED_FIFO)
    assert started == 2050 * US and bh_enable > started


def test_a_full_request_overrides_a_pending_lazy_one():
    k = kernel(generation="4.1-rt")
    cpu = k.cpus[0]
    cpu.need_resched, cpu.resched_lazy = True, True
    cpu.stepping = object()  # in the middle of code: the flags are all that changes
    cpu.resched(lazy=True)
    assert cpu.resched_lazy  # a second lazy request changes nothing
    cpu.resched()
    assert cpu.need_resched and not cpu.resched_lazy


def test_a_remote_full_request_still_sends_its_ipi_when_a_lazy_one_is_pending():
    k = kernel(ncpus=2, generation="4.1-rt")
    target, waker = k.cpus
    sent: list = []
    k.smp_send_reschedule = sent.append  # type: ignore[method-assign]
    k.resched_curr(target, waker, lazy=True)
    k.resched_curr(target, waker, lazy=True)
    assert sent == [target] and target.resched_requested_lazy
    k.resched_curr(target, waker)  # carried by the IPI already on its way
    assert sent == [target] and not target.resched_requested_lazy
    target.resched_requested = False
    target.need_resched, target.resched_lazy = True, True  # acted on, but held back
    k.resched_curr(target, waker)
    assert sent == [target, target] and not target.resched_requested_lazy


def test_a_remote_cfs_wakeup_is_lazy_too():
    """The waker on CPU 1 sends the IPI; CPU 0's handler acts on the request as the lazy one
    it is, so the woken thread still waits for the end of the section."""
    k = kernel(ncpus=2, generation="4.1-rt", switch_ns=0)
    log: list = []
    k.create_task("kthread", bh_section_thread(log, k.sim, lead_ns=3 * MS), allowed={0})
    started: list[int] = []

    def woken(t):
        started.append(k.sim.now)
        yield 5 * US

    t = k.create_task("woken", woken, allowed={0}, start=False)
    k.sim.after(3050 * US, lambda _: k.wake_up(t, waker=k.cpus[1]))
    k.sim.run()
    [(_, bh_enable)] = log
    assert k.cpus[0].nr_resched_ipis == 1
    assert bh_enable >= 3100 * US and started == [bh_enable]


def long_bh_section(log: list, sim):
    def code(t):
        t.bh_count += 1
        for _ in range(2000):  # 20 ms
            yield 10 * US
        t.bh_count -= 1
        log.append(("bh_enable", sim.now))
        yield 10 * US

    return code


@pytest.mark.parametrize("lazy", [True, False])
def test_the_ticks_slice_end_is_lazy(lazy):
    """Two CFS threads: the tick ends the first one's 3 ms slice, lazily on 4.1-rt, so a thread
    inside a 20 ms BH section keeps the CPU to its end; without lazy preemption it does not."""
    k = kernel(generation="4.1-rt", switch_ns=0)
    k.gen = replace(k.gen, preempt_lazy=lazy)
    log: list = []
    k.create_task("bh", long_bh_section(log, k.sim))
    started: list[int] = []

    def other(t):
        started.append(k.sim.now)
        yield 5 * US

    k.create_task("other", other)
    k.sim.run()
    [(_, bh_enable)] = log
    if lazy:
        assert started == [bh_enable]
    else:
        assert 3 * MS < started[0] <= 5 * MS < bh_enable
