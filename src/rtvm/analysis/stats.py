"""Latency statistics shared by ``rtvm measure`` and the simulator (one definition).

One definition everywhere:

- Percentiles are order statistics: the p-quantile of n samples is x_(k) with k = ceil(n p)
  (the "inverted CDF" / nearest-rank definition, ``numpy.percentile(method="inverted_cdf")``).
  It is the same for raw samples and for a 1 us histogram, so a histogram from cyclictest and the
  per-request records of the rr probe give comparable numbers.
- Confidence intervals for percentiles are distribution-free order-statistic intervals: the
  number B of samples at or below the true p-quantile is Binomial(n, p), so [x_(l), x_(u)] covers
  it with probability P(l <= B < u) >= 1 - alpha (95 % by default). No resampling, no normality
  assumption; the only assumption is that samples are independent (consecutive timer latencies
  are not quite, so read the interval as a lower bound on the uncertainty). When there are too few
  samples for a bound (e.g. p99.9 of 1000 samples has no upper bound) it is ``None``.
- SD is the population standard deviation (ddof=0) of the samples.

A histogram may have overflows (samples above its range, value unknown): percentiles and bounds
that fall among them are ``None`` and the row says how many overflowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: (row key, quantile) of the percentiles every latency row carries.
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))

CI_METHOD = "order-statistics (binomial, distribution-free), 95%"


def _binom_cdf_window(n: int, p: float) -> tuple[int, np.ndarray]:
    """(k0, cdf) with cdf[i] = P(B <= k0 + i), B ~ Binomial(n, p), over a window of the mean
    +- 12 standard deviations (the mass outside is below 1e-30): exact in log space, and
    O(sqrt(n)) memory, so the statistics of a long run do not cost n floats."""
    mu, sd = n * p, math.sqrt(n * p * (1.0 - p))
    half = int(12 * sd) + 16
    k0, k1 = max(0, math.floor(mu) - half), min(n, math.ceil(mu) + half)
    k = np.arange(k0 + 1, k1 + 1, dtype=np.float64)
    # log pmf(k0) from lgamma, then log pmf(k) = log pmf(k-1) + log((n-k+1)/k) + log(p/(1-p))
    first = (
        math.lgamma(n + 1)
        - math.lgamma(k0 + 1)
        - math.lgamma(n - k0 + 1)
        + k0 * math.log(p)
        + (n - k0) * math.log1p(-p)
    )
    logpmf = np.concatenate(
        ([first], first + np.cumsum(np.log((n - k + 1) / k) + math.log(p / (1 - p))))
    )
    cdf = np.cumsum(np.exp(logpmf - logpmf.max()))
    return k0, cdf / cdf[-1]


def order_stat_ci(n: int, p: float, conf: float = 0.95) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) with P(x_(l) <= xi_p <= x_(u)) >= conf, or None where impossible."""
    if n <= 0 or not 0.0 < p < 1.0:
        return None, None
    a = (1.0 - conf) / 2.0
    # cdf(j) = P(B <= j); below the window it is ~0, above it ~1.
    # l: largest j >= 1 with cdf(j-1) <= a ; u: smallest j <= n with cdf(j-1) >= 1-a
    k0, cdf = _binom_cdf_window(n, p)
    win = cdf[: max(0, n - k0)]  # indices k0 .. n-1
    below = k0 + int(np.searchsorted(win, a, side="right"))  # how many j-1 in 0..n-1
    lo = below if below >= 1 else None
    first_hi = k0 + int(np.searchsorted(win, 1.0 - a, side="left"))
    hi = first_hi + 1 if first_hi <= n - 1 else None
    return lo, hi


def rank_of(n: int, q: float) -> int:
    """The 1-based rank of the q-quantile: ceil(n q), at least 1."""
    return max(1, math.ceil(n * q - 1e-9))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one latency distribution, in microseconds."""

    samples: int
    min_us: float | None
    mean_us: float | None
    sd_us: float | None
    max_us: float | None
    pct: dict[str, tuple[float | None, float | None, float | None]]  # name -> (value, lo, hi)
    overflows: int = 0
    lost: int = 0

    def row(self) -> dict[str, Any]:
        """Flat row fields (DESIGN.md section 7 keys)."""
        r: dict[str, Any] = {
            "samples": self.samples,
            "min_us": _r(self.min_us),
            "mean_us": _r(self.mean_us),
        }
        for name, (v, lo, hi) in self.pct.items():
            r[f"{name}_us"] = _r(v)
            r[f"{name}_lo_us"] = _r(lo)
            r[f"{name}_hi_us"] = _r(hi)
        r["max_us"] = _r(self.max_us)
        r["sd_us"] = _r(self.sd_us)
        r["overflows"] = self.overflows
        return r


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def from_samples(samples_us: Sequence[float] | np.ndarray, conf: float = 0.95) -> LatencyStats:
    """Statistics of raw samples (NaN entries are ignored: lost requests are counted elsewhere)."""
    x = np.asarray(samples_us, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return LatencyStats(
            0, None, None, None, None, {k: (None, None, None) for k, _ in PERCENTILES}
        )
    xs = np.sort(x)
    pct: dict[str, tuple[float | None, float | None, float | None]] = {}
    for name, q in PERCENTILES:
        lo_r, hi_r = order_stat_ci(n, q, conf)
        pct[name] = (
            float(xs[rank_of(n, q) - 1]),
            None if lo_r is None else float(xs[lo_r - 1]),
            None if hi_r is None else float(xs[hi_r - 1]),
        )
    return LatencyStats(
        samples=n,
        min_us=float(xs[0]),
        mean_us=float(xs.mean()),
        sd_us=float(xs.std()),
        max_us=float(xs[-1]),
        pct=pct,
    )


def from_histogram(
    counts: Mapping[int, int] | Mapping[float, int] | Sequence[tuple[float, int]],
    overflows: int = 0,
    *,
    min_us: float | None = None,
    max_us: float | None = None,
    mean_us: float | None = None,
    conf: float = 0.95,
) -> LatencyStats:
    """Statistics of a histogram {value_us: count} plus ``overflows`` samples above its range.

    ``min_us``/``max_us``/``mean_us`` are the tool's own exact figures when it has them (cyclictest
    does); they override what the histogram alone can say (it cannot see overflowed values).
    """
    items = sorted(
        (float(v), int(c)) for v, c in (counts.items() if isinstance(counts, Mapping) else counts)
    )
    items = [(v, c) for v, c in items if c > 0]
    if any(c < 0 for _, c in items) or overflows < 0:
        raise ValueError("histogram counts must be non-negative")
    values = np.array([v for v, _ in items], dtype=np.float64)
    cnt = np.array([c for _, c in items], dtype=np.int64)
    inside = int(cnt.sum())
    n = inside + int(overflows)
    if n == 0:
        return LatencyStats(
            0, None, None, None, None, {k: (None, None, None) for k, _ in PERCENTILES}
        )
    cum = np.cumsum(cnt)

    def at_rank(k: int | None) -> float | None:
        if k is None or k > inside:
            return None  # among the overflows (or no such rank): value unknown
        return float(values[int(np.searchsorted(cum, k))])

    pct: dict[str, tuple[float | None, float | None, float | None]] = {}
    for name, q in PERCENTILES:
        lo_r, hi_r = order_stat_ci(n, q, conf)
        pct[name] = (at_rank(rank_of(n, q)), at_rank(lo_r), at_rank(hi_r))
    if inside:
        h_mean = float((values * cnt).sum() / inside)
        sd = float(math.sqrt(max(0.0, float((cnt * (values - h_mean) ** 2).sum()) / inside)))
    else:
        h_mean, sd = None, None
    hmin = float(values[0]) if inside else None
    hmax = float(values[-1]) if inside and not overflows else None
    return LatencyStats(
        samples=n,
        min_us=min_us if min_us is not None else hmin,
        mean_us=mean_us if mean_us is not None else (h_mean if not overflows else None),
        sd_us=sd if not overflows else None,  # the overflowed values are unknown
        max_us=max_us if max_us is not None else hmax,
        pct=pct,
        overflows=int(overflows),
    )


def merge_histograms(hists: Sequence[Mapping[int, int]]) -> dict[int, int]:
    """Sum per-thread histograms into one."""
    out: dict[int, int] = {}
    for h in hists:
        for v, c in h.items():
            out[int(v)] = out.get(int(v), 0) + int(c)
    return out


ROW_ORDER = (
    "samples",
    "min_us",
    "mean_us",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "sd_us",
)
