"""Plots of simple-rt (the paper's Figures 6, 7 and 8), written atomically as PNG."""

from __future__ import annotations

import io
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
