"""Terminal tables shared by the commands that print simulated results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

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
