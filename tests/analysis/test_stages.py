"""The response time stage by stage: stages between fired probes, the tail's share."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtvm.analysis.stages import path_stages, probes_fired

PROBES = ("a", "b", "c", "d")


def _cols(rows: list[tuple[int, ...]]) -> dict[str, np.ndarray]:
    arr = np.array(rows, dtype=np.int64)
    return {p: arr[:, i].copy() for i, p in enumerate(PROBES)}


def test_stages_are_the_gaps_between_probes_and_the_tail_is_the_slowest_1pct():
    # 99 requests of 10 us (2 + 3 + 5), one of 100 us whose extra 90 us is all in b -> c
    rows = [(0, 2_000, 5_000, 10_000)] * 99 + [(0, 2_000, 95_000, 100_000)]
    stages = path_stages(_cols(rows), PROBES)
    assert [(s["from"], s["to"]) for s in stages] == [("a", "b"), ("b", "c"), ("c", "d")]
    ab, bc, cd = stages
    assert ab["mean_us"] == 2.0 and cd["mean_us"] == 5.0
    assert bc["mean_us"] == pytest.approx(3.9) and bc["max_us"] == 93.0
    # percentiles by rank ceil(n q): p50 and p99 are the 50th and 99th values, both 3 us
    assert bc["p50_us"] == 3.0 and bc["p99_us"] == 3.0
    # the tail (at or above the p99 response time, rank ceil(0.99 n) = 99: 10 us) is every
    # request here, so the tail means are the means and there is no excess to share
    assert bc["tail_mean_us"] == bc["mean_us"] and ab["tail_mean_us"] == 2.0
    assert all(s["share_of_tail_excess"] is None for s in stages)
    # with two slow requests the p99 is 100 us and the tail is those two
    rows2 = rows[:98] + [(0, 2_000, 95_000, 100_000)] * 2
    ab2, bc2, cd2 = path_stages(_cols(rows2), PROBES)
    assert bc2["tail_mean_us"] == 93.0 and ab2["tail_mean_us"] == 2.0
    assert bc2["share_of_tail_excess"] == pytest.approx(1.0, abs=1e-3)
    assert ab2["share_of_tail_excess"] == 0.0 and cd2["share_of_tail_excess"] == 0.0
    assert sum(s["share_of_mean"] for s in (ab2, bc2, cd2)) == pytest.approx(1.0, abs=1e-3)


def test_a_probe_the_path_never_passes_merges_its_two_stages():
    rows = [(0, -1, 5_000, 10_000 + i) for i in range(50)]
    stages = path_stages(_cols(rows), PROBES)
    assert [(s["from"], s["to"]) for s in stages] == [("a", "c"), ("c", "d")]
    assert probes_fired(_cols(rows), PROBES) == ["a", "c", "d"]


def test_a_probe_missing_on_a_few_requests_leaves_them_out_of_its_stages_only():
    rows = [(0, 2_000, 5_000, 10_000)] * 9 + [(0, -1, 5_000, 10_000)]
    ab, bc, cd = path_stages(_cols(rows), PROBES)
    assert ab["samples"] == 9 and bc["samples"] == 9 and cd["samples"] == 10


def test_no_stages_without_the_response_ends_or_requests():
    assert path_stages(_cols([(0, 1, 2, -1)] * 3), PROBES) == []
    assert path_stages({p: np.zeros(0, dtype=np.int64) for p in PROBES}, PROBES) == []


@given(st.lists(st.tuples(*(st.integers(0, 50_000) for _ in range(3))), min_size=1, max_size=200))
def test_property_stage_means_add_up_to_the_mean_response_time(gaps):
    rows = []
    for g1, g2, g3 in gaps:
        rows.append((0, g1, g1 + g2, g1 + g2 + g3))
    stages = path_stages(_cols(rows), PROBES)
    total = np.mean([r[-1] for r in rows]) / 1000.0
    assert sum(s["mean_us"] for s in stages) == pytest.approx(total, abs=0.01)
    for s in stages:  # a tail mean is a mean over some requests: within the stage's range
        assert s["tail_mean_us"] <= s["max_us"] + 1e-6
    # the stages share the tail's whole excess over the mean response, when it has one
    shares = [s["share_of_tail_excess"] for s in stages]
    if shares[0] is not None:
        assert sum(shares) == pytest.approx(1.0, abs=0.01)


def test_the_stage_figure_draws_methods_without_stages_or_tails(tmp_path):
    from rtvm.report.plots import stage_bars

    one = {"from": "nic_rx", "to": "wire_out", "mean_us": 10.0, "tail_mean_us": None}
    odd = {"from": "a", "to": "b", "mean_us": None, "tail_mean_us": 3.0}  # no title known
    p = stage_bars({"m1": [one, odd], "m2": []}, tmp_path / "f.png")
    assert p.stat().st_size > 0
    assert stage_bars({}, tmp_path / "empty.png").stat().st_size > 0
