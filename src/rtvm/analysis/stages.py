"""Where a response time goes, stage by stage, and where its tail does.

The paper's probes split a response into three segments (host receive, guest, host send). The
model stamps each request at more points of its path (``rtvm.workloads.rr.PATH_PROBES``), so a
response splits into the stages between consecutive probes: NIC to host stack, vhost, VM entry,
guest NAPI, server, kick, vhost TX, wire. For each stage this gives its mean and p99 over all
requests, and its mean over the slowest requests (those at or above the run's p99 response
time): the stage whose tail mean stands furthest above its overall mean is where the tail comes
from. A stage's own p99 says less, since different requests are slow in different stages.

Pure functions of the probe columns (ns, absolute or after the request reached the NIC; -1
where a probe did not fire).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rtvm.analysis.stats import rank_of

#: a probe enters the stages if it fired for at least this share of the requests; a probe the
#: path does not pass (vhost on the outsourced path) never fires and merges its two stages
MIN_FIRED_SHARE = 0.5


def probes_fired(cols: Mapping[str, np.ndarray], probes: Sequence[str]) -> list[str]:
    """The probes, in path order, that fired for at least MIN_FIRED_SHARE of the requests."""
    out = []
    for p in probes:
        v = cols[p]
        if v.size and np.count_nonzero(v >= 0) >= MIN_FIRED_SHARE * v.size:
            out.append(p)
    return out


def _ns_between(cols: Mapping[str, np.ndarray], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Per request, ns from probe ``a`` to probe ``b``, and where both fired. Integer arrays
    of the columns' width (int32 for a finished run's ``path_ns``): a long run's stages cost
    a quarter of the memory that float64 us would, at the end of the run when it peaks."""
    x, y = cols[a], cols[b]
    return y - x, (x >= 0) & (y >= 0)


def us_between(cols: Mapping[str, np.ndarray], a: str, b: str) -> np.ndarray:
    """Per request, us from probe ``a`` to probe ``b`` as float64; NaN where either did not
    fire (the segments a run keeps)."""
    d, ok = _ns_between(cols, a, b)
    out = d / 1000.0
    out[~ok] = np.nan
    return out


def _us(ns: float) -> float:
    return round(float(ns) / 1000.0, 3)


def path_stages(
    cols: Mapping[str, np.ndarray], probes: Sequence[str], tail_q: float = 0.99
) -> list[dict[str, Any]]:
    """One summary per stage between consecutive fired probes, in path order.

    ``cols``: the probe columns of the completed requests (the first and last probe must be the
    response's ends); ``tail_q``: the tail is the requests whose response time is at or above
    this quantile (the p99 the run reports, same rank definition as ``analysis.stats``). Each
    summary: ``from``, ``to``, ``samples``, ``mean_us``, ``p50_us``, ``p99_us``, ``max_us`` over
    all requests where both probes fired; ``tail_mean_us`` over the tail; ``share_of_mean``
    (the stage's mean over the mean response time) and ``share_of_tail_excess`` (the stage's
    tail mean above its mean, over the tail's mean response time above the overall mean)."""
    fired = probes_fired(cols, probes)
    first, last = probes[0], probes[-1]
    if len(fired) < 2 or fired[0] != first or fired[-1] != last:
        return []
    latency, done = _ns_between(cols, first, last)
    n = int(np.count_nonzero(done))
    if n == 0:
        return []
    ordered = latency[done]
    ordered.sort()
    cutoff = ordered[rank_of(n, tail_q) - 1]
    mean_all = float(ordered.mean())
    del ordered
    tail = done & (latency >= cutoff)
    excess = float(latency[tail].mean()) - mean_all
    out: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(fired):
        d, ok = _ns_between(cols, a, b)
        vals = d[ok]
        vals.sort()
        m = int(vals.size)
        in_tail = d[tail & ok]
        mean = float(vals.mean()) if m else None
        tail_mean = float(in_tail.mean()) if in_tail.size else None
        out.append(
            {
                "from": a,
                "to": b,
                "samples": m,
                "mean_us": None if mean is None else _us(mean),
                "p50_us": _us(vals[rank_of(m, 0.50) - 1]) if m else None,
                "p99_us": _us(vals[rank_of(m, 0.99) - 1]) if m else None,
                "max_us": _us(vals[-1]) if m else None,
                "tail_mean_us": None if tail_mean is None else _us(tail_mean),
                "share_of_mean": (
                    None if mean is None or mean_all <= 0 else round(mean / mean_all, 4)
                ),
                "share_of_tail_excess": (
                    None
                    if tail_mean is None or mean is None or excess <= 0
                    else round((tail_mean - mean) / excess, 4)
                ),
            }
        )
        del d, ok, vals
    return out
