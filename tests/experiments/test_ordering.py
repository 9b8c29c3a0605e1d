"""Emergent behaviour of the four methods on the testbed (scenario test, short runs).

Nothing here is wired per method: the ordering comes from who preempts whom, which lock and
list the RT frame meets, how many copies and threads its path has, and what the LLC lost.
"""

from __future__ import annotations

import pytest

from rtvm.experiments.runner import run_method
from rtvm.methods import PAPER_METHODS


@pytest.fixture(scope="module")
def rows():
    return {m: run_method(m, 1.5, seed=1).row for m in PAPER_METHODS}


def test_p99_ordering_outsourcing_exclusive_then_threaded_and_vanilla(rows):
    assert rows["outsourcing"]["p99_us"] < rows["exclusive"]["p99_us"]
    assert rows["exclusive"]["p99_us"] < min(rows["threaded"]["p99_us"], rows["vanilla"]["p99_us"])


def test_outsourcing_reaches_line_rate_with_less_cpu_than_threaded(rows):
    assert rows["outsourcing"]["heavy_gbps"] > 18.5
    assert rows["outsourcing"]["cpu_util_pct"] < rows["threaded"]["cpu_util_pct"]


def test_exclusive_squeezes_the_heavy_receivers_onto_one_cpu(rows):
    assert rows["exclusive"]["heavy_gbps"] < 0.7 * rows["vanilla"]["heavy_gbps"]
    rt_cpu = rows["exclusive"]["cpu_util_pct_by_cpu"][1]
    assert rt_cpu < 10  # the RT CPU is mostly idle


def test_every_request_is_answered(rows):
    for m, r in rows.items():
        assert r["lost"] <= 1, m  # at most one in flight at the end
