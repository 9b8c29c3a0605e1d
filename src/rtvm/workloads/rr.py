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
    """One request's probe timestamps (ns), in path order (``PATH_PROBES``). The paper's
    probes are nic_rx, vm_entry, vm_exit and wire_out; the others are the model's own, where
    a stage of the path ends, so that a response time splits into stages (``path_stages``).
    A probe that the method's path does not pass (vhost on the outsourced path) stays None."""

    req_id: int
    nic_rx: int
    napi_poll: int | None = None
    vhost_rx: int | None = None
    vm_entry: int | None = None
    guest_napi: int | None = None
    guest_recv: int | None = None
    vm_exit: int | None = None
    vhost_tx: int | None = None
    wire_out: int | None = None

    @property
    def latency_ns(self) -> int | None:
        return None if self.wire_out is None else self.wire_out - self.nic_rx


#: where a request is stamped on its way through the host and the guest, in path order:
#: the request reaches the NIC; the host stack hands it to the tap or to the outsourced socket
#: (the end of IP / bridge work in the NAPI poll); vhost has copied it into the guest's RX
#: ring; the VM enters the guest with it available (or at once, if the RT vCPU is running
#: guest code already: its kick's exit and entry then fall in the next stage); the guest's
#: virtio NAPI poll takes it; the server's recvfrom has it (virtio: before the copy to the user
#: buffer; VMRPC: after it); the response leaves the guest (kick or VMRPC exit); vhost has
#: copied the response out of the TX ring; the response's last bit leaves the NIC.
PATH_PROBES = (
    "nic_rx",
    "napi_poll",
    "vhost_rx",
    "vm_entry",
    "guest_napi",
    "guest_recv",
    "vm_exit",
    "vhost_tx",
    "wire_out",
)
#: the request's probes stamped on the request packet; the rest are on its response
_REQUEST_PROBES = ("napi_poll", "vhost_rx", "vm_entry", "guest_napi", "guest_recv")
_RESPONSE_PROBES = ("vm_exit", "vhost_tx")
#: the probe columns of a completed request, in RrStats.columns() order
COLUMNS = ("req_id", *PATH_PROBES)
#: the probes after the first, kept as ns after it (nic_rx)
_LATER_PROBES = PATH_PROBES[1:]
_NONE = -1  # a probe that did not fire


@dataclass
class RrStats:
    """Requests in flight as records; completed ones as columns.

    Completed requests are kept in ``array`` columns (48 bytes a request: the id and the NIC
    time as int64, each later probe as int32 ns after the NIC time) rather than as objects
    (~400 bytes), so that memory stays flat in simulated time (a 300 s run completes ~55,000
    requests; DESIGN.md section 8's memory bar). A probe more than 2.1 s after its request's
    NIC time (a stalled scenario) widens its column to int64, so nothing is clipped.
    """

    pending: dict[int, RrRecord] = field(default_factory=dict)
    done: dict[str, array] = field(
        default_factory=lambda: {
            c: array("q" if c in ("req_id", "nic_rx") else "i") for c in COLUMNS
        }
    )
    sent: int = 0
    dropped: int = 0

    def complete(self, rec: RrRecord) -> None:
        del self.pending[rec.req_id]
        done = self.done
        done["req_id"].append(rec.req_id)
        done["nic_rx"].append(rec.nic_rx)
        for c in _LATER_PROBES:
            v = getattr(rec, c)
            assert v is None or v >= rec.nic_rx, (c, v, rec.nic_rx)  # no probe before the NIC
            after = _NONE if v is None else v - rec.nic_rx
            try:
                done[c].append(after)
            except OverflowError:  # beyond int32's 2.1 s: widen this column
                done[c] = array("q", done[c])
                done[c].append(after)

    def columns(self) -> dict[str, np.ndarray]:
        """The completed requests' probes as absolute int64 ns (-1 where a probe is absent):
        new arrays, so they can be read while the run goes on."""
        nic = np.array(self.done["nic_rx"], dtype=np.int64)
        out = {"req_id": np.array(self.done["req_id"], dtype=np.int64), "nic_rx": nic}
        for c in _LATER_PROBES:
            after = np.array(self.done[c], dtype=np.int64)
            out[c] = np.where(after >= 0, nic + after, _NONE)
        return out

    def path_ns(self) -> dict[str, np.ndarray]:
        """Each probe's ns after its request reached the NIC (``nic_rx``: 0; -1 where a probe
        did not fire), for a run that is over: read-only views of the columns, no copies (at
        300 s copies would be ~2 MB of the memory bar's peak; a view pins its array, so the
        run must not append after this). Differences between probes, the segments and stages
        of a response, need no absolute times."""
        origin = np.zeros(len(self), dtype=np.int32)
        origin.flags.writeable = False
        views: dict[str, np.ndarray] = {"nic_rx": origin}
        for c in _LATER_PROBES:
            a = self.done[c]
            v = np.frombuffer(a, dtype=np.int32 if a.typecode == "i" else np.int64)
            v.flags.writeable = False
            views[c] = v
        return views

    def nic_rx_ns(self) -> np.ndarray:
        """The completed requests' absolute NIC times (ns of simulated time), for a run that is
        over: a read-only view, as ``path_ns``'s columns are."""
        v = np.frombuffer(self.done["nic_rx"], dtype=np.int64)
        v.flags.writeable = False
        return v

    def __len__(self) -> int:
        return len(self.done["req_id"])

    def completed(self) -> list[RrRecord]:
        """The completed requests as records (tests and small runs)."""
        cols = self.columns()

        def record(row: tuple[int, ...]) -> RrRecord:
            probes = zip(COLUMNS, row, strict=True)
            fields = {c: None if v == _NONE else int(v) for c, v in probes}
            return RrRecord(**fields)  # type: ignore[arg-type]  # req_id, nic_rx never None

        return [record(row) for row in zip(*(cols[c] for c in COLUMNS), strict=True)]


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
        #: how long a drawn gap is simulated (idle compression); None: as drawn
        self.gap_map: Callable[[int], int] | None = None
        #: called with each request's record once its response is on the wire (analysis)
        self.on_complete: Callable[[RrRecord], None] | None = None

    def start(self) -> None:
        if self._times is not None:
            for t in self._times:
                self.kernel.sim.at(t, self._send_one)
        else:
            self.kernel.sim.after(self._next_gap(), self._send_periodic)

    def _next_gap(self) -> int:
        gap = self._gap()
        return gap if self.gap_map is None else self.gap_map(gap)

    def _send_periodic(self, _: Any) -> int:
        gap = self._next_gap()  # first: a gap map ends the last gap's accounting before the send
        self._send_one(None)
        return gap  # re-armed by the engine

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
        for probe in _REQUEST_PROBES:
            setattr(rec, probe, req.stamps.get(probe))
        for probe in _RESPONSE_PROBES:
            setattr(rec, probe, resp.stamps.get(probe))
        self.stats.complete(rec)
        if self.on_complete is not None:
            self.on_complete(rec)


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
