"""netif_rx_ni and the per-CPU backlog NAPI (how vhost TX reaches the bridge before 4.11)."""

from __future__ import annotations

from helpers import US, FakeNapi, kernel

from rtvm.kernel import SCHED_FIFO, SCHED_OTHER, napi_schedule
from rtvm.kernel.napi import DEV_WEIGHT, NetTunables, enqueue_to_backlog, netif_rx_ni
from rtvm.kernel.softirq import local_bh_disable, local_bh_enable


def _receive(k, log, cost=1 * US):
    """The bridge + xmit of one backlog packet: burn ``cost``, note who ran it and when."""

    def receive(pkt, ctx):
        yield cost
        log.append((k.sim.now, pkt, ctx.name))

    return receive


def _heavy_holder(k, napi):
    """A SCHED_OTHER IRQ-thread stand-in that schedules a heavy NAPI and serves NET_RX."""

    def code(t):
        cpu = k.cpus[0]
        yield from local_bh_disable(cpu, t)
        napi_schedule(cpu, napi.napi, t)
        yield from local_bh_enable(cpu, t)

    return code


def test_netif_rx_ni_runs_the_packet_in_net_rx_from_the_callers_context():
    k = kernel(generation="vanilla", switch_ns=0)
    log = []

    def vhost(t):
        yield from netif_rx_ni(k.cpus[0], t, "resp", _receive(k, log))

    k.create_task("vhost-rt", vhost, SCHED_FIFO, 48)
    k.sim.run()
    assert log and log[0][1] == "resp" and log[0][2] == "vhost-rt"
    assert k.cpus[0].busy_ns["softirq"] >= 1 * US
    assert not k.cpus[0].softnet.backlog.sched  # completed: the queue is empty


def test_4_1_rt_sender_blocks_on_the_net_rx_lock_then_drains_the_shared_poll_list():
    """The TX-side inversion: a FIFO 48 vhost thread handing its packet to the backlog must take
    the CPU's NET_RX lock, held by a SCHED_OTHER thread polling a heavy NIC; it boosts the holder
    and waits for the holder's pass (one poll of each listed NAPI: 64 x 200 ns). Its packet
    then goes ahead of the repolled heavy NAPI (4.1's list order), and the thread goes on
    draining that heavy NAPI at its own priority."""
    k = kernel(generation="4.1-rt", switch_ns=0)
    heavy = FakeNapi(k, "eth1", backlog=10 * 64, cost_per_pkt=200)
    log = []

    def vhost(t):
        yield 5 * US  # the holder is inside its pass by now
        yield from netif_rx_ni(k.cpus[0], t, "resp", _receive(k, log))

    k.create_task("irq/31-eth1", _heavy_holder(k, heavy), SCHED_OTHER)
    k.sim.after(1 * US, lambda _: k.create_task("vhost-rt", vhost, SCHED_FIFO, 48))
    k.sim.run(until=2_000 * US)
    assert "irq/31-eth1" in k.boosted_tasks
    sent = log[0][0]
    holder_pass = [t for t, who in heavy.polled_by if who == "irq/31-eth1" and t < sent]
    assert len(holder_pass) == 1 and sent >= 64 * 200  # waited for the holder's whole pass
    by_vhost = [t for t, who in heavy.polled_by if who == "vhost-rt"]
    assert by_vhost and by_vhost[0] > sent  # then served the heavy NAPI itself


def test_rt_poll_list_keeps_a_high_priority_sender_off_the_shared_list():
    net = NetTunables(rt_poll_list=True, rtnet_prio=47)
    k = kernel(generation="4.1-rt", switch_ns=0, net=net)
    heavy = FakeNapi(k, "eth1", backlog=10 * 64, cost_per_pkt=200)
    log = []

    def vhost(t):
        yield 5 * US
        yield from netif_rx_ni(k.cpus[0], t, "resp", _receive(k, log))

    k.create_task("irq/31-eth1", _heavy_holder(k, heavy), SCHED_OTHER)
    k.sim.after(1 * US, lambda _: k.create_task("vhost-rt", vhost, SCHED_FIFO, 48))
    k.sim.run(until=2_000 * US)
    assert log[0][0] < 10 * US  # sent at once: own vector, own lock, own list
    assert all(who != "vhost-rt" for _, who in heavy.polled_by)


def test_process_backlog_stops_at_its_quota_and_is_repolled():
    k = kernel(generation="6.18-rt", switch_ns=0)
    log = []

    def flood(t):
        cpu = k.cpus[0]
        yield from local_bh_disable(cpu, t)
        for i in range(DEV_WEIGHT + 10):
            enqueue_to_backlog(cpu, i, _receive(k, log, cost=100), t)
        yield from local_bh_enable(cpu, t)

    k.create_task("tap-writer", flood, SCHED_FIFO, 10)
    k.sim.run()
    sd = k.cpus[0].softnet
    assert [p for _, p, _ in log] == list(range(DEV_WEIGHT + 10))  # FIFO, nothing lost
    assert sd.backlog.nr_polls == 2  # one full quota, then the repoll finishes the queue
    assert not sd.backlog.sched and not sd.input_pkt_queue
