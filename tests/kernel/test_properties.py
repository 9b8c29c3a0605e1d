"""Invariants over random small scenarios (hypothesis): one context per CPU at a time, a task on
one CPU at a time, busy + idle = elapsed, time never goes back, every frame accounted for, a
CFS next buddy is always a task queued on its runqueue."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from rtvm.engine import Simulator
from rtvm.kernel import GENERATIONS, SCHED_FIFO, SCHED_OTHER, Kernel, Packet, RxQueue
from rtvm.kernel.trace import ChromeTracer

US = 1_000


class RecordingTracer(ChromeTracer):
    def __init__(self) -> None:
        super().__init__()
        self.slices: list[tuple[int, str, str, int, int]] = []

    def cpu_slice(self, cpu, name, kind, start, end):
        self.slices.append((cpu, name, kind, start, end))
        super().cpu_slice(cpu, name, kind, start, end)


task_spec = st.tuples(
    st.sampled_from([SCHED_OTHER, SCHED_FIFO]),
    st.integers(1, 99),
    st.sampled_from([{0}, {1}, {0, 1}]),
    st.lists(st.tuples(st.integers(1, 80), st.integers(0, 80)), min_size=1, max_size=5),
)
queue_spec = st.tuples(
    st.integers(0, 1),  # cpu
    st.sampled_from([SCHED_FIFO, SCHED_OTHER]),  # irq thread policy
    st.lists(st.tuples(st.integers(0, 400), st.integers(1, 80)), max_size=12),  # (t us, frames)
    st.integers(16, 256),  # ring size
)


@given(
    gen=st.sampled_from(sorted(GENERATIONS)),
    tasks=st.lists(task_spec, max_size=4),
    queues=st.lists(queue_spec, min_size=1, max_size=2),
    rt_poll_list=st.booleans(),
    wakeup_gran_us=st.sampled_from([None, 5, 20]),  # small: CFS wakees preempt, name buddies
)
def test_invariants(gen, tasks, queues, rt_poll_list, wakeup_gran_us):
    from dataclasses import replace

    from rtvm.kernel import BLOCK, NetTunables
    from rtvm.kernel.sched import SchedTunables

    sim = Simulator(seed=2)
    times = []
    stale_buddies = []

    def observe(t, fn, arg):
        times.append(t)
        stale_buddies.extend(
            (t, c.id) for c in k.cpus if c.rq.next is not None and c.rq.next not in c.rq.cfs
        )

    sim.add_observer(observe)
    tr = RecordingTracer()
    tun = SchedTunables.for_cpus(2)
    if wakeup_gran_us is not None:
        tun = replace(tun, wakeup_granularity_ns=wakeup_gran_us * US)
    net = NetTunables(rt_poll_list=rt_poll_list)
    k = Kernel(sim, 2, gen, tracer=tr, net=net, tunables=tun)

    for i, (policy, prio, allowed, plan) in enumerate(tasks):

        def code(t, plan=plan):
            for run_us, sleep_us in plan:
                yield run_us * US
                if sleep_us:
                    sim.after(sleep_us * US, lambda _, t=t: k.wake_up(t))
                    yield BLOCK

        k.create_task(f"t{i}", code, policy, prio if policy == SCHED_FIFO else 0, allowed)

    injected = delivered = 0
    rxqs = []
    for j, (cpu, pol, arrivals, ring) in enumerate(queues):
        counter = {"n": 0}

        def deliver(pkt, cpu_, ctx, counter=counter):
            counter["n"] += pkt.npkts

        q = RxQueue(
            k,
            f"eth{j}",
            40 + j,
            cpu,
            deliver,
            ring_size=ring,
            irq_thread_policy=pol,
            irq_thread_prio=50,
        )
        rxqs.append((q, counter))
        for at_us, frames in arrivals:
            injected += frames
            pkt = Packet(f"f{j}", frames * 1000, "heavy" if frames > 1 else "rt", frames)
            sim.at(at_us * US, lambda _, q=q, pkt=pkt: q.dma(pkt))

    end = 2_000 * US
    sim.run(until=end)
    for c in k.cpus:
        c.account()
        assert c.busy_total_ns + c.idle_ns == end  # CPU time conserved

    assert times == sorted(times)  # time never goes back
    assert not stale_buddies  # cleared whenever its task is picked or dequeued

    by_cpu: dict[int, list] = {}
    by_task: dict[str, list] = {}
    for cpu, name, kind, start, stop in tr.slices:
        assert stop > start
        by_cpu.setdefault(cpu, []).append((start, stop))
        if kind in ("thread", "softirq") and not name.startswith("hardirq/"):
            by_task.setdefault(name, []).append((start, stop))
    for spans in list(by_cpu.values()) + list(by_task.values()):
        spans.sort()
        for (_, e1), (s2, _) in itertools.pairwise(spans):
            assert s2 >= e1  # one context per CPU; one CPU per task

    delivered = sum(c["n"] for _, c in rxqs)
    queued = sum(q.ring_pkts for q, _ in rxqs)
    dropped = sum(k.drops.values())
    assert injected == delivered + dropped + queued
