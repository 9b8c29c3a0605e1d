"""``rtvm measure rr``: UDP request/response latency on loopback or between network namespaces.

Parties, each with its own priority and CPUs (``Party``):

- server: the responder (rtvm's probe responder, or ``sockperf server``), in namespace ``srv``;
- client: the probe client or ``sockperf ping-pong``, in namespace ``cli``, linked to ``srv`` by a
  veth pair;
- heavy: N heavy receivers, each an ``iperf3 -s`` in its own namespace fed by an ``iperf3 -c`` in
  the root namespace over its own veth (or all on loopback), bounded by ``-t``: the "heavy receiver
  next to an RT server" situation. Their priority and CPUs apply to both iperf3 ends.

``HeavyReceivers`` and ``run_client`` are shared with ``vm-rr``, where the server is a guest.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import rtvm
from rtvm.analysis import stats
from rtvm.cli_support import console, result_envelope
from rtvm.measure import hostinfo, iperf3, netns, probe, results, sched, sockperf
from rtvm.measure.tools import Background, ToolFailed, wait_for, which

EXPERIMENT = "measure-rr"
DRIVERS = ("probe", "sockperf")
NETS = ("loopback", "netns")


@dataclass(frozen=True)
class Party:
    sched: sched.Sched | None = None
    cpus: tuple[int, ...] = ()

    def describe(self) -> str:
        s = str(self.sched) if self.sched else "default"
        return s + (f"@{sched.format_cpus(self.cpus)}" if self.cpus else "")

    def probe_args(self) -> list[str]:
        a = []
        if self.sched:
            a += ["--sched", str(self.sched)]
        if self.cpus:
            a += ["--cpus", ",".join(map(str, self.cpus))]
        return a

    def apply(self, pid: int) -> None:
        if self.sched or self.cpus:
            sched.apply_process(pid, self.sched, self.cpus)


@dataclass(frozen=True)
class RrOptions:
    drivers: tuple[str, ...] = ("probe",)
    net: str = "loopback"
    duration_s: int = 10
    schedule: probe.Schedule = field(default_factory=probe.Schedule)
    size: int = 64
    heavy: tuple[int, ...] = (0,)
    client: Party = field(default_factory=Party)
    server: Party = field(default_factory=Party)
    heavy_party: Party = field(default_factory=Party)
    seed: int = 1


def python_env() -> dict[str, str]:
    """Environment in which ``python -m rtvm.measure.probe`` finds this rtvm."""
    env = dict(os.environ)
    src = str(Path(rtvm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def probe_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtvm.measure.probe", *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_json(text: str) -> dict[str, Any] | None:
    for ln in reversed(text.strip().splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(ln)
    return None


# -- heavy receivers ------------------------------------------------------------------------
class HeavyReceivers:
    """N iperf3 streams into N receivers, each in its own namespace (or on loopback)."""

    def __init__(
        self, n: int, use_netns: bool, duration_s: int, party: Party, work: Path, tag: str
    ) -> None:
        self.n, self.use_netns, self.duration_s = n, use_netns, duration_s
        self.party, self.work, self.tag = party, work, tag
        self.servers: list[Background] = []
        self.clients: list[Background] = []
        self.namespaces: list[str] = []
        self.results: list[iperf3.Iperf3Result] = []

    def __enter__(self) -> HeavyReceivers:
        if self.n == 0:
            return self
        binary = which("iperf3")
        targets = []
        for k in range(self.n):
            if self.use_netns:
                ns = netns.create(f"{self.tag}h{k}")
                self.namespaces.append(ns)
                lk = netns.link(None, ns)
                addr, port = lk.addr_b, 5201
            else:
                ns, addr, port = None, "127.0.0.1", free_port()
            srv = Background(
                netns.exec_argv(ns, iperf3.server_argv(binary, addr, port)),
                self.work / f"iperf3-server-{k}.log",
                tool="iperf3",
            ).start()
            self.servers.append(srv)
            targets.append((addr, port))
        time.sleep(0.5)
        for k, srv in enumerate(self.servers):
            srv.check_alive("server exited before its client started")
            self.party.apply(srv.pid)
            addr, port = targets[k]
            cli = Background(
                iperf3.client_argv(binary, addr, port, self.duration_s),
                self.work / f"iperf3-client-{k}.log",
                tool="iperf3",
                stdout=None,
            )
            cli.log = self.work / f"iperf3-client-{k}.json"
            cli.start()
            self.party.apply(cli.pid)
            self.clients.append(cli)
        time.sleep(1.0)  # let the streams ramp up before measuring
        for cli in self.clients:
            if not cli.alive() and cli.proc and cli.proc.returncode != 0:
                raise ToolFailed("iperf3", "client failed to start its stream", cli.output())
        return self

    def collect(self) -> None:
        """Wait for the streams to end and read their totals."""
        for cli in self.clients:
            cli.wait(self.duration_s + 30)
            self.results.append(iperf3.parse_json(cli.output()))

    def gbps(self) -> float | None:
        return round(sum(r.gbps for r in self.results), 3) if self.results else None

    def __exit__(self, *exc: object) -> None:
        for b in [*self.clients, *self.servers]:
            b.stop()
        for ns in self.namespaces:
            netns.delete(ns)

    def outputs(self) -> dict[str, str]:
        out = {}
        for k, c in enumerate(self.clients):
            out[f"iperf3-client-{k}"] = c.output()[-50000:]
        return out


# -- client side ----------------------------------------------------------------------------
def run_client(
    driver: str,
    ns: str | None,
    addr: str,
    port: int,
    opts: RrOptions,
    work: Path,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], str]:
    """Run the client side for ``opts.duration_s``; returns (rtt_us, records, counts, raw text)."""
    if driver == "probe":
        rec_path = work / "records.npy"
        lo, hi = opts.schedule.lo_ms, opts.schedule.hi_ms
        args = [
            "client",
            "--target",
            f"{addr}:{port}",
            "--duration",
            str(opts.duration_s),
            "--interval-ms",
            f"{lo}:{hi}",
            "--seed",
            str(seed),
            "--size",
            str(opts.size),
            "--records",
            str(rec_path),
            *opts.client.probe_args(),
        ]
        if opts.schedule.rate_hz:
            args += ["--rate", str(opts.schedule.rate_hz)]
        cli = Background(
            netns.exec_argv(ns, probe_argv(*args)),
            work / "probe-client.log",
            tool="rtvm probe client",
            env=python_env(),
        ).start()
        try:
            rc = cli.wait(opts.duration_s + 30)
        finally:
            cli.stop()
        text = cli.output()
        counts = _last_json(text)
        if rc != 0 or counts is None or not rec_path.exists():
            raise ToolFailed("rtvm probe client", f"failed (status {rc})", text)
        rec = np.load(rec_path)
        return probe.rtt_us(rec), rec, counts, text
    # sockperf ping-pong
    binary = which("sockperf")
    log = work / "sockperf-full.csv"
    mps = round(opts.schedule.rate_hz or 1000.0 / opts.schedule.mean_ms())
    argv = sockperf.client_argv(binary, addr, port, opts.duration_s, str(log), mps, opts.size)
    cli = Background(netns.exec_argv(ns, argv), work / "sockperf-client.log", tool="sockperf")
    cli.start()
    try:
        with contextlib.suppress(ToolFailed):
            wait_for(lambda: len(sched.thread_ids(cli.pid)) > 0, 2)
            opts.client.apply(cli.pid)
        rc = cli.wait(opts.duration_s + 30)
    finally:
        cli.stop()
    text = cli.output()
    if rc != 0:
        raise ToolFailed("sockperf", f"ping-pong exited with status {rc}", text)
    summ = sockperf.parse_summary(text)
    rtt = sockperf.parse_full_log(log.read_text("utf-8", "replace") if log.exists() else "")
    counts = {
        "sent": summ.sent,
        "replies": summ.received,
        "lost": summ.dropped,
        "duplicates": summ.duplicated,
        "out_of_order": summ.out_of_order,
        "sockperf_avg_half_rtt_us": summ.avg_latency_us,
    }
    return rtt, None, counts, text


# -- host responder -------------------------------------------------------------------------
@contextlib.contextmanager
def host_server(
    driver: str, ns: str | None, addr: str, party: Party, work: Path, max_s: float
) -> Iterator[tuple[int, Background]]:
    """Start the responder in ``ns``; yields (port, process)."""
    if driver == "probe":
        bg = Background(
            netns.exec_argv(
                ns,
                probe_argv(
                    "serve",
                    "--bind",
                    addr,
                    "--port",
                    "0",
                    "--max-seconds",
                    str(max_s),
                    *party.probe_args(),
                ),
            ),
            work / "probe-server.log",
            tool="rtvm probe responder",
            env=python_env(),
        ).start()
        try:
            if not wait_for(lambda: "READY" in bg.output() or not bg.alive(), 15):
                raise ToolFailed("rtvm probe responder", "did not start within 15 s", bg.output())
            bg.check_alive("exited at start")
            port = int(bg.output().split("READY", 1)[1].split()[0])
            yield port, bg
        finally:
            bg.stop()
        return
    binary = which("sockperf")
    port = 11111 if ns else free_port()
    bg = Background(
        netns.exec_argv(ns, sockperf.server_argv(binary, addr, port)),
        work / "sockperf-server.log",
        tool="sockperf",
    ).start()
    try:
        time.sleep(0.5)
        bg.check_alive("server exited at start")
        party.apply(bg.pid)
        yield port, bg
    finally:
        bg.stop()


def rr_row(
    base: dict[str, Any],
    rtt: np.ndarray,
    rec: np.ndarray | None,
    counts: dict[str, Any],
) -> dict[str, Any]:
    st = stats.from_samples(rtt)
    row = dict(base)
    row["metric"] = "rtt"
    row.update(st.row())
    row["sent"] = counts.get("sent")
    row["lost"] = counts.get("lost")
    row["malformed"] = counts.get("malformed", 0)
    row["duplicates"] = counts.get("duplicates", 0)
    if rec is not None:
        srv = probe.server_us(rec)
        if srv.size:
            row["server_p50_us"] = round(float(np.percentile(srv, 50, method="inverted_cdf")), 3)
            row["server_p99_us"] = round(float(np.percentile(srv, 99, method="inverted_cdf")), 3)
    return row


def run_rr(opts: RrOptions) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    use_netns = opts.net == "netns"
    if use_netns:
        netns.require_root()
        which("ip")
    if "sockperf" in opts.drivers:
        which("sockperf")
    if any(opts.heavy):
        which("iperf3")
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    outputs: dict[str, str] = {}
    t0 = time.monotonic()
    idx = 0
    with tempfile.TemporaryDirectory(prefix="rtvm-rr-") as tmp:
        for nheavy in opts.heavy:
            for driver in opts.drivers:
                idx += 1
                label = f"{driver}-heavy{nheavy}"
                work = Path(tmp) / label
                work.mkdir()
                console.print(
                    f"[bold]rr[/] {driver} over {opts.net}, {opts.duration_s} s, "
                    f"{nheavy} heavy receiver(s), {opts.schedule.describe()}"
                )
                cli_ns = srv_ns = None
                try:
                    if use_netns:
                        srv_ns = netns.create(f"s{idx}")
                        cli_ns = netns.create(f"c{idx}")
                        lk = netns.link(cli_ns, srv_ns)
                        addr = lk.addr_b
                    else:
                        addr = "127.0.0.1"
                    with (
                        host_server(
                            driver, srv_ns, addr, opts.server, work, opts.duration_s + 60
                        ) as (port, srv),
                        HeavyReceivers(
                            nheavy, use_netns, opts.duration_s + 1, opts.heavy_party, work, f"{idx}"
                        ) as heavy,
                    ):
                        rtt, rec, counts, text = run_client(
                            driver, cli_ns, addr, port, opts, work, opts.seed + idx
                        )
                        heavy.collect()
                        srv_text = srv.output()
                    outputs.update({f"{label}/{k}": v for k, v in heavy.outputs().items()})
                finally:
                    for ns in (cli_ns, srv_ns):
                        if ns:
                            netns.delete(ns)
                outputs[f"{label}/client"] = text[-50000:]
                outputs[f"{label}/server"] = srv_text[-20000:]
                base = {
                    "target": "host",
                    "net": opts.net,
                    "driver": driver,
                    "heavy_receivers": nheavy,
                    "heavy_gbps": heavy.gbps(),
                    "client_sched": opts.client.describe(),
                    "server_sched": opts.server.describe(),
                    "heavy_sched": opts.heavy_party.describe() if nheavy else None,
                    "accelerator": "none (host)",
                }
                rows.append(rr_row(base, rtt, rec, counts))
                key = results.slug(label)
                arrays[f"{key}_rtt_us"] = rtt
                if rec is not None:
                    arrays[f"{key}_records"] = rec
    env = result_envelope(
        EXPERIMENT,
        opts.seed,
        float(opts.duration_s),
        rows,
        [],
        host=hostinfo.host_block(None, ("sockperf", "iperf3")),
        scenario=scenario_dict(opts),
        ci_method=stats.CI_METHOD,
        notes=rr_notes(opts.drivers),
        wall_s=round(time.monotonic() - t0, 1),
    )
    return env, arrays, outputs


def scenario_dict(opts: RrOptions) -> dict[str, Any]:
    return {
        "drivers": list(opts.drivers),
        "net": opts.net,
        "duration_s": opts.duration_s,
        "interarrival": opts.schedule.describe(),
        "msg_size": opts.size,
        "heavy_receivers": list(opts.heavy),
        "client": opts.client.describe(),
        "server": opts.server.describe(),
        "heavy": opts.heavy_party.describe(),
        "seed": opts.seed,
    }


def rr_notes(drivers: Sequence[str]) -> list[str]:
    notes = ["latency columns are round-trip times (rtt) in us, client send to reply received"]
    if "probe" in drivers:
        notes.append(
            "probe: Python client and responder, CLOCK_MONOTONIC stamps; its rtt includes "
            "about 2x the interpreter's per-message cost (tens of us), compare with sockperf"
        )
    if "sockperf" in drivers:
        notes.append(
            "sockperf: fixed rate (--mps = mean probe rate); sockperf prints rtt/2 as "
            "'latency', rtvm reports the full rtt from its --full-log"
        )
    return notes
