"""A Perfetto-loadable trace (Chrome trace-event JSON) of a simulated run.

One track per CPU with a slice per context run (task, hard IRQ, softirq, idle), sched_switch and
wakeup instants, PI boosts as instants on the CPU track, lock waits as slices on a per-task
"locks" track, and packet flows (arrows from the NIC through NAPI to delivery). Off by default:
the kernel calls the tracer only when one is attached, so an untraced run pays nothing.
Open the file at ui.perfetto.dev (or chrome://tracing).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from rtvm.cli_support import atomic_write_text

HOST_PID = 1
LOCKS_PID = 2


def _us(ns: int) -> float:
    return ns / 1000.0


class Tracer:
    """The hooks the kernel calls while a tracer is attached, each a no-op here: a tracer
    overrides the ones it records."""

    def task_created(self, t: Any) -> None:
        pass

    def cpu_slice(self, cpu: int, name: str, kind: str, start: int, end: int) -> None:
        pass

    def sched_switch(self, cpu: int, prev: Any, nxt: Any, now: int) -> None:
        pass

    def wakeup(self, t: Any, cpu: int, now: int) -> None:
        pass

    def prio_change(self, t: Any, old: int, new: int, now: int) -> None:
        pass

    def lock_wait_begin(self, t: Any, lock: Any, now: int) -> None:
        pass

    def lock_wait_end(self, t: Any, lock: Any, start: int, end: int) -> None:
        pass

    def flow(self, pkt: Any, step: str, cpu: int, now: int, last: bool = False) -> None:
        pass


class ChromeTracer(Tracer):
    def __init__(self, max_events: int = 5_000_000) -> None:
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self.dropped = 0
        self._cpus: set[int] = set()
        self._lock_tids: dict[str, int] = {}
        self._flow_started: set[int] = set()

    def _emit(self, ev: dict[str, Any]) -> None:
        if len(self.events) < self.max_events:
            self.events.append(ev)
        else:
            self.dropped += 1

    # -- kernel hooks ----------------------------------------------------------------------
    def cpu_slice(self, cpu: int, name: str, kind: str, start: int, end: int) -> None:
        self._cpus.add(cpu)
        if kind == "idle":
            return  # gaps are idle
        self._emit(
            {
                "ph": "X",
                "pid": HOST_PID,
                "tid": cpu,
                "name": name,
                "cat": kind,
                "ts": _us(start),
                "dur": _us(end - start),
            }
        )

    def _instant(
        self, pid: int, tid: int, now: int, name: str, cat: str, args: dict[str, Any] | None = None
    ) -> None:
        ev: dict[str, Any] = {
            "ph": "i",
            "s": "t",
            "pid": pid,
            "tid": tid,
            "ts": _us(now),
            "name": name,
            "cat": cat,
        }
        if args:
            ev["args"] = args
        self._emit(ev)

    def sched_switch(self, cpu: int, prev: Any, nxt: Any, now: int) -> None:
        names = {"prev": getattr(prev, "name", "idle"), "next": getattr(nxt, "name", "idle")}
        self._instant(HOST_PID, cpu, now, "sched_switch", "sched", names)

    def wakeup(self, t: Any, cpu: int, now: int) -> None:
        self._instant(HOST_PID, cpu, now, f"wakeup {t.name}", "sched", {"prio": t.prio})

    def prio_change(self, t: Any, old: int, new: int, now: int) -> None:
        cpu = t.cpu.id if t.cpu is not None else 0
        what = "PI boost" if new > old else "PI unboost"
        self._instant(HOST_PID, cpu, now, f"{what} {t.name} {old}->{new}", "pi")

    def lock_wait_begin(self, t: Any, lock: Any, now: int) -> None:
        owner = {"owner": lock.owner.name if lock.owner else None}
        self._instant(
            LOCKS_PID, self._lock_tid(t.name), now, f"blocks on {lock.name}", "lock", owner
        )

    def lock_wait_end(self, t: Any, lock: Any, start: int, end: int) -> None:
        self._emit(
            {
                "ph": "X",
                "pid": LOCKS_PID,
                "tid": self._lock_tid(t.name),
                "ts": _us(start),
                "dur": _us(end - start),
                "name": f"wait {lock.name}",
                "cat": "lock",
            }
        )

    def flow(self, pkt: Any, step: str, cpu: int, now: int, last: bool = False) -> None:
        """A packet's path: 's' at its first point, 't' after, 'f' at its last."""
        if pkt.id not in self._flow_started:
            self._flow_started.add(pkt.id)
            ph = "s"
        else:
            ph = "f" if last else "t"
        ev = {
            "ph": ph,
            "id": pkt.id,
            "pid": HOST_PID,
            "tid": cpu,
            "ts": _us(now),
            "name": f"{pkt.kind} packet",
            "cat": "packet",
            "bp": "e",
        }
        self._emit(ev)
        self._instant(HOST_PID, cpu, now, f"{step} pkt {pkt.id}", "packet")

    def _lock_tid(self, name: str) -> int:
        if name not in self._lock_tids:
            self._lock_tids[name] = len(self._lock_tids) + 1
        return self._lock_tids[name]

    # -- output ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        meta: list[dict[str, Any]] = [
            {"ph": "M", "pid": HOST_PID, "name": "process_name", "args": {"name": "host CPUs"}},
            {"ph": "M", "pid": LOCKS_PID, "name": "process_name", "args": {"name": "lock waits"}},
        ]
        meta += [
            {
                "ph": "M",
                "pid": HOST_PID,
                "tid": c,
                "name": "thread_name",
                "args": {"name": f"CPU {c}"},
            }
            for c in sorted(self._cpus)
        ]
        meta += [
            {"ph": "M", "pid": LOCKS_PID, "tid": tid, "name": "thread_name", "args": {"name": name}}
            for name, tid in self._lock_tids.items()
        ]
        return {
            "traceEvents": meta + self.events,
            "displayTimeUnit": "ns",
            "otherData": {"dropped_events": self.dropped},
        }

    def write(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json()))


#: a CPU slice or a lock wait as the flight recorder keeps it: (start ns, end ns, track, kind,
#: name); the track is "CPU n" for a slice and the waiting thread's name for a lock wait
Slice = tuple[int, int, str, str, str]


class FlightRecorder(Tracer):
    """A tracer that keeps only the recent past: the last ``depth`` slices of each CPU and the
    last ``depth`` lock waits, in ring buffers, as ftrace's ring buffer does (overwrite mode).
    Its memory is fixed whatever the run's length, so it can run under a 30 s simulation where
    a full trace would not fit, and ``window`` copies what ran in a recent interval (a slow
    response's, for analysis.slowest). The kernel's other trace hooks are no-ops here."""

    def __init__(self, depth: int = 8192) -> None:
        self.depth = depth
        self._cpus: dict[int, deque[Slice]] = {}
        self._locks: deque[Slice] = deque(maxlen=depth)

    def cpu_slice(self, cpu: int, name: str, kind: str, start: int, end: int) -> None:
        if kind == "idle":
            return
        ring = self._cpus.get(cpu)
        if ring is None:
            ring = self._cpus[cpu] = deque(maxlen=self.depth)
        ring.append((start, end, f"CPU {cpu}", kind, name))

    def lock_wait_end(self, t: Any, lock: Any, start: int, end: int) -> None:
        self._locks.append((start, end, t.name, "lock", f"wait {lock.name}"))

    def window(self, start: int, end: int) -> tuple[list[Slice], bool]:
        """The kept slices and lock waits that overlap [start, end], in time order, and
        whether that is all of them (no ring that was full had dropped anything after
        ``start``)."""
        rings = [*self._cpus.values(), self._locks]
        out = sorted(s for ring in rings for s in ring if s[1] >= start and s[0] <= end)
        # A CPU's slices follow each other, so what its ring dropped ended before its oldest
        # kept slice began; lock waits of different threads overlap, and are kept in the
        # order they end.
        complete = all(
            len(ring) < self.depth or ring[0][0] <= start for ring in self._cpus.values()
        ) and (len(self._locks) < self.depth or self._locks[0][1] <= start)
        return out, complete
