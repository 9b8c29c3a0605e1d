"""The slowest responses of a run, each with what ran on the host while it was in flight.

ftrace's latency tracers keep the trace of the worst case seen so far (``tracing_max_latency``
and its snapshot); this does the same for RT responses. A flight recorder (kernel.trace) keeps
the recent CPU slices and lock waits in ring buffers; when a response completes among the
``keep`` slowest so far (after the warm-up), the slices that overlap it, from ``LEAD_NS`` before
its request reached the NIC to the moment its last bit left, are copied a little later, once
what ran at its end has ended. Memory stays fixed however long the run: ``keep`` copies of a
few hundred slices. A run with it gives the same results as without: it only observes.

What it answers is the question a surprising tail raises: what was the CPU doing instead
(`rtvm sim --slowest K`; the JSON's ``details.slowest``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from rtvm.kernel.trace import FlightRecorder, Slice
from rtvm.workloads.rr import PATH_PROBES, RrRecord

LEAD_NS = 5_000  # show this much before the request reached the NIC
SETTLE_NS = 200_000  # copy this long after the response left: the slices at its end are over


@dataclass(order=True)
class SlowResponse:
    """One slow response: its probes (ns after the NIC) and what ran meanwhile."""

    latency_ns: int
    req_id: int
    nic_rx_ns: int = field(compare=False)
    probes_ns: dict[str, int] = field(compare=False)
    ran: list[Slice] = field(compare=False)
    complete: bool = field(compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON: times in us after the request reached the NIC."""
        t0 = self.nic_rx_ns
        return {
            "req_id": self.req_id,
            "latency_us": round(self.latency_ns / 1000, 2),
            "nic_rx_at_ns": t0,
            "probes_us": {p: round(ns / 1000, 2) for p, ns in self.probes_ns.items()},
            "ran": [
                {
                    "start_us": round((s - t0) / 1000, 2),
                    "dur_us": round((e - s) / 1000, 2),
                    "track": track,
                    "kind": kind,
                    "name": name,
                }
                for s, e, track, kind, name in self.ran
            ],
            "complete": self.complete,
        }


class SlowestResponses:
    """Keeps the ``keep`` slowest responses that reached the NIC at or after ``since_ns``."""

    def __init__(self, sim: Any, recorder: FlightRecorder, keep: int, since_ns: int = 0) -> None:
        if keep < 1:
            raise ValueError(f"keep {keep}: allowed >= 1")
        self.sim = sim
        self.recorder = recorder
        self.keep = keep
        self.since_ns = since_ns
        self._heap: list[SlowResponse] = []  # the fastest kept one first
        self._pending = 0  # copies scheduled, not yet taken

    def request_done(self, rec: RrRecord) -> None:
        """RrClient.on_complete: schedule a copy if this response may be among the slowest."""
        lat = rec.latency_ns
        if lat is None or rec.nic_rx < self.since_ns:
            return
        full = len(self._heap) + self._pending >= self.keep
        if full and self._heap and lat <= self._heap[0].latency_ns:
            return
        self._pending += 1
        self.sim.after(SETTLE_NS, self._copy, rec)

    def _copy(self, rec: RrRecord) -> None:
        self._pending -= 1
        lat = rec.latency_ns or 0
        if len(self._heap) >= self.keep and lat <= self._heap[0].latency_ns:
            return
        ran, complete = self.recorder.window(rec.nic_rx - LEAD_NS, rec.nic_rx + lat)
        probes = {p: at - rec.nic_rx for p in PATH_PROBES if (at := getattr(rec, p)) is not None}
        slow = SlowResponse(lat, rec.req_id, rec.nic_rx, probes, ran, complete)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, slow)
        else:
            heapq.heapreplace(self._heap, slow)

    def slowest(self) -> list[SlowResponse]:
        """The kept responses, slowest first."""
        return sorted(self._heap, reverse=True)
