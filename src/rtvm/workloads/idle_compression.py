"""Idle compression: simulate only part of each long gap between RT requests.

The RT client's requests come 1 to 10 ms apart and each is answered within a few hundred
microseconds, so ~98% of a run is the heavy receivers streaming while the RT VM sleeps, and
nearly all of the model's events go there. After a request the heavy flows relax back to
their steady state within about 1.5 ms (they lose throughput while the RT path takes their CPU,
then catch up); from there on a gap adds nothing but more of that steady state.

Idle compression simulates a gap of ``g`` ns as ``floor + (g - floor) // keep`` ns (a gap up
to ``floor`` in full; the testbed sets ``floor`` to the workload's shortest gap, and to at least
1 ms, so that the next request meets the heavy flows no less settled than a real one can), and
stands in for the rest, the *removed* time, by the steady state's rates:

- every ``reference``-th gap after a request is a *reference gap*, simulated for up to
  ``reference_ns``; from
  ``relax_ns`` after its request to its end the heavy flows are steady, and that *steady
  interval*'s heavy bytes, CPU busy time and LLC streaming per ns are the rates that the removed
  time is charged at;
- the removed time's LLC streaming passes at once, just before the next request
  (``Llc.fast_forward``): the RT working set loses what a gap of ``g`` takes from it (the
  gap-length dependence of the RT latency), while the lines of the busy paths (touched since
  ``settle_ns`` after the request, when its response has long left) stay resident, as they
  would have;
- throughput and CPU time (``represented``): a window's simulated totals plus the removed
  time at the steady rates, per represented second;
- CFS's clocks (``CfsStandIn``): each runqueue's min_vruntime advances by what the removed time
  would have added at the steady rate, and so does the vruntime of every CFS thread that takes
  part in the steady state (the heavy ones), while a thread that slept through it (the RT VM's
  housekeeping vCPU) keeps its own. So a sleeper wakes as far behind min_vruntime as after the
  drawn gap, and gets a full run's sleeper credit (place_entity). Where the heavy threads
  stand against each other is carried across the removed time as it was, not reshuffled as
  their many sleeps and wakeups in a real gap would: on the shared-CPU methods that is what
  compression still gets wrong (docs/model.md).

The request's own path is never compressed, and the heavy flows, CPUs, locks and timers run as
simulated. The arrival phase against the periodic timers stays random, since the simulated
gaps vary with the drawn ones. What compression gives up: what would have happened in the
removed time itself (a tick there, a TCP loss, a slow change of where the scheduler places the
heavy threads) is not simulated but stood in for by the steady rates, and slow processes run on
simulated, not represented, time. The steady rates are a sample (~14.7 ms of steady intervals
per second of run with the default gaps), so a run needs some length for its throughput and CPU
figures (``MIN_DURATION_S``, ``MIN_STEADY_NS``). ``keep = 1`` turns it off. docs/model.md
gives its error against full runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtvm.kernel.task import RUNNING

if TYPE_CHECKING:
    from rtvm.engine import Simulator
    from rtvm.kernel.llc import Llc

US = 1_000
MS = 1_000_000

#: a gap up to this long is simulated in full: the default workload's shortest gap, and about
#: when the heavy flows have caught up after a request (docs/model.md)
DEFAULT_FLOOR_NS = 1 * MS
#: the shortest run that idle compression accepts: its throughput and CPU figures rest on the
#: steady intervals' sample, ~147 ms of them in 10 s with the default gaps (at 2 s, ~30 ms, a
#: heavy throughput was 2-3% off)...
MIN_DURATION_S = 10.0
#: ...and the least sample a run's workload must be expected to give (sparser requests give
#: fewer reference gaps per second)
MIN_STEADY_NS = 100 * MS
#: every this many gaps, one is a reference gap
DEFAULT_REFERENCE = 16
#: a reference gap is simulated for up to this long...
DEFAULT_REFERENCE_NS = 3 * MS
#: ...and is steady from this long after its request (the heavy flows have relaxed by then)
DEFAULT_RELAX_NS = 1500 * US
#: an LLC owner touched later than this after a request is on a busy path (the heavy flows'
#: code, touched every few microseconds): its lines stay resident through the removed time.
#: The RT path's own lines are touched only while a request is served (responses take
#: 50-200 us), so they take the removed time's streaming.
DEFAULT_SETTLE_NS = 400 * US


def floor_and_reference(gap_min_ns: int) -> tuple[int, int]:
    """A workload's floor (its shortest gap, at least ``DEFAULT_FLOOR_NS``) and reference gap
    length (no shorter than the floor plus the relaxing)."""
    floor = max(DEFAULT_FLOOR_NS, gap_min_ns)
    return floor, max(DEFAULT_REFERENCE_NS, floor + DEFAULT_RELAX_NS)


def expected_steady_ns(
    duration_ns: int,
    gap_min_ns: int,
    gap_max_ns: int,
    reference: int = DEFAULT_REFERENCE,
    relax_ns: int = DEFAULT_RELAX_NS,
) -> float:
    """The steady intervals a run of ``duration_ns`` can expect with gaps uniform in
    [``gap_min_ns``, ``gap_max_ns``]: one gap in ``reference`` gives min(g, reference_ns) -
    relax_ns when that is positive, reference_ns as ``floor_and_reference`` sets it."""
    _, reference_ns = floor_and_reference(gap_min_ns)
    a, b, lo, hi = gap_min_ns, gap_max_ns, relax_ns, reference_ns
    if b <= a:  # one gap length
        per_gap = float(max(0, min(a, hi) - lo))
    else:
        ramp_lo, ramp_hi = max(a, lo), min(b, hi)  # where the interval grows with g
        ramp = ((ramp_hi - lo) ** 2 - (ramp_lo - lo) ** 2) / 2 if ramp_hi > ramp_lo else 0.0
        flat = (hi - lo) * max(0, b - max(a, hi))  # where it is capped at reference_ns
        per_gap = (ramp + flat) / (b - a)
    gaps = duration_ns / ((a + b) / 2)
    return gaps / reference * per_gap


#: (heavy bytes read so far, each CPU's busy ns so far)
Probe = Callable[[], tuple[int, tuple[int, ...]]]


class CfsStandIn:
    """CFS's clocks across the removed time: ``cpus`` (each with ``rq.min_vruntime``) and
    ``tasks`` (each with ``vruntime``, ``normal_prio``, ``cpu``, ``last_ran_ns``).

    In the steady intervals it learns how fast each runqueue's min_vruntime advances, and which
    CFS threads take part in the steady state: those that ran in at least half of the intervals
    (a busy heavy thread may miss one now and then; the RT VM's threads, asleep between
    requests, run in next to none). The removed time then moves each runqueue's min_vruntime on
    at its rate, and by the same amount as its runqueue's the vruntime of each steady thread
    and of each thread that is runnable as the removed time passes (it would have run in it:
    on vanilla, a ksoftirqd woken just then): the steady state keeps where they stand against
    each other. A thread asleep as the removed time passes, and not part of the steady state,
    keeps its vruntime, and so falls behind min_vruntime by what the whole gap would have
    added."""

    def __init__(self, cpus: list[Any], tasks: list[Any]) -> None:
        self.cpus = cpus
        self.tasks = tasks
        self.steady_ns = 0
        self.advance_ns = [0] * len(cpus)  # min_vruntime's advance over the steady intervals
        self.intervals = 0
        self.ran_in: dict[int, int] = {}  # id(task) -> steady intervals it ran in

    def snapshot(self) -> tuple[int, ...]:
        return tuple(c.rq.min_vruntime for c in self.cpus)

    def add(self, start: tuple[int, ...], t0: int, ns: int) -> None:
        """A steady interval from ``t0`` (min_vruntimes ``start`` then) to now, ``ns`` long."""
        self.steady_ns += ns
        self.intervals += 1
        for i, (c, v0) in enumerate(zip(self.cpus, start, strict=True)):
            self.advance_ns[i] += c.rq.min_vruntime - v0
        for t in self.tasks:
            if t.normal_prio == 0 and (t.cpu.curr is t or t.last_ran_ns >= t0):
                self.ran_in[id(t)] = self.ran_in.get(id(t), 0) + 1

    def _steady(self, t: Any) -> bool:
        return 2 * self.ran_in.get(id(t), 0) >= self.intervals > 0

    @property
    def steady_tasks(self) -> list[Any]:
        """The CFS threads that ran in at least half of the steady intervals."""
        return [t for t in self.tasks if self._steady(t)]

    def advance(self, removed_ns: int) -> None:
        """Stand in for ``removed_ns`` of the steady state (none learnt yet: nothing moves)."""
        if self.steady_ns == 0:
            return
        moved = {}  # by id(cpu)
        for c, adv in zip(self.cpus, self.advance_ns, strict=True):
            moved[id(c)] = d = adv * removed_ns // self.steady_ns
            c.rq.min_vruntime += d
        for t in self.tasks:
            if t.normal_prio == 0 and (t.state == RUNNING or self._steady(t)):
                t.vruntime += moved[id(t.cpu)]


@dataclass
class SteadyTotals:
    """What the steady intervals held: their length, heavy bytes read, each CPU's busy time
    and the bytes streamed through the LLC."""

    ns: int = 0
    heavy_bytes: int = 0
    busy_ns: list[int] = field(default_factory=list)
    streamed: int = 0

    def add(self, ns: int, heavy_bytes: int, busy: tuple[int, ...], streamed: int) -> None:
        self.ns += ns
        self.heavy_bytes += heavy_bytes
        if not self.busy_ns:
            self.busy_ns = [0] * len(busy)
        for i, b in enumerate(busy):
            self.busy_ns[i] += b
        self.streamed += streamed


class IdleCompression:
    """The RT client's gap map (``gap``) and the bookkeeping of the time it removed."""

    def __init__(
        self,
        sim: Simulator,
        llc: Llc,
        probe: Probe,
        keep: int,
        floor_ns: int = DEFAULT_FLOOR_NS,
        reference: int = DEFAULT_REFERENCE,
        reference_ns: int = DEFAULT_REFERENCE_NS,
        relax_ns: int = DEFAULT_RELAX_NS,
        settle_ns: int = DEFAULT_SETTLE_NS,
        cfs: CfsStandIn | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if reference < 1:
            raise ValueError(f"reference must be at least 1, got {reference}")
        if not (0 <= relax_ns < reference_ns and 0 < settle_ns < floor_ns <= reference_ns):
            raise ValueError(
                "need 0 <= relax_ns < reference_ns and 0 < settle_ns < floor_ns <= reference_ns"
            )
        self.sim = sim
        self.llc = llc
        self.probe = probe
        self.keep = keep
        self.floor_ns = floor_ns
        self.reference = reference
        self.reference_ns = reference_ns
        self.relax_ns = relax_ns
        self.settle_ns = settle_ns
        self.cfs = cfs
        self.gaps = 0  # gaps drawn, the lead-in before the first request included
        self.removed_ns = 0  # since the start of the run
        self.window_removed_ns = 0  # since ``open_window``
        self.steady = SteadyTotals()  # since ``open_window``
        self._steady_all = SteadyTotals()  # since the start: the LLC's rate
        self._removed_next = 0  # what the gap now running removed: passes before the next send
        self._busy_mark = 0
        self._steady_start: tuple[int, int, tuple[int, ...], int] | None = None
        self._cfs_start: tuple[int, ...] = ()

    def gap(self, drawn_ns: int) -> int:
        """The simulated length of the gap just drawn: called as a request is sent, and once at
        the start for the lead-in before the first one. The previous gap's removed time passes
        first."""
        self._end_steady()
        self._pass_removed()
        i, self.gaps = self.gaps, self.gaps + 1
        if self.keep == 1:
            return drawn_ns
        if i > 0 and i % self.reference == 0:  # not the lead-in: no request to relax from
            sim_ns = min(drawn_ns, self.reference_ns)
            if sim_ns > self.relax_ns:
                self.sim.after(self.relax_ns, self._start_steady)
        elif drawn_ns <= self.floor_ns:
            return drawn_ns
        else:
            sim_ns = self.floor_ns + (drawn_ns - self.floor_ns) // self.keep
        if sim_ns < drawn_ns:
            self._removed_next = drawn_ns - sim_ns
            self.sim.after(self.settle_ns, self._mark_busy)
        return sim_ns

    def _mark_busy(self, _: Any) -> None:
        self._busy_mark = self.llc.streamed

    def _pass_removed(self) -> None:
        """The removed time of the gap that ends now: its LLC streaming at once, at the steady
        rate, and its length to the totals."""
        removed, self._removed_next = self._removed_next, 0
        if removed == 0:
            return
        s = self._steady_all
        rate = s.streamed / s.ns if s.ns else self.llc.streamed / self.sim.now
        self.llc.fast_forward(int(rate * removed), self._busy_mark)
        if self.cfs is not None:
            self.cfs.advance(removed)
        self.removed_ns += removed
        self.window_removed_ns += removed

    def _start_steady(self, _: Any) -> None:
        heavy, busy = self.probe()
        self._steady_start = (self.sim.now, heavy, busy, self.llc.streamed)
        if self.cfs is not None:
            self._cfs_start = self.cfs.snapshot()

    def _end_steady(self) -> None:
        start, self._steady_start = self._steady_start, None
        if start is None:
            return
        t0, heavy0, busy0, streamed0 = start
        ns = self.sim.now - t0
        heavy, busy = self.probe()
        delta = tuple(b - a for a, b in zip(busy0, busy, strict=True))
        streamed = self.llc.streamed - streamed0
        self.steady.add(ns, heavy - heavy0, delta, streamed)
        self._steady_all.add(ns, heavy - heavy0, delta, streamed)
        if self.cfs is not None:
            self.cfs.add(self._cfs_start, t0, ns)

    # -- the runner's side ---------------------------------------------------------------------
    def open_window(self) -> None:
        """Start the totals that ``represented`` adds to (the runner's measurement window)."""
        self.window_removed_ns = 0
        self.steady = SteadyTotals()

    def represented(
        self, sim_ns: int, heavy_bytes: int, busy_ns: list[int]
    ) -> tuple[int, int, list[int]]:
        """A window's simulated length, heavy bytes and CPU busy times, with its removed time
        added at the steady rates: what the window stands for."""
        removed, s = self.window_removed_ns, self.steady
        if removed == 0:
            return sim_ns, heavy_bytes, list(busy_ns)
        if s.ns == 0:  # a window too short for a steady interval: those before it
            s = self._steady_all
        if s.ns == 0:  # none at all (a very short run): the window's own rates
            s = SteadyTotals(sim_ns, heavy_bytes, list(busy_ns))
        heavy = heavy_bytes + round(s.heavy_bytes * removed / s.ns)
        busy = [b + round(sb * removed / s.ns) for b, sb in zip(busy_ns, s.busy_ns, strict=True)]
        return sim_ns + removed, heavy, busy

    def summary(self) -> dict[str, Any]:
        """The settings and how much was removed (a run's ``details.idle_compression``):
        ``gaps`` and ``removed_s`` over the whole run, ``window_*`` over the window."""
        return {
            "keep": self.keep,
            "floor_us": self.floor_ns / US,
            "reference": self.reference,
            "reference_us": self.reference_ns / US,
            "relax_us": self.relax_ns / US,
            "gaps": self.gaps,
            "removed_s": round(self.removed_ns / 1e9, 6),
            "window_removed_s": round(self.window_removed_ns / 1e9, 6),
            "window_steady_s": round(self.steady.ns / 1e9, 6),
        }
