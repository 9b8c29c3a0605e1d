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
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.cli_support import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from rtvm.experiments import checkpoint, process_pool
from rtvm.experiments.published import SIMPLE_RT
from rtvm.experiments.runner import MethodResult, run_method
from rtvm.kernel.profile import load_profile
from rtvm.methods import PAPER_METHODS

EXPERIMENT = "simple-rt"
FULL_S = 30.0
QUICK_S = 3.0


@dataclass(frozen=True)
class RunJob:
    """One method run: which method, seed and profile (None: the embedded one), the
    directory that keeps it once finished (None: not kept), its idle compression (None:
    every gap simulated in full; see workloads.idle_compression), and how many of its slowest
    responses it keeps with what ran meanwhile (0: none; analysis.slowest)."""

    method: str
    seed: int
    profile: str | None = None
    checkpoints: Path | None = None
    idle_keep: int | None = None
    slowest: int = 0

    def describe(self) -> str:
        """How a message names this run: ``threaded (seed 2, profile p.toml)``."""
        where = f"seed {self.seed}"
        if self.profile is not None:
            where += f", profile {self.profile}"
        if self.idle_keep is not None and self.idle_keep > 1:
            where += f", idle compressed 1/{self.idle_keep}"
        return f"{self.method} ({where})"


def run(
    duration_s: float,
    seed: int,
    methods: tuple[str, ...] = PAPER_METHODS,
    profile: str | None = None,
    jobs: int | None = None,
    on_done: Callable[[str, MethodResult], None] | None = None,
    checkpoints: Path | None = None,
    reuse: bool = True,
    on_reused: Callable[[str, MethodResult], None] | None = None,
    idle_keep: int | None = None,
    slowest: int = 0,
) -> dict[str, MethodResult]:
    """Run ``methods`` with one seed; in parallel processes if ``jobs`` > 1 (default: the free
    cores).

    With ``checkpoints`` (a directory), each finished method is written there at once and a
    method already there with the same key (experiment.checkpoint.run_key) is loaded instead of
    simulated again (unless ``reuse`` is False): an interrupted run loses nothing.
    ``on_reused`` hears of the methods loaded. ``idle_keep`` > 1: idle compression.
    ``slowest`` > 0: each method keeps that many slowest responses (``extra["slowest"]``).
    """
    done = (lambda m, _s, r: on_done(m, r)) if on_done else None
    reused = (lambda m, _s, r: on_reused(m, r)) if on_reused else None
    ckpt = (lambda _s: checkpoints) if checkpoints is not None else None
    by_seed = run_seeds(
        duration_s, (seed,), methods, profile, jobs, done, ckpt, reuse, reused, idle_keep, slowest
    )
    return by_seed[seed]


def run_seeds(
    duration_s: float,
    seeds: tuple[int, ...],
    methods: tuple[str, ...] = PAPER_METHODS,
    profile: str | None = None,
    jobs: int | None = None,
    on_done: Callable[[str, int, MethodResult], None] | None = None,
    checkpoints: Callable[[int], Path] | None = None,
    reuse: bool = True,
    on_reused: Callable[[str, int, MethodResult], None] | None = None,
    idle_keep: int | None = None,
    slowest: int = 0,
) -> dict[int, dict[str, MethodResult]]:
    """Run every method under every seed, all (method, seed) pairs in one process pool.

    ``checkpoints(seed)`` names the directory that keeps that seed's finished methods (see
    :func:`run`). Returns ``{seed: {method: result}}`` in the order given.
    """
    todo = [
        RunJob(
            m,
            s,
            profile,
            checkpoints(s) if checkpoints is not None else None,
            idle_keep,
            slowest,
        )
        for s in seeds
        for m in methods
    ]
    done = (lambda j, r: on_done(j.method, j.seed, r)) if on_done else None
    reused = (lambda j, r: on_reused(j.method, j.seed, r)) if on_reused else None
    out: dict[int, dict[str, MethodResult]] = {s: {} for s in seeds}
    for job, r in zip(todo, run_jobs(duration_s, todo, jobs, done, reuse, reused), strict=True):
        out[job.seed][job.method] = r
    return out


def run_jobs(
    duration_s: float,
    todo: list[RunJob],
    jobs: int | None = None,
    on_done: Callable[[RunJob, MethodResult], None] | None = None,
    reuse: bool = True,
    on_reused: Callable[[RunJob, MethodResult], None] | None = None,
) -> list[MethodResult]:
    """Run every job, all in one process pool (``jobs`` processes; default: the free cores),
    whatever their seeds and profiles: a sweep over profiles keeps every core busy to its end
    rather than waiting for each profile's slowest method. Results come in the jobs' order.

    A job with ``checkpoints`` is written there as soon as it finishes, and one already there
    with the same key (experiment.checkpoint.run_key: method, seed, length, profile, rtvm) is
    loaded instead of simulated again, unless ``reuse`` is False; ``on_reused`` hears of those.
    """
    results: dict[int, MethodResult] = {}
    keys: dict[int, dict[str, Any]] = {}
    shas: dict[str | None, str] = {}
    for i, job in enumerate(todo):
        if job.checkpoints is None:
            continue
        if job.profile not in shas:
            shas[job.profile] = load_profile(job.profile).sha256
        sha = shas[job.profile]
        keys[i] = checkpoint.run_key(
            EXPERIMENT, job.method, job.seed, duration_s, sha, job.idle_keep, job.slowest
        )
        kept = checkpoint.load(job.checkpoints, keys[i]) if reuse else None
        if kept is not None:
            results[i] = kept
            if on_reused:
                on_reused(job, kept)

    def finished(i: int, r: MethodResult) -> None:
        results[i] = r
        job = todo[i]
        if job.checkpoints is not None:
            checkpoint.save(job.checkpoints, keys[i], r)
        if on_done:
            on_done(job, r)

    left = [i for i in range(len(todo)) if i not in results]
    jobs = min(jobs or os.cpu_count() or 1, len(left))
    if jobs <= 1:
        for i in left:
            j = todo[i]
            finished(i, _run_job(j, duration_s))
    else:
        args = [(i, todo[i], duration_s) for i in left]
        # closing: the workers are stopped when the loop is left, even while the exception
        # that left it (and the frame that holds the iterator) is still alive
        pool = process_pool.imap_unordered(_run_one, args, jobs, lambda a: a[1].describe())
        with closing(pool) as done:
            for i, r in done:
                finished(i, r)
    return [results[i] for i in range(len(todo))]


def _run_job(job: RunJob, duration_s: float) -> MethodResult:
    return run_method(
        job.method,
        duration_s,
        job.seed,
        job.profile,
        idle_keep=job.idle_keep,
        slowest=job.slowest,
    )


def _run_one(args: tuple[int, RunJob, float]) -> tuple[int, MethodResult]:
    return args[0], _run_job(args[1], args[2])


def published_rows() -> list[dict[str, Any]]:
    return [dict(r) for r in SIMPLE_RT]


def write_outputs(
    out: Path, envelope: dict[str, Any], results: dict[str, MethodResult]
) -> list[Path]:
    """results.json, rows as CSV, raw latencies (compressed), Figures 6/7/8 as PNG, the
    path stages of each method's mean response and of its slowest 1% (fig_stages.png), and,
    when the run kept its slowest responses, each method's slowest as a timeline
    (fig_slowest.png).

    latencies.npz holds, per method ``M`` and per completed request in completion order:
    ``M_latency_us``; the paper's segments (``M_host_receive_us``, ...; NaN where a probe did
    not fire); ``M_nic_rx_at_ns``, the simulated time the request reached the NIC (under idle
    compression, time simulated, not represented: as a trace's); and
    ``M_<probe>_ns`` for each later probe of ``PATH_PROBES``, ns after the NIC (-1 where it did
    not fire): any stage of any one request is a difference of two of these."""
    from rtvm.report.plots import (
        cpu_bars,
        latency_histograms,
        slowest_timelines,
        stage_bars,
        throughput_bars,
    )

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
        arrays.update({f"{m}_{k}_ns": v for k, v in r.probes_ns.items()})
    np.savez_compressed(raw, **arrays)  # type: ignore[arg-type]
    written.append(atomic_write_bytes(out / "latencies.npz", raw.getvalue()))
    lat = {m: r.latencies_us for m, r in results.items()}
    written.append(latency_histograms(lat, out / "fig6_latency.png"))
    written.append(throughput_bars(rows, envelope["published"], out / "fig7_throughput.png"))
    written.append(cpu_bars(rows, out / "fig8_cpu.png"))
    stages = {m: r.extra["stages"] for m, r in results.items()}
    written.append(stage_bars(stages, out / "fig_stages.png"))
    slowest = {m: r.extra["slowest"][0] for m, r in results.items() if r.extra.get("slowest")}
    if slowest:  # --slowest K: each method's slowest response as a timeline
        written.append(slowest_timelines(slowest, out / "fig_slowest.png"))
    return written


#: the figures summarised across seeds (rows' keys)
SEED_SUMMARY_KEYS = ("mean_us", "p99_us", "sd_us", "p999_us", "heavy_gbps", "cpu_util_pct")


def summarise_seeds(rows_by_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per method and figure: the mean over seeds, the lowest and highest seed, and how far
    those are apart relative to the mean (``spread``: how much a figure moves with the seed).
    A figure that some seed lacks (no samples) is None rather than a mean of the others."""
    seeds = list(rows_by_seed)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for s in seeds:
        for r in rows_by_seed[s]:
            by_method.setdefault(r["method"], []).append(r)
    out: list[dict[str, Any]] = []
    for m, rs in by_method.items():
        row: dict[str, Any] = {"method": m, "seed_count": len(rs)}
        for key in SEED_SUMMARY_KEYS:
            vals = [float(r[key]) for r in rs if r.get(key) is not None]
            if len(vals) < len(rs):  # a seed without the figure: no mean that hides it
                row[key] = row[f"{key}_min"] = row[f"{key}_max"] = row[f"{key}_spread"] = None
                continue
            mean = sum(vals) / len(vals)
            lo, hi = min(vals), max(vals)
            row[key] = round(mean, 3)
            row[f"{key}_min"], row[f"{key}_max"] = round(lo, 3), round(hi, 3)
            row[f"{key}_spread"] = round((hi - lo) / mean, 4) if mean else None
        per_cpu = [r["cpu_util_pct_by_cpu"] for r in rs if r.get("cpu_util_pct_by_cpu")]
        if per_cpu and len({len(c) for c in per_cpu}) == 1:
            row["cpu_util_pct_by_cpu"] = [
                round(sum(c) / len(per_cpu), 2) for c in zip(*per_cpu, strict=True)
            ]
        out.append(row)
    return out
