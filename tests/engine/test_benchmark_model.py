"""The benchmark's three implementations count the same events (no timing here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "engine.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_rtvm_counts_match_heapq_and_simpy_reference():
    b = _bench()
    horizon = b.horizon_for(60_000)
    rtvm, ref, simpy = b.run_rtvm(horizon), b.run_heapq(horizon), b.run_simpy(horizon)
    assert rtvm == ref == simpy
    assert 50_000 < rtvm.total < 70_000
    assert rtvm.arrivals and rtvm.departures and rtvm.ticks


def test_json_output_has_the_documented_keys(capsys):
    b = _bench()
    assert b.main(["--events", "20000", "--repeat", "1", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    for key in (
        "rtvm_events_per_s",
        "simpy_events_per_s",
        "heapq_events_per_s",
        "ratio_vs_simpy",
        "ratio_vs_heapq",
    ):
        assert out[key] > 0
