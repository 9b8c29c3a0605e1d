"""rtvm sensitivity: which cost moves which cell (units, the contract, and one mechanism)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rtvm.cli import main
from rtvm.cli_support import UserError
from rtvm.kernel.profile import load_profile
from rtvm.sensitivity import (
    CELLS,
    Perturbation,
    _parse_costs,
    elasticity,
    perturbations,
    sensitivity_rows,
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


def test_bad_input_is_one_line_and_exit_2():
    r = CliRunner().invoke(main, ["sensitivity", "--methods", "threaded,nope"])
    assert r.exit_code == 2
    assert "rtvm: error: --methods threaded,nope: nope unknown; allowed: vanilla" in r.output
