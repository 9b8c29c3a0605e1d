"""cyclictest (rt-tests): build its command line and read its results.

rtvm always asks for both the ``--json=FILE`` summary and the ``-h RANGE`` histogram (on stdout):
the JSON is read first; the text histogram is the fallback (older rt-tests have no --json, and
the guest prints it over the serial console when the JSON is lost). Both give a 1 us histogram
per thread, from which ``stats.from_histogram`` computes the common statistics. Samples above the
histogram range are counted as overflows (cyclictest gives their number, not their values).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtvm.analysis import stats
from rtvm.measure.tools import ToolFailed, run_tool, which

POLICIES = ("fifo", "rr", "other")


@dataclass(frozen=True)
class CyclictestConfig:
    interval_us: int = 1000
    priority: int = 95
    policy: str = "fifo"
    threads_per_cpu: int = 1
    cpus: tuple[int, ...] = ()  # empty: all CPUs this process may use
    duration_s: int = 10
    histogram_us: int = 100000
    mlock: bool = True

    def cpu_list(self) -> list[int]:
        if self.cpus:
            return list(self.cpus)
        try:
            return sorted(os.sched_getaffinity(0))
        except OSError:  # pragma: no cover
            return list(range(os.cpu_count() or 1))

    def nthreads(self) -> int:
        return self.threads_per_cpu * len(self.cpu_list())

    def argv(self, json_path: str, binary: str = "cyclictest") -> list[str]:
        cpus = ",".join(str(c) for c in self.cpu_list())
        a = [
            binary,
            "-q",
            f"--interval={self.interval_us}",
            f"--duration={self.duration_s}",
            f"--histogram={self.histogram_us}",
            f"--threads={self.nthreads()}",
            f"--affinity={cpus}",
            f"--policy={self.policy}",
            f"--json={json_path}",
        ]
        if self.policy != "other":
            a.append(f"--priority={self.priority}")
        if self.mlock:
            a.append("--mlockall")
        return a


@dataclass
class CyclictestResult:
    threads: list[dict[str, Any]] = field(default_factory=list)  # per thread: hist, cycles, ...
    version: str | None = None
    raw_json: str | None = None
    raw_hist: str | None = None
    source: str = "json"

    def histogram(self) -> dict[int, int]:
        return stats.merge_histograms([t["hist"] for t in self.threads])

    def overflows(self) -> int:
        return sum(int(t.get("overflows", 0)) for t in self.threads)

    def stats(self) -> stats.LatencyStats:
        n_in = sum(sum(t["hist"].values()) for t in self.threads)
        mins = [t["min"] for t in self.threads if t.get("min") is not None]
        maxs = [t["max"] for t in self.threads if t.get("max") is not None]
        cycles = [t.get("cycles") for t in self.threads]
        avgs = [t.get("avg") for t in self.threads]
        mean = None
        if all(c for c in cycles) and all(a is not None for a in avgs) and cycles:
            tot = sum(cycles)  # type: ignore[arg-type]
            mean = sum(a * c for a, c in zip(avgs, cycles, strict=True)) / tot  # type: ignore[operator]
        st = stats.from_histogram(
            self.histogram(),
            overflows=self.overflows(),
            min_us=float(min(mins)) if mins else None,
            max_us=float(max(maxs)) if maxs else None,
            mean_us=mean,
        )
        if n_in == 0 and self.overflows() == 0:
            raise ToolFailed("cyclictest", "recorded no samples", self.raw_hist or "")
        return st


def parse_json(text: str) -> CyclictestResult:
    """Read cyclictest's ``--json`` file (rt-tests >= 2.0)."""
    try:
        d = json.loads(text)
        threads_in = d["thread"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolFailed("cyclictest", "wrote a JSON file rtvm cannot read", text) from exc
    if not isinstance(threads_in, dict) or not threads_in:
        raise ToolFailed("cyclictest", "wrote a JSON file with no threads", text)
    threads = []
    for key in sorted(threads_in, key=lambda k: int(k) if str(k).isdigit() else 0):
        t = threads_in[key]
        try:
            hist = {int(v): int(c) for v, c in (t.get("histogram") or {}).items()}
            cycles = int(t["cycles"])
            inside = sum(hist.values())
            threads.append(
                {
                    "thread": int(key),
                    "cpu": t.get("cpu"),
                    "hist": hist,
                    "cycles": cycles,
                    "min": t.get("min"),
                    "max": t.get("max"),
                    "avg": t.get("avg"),
                    # cyclictest's JSON has no overflow field: the cycles the histogram lacks
                    "overflows": max(0, cycles - inside) if hist else 0,
                }
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ToolFailed("cyclictest", f"thread {key} in its JSON is malformed", text) from exc
    if sum(t["cycles"] for t in threads) == 0:
        raise ToolFailed("cyclictest", "ran no cycles", text)
    return CyclictestResult(
        threads=threads,
        version=d.get("rt_test_version:") or d.get("rt_test_version"),
        raw_json=text,
    )


_HROW = re.compile(r"^\s*(\d+)((?:\s+\d+)+)\s*$")


def parse_histogram(text: str) -> CyclictestResult:
    """Read cyclictest's text histogram (``-h RANGE`` on stdout).

    Numbers are zero-padded decimal (``000010`` is ten, not octal eight).
    """
    hists: list[dict[int, int]] = []
    summary: dict[str, list[int]] = {}
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln:
            continue
        if ln.startswith("#"):
            m = re.match(r"#\s*([A-Za-z ]+?):\s*((?:\d+\s*)*)$", ln)
            if m:
                vals = [int(x, 10) for x in m.group(2).split()]
                if vals:
                    summary[m.group(1).strip().lower()] = vals
            continue
        m = _HROW.match(ln)
        if not m:
            continue
        value = int(m.group(1), 10)
        counts = [int(x, 10) for x in m.group(2).split()]
        if not hists:
            hists = [{} for _ in counts]
        if len(counts) < len(hists):
            continue
        for i in range(len(hists)):  # a -H summary column would be the last, extra one
            if counts[i]:
                hists[i][value] = counts[i]
    total = summary.get("total")
    if not hists or total is None:
        raise ToolFailed("cyclictest", "printed no histogram rtvm can read", text)
    nthreads = len(total)
    threads = []
    for i in range(nthreads):
        h = hists[i] if i < len(hists) else {}
        ovf = summary.get("histogram overflows", [0] * nthreads)
        mins = summary.get("min latencies")
        maxs = summary.get("max latencies")
        threads.append(
            {
                "thread": i,
                "cpu": None,
                "hist": h,
                "cycles": total[i] + (ovf[i] if i < len(ovf) else 0),
                "min": mins[i] if mins and i < len(mins) else None,
                "max": maxs[i] if maxs and i < len(maxs) else None,
                "avg": None,  # the text summary rounds the average to whole us: recompute
                "overflows": ovf[i] if i < len(ovf) else 0,
            }
        )
    return CyclictestResult(threads=threads, raw_hist=text, source="histogram")


def run(cfg: CyclictestConfig, workdir: Path) -> CyclictestResult:
    """Run cyclictest on this host and parse its results."""
    binary = which("cyclictest")
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = workdir / "cyclictest.json"
    json_path.unlink(missing_ok=True)
    res = run_tool(
        cfg.argv(str(json_path), binary),
        timeout=cfg.duration_s + 30,
        tool="cyclictest",
        check=False,
    )
    if res.returncode != 0:
        raise ToolFailed(
            "cyclictest", f"exited with status {res.returncode}", res.stderr + res.stdout
        )
    parsed: CyclictestResult | None = None
    if json_path.exists():
        parsed = parse_json(json_path.read_text("utf-8", "replace"))
        parsed.raw_hist = res.stdout
    else:
        parsed = parse_histogram(res.stdout)
    return parsed
