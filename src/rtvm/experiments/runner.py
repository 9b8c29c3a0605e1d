"""Run one method on the testbed and summarise it (one row of DESIGN.md section 7).

Module-level functions with plain arguments, so that a process pool can run methods in
parallel. Heavy throughput and CPU utilisation are taken over [warmup, end] so the senders'
ramp-up does not count; every completed RT request counts. Under idle compression the window
stands for more time than it simulates, and the figures are per represented second; the
details that count events or thread time (``SIMULATED_TIME_DETAILS``) are per simulated time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.analysis.stages import path_stages, us_between
from rtvm.analysis.stats import from_samples
from rtvm.kernel.profile import CostProfile, load_profile
from rtvm.methods import METHODS
from rtvm.testbed import Testbed, build_testbed
from rtvm.virt import Vm
from rtvm.workloads.idle_compression import MIN_DURATION_S, MIN_STEADY_NS, expected_steady_ns
from rtvm.workloads.rr import PATH_PROBES, RrConfig, rr_config

SEC = 1_000_000_000


@dataclass
class MethodResult:
    row: dict[str, Any]
    latencies_us: np.ndarray
    segments_us: dict[str, np.ndarray]
    wall_s: float
    events: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: per completed request, in completion order: ``nic_rx_at`` (absolute simulated ns the
    #: request reached the NIC) and each later path probe's ns after it (-1 where the probe did
    #: not fire), so any stage of any one request can be looked up, or found in a trace;
    #: read-only views of the client's columns in the process that ran it, copies once they
    #: come back from a worker process or a checkpoint
    probes_ns: dict[str, np.ndarray] = field(default_factory=dict)


#: The paper's lightweight probes (DESIGN.md section 3): host receive = NIC interrupt to VM
#: entry, guest = VM entry to VM exit when sending, host send = VM exit to the wire.
SEGMENTS: dict[str, tuple[str, str]] = {
    "host_receive_us": ("nic_rx", "vm_entry"),
    "guest_us": ("vm_entry", "vm_exit"),
    "host_send_us": ("vm_exit", "wire_out"),
}


def _segment_row(v: np.ndarray) -> dict[str, float | int | None]:
    """A segment's summary: where a method's response time goes, and where its tail does."""
    s = from_samples(v).row()
    return {k: s[k] for k in ("mean_us", "p50_us", "p99_us", "max_us", "samples")}


def _snapshot(tb: Any) -> tuple[list[int], int, list[dict[str, int]], dict[str, int]]:
    irq_over: dict[str, int] = {}
    for c in tb.kernel.cpus:
        c.account()
        for name, ns in c.irq_over.items():
            irq_over[name] = irq_over.get(name, 0) + ns
    return (
        [c.busy_total_ns for c in tb.kernel.cpus],
        sum(h.consumed_bytes for h in tb.heavies),
        [dict(c.by_name) for c in tb.kernel.cpus],
        irq_over,
    )


def _interrupted_us(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Per thread, the interrupt time (hard IRQs, the softirqs a vanilla kernel runs on their
    exit, IPIs, ticks, VM exits for them) taken on its CPU while it was current, in us over
    the window, largest first: what interrupt-first processing stole from it."""
    out = {n: (ns - before.get(n, 0)) / 1000.0 for n, ns in after.items()}
    return {n: round(us, 1) for n, us in sorted(out.items(), key=lambda kv: -kv[1]) if us >= 1}


def _cpu_by_thread_pct(
    before: list[dict[str, int]], after: list[dict[str, int]], window: int
) -> dict[str, list[float]]:
    """Per thread (or interrupt), its share of each CPU over the window, in percent: where the
    scheduler placed the work (the threaded testbed settles into one of two placements)."""
    names = sorted({n for d in after for n in d})
    out = {}
    for n in names:
        shares = [
            100.0 * (a.get(n, 0) - b.get(n, 0)) / window for b, a in zip(before, after, strict=True)
        ]
        if any(x >= 0.01 for x in shares):
            out[n] = [round(x, 2) for x in shares]
    return out


def _interrupts(tb: Testbed) -> dict[str, dict[str, int]]:
    """/proc/interrupts per CPU over the whole run: LOC (the tick), RES (reschedule IPIs
    taken by a busy CPU), CAL and IWI (NO_HZ_FULL kicks) and device interrupts (the NICs)."""
    return {
        f"cpu{c.id}": {
            "LOC": c.nr_ticks,
            "RES": c.nr_resched_ipis,
            "CAL": c.nr_call_function_ipis,
            "IWI": c.nr_irq_work_ipis,
            "device": c.nr_irqs
            - c.nr_ticks
            - c.nr_resched_ipis
            - c.nr_call_function_ipis
            - c.nr_irq_work_ipis,
        }
        for c in tb.kernel.cpus
    }


def _vms(tb: Testbed) -> list[Vm]:
    return [tb.vm, *(h.vm for h in tb.heavies)]


def _net_rx_passes(raw: dict[str, list[int]]) -> dict[str, dict[str, float | int]]:
    """Per context, its net_rx_action passes over the whole run (warm-up included): how many,
    packets per pass (mean, most), and how long each took from start to end, preemption and
    interrupts included (mean, longest, us). On the threaded testbed a heavy IRQ thread's pass
    is what the RT IRQ thread waits for on the NET_RX lock."""
    out: dict[str, dict[str, float | int]] = {}
    for name, (n, frames, frames_max, ns, ns_max) in sorted(raw.items()):
        out[name] = {
            "passes": n,
            "packets_mean": round(frames / n, 1),
            "packets_max": frames_max,
            "us_mean": round(ns / n / 1000, 2),
            "us_max": round(ns_max / 1000, 2),
        }
    return out


#: how far a compressed run simulates between looks at its time (ns): it ends at most the
#: removed time of this much simulation (a gap or two, ~10 ms) past its length
_CHUNK_NS = 2_000_000


#: the details of a compressed run that count simulated time only (events, thread shares)
SIMULATED_TIME_DETAILS = (
    "cpu_by_thread_pct",
    "interrupted_us_by_thread",
    "interrupts",
    "net_rx_passes",
    "wakeup_latency",
    "vm_exits",
    "llc",
    "lock_waits",
    "drops",
)


def _run_to(tb: Testbed, sim_end: int, end: int) -> None:
    """Simulate until ``sim_end`` ns of simulated time or ``end`` ns of time have passed,
    whichever comes first: time is simulated time plus, under idle compression, the removed
    time (the same for a full run)."""
    idle = tb.idle
    if idle is None:
        tb.sim.run(until=min(sim_end, end))
        return
    while (left := min(sim_end - tb.sim.now, end - tb.sim.now - idle.removed_ns)) > 0:
        tb.sim.run(until=tb.sim.now + min(left, _CHUNK_NS))


def _check_compressible(duration_s: float, rr: RrConfig) -> None:
    """Refuse idle compression of a run whose steady-interval sample would be too small for
    its throughput and CPU figures: too short a run, or too sparse requests."""
    if duration_s < MIN_DURATION_S:
        raise ValueError(
            f"idle compression needs runs of at least {MIN_DURATION_S:g} s, got {duration_s:g} s "
            "(its throughput and CPU figures rest on a sample of steady intervals)"
        )
    lo, hi = rr.interarrival_min_ns, rr.interarrival_max_ns
    steady = expected_steady_ns(int(duration_s * SEC), lo, hi)
    if steady < MIN_STEADY_NS:
        need = duration_s * MIN_STEADY_NS / steady if steady > 0 else float("inf")
        raise ValueError(
            f"idle compression needs ~{MIN_STEADY_NS / 1e6:g} ms of steady intervals; these "
            f"gaps give ~{steady / 1e6:.0f} ms in {duration_s:g} s: run at least {need:.0f} s "
            "or in full"
        )


def run_method(
    method: str,
    duration_s: float,
    seed: int = 1,
    profile: str | Path | None = None,
    overrides: dict[str, int] | None = None,
    warmup_s: float = 0.1,
    trace_path: str | None = None,
    rr: dict[str, int] | None = None,
    testbed: dict[str, Any] | None = None,
    idle_keep: int | None = None,
    slowest: int = 0,
) -> MethodResult:
    """Simulate ``method`` for ``duration_s`` (simulated seconds) and summarise it.

    ``idle_keep`` > 1 compresses the RT gaps (workloads.idle_compression): the run simulates
    until simulated plus removed time reaches ``duration_s``, and throughput and CPU
    utilisation are per represented second.
    ``slowest`` > 0 keeps that many of the slowest responses after the warm-up, each with what
    ran on the host meanwhile (analysis.slowest; ``extra["slowest"]``), through a flight
    recorder in place of a trace file (not both)."""
    costs: CostProfile = load_profile(profile)
    if overrides:
        costs = costs.with_values(**overrides)
    tracer: Any = None
    if trace_path and slowest:
        raise ValueError("a trace file and the slowest responses; allowed: one of them")
    if trace_path:
        from rtvm.kernel.trace import ChromeTracer

        tracer = ChromeTracer()
    elif slowest:
        from rtvm.kernel.trace import FlightRecorder

        tracer = FlightRecorder()
    rr_cfg = rr_config(costs, **(rr or {}))
    if idle_keep is not None and idle_keep > 1:
        _check_compressible(duration_s, rr_cfg)
    t0 = time.perf_counter()
    tb = build_testbed(
        METHODS[method],
        seed=seed,
        costs=costs,
        rr=rr_cfg,
        tracer=tracer,
        idle_keep=idle_keep,
        **(testbed or {}),
    )
    end = int(duration_s * SEC)
    warm = min(int(warmup_s * SEC), end // 2)
    # the senders' ramp-up, in simulated time (under compression it stands for more time, and
    # it ends early should that reach half the run)
    _run_to(tb, warm, end // 2)
    warm = tb.sim.now
    if tb.idle is not None:
        tb.idle.open_window()
    tb.kernel.wakeup_latency.clear()  # the window's wakeups only, as the latencies are
    kept = None
    if slowest:
        from rtvm.analysis.slowest import SlowestResponses

        kept = SlowestResponses(tb.sim, tracer, slowest, since_ns=warm)
        tb.client.on_complete = kept.request_done
    busy0, bytes0, names0, irq_over0 = _snapshot(tb)
    _run_to(tb, end, end)
    busy1, bytes1, names1, irq_over1 = _snapshot(tb)
    wall = time.perf_counter() - t0
    if tracer is not None and trace_path:
        tracer.write(trace_path)
    tb.client.on_complete = None
    sim_window = tb.sim.now - warm
    busy_d = [b1 - b0 for b0, b1 in zip(busy0, busy1, strict=True)]
    heavy_d = bytes1 - bytes0
    window = sim_window
    if tb.idle is not None:
        window, heavy_d, busy_d = tb.idle.represented(sim_window, heavy_d, busy_d)
    col = tb.client.stats.path_ns()  # the run is over: views, no copies
    # the stages first: their per-stage arrays come and go before the kept ones are made,
    # which keeps the peak memory of a long run down (the memory bar)
    stages = path_stages(col, PATH_PROBES)
    lat = col["wire_out"] / 1000.0
    seg = {name: us_between(col, a, b) for name, (a, b) in SEGMENTS.items()}
    by_cpu = [100.0 * b / window for b in busy_d]
    stats = from_samples(lat).row()
    row: dict[str, Any] = {"method": method}
    for key in ("mean_us", "p50_us", "p99_us", "p999_us", "max_us", "sd_us", "samples"):
        row[key] = stats[key]
    row["heavy_gbps"] = round(heavy_d * 8 / window, 3)
    row["cpu_util_pct"] = round(sum(by_cpu) / len(by_cpu), 2)
    row["cpu_util_pct_by_cpu"] = [round(x, 2) for x in by_cpu]
    row["lost"] = tb.client.stats.sent - len(tb.client.stats)
    extra = {
        "drops": dict(tb.kernel.drops),
        "lock_waits": {k: list(v) for k, v in tb.kernel.lock_stats.items()},
        "net_rx_passes": _net_rx_passes(tb.kernel.net_rx_passes),
        "interrupts": _interrupts(tb),
        "vm_exits": {vm.name: dict(sorted(vm.exits_by_reason.items())) for vm in _vms(tb)},
        "llc": {
            o.name: {
                "references": o.references,
                "misses": o.misses,
                "miss_ratio": round(o.miss_ratio, 4),
            }
            for o in tb.llc.owners.values()
        },
        "segments": {name: _segment_row(v) for name, v in seg.items()},
        "stages": stages,
        "cpu_by_thread_pct": _cpu_by_thread_pct(names0, names1, sim_window),
        "interrupted_us_by_thread": _interrupted_us(irq_over0, irq_over1),
        "wakeup_latency": {
            name: lat.summary() for name, lat in sorted(tb.kernel.wakeup_latency.items())
        },
        "profile_sha256": costs.sha256,
    }
    if kept is not None:
        extra["slowest"] = [r.as_dict() for r in kept.slowest()]
    if tb.idle is not None:
        extra["idle_compression"] = {
            **tb.idle.summary(),
            "simulated_s": tb.sim.now / SEC,
            "window_simulated_s": sim_window / SEC,
            "window_represented_s": window / SEC,
            "per_simulated_time": list(SIMULATED_TIME_DETAILS),
        }
    # the probe columns are views of the client's own (no copies: the memory bar), kept as
    # they are; only the NIC's zeros are swapped for its absolute times
    probes = {"nic_rx_at": tb.client.stats.nic_rx_ns()}
    probes.update((p, col[p]) for p in PATH_PROBES[1:])
    return MethodResult(row, lat, seg, wall, tb.sim.events_processed, extra, probes)
