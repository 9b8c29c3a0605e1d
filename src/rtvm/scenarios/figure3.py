"""Garcia et al., Figure 3, as a scenario on one CPU: softirq priority inversion.

A non-RT NIC queue is saturated by a heavy sender; its IRQ thread (normal priority) is inside
net_rx_action, holding the softirq lock, when an RT frame arrives on the RT NIC. The RT IRQ
thread (FIFO 50) wakes, preempts, and needs the lock:

- with one poll_list (4.1-rt, the threaded method) it blocks, boosts the holder, waits for the
  holder's net_rx_action round to end, and then also polls the non-RT NAPI left on the shared
  poll_list at its own priority before the RT vhost thread (FIFO 48) gets the CPU;
- with the rt_poll_list (partitioned softirq) it waits for nothing and polls only its own NAPI.

Used by tests/kernel/test_figure3.py and ``python -m rtvm.scenarios.figure3 --trace F``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from rtvm.engine import Simulator
from rtvm.kernel import BLOCK, SCHED_FIFO, SCHED_OTHER, Kernel, NetTunables, Packet, RxQueue
from rtvm.kernel.nic import TcpSender, Wire
from rtvm.kernel.trace import ChromeTracer

US = 1_000


@dataclass
class Figure3Result:
    rt_poll_list: bool
    generation: str
    rt_lock_waits: int  # times the RT IRQ thread blocked on a softirq lock
    rt_lock_wait_ns: int
    rt_irq_thread_boosted_holder: bool  # a PI boost to 50 was seen on the non-RT IRQ thread
    napis_polled_by_rt_thread: list[str]  # NAPI names polled in the RT IRQ thread's context
    rt_irq_to_vhost_ns: int  # RT frame DMA'd -> RT vhost thread running
    time_squeeze: int
    polls: list[tuple[int, str, str]] = field(repr=False)  # (time, napi, polling context)
    tracer: Any = field(default=None, repr=False)


def run(
    rt_poll_list: bool = False,
    generation: str = "4.1-rt",
    trace: bool = False,
    rt_arrival_ns: int = 200 * US,
    burst_frames: int = 256,
    seed: int = 1,
) -> Figure3Result:
    sim = Simulator(seed=seed)
    tracer = ChromeTracer() if trace else None
    k = Kernel(
        sim,
        ncpus=1,
        generation=generation,
        tracer=tracer,
        net=NetTunables(rt_poll_list=rt_poll_list, rtnet_prio=47),
    )
    polls: list[tuple[int, str, str]] = []
    got: dict[str, int] = {}

    # the RT vNIC (vhost) thread, FIFO 48: woken by the RT frame's delivery
    def vhost_rt(t: Any) -> Any:
        while "rt_delivered" not in got:
            yield BLOCK
        got["vhost_running"] = sim.now
        yield 2 * US

    vhost = k.create_task("vhost-rt", vhost_rt, SCHED_FIFO, 48, {0})

    def deliver_rt(pkt: Packet, cpu: Any, ctx: Any) -> None:
        got["rt_delivered"] = sim.now
        k.wake_up(vhost, waker=cpu)

    heavy_sender: list[TcpSender] = []

    def deliver_heavy(pkt: Packet, cpu: Any, ctx: Any) -> None:
        heavy_sender[0].ack(pkt.nbytes)  # the receiver consumes at once: window never closes

    def recording(rxq: RxQueue) -> None:
        inner = rxq.napi.poll

        def poll(napi: Any, weight: int, ctx: Any) -> Any:
            polls.append((sim.now, napi.name, ctx.name))
            return (yield from inner(napi, weight, ctx))

        rxq.napi.poll = poll

    rt_q = RxQueue(k, "eth0-rt", irq=30, cpu=0, deliver=deliver_rt)
    heavy_q = RxQueue(
        k, "eth1", irq=31, cpu=0, deliver=deliver_heavy, irq_thread_policy=SCHED_OTHER
    )
    recording(rt_q)
    recording(heavy_q)
    wire = Wire(k, 10_000_000_000)
    sender = TcpSender(k, wire, heavy_q, window_bytes=2 * 1024 * 1024, batch_frames=8)
    heavy_sender.append(sender)
    sim.after(10 * US, lambda _: sender.start())
    # A backlog on the non-RT ring (a coalesced burst, as interrupt moderation produces), so
    # that the non-RT IRQ thread is inside net_rx_action when the RT frame arrives.
    burst = Packet("iperf", burst_frames * 1500, "heavy", burst_frames)
    sim.at(rt_arrival_ns - 10 * US, lambda _: heavy_q.dma(burst))
    rt_pkt = Packet("rr", 64, "rt")
    sim.at(rt_arrival_ns, lambda _: rt_q.dma(rt_pkt))
    sim.run(until=rt_arrival_ns + 3_000 * US)

    rt_thread = rt_q.irq.thread
    heavy_thread = heavy_q.irq.thread
    assert rt_thread is not None and heavy_thread is not None
    boosted = heavy_thread.name in k.boosted_tasks
    rt_waits = k.lock_stats.get(rt_thread.name, (0, 0))[0]
    rt_wait_ns = k.lock_stats.get(rt_thread.name, (0, 0))[1]
    after_rt = [p for p in polls if p[0] >= rt_arrival_ns]
    return Figure3Result(
        rt_poll_list=rt_poll_list,
        generation=generation,
        rt_lock_waits=rt_waits,
        rt_lock_wait_ns=rt_wait_ns,
        rt_irq_thread_boosted_holder=boosted,
        napis_polled_by_rt_thread=[n for _, n, c in after_rt if c == rt_thread.name],
        rt_irq_to_vhost_ns=got.get("vhost_running", -1) - rt_pkt.stamps.get("nic_rx", 0),
        time_squeeze=k.cpus[0].softnet.time_squeeze,
        polls=polls,
        tracer=tracer,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Figure 3 softirq inversion on one CPU")
    ap.add_argument("--rt-poll-list", action="store_true")
    ap.add_argument("--generation", default="4.1-rt")
    ap.add_argument("--trace", help="write a Perfetto trace here")
    args = ap.parse_args(argv)
    r = run(args.rt_poll_list, args.generation, trace=bool(args.trace))
    print(r)
    if args.trace:
        r.tracer.write(args.trace)
        print(f"trace: {args.trace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
