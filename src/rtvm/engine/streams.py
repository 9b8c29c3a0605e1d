"""Named random streams: one numpy Generator per (seed, stream name).

Each stream's generator is seeded from the run's seed and a stable hash of the stream's name, so
adding, removing or reordering streams never shifts the numbers another stream produces, and one
seed gives bit-identical runs on every machine (no dependence on Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
from math import log

import numpy as np

# Draw uniforms from numpy in blocks and hand them out as Python floats: a scalar numpy call costs
# about a microsecond, a pop from a Python list about 30 ns. The block size does not change the
# sequence: a stream's k-th number is the same whatever the block size.
_BLOCK = 4096


def _name_key(name: str) -> tuple[int, ...]:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


class RandomStream:
    """One named stream of random numbers. Python-float draws are buffered (see ``_BLOCK``)."""

    __slots__ = ("_buf", "generator", "name", "seed")

    def __init__(self, seed: int, name: str) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.name = name
        self.seed = seed
        ss = np.random.SeedSequence(entropy=seed, spawn_key=_name_key(name))
        # The generator itself, for vectorised draws; do not mix it with the buffered scalar draws
        # of the same stream if the sequence matters (the buffer reads ahead).
        self.generator = np.random.Generator(np.random.PCG64(ss))
        self._buf: list[float] = []

    # Each draw below inlines the buffer refill instead of calling random(): a Python call costs
    # about as much as the rest of a draw. All draws consume the same uniform sequence, so mixing
    # kinds of draws on one stream is still deterministic.
    def _refill(self) -> list[float]:
        buf = self._buf
        # Reversed so that pop() from the end yields the block in generation order.
        buf.extend(self.generator.random(_BLOCK).tolist()[::-1])
        return buf

    def random(self) -> float:
        """A uniform float in [0, 1)."""
        buf = self._buf or self._refill()
        return buf.pop()

    def uniform(self, low: float, high: float) -> float:
        buf = self._buf or self._refill()
        return low + (high - low) * buf.pop()

    def uniform_ns(self, low: int, high: int) -> int:
        """A uniform integer number of nanoseconds in [low, high]."""
        buf = self._buf or self._refill()
        return low + int((high - low + 1) * buf.pop())

    def exponential_ns(self, mean: float) -> int:
        """An exponential duration with the given mean, rounded to whole nanoseconds."""
        buf = self._buf or self._refill()
        return int(0.5 - mean * log(1.0 - buf.pop()))

    def choice_index(self, n: int) -> int:
        buf = self._buf or self._refill()
        return int(n * buf.pop())

    # -- vectorised samplers (see Sampler) ---------------------------------------------------
    def exponential_sampler(self, mean_ns: float) -> Sampler:
        """Exponential durations (ns, rounded) with the given mean."""
        if mean_ns <= 0:
            raise ValueError(f"exponential mean must be > 0 ns, got {mean_ns}")
        return Sampler(
            self.seed,
            f"{self.name}|exponential|{mean_ns!r}",
            lambda g: np.rint(g.standard_exponential(_BLOCK) * mean_ns).astype(np.int64).tolist(),
        )

    def uniform_sampler(self, low_ns: int, high_ns: int) -> Sampler:
        """Uniform integer durations in [low_ns, high_ns]."""
        if high_ns < low_ns:
            raise ValueError(f"uniform range [{low_ns}, {high_ns}] is empty")
        return Sampler(
            self.seed,
            f"{self.name}|uniform|{low_ns}|{high_ns}",
            lambda g: g.integers(low_ns, high_ns, size=_BLOCK, endpoint=True).tolist(),
        )


class Sampler:
    """Integer-nanosecond variates of one distribution, generated in numpy blocks.

    A draw is one ``list.pop`` (about 40 ns) instead of a Python-level transform of a uniform
    (about 300 ns): the transform runs vectorised, ``_BLOCK`` values at a time. Each sampler owns a
    generator derived from (seed, stream name, distribution, parameters), so it never shifts the
    numbers of its stream or of another sampler.
    """

    __slots__ = ("_buf", "_fill", "draw")

    def __init__(self, seed: int, key: str, fill) -> None:
        ss = np.random.SeedSequence(entropy=seed, spawn_key=_name_key(key))
        gen = np.random.Generator(np.random.PCG64(ss))
        self._fill = lambda: fill(gen)
        self._buf: list[int] = []
        self.draw = self._draw  # bound once: callers keep ``draw`` and call it with no lookup

    def _draw(self) -> int:
        buf = self._buf
        if not buf:
            buf.extend(self._fill()[::-1])
        return buf.pop()


class RandomStreams:
    """The streams of one run, created on first use by name."""

    __slots__ = ("_streams", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, RandomStream] = {}

    def __call__(self, name: str) -> RandomStream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = RandomStream(self.seed, name)
        return stream

    def __contains__(self, name: str) -> bool:
        return name in self._streams
