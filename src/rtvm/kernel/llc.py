"""The shared last-level cache: capacity, bytes streamed through it, working sets it loses.

Model: streaming data (payload copies; no DDIO, so NIC DMA itself bypasses the LLC) evicts lines
at random from the point of view of a dormant working set. If S bytes have streamed through an
LLC of capacity C since an owner last touched its working set, a fraction exp(-S / C) of that
set is still resident (the survival of a line under random replacement with S/line insertions),
so the next touch misses on the rest. References and misses are counted per owner.

An owner is a set of lines, not a path: every code path that runs over those lines touches the
owner (the RT path and the heavy paths share the host kernel's code), so lines that a busy path
touches every few microseconds stay resident for the others, and whoever touches them pays for
the lines lost since anyone last did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class LlcOwner:
    name: str
    ws_bytes: int
    last_stream_mark: int = 0
    references: int = 0
    misses: int = 0

    @property
    def miss_ratio(self) -> float:
        return self.misses / self.references if self.references else 0.0


class Llc:
    def __init__(self, capacity_bytes: int, line_bytes: int, miss_ns: int) -> None:
        self.capacity = capacity_bytes
        self.line = line_bytes
        self.miss_ns = miss_ns
        self.streamed = 0  # total bytes that passed through the LLC
        self.owners: dict[str, LlcOwner] = {}

    def register(self, name: str, ws_bytes: int) -> LlcOwner:
        owner = self.owners[name] = LlcOwner(name, ws_bytes, self.streamed)
        return owner

    def stream(self, nbytes: int, owner: str | None = None) -> None:
        """``nbytes`` passed through the cache (a copy reads and writes them)."""
        self.streamed += nbytes
        if owner is not None and owner in self.owners:
            o = self.owners[owner]
            lines = -(-nbytes // self.line)
            o.references += lines
            o.misses += lines  # streamed data is cold: DMA wrote it to DRAM

    def touch(self, name: str) -> int:
        """The owner runs over its working set: count references and misses; return the
        stall time (ns) the misses cost."""
        o = self.owners[name]
        lines = -(-o.ws_bytes // self.line)
        since = self.streamed - o.last_stream_mark
        resident = math.exp(-since / self.capacity)
        misses = int(lines * (1.0 - resident) + 0.5)
        o.references += lines
        o.misses += misses
        o.last_stream_mark = self.streamed
        return misses * self.miss_ns

    def fast_forward(self, nbytes: int, busy_mark: int) -> None:
        """``nbytes`` stream through at once, standing for time not simulated (idle
        compression). An owner touched since the cache had streamed ``busy_mark`` bytes is on a
        busy path that would have kept touching its lines all along: its lines stay resident.
        The others, asleep through it, lose what the stream takes."""
        for o in self.owners.values():
            if o.last_stream_mark >= busy_mark:
                o.last_stream_mark += nbytes
        self.streamed += nbytes
