"""virtqueue notification suppression (EVENT_IDX and flags)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtvm.virt import Virtqueue, vring_need_event


def test_vring_need_event_formula():
    assert vring_need_event(event_idx=5, new_idx=6, old=5)  # crossed 5
    assert not vring_need_event(event_idx=9, new_idx=6, old=5)
    assert vring_need_event(event_idx=0xFFFF, new_idx=1, old=0xFFFE)  # wraps


def _produce(vq, n, consumer_reenables_every=None):
    kicks = 0
    for i in range(n):
        vq.add_buf(i)
        if vq.kick_prepare():
            kicks += 1
        if consumer_reenables_every and (i + 1) % consumer_reenables_every == 0:
            while vq.pop_avail() is not None:  # the consumer drains its batch ...
                pass
            vq.enable_notify()  # ... and asks to be told of the next buffer
    return kicks


def test_event_idx_one_kick_while_the_consumer_runs():
    vq = Virtqueue("tx", 256, event_idx=True)
    vq.enable_notify()
    assert _produce(vq, 50) == 1  # the consumer is busy: avail_event stays where it was


def test_event_idx_one_kick_per_batch():
    vq = Virtqueue("tx", 256, event_idx=True)
    vq.enable_notify()
    assert _produce(vq, 50, consumer_reenables_every=10) == 5


def test_without_suppression_every_buffer_notifies():
    vq = Virtqueue("tx", 256, event_idx=False)
    assert _produce(vq, 50) == 50


def test_flag_suppression_without_event_idx():
    vq = Virtqueue("tx", 256, event_idx=False)
    vq.disable_notify()
    assert _produce(vq, 20) == 0


def test_interrupts_suppressed_while_driver_polls_then_one():
    vq = Virtqueue("rx", 256, event_idx=True)
    for i in range(64):
        vq.add_buf(i)
    vq.enable_cb()
    signals = 0
    vq.pop_avail()
    vq.push_used("a")
    signals += vq.signal_needed()  # first used buffer: interrupt
    vq.disable_cb()  # NAPI polls
    for _ in range(10):
        vq.pop_avail()
        vq.push_used("b")
        signals += vq.signal_needed()
    assert signals == 1 and vq.interrupts_suppressed == 10
    while vq.get_used():
        pass
    assert vq.enable_cb()
    vq.pop_avail()
    vq.push_used("c")
    assert vq.signal_needed()


def test_enable_cb_reports_a_race():
    vq = Virtqueue("rx", 8)
    vq.add_buf(1)
    vq.pop_avail()
    vq.push_used(1)
    assert not vq.enable_cb()  # a used buffer is pending: poll again


@given(st.lists(st.sampled_from(["add", "pop", "use", "get"]), max_size=200))
def test_indices_stay_consistent(ops):
    vq = Virtqueue("q", 16)
    for op in ops:
        if op == "add":
            vq.add_buf(None)
        elif op == "pop":
            got = vq.pop_avail()
            if got is not None:
                vq.push_used(got[1], got[0])
        elif op == "get":
            vq.get_used()
        assert 0 <= vq.avail_pending <= vq.in_flight <= vq.num
        assert vq.used_pending <= vq.in_flight
