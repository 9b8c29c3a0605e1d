"""``rtvm measure timer``: cyclictest on this host, idle and under each requested load."""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.analysis import stats
from rtvm.cli_support import console, result_envelope
from rtvm.measure import cyclictest, hostinfo, results, stress
from rtvm.measure.stress import HostLoad, LoadSpec
from rtvm.measure.tools import which

EXPERIMENT = "measure-timer"


def run_timer(
    cfg: cyclictest.CyclictestConfig, loads: Sequence[LoadSpec], seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    which("cyclictest")
    if any(spec.active for spec in loads):
        which("stress-ng")
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    outputs: dict[str, str] = {}
    t0 = time.monotonic()
    uname = platform.uname()
    preempt = hostinfo.preemption_model(uname.version)
    with tempfile.TemporaryDirectory(prefix="rtvm-timer-") as tmp:
        for spec in loads:
            console.print(
                f"[bold]cyclictest[/] {cfg.duration_s} s, {cfg.nthreads()} thread(s), "
                f"interval {cfg.interval_us} us, {cfg.policy}:{cfg.priority}, load: {spec.label}"
            )
            work = Path(tmp) / results.slug(spec.label)
            with HostLoad(spec, cfg.duration_s + 20, work / "stress-ng.log") as load:
                res = cyclictest.run(cfg, work)
            if load.bg is not None:
                outputs[f"{spec.label}/stress-ng"] = load.bg.output()[-20000:]
            st = res.stats()
            base = {
                "target": "host",
                "load": spec.label,
                "kernel": uname.release,
                "preemption": preempt,
                "accelerator": "none (host)",
                "threads": len(res.threads),
                "interval_us": cfg.interval_us,
                "policy": f"{cfg.policy}:{cfg.priority}" if cfg.policy != "other" else "other",
            }
            rows.append(results.latency_row(base, st))
            key = results.slug(spec.label)
            arrays.update(results.hist_arrays(key, res.histogram(), res.overflows()))
            outputs[f"{spec.label}/cyclictest.json"] = res.raw_json or ""
            outputs[f"{spec.label}/cyclictest.hist"] = res.raw_hist or ""
            if st.overflows:
                console.print(
                    f"[yellow]warning:[/] {st.overflows} samples above the histogram range "
                    f"({cfg.histogram_us} us); percentiles among them are unknown: "
                    "raise --histogram"
                )
    env = result_envelope(
        EXPERIMENT,
        seed,
        float(cfg.duration_s),
        rows,
        [],
        host=hostinfo.host_block(None, ("cyclictest", "stress-ng")),
        scenario={
            "cyclictest": asdict(cfg),
            "loads": [s.name for s in loads],
            "stress_commands": {
                s.label: " ".join(stress.argv(s, cfg.duration_s + 20)) for s in loads if s.active
            },
        },
        ci_method=stats.CI_METHOD,
        wall_s=round(time.monotonic() - t0, 1),
    )
    return env, arrays, outputs
