"""rtvm sensitivity: which cost moves which cell (units, the contract, and one mechanism)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner
from rich.console import Console

from rtvm.cli import main
from rtvm.cli_support import UserError
from rtvm.kernel.profile import load_profile
from rtvm.sensitivity import (
    CELLS,
    Perturbation,
    _parse_costs,
    elasticity,
    method_table,
    perturbations,
    sensitivity_rows,
)


def _rtvm(*args):
    return subprocess.run(
        [sys.executable, "-m", "rtvm", *args], capture_output=True, text=True, timeout=120
    )


def test_elasticity_recovers_a_power_law_exponent():
    # cell = k * cost^0.5: the central difference is exact for a power law
    up, down = 100.0 * 125**0.5, 100.0 * 80**0.5
    assert elasticity(up, down, 125, 80) == pytest.approx(0.5)
    assert elasticity(7.0, 7.0, 125, 80) == 0.0
    assert elasticity(0.0, 7.0, 125, 80) is None  # a cell that is not positive has none


def test_default_costs_are_the_estimates_and_the_fitted_ones_and_zero_is_left_out():
    prof = load_profile()
    chosen, skipped = perturbations(prof, None, 1.25)
    names = {p.cost for p in chosen}
    want = {k for k, c in prof.entries.items() if c.status in ("estimate", "fitted")}
    assert names == want
    assert "llc_miss" not in names  # sourced: only on request
    p = next(p for p in chosen if p.cost == "syscall")
    assert (p.value, p.up, p.down) == (150, 188, 120)
    assert skipped == []
    chosen, skipped = perturbations(prof, ("halt_poll_ns", "gro_segment"), 1.01)
    assert chosen == []  # 0 cannot be scaled; 43 x 1.01 rounds back to 43
    assert [s.split(":")[0] for s in skipped] == ["halt_poll_ns", "gro_segment"]


def test_a_cost_that_rounds_down_to_zero_is_left_out():
    prof = load_profile().with_values(syscall=1)
    chosen, skipped = perturbations(prof, ("syscall",), 4.0)  # 1 / 4 rounds to 0: no log
    assert chosen == [] and skipped == ["syscall: 1 / 4 rounds to 0"]


def test_costs_option_takes_names_statuses_and_all_and_names_the_allowed_ones():
    prof = load_profile()
    assert _parse_costs(None, prof) is None
    assert _parse_costs("llc_miss,syscall,llc_miss", prof) == ("llc_miss", "syscall")
    fitted = _parse_costs("fitted", prof)
    assert fitted is not None and set(fitted) == {
        k for k, c in prof.entries.items() if c.status == "fitted"
    }
    assert _parse_costs("all", prof) == tuple(prof.entries)
    with pytest.raises(UserError, match="'llc_mis' is no cost of the profile; allowed: all"):
        _parse_costs("llc_mis", prof)


def test_rows_are_flat_one_per_method_with_both_runs_and_the_elasticity():
    p = Perturbation("syscall", 150, "estimate", 188, 120)
    up = [{"method": "exclusive", **dict.fromkeys(CELLS, 2.0)}]
    down = [{"method": "exclusive", **dict.fromkeys(CELLS, 1.0)}]
    (row,) = sensitivity_rows(p, up, down)
    assert row["method"] == "exclusive" and row["cost"] == "syscall"
    assert (row["value"], row["value_up"], row["value_down"]) == (150, 188, 120)
    assert row["p99_us_up"] == 2.0 and row["p99_us_down"] == 1.0
    assert row["p99_elasticity"] == round(math.log(2) / math.log(188 / 120), 3)
    assert set(row) >= {"mean_elasticity", "sd_elasticity", "heavy_gbps_elasticity"}
    assert all(not isinstance(v, (dict, list)) for v in row.values())
    down[0]["sd_us"] = None  # a run without samples has no SD: no elasticity, no crash
    (row,) = sensitivity_rows(p, up, down)
    assert row["sd_elasticity"] is None and row["sd_us_down"] is None


def test_the_human_table_shows_both_values_and_a_missing_cell():
    p = Perturbation("syscall", 150, "estimate", 188, 120)
    base = {"method": "exclusive", **dict.fromkeys(CELLS, 1.0), "sd_us": None}
    up = [{"method": "exclusive", **dict.fromkeys(CELLS, 2.0)}]
    down = [{"method": "exclusive", **dict.fromkeys(CELLS, 1.0), "sd_us": None}]
    console = Console(width=200, record=True)
    console.print(method_table(base, sensitivity_rows(p, up, down), 1.25))
    text = console.export_text()
    assert "150 (120, 188)" in text
    assert "syscall (estimate)" in text and "+1.54" in text  # ln 2 / ln(188/120)
    assert "- us (mean / p99 / SD)" in text


def test_sensitivity_json_and_out_follow_the_contract_and_a_rerun_loads_the_runs(tmp_path):
    """A dearer copy costs the exclusive method's heavy receivers throughput: their one CPU is
    saturated (a mechanism check that fails if the cost stopped reaching the heavy path)."""
    args = ["sensitivity", "--costs", "copy_per_byte_cold_milli", "--methods", "exclusive"]
    args += ["--duration", "0.3", "--out", str(tmp_path), "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    env = json.loads(first.stdout)
    assert env["experiment"] == "sensitivity" and env["seed"] == 1
    assert [r["method"] for r in env["base"]] == ["exclusive"]
    assert [p["method"] for p in env["published"]] == ["exclusive"]
    (row,) = env["rows"]
    assert row["cost"] == "copy_per_byte_cold_milli"
    assert row["heavy_gbps_up"] < row["heavy_gbps_down"]
    assert row["heavy_gbps_elasticity"] < -0.2
    assert json.loads((tmp_path / "sensitivity.json").read_text())["rows"] == env["rows"]

    def written():  # a run simulated again is written again: a new inode
        return {p: p.stat().st_ino for p in (tmp_path / "checkpoints").rglob("*.npz")}

    kept = written()
    assert len(kept) == 3  # the base and the two scaled profiles
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and written() == kept
    assert json.loads(second.stdout)["rows"] == env["rows"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "threaded,nope"], "--methods 'threaded,nope': 'nope' unknown; allowed: "),
        (["--costs", "syscal"], "--costs syscal: 'syscal' is no cost of the profile; allowed: "),
        (
            ["--costs", "gro_segment", "--step", "1.01"],
            "nothing to scale (gro_segment: 43 does not move by a step of 1.01); allowed: ",
        ),
        (["--step", "0.5"], "Invalid value for '--step'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = _rtvm("sensitivity", *args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("rtvm: error: ")


def test_an_interrupted_sensitivity_run_says_what_it_kept(tmp_path, monkeypatch):
    import rtvm.sensitivity as sens

    def one_run_then_ctrl_c(evaluate, chosen):
        evaluate({})
        raise KeyboardInterrupt

    monkeypatch.setattr(sens, "run_sensitivity", one_run_then_ctrl_c)
    args = ["sensitivity", "--costs", "syscall", "--methods", "outsourcing", "--duration", "0.2"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert r.exit_code == 130
    assert f"1 runs kept in {tmp_path / 'checkpoints'}" in r.output
    assert len(list((tmp_path / "checkpoints").rglob("outsourcing.npz"))) == 1


def test_candidate_runner_runs_only_inside_its_block_and_removes_its_files():
    from rtvm.calibrate import CandidateRunner, profile_source

    runner = CandidateRunner(profile_source(None), 0.2, 1, None, ("outsourcing",))
    with pytest.raises(RuntimeError, match="outside its with block"):
        runner({})
    with runner:
        workdir = runner._workdir
        assert workdir is not None and workdir.is_dir()
    assert not workdir.exists()


def test_candidate_runner_tells_of_each_method_run_or_loaded(tmp_path):
    """What a progress bar counts: every method, simulated or loaded from a checkpoint."""
    from rtvm.calibrate import CandidateRunner, profile_source

    heard: list[str] = []
    methods = ("exclusive", "outsourcing")
    for _ in range(2):  # the second time from the checkpoints
        with CandidateRunner(
            profile_source(None), 0.2, 1, tmp_path, methods, on_method=heard.append
        ) as runner:
            runner({"syscall": 160})
    assert sorted(heard) == sorted(methods * 2)


def test_candidate_runner_many_pools_candidates_and_runs_a_repeated_one_once(tmp_path):
    """many() gives each candidate's rows in order, as one call each would, and runs a
    candidate whose profile text repeats another's once."""
    from rtvm.calibrate import CandidateRunner, profile_source
    from rtvm.kernel.profile import load_profile

    syscall = load_profile().entries["syscall"].value
    heard: list[str] = []
    with CandidateRunner(
        profile_source(None), 0.2, 1, tmp_path, ("outsourcing",), on_method=heard.append
    ) as runner:
        rows = runner.many([{}, {"syscall": 2 * syscall}, {}])
        assert runner.evaluated == 2 and heard == ["outsourcing"] * 2
        assert rows[0] == rows[2] and rows[1] != rows[0]
        assert runner({"syscall": 2 * syscall}) == rows[1]  # from its checkpoint
    assert len(list((tmp_path / "checkpoints").rglob("outsourcing.npz"))) == 2


def test_candidate_runner_compresses_idle_time_when_asked_and_keys_its_checkpoints_so(tmp_path):
    """A sweep under --compress-idle runs every candidate compressed, and its checkpoints are
    neither mistaken for full runs' nor overwrite them (and the other way round)."""
    import json as _json

    import numpy as np

    from rtvm.calibrate import CandidateRunner, profile_source

    for keep, duration, name in (
        (20, 10.0, "outsourcing-idle20.npz"),
        (None, 0.3, "outsourcing.npz"),
    ):
        with CandidateRunner(
            profile_source(None), duration, 1, tmp_path, ("outsourcing",), idle_keep=keep
        ) as runner:
            runner({})
        (kept,) = (tmp_path / "checkpoints").rglob(name)  # the other's file left alone
        with np.load(kept, allow_pickle=False) as z:
            meta = _json.loads(str(z["meta_json"][()]))
        assert meta["key"].get("idle_keep") == keep
        assert ("idle_compression" in meta["extra"]) == (keep is not None)


def test_sensitivity_refuses_compression_of_a_short_run():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "rtvm", "sensitivity", "--compress-idle", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "rtvm: error: --compress-idle 20 with --duration 2; allowed: runs of at least 10 s "
        "under idle compression"
    ]
