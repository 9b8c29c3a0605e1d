"""Terminal tables shared by the commands that print simulated results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rtvm.experiments.fidelity import BarAcrossSeeds, BarCheck

#: the probe segments of a response, in path order, with their column titles
SEGMENT_TITLES = {
    "host_receive_us": "host receive",
    "guest_us": "guest",
    "host_send_us": "host send",
}


def _cell(seg: Mapping[str, Any]) -> str:
    mean, p99 = seg.get("mean_us"), seg.get("p99_us")
    return "-" if mean is None or p99 is None else f"{mean:.1f} / {p99:.1f}"


def segments_table(segments: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Table:
    """Where each method's response time goes: the paper's probe segments (host receive, guest,
    host send), mean / p99, one row per method (``segments``: method -> segment -> summary)."""
    t = Table(title="time per probe segment (model), mean / p99 us")
    t.add_column("method", no_wrap=True)
    for title in SEGMENT_TITLES.values():
        t.add_column(title, justify="right", no_wrap=True)
    for name, seg in segments.items():
        t.add_row(name, *(_cell(seg.get(k, {})) for k in SEGMENT_TITLES))
    return t


#: what each stage between two path probes holds (rtvm.workloads.rr.PATH_PROBES); a stage
#: between probes that are not neighbours on the path (the outsourced path has no vhost)
#: holds the stages between them
STAGE_TITLES = {
    ("nic_rx", "napi_poll"): "host RX: IRQ, thread, NET_RX lock, poll, IP (+bridge)",
    ("napi_poll", "vhost_rx"): "vhost wakeup, copy into the guest ring",
    ("vhost_rx", "vm_entry"): "guest interrupt, VM entry",
    ("vm_entry", "guest_napi"): "guest IRQ and NAPI (guest stack misses)",
    ("guest_napi", "guest_recv"): "guest socket to recvfrom",
    ("guest_recv", "vm_exit"): "server: compute, sendto (virtio: + copy to user)",
    ("vm_exit", "vhost_tx"): "kick, vhost TX",
    ("vhost_tx", "wire_out"): "host TX to the wire",
    ("napi_poll", "vm_entry"): "outsourced socket, wake the vCPU",
    ("vm_entry", "guest_recv"): "VMRPC recvfrom (stub misses, copy)",
    ("vm_exit", "wire_out"): "VMRPC sendto, host TX to the wire",
}


def _fmt_us(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def stages_table(method: str, stages: Sequence[Mapping[str, Any]]) -> Table:
    """One method's response time stage by stage (``details.stages``): mean, p50, p99 over all
    requests, the mean over the slowest 1%, and each stage's share of that tail's excess."""
    t = Table(
        title=f"{method}: time per path stage (model), us",
        caption="tail: the stage's mean over the responses at or above the p99 (the slowest "
        "1%); tail share: its part of their excess over the mean response",
    )
    for col in ("from -> to", "what", "mean", "p50", "p99", "tail", "tail share"):
        left = col in ("from -> to", "what")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    for st in stages:
        share = st.get("share_of_tail_excess")
        t.add_row(
            f"{st['from']} -> {st['to']}",
            STAGE_TITLES.get((st["from"], st["to"]), ""),
            _fmt_us(st.get("mean_us")), _fmt_us(st.get("p50_us")), _fmt_us(st.get("p99_us")),
            _fmt_us(st.get("tail_mean_us")), "-" if share is None else f"{round(100 * share):d}%",
        )  # fmt: skip
    return t


def wakeup_latency_table(method: str, latency: Mapping[str, Mapping[str, Any]]) -> Table:
    """Each thread's wait from its wakeup to its first run (``details.wakeup_latency``, as
    ``perf sched latency`` reports it), longest first: where a thread of the path waited for
    a CPU, and behind how much."""
    t = Table(
        title=f"{method}: wakeup latency per thread (model), us",
        caption="from try_to_wake_up() to the switch that runs the thread (perf sched latency); "
        "p99 to 1 us",
    )
    for col in ("thread", "wakeups", "mean", "p99", "max"):
        t.add_column(col, justify="left" if col == "thread" else "right", no_wrap=True)
    for name, v in sorted(latency.items(), key=lambda kv: (-kv[1]["max_us"], kv[0])):
        t.add_row(
            name, f"{v['wakeups']:,}", _fmt_us(v["mean_us"]), _fmt_us(v["p99_us"]),
            _fmt_us(v["max_us"]),
        )  # fmt: skip
    return t


def slowest_table(method: str, rank: int, slow: Mapping[str, Any]) -> Table:
    """One slow response (``details.slowest``): its probes, then what ran on each CPU and which
    thread waited for which lock while it was in flight, in time order (us after its request
    reached the NIC)."""
    probes = ", ".join(f"{p} +{us:.1f}" for p, us in slow["probes_us"].items() if p != "nic_rx")
    note = "" if slow["complete"] else "; the recorder had dropped part of it"
    t = Table(
        title=f"{method}: slowest response {rank}, {slow['latency_us']:.1f} us "
        f"(request {slow['req_id']}): what ran meanwhile",
        caption=f"probes (us after the NIC): {probes}{note}",
    )
    for col in ("start", "duration", "track", "kind", "name"):
        t.add_column(col, justify="right" if col in ("start", "duration") else "left",
                     no_wrap=True)  # fmt: skip
    for r in slow["ran"]:
        t.add_row(f"{r['start_us']:+.1f}", f"{r['dur_us']:.1f}", r["track"], r["kind"], r["name"])
    return t


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):  # an order of methods: short names keep the table narrow
        return "<".join(m[:3] for m in v.split(" < ")) if " < " in v else v
    return f"{v:.1f}" if isinstance(v, float | int) and not isinstance(v, bool) else str(v)


def fidelity_table(checks: Sequence[BarCheck]) -> Table:
    """The fidelity bars on one run: model, published, how far off, the bar, met or missed."""
    t = Table(
        title="fidelity bars (DESIGN.md section 8): model against published",
        caption="orders: out(sourcing), exc(lusive), thr(eaded), van(illa), lowest first",
    )
    for col in ("bar", "method", "model", "published", "off by", "bar is", "verdict"):
        t.add_column(col, no_wrap=col not in ("model", "published"))
    for c in checks:
        t.add_row(
            c.bar, c.method or "all", c.note or _value(c.model), _value(c.published),
            c.describe(), c.describe_limit(), "[green]met[/]" if c.met else "[bold red]MISSED[/]",
        )  # fmt: skip
    return t


def fidelity_seeds_table(bars: Sequence[BarAcrossSeeds]) -> Table:
    """The fidelity bars over several seeds: on how many each holds, the range it is off by."""
    from rtvm.experiments.fidelity import describe, describe_limit

    seeds = bars[0].seeds if bars else []
    t = Table(title=f"fidelity bars (DESIGN.md section 8) over {len(seeds)} seeds")
    for col in ("bar", "method", "off by (lowest..highest)", "bar is", "verdict"):
        t.add_column(col, no_wrap=True)
    for b in bars:
        lo = describe(b.kind, b.deviation_min, b.limit)
        hi = describe(b.kind, b.deviation_max, b.limit)
        n, k = len(b.seeds), len(b.met_seeds)
        every = "on both" if n == 2 else f"on all {n}"
        if k == n:
            verdict = f"[green]met {every}[/]"
        elif k == 0:
            verdict = f"[bold red]MISSED {every}[/]"
        else:
            which = ", ".join(map(str, b.met_seeds))
            verdict = f"[yellow]met on {k} of {n}[/] (seed {which})"
        t.add_row(b.bar, b.method or "all", lo if lo == hi else f"{lo} .. {hi}",
                  describe_limit(b.kind, b.limit), verdict)  # fmt: skip
    return t


def seed_spread_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    """How much each figure moves with the seed: lowest and highest seed, and their spread."""
    t = Table(title="seed to seed: lowest - highest (spread = (highest - lowest) / mean)")
    t.add_column("method", no_wrap=True)
    cols = (("mean_us", "mean us"), ("p99_us", "p99 us"), ("sd_us", "SD us"),
            ("heavy_gbps", "heavy Gbps"), ("cpu_util_pct", "CPU %"))  # fmt: skip
    for _, title in cols:
        t.add_column(title, justify="right", no_wrap=True)
    for r in summary:
        cells = []
        for key, _ in cols:
            lo, hi, sp = r.get(f"{key}_min"), r.get(f"{key}_max"), r.get(f"{key}_spread")
            cells.append("-" if lo is None else f"{lo:.1f}-{hi:.1f} ({100 * (sp or 0):.1f}%)")
        t.add_row(r["method"], *cells)
    return t
