"""The scheduling-clock tick: CFS slices end on ticks, NO_HZ_IDLE and NO_HZ_FULL stop it, it is
an interrupt (a VM exit for a vCPU in guest mode), and FIFO tasks ignore it."""

from __future__ import annotations

import pytest
from helpers import MS, US, busy, kernel, sleep

from rtvm.engine import Simulator
from rtvm.kernel import BLOCK, SCHED_FIFO, SCHED_OTHER, Kernel
from rtvm.virt import GUEST_BLOCK, Vm


def test_a_cfs_slice_ends_on_the_first_tick_after_it_expires():
    k = kernel(switch_ns=0)
    log: list[tuple[int, str]] = []
    for name in ("a", "b"):
        k.create_task(name, busy(100 * MS, chunk_ns=10 * US, log=log, sim=k.sim), SCHED_OTHER)
    k.sim.run(until=20 * MS)
    c = k.costs
    # a's ideal slice is 3 ms (one CPU: 6 ms latency / 2 tasks); the tick at 3 ms finds it two
    # ticks' handlers short of it, so the tick at 4 ms preempts it, and b runs once that
    # tick's handler returns
    tick = c.hardirq_entry_exit + c.sched_tick
    first_b = min(t for t, n in log if n == "b")
    assert first_b == 4 * MS + tick + 10 * US
    assert max(t for t, n in log if n == "a" and t < first_b) <= 4 * MS
    assert k.cpus[0].nr_ticks == 19


def test_an_idle_cpu_takes_no_tick_and_a_busy_one_takes_one_per_jiffy():
    k = kernel(switch_ns=0)

    def napper(t):
        yield 100 * US
        yield from sleep(k, t, 10 * MS)  # NO_HZ_IDLE: idle for 10 ms, no tick
        yield 3 * MS

    k.create_task("napper", napper, SCHED_OTHER)
    k.sim.run()
    cpu = k.cpus[0]
    # busy 0-0.1 ms (no jiffy boundary), idle to 10.1 ms, busy to ~13.1 ms: ticks at 11, 12, 13
    assert cpu.nr_ticks == 3
    assert cpu.by_name["tick/0"] == 3 * (k.costs.hardirq_entry_exit + k.costs.sched_tick)
    assert not cpu.tick_running  # and the run ended: the tick stopped when the CPU idled


def test_a_nohz_full_cpu_stops_the_tick_while_one_task_runs_alone():
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    k.create_task("alone", busy(5 * MS), SCHED_OTHER, allowed={1})
    k.sim.run(until=5 * MS + 500 * US)
    # the tick restarted when the CPU left idle; the first tick's exit stopped it
    # (tick_nohz_irq_exit: one task alone)
    assert k.cpus[1].nr_ticks == 1
    # a second runnable task needs the tick again (sched_can_stop_tick(): nr_running > 1)
    k.create_task("x", busy(5 * MS), SCHED_OTHER, allowed={1})
    k.create_task("y", busy(5 * MS), SCHED_OTHER, allowed={1})
    k.sim.run(until=8 * MS + 500 * US)
    assert k.cpus[1].nr_ticks == 1 + 3  # at 6, 7 and 8 ms
    # CPU 0 keeps time for the nohz_full CPU: it ticks though it stayed idle
    assert k.cpus[0].curr is None and k.cpus[0].nr_ticks == 8


def test_a_nohz_full_cpu_leaving_a_short_idle_restarts_its_tick():
    """tick_nohz_idle_exit() restarts a stopped tick however short the idle period: a task
    that wakes on the nohz_full CPU takes the next tick (whose exit stops it again)."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})

    def a_code(t):  # 2.3 ms alone (its tick stopped after the first), then it blocks
        yield 2300 * US
        yield BLOCK

    k.create_task("A", a_code, SCHED_OTHER, allowed={1})
    b = k.create_task("B", busy(5 * MS), SCHED_OTHER, allowed={1}, start=False)
    k.sim.at(2500 * US, lambda _: k.wake_up(b))  # idle 2.3-2.5 ms: no jiffy boundary
    k.sim.run(until=2500 * US)
    before = k.cpus[1].nr_ticks
    k.sim.run(until=6500 * US)
    assert k.cpus[1].nr_ticks - before == 1


def test_a_second_task_on_a_nohz_full_cpu_kicks_it_with_an_ipi_that_restarts_the_tick():
    """add_nr_running(): nr_running going from 1 to 2 on a nohz_full CPU sends it the
    nohz_full kick (an irq_work IPI); its handler restarts the stopped tick. Going from 0 to 1,
    or 2 to 3, sends nothing; a kick already pending is not sent again."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    cpu = k.cpus[1]
    a = k.create_task("A", busy(20 * MS), SCHED_OTHER, allowed={1})  # 0 -> 1: no kick
    b = k.create_task("B", busy(5 * MS), SCHED_OTHER, allowed={1}, start=False)
    c = k.create_task("C", busy(5 * MS), SCHED_OTHER, allowed={1}, start=False)
    k.sim.run(until=2500 * US)
    assert cpu.tick_stopped and cpu.nr_call_function_ipis == 0

    def wake(_):  # from CPU 0, B then C in the IPI's flight; neither preempts A
        for t in (b, c):
            t.vruntime = a.vruntime
            k.wake_up(t, waker=k.cpus[0])

    k.sim.at(2600 * US, wake)
    k.sim.run(until=2600 * US + k.costs.ipi_cross_cpu - 1)
    assert cpu.nr_call_function_ipis == 0 and cpu.kick_pending
    k.sim.run(until=2600 * US + k.costs.ipi_cross_cpu + k.costs.hardirq_entry_exit + 1)
    assert cpu.nr_call_function_ipis == 1 and not cpu.kick_pending
    assert not cpu.tick_stopped
    ticks = cpu.nr_ticks
    k.sim.run(until=4500 * US)
    assert cpu.nr_ticks == ticks + 2  # at 3 and 4 ms
    assert cpu.by_name["IPI/call-function/1"] == k.costs.hardirq_entry_exit
    assert cpu.nr_call_function_ipis == 1


def test_an_rt_pull_onto_a_tickless_cpu_kicks_it_so_two_cfs_tasks_share_it_by_ticks():
    """pull_rt_task() -> activate_task() -> add_nr_running() kicks a nohz_full CPU too (and a
    switch with the tick stopped and a task queued kicks it, tick_nohz_task_switch). Without a
    kick there, two CFS tasks could share the CPU with its tick stopped: no slice would end."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    cpu = k.cpus[1]
    k.create_task("H", busy(100 * MS), SCHED_FIFO, 60, allowed={0})
    a = k.create_task("A", busy(100 * MS), SCHED_FIFO, 50, allowed={1})

    def r_code(t):
        yield 1 * MS
        yield BLOCK

    r = k.create_task("R", r_code, SCHED_FIFO, 40, allowed={0, 1}, start=False)
    c = k.create_task("C", busy(100 * MS), SCHED_OTHER, allowed={1}, start=False)
    k.sim.at(2500 * US, lambda _: k.wake_up(r, waker=k.cpus[0]))  # queues behind H on CPU 0
    k.sim.at(2600 * US, lambda _: k.set_scheduler(a, SCHED_OTHER))  # CPU 1 pulls R
    k.sim.at(2700 * US, lambda _: k.wake_up(c, waker=k.cpus[0]))  # nr_running 2 -> 3: no kick
    k.sim.run(until=2650 * US)
    assert cpu.curr is r and a in cpu.rq.cfs
    # the pull took nr_running from 1 (A) to 2: its kick restarted the tick, and the switch to
    # R found it running (no self-kick)
    assert cpu.nr_call_function_ipis == 1 and cpu.nr_irq_work_ipis == 0
    assert not cpu.tick_stopped
    k.sim.run(until=30 * MS)
    assert not cpu.tick_stopped
    assert a.exec_ns > 5 * MS and c.exec_ns > 5 * MS  # A and C share CPU 1 by slices


def test_an_rt_enqueue_counts_only_the_non_rt_tasks_as_already_there():
    """enqueue_rt_entity() takes the RT tasks off nr_running and adds them back with the new
    one, so add_nr_running() sees the CFS count: each RT wakeup onto a CPU with no CFS task
    kicks it (once the previous kick was handled), however many RT tasks are there."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    cpu = k.cpus[1]
    k.create_task("X", busy(100 * MS), SCHED_FIFO, 50, allowed={1})
    ys = [
        k.create_task(f"Y{i}", busy(100 * MS), SCHED_FIFO, 40 - i, allowed={1}, start=False)
        for i in range(2)
    ]
    for i, y in enumerate(ys):
        k.sim.at((2 + i) * MS + 500 * US, lambda _, y=y: k.wake_up(y, waker=k.cpus[0]))
    k.sim.run(until=4 * MS)
    assert cpu.nr_call_function_ipis == 2  # 0 CFS -> 2 and 0 CFS -> 3 tasks: both kick


def test_the_boot_cpu_cannot_be_nohz_full():
    with pytest.raises(ValueError, match="nohz_full"):
        kernel(ncpus=2, nohz_full={0})


def test_a_fifo_task_is_not_preempted_by_the_tick():
    k = kernel(switch_ns=0)
    log: list[tuple[int, str]] = []
    k.create_task("rt", busy(20 * MS, chunk_ns=1 * MS, log=log, sim=k.sim), SCHED_FIFO, 10)
    k.create_task("cfs", busy(1 * MS, log=log, sim=k.sim), SCHED_OTHER)
    k.sim.run()
    rt_end = max(t for t, n in log if n == "rt")
    assert min(t for t, n in log if n == "cfs") > rt_end
    # but it pays the ticks' handlers while it runs
    assert k.cpus[0].nr_ticks >= 20


def test_a_tick_takes_a_vcpu_in_guest_mode_out_with_an_external_interrupt_exit():
    k = Kernel(Simulator(1), 1, "4.1-rt")
    vm = Vm(k, "vm")
    v = vm.add_vcpu(SCHED_FIFO, 47, {0})
    done: list[int] = []

    def worker(gt):
        yield 3 * MS + 500 * US
        done.append(k.sim.now)
        while True:
            yield GUEST_BLOCK

    vm.guest.spawn("w", v, worker)
    k.sim.run(until=10 * MS)
    c = k.costs
    ticks = k.cpus[0].nr_ticks
    assert ticks == 3  # at 1, 2 and 3 ms; then the vCPU halts and the CPU idles
    assert vm.exits_by_reason.get("external_interrupt") == ticks
    per_tick = c.vm_exit_entry + c.hardirq_entry_exit + c.sched_tick
    assert done[0] > 3 * MS + 500 * US + ticks * per_tick - 1


def test_an_rt_task_that_blocks_beside_a_cfs_and_an_rt_task_kicks_the_cpu():
    """dequeue_rt_entity() takes the RT runqueue off nr_running and adds the rest back from
    the CFS count: with one CFS task and one RT task left, that is 1 -> 2, a kick."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    cpu = k.cpus[1]

    def x_code(t):
        yield 2 * MS + 800 * US
        yield BLOCK

    k.create_task("X", x_code, SCHED_FIFO, 50, allowed={1})
    y = k.create_task("Y", busy(10 * MS), SCHED_FIFO, 40, allowed={1}, start=False)
    c = k.create_task("C", busy(10 * MS), SCHED_OTHER, allowed={1}, start=False)
    k.sim.at(2 * MS + 100 * US, lambda _: k.wake_up(c, waker=k.cpus[0]))  # 1 -> 2: a kick
    k.sim.at(2 * MS + 300 * US, lambda _: k.wake_up(y, waker=k.cpus[0]))  # 1 CFS -> 3: a kick
    k.sim.run(until=2 * MS + 700 * US)
    assert cpu.nr_call_function_ipis == 2
    k.sim.run(until=2 * MS + 900 * US)  # X blocked at 2.8 ms: 1 CFS + 1 RT left, 1 -> 2
    assert cpu.nr_call_function_ipis == 3


def test_interrupt_time_is_counted_against_the_task_it_held_off():
    """Cpu.irq_over: the time each interrupt frame ran is also booked to the task that was
    current under it, so a run can say how long interrupts held each thread off."""
    k = kernel(switch_ns=0)
    a = k.create_task("a", busy(3 * MS + 500 * US), SCHED_OTHER)
    k.sim.run()
    cpu = k.cpus[0]
    tick = k.costs.hardirq_entry_exit + k.costs.sched_tick
    assert cpu.nr_ticks == 3
    assert cpu.irq_over == {"a": 3 * tick}
    assert a.exec_ns == 3 * MS + 500 * US  # the task's own time excludes what it lost


def test_a_pull_from_a_nohz_full_cpu_kicks_it_with_an_ipi_from_the_puller():
    """pull_rt_task() on CPU 0 dequeues a queued RT task from CPU 1: dequeue_rt_entity() adds
    CPU 1's RT runqueue back, its running FIFO task included (the kernel keeps curr on its
    runqueue), on top of the one CFS task there: 1 -> 2, a kick. CPU 0 sends it, so it lands
    one IPI flight later."""
    k = kernel(ncpus=2, switch_ns=0, nohz_full={1})
    cpu = k.cpus[1]

    def x_code(t):
        yield 3 * MS
        yield BLOCK

    k.create_task("X", x_code, SCHED_FIFO, 50, allowed={0})
    k.create_task("H", busy(100 * MS), SCHED_FIFO, 60, allowed={1})
    y = k.create_task("Y", busy(10 * MS), SCHED_FIFO, 40, allowed={1}, start=False)
    c = k.create_task("C", busy(10 * MS), SCHED_OTHER, allowed={1}, start=False)

    def wake_y(_):  # it queues behind H on CPU 1, then sched_setaffinity() widens its mask
        k.wake_up(y, waker=k.cpus[0])
        y.allowed = {0, 1}

    k.sim.at(1 * MS, lambda _: k.wake_up(c, waker=k.cpus[0]))
    k.sim.at(2 * MS, wake_y)
    k.sim.run(until=3 * MS - 1)
    assert y in cpu.rq and not cpu.kick_pending
    kicks = cpu.nr_call_function_ipis
    now = 3 * MS
    while k.cpus[0].curr is not y:  # X blocks after 3 ms of work and its ticks: CPU 0 pulls Y
        now += 100
        k.sim.run(until=now)
    assert now < 3 * MS + 20 * US
    assert cpu.kick_pending and cpu.nr_call_function_ipis == kicks
    k.sim.run(until=now + k.costs.ipi_cross_cpu - 101)
    assert cpu.nr_call_function_ipis == kicks  # still in flight
    k.sim.run(until=now + k.costs.ipi_cross_cpu + k.costs.hardirq_entry_exit + 1)
    assert cpu.nr_call_function_ipis == kicks + 1 and not cpu.kick_pending
