"""Named random streams: deterministic, independent of each other and of creation order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtvm.engine import RandomStreams


def _take(stream, n=100):
    return [stream.random() for _ in range(n)]


def test_same_seed_same_numbers():
    assert _take(RandomStreams(7)("nic")) == _take(RandomStreams(7)("nic"))


def test_other_seed_or_name_other_numbers():
    assert _take(RandomStreams(7)("nic")) != _take(RandomStreams(8)("nic"))
    assert _take(RandomStreams(7)("nic")) != _take(RandomStreams(7)("nic2"))


@given(st.lists(st.text(min_size=1, max_size=8), max_size=6, unique=True))
def test_adding_streams_does_not_shift_another(others):
    base = _take(RandomStreams(11)("client"))
    streams = RandomStreams(11)
    for name in others:
        if name != "client":
            _take(streams(name), 7)
    assert _take(streams("client")) == base


def test_stream_is_deterministic_across_buffer_refills():
    a = RandomStreams(1)("s")
    first = [a.random() for _ in range(10_000)]
    b = RandomStreams(1)("s")
    assert [b.random() for _ in range(10_000)] == first


def test_draw_ranges_and_means():
    s = RandomStreams(5)("d")
    ints = [s.uniform_ns(1_000, 10_000) for _ in range(20_000)]
    assert min(ints) >= 1_000 and max(ints) <= 10_000
    assert abs(np.mean(ints) - 5_500) < 100
    exps = [s.exponential_ns(2_000) for _ in range(20_000)]
    assert min(exps) >= 0 and abs(np.mean(exps) - 2_000) < 60
    assert all(isinstance(x, int) for x in exps[:10] + ints[:10])


def test_samplers_are_deterministic_and_independent_of_the_stream():
    s1, s2 = RandomStreams(3)("a"), RandomStreams(3)("a")
    d1 = s1.exponential_sampler(500).draw
    s2.random()  # consuming the stream itself does not move its sampler
    d2 = s2.exponential_sampler(500).draw
    xs = [d1() for _ in range(9_000)]
    assert xs == [d2() for _ in range(9_000)]
    assert abs(np.mean(xs) - 500) < 25
    u = RandomStreams(3)("a").uniform_sampler(10, 20).draw
    us = [u() for _ in range(5_000)]
    assert min(us) == 10 and max(us) == 20


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        RandomStreams(-1)("x")
    with pytest.raises(ValueError):
        RandomStreams(1)("x").exponential_sampler(0)
    with pytest.raises(ValueError):
        RandomStreams(1)("x").uniform_sampler(5, 4)
