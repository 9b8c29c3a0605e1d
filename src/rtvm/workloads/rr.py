"""The RT request/response workload (netperf-like UDP RR, Garcia et al. section 3).

The client (outside the host) sends a small UDP request at random inter-arrival times (uniform
1 to 10 ms by default); the server (a guest thread) receives it, computes, touches its working
set in the LLC, and answers. Latency is taken at the wire, as the paper's passive monitor does:
from the request entering the host NIC to the response leaving it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rtvm.kernel.nic import Packet
from rtvm.kernel.task import Code

if TYPE_CHECKING:
    from rtvm.kernel.host import Kernel
    from rtvm.kernel.nic import RxQueue, Wire
    from rtvm.virt.guest import GuestThread

MS = 1_000_000


@dataclass
class RrConfig:
    interarrival_min_ns: int = 1 * MS
    interarrival_max_ns: int = 10 * MS
    request_bytes: int = 64
    response_bytes: int = 64
    server_compute_ns: int = 2_000
    working_set_bytes: int = 256 * 1024


def rr_config(costs: Any, **overrides: int) -> RrConfig:
    """The RR workload with the server's costs from the profile, plus scenario overrides."""
    return RrConfig(
        server_compute_ns=costs.rt_server_compute,
        working_set_bytes=costs.rt_server_ws_bytes,
        **overrides,
    )


@dataclass
class RrRecord:
    """One request's probe timestamps (ns)."""

    req_id: int
    nic_rx: int
    vm_entry: int | None = None
    vm_exit: int | None = None
    wire_out: int | None = None

    @property
    def latency_ns(self) -> int | None:
        return None if self.wire_out is None else self.wire_out - self.nic_rx


#: the probe columns of a completed request, in RrStats.columns() order
COLUMNS = ("req_id", "nic_rx", "vm_entry", "vm_exit", "wire_out")
_NONE = -1  # a probe that did not fire (stored as -1 in the int64 columns)


@dataclass
class RrStats:
    """Requests in flight as records; completed ones as five int64 columns.

    Completed requests are kept in ``array('q')`` columns (40 bytes each) rather than as
    objects (~300 bytes), so that memory stays flat in simulated time (a 300 s run completes
    ~55,000 requests; DESIGN.md section 8's memory bar).
    """

    pending: dict[int, RrRecord] = field(default_factory=dict)
    done: dict[str, array] = field(default_factory=lambda: {c: array("q") for c in COLUMNS})
    sent: int = 0
    dropped: int = 0

    def complete(self, rec: RrRecord) -> None:
        del self.pending[rec.req_id]
        for c in COLUMNS:
            v = getattr(rec, c)
            self.done[c].append(_NONE if v is None else v)

    def columns(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The completed requests' probes as numpy int64 arrays (-1 where a probe is absent).

        Copies by default: a view pins its array, and a run that goes on could not append
        (BufferError). ``copy=False`` gives read-only views, for a run that is over: at 300 s
        the copies would be ~2 MB of the memory bar's peak."""
        if copy:
            return {c: np.array(a, dtype=np.int64) for c, a in self.done.items()}
        views = {c: np.frombuffer(a, dtype=np.int64) for c, a in self.done.items()}
        for v in views.values():
            v.flags.writeable = False
        return views

    def __len__(self) -> int:
        return len(self.done["req_id"])

    def completed(self) -> list[RrRecord]:
        """The completed requests as records (tests and small runs)."""
        cols = [self.done[c] for c in COLUMNS]
        return [
            RrRecord(*(None if v == _NONE else v for v in row))  # type: ignore[arg-type]
            for row in zip(*cols, strict=True)
        ]


class RrClient:
    """Sends requests into ``rxq`` over ``wire``; records responses seen on the way out."""

    def __init__(
        self,
        kernel: Kernel,
        wire: Wire,
        rxq: RxQueue,
        cfg: RrConfig,
        stream_name: str = "rr-client",
        flow: str = "rr",
        times: list[int] | None = None,
    ) -> None:
        self.kernel = kernel
        self.wire = wire
        self.rxq = rxq
        self.cfg = cfg
        self.flow = flow
        self.stats = RrStats()
        self._next_id = 0
        self._gap = (
            kernel.sim.streams(stream_name)
            .uniform_sampler(cfg.interarrival_min_ns, cfg.interarrival_max_ns)
            .draw
        )
        self._times = list(times) if times is not None else None

    def start(self) -> None:
        if self._times is not None:
            for t in self._times:
                self.kernel.sim.at(t, self._send_one)
        else:
            self.kernel.sim.after(self._gap(), self._send_periodic)

    def _send_periodic(self, _: Any) -> int:
        self._send_one(None)
        return self._gap()  # re-armed by the engine

    def _send_one(self, _: Any) -> None:
        rid = self._next_id
        self._next_id += 1
        pkt = Packet(self.flow, self.cfg.request_bytes, "rt", payload=rid)
        self.stats.sent += 1
        self.wire.transmit(pkt, self._arrived)

    def _arrived(self, pkt: Packet) -> None:
        self.rxq.dma(pkt)
        if "nic_rx" in pkt.stamps:
            self.stats.pending[pkt.payload] = RrRecord(pkt.payload, pkt.stamps["nic_rx"])
        else:
            self.stats.dropped += 1

    def response_on_wire(self, resp: Packet) -> None:
        """The response's last bit left the host NIC."""
        rec = self.stats.pending.get(resp.payload)
        if rec is None:
            return
        rec.wire_out = self.kernel.sim.now
        req = resp.payload_request
        assert req is not None  # every response carries its request
        rec.vm_entry = req.stamps.get("vm_entry")
        rec.vm_exit = resp.stamps.get("vm_exit")
        self.stats.complete(rec)


def rr_server(
    cfg: RrConfig,
    recvfrom: Callable[[GuestThread], Code],
    sendto: Callable[[Packet, GuestThread], Code],
    llc: Any = None,
    owner: str = "rt-server",
) -> Callable[[GuestThread], Code]:
    """The server thread's code: recvfrom, compute over the working set, sendto."""
    if llc is not None:
        llc.register(owner, cfg.working_set_bytes)

    def code(gt: GuestThread) -> Code:
        while True:
            req = yield from recvfrom(gt)
            stall = llc.touch(owner) if llc is not None else 0
            yield cfg.server_compute_ns + stall
            resp = Packet(req.flow, cfg.response_bytes, "rt", payload=req.payload)
            resp.payload_request = req
            yield from sendto(resp, gt)

    return code
