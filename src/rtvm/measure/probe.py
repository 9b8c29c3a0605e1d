"""rtvm's own UDP request/response probe: a small responder and a client.

The client sends requests at random inter-arrival times (uniform in [a, b] ms by default, the
paper's 1 to 10 ms) or at a fixed rate, timestamps each send and each reply with CLOCK_MONOTONIC,
and keeps one record per request (lost requests included). The responder timestamps receipt and
reply with the same clock, so on one host (namespaces share CLOCK_MONOTONIC) the records also give
the one-way delays and the server's own time.

Wire format, big-endian. The first 14 bytes are sockperf's message header, so the client can also
talk to ``sockperf server`` (which answers a ping with the same bytes, flag 2, and leaves the server
timestamps at zero); this is how the probe reaches a responder inside a guest::

    u64 seq | u16 flags (3: ping from client, 2: pong) | u32 length of the whole message
    4s "RTVM" | u8 version (1) | u8 0 | u16 0 | u32 run id
    u64 client send ns | u64 server receive ns | u64 server send ns | zero padding to length

Robustness: both ends check every datagram (size, flags, length, magic, version, run id, sequence
in range, the echoed client timestamp) and count what they drop as malformed; a second reply to
the same request is counted as a duplicate and ignored; records are preallocated, so a flood can
cost time but never memory or records. Both ends stop by themselves at a deadline.

Run as ``python -m rtvm.measure.probe serve|client ...`` (rtvm starts these itself, inside network
namespaces and with each party's priority and affinity).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HDR = struct.Struct(">QHI")
BODY = struct.Struct(">4sBBHIQQQ")
MAGIC = b"RTVM"
VERSION = 1
FLAG_PING = 3
FLAG_PONG = 2
MIN_SIZE = HDR.size + BODY.size  # 50
MAX_SIZE = 1400
_OFF_SRV = HDR.size + 4 + 1 + 1 + 2 + 4 + 8  # offset of the server receive timestamp

RECORD_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("t_send_ns", "<i8"),
        ("t_recv_ns", "<i8"),  # 0: no reply (lost)
        ("srv_recv_ns", "<i8"),  # 0: the responder gave no timestamps (sockperf)
        ("srv_send_ns", "<i8"),
    ]
)


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def encode_request(seq: int, run_id: int, t_send: int, size: int) -> bytes:
    size = max(MIN_SIZE, min(MAX_SIZE, size))
    msg = HDR.pack(seq, FLAG_PING, size) + BODY.pack(MAGIC, VERSION, 0, 0, run_id, t_send, 0, 0)
    return msg + bytes(size - MIN_SIZE)


@dataclass(frozen=True)
class Message:
    seq: int
    flags: int
    run_id: int
    t_client: int
    t_srv_recv: int
    t_srv_send: int


def decode(data: bytes) -> Message | None:
    """Parse a datagram; None when it is not a well-formed probe message."""
    if not MIN_SIZE <= len(data) <= MAX_SIZE:
        return None
    seq, flags, length = HDR.unpack_from(data, 0)
    if length != len(data) or flags not in (FLAG_PING, FLAG_PONG):
        return None
    magic, ver, _, _, run_id, t_c, t_r, t_s = BODY.unpack_from(data, HDR.size)
    if magic != MAGIC or ver != VERSION:
        return None
    return Message(seq, flags, run_id, t_c, t_r, t_s)


def make_reply(data: bytes, t_recv: int) -> bytes:
    """The responder's answer: same bytes, flag 2 (pong), server timestamps filled in."""
    b = bytearray(data)
    struct.pack_into(">H", b, 8, FLAG_PONG)
    struct.pack_into(">QQ", b, _OFF_SRV, t_recv, now_ns())
    return bytes(b)


def _apply_self(sched_text: str | None, cpus_text: str | None) -> None:
    if not sched_text and not cpus_text:
        return
    from rtvm.measure import sched

    s = sched.parse_sched(sched_text, "--sched") if sched_text else None
    c = sched.parse_cpus(cpus_text, "--cpus") if cpus_text else ()
    sched.apply_process(os.getpid(), s, c)


# -- responder --------------------------------------------------------------------------------
def serve(
    bind: str,
    port: int,
    max_seconds: float,
    ready: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Answer probe requests until ``max_seconds`` pass (or ``stop()`` is true)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind((bind, port))
    sock.settimeout(0.2)
    counts = {"received": 0, "replied": 0, "malformed": 0, "send_errors": 0}
    if ready is not None:
        ready(sock.getsockname()[1])
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and not (stop is not None and stop()):
        try:
            data, addr = sock.recvfrom(65536)
        except TimeoutError:
            continue
        except OSError:
            counts["send_errors"] += 1  # e.g. ICMP errors surfacing on the socket
            continue
        t = now_ns()
        counts["received"] += 1
        m = decode(data)
        if m is None or m.flags != FLAG_PING:
            counts["malformed"] += 1
            continue
        try:
            sock.sendto(make_reply(data, t), addr)
            counts["replied"] += 1
        except OSError:
            counts["send_errors"] += 1
    sock.close()
    return counts


# -- client -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """Inter-arrival times: uniform in [lo_ms, hi_ms], or fixed at 1/rate_hz."""

    lo_ms: float = 1.0
    hi_ms: float = 10.0
    rate_hz: float | None = None

    def mean_ms(self) -> float:
        return 1000.0 / self.rate_hz if self.rate_hz else (self.lo_ms + self.hi_ms) / 2

    def min_ms(self) -> float:
        return 1000.0 / self.rate_hz if self.rate_hz else self.lo_ms

    def gaps_ns(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.rate_hz:
            return np.full(n, int(1e9 / self.rate_hz), dtype=np.int64)
        return (rng.uniform(self.lo_ms, self.hi_ms, n) * 1e6).astype(np.int64)

    def describe(self) -> str:
        if self.rate_hz:
            return f"fixed {self.rate_hz:g}/s"
        return f"uniform {self.lo_ms:g}-{self.hi_ms:g} ms"


def client(
    target: tuple[str, int],
    duration_s: float,
    schedule: Schedule,
    seed: int,
    size: int = 64,
    reply_timeout_s: float = 1.0,
    max_requests: int = 1_000_000,
    run_id: int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Send requests for ``duration_s`` and return (records, counters)."""
    rng = np.random.default_rng(seed)
    cap = int(min(max_requests, duration_s * 1000.0 / schedule.min_ms() + 2))
    gaps = schedule.gaps_ns(cap, rng)
    rid = run_id if run_id is not None else int(rng.integers(1, 2**32 - 1))
    rec = np.zeros(cap, dtype=RECORD_DTYPE)
    rec["seq"] = np.arange(cap)
    counts = {"sent": 0, "replies": 0, "malformed": 0, "duplicates": 0, "foreign": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setblocking(False)
    sock.connect(target)  # only the target's datagrams reach us
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    start = now_ns()
    end = start + int(duration_s * 1e9)
    hard_end = end + int(reply_timeout_s * 1e9)
    next_send = start + int(rng.integers(0, max(1, int(gaps[0]))))  # random phase
    sent = 0
    outstanding = 0
    while True:
        now = now_ns()
        if now >= hard_end or (now >= end and outstanding == 0):
            break
        if now >= next_send and now < end and sent < cap:
            t = now_ns()
            # an OSError (e.g. ICMP port unreachable queued on the socket): the request is lost
            with contextlib.suppress(OSError):
                sock.send(encode_request(sent, rid, t, size))
            rec["t_send_ns"][sent] = t
            sent += 1
            outstanding += 1
            # open loop: the next send is scheduled from this one, never in a catch-up burst
            next_send = max(next_send + int(gaps[sent - 1]), now)
            continue
        wake = next_send if (sent < cap and next_send < end) else hard_end
        timeout_ms = max(0.0, (wake - now) / 1e6)
        if not poller.poll(min(timeout_ms, 200.0)):
            continue
        for _ in range(4096):  # bounded drain, so a flood cannot starve the sender
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                counts["foreign"] += 1  # ICMP errors queued on the socket
                break
            t = now_ns()
            m = decode(data)
            if (
                m is None
                or m.flags != FLAG_PONG
                or m.run_id != rid
                or m.seq >= sent
                or m.t_client != int(rec["t_send_ns"][m.seq])
            ):
                counts["malformed"] += 1
                continue
            r = rec[m.seq]
            if r["t_recv_ns"] != 0:
                counts["duplicates"] += 1
                continue
            rec["t_recv_ns"][m.seq] = t
            rec["srv_recv_ns"][m.seq] = m.t_srv_recv
            rec["srv_send_ns"][m.seq] = m.t_srv_send
            counts["replies"] += 1
            outstanding -= 1
    sock.close()
    counts["sent"] = sent
    counts["lost"] = sent - counts["replies"]
    return rec[:sent].copy(), counts


def rtt_us(rec: np.ndarray) -> np.ndarray:
    """Round-trip times in us, NaN for lost requests."""
    ok = rec["t_recv_ns"] != 0
    out = np.full(rec.shape[0], np.nan)
    out[ok] = (rec["t_recv_ns"][ok] - rec["t_send_ns"][ok]) / 1000.0
    return out


def server_us(rec: np.ndarray) -> np.ndarray:
    """Time spent in the responder (receive to reply), in us, where it stamped the message."""
    ok = (rec["t_recv_ns"] != 0) & (rec["srv_recv_ns"] != 0) & (rec["srv_send_ns"] != 0)
    return (rec["srv_send_ns"][ok] - rec["srv_recv_ns"][ok]) / 1000.0


# -- command line (the processes rtvm starts) -----------------------------------------------
def _parse_interval(text: str) -> tuple[float, float]:
    a, _, b = text.partition(":")
    lo, hi = float(a), float(b or a)
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError("interval must be LO:HI ms with 0 < LO <= HI")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtvm.measure.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="answer probe requests")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--max-seconds", type=float, default=600)
    s.add_argument("--sched")
    s.add_argument("--cpus")
    c = sub.add_parser("client", help="send requests and record replies")
    c.add_argument("--target", required=True, help="HOST:PORT")
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--interval-ms", type=_parse_interval, default=(1.0, 10.0))
    c.add_argument("--rate", type=float, default=None)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--reply-timeout", type=float, default=1.0)
    c.add_argument("--records", required=True, help="where to write the records (.npy)")
    c.add_argument("--sched")
    c.add_argument("--cpus")
    a = p.parse_args(argv)
    try:
        _apply_self(a.sched, a.cpus)
    except Exception as exc:  # one line for rtvm to quote
        print(f"probe: cannot apply priority/affinity: {exc}", file=sys.stderr)
        return 3
    if a.cmd == "serve":

        def ready(port: int) -> None:
            print(f"READY {port}", flush=True)

        counts = serve(a.bind, a.port, a.max_seconds, ready)
        print(json.dumps(counts), flush=True)
        return 0
    host, _, port = a.target.rpartition(":")
    lo, hi = a.interval_ms
    rec, counts = client(
        (host, int(port)),
        a.duration,
        Schedule(lo, hi, a.rate),
        a.seed,
        a.size,
        a.reply_timeout,
    )
    np.save(a.records, rec)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
