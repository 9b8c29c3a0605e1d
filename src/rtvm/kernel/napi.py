"""NAPI and the NET_RX softirq (net/core/dev.c as of Linux 4.1; kernel-facts.md section 1).

- ``napi_schedule``: if the NAPI is already scheduled, do nothing (4.11+: mark it MISSED, and
  napi_complete_done reschedules it); else add it to *this CPU's* softnet_data.poll_list and
  raise NET_RX. With the partitioned softirq switched on, a
  NAPI scheduled from a thread of priority >= rtnet_prio goes to the rt_poll_list and raises
  NET_RX_RT instead (Garcia et al.).
- ``net_rx_action``: splice the poll_list to a local list; poll each NAPI once with its weight
  (64); stop when the budget (netdev_budget, 300, spent by what each poll *returns*: 4.1's
  ixgbe returns 0 once it completes) is spent or 2 jiffies have passed
  (time_squeeze++); a NAPI that used its whole weight goes to the repoll list; at the end the
  not-yet-polled entries, then the entries that arrived meanwhile, then the repolls are put
  back on the poll_list, and NET_RX is raised again if it is not empty.
- ``rt_net_rx_action``: the same loop over the rt_poll_list only.
- ``netif_rx_ni``: how a thread hands a packet to the stack (tun_get_user before 4.11, i.e.
  every vhost TX): queue it on this CPU's backlog (softnet_data.input_pkt_queue), schedule the
  per-CPU backlog NAPI on the *same* poll_list the NICs use, and run NET_RX on the way out
  (vanilla: preempt_disable + do_softirq; RT: local_bh_disable/enable, so the thread takes the
  NET_RX lock and serves whatever else is on the poll_list). process_backlog then runs the
  packet's receive path (bridge, dev_queue_xmit) in softirq.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtvm.kernel.softirq import (
    NET_RX,
    NET_RX_RT,
    local_bh_disable,
    local_bh_enable,
    open_softirq,
    raise_softirq,
)
from rtvm.kernel.task import Code, Context, Task

if TYPE_CHECKING:
    from rtvm.kernel.cpu import Cpu
    from rtvm.kernel.host import Kernel

NAPI_POLL_WEIGHT = 64
NETDEV_MAX_BACKLOG = 1000  # net.core.netdev_max_backlog
DEV_WEIGHT = 64  # net.core.dev_weight: process_backlog's quota

#: what __netif_receive_skb does with a backlog packet (bridge, then xmit): kernel code
Receive = Callable[[Any, Context], Code]


@dataclass
class NetTunables:
    netdev_budget: int = 300
    #: None: 2 jiffies, the 4.1 time limit (``time_limit = jiffies + 2``)
    netdev_budget_usecs: int | None = None
    #: the partitioned softirq (rt_poll_list / rt_softirq_lock): off by default
    rt_poll_list: bool = False
    rtnet_prio: int = 47


class NapiStruct:
    """struct napi_struct: ``poll(napi, weight, ctx)`` is the driver's poll, a generator that
    returns what the driver reports to net_rx_action (the packets it processed, or as 4.1's
    ixgbe does, 0 once it completed) and counts the packets themselves in ``work``."""

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
        self.work = 0  # packets polled, over the run

    def __repr__(self) -> str:
        return f"<napi {self.name}>"


class SoftnetData:
    """Per-CPU struct softnet_data, with the partitioned rt_poll_list beside the poll_list."""

    __slots__ = (
        "backlog",
        "backlog_dropped",
        "input_pkt_queue",
        "poll_list",
        "processed",
        "rt_poll_list",
        "rt_time_squeeze",
        "time_squeeze",
    )

    def __init__(self, cpu_id: int = 0) -> None:
        self.input_pkt_queue: deque[tuple[Any, Receive]] = deque()
        self.backlog = NapiStruct(f"backlog/{cpu_id}", self._process_backlog, DEV_WEIGHT)
        self.backlog_dropped = 0
        self.poll_list: list[NapiStruct] = []
        self.rt_poll_list: list[NapiStruct] = []
        self.time_squeeze = 0
        self.rt_time_squeeze = 0
        self.processed = 0

    def _process_backlog(self, napi: NapiStruct, quota: int, ctx: Context) -> Code:
        """process_backlog(): run queued packets up the stack; complete when the queue is
        empty (a packet queued meanwhile is picked up by this same loop, not rescheduled)."""
        q = self.input_pkt_queue
        work = 0
        while q and work < quota:
            pkt, receive = q.popleft()
            work += 1
            napi.work += 1
            yield from receive(pkt, ctx)
        if work < quota:  # queue empty: __napi_complete (a full quota is repolled instead)
            napi.sched = False
        return work


def setup(kernel: Kernel, tunables: NetTunables | None = None) -> NetTunables:
    """Install softnet_data on every CPU and open NET_RX (and NET_RX_RT)."""
    tun = tunables or NetTunables()
    kernel.net = tun
    for cpu in kernel.cpus:
        cpu.softnet = SoftnetData(cpu.id)
    open_softirq(kernel, NET_RX, lambda cpu, ctx: net_rx_action(cpu, ctx, rt=False))
    open_softirq(kernel, NET_RX_RT, lambda cpu, ctx: net_rx_action(cpu, ctx, rt=True))
    return tun


def uses_rt_partition(kernel: Kernel, ctx: Context) -> bool:
    """Does ``ctx`` schedule NAPIs on the rt_poll_list (a thread with prio >= rtnet_prio)?"""
    tun: NetTunables = kernel.net
    return tun.rt_poll_list and isinstance(ctx, Task) and ctx.normal_prio >= tun.rtnet_prio


def napi_schedule(cpu: Cpu, napi: NapiStruct, ctx: Context) -> bool:
    """napi_schedule(): returns False if it was already scheduled (and on 4.11+ marks it
    MISSED)."""
    if napi.sched:
        if cpu.kernel.gen.napi_state_missed:
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
    """napi_complete_done(): clear SCHED. If an interrupt was MISSED meanwhile (4.11+),
    schedule it again at once and return False: the driver must then keep its interrupt
    masked."""
    napi.sched = False
    if napi.missed:
        napi.missed = False
        napi_schedule(cpu, napi, ctx)
        return False
    return True


def net_rx_action(cpu: Cpu, ctx: Context, rt: bool) -> Code:
    """net_rx_action() (rt=False) or rt_net_rx_action() (rt=True), as in Linux 4.1."""
    k = cpu.kernel
    tun: NetTunables = k.net
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
    frames = 0
    while True:
        if not work_list:
            if not repoll:
                sd.processed += frames
                _account_pass(k, ctx, now, frames)
                return
            break
        n = work_list.pop(0)
        yield k.costs.napi_poll_call
        before = n.work
        work = yield from n.poll(n, n.weight, ctx)
        n.nr_polls += 1
        frames += n.work - before
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
    sd.processed += frames
    _account_pass(k, ctx, now, frames)
    if merged:
        raise_softirq(cpu, NET_RX_RT if rt else NET_RX, ctx)


def _account_pass(k: Kernel, ctx: Context, start: int, frames: int) -> None:
    """One net_rx_action pass by ``ctx``: how many packets it polled and how long it took
    (wall time: on RT under the NET_RX lock, preemption and interrupts included). The rest of
    another context's pass is what a thread blocked on the lock waits (Kernel.net_rx_passes)."""
    ns = k.sim.now - start
    st = k.net_rx_passes.get(ctx.name)
    if st is None:
        k.net_rx_passes[ctx.name] = [1, frames, frames, ns, ns]
        return
    st[0] += 1
    st[1] += frames
    st[3] += ns
    if frames > st[2]:
        st[2] = frames
    if ns > st[4]:
        st[4] = ns


def netif_rx_ni(cpu: Cpu, t: Task, pkt: Any, receive: Receive) -> Code:
    """netif_rx_ni() from thread ``t`` on ``cpu``: enqueue_to_backlog, then serve NET_RX.

    The thread stays on ``cpu`` meanwhile (preempt_disable on vanilla, migrate_disable inside
    local_bh_disable on RT), because the backlog it fed is this CPU's."""
    k = cpu.kernel
    vec = NET_RX_RT if uses_rt_partition(k, t) else NET_RX
    allowed = t.allowed
    t.allowed = frozenset((cpu.id,))
    try:
        yield from local_bh_disable(cpu, t, vec)
        enqueue_to_backlog(cpu, pkt, receive, t)
        yield from local_bh_enable(cpu, t, vec)
    finally:
        t.allowed = allowed


def enqueue_to_backlog(cpu: Cpu, pkt: Any, receive: Receive, ctx: Context) -> bool:
    """enqueue_to_backlog(): queue on this CPU; schedule the backlog NAPI if it is not yet."""
    sd: SoftnetData = cpu.softnet
    if len(sd.input_pkt_queue) >= NETDEV_MAX_BACKLOG:
        sd.backlog_dropped += 1
        cpu.kernel.count_drop("backlog_full", pkt)
        return False
    sd.input_pkt_queue.append((pkt, receive))
    if not sd.backlog.sched:
        napi_schedule(cpu, sd.backlog, ctx)
    return True
