"""Small building blocks for kernel tests: busy loops, sleeps, fake NAPIs."""

from __future__ import annotations

from typing import Any

from rtvm.engine import Simulator
from rtvm.kernel import BLOCK, Kernel, NetTunables
from rtvm.kernel.profile import load_profile

US = 1_000
MS = 1_000_000


def kernel(
    ncpus: int = 1,
    generation: str = "4.1-rt",
    switch_ns: int | None = None,
    tracer: Any = None,
    net: NetTunables | None = None,
    **kw: Any,
) -> Kernel:
    costs = load_profile()
    if switch_ns is not None:
        costs = costs.with_values(context_switch=switch_ns)
    return Kernel(
        Simulator(seed=1),
        ncpus=ncpus,
        generation=generation,
        costs=costs,
        tracer=tracer,
        net=net,
        **kw,
    )


def busy(total_ns: int, chunk_ns: int = 10 * US, log: list | None = None, sim=None):
    """Task code: burn ``total_ns`` of CPU in chunks, optionally logging (time, name)."""

    def code(t):
        left = total_ns
        while left > 0:
            step = min(chunk_ns, left)
            yield step
            left -= step
            if log is not None:
                log.append((sim.now, t.name))

    return code


def sleep(k: Kernel, t, ns: int):
    """Kernel code: sleep ``ns`` (an hrtimer wakes the task)."""
    k.sim.after(ns, lambda _: k.wake_up(t))
    yield BLOCK


class FakeNapi:
    """A driver whose poll costs ``cost_per_pkt`` per packet and has ``backlog`` packets."""

    def __init__(self, k: Kernel, name: str, backlog: int, cost_per_pkt: int = 100) -> None:
        from rtvm.kernel.napi import NapiStruct

        self.k = k
        self.backlog = backlog
        self.cost = cost_per_pkt
        self.polled_by: list[tuple[int, str]] = []
        self.napi = NapiStruct(name, self.poll)

    def poll(self, napi, weight, ctx):
        from rtvm.kernel.napi import napi_complete_done

        self.polled_by.append((self.k.sim.now, ctx.name))
        n = min(weight, self.backlog)
        self.backlog -= n
        napi.work += n
        if n:
            yield n * self.cost
        if n < weight:
            napi_complete_done(ctx.cpu, napi, ctx)
        return n
