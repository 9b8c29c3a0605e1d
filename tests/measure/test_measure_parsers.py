"""Parsers on outputs recorded from the real tools on this machine (tests/measure/fixtures)."""

from __future__ import annotations

import json

import pytest
from measure_helpers import FIXTURES

from rtvm.measure import cyclictest, iperf3, sockperf
from rtvm.measure.tools import ToolFailed


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_cyclictest_json_and_histogram_agree():
    j = cyclictest.parse_json(_read("cyclictest-2t.json"))
    h = cyclictest.parse_histogram(_read("cyclictest-2t.hist"))
    assert len(j.threads) == len(h.threads) == 2
    assert j.version == "2.40"
    assert j.histogram() == h.histogram()
    rj, rh = j.stats().row(), h.stats().row()
    assert rj["samples"] == rh["samples"] == 6000
    for k in ("min_us", "p50_us", "p99_us", "p999_us", "max_us", "sd_us"):
        assert rj[k] == rh[k], k
    # the JSON's exact average vs the histogram's (1 us bins): close
    assert rj["mean_us"] == pytest.approx(rh["mean_us"], abs=0.1)
    assert rj["min_us"] <= rj["p50_us"] <= rj["p99_us"] <= rj["p999_us"] <= rj["max_us"]
    assert rj["overflows"] == 0


def test_cyclictest_overflows_are_counted_not_guessed():
    j = cyclictest.parse_json(_read("cyclictest-overflow.json"))
    h = cyclictest.parse_histogram(_read("cyclictest-overflow.hist"))
    assert j.overflows() == h.overflows() == 1683
    r = j.stats().row()
    assert r["samples"] == 2000 and r["max_us"] == 74.0
    assert r["p50_us"] is None and r["p99_us"] is None  # they lie among the overflows


def test_zero_padded_numbers_are_decimal():
    text = "000008 000010\n000010 000001\n# Total: 000000011\n# Histogram Overflows: 00000\n"
    h = cyclictest.parse_histogram(text).histogram()
    assert h == {8: 10, 10: 1}  # octal would read 000010 as 8


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{}", '{"thread": {}}', '{"thread": {"0": {"histogram": {"1": "x"}}}}'],
)
def test_cyclictest_bad_json_is_a_clear_error(text):
    with pytest.raises(ToolFailed, match="cyclictest"):
        cyclictest.parse_json(text)


def test_cyclictest_garbage_histogram_is_a_clear_error():
    with pytest.raises(ToolFailed, match="no histogram"):
        cyclictest.parse_histogram("Segmentation fault\n")


def test_cyclictest_argv():
    cfg = cyclictest.CyclictestConfig(
        interval_us=200, priority=90, threads_per_cpu=2, cpus=(0, 1), duration_s=3
    )
    a = cfg.argv("/tmp/x.json")
    assert "--threads=4" in a and "--affinity=0,1" in a and "--interval=200" in a
    assert "--priority=90" in a and "--json=/tmp/x.json" in a and "--duration=3" in a
    other = cyclictest.CyclictestConfig(policy="other").argv("/tmp/x.json")
    assert not any(x.startswith("--priority") for x in other)


def test_sockperf_summary_and_full_log():
    s = sockperf.parse_summary(_read("sockperf-pingpong.txt"))
    assert s.avg_latency_us and s.avg_latency_us > 0
    assert s.dropped == 0 and s.duplicated == 0
    assert s.observations and s.observations > 0
    rtt = sockperf.parse_full_log(_read("sockperf-full.csv"))
    assert rtt.size == s.observations
    # sockperf's "latency" is half the round trip
    assert rtt.mean() / 2 == pytest.approx(s.avg_latency_us, rel=0.01)


def test_sockperf_unexpected_output():
    with pytest.raises(ToolFailed, match="sockperf printed no latency summary"):
        sockperf.parse_summary("sockperf: ERROR: cannot bind\n")
    with pytest.raises(ToolFailed, match="full log"):
        sockperf.parse_full_log("packet, txTime(sec), rxTime(sec), latency(usec)\n")


def test_iperf3_json():
    r = iperf3.parse_json(_read("iperf3-tcp.json"))
    d = json.loads(_read("iperf3-tcp.json"))
    assert r.gbps == pytest.approx(d["end"]["sum_received"]["bits_per_second"] / 1e9)
    assert r.gbps > 0.1 and r.seconds > 0.5


def test_iperf3_errors():
    with pytest.raises(ToolFailed, match="Connection refused"):
        iperf3.parse_json(_read("iperf3-refused.json"))
    with pytest.raises(ToolFailed, match="not JSON"):
        iperf3.parse_json("iperf3: error - unable to connect")
