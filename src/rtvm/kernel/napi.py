"""NAPI and the NET_RX softirq (net/core/dev.c as of Linux 4.1; kernel-facts.md section 1).

- ``napi_schedule``: if the NAPI is already scheduled, mark it MISSED; else add it to *this
  CPU's* softnet_data.poll_list and raise NET_RX. With the partitioned softirq switched on, a
  NAPI scheduled from a thread of priority >= rtnet_prio goes to the rt_poll_list and raises
  NET_RX_RT instead (Garcia et al.).
- ``net_rx_action``: splice the poll_list to a local list; poll each NAPI once with its weight
  (64); stop when the budget (netdev_budget, 300) is spent or 2 jiffies have passed
  (time_squeeze++); a NAPI that used its whole weight goes to the repoll list; at the end the
  not-yet-polled entries, then the entries that arrived meanwhile, then the repolls are put
  back on the poll_list, and NET_RX is raised again if it is not empty.
- ``rt_net_rx_action``: the same loop over the rt_poll_list only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtvm.kernel.softirq import NET_RX, NET_RX_RT, open_softirq, raise_softirq
from rtvm.kernel.task import Code, Context, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

NAPI_POLL_WEIGHT = 64


@dataclass
class NetTunables:
    netdev_budget: int = 300
    #: None: 2 jiffies, the 4.1 time limit (``time_limit = jiffies + 2``)
    netdev_budget_usecs: int | None = None
    #: the partitioned softirq (rt_poll_list / rt_softirq_lock): off by default
    rt_poll_list: bool = False
    rtnet_prio: int = 47


class NapiStruct:
    """struct napi_struct: ``poll(napi, weight, ctx)`` is the driver's poll (a generator that
    returns the number of packets it processed)."""

    __slots__ = ("missed", "name", "nr_polls", "on_rt_list", "poll", "sched", "weight", "work")

    def __init__(
        self,
        name: str,
        poll: Callable[[NapiStruct, int, Context], Code],
        weight: int = NAPI_POLL_WEIGHT,
    ) -> None:
        self.name = name
        self.poll = poll
        self.weight = weight
        self.sched = False  # NAPI_STATE_SCHED
        self.missed = False  # NAPI_STATE_MISSED
        self.on_rt_list = False
        self.nr_polls = 0
        self.work = 0

    def __repr__(self) -> str:
        return f"<napi {self.name}>"


class SoftnetData:
    """Per-CPU struct softnet_data, with the partitioned rt_poll_list beside the poll_list."""

    __slots__ = ("poll_list", "processed", "rt_poll_list", "rt_time_squeeze", "time_squeeze")

    def __init__(self) -> None:
        self.poll_list: list[NapiStruct] = []
        self.rt_poll_list: list[NapiStruct] = []
        self.time_squeeze = 0
        self.rt_time_squeeze = 0
        self.processed = 0


def setup(kernel: Kernel, tunables: NetTunables | None = None) -> NetTunables:
    """Install softnet_data on every CPU and open NET_RX (and NET_RX_RT)."""
    tun = tunables or NetTunables()
    kernel.net = tun  # type: ignore[attr-defined]
    for cpu in kernel.cpus:
        cpu.softnet = SoftnetData()
    open_softirq(kernel, NET_RX, lambda cpu, ctx: net_rx_action(cpu, ctx, rt=False))
    open_softirq(kernel, NET_RX_RT, lambda cpu, ctx: net_rx_action(cpu, ctx, rt=True))
    return tun


def uses_rt_partition(kernel: Kernel, ctx: Context) -> bool:
    """Does ``ctx`` schedule NAPIs on the rt_poll_list (a thread with prio >= rtnet_prio)?"""
    tun: NetTunables = kernel.net  # type: ignore[attr-defined]
    return tun.rt_poll_list and isinstance(ctx, Task) and ctx.normal_prio >= tun.rtnet_prio


def napi_schedule(cpu: Cpu, napi: NapiStruct, ctx: Context) -> bool:
    """napi_schedule(): returns False (and marks MISSED) if it was already scheduled."""
    if napi.sched:
        napi.missed = True
        return False
    napi.sched = True
    sd: SoftnetData = cpu.softnet
    if uses_rt_partition(cpu.kernel, ctx):
        napi.on_rt_list = True
        sd.rt_poll_list.append(napi)
        raise_softirq(cpu, NET_RX_RT, ctx)
    else:
        napi.on_rt_list = False
        sd.poll_list.append(napi)
        raise_softirq(cpu, NET_RX, ctx)
    return True


def napi_complete_done(cpu: Cpu, napi: NapiStruct, ctx: Context) -> bool:
    """napi_complete_done(): clear SCHED. If an interrupt was MISSED meanwhile, schedule it
    again at once and return False: the driver must then keep its interrupt masked."""
    napi.sched = False
    if napi.missed:
        napi.missed = False
        napi_schedule(cpu, napi, ctx)
        return False
    return True


def net_rx_action(cpu: Cpu, ctx: Context, rt: bool) -> Code:
    """net_rx_action() (rt=False) or rt_net_rx_action() (rt=True), as in Linux 4.1."""
    k = cpu.kernel
    tun: NetTunables = k.net  # type: ignore[attr-defined]
    sd: SoftnetData = cpu.softnet
    now = cpu.sim.now
    if tun.netdev_budget_usecs is None:  # time_limit = jiffies + 2, checked against jiffies
        time_limit = (now // k.jiffy_ns + 2) * k.jiffy_ns
    else:
        time_limit = now + tun.netdev_budget_usecs * 1000
    budget = tun.netdev_budget
    attr = "rt_poll_list" if rt else "poll_list"
    work_list: list[NapiStruct] = getattr(sd, attr)
    setattr(sd, attr, [])
    repoll: list[NapiStruct] = []
    while True:
        if not work_list:
            if not repoll:
                return
            break
        n = work_list.pop(0)
        yield k.costs.napi_poll_call
        work = yield from n.poll(n, n.weight, ctx)
        n.nr_polls += 1
        n.work += work
        sd.processed += work
        budget -= work
        if work >= n.weight:
            repoll.append(n)  # used its whole weight: not allowed to complete
        if budget <= 0 or cpu.sim.now >= time_limit:
            if rt:
                sd.rt_time_squeeze += 1
            else:
                sd.time_squeeze += 1
            break
    arrived = getattr(sd, attr)
    merged = work_list + arrived + repoll
    setattr(sd, attr, merged)
    if merged:
        raise_softirq(cpu, NET_RX_RT if rt else NET_RX, ctx)
