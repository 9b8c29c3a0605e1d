"""Wakeup latency per thread (perf sched latency): the histogram, and what the kernel records."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import MS, US, busy, kernel
from hypothesis import given, settings
from hypothesis import strategies as st

from rtvm.kernel import BLOCK, SCHED_FIFO, SCHED_OTHER
from rtvm.kernel.schedstat import WakeupLatency


def test_an_empty_record_says_nothing_waited():
    assert WakeupLatency().summary() == {"wakeups": 0, "mean_us": 0.0, "p99_us": 0.0, "max_us": 0.0}


def test_count_mean_and_max_are_exact():
    lat = WakeupLatency()
    for ns in (500, 1_500, 40_250):
        lat.record(ns)
    assert lat.summary() == {"wakeups": 3, "mean_us": 14.08, "p99_us": 40.25, "max_us": 40.25}


@pytest.mark.parametrize("ns", [0, 999, 1_000, 999_999, 1_000_000, 1_004_999, 9_999_999])
def test_a_single_delay_reads_back_as_itself(ns):
    lat = WakeupLatency()
    lat.record(ns)
    assert lat.quantile_ns(0.99) == ns  # the bin's edge is capped by the exact maximum


def test_delays_beyond_the_histogram_keep_their_exact_maximum():
    lat = WakeupLatency()
    for _ in range(99):
        lat.record(2 * US)
    lat.record(25 * MS)
    assert lat.quantile_ns(0.99) == 3 * US  # 99 of 100 are in the 2-3 us bin
    assert lat.quantile_ns(1.0) == lat.max_ns == 25 * MS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12 * MS), min_size=1, max_size=400))
def test_the_p99_is_never_below_the_exact_one_and_at_most_a_bin_above(delays):
    lat = WakeupLatency()
    for ns in delays:
        lat.record(ns)
    exact = float(np.percentile(delays, 99, method="inverted_cdf"))
    got = lat.quantile_ns(0.99)
    width = 1 * US if exact < 1 * MS else 10 * US
    assert exact <= got <= max(exact + width, 0) or got == max(delays)
    assert got <= max(delays)


def test_a_cfs_thread_woken_behind_a_fifo_one_records_the_wait():
    k = kernel(switch_ns=0)
    k.create_task("rt", busy(50 * US), SCHED_FIFO, 10)

    def woken(t):  # created asleep: its code starts at its first wakeup
        yield 1 * US

    cfs = k.create_task("cfs", woken, SCHED_OTHER, start=False)
    k.sim.after(10 * US, lambda _: k.wake_up(cfs))  # the FIFO task runs until 50 us
    k.sim.run()
    assert k.wakeup_latency["cfs"].summary() == {
        "wakeups": 1, "mean_us": 40.0, "p99_us": 40.0, "max_us": 40.0,
    }  # fmt: skip


def test_a_thread_woken_on_an_idle_cpu_waits_nothing_and_each_wakeup_counts_once():
    k = kernel(switch_ns=0)

    def sleeper(t):
        for _ in range(3):
            yield 5 * US
            yield BLOCK

    t = k.create_task("t", sleeper, SCHED_OTHER, start=False)
    for at in (10 * US, 100 * US, 200 * US):
        k.sim.after(at, lambda _: k.wake_up(t))
    k.sim.run()
    s = k.wakeup_latency["t"].summary()
    assert s["wakeups"] == 3 and s["max_us"] == 0.0


def test_a_preempted_thread_that_runs_again_is_not_a_second_wakeup():
    k = kernel(switch_ns=0)

    def woken(t):
        yield 30 * US

    cfs = k.create_task("cfs", woken, SCHED_OTHER, start=False)
    k.sim.after(10 * US, lambda _: k.wake_up(cfs))
    k.sim.after(15 * US, lambda _: k.create_task("rt", busy(10 * US), SCHED_FIFO, 10))
    k.sim.run()
    assert k.wakeup_latency["cfs"].summary()["wakeups"] == 1
    assert k.wakeup_latency["cfs"].max_ns == 0
    assert k.wakeup_latency["rt"].max_ns == 0  # a FIFO wakeup preempts at once
