"""The event loop: an integer-nanosecond clock and a heap of callbacks.

The engine knows nothing of kernels. A model schedules callbacks ``fn(arg)`` at absolute times
(``at``) or after delays (``after``); ``run`` pops them in order and calls them. A callback that
returns an ``int`` is re-armed that many nanoseconds later with the same argument and priority
class, like an hrtimer callback that returns ``HRTIMER_RESTART``; any other return value (None, a
bool) ends it.

Order of simultaneous events (the contract every model relies on)
-----------------------------------------------------------------
Events are ordered by the key ``(time, priority, sequence)``:

1. ``time``: integer nanoseconds; earlier first.
2. ``priority``: an integer class; *lower runs first* at the same time. Models name their classes
   (the kernel model, for instance, lets a hardware interrupt line rise before the CPU it targets
   picks its next context). ``URGENT`` < ``NORMAL`` < ``LATE`` are provided.
3. ``sequence``: a global insertion counter; among equal time and priority, the event scheduled
   first runs first (FIFO).

So a run is a pure function of the model and its seed: nothing depends on hash order, object ids or
wall time.

Speed
-----
This module is the one place where speed tricks are allowed; each one is commented where it is
used. The hot loop (``_loop_plain``) costs within a few percent of a bare ``heapq`` callback loop.
``advance_inline`` lets a model skip the heap round trip of a continuation that would be the very
next event anyway (same order, same results).
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heapify, heappop, heappush, heapreplace
from itertools import count
from typing import Any

from rtvm.engine.streams import RandomStreams

URGENT = 0
NORMAL = 1
LATE = 2

# The run(until=...) sentinel sorts before every model event at its time, so events scheduled
# exactly at ``until`` are left for a later run (half-open interval [now, until)).
_SENTINEL_PRIORITY = -1

# An event is a plain tuple (time, priority, sequence, callback, arg): tuples are cheaper to build
# and to compare than lists or objects, and since the sequence is unique the comparison never
# reaches the callback. Times usually differ, so the heap rarely looks past the first element.
Event = tuple
_TIME, _PRIO, _SEQ, _FN, _ARG = range(5)

Callback = Callable[[Any], Any]
Observer = Callable[[int, Callback, Any], Any]


class StopSimulation(Exception):
    """Raised by :meth:`Simulator.stop` inside a callback to end :meth:`Simulator.run` at once."""


class TimeTravelError(ValueError):
    """An event was scheduled before the current time: the clock never goes back."""


def _raise_stop(fired: list[bool]) -> None:
    fired[0] = True
    raise StopSimulation


class Simulator:
    """A discrete-event simulator with an integer-nanosecond clock.

    >>> sim = Simulator(seed=1)
    >>> fired = []
    >>> _ = sim.after(10, fired.append, "a")
    >>> sim.run()
    >>> (sim.now, fired)
    (10, ['a'])
    """

    # __slots__ makes the per-event attribute stores (now, _running) cheaper than a dict.
    __slots__ = (
        "_cancelled",
        "_heap",
        "_next_seq",
        "_observers",
        "_running",
        "events_processed",
        "now",
        "seed",
        "streams",
    )

    def __init__(self, seed: int = 0, start: int = 0) -> None:
        self.now: int = int(start)
        self.seed = seed
        self.streams = RandomStreams(seed)
        self.events_processed = 0
        self._heap: list[Event] = []
        # count().__next__ is a C-level callable: cheaper than incrementing an attribute.
        self._next_seq = count().__next__
        self._observers: list[Observer] = []
        # Sequence numbers of cancelled events still in the heap: lazy deletion.
        self._cancelled: set[int] = set()
        # While the plain loop runs, the running event stays in the heap until its callback
        # returns (see _loop_plain); this is that event, for peek() and for cleanup.
        self._running: Event | None = None

    # -- scheduling ------------------------------------------------------------------------
    def at(self, time: int, fn: Callback, arg: Any = None, priority: int = NORMAL) -> Event:
        """Schedule ``fn(arg)`` at absolute ``time`` (ns). Returns a handle for :meth:`cancel`."""
        if time < self.now:
            raise TimeTravelError(f"event at {time} ns is before now ({self.now} ns)")
        ev = (time, priority, self._next_seq(), fn, arg)
        heappush(self._heap, ev)
        return ev

    def after(self, delay: int, fn: Callback, arg: Any = None, priority: int = NORMAL) -> Event:
        """Schedule ``fn(arg)`` ``delay`` ns from now (``delay >= 0``)."""
        if delay < 0:
            raise TimeTravelError(f"negative delay {delay} ns")
        ev = (self.now + delay, priority, self._next_seq(), fn, arg)
        heappush(self._heap, ev)
        return ev

    def cancel(self, ev: Event | None) -> None:
        """Cancel a scheduled event; it will never fire.

        Cancelling None, an event twice, or one that already fired is a no-op. Lazy deletion: the
        entry stays in the heap and is skipped when popped, so cancel is O(1).
        """
        if ev is not None and ev[_TIME] >= self.now:
            self._cancelled.add(ev[_SEQ])

    def stop(self) -> None:
        """End the current :meth:`run` from inside a callback (the stop condition)."""
        raise StopSimulation

    def peek(self) -> int | None:
        """Time of the next live event, or None when none remains."""
        heap, cancelled = self._heap, self._cancelled
        if self._running is not None:  # called from a callback: the running event is still there
            running = self._running
            live = (e[_TIME] for e in heap if e is not running and e[_SEQ] not in cancelled)
            return min(live, default=None)
        while heap and heap[0][_SEQ] in cancelled:
            cancelled.discard(heappop(heap)[_SEQ])
        return heap[0][_TIME] if heap else None

    def advance_inline(self, time: int) -> bool:
        """Move the clock to ``time`` at once if nothing could happen before it; else False.

        The engine's main speed trick for models. A callback that would schedule its own
        continuation at ``time`` and return may instead call this: when every other event in
        the heap is strictly later than ``time``, the continuation would be the very next event
        anyway, so the callback can advance the clock and go on without a heap push and pop.
        The order of events is the same as with the push (the elided event is counted in
        ``events_processed``), so results do not change: only the wall time does.

        Only the outermost callback may use it (never code called from inside another model
        action, which would then run later than its caller). Refused while observers watch every
        event (they would miss the elided ones) and outside the plain loop.
        """
        heap = self._heap
        running = self._running
        if running is None or not heap or heap[0] is not running:
            return False
        # The running event is heap[0]; the next one is the smaller of its two children (a
        # cancelled entry there only makes this answer conservative). Strictly later: an
        # event at ``time`` itself could sort before the continuation.
        n = len(heap)
        if (n > 1 and heap[1][_TIME] <= time) or (n > 2 and heap[2][_TIME] <= time):
            return False
        self.now = time
        self.events_processed += 1
        return True

    @property
    def pending(self) -> int:
        """Number of heap entries (cancelled ones included until they are popped)."""
        return len(self._heap)

    # -- observers -------------------------------------------------------------------------
    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(time, fn, arg)`` before every event; free while none is added."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    # -- running ---------------------------------------------------------------------------
    def run(self, until: int | None = None) -> None:
        """Process events in order.

        ``until`` (ns, absolute): process the events before ``until`` and leave the clock at
        ``until``. Without it: run until no event remains. A callback may end the run early with
        :meth:`stop`; the clock then stays at that event's time.
        """
        sentinel = None
        fired = [False]
        if until is not None:
            if until < self.now:
                raise TimeTravelError(f"run(until={until}) is before now ({self.now} ns)")
            # A sentinel event instead of a per-event "t >= until" test: zero cost in the loop.
            sentinel = (until, _SENTINEL_PRIORITY, self._next_seq(), _raise_stop, fired)
            heappush(self._heap, sentinel)
        loop = self._loop_observed if self._observers else self._loop_plain
        try:
            loop()
        except StopSimulation:
            pass
        finally:
            running = self._running
            if running is not None:  # the last event stopped the run or raised: remove it
                self._running = None
                self._remove(running)
            if sentinel is not None:
                if fired[0]:
                    self.events_processed -= 1  # the engine's own event, not the model's
                else:  # a callback stopped the run before ``until``: the sentinel is spent
                    self.cancel(sentinel)

    def _remove(self, ev: Event) -> None:
        heap = self._heap
        if heap and heap[0] is ev:
            heappop(heap)
        else:  # rare: an event scheduled by its callback sorts before it (same time, more urgent)
            heap.remove(ev)
            heapify(heap)

    def _loop_plain(self) -> None:
        # The hot loop. Tricks, each measured with benchmarks/engine.py:
        # - restart: a callback that returns an int delay is re-armed here (the hrtimer
        #   HRTIMER_RESTART idiom), which saves the Python call of after();
        # - the running event stays at the top of the heap while its callback runs, and is then
        #   replaced by its restart with heapreplace (one sift instead of a pop and a push), or
        #   popped. Only an event scheduled by the callback at the same time with a more urgent
        #   priority can displace it from the top; ``heap[0] is ev`` catches that rare case;
        # - heap, the heap functions, the cancelled set and the counter are locals (LOAD_FAST);
        # - cancelled events cost one truth test of an (almost always empty) set;
        # - the empty heap ends the loop through IndexError rather than a "while heap" test.
        heap = self._heap
        pop, replace = heappop, heapreplace
        next_seq = self._next_seq
        cancelled = self._cancelled
        int_, type_ = int, type
        n = 0
        try:
            while True:
                ev = heap[0]
                t, prio, seq, fn, arg = ev
                if cancelled and seq in cancelled:
                    cancelled.discard(seq)
                    pop(heap)
                    continue
                self.now = t
                n += 1
                self._running = ev
                delay = fn(arg)
                if heap[0] is ev:
                    if type_(delay) is int_ and delay >= 0:  # restart (bool, None: not int)
                        # Same priority class, a new sequence number: as if after() were the
                        # callback's last call.
                        replace(heap, (t + delay, prio, next_seq(), fn, arg))
                    else:
                        pop(heap)
                        if delay.__class__ is int_:
                            self._running = None  # already popped
                            raise TimeTravelError(f"{fn!r} returned a negative delay {delay}")
                else:
                    self._remove(ev)
                    self._running = None
                    if type_(delay) is int_:
                        self.after(delay, fn, arg, prio)
        except IndexError as exc:
            # heap[0] on an empty heap raises from this frame (tb_next is None); an IndexError
            # from a model callback carries the callback's frame, or leaves events behind.
            tb = exc.__traceback__
            if heap or (tb is not None and tb.tb_next is not None):
                raise
            self._running = None  # the heap is empty: the last event is gone already
        finally:
            # On StopSimulation or a model error, _running stays set: run() removes that event.
            self.events_processed += n

    def _loop_observed(self) -> None:
        heap = self._heap
        cancelled = self._cancelled
        observers = tuple(self._observers)
        n = 0
        try:
            while heap:
                t, prio, seq, fn, arg = heappop(heap)
                if seq in cancelled:
                    cancelled.discard(seq)
                    continue
                self.now = t
                n += 1
                if fn is not _raise_stop:  # the until-sentinel is the engine's, not the model's
                    for obs in observers:
                        obs(t, fn, arg)
                delay = fn(arg)
                if type(delay) is int:  # restart, as in _loop_plain
                    if delay < 0:
                        raise TimeTravelError(f"{fn!r} returned a negative delay {delay} ns")
                    heappush(heap, (t + delay, prio, self._next_seq(), fn, arg))
        finally:
            self.events_processed += n
