"""Diagnostic, not part of rtvm: what happened on the host while one of a method's slowest
requests was in flight (docs/model.md, "Where the response time goes").

Runs METHOD on the simple-rt testbed for SECONDS with the tracer on, takes the RANK-th slowest
completed request (1: the slowest; requests of the first 0.1 s are left out, as the runs' own
warm-up does), and prints its path probes (us after it reached the NIC) and then, in time order,
every CPU slice (thread, hard IRQ, softirq) and every lock wait that overlaps it, from 5 us
before it arrived. The same slices are in the Perfetto trace that ``rtvm sim --trace`` writes;
this prints the ones that matter for one request.

    python docs/diagnostics/slowest_request.py threaded            # 1 s, the slowest request
    python docs/diagnostics/slowest_request.py vanilla 3 5         # 3 s, the 5th slowest
"""

from __future__ import annotations

import sys
from typing import Any

from rtvm.kernel.trace import ChromeTracer
from rtvm.methods import METHODS
from rtvm.testbed import build_testbed
from rtvm.workloads.rr import PATH_PROBES, RrRecord

WARMUP_NS = 100_000_000
LEAD_US = 5.0  # show this much before the request reached the NIC


def slowest(records: list[RrRecord], rank: int) -> RrRecord:
    done = [r for r in records if r.latency_ns is not None and r.nic_rx >= WARMUP_NS]
    if len(done) < rank:
        raise SystemExit(f"only {len(done)} requests after the warm-up; ask for a longer run")
    return sorted(done, key=lambda r: r.latency_ns or 0)[-rank]


def overlapping(trace: dict[str, Any], start_us: float, end_us: float) -> list[tuple]:
    """(start us, duration us, track, kind, name) of the slices overlapping [start, end]."""
    tracks = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in trace["traceEvents"]
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    rows = [
        (e["ts"], e["dur"], tracks.get((e["pid"], e["tid"]), "?"), e["cat"], e["name"])
        for e in trace["traceEvents"]
        if e.get("ph") == "X" and e["ts"] + e["dur"] >= start_us and e["ts"] <= end_us
    ]
    return sorted(rows)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in METHODS:
        print(f"usage: slowest_request.py METHOD [SECONDS] [RANK]; methods: {', '.join(METHODS)}")
        return 2
    method = argv[0]
    seconds = float(argv[1]) if len(argv) > 1 else 1.0
    rank = int(argv[2]) if len(argv) > 2 else 1
    tracer = ChromeTracer()
    tb = build_testbed(METHODS[method], seed=1, tracer=tracer)
    tb.sim.run(until=int(seconds * 1e9))
    r = slowest(tb.client.stats.completed(), rank)
    t0 = r.nic_rx / 1000.0
    print(f"{method}, seed 1, {seconds:g} s: request {r.req_id}, rank {rank} from the slowest,")
    print(f"{(r.latency_ns or 0) / 1000:.1f} us from the NIC to the wire. Its probes:")
    for probe in PATH_PROBES:
        at = getattr(r, probe)
        if at is not None:
            print(f"  {probe:>10}  +{at / 1000 - t0:7.1f} us")
    print("What ran meanwhile (start after the NIC, duration, us; track; kind; name):")
    end = (r.wire_out or r.nic_rx) / 1000.0
    for ts, dur, track, kind, name in overlapping(tracer.to_json(), t0 - LEAD_US, end):
        print(f"  +{ts - t0:7.1f} {dur:6.1f}  {track:>12}  {kind:8} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
