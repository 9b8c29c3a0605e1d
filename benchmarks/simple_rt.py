"""simple-rt speed and memory benchmark (run by hand; figures recorded in the README).

    python benchmarks/simple_rt.py                    # 4 methods x 30 s, one core, + traced run
    python benchmarks/simple_rt.py --duration 3       # shorter
    python benchmarks/simple_rt.py --memory 3 30      # peak RSS of one method at 3 s vs 30 s
    python benchmarks/simple_rt.py --no-trace --compress-idle 20   # idle compression, against full

It measures the installed build; the output says which (``build``: python or mypyc).

Speed: all four methods run one after another in one process (one core), then the same with
tracing on; the bar is <= 20 s for 30 s per method. Memory: each length runs in a fresh
process; the bar is that 10x the simulated time costs <= 1.2x the peak memory. With
--compress-idle N the four methods also run under idle compression, right after the full
runs, and the output gives the ratio (workloads.idle_compression).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtvm.build import build_kind
from rtvm.experiments.runner import run_method
from rtvm.methods import PAPER_METHODS
from rtvm.workloads.idle_compression import MIN_DURATION_S


def speed(duration: float, traced: bool, idle_keep: int | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        for m in PAPER_METHODS:
            trace = str(Path(d) / f"{m}.json") if traced else None
            t0 = time.perf_counter()
            run_method(m, duration, 1, trace_path=trace, idle_keep=idle_keep)
            out[m] = time.perf_counter() - t0
    return out


def peak_rss_mb(method: str, duration: float) -> float:
    code = (
        "import resource,sys; from rtvm.experiments.runner import run_method; "
        f"run_method({method!r}, {duration}, 1); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--no-trace", action="store_true", help="skip the traced run")
    ap.add_argument("--memory", nargs=2, type=float, metavar=("SHORT_S", "LONG_S"))
    ap.add_argument("--method", default="threaded", help="method for --memory")
    ap.add_argument(
        "--compress-idle", type=int, default=None, metavar="N", help="also time idle compression"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.compress_idle is not None and (
        args.compress_idle < 2 or args.memory or args.duration < MIN_DURATION_S
    ):
        ap.error(
            f"--compress-idle takes N >= 2 and times speed runs of at least {MIN_DURATION_S:g} s"
            " (not --memory)"
        )
    result: dict[str, object] = {}
    if args.memory:
        short, long_ = args.memory
        a, b = peak_rss_mb(args.method, short), peak_rss_mb(args.method, long_)
        result.update(
            method=args.method,
            short_s=short,
            long_s=long_,
            short_peak_mb=round(a, 1),
            long_peak_mb=round(b, 1),
            memory_ratio=round(b / a, 3),
        )
    else:
        plain = speed(args.duration, traced=False)
        result.update(
            duration_s=args.duration,
            wall_s={k: round(v, 2) for k, v in plain.items()},
            total_wall_s=round(sum(plain.values()), 2),
        )
        if not args.no_trace:
            traced = speed(args.duration, traced=True)
            result.update(
                traced_total_wall_s=round(sum(traced.values()), 2),
                trace_overhead=round(sum(traced.values()) / sum(plain.values()), 2),
            )
        if args.compress_idle:
            fast = speed(args.duration, traced=False, idle_keep=args.compress_idle)
            result.update(
                compress_idle=args.compress_idle,
                compressed_wall_s={k: round(v, 2) for k, v in fast.items()},
                compressed_total_wall_s=round(sum(fast.values()), 2),
                speedup=round(sum(plain.values()) / sum(fast.values()), 2),
            )
    result["build"] = build_kind()  # python or mypyc (RTVM_USE_MYPYC=1 pip install .)
    result["self_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
