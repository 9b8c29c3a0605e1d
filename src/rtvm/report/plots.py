"""Plots of simple-rt (the paper's Figures 6, 7 and 8), written atomically as PNG."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rtvm.cli_support import atomic_write_bytes


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def latency_histograms(latencies: dict[str, np.ndarray], path: Path) -> Path:
    """Figure 6: the RT server's response-time distribution per method."""
    names = list(latencies)
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.9 * len(names)), sharex=True)
    axes = np.atleast_1d(axes)
    hi = max((float(np.percentile(v, 99.9)) for v in latencies.values() if len(v)), default=1.0)
    bins = np.linspace(0, hi * 1.1, 80)
    for ax, name in zip(axes, names, strict=True):
        ax.hist(latencies[name], bins=bins, color="tab:blue")
        ax.set_ylabel("requests")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1].set_xlabel("response time at the wire (us), model")
    return _save(fig, path)


def throughput_bars(
    rows: list[dict[str, Any]], published: list[dict[str, Any]], path: Path
) -> Path:
    """Figure 7: heavy receivers' total throughput, model beside published."""
    pub = {p["method"]: p.get("heavy_gbps") for p in published}
    names = [r["method"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(x - 0.2, [r["heavy_gbps"] for r in rows], 0.4, label="model")
    ax.bar(x + 0.2, [pub.get(n) or 0 for n in names], 0.4, label="published", color="tab:gray")
    ax.set_xticks(x, names)
    ax.set_ylabel("Gbps")
    ax.legend()
    return _save(fig, path)


def cpu_bars(rows: list[dict[str, Any]], path: Path) -> Path:
    """Figure 8: host CPU utilisation per CPU, per method (model)."""
    names = [r["method"] for r in rows]
    ncpu = len(rows[0]["cpu_util_pct_by_cpu"]) if rows else 0
    x = np.arange(len(names))
    w = 0.8 / max(ncpu, 1)
    fig, ax = plt.subplots(figsize=(6, 3))
    for c in range(ncpu):
        ax.bar(
            x + (c - (ncpu - 1) / 2) * w,
            [r["cpu_util_pct_by_cpu"][c] for r in rows],
            w,
            label=f"CPU {c}",
        )
    ax.set_xticks(x, names)
    ax.set_ylabel("busy %")
    ax.set_ylim(0, 100)
    ax.legend()
    return _save(fig, path)


def stage_bars(stages: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Where each method's response time goes along its path (``details.stages``): for each
    method, its mean response and the mean of its slowest 1% as bars stacked stage by stage,
    so the stage that grows in the tail stands out (model)."""
    from rtvm.report.tables import STAGE_TITLES

    keys: list[tuple[str, str]] = []
    for sts in stages.values():
        for st in sts:
            k = (st["from"], st["to"])
            if k not in keys:
                keys.append(k)
    cmap = plt.get_cmap("tab20")
    hues = [*range(0, 20, 2), *range(1, 20, 2)]  # the dark shades first: neighbours differ
    color = {k: cmap(hues[i % 20]) for i, k in enumerate(keys)}
    names = list(stages)
    fig, ax = plt.subplots(figsize=(8, 1.0 * len(names) + 2.2))
    labelled: set[tuple[str, str]] = set()
    ticks, labels = [], []
    for i, name in enumerate(names):
        for j, (field, what) in enumerate((("mean_us", "mean"), ("tail_mean_us", "slowest 1%"))):
            y = 2.6 * i + j
            left = 0.0
            for st in stages[name]:
                k = (st["from"], st["to"])
                width = st.get(field) or 0.0
                label = None
                if k not in labelled:
                    labelled.add(k)
                    title = STAGE_TITLES.get(k)
                    label = f"{k[0]} -> {k[1]}" + (f": {title}" if title else "")
                ax.barh(y, width, left=left, color=color[k], label=label, height=0.8)
                left += width
            ticks.append(y)
            labels.append(f"{name}: {what}")
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_xlabel("response time at the wire, stage by stage (us), model")
    if keys:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return _save(fig, path)


_CPU_TRACK = re.compile(r"CPU [0-9]+")
#: a slowest-response timeline starts this long before the request reached the NIC
TIMELINE_LEAD_US = 6.0
#: a timeline slice's colour by what ran (``details.slowest[].ran[].kind``)
_KIND_COLOURS = {
    "thread": "tab:blue",
    "softirq": "tab:orange",
    "hardirq": "tab:red",
    "lock": "tab:gray",
}


def slowest_timelines(slowest: dict[str, dict[str, Any]], path: Path) -> Path:
    """Each method's slowest response (``details.slowest[0]``) as a timeline: what ran on each
    CPU and which thread waited for which lock while it was in flight, from a little before its
    request reached the NIC (time 0) to its last bit on the wire, with its path probes as
    dashed lines (model). The picture of ``rtvm reproduce simple-rt --slowest``'s tables."""
    names = list(slowest)
    tracks_of = {m: _tracks(slowest[m]["ran"]) for m in names}
    heights = [max(2, len(tracks_of[m])) for m in names]
    fig, axes = plt.subplots(
        len(names),
        1,
        figsize=(11, 0.45 * sum(heights) + 1.3 * len(names)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, m in zip(axes[:, 0], names, strict=True):
        _timeline(ax, m, slowest[m], tracks_of[m])
    axes[-1, 0].set_xlabel("us after the request reached the host NIC (model)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _KIND_COLOURS.values()]
    fig.legend(
        handles,
        ["thread", "softirq", "hard IRQ", "lock wait"],
        loc="lower center",
        ncol=4,
        bbox_to_anchor=(0.5, -0.02),
        frameon=False,
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path)


def _tracks(ran: list[dict[str, Any]]) -> list[str]:
    """The CPUs in order, then the lock-wait tracks (one per waiting thread) by name."""
    names = {s["track"] for s in ran}
    # a CPU's track is "CPU N"; a vCPU thread's lock waits ("CPU 0/KVM (rt-vm)") are not one
    cpus = sorted((t for t in names if _CPU_TRACK.fullmatch(t)), key=lambda t: int(t[4:]))
    return cpus + sorted(names - set(cpus))


def _timeline(ax: Any, method: str, slow: dict[str, Any], tracks: list[str]) -> None:
    """One response's slices, a row per track; a slice wide enough carries its name. The
    time axis starts a little before the NIC: a slice already running then is cut there."""
    lo = max(-TIMELINE_LEAD_US, min((s["start_us"] for s in slow["ran"]), default=0.0))
    hi = max([slow["latency_us"], *(s["start_us"] + s["dur_us"] for s in slow["ran"])])
    span = max(hi - lo, 1.0)
    row = {t: i for i, t in enumerate(tracks)}
    for s in slow["ran"]:
        y = row[s["track"]]
        ax.broken_barh(
            [(s["start_us"], s["dur_us"])],
            (y - 0.4, 0.8),
            facecolors=_KIND_COLOURS.get(s["kind"], "tab:green"),
            edgecolors="white",
            linewidth=0.3,
        )
        shown = min(s["start_us"] + s["dur_us"], hi) - max(s["start_us"], lo)
        if shown > 0.07 * span:  # a lock wait's row names the waiter, its bar the lock
            ax.text(
                max(s["start_us"], lo) + shown / 2,
                y,
                s["name"].removeprefix("wait "),
                ha="center",
                va="center",
                fontsize=6,
                color="white",
                clip_on=True,
            )
    for probe, at in slow["probes_us"].items():
        ax.axvline(at, color="black", linestyle="--", linewidth=0.6)
        ax.text(at, -0.55, probe, rotation=90, fontsize=6, ha="right", va="bottom")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(tracks)), tracks, fontsize=7)
    ax.set_ylim(len(tracks) - 0.4, -1.9)
    ax.set_xlim(lo, hi + 0.02 * span)
    ax.set_title(
        f"{method}: slowest response, {slow['latency_us']:.1f} us (request {slow['req_id']})",
        fontsize=9,
        loc="left",
    )
