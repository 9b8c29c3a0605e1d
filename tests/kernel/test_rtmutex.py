"""rt_mutex priority inheritance: boost, transitive boost, unboost, bounded wait, stealing."""

from __future__ import annotations

from helpers import US, busy, kernel, sleep

from rtvm.kernel import SCHED_FIFO, RtMutex


def _holder(lock, cs_ns, seen, k):
    def code(t):
        yield from lock.lock(t)
        seen.setdefault("locked", k.sim.now)
        left = cs_ns
        while left:
            yield 10 * US
            left -= 10 * US
            seen.setdefault("prio_during", []).append(t.prio)
        lock.unlock(t)
        seen["released"] = k.sim.now
        seen["prio_after"] = t.prio

    return code


def _waiter(lock, seen, key, k):
    def code(t):
        start = k.sim.now
        yield from lock.lock(t)
        seen[key] = k.sim.now - start
        yield 5 * US
        lock.unlock(t)

    return code


def test_low_priority_holder_is_boosted_and_unboosted():
    k = kernel(switch_ns=0)
    lock = RtMutex(k, "A")
    seen: dict = {}
    k.create_task("L", _holder(lock, 100 * US, seen, k), SCHED_FIFO, 10)
    k.sim.run(until=20 * US)
    k.create_task("M", busy(500 * US), SCHED_FIFO, 20)  # would starve L without PI
    k.create_task("H", _waiter(lock, seen, "H_wait", k), SCHED_FIFO, 30)
    k.sim.run()
    assert 30 in seen["prio_during"]  # boosted to the waiter's priority
    assert seen["prio_after"] == 10  # and back on release
    # H waited about L's remaining critical section (80 us), not for M's 500 us
    assert 70 * US <= seen["H_wait"] <= 100 * US


def test_boost_is_transitive_along_the_chain():
    k = kernel(switch_ns=0)
    a, b = RtMutex(k, "A"), RtMutex(k, "B")
    seen: dict = {}
    k.create_task("L", _holder(a, 100 * US, seen, k), SCHED_FIFO, 10)
    k.sim.run(until=5 * US)

    def middle(t):
        yield from b.lock(t)
        yield from a.lock(t)  # blocks on L while holding B
        yield 10 * US
        a.unlock(t)
        b.unlock(t)

    k.create_task("M", middle, SCHED_FIFO, 20)
    k.sim.run(until=10 * US)
    k.create_task("H", _waiter(b, seen, "H_wait", k), SCHED_FIFO, 40)
    k.sim.run(until=30 * US)
    L = next(t for t in k.tasks if t.name == "L")
    M = next(t for t in k.tasks if t.name == "M")
    assert L.prio == 40 and M.prio == 40  # H -> B (M) -> A (L)
    k.sim.run()
    assert L.prio == 10 and M.prio == 20


def test_waiters_are_served_by_priority():
    k = kernel(switch_ns=0)
    lock = RtMutex(k, "A")
    order = []
    seen: dict = {}
    k.create_task("L", _holder(lock, 50 * US, seen, k), SCHED_FIFO, 5, allowed={0})

    def w(t):
        yield from lock.lock(t)
        order.append(t.name)
        lock.unlock(t)

    k.sim.run(until=1 * US)
    for name, prio in (("w10", 10), ("w30", 30), ("w20", 20)):
        k.create_task(name, w, SCHED_FIFO, prio)
    k.sim.run()
    assert order == ["w30", "w20", "w10"]


def test_higher_priority_task_steals_a_released_lock_from_a_woken_lower_waiter():
    k = kernel(switch_ns=0)
    lock = RtMutex(k, "A")
    order = []

    def high(t):
        yield from lock.lock(t)
        yield from sleep(k, t, 10 * US)  # "low" runs meanwhile and blocks on the lock
        lock.unlock(t)  # wakes "low" (prio 1), which cannot run yet
        yield from lock.lock(t)  # and takes it back at once: a steal
        order.append(("high-again", k.sim.now))
        yield 10 * US
        lock.unlock(t)

    def low(t):
        yield from lock.lock(t)
        order.append(("low", k.sim.now))
        lock.unlock(t)

    k.create_task("high", high, SCHED_FIFO, 50)
    k.create_task("low", low, SCHED_FIFO, 1)
    k.sim.run()
    assert [n for n, _ in order] == ["high-again", "low"]
    assert lock.contended == 1
