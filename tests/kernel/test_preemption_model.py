"""Preemption models: without CONFIG_PREEMPT a task in kernel code runs on to its next explicit
preemption point, while user or guest code (and every RT kernel) is preempted at once."""

from __future__ import annotations

import pytest
from helpers import US, kernel

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
