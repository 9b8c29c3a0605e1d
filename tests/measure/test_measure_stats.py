"""Statistics: order-statistic percentiles and confidence intervals, samples vs histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtvm.analysis import stats


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=400))
def test_percentiles_match_numpy_inverted_cdf(xs):
    s = stats.from_samples(xs)
    a = np.asarray(xs)
    for name, q in stats.PERCENTILES:
        v, lo, hi = s.pct[name]
        assert v == pytest.approx(np.percentile(a, q * 100, method="inverted_cdf"))
        assert lo is None or lo <= v
        assert hi is None or hi >= v
    assert s.min_us == min(xs) and s.max_us == max(xs)
    assert s.sd_us == pytest.approx(float(np.std(a)), abs=1e-6)


@given(st.dictionaries(st.integers(0, 300), st.integers(1, 50), min_size=1, max_size=60))
def test_histogram_equals_expanded_samples(hist):
    samples = [v for v, c in hist.items() for _ in range(c)]
    h = stats.from_histogram(hist).row()
    s = stats.from_samples(samples).row()
    for k in h:
        if isinstance(h[k], float):
            assert h[k] == pytest.approx(s[k], abs=1e-3), k
        else:
            assert h[k] == s[k], k


def test_order_stat_ci_known_values_and_coverage():
    # median of 3000: the classic normal-approximation ranks are 1500 -/+ 1.96*sqrt(750)
    lo, hi = stats.order_stat_ci(3000, 0.5)
    assert (
        abs(lo - (1500 - 1.96 * math.sqrt(750))) <= 2
        and abs(hi - (1500 + 1.96 * math.sqrt(750))) <= 3
    )
    # too few samples for an upper bound on p99.9
    assert stats.order_stat_ci(1000, 0.999)[1] is None
    # empirical coverage of the p99 interval on exponential samples is at least about 95 %
    rng = np.random.default_rng(7)
    true = -math.log(0.01)
    hits = 0
    for _ in range(400):
        x = np.sort(rng.exponential(size=2000))
        lo, hi = stats.order_stat_ci(2000, 0.99)
        hits += x[lo - 1] <= true <= x[hi - 1]
    assert hits / 400 >= 0.92
    # at 2 M samples the exact ranks agree with the normal approximation
    exact = stats.order_stat_ci(2_000_000, 0.999)
    assert exact[0] is not None and abs(exact[0] - (1_998_000 - 1.96 * math.sqrt(1998))) < 3


def test_overflows_make_high_percentiles_unknown():
    s = stats.from_histogram({10: 90}, overflows=10, max_us=5000.0)
    assert s.pct["p50"][0] == 10.0
    assert s.pct["p99"][0] is None and s.sd_us is None
    assert s.samples == 100 and s.overflows == 10 and s.max_us == 5000.0


def test_empty_and_nan():
    assert stats.from_samples([]).samples == 0
    s = stats.from_samples([1.0, float("nan"), 3.0])
    assert s.samples == 2 and s.max_us == 3.0
    assert stats.from_histogram({}).row()["p99_us"] is None


def _ci_by_brute_force(n: int, p: float, conf: float = 0.95) -> tuple[int | None, int | None]:
    """The definition, with the binomial CDF summed term by term (math.comb, exact ints)."""
    a = (1.0 - conf) / 2.0
    cdf, acc = [], 0.0
    for j in range(n + 1):
        acc += math.comb(n, j) * p**j * (1 - p) ** (n - j)
        cdf.append(acc)
    lows = [j for j in range(1, n + 1) if cdf[j - 1] <= a]
    highs = [j for j in range(1, n + 1) if cdf[j - 1] >= 1 - a]
    return (lows[-1] if lows else None), (highs[0] if highs else None)


@given(st.integers(1, 400), st.sampled_from([0.01, 0.1, 0.5, 0.9, 0.99, 0.999]))
def test_order_stat_ci_window_equals_the_definition(n, p):
    """The CI ranks come from a window of the binomial around n p (O(sqrt n) memory): they
    must equal the ranks of the full, term-by-term CDF."""
    assert stats.order_stat_ci(n, p) == _ci_by_brute_force(n, p)
