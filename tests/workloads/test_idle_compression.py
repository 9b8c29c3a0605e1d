"""Idle compression: the gap map, the removed time's LLC streaming and totals, and a real run
that stands for the same time as a full one with fewer events."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtvm.engine import Simulator
from rtvm.experiments import checkpoint
from rtvm.experiments.runner import run_method
from rtvm.kernel.llc import Llc
from rtvm.workloads.idle_compression import CfsStandIn, IdleCompression

MS = 1_000_000
MB = 1 << 20


def _compression(keep: int = 20, **kw):
    """An IdleCompression on a bare simulator whose probe reports a steady 1 byte/ns of heavy
    data and CPU 0 busy half the time."""
    sim = Simulator()
    llc = Llc(8 * MB, 64, 65)
    idle = IdleCompression(sim, llc, lambda: (sim.now, (sim.now // 2, 0)), keep, **kw)
    return sim, llc, idle


def _send(sim: Simulator, idle: IdleCompression, drawn: int) -> int:
    """The client's side: draw a gap at a send, then let the simulated part of it pass."""
    simulated = idle.gap(drawn)
    sim.run(until=sim.now + simulated)
    return simulated


def test_keep_1_simulates_every_gap_as_drawn():
    sim, _, idle = _compression(keep=1)
    assert [_send(sim, idle, g) for g in (1 * MS, 7 * MS, 10 * MS)] == [1 * MS, 7 * MS, 10 * MS]
    assert idle.removed_ns == 0
    assert sim.pending == 0


def test_gaps_beyond_the_floor_keep_one_nth_and_every_reference_gap_up_to_its_length():
    sim, _, idle = _compression(keep=20, reference=4)
    drawn = [9 * MS, 9 * MS, 800_000, 3 * MS, 5 * MS, 2 * MS, 2 * MS, 2 * MS, 9 * MS]
    got = [_send(sim, idle, g) for g in drawn]
    # gaps 4 and 8 are reference gaps (up to 3 ms); gap 0, the lead-in before the first
    # request, is not (no request to relax from); the others keep 1/20 beyond 1 ms, and one
    # under the floor stays whole
    squeezed = [1 * MS + (g - 1 * MS) // 20 for g in drawn]
    assert got == [*squeezed[:2], 800_000, squeezed[3], 3 * MS, *squeezed[5:8], 3 * MS]
    idle.gap(1 * MS)  # the last gap's removed time passes at the next send
    assert idle.removed_ns == sum(drawn) - sum(got)


@given(st.lists(st.integers(min_value=1 * MS, max_value=10 * MS), min_size=1, max_size=40))
def test_simulated_plus_removed_is_the_drawn_time(drawn):
    sim, _, idle = _compression(keep=7, reference=5)
    simulated = [_send(sim, idle, g) for g in drawn]
    idle.gap(1 * MS)
    assert all(0 < s <= g for s, g in zip(simulated, drawn, strict=True))
    assert sum(simulated) + idle.removed_ns == sum(drawn)
    assert sim.now == sum(simulated)  # time never goes back, nothing but the simulated part ran


def test_the_removed_time_streams_through_the_llc_at_the_steady_rate_and_spares_busy_lines():
    sim, llc, idle = _compression(keep=20, reference=2)
    llc.register("rt-server", 64 * 1024)
    llc.register("heavy-path", 64 * 1024)

    def heavy_streams(_):  # the heavy flows: 1 byte per ns through the LLC, their path busy
        llc.stream(10_000)
        llc.touch("heavy-path")
        return 10_000

    sim.after(0, heavy_streams)
    _send(sim, idle, 1 * MS)  # the lead-in before the first request
    _send(sim, idle, 1 * MS)  # gap 1: at the floor, whole
    llc.touch("rt-server")  # the request touched its working set at the send
    _send(sim, idle, 3 * MS)  # gap 2, a reference gap: steady from 1.5 ms on
    llc.touch("rt-server")  # the next request
    before = llc.streamed
    simulated = idle.gap(9 * MS)  # keeps 1.4 ms, removes 7.6 ms
    assert idle._steady_all.streamed / idle._steady_all.ns == pytest.approx(1.0, rel=0.01)
    sim.run(until=sim.now + simulated)
    idle.gap(1 * MS)  # its removed time passes now, before the next request
    removed = 9 * MS - (1 * MS + 8 * MS // 20)
    assert llc.streamed - before == pytest.approx(1.4 * MS + removed, rel=0.01)
    rt, heavy = llc.owners["rt-server"], llc.owners["heavy-path"]
    # the RT set slept through the whole gap: it pays for all of it; the heavy path's lines
    # stayed resident through the removed time, as if it had kept touching them
    assert llc.streamed - rt.last_stream_mark == pytest.approx(9 * MS, rel=0.01)
    assert llc.streamed - heavy.last_stream_mark <= 10_000 + removed * 0.01
    lines = 64 * 1024 // 64
    stall = llc.touch("rt-server")
    assert stall == round(lines * (1 - math.exp(-9 * MS / (8 * MB)))) * 65


def test_fast_forward_keeps_only_owners_touched_since_the_mark():
    llc = Llc(8 * MB, 64, 65)
    llc.register("asleep", 6400)
    llc.register("busy", 6400)
    llc.stream(1000)
    mark = llc.streamed
    llc.touch("busy")
    llc.fast_forward(16 * MB, mark)
    assert llc.touch("busy") == 0
    assert llc.touch("asleep") == round(100 * (1 - math.exp(-(16 * MB + 1000) / (8 * MB)))) * 65


def test_represented_adds_the_removed_time_at_the_steady_rates():
    sim, _, idle = _compression(keep=10, reference=2)
    for g in (3 * MS, 6 * MS, 3 * MS, 6 * MS):
        _send(sim, idle, g)
    idle.open_window()
    for g in (3 * MS, 6 * MS):
        _send(sim, idle, g)
    idle.gap(1 * MS)
    removed = idle.window_removed_ns
    # a gap's removed time passes just before the next request: the window holds that of the
    # gap before it opened and of its own second gap (its first is a reference gap, in full)
    assert removed == 2 * (6 * MS - (1 * MS + 5 * MS // 10))
    assert idle.steady.ns == 1_500_000  # the window's one reference gap, from 1.5 ms on
    sim_ns, heavy, busy = idle.represented(4_000_000, 123, [1000, 0])
    # the probe's steady rates: 1 heavy byte and half a CPU-0 ns per ns
    assert (sim_ns, heavy, busy) == (4_000_000 + removed, 123 + removed, [1000 + removed // 2, 0])


def test_the_removed_time_moves_cfs_clocks_for_the_steady_threads_only():
    """min_vruntime advances at its steady rate through the removed time, and so do the
    threads that ran in the steady state; a sleeper keeps its vruntime, so it wakes as far
    behind as after the drawn gap (its sleeper credit is a full run's)."""
    sim = Simulator()
    cpu = SimpleNamespace(rq=SimpleNamespace(min_vruntime=0), curr=None)
    heavy = SimpleNamespace(vruntime=0, normal_prio=0, cpu=cpu, last_ran_ns=0, state="R")
    sleeper = SimpleNamespace(vruntime=-7, normal_prio=0, cpu=cpu, last_ran_ns=-1, state="S")
    fifo = SimpleNamespace(vruntime=5, normal_prio=50, cpu=cpu, last_ran_ns=0, state="R")
    cpu.curr = heavy

    def run_heavy(_):  # the heavy thread runs at half speed in vruntime (a shared CPU)
        heavy.vruntime += 50_000
        cpu.rq.min_vruntime = heavy.vruntime
        return 100_000

    sim.after(100_000, run_heavy)
    cfs = CfsStandIn([cpu], [heavy, sleeper, fifo])
    idle = IdleCompression(sim, Llc(8 * MB, 64, 65), lambda: (0, (0,)), 10, reference=2, cfs=cfs)
    for g in (1 * MS, 1 * MS, 3 * MS, 6 * MS):  # the lead-in, a full gap, a reference gap
        _send(sim, idle, g)
    assert cfs.steady_tasks == [heavy]  # the sleeper did not run, the FIFO one is not CFS
    before = (cpu.rq.min_vruntime, heavy.vruntime)
    idle.gap(1 * MS)  # the 6 ms gap's removed 4.5 ms pass now
    removed = 6 * MS - (1 * MS + 5 * MS // 10)
    assert (cpu.rq.min_vruntime, heavy.vruntime) == (
        before[0] + removed // 2,
        before[1] + removed // 2,
    )
    assert sleeper.vruntime == -7 and fifo.vruntime == 5


def test_a_steady_thread_that_missed_an_interval_keeps_pace():
    """Membership is by at least half of the steady intervals: a busy heavy IRQ thread that
    did not run in the latest one is still moved on with its runqueue (left behind, it would
    take extra CPU after the gap), while a thread that ran in none stays behind unless it is
    runnable as the removed time passes."""
    cpu = SimpleNamespace(rq=SimpleNamespace(min_vruntime=0), curr=None)
    busy = SimpleNamespace(vruntime=0, normal_prio=0, cpu=cpu, last_ran_ns=-1, state="S")
    idle = SimpleNamespace(vruntime=0, normal_prio=0, cpu=cpu, last_ran_ns=-1, state="S")
    cfs = CfsStandIn([cpu], [busy, idle])
    busy.last_ran_ns = 10
    cpu.rq.min_vruntime = 100
    cfs.add((0,), 0, 1000)  # busy ran in the first interval...
    cfs.add((100,), 2000, 1000)  # ...not in the second
    assert cfs.steady_tasks == [busy]
    cfs.advance(2000)  # min_vruntime advanced 100 in 2000 ns of steady state
    assert (cpu.rq.min_vruntime, busy.vruntime, idle.vruntime) == (200, 100, 0)
    cfs.add((200,), 5000, 1000)  # one interval of three: no longer part of the steady state
    assert cfs.steady_tasks == []
    idle.state = "R"  # runnable as the removed time passes (a ksoftirqd just woken): it would
    cfs.advance(3000)  # have run in it, so it keeps pace; the sleeper does not
    assert (cpu.rq.min_vruntime, busy.vruntime, idle.vruntime) == (300, 100, 100)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        _compression(keep=0)
    with pytest.raises(ValueError, match="reference must be at least 1"):
        _compression(reference=0)
    with pytest.raises(ValueError, match="settle_ns < floor_ns"):
        _compression(settle_ns=2 * MS)
    with pytest.raises(ValueError, match="relax_ns < reference_ns"):
        _compression(relax_ns=3 * MS)
    with pytest.raises(ValueError, match="floor_ns <= reference_ns"):
        _compression(floor_ns=4 * MS)


def test_the_testbed_refuses_compression_it_could_not_apply():
    from rtvm.methods import METHODS
    from rtvm.testbed import build_testbed

    with pytest.raises(ValueError, match="idle_keep must be at least 1"):
        build_testbed(METHODS["outsourcing"], idle_keep=0)
    with pytest.raises(ValueError, match="not request_times"):
        build_testbed(METHODS["outsourcing"], request_times=[1 * MS], idle_keep=20)
    with pytest.raises(ValueError, match="at least 10 s"):
        run_method("outsourcing", 2.0, idle_keep=20)
    sparse = {"interarrival_min_ns": 1 * MS, "interarrival_max_ns": 1000 * MS}
    with pytest.raises(ValueError, match="~2 ms in 10 s: run at least 535 s"):
        run_method("outsourcing", 10.0, idle_keep=20, rr=sparse)


def test_the_expected_steady_sample_follows_the_gaps():
    from rtvm.workloads.idle_compression import expected_steady_ns

    # 1-10 ms gaps: 10 s is ~1818 gaps, ~114 reference gaps, each steady for
    # E[max(0, min(g, 3 ms) - 1.5 ms)] = (1.125 + 10.5) / 9 ms
    assert expected_steady_ns(10_000 * MS, 1 * MS, 10 * MS) == pytest.approx(
        10_000 / 5.5 / 16 * (1.125 + 10.5) / 9 * MS
    )
    assert expected_steady_ns(1000 * MS, 2 * MS, 2 * MS) == pytest.approx(500 / 16 * 0.5 * MS)
    assert expected_steady_ns(1000 * MS, 1 * MS, 1 * MS) == 0  # no gap outlasts the relaxing
    # sparse gaps get reference gaps as long as their floor plus the relaxing (11.5 ms here)
    assert expected_steady_ns(1000 * MS, 10 * MS, 10 * MS) == pytest.approx(100 / 16 * 8.5 * MS)


def test_the_floor_is_the_workloads_shortest_gap_and_at_least_1_ms():
    from rtvm.methods import METHODS
    from rtvm.testbed import build_testbed
    from rtvm.workloads.rr import RrConfig

    slow = RrConfig(interarrival_min_ns=4 * MS, interarrival_max_ns=20 * MS)
    tb = build_testbed(METHODS["outsourcing"], rr=slow, idle_keep=20)
    assert tb.idle is not None
    assert tb.idle.floor_ns == 4 * MS and tb.idle.reference_ns >= 4 * MS + tb.idle.relax_ns
    fast = RrConfig(interarrival_min_ns=100_000, interarrival_max_ns=2 * MS)
    assert build_testbed(METHODS["outsourcing"], rr=fast, idle_keep=20).idle.floor_ns == 1 * MS


def test_a_compressed_run_stands_for_the_same_time_with_far_fewer_events():
    """Exclusive: its RT latency rests on what the gaps' streaming takes from the LLC, and its
    RT CPU is idle between requests, so time not added back would show there at once."""
    full = run_method("exclusive", 10.0, seed=2)
    fast = run_method("exclusive", 10.0, seed=2, idle_keep=20)
    ic = fast.extra["idle_compression"]
    assert ic["keep"] == 20 and ic["window_steady_s"] > 0.1
    assert ic["simulated_s"] + ic["removed_s"] == pytest.approx(10.0, abs=0.03)
    warm_sim = ic["simulated_s"] - ic["window_simulated_s"]
    assert ic["window_represented_s"] == pytest.approx(
        ic["window_simulated_s"] + ic["window_removed_s"]
    )
    assert 0.09 < warm_sim < 0.11 and ic["window_represented_s"] > 9.3
    assert fast.events < full.events / 3
    # the same requests (the same drawn gaps) over the same path
    assert abs(fast.row["samples"] - full.row["samples"]) <= 6
    for key, rel in (("mean_us", 0.01), ("p99_us", 0.02), ("sd_us", 0.05), ("heavy_gbps", 0.01)):
        assert fast.row[key] == pytest.approx(full.row[key], rel=rel), key
    # the RT CPU: ~1.4% busy in full; counted over simulated time alone it would read ~4x that.
    # The heavy CPU: ~100% busy; without the removed time's busy time it would read ~25%
    full_cpu, fast_cpu = full.row["cpu_util_pct_by_cpu"], fast.row["cpu_util_pct_by_cpu"]
    assert fast_cpu[1] == pytest.approx(full_cpu[1], abs=0.2)
    assert fast_cpu[0] == pytest.approx(full_cpu[0], abs=0.5)
    assert fast.row["cpu_util_pct"] == pytest.approx(full.row["cpu_util_pct"], abs=0.5)
    assert "idle_compression" not in full.extra


def test_a_compressed_run_is_deterministic():
    a = run_method("outsourcing", 10.0, seed=4, idle_keep=20)
    b = run_method("outsourcing", 10.0, seed=4, idle_keep=20)
    assert a.row == b.row and a.events == b.events and a.extra == b.extra
    assert (a.latencies_us == b.latencies_us).all()


def test_compression_changes_the_checkpoint_key_but_not_a_full_runs():
    full = checkpoint.run_key("simple-rt", "vanilla", 1, 30.0, "sha")
    assert checkpoint.run_key("simple-rt", "vanilla", 1, 30.0, "sha", 1) == full
    assert "idle_keep" not in full
    assert checkpoint.run_key("simple-rt", "vanilla", 1, 30.0, "sha", 20)["idle_keep"] == 20


def _rtvm(*args):
    return subprocess.run(
        [sys.executable, "-m", "rtvm", *args], capture_output=True, text=True, timeout=300
    )


def test_reproduce_says_it_compressed_and_refuses_a_bad_setting():
    r = _rtvm("reproduce", "simple-rt", "--duration", "10", "--compress-idle", "20", "--json")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["scenario"]["compress_idle"] == 20
    assert all(d["idle_compression"]["keep"] == 20 for d in env["details"].values())
    bad = _rtvm("reproduce", "simple-rt", "--compress-idle", "0")
    assert bad.returncode == 2
    assert "--compress-idle" in bad.stderr and "0" in bad.stderr
    short = _rtvm("reproduce", "simple-rt", "--quick", "--compress-idle", "20")
    assert short.returncode == 2 and len(short.stderr.strip().splitlines()) == 1
    assert "at least 10 s" in short.stderr


def test_a_scenario_can_ask_for_compression(tmp_path):
    sc = tmp_path / "fast.toml"
    sc.write_text('method = "outsourcing"\nduration_s = 10\ncompress_idle = 10\n')
    r = _rtvm("sim", str(sc), "--json")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["scenario"]["compress_idle"] == 10
    assert env["details"]["idle_compression"]["keep"] == 10
    assert env["rows"][0]["samples"] > 0

    short = tmp_path / "short.toml"
    short.write_text('method = "outsourcing"\nduration_s = 2\ncompress_idle = 10\n')
    r = _rtvm("sim", str(short))
    assert r.returncode == 2 and "at least 10 s" in r.stderr
