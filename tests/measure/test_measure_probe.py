"""rtvm's UDP probe survives malformed, truncated and duplicated packets and a bounded flood
without crashing or losing its records."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rtvm.measure import probe


@given(st.binary(max_size=200))
def test_decode_never_raises(data):
    m = probe.decode(data)
    assert m is None or isinstance(m, probe.Message)


def test_roundtrip_and_truncation():
    req = probe.encode_request(5, 77, 123456, 64)
    assert len(req) == 64
    m = probe.decode(req)
    assert m == probe.Message(5, probe.FLAG_PING, 77, 123456, 0, 0)
    rep = probe.decode(probe.make_reply(req, 999))
    assert rep.flags == probe.FLAG_PONG and rep.t_srv_recv == 999 and rep.t_srv_send >= 999
    for cut in range(len(req)):
        assert probe.decode(req[:cut]) is None  # the length field no longer matches
    bad_magic = req[:14] + b"XXXX" + req[18:]
    assert probe.decode(bad_magic) is None


class Responder:
    """The real responder in a thread of this process."""

    def __init__(self):
        self.port = None
        self._ready = threading.Event()
        self._stop = False
        self.counts = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        assert self._ready.wait(5)

    def _run(self):
        def ready(p):
            self.port = p
            self._ready.set()

        self.counts = probe.serve("127.0.0.1", 0, 30, ready, lambda: self._stop)

    def stop(self):
        self._stop = True
        self.t.join(5)
        assert not self.t.is_alive()
        return self.counts


def _garbage(req: bytes) -> list[bytes]:
    pong = bytearray(req)
    struct.pack_into(">H", pong, 8, probe.FLAG_PONG)
    return [
        b"",
        b"x",
        req[:13],
        req[:49],
        req[:-1],
        req + b"extra",
        bytes(pong),
        req[:14] + b"NOPE" + req[18:],
        os.urandom(64),
        os.urandom(1400),
        b"\xff" * 9000,
    ]


def test_responder_survives_malformed_duplicates_and_flood():
    r = Responder()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    target = ("127.0.0.1", r.port)
    req = probe.encode_request(1, 42, probe.now_ns(), 64)
    bad = _garbage(req)
    for g in bad:
        s.sendto(g, target)
    # bounded flood: 20 000 datagrams or 3 s, whichever first
    end = time.monotonic() + 3
    flooded = 0
    while flooded < 20_000 and time.monotonic() < end:
        s.sendto(bad[flooded % len(bad)], target)
        flooded += 1
    # still answers, and answers duplicates of a request each time (the client dedups). The
    # flood may still fill the socket buffer, so a request that finds it full is lost: resend
    # until three answers came back, as the measuring client does.
    got = 0
    s.settimeout(0.2)
    deadline = time.monotonic() + 10
    while got < 3 and time.monotonic() < deadline:
        s.sendto(req, target)
        try:
            data = s.recv(2048)
        except TimeoutError:
            continue
        m = probe.decode(data)
        if m is not None and m.seq == 1 and m.flags == probe.FLAG_PONG:
            got += 1
    counts = r.stop()
    assert got == 3
    assert counts["replied"] >= 3  # every request that got in was answered, duplicates too
    assert counts["malformed"] >= len(bad) - 1  # the empty datagram may count too
    assert counts["received"] == counts["replied"] + counts["malformed"]


def _evil_responder(sock: socket.socket, stop: threading.Event, stats: dict) -> None:
    """Answers each request twice, plus truncated, forged and garbage replies, plus a flood."""
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        m = probe.decode(data)
        if m is None:
            continue
        rep = probe.make_reply(data, probe.now_ns())
        forged_seq = bytearray(rep)
        struct.pack_into(">Q", forged_seq, 0, m.seq + 10_000)
        forged_run = bytearray(rep)
        struct.pack_into(">I", forged_run, 14 + 8, (m.run_id + 1) % 2**32)
        forged_ts = bytearray(rep)
        struct.pack_into(">Q", forged_ts, 14 + 12, m.t_client + 1)
        for pkt in (rep[:20], bytes(forged_seq), bytes(forged_run), bytes(forged_ts), rep, rep):
            sock.sendto(pkt, addr)
        # bounded flood of garbage to the client after each request
        for _ in range(200):
            sock.sendto(os.urandom(64), addr)
        stats["requests"] = stats.get("requests", 0) + 1


def test_client_keeps_every_record_under_duplicates_garbage_and_flood():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    seen: dict = {}
    t = threading.Thread(target=_evil_responder, args=(sock, stop, seen), daemon=True)
    t.start()
    try:
        rec, counts = probe.client(
            sock.getsockname(), 2.0, probe.Schedule(rate_hz=100), seed=3, reply_timeout_s=1.0
        )
    finally:
        stop.set()
        t.join(5)
        sock.close()
    assert counts["sent"] == len(rec) == seen["requests"] >= 150
    assert counts["lost"] == 0 and counts["replies"] == counts["sent"]
    assert counts["duplicates"] == counts["sent"]
    assert counts["malformed"] >= 4 * counts["sent"]
    assert np.all(rec["t_recv_ns"] > rec["t_send_ns"])
    assert np.array_equal(rec["seq"], np.arange(len(rec)))
    assert np.all(probe.rtt_us(rec) > 0)


def test_client_without_responder_records_losses():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens: ICMP port unreachable, every request lost
    rec, counts = probe.client(
        ("127.0.0.1", port), 0.5, probe.Schedule(rate_hz=50), seed=1, reply_timeout_s=0.2
    )
    assert counts["sent"] == len(rec) > 10
    assert counts["lost"] == counts["sent"] and counts["replies"] == 0
    assert np.isnan(probe.rtt_us(rec)).all()


def test_random_interarrivals_are_uniform_and_seeded():
    s = probe.Schedule(1.0, 10.0)
    a = s.gaps_ns(5000, np.random.default_rng(1))
    b = s.gaps_ns(5000, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert a.min() >= 1e6 and a.max() <= 10e6 and abs(a.mean() / 1e6 - 5.5) < 0.15
    assert np.all(probe.Schedule(rate_hz=200).gaps_ns(3, np.random.default_rng(1)) == 5_000_000)
