"""iperf3 as the heavy receivers' traffic: command lines and the reader of its ``-J`` output."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rtvm.measure.tools import ToolFailed


def server_argv(binary: str, addr: str, port: int) -> list[str]:
    # -1: serve one test and exit, so a forgotten server cannot outlive its client
    return [binary, "-s", "-1", "-B", addr, "-p", str(port)]


def client_argv(binary: str, addr: str, port: int, duration_s: int, udp: bool = False) -> list[str]:
    a = [binary, "-c", addr, "-p", str(port), "-t", str(max(1, duration_s)), "-J"]
    if udp:
        a += ["-u", "-b", "0"]
    return a


@dataclass
class Iperf3Result:
    gbps: float
    seconds: float
    bytes: int
    retransmits: int | None
    cpu_host_pct: float | None
    cpu_remote_pct: float | None


def parse_json(text: str) -> Iperf3Result:
    """Read ``iperf3 -c ... -J``; an ``error`` field or missing totals is a clear failure."""
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise ToolFailed("iperf3", "printed output that is not JSON", text) from exc
    if not isinstance(d, dict):
        raise ToolFailed("iperf3", "printed JSON that is not an object", text)
    if d.get("error"):
        raise ToolFailed("iperf3", f"reported an error: {d['error']}", text)
    end = d.get("end") or {}
    summ = end.get("sum_received") or end.get("sum")
    if not summ or "bits_per_second" not in summ:
        raise ToolFailed("iperf3", "printed no received totals", text)
    cpu = end.get("cpu_utilization_percent") or {}
    sent = end.get("sum_sent") or {}
    return Iperf3Result(
        gbps=float(summ["bits_per_second"]) / 1e9,
        seconds=float(summ.get("seconds", 0.0)),
        bytes=int(summ.get("bytes", 0)),
        retransmits=sent.get("retransmits"),
        cpu_host_pct=cpu.get("host_total"),
        cpu_remote_pct=cpu.get("remote_total"),
    )
