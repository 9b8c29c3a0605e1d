"""sockperf (UDP ping-pong): command lines and parsers.

``sockperf ping-pong --full-log FILE`` writes one line per measured message
(``packet, txTime(sec), rxTime(sec), latency(usec)``). sockperf's own "latency" is half the round
trip; rtvm takes the round trip, rxTime - txTime, so that sockperf's rows and the probe's rows mean
the same thing (rtt). The printed summary is read as a cross-check and for sockperf's counts of
dropped, duplicated and out-of-order messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from rtvm.measure.tools import ToolFailed

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def server_argv(binary: str, addr: str, port: int) -> list[str]:
    return [binary, "server", "-i", addr, "-p", str(port)]


def client_argv(
    binary: str, addr: str, port: int, duration_s: int, full_log: str, mps: int | None, size: int
) -> list[str]:
    a = [binary, "ping-pong", "-i", addr, "-p", str(port), "-t", str(duration_s)]
    a += ["--full-log", full_log, "--msg-size", str(max(14, size))]
    if mps:
        a += ["--mps", str(mps)]
    return a


@dataclass
class SockperfSummary:
    avg_latency_us: float | None = None
    std_dev_us: float | None = None
    observations: int | None = None
    dropped: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    sent: int | None = None
    received: int | None = None
    percentiles: dict[str, float] = field(default_factory=dict)


def parse_summary(text: str) -> SockperfSummary:
    """Read sockperf ping-pong's printed summary (the last '[Valid Duration]' block)."""
    t = _ANSI.sub("", text)
    s = SockperfSummary()
    found = list(re.finditer(r"avg-latency=([\d.]+) \(std-dev=([\d.]+)", t))
    if not found:
        raise ToolFailed("sockperf", "printed no latency summary", text)
    m = found[-1]
    s.avg_latency_us, s.std_dev_us = float(m.group(1)), float(m.group(2))
    for m in re.finditer(
        r"# dropped messages = (\d+); # duplicated messages = (\d+); "
        r"# out-of-order messages = (\d+)",
        t,
    ):
        s.dropped, s.duplicated, s.out_of_order = (int(m.group(i)) for i in (1, 2, 3))
    for m in re.finditer(r"Total (\d+) observations", t):
        s.observations = int(m.group(1))
    for m in re.finditer(r"\[Valid Duration\].*?SentMessages=(\d+); ReceivedMessages=(\d+)", t):
        s.sent, s.received = int(m.group(1)), int(m.group(2))
    for m in re.finditer(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", t):
        s.percentiles[m.group(1)] = float(m.group(2))
    for m in re.finditer(r"<(MAX|MIN)> observation\s*=\s*([\d.]+)", t):
        s.percentiles[m.group(1).lower()] = float(m.group(2))
    return s


def parse_full_log(text: str) -> np.ndarray:
    """Round trips in us from a --full-log file (rxTime - txTime per message)."""
    rows = []
    bad = 0
    for ln in text.splitlines():
        parts = [p.strip() for p in ln.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        try:
            tx, rx = float(parts[1]), float(parts[2])
        except ValueError:
            bad += 1
            continue
        if rx >= tx > 0:
            rows.append((rx - tx) * 1e6)
        else:
            bad += 1
    if not rows:
        raise ToolFailed("sockperf", "wrote a full log with no messages rtvm can read", text)
    return np.asarray(rows, dtype=np.float64)
