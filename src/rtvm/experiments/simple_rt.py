"""Experiment 1, simple-rt: the four RT methods of Garcia et al. on the modelled testbed.

For each method: the RT server's response time at the wire (mean, p50, p99, p99.9, max, SD), the
heavy receivers' total throughput, and host CPU utilisation per CPU, beside the published
figures (labelled as published). Methods run in parallel processes when cores are free.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.cli_support import atomic_write_bytes, atomic_write_json, atomic_write_text
from rtvm.experiments.published import SIMPLE_RT
from rtvm.experiments.runner import MethodResult, run_method
from rtvm.methods import PAPER_METHODS

FULL_S = 30.0
QUICK_S = 3.0


def run(
    duration_s: float,
    seed: int,
    methods: tuple[str, ...] = PAPER_METHODS,
    profile: str | None = None,
    jobs: int | None = None,
    on_done: Callable[[str, MethodResult], None] | None = None,
) -> dict[str, MethodResult]:
    """Run ``methods``; in parallel processes if ``jobs`` > 1 (default: the free cores)."""
    jobs = jobs or min(len(methods), os.cpu_count() or 1)
    results: dict[str, MethodResult] = {}
    if jobs <= 1:
        for m in methods:
            results[m] = run_method(m, duration_s, seed, profile)
            if on_done:
                on_done(m, results[m])
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = {pool.submit(run_method, m, duration_s, seed, profile): m for m in methods}
        for fut in as_completed(futs):
            m = futs[fut]
            results[m] = fut.result()
            if on_done:
                on_done(m, results[m])
    return {m: results[m] for m in methods}


def published_rows() -> list[dict[str, Any]]:
    return [dict(r) for r in SIMPLE_RT]


def write_outputs(
    out: Path, envelope: dict[str, Any], results: dict[str, MethodResult]
) -> list[Path]:
    """results.json, rows as CSV, raw latencies (compressed), Figures 6/7/8 as PNG."""
    from rtvm.report.plots import cpu_bars, latency_histograms, throughput_bars

    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_json(out / "results.json", envelope)]
    rows = envelope["rows"]
    buf = io.StringIO()
    keys = [k for k in rows[0] if k != "cpu_util_pct_by_cpu"] + ["cpu_util_pct_by_cpu"]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({**r, "cpu_util_pct_by_cpu": " ".join(map(str, r["cpu_util_pct_by_cpu"]))})
    written.append(atomic_write_text(out / "simple_rt.csv", buf.getvalue()))
    raw = io.BytesIO()
    arrays = {f"{m}_latency_us": r.latencies_us for m, r in results.items()}
    for m, r in results.items():
        arrays.update({f"{m}_{k}": v for k, v in r.segments_us.items()})
    np.savez_compressed(raw, **arrays)
    written.append(atomic_write_bytes(out / "latencies.npz", raw.getvalue()))
    lat = {m: r.latencies_us for m, r in results.items()}
    written.append(latency_histograms(lat, out / "fig6_latency.png"))
    written.append(throughput_bars(rows, envelope["published"], out / "fig7_throughput.png"))
    written.append(cpu_bars(rows, out / "fig8_cpu.png"))
    return written
