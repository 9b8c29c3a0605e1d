"""Interrupts, softirqs and net_rx_action: preemption rules, budgets, limits, ksoftirqd, locks."""

from __future__ import annotations

from helpers import MS, US, FakeNapi, busy, kernel

from rtvm.kernel import SCHED_FIFO, SCHED_OTHER, napi_schedule
from rtvm.kernel.irq import IrqLine
from rtvm.kernel.softirq import (
    NET_RX,
    local_bh_disable,
    local_bh_enable,
    open_softirq,
    raise_softirq,
)


def _marking_handler(k, seen, napi=None):
    def handler(cpu, ctx):
        seen.append((k.sim.now, ctx.name))
        yield 100
        if napi is not None:
            napi_schedule(cpu, napi, ctx)

    return handler


def test_vanilla_hard_irq_preempts_a_fifo_99_task():
    k = kernel(generation="vanilla", switch_ns=0)
    seen = []
    line = IrqLine(k, 40, "dev", _marking_handler(k, seen))
    k.create_task("rt99", busy(1 * MS), SCHED_FIFO, 99)
    k.sim.after(100 * US, lambda _: line.fire())
    k.sim.run()
    t, ctx = seen[0]
    assert t == 100 * US + k.costs.hardirq_entry_exit  # at once, after the entry cost
    assert ctx.startswith("hardirq/")


def test_threaded_irq_at_fifo_50_does_not_preempt_fifo_51():
    k = kernel(generation="4.1-rt", switch_ns=0)
    seen = []
    line = IrqLine(k, 40, "dev", _marking_handler(k, seen))
    k.create_task("rt51", busy(300 * US), SCHED_FIFO, 51)
    k.sim.after(100 * US, lambda _: line.fire())
    k.sim.run()
    t, ctx = seen[0]
    assert ctx == "irq/40-dev"
    assert t >= 300 * US  # only once the FIFO 51 task is done


def test_threaded_irq_at_fifo_50_preempts_fifo_49():
    k = kernel(generation="4.1-rt", switch_ns=0)
    seen = []
    line = IrqLine(k, 40, "dev", _marking_handler(k, seen))
    k.create_task("rt49", busy(300 * US), SCHED_FIFO, 49)
    k.sim.after(100 * US, lambda _: line.fire())
    k.sim.run()
    assert seen[0][0] < 102 * US


def _schedule_all(k, napis):
    """Put the NAPIs on CPU 0's poll_list and raise NET_RX from a task's BH section."""
    from rtvm.kernel.softirq import local_bh_disable, local_bh_enable

    def code(t):
        cpu = k.cpus[0]
        yield from local_bh_disable(cpu, t)
        for n in napis:
            napi_schedule(cpu, n.napi, t)
        yield from local_bh_enable(cpu, t)

    return code


def test_net_rx_action_stops_at_the_budget_and_repolls_at_the_tail():
    k = kernel(generation="6.18-rt", switch_ns=0)  # no softirq lock: one thread does it all
    napis = [FakeNapi(k, f"n{i}", backlog=64) for i in range(6)]
    order = []
    for n in napis:
        inner = n.poll

        def poll(napi, w, ctx, inner=inner):
            order.append(napi.name)
            return (yield from inner(napi, w, ctx))

        n.napi.poll = poll
    k.create_task("t", _schedule_all(k, napis), SCHED_FIFO, 50)
    k.sim.run(until=1 * MS)
    sd = k.cpus[0].softnet
    # 5 polls x 64 >= 300: the round stops after n4 (time_squeeze), then n5 (never polled) comes
    # first in the next round, followed by the repolls n0..n4, which now find nothing left.
    assert order[:5] == ["n0", "n1", "n2", "n3", "n4"]
    assert order[5] == "n5"
    assert order[6:11] == ["n0", "n1", "n2", "n3", "n4"]
    assert sd.time_squeeze == 1


def test_4_1_rt_waits_for_one_pass_of_the_holder_then_drains_the_shared_list():
    """4.1-rt's do_current_softirqs() drops the NET_RX lock between passes: an RT thread that
    blocks behind a lower thread's pass gets the lock when that pass ends (<= one NAPI weight),
    polls its own NAPI first (it arrived before the holder's repoll), then the leftovers."""
    k = kernel(generation="4.1-rt", switch_ns=0)
    heavy = FakeNapi(k, "heavy", backlog=1000, cost_per_pkt=1 * US)
    rt = FakeNapi(k, "rt", backlog=1)
    k.create_task("irq/31-heavy", _schedule_all(k, [heavy]), SCHED_OTHER, 0, {0})
    k.sim.after(
        10 * US, lambda _: k.create_task("irq/30-rt", _schedule_all(k, [rt]), SCHED_FIFO, 50, {0})
    )
    k.sim.run(until=5 * MS)
    pass_ns = k.costs.napi_poll_call + 64 * US
    ((when, by),) = rt.polled_by
    assert by == "irq/30-rt" and pass_ns <= when < pass_ns + 2 * US
    assert heavy.backlog == 0
    passes = k.net_rx_passes
    assert passes["irq/31-heavy"][2] == 64  # no pass of the holder went past one weight
    assert passes["irq/30-rt"][2] == 65  # its own packet and a weight of the heavy NAPI
    assert passes["irq/30-rt"][0] > 1  # it goes on draining the heavy NAPI at FIFO 50


def test_net_rx_action_stops_at_the_two_jiffy_time_limit():
    k = kernel(generation="6.18-rt", switch_ns=0)
    napis = [FakeNapi(k, f"slow{i}", backlog=10, cost_per_pkt=100 * US) for i in range(4)]
    k.create_task("t", _schedule_all(k, napis), SCHED_FIFO, 50)
    k.sim.run(until=10 * MS)
    sd = k.cpus[0].softnet
    # each poll takes 1 ms; with HZ=1000 the round may run until 2 jiffies from its start
    assert sd.time_squeeze >= 1
    assert all(n.backlog == 0 for n in napis)


def test_vanilla_defers_to_ksoftirqd_after_the_restart_limit():
    k = kernel(generation="vanilla", switch_ns=0)
    endless = FakeNapi(k, "flood", backlog=10**9, cost_per_pkt=50)
    line = IrqLine(k, 40, "nic", _marking_handler(k, [], endless.napi))
    k.sim.after(10 * US, lambda _: line.fire())
    k.sim.run(until=20 * MS)
    s = k.cpus[0].softirq
    assert s.restarts_exhausted >= 1
    contexts = {ctx for _, ctx in endless.polled_by}
    assert "ksoftirqd/0" in contexts and "hardirq/40-nic" in contexts
    ks = k.cpus[0].softirq.ksoftirqd
    assert ks.policy == SCHED_OTHER


def test_vanilla_softirq_on_irq_exit_preempts_an_rt_task():
    k = kernel(generation="vanilla", switch_ns=0)
    napi = FakeNapi(k, "nic", backlog=32, cost_per_pkt=1 * US)
    line = IrqLine(k, 40, "nic", _marking_handler(k, [], napi.napi))
    rt = k.create_task("vcpu-rt", busy(1 * MS), SCHED_FIFO, 47)
    k.sim.after(100 * US, lambda _: line.fire())
    k.sim.run()
    assert k.cpus[0].busy_ns["softirq"] >= 32 * US
    assert rt.exec_ns == 1 * MS
    assert napi.polled_by[0][1] == "hardirq/40-nic"


def test_bh_lock_generation_blocks_an_irq_thread_behind_any_bh_section():
    k = kernel(generation="6.1-rt", switch_ns=0)
    from rtvm.kernel.softirq import local_bh_disable, local_bh_enable

    def socket_path(t):  # e.g. spin_lock_bh() in a SCHED_OTHER task
        cpu = k.cpus[0]
        yield from local_bh_disable(cpu, t)
        yield 200 * US
        yield from local_bh_enable(cpu, t)

    seen = []
    line = IrqLine(k, 40, "rt", _marking_handler(k, seen))
    k.create_task("sockapp", socket_path, SCHED_OTHER)
    k.sim.after(50 * US, lambda _: line.fire())
    k.sim.run()
    assert seen[0][0] >= 200 * US  # waited for the whole BH section
    assert "sockapp" in k.boosted_tasks
    assert k.lock_stats["irq/40-rt"][0] == 1


def test_4_1_rt_vector_lock_does_not_block_on_unrelated_bh_sections():
    k = kernel(generation="4.1-rt", switch_ns=0)
    from rtvm.kernel.softirq import local_bh_disable, local_bh_enable

    def socket_path(t):
        cpu = k.cpus[0]
        yield from local_bh_disable(cpu, t)
        yield 200 * US
        yield from local_bh_enable(cpu, t)

    seen = []
    line = IrqLine(k, 40, "rt", _marking_handler(k, seen))
    k.create_task("sockapp", socket_path, SCHED_OTHER)
    k.sim.after(50 * US, lambda _: line.fire())
    k.sim.run()
    assert seen[0][0] < 60 * US
    assert "irq/40-rt" not in k.lock_stats


def test_6_18_rt_higher_irq_thread_preempts_a_lower_one_inside_softirq():
    k = kernel(generation="6.18-rt", switch_ns=0)
    heavy = FakeNapi(k, "heavy", backlog=64 * 20, cost_per_pkt=1 * US)
    low = IrqLine(k, 41, "heavy", _marking_handler(k, [], heavy.napi), thread_prio=10)
    seen = []
    high = IrqLine(k, 40, "rt", _marking_handler(k, seen))
    k.sim.after(10 * US, lambda _: low.fire())
    k.sim.after(100 * US, lambda _: high.fire())
    k.sim.run(until=5 * MS)
    assert seen[0][0] < 105 * US
    assert not k.lock_stats


def test_ksoftirqd_priority_by_generation():
    assert kernel(generation="4.1-rt").cpus[0].softirq.ksoftirqd.prio == 1
    assert kernel(generation="6.1-rt").cpus[0].softirq.ksoftirqd.prio == 0
    assert kernel(generation="vanilla").cpus[0].softirq.ksoftirqd.prio == 0


def test_raise_from_task_outside_bh_wakes_ksoftirqd():
    k = kernel(generation="vanilla", switch_ns=0)
    napi = FakeNapi(k, "n", backlog=10)

    def code(t):
        napi_schedule(k.cpus[0], napi.napi, t)
        yield 1 * US

    k.create_task("t", code, SCHED_OTHER)
    k.sim.run(until=1 * MS)
    assert napi.polled_by and napi.polled_by[0][1] == "ksoftirqd/0"
    assert k.cpus[0].softirq.pending & NET_RX == 0


def test_on_41_rt_an_interrupt_exit_leaves_a_thread_raised_softirq_to_the_thread():
    """4.1-rt invoke_softirq() wakes ksoftirqd only for what hard interrupts raised: a tick
    that lands while an IRQ thread is inside its BH section, with NET_RX raised by it, leaves
    NET_RX to the thread's local_bh_enable."""
    k = kernel(switch_ns=0)
    ran_by: list[str] = []

    def handler(cpu, ctx):
        ran_by.append(ctx.name)
        yield 1 * US

    open_softirq(k, NET_RX, handler)

    def irq_thread(t):
        cpu = k.cpus[0]
        yield 100 * US
        yield from local_bh_disable(cpu, t)
        raise_softirq(cpu, NET_RX, t)  # napi_schedule from the threaded handler
        yield 1500 * US  # still in the section at the 1 ms tick
        yield from local_bh_enable(cpu, t)

    k.create_task("irq/31-eth1", irq_thread, SCHED_FIFO, 50)
    ksoftirqd = k.cpus[0].softirq.ksoftirqd
    woken = ksoftirqd.nr_wakeups
    k.sim.run(until=3 * MS)
    assert k.cpus[0].nr_ticks >= 1
    assert ksoftirqd.nr_wakeups == woken
    assert ran_by == ["irq/31-eth1"]
