"""The fidelity bars (DESIGN.md section 8) as rtvm reproduce simple-rt checks them, and --seeds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtvm.cli_support import UserError
from rtvm.experiments.cli import parse_seeds
from rtvm.experiments.fidelity import across_seeds, check_simple_rt
from rtvm.experiments.published import SIMPLE_RT
from rtvm.experiments.simple_rt import summarise_seeds

CPU = {"vanilla": (90.0, [90.0, 90.0]), "threaded": (95.0, [95.0, 95.0]),
       "exclusive": (51.0, [100.0, 2.0]), "outsourcing": (64.6, [65.0, 64.2])}  # fmt: skip


def _rows(**changes: dict) -> list[dict]:
    """Rows that sit exactly on the published figures, with ``changes`` per method."""
    rows = []
    for p in SIMPLE_RT:
        cpu, by_cpu = CPU[p["method"]]
        r = {"method": p["method"], "mean_us": p["mean_us"], "p99_us": p["p99_us"],
             "sd_us": p["sd_us"], "heavy_gbps": p["heavy_gbps"], "cpu_util_pct": cpu,
             "cpu_util_pct_by_cpu": by_cpu}  # fmt: skip
        r.update(changes.get(p["method"], {}))
        rows.append(r)
    return rows


def _by(checks, bar, method=None):
    (c,) = [c for c in checks if c.bar == bar and c.method == method]
    return c


def test_the_published_table_meets_every_bar():
    checks = check_simple_rt(_rows(), SIMPLE_RT)
    assert len(checks) == 4 * 4 + 2 + 3
    assert [c for c in checks if not c.met] == []


def test_a_mean_off_by_more_than_15_percent_misses_and_says_by_how_much():
    checks = check_simple_rt(_rows(vanilla={"mean_us": 92.5 * 1.16}), SIMPLE_RT)
    c = _by(checks, "mean", "vanilla")
    assert not c.met and c.deviation == pytest.approx(0.16) and c.describe() == "+16.0%"
    assert _by(checks, "mean", "threaded").met
    at_edge = check_simple_rt(_rows(threaded={"p99_us": 202.9 * 0.86}), SIMPLE_RT)
    assert _by(at_edge, "p99", "threaded").met


@pytest.mark.parametrize(("factor", "met"), [(1.49, True), (1.51, False), (1 / 1.51, False)])
def test_sd_is_judged_by_its_factor_either_way(factor, met):
    checks = check_simple_rt(_rows(exclusive={"sd_us": 11.8 * factor}), SIMPLE_RT)
    assert _by(checks, "sd", "exclusive").met is met


def test_throughput_within_5_percent():
    checks = check_simple_rt(_rows(threaded={"heavy_gbps": 17.8 * 1.057}), SIMPLE_RT)
    c = _by(checks, "throughput", "threaded")
    assert not c.met and c.describe() == "+5.7%"


def test_an_order_that_differs_from_the_published_one_misses_and_shows_both():
    checks = check_simple_rt(_rows(threaded={"sd_us": 10.0}), SIMPLE_RT)
    c = _by(checks, "sd order")
    assert not c.met
    assert c.model == "outsourcing < threaded < exclusive < vanilla"
    assert c.published == "outsourcing < exclusive < threaded < vanilla"
    assert _by(checks, "p99 order").met


def test_cpu_relations():
    ok = check_simple_rt(_rows(), SIMPLE_RT)
    saving = _by(ok, "cpu saving vs threaded", "outsourcing")
    assert saving.model == pytest.approx(32.0) and saving.met  # (95 - 64.6) / 95
    too_little = check_simple_rt(_rows(outsourcing={"cpu_util_pct": 90.0}), SIMPLE_RT)
    assert not _by(too_little, "cpu saving vs threaded", "outsourcing").met
    below = check_simple_rt(_rows(threaded={"cpu_util_pct": 89.0}), SIMPLE_RT)
    assert not _by(below, "cpu above vanilla's", "threaded").met
    # the exclusive method's RT CPU is the one its wiring pins the RT vCPU to (CPU 1)
    busy = check_simple_rt(_rows(exclusive={"cpu_util_pct_by_cpu": [40.0, 12.0]}), SIMPLE_RT)
    c = _by(busy, "RT CPU 1 busy < 10%", "exclusive")
    assert not c.met and c.model == 12.0


def test_a_missing_figure_never_counts_as_met():
    checks = check_simple_rt(_rows(vanilla={"p99_us": None}), SIMPLE_RT)
    c = _by(checks, "p99", "vanilla")
    assert not c.met and c.describe() == "-"


def test_only_the_methods_that_ran_are_judged():
    rows = [r for r in _rows() if r["method"] in ("exclusive", "outsourcing")]
    checks = check_simple_rt(rows, SIMPLE_RT)
    assert {c.method for c in checks} == {"exclusive", "outsourcing", None}
    assert {c.bar for c in checks if c.method is None} == {"p99 order", "sd order"}


def test_across_seeds_counts_the_seeds_a_bar_holds_on_and_its_range():
    per_seed = {
        1: check_simple_rt(_rows(vanilla={"mean_us": 92.5 * 1.10}), SIMPLE_RT),
        2: check_simple_rt(_rows(vanilla={"mean_us": 92.5 * 1.20}), SIMPLE_RT),
        3: check_simple_rt(_rows(vanilla={"mean_us": 92.5 * 0.95}), SIMPLE_RT),
    }
    bars = across_seeds(per_seed)
    (mean,) = [b for b in bars if b.bar == "mean" and b.method == "vanilla"]
    assert mean.met_seeds == [1, 3] and mean.seeds == [1, 2, 3] and not mean.met_all
    assert mean.deviation_min == pytest.approx(-0.05) and mean.deviation_max == pytest.approx(0.2)
    assert all(b.met_all for b in bars if b.method != "vanilla" or b.bar != "mean")


def test_summarise_seeds_gives_mean_range_and_spread():
    a = _rows(vanilla={"mean_us": 100.0, "cpu_util_pct_by_cpu": [80.0, 100.0]})
    b = _rows(vanilla={"mean_us": 110.0, "cpu_util_pct_by_cpu": [90.0, 100.0]})
    (van, *_) = summarise_seeds({1: a, 2: b})
    assert van["method"] == "vanilla" and van["seeds"] == 2
    assert (van["mean_us"], van["mean_us_min"], van["mean_us_max"]) == (105.0, 100.0, 110.0)
    assert van["mean_us_spread"] == pytest.approx(10 / 105, abs=1e-4)
    assert van["p99_us_spread"] == 0.0
    assert van["cpu_util_pct_by_cpu"] == [85.0, 100.0]


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [("1-5", (1, 2, 3, 4, 5)), ("3", (3,)), ("2,1,2", (2, 1)), ("0-1,7", (0, 1, 7))],
)
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["5-1", "a", "1,,2", "-3", "1-", "0-100"])
def test_bad_seed_lists_are_refused(spec):
    with pytest.raises(UserError, match="allowed: seeds >= 0"):
        parse_seeds(spec)


def _rtvm(*args):
    return subprocess.run(
        [sys.executable, "-m", "rtvm", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seeds", "4-2"], "--seeds '4-2': '4-2' is not an ascending range"),
        (["--seed", "2", "--seeds", "1-2"], "--seed and --seeds together; allowed: one of them"),
    ],
)
def test_reproduce_refuses_bad_seeds_in_one_line(args, needle):
    r = _rtvm("reproduce", "simple-rt", "--duration", "0.05", *args)
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_reproduce_with_seeds_runs_each_seed_as_a_single_run_would(tmp_path):
    r = _rtvm("reproduce", "simple-rt", "--duration", "0.05", "--seeds", "1,2", "--jobs", "2",
              "--json", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["seeds"] == [1, 2] and env["seed"] is None
    assert [(row["seed"], row["method"]) for row in env["rows"]] == [
        (s, m) for s in (1, 2) for m in ("vanilla", "threaded", "exclusive", "outsourcing")
    ]
    assert [s["method"] for s in env["summary"]] == [p["method"] for p in SIMPLE_RT]
    assert all(b["seeds"] == [1, 2] for b in env["fidelity"])
    assert set(env["fidelity_by_seed"]) == {"1", "2"}
    # seed 2 of the sweep is what a plain --seed 2 run gives, and what OUT/seed-2/ holds
    one = _rtvm("reproduce", "simple-rt", "--duration", "0.05", "--seed", "2", "--json")
    single = json.loads(one.stdout)
    swept = [{k: v for k, v in row.items() if k != "seed"} for row in env["rows"][4:]]
    assert swept == single["rows"]
    assert single["fidelity"] == env["fidelity_by_seed"]["2"]
    kept = json.loads((tmp_path / "seed-2" / "results.json").read_text())
    assert kept["rows"] == single["rows"] and kept["seed"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [1, 2]
    # the same command again reuses all eight method runs from OUT/seed-N/checkpoints
    again = _rtvm("reproduce", "simple-rt", "--duration", "0.05", "--seeds", "1,2", "--json",
                  "--out", str(tmp_path))  # fmt: skip
    assert len(json.loads(again.stdout)["reused_methods"]) == 8
    assert json.loads(again.stdout)["rows"] == env["rows"]
