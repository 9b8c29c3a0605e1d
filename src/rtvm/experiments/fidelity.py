"""The fidelity bars of simple-rt (DESIGN.md section 8, issue 6), checked against a run.

Each bar compares the model's rows with the published ones and says by how much it is off and
whether that is within the bar. Nothing here feeds back into a run: the verdicts are computed
from the figures a run printed, so that a reader sees at a glance which cells the model reaches
and which it misses, and across seeds how often.

The bars:
- per method: mean and p99 within 15 % of the published value, SD within a factor 1.5, heavy
  throughput within 5 %;
- the order of the methods by p99 and by SD the same as published;
- outsourcing's CPU utilisation about 32 % below threaded's (within 10 points); threaded's
  above vanilla's; the exclusive method's RT CPU mostly idle (busy below 10 %).

A verdict is taken on the deviation as stored and shown (a fraction to 4 decimals, a factor to
3, points to 2), so that a printed -15.0 % is never "missed" by a float's last bits; near a
bar's edge the figure is printed with one more decimal. An order is exact: the methods sorted
by the model's figure must come in the published order (the published SDs of threaded and
vanilla, 29.0 and 29.2 us, are ordered too); a method that ran without the figure fails it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rtvm.experiments.published import CPU_SAVING_OUTSOURCING_VS_THREADED

#: relative bars per method: (row key, largest |model - published| / published)
RELATIVE_BARS: tuple[tuple[str, float], ...] = (("mean_us", 0.15), ("p99_us", 0.15))
SD_FACTOR = 1.5
THROUGHPUT_REL = 0.05
CPU_SAVING_POINTS = 10.0
RT_CPU_IDLE_BUSY_PCT = 10.0


@dataclass(frozen=True)
class BarCheck:
    """One bar on one run: what the model gave, what was published, how far, and the verdict.

    ``kind`` says how ``deviation`` and ``limit`` read: ``relative`` (signed fraction of the
    published value), ``factor`` (model / published, bar on max(f, 1/f)), ``points``
    (percentage points), ``order`` and ``relation`` (no number: ``met`` says it).
    """

    bar: str
    method: str | None
    kind: str
    model: float | str | None
    published: float | str | None
    deviation: float | None
    limit: float | None
    met: bool
    note: str = ""  # the relation in words, where it has no single number

    def describe(self) -> str:
        """The deviation as a person reads it: +18.4 %, 0.36x, 2.5 points."""
        d = self.deviation
        if d is None:
            return "-"
        return describe(self.kind, d, self.limit)

    def describe_limit(self) -> str:
        return describe_limit(self.kind, self.limit)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(kind: str, d: float | None, limit: float | None = None) -> str:
    """A deviation as a person reads it: +18.4%, 0.36x (2.75x low), +2.5 points. A figure that
    would print as the bar's own edge gets one more decimal (-15.01%, not -15.0%)."""
    if d is None:
        return "-"
    d = d + 0.0  # -0.0 prints as 0.0
    if kind == "relative":
        one, lim = f"{100 * abs(d):.1f}", f"{100 * (limit or 0):.1f}"
        digits = 2 if one == lim and round(abs(d), 4) != limit else 1
        return f"{100 * d:+.{digits}f}%".replace("-0.0%", "+0.0%")
    if kind == "factor":
        return f"{d:.2f}x" if d >= 1 else f"{d:.2f}x ({1 / d:.2f}x low)"
    if kind == "points":
        digits = 2 if f"{abs(d):.1f}" == f"{limit or 0:.1f}" and abs(d) != limit else 1
        return f"{d:+.{digits}f} points"
    return f"{d:g}"


def describe_limit(kind: str, limit: float | None) -> str:
    """The bar itself: within 15%, within 1.5x, within 10 points, same order, holds."""
    if kind == "relative" and limit is not None:
        return f"within {100 * limit:g}%"
    if kind == "factor" and limit is not None:
        return f"within {limit:g}x"
    if kind == "points" and limit is not None:
        return f"within {limit:g} points"
    return {"order": "same order", "relation": "holds"}.get(kind, "")


def _relative(bar: str, method: str, model: Any, pub: Any, limit: float) -> BarCheck:
    if model is None or pub is None or float(pub) <= 0:
        return BarCheck(bar, method, "relative", model, pub, None, limit, False)
    dev = round((float(model) - float(pub)) / float(pub), 4)
    return BarCheck(bar, method, "relative", model, pub, dev, limit, abs(dev) <= limit)


def _factor(bar: str, method: str, model: Any, pub: Any, limit: float) -> BarCheck:
    if model is None or pub is None or float(model) <= 0 or float(pub) <= 0:
        return BarCheck(bar, method, "factor", model, pub, None, limit, False)
    f = float(model) / float(pub)
    off = round(max(f, 1 / f), 3)
    return BarCheck(bar, method, "factor", model, pub, round(f, 3), limit, off <= limit)


def _order(values: Mapping[str, Any]) -> list[str]:
    return sorted(values, key=lambda m: float(values[m]))


def _ordering(bar: str, key: str, rows: Mapping[str, Any], pub: Mapping[str, Any]) -> BarCheck:
    names = [m for m in pub if m in rows]
    missing = any(rows[m].get(key) is None or pub[m].get(key) is None for m in names)
    if len(names) < 2 or missing:
        return BarCheck(bar, None, "order", None, None, None, None, False)
    mine = _order({m: rows[m][key] for m in names})
    theirs = _order({m: pub[m][key] for m in names})
    return BarCheck(bar, None, "order", " < ".join(mine), " < ".join(theirs), None, None,
                    mine == theirs)  # fmt: skip


def _rt_cpu(method: str) -> int | None:
    """The CPU a method reserves for its RT vCPU, from its wiring (None: not pinned to one)."""
    from rtvm.methods import METHODS  # the simulation core: only when a run is checked

    cpus = METHODS[method].rt_vcpu.cpus
    return cpus[0] if cpus and len(cpus) == 1 else None


def check_simple_rt(
    rows: Sequence[Mapping[str, Any]], published: Sequence[Mapping[str, Any]]
) -> list[BarCheck]:
    """Every bar that the methods in ``rows`` allow, in a fixed order."""
    by = {r["method"]: r for r in rows}
    pub = {p["method"]: p for p in published}
    out: list[BarCheck] = []
    for m, p in pub.items():
        r = by.get(m)
        if r is None:
            continue
        for key, limit in RELATIVE_BARS:
            out.append(_relative(key.removesuffix("_us"), m, r.get(key), p.get(key), limit))
        out.append(_factor("sd", m, r.get("sd_us"), p.get("sd_us"), SD_FACTOR))
        out.append(_relative("throughput", m, r.get("heavy_gbps"), p.get("heavy_gbps"),
                             THROUGHPUT_REL))  # fmt: skip
    out.append(_ordering("p99 order", "p99_us", by, pub))
    out.append(_ordering("sd order", "sd_us", by, pub))
    if "threaded" in by and "outsourcing" in by:
        thr, osc = by["threaded"]["cpu_util_pct"], by["outsourcing"]["cpu_util_pct"]
        saving = 100.0 * (thr - osc) / thr if thr else 0.0
        target = 100.0 * CPU_SAVING_OUTSOURCING_VS_THREADED
        dev = round(saving - target, 2)
        out.append(BarCheck("cpu saving vs threaded", "outsourcing", "points", round(saving, 1),
                            target, dev, CPU_SAVING_POINTS,
                            abs(dev) <= CPU_SAVING_POINTS))  # fmt: skip
    if "threaded" in by and "vanilla" in by:
        thr, van = by["threaded"]["cpu_util_pct"], by["vanilla"]["cpu_util_pct"]
        out.append(BarCheck("cpu above vanilla's", "threaded", "relation", thr, None, None, None,
                            thr > van, f"{thr:.1f}% vs {van:.1f}%"))  # fmt: skip
    if "exclusive" in by and (cpu := _rt_cpu("exclusive")) is not None:
        busy = by["exclusive"]["cpu_util_pct_by_cpu"][cpu]
        out.append(BarCheck(f"RT CPU {cpu} busy < {RT_CPU_IDLE_BUSY_PCT:g}%", "exclusive",
                            "relation", busy, None, None, RT_CPU_IDLE_BUSY_PCT,
                            busy < RT_CPU_IDLE_BUSY_PCT, f"{busy:.1f}% busy"))  # fmt: skip
    return out


@dataclass(frozen=True)
class BarAcrossSeeds:
    """One bar over several seeds: on how many it holds, and the range of its deviation."""

    bar: str
    method: str | None
    kind: str
    limit: float | None
    met_seeds: list[int]
    seeds: list[int]
    deviation_min: float | None
    deviation_max: float | None

    @property
    def met_all(self) -> bool:
        return len(self.met_seeds) == len(self.seeds)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["met_all"] = self.met_all
        return d


def across_seeds(checks: Mapping[int, Sequence[BarCheck]]) -> list[BarAcrossSeeds]:
    """Fold per-seed checks bar by bar (a bar is its name and method; every seed must have
    checked the same bars, as every seed of one experiment runs the same methods)."""
    seeds = sorted(checks)
    if not seeds:
        return []
    by_seed = {s: {(c.bar, c.method): c for c in checks[s]} for s in seeds}
    names = [(c.bar, c.method) for c in checks[seeds[0]]]
    for s in seeds:
        if set(by_seed[s]) != set(names):
            raise ValueError(f"seed {s} checked other bars than seed {seeds[0]}")
    out: list[BarAcrossSeeds] = []
    for name in names:
        per = [by_seed[s][name] for s in seeds]
        first = per[0]
        devs = [c.deviation for c in per if c.deviation is not None]
        out.append(BarAcrossSeeds(
            first.bar, first.method, first.kind, first.limit,
            [s for s, c in zip(seeds, per, strict=True) if c.met], seeds,
            min(devs) if devs else None, max(devs) if devs else None,
        ))  # fmt: skip
    return out


#: where a reader finds why the model misses a bar, and what was ruled out
WHY_MISSED = 'docs/model.md, "What the model misses on the shared CPUs"'


def _name(bar: str, method: str | None) -> str:
    return f"{method} {bar}" if method else bar


def verdict_line(checks: Sequence[BarCheck]) -> str:
    """One line under the bars: how many hold, which miss, and where the misses are explained
    (the table says it per bar; this is the count a reader looks for first)."""
    missed = [_name(c.bar, c.method) for c in checks if not c.met]
    line = f"{len(checks) - len(missed)} of {len(checks)} bars met"
    if not missed:
        return line + "."
    return f"{line}; missed: {', '.join(missed)}. Why: {WHY_MISSED}."


def verdict_line_across_seeds(bars: Sequence[BarAcrossSeeds]) -> str:
    """The same over several seeds: met on every seed, missed on every seed, or in between."""
    every = sum(b.met_all for b in bars)
    never = [_name(b.bar, b.method) for b in bars if not b.met_seeds]
    some = [_name(b.bar, b.method) for b in bars if b.met_seeds and not b.met_all]
    line = f"{every} of {len(bars)} bars met on every seed"
    if never:
        line += f"; missed on every seed: {', '.join(never)}"
    if some:
        line += f"; met on some seeds only: {', '.join(some)}"
    return line + (f". Why: {WHY_MISSED}." if never or some else ".")
