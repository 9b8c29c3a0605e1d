"""LLC eviction accounting, the wire and the window-limited sender, the cost profile."""

from __future__ import annotations

import math
from importlib import resources

import pytest
from helpers import MS, kernel

from rtvm.kernel.llc import Llc
from rtvm.kernel.nic import ITR_8K, ITR_100K, Itr, Packet, RxQueue, TcpSender, Wire
from rtvm.kernel.profile import ProfileError, load_profile, parse_profile


def test_llc_misses_grow_with_bytes_streamed_since_last_touch():
    llc = Llc(8 << 20, 64, 65)
    llc.register("rt", 256 * 1024)
    assert llc.touch("rt") == 0  # nothing streamed: all resident
    llc.stream(1 << 20)
    small = llc.touch("rt")
    llc.stream(32 << 20)
    big = llc.touch("rt")
    assert 0 < small < big
    lines = 256 * 1024 // 64
    assert big == round(lines * (1 - math.exp(-4))) * 65
    o = llc.owners["rt"]
    assert o.references == 3 * lines and 0 < o.miss_ratio < 1


def test_lines_another_path_keeps_touching_stay_resident():
    """Shared code: a busy path touching the owner every 100 KB of streaming keeps its lines in;
    a dormant one alone loses them. The busy path pays only for what it lost in between."""
    shared, private = Llc(8 << 20, 64, 65), Llc(8 << 20, 64, 65)
    for llc in (shared, private):
        llc.register("code", 64 * 1024)
    busy = 0
    for _ in range(200):  # 20 MB streamed
        for llc in (shared, private):
            llc.stream(100 * 1024)
        busy += shared.touch("code")
    assert shared.touch("code") < private.touch("code") / 50
    lines = 64 * 1024 // 64
    assert busy < 200 * lines * 65 * 0.02  # < 2% of the lines missed per busy touch


def test_wire_serialises_at_line_rate():
    k = kernel()
    wire = Wire(k, 10_000_000_000)
    done = []
    for _ in range(3):
        wire.transmit(Packet("f", 1500), lambda p: done.append(k.sim.now))
    k.sim.run()
    per = (1500 + 38) * 8 // 10
    assert done == [per, 2 * per, 3 * per]


def test_tcp_sender_is_window_limited_and_resumes_on_ack():
    k = kernel(generation="vanilla")
    got = []
    rxq = RxQueue(k, "eth1", 41, 0, lambda p, c, x: got.append(p))
    sender = TcpSender(k, Wire(k, 10_000_000_000), rxq, window_bytes=200_000)
    sender.start()
    k.sim.run(until=5 * MS)
    assert sender.inflight <= 200_000
    stalled = sender.sent_bytes
    assert stalled <= 200_000  # nothing acked: the window closed
    for p in got:
        sender.ack(p.nbytes)
    k.sim.run(until=10 * MS)
    assert sender.sent_bytes > stalled


def test_rx_ring_overflow_is_counted_as_a_drop():
    k = kernel()
    rxq = RxQueue(k, "eth1", 41, 0, lambda p, c, x: None, ring_size=64)
    rxq.dma(Packet("f", 60 * 1500, "heavy", 60))
    rxq.dma(Packet("f", 10 * 1500, "heavy", 10))
    # 4 frames still fit; the 6 that find the ring full are dropped
    assert rxq.drops == 6 and k.drops == {"rx_ring_full": 6}
    assert rxq.ring_pkts == 64


def test_adaptive_itr_settles_at_bulk_for_a_stream_and_lowest_for_sparse_requests():
    bulk, sparse = Itr(), Itr()
    for _ in range(60):
        bulk.total_packets, bulk.total_bytes = 100, 100 * 1500  # ~100 frames per interrupt
        bulk.update()
        sparse.total_packets, sparse.total_bytes = 1, 64
        sparse.update()
    assert abs(bulk.itr - ITR_8K) <= ITR_8K // 20 and bulk.interval_ns > 115_000
    assert abs(sparse.itr - ITR_100K) <= 2 and sparse.interval_ns < 11_000
    fixed = Itr(fixed_us=30)
    fixed.total_packets, fixed.total_bytes = 100, 150_000
    fixed.update()
    assert fixed.interval_ns == 30_000


def _stream(itr_us: int | None, until_ns: int) -> RxQueue:
    k = kernel(generation="vanilla")
    rxq = RxQueue(k, "eth1", 41, 0, lambda p, c, x: None, gro_frames=43, itr_us=itr_us)
    sender = TcpSender(k, Wire(k, 10_000_000_000), rxq, window_bytes=1 << 30)
    sender.start()
    k.sim.run(until=until_ns)
    return rxq


def test_interrupt_rate_follows_the_itr_and_polls_see_frames_as_they_arrive():
    """At 10 Gb/s of MTU frames (one per 1.23 us): with 125 us between interrupts each one
    finds ~100 frames, more than a poll's weight of 64; without moderation the driver takes
    the frames almost one by one, as they arrive, though they travel in 43-frame bursts."""
    moderated = _stream(125, 20 * MS)
    assert 150 <= moderated.irq.count <= 165  # 20 ms / 125 us = 160
    per_irq = moderated.rx_packets / moderated.irq.count
    assert 90 <= per_irq <= 110
    assert moderated.napi.nr_polls > moderated.irq.count  # a full-weight poll is repolled
    free = _stream(0, 2 * MS)
    assert free.rx_packets / free.napi.nr_polls < 4
    assert free.drops == moderated.drops == 0


def test_profile_values_all_have_sources_and_statuses():
    p = load_profile()
    assert p.entries
    for key, c in p.entries.items():
        assert c.source.strip(), key
        assert c.status in ("sourced", "estimate", "fitted")
    assert p.context_switch == p.entries["context_switch"].value
    with pytest.raises(AttributeError):
        _ = p.no_such_cost


def test_profile_rejects_a_value_without_source():
    with pytest.raises(ValueError, match="lacks 'source'"):
        parse_profile('[costs.x]\nvalue = 1\nstatus = "sourced"\n')
    with pytest.raises(ValueError, match="allowed: sourced"):
        parse_profile('[costs.x]\nvalue = 1\nstatus = "guess"\nsource = "me"\n')


EMBEDDED = resources.files("rtvm.profiles").joinpath("testbed.toml").read_text("utf-8")


def _cost(value: str) -> str:
    return f'[costs.x]\nvalue = {value}\nstatus = "sourced"\nsource = "me"\n'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (_cost("-1"), "costs.x.value = -1; allowed: an integer 0.."),
        (_cost('"1300"'), "costs.x.value = '1300'; allowed: an integer"),  # not coerced
        (_cost("1300.7"), "costs.x.value = 1300.7"),  # not truncated
        (_cost("inf"), "costs.x.value = inf"),
        (_cost("nan"), "costs.x.value = nan"),
        (_cost("true"), "costs.x.value = True"),
        (_cost("[1300]"), "costs.x.value = [1300]"),
        (_cost("1_000_000_000_001"), "allowed: an integer 0..1,000,000,000,000"),
        ("costs = 5\n", "costs = 5; allowed: a table"),
        ("[costs]\nx = 1300\n", "costs.x = 1300; allowed: a table (value, status and source)"),
        ("meta = 5\n", "meta = 5; allowed: a table"),
    ],
)
def test_a_cost_is_an_integer_of_0_or_more_in_a_table(text, needle):
    """Anything else would reach the model as a wrong type or run its clock backwards."""
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "p.toml")
    assert str(e.value).startswith("p.toml: ") and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_a_profile_file_must_hold_every_cost_of_the_embedded_one_and_no_other(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(EMBEDDED)
    assert load_profile(p).entries == load_profile().entries
    p.write_text(EMBEDDED.replace("[costs.rt_server_compute]", "[costs.rt_server_compte]"))
    with pytest.raises(ProfileError, match=r"unknown cost 'rt_server_compte' \(did you mean "):
        load_profile(p)
    p.write_text(EMBEDDED.split("[costs.rt_server_compute]")[0])
    with pytest.raises(ProfileError, match=r"lacks \d+ cost\(s\): .*rt_server_compute"):
        load_profile(p)
    p.write_text("")
    with pytest.raises(ProfileError, match=rf"lacks {len(load_profile().entries)} cost\(s\)"):
        load_profile(p)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(ProfileError, match="not UTF-8 text"):
        load_profile(p)
    p.write_text("costs = [")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(p)
    with pytest.raises(OSError):
        load_profile(tmp_path / "missing.toml")


def test_an_override_is_checked_as_a_profile_value_is():
    p = load_profile()
    assert p.with_values(syscall=7).syscall == 7
    with pytest.raises(ProfileError, match="override: syscall = -1"):
        p.with_values(syscall=-1)
    with pytest.raises(KeyError, match="unknown cost 'sycall'"):
        p.with_values(sycall=1)
