"""Result rows, files and tables of ``rtvm measure`` (the simulator's schema, DESIGN.md section 7).

Files under ``--out`` (each written atomically):

- ``<experiment>.json``: the result envelope (experiment, seed, duration_s, rows, published, the
  rtvm version, the ``host`` block, the scenario, the CI method, notes).
- ``<experiment>-raw.npz``: the raw samples, compressed (``numpy.savez_compressed``): per row a
  histogram (``<row>_hist_us``/``<row>_hist_count``) or per-request records, so that every
  statistic can be recomputed with ``rtvm.analysis.stats``.
- ``<experiment>-tools.json.gz``: the tools' own outputs (cyclictest JSON, sockperf and iperf3
  logs, the guest's serial console), gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from rtvm.analysis import stats
from rtvm.cli_support import atomic_write_bytes, atomic_write_json, console

TABLE_STATS = ("samples", "min_us", "mean_us", "p50_us", "p99_us", "p999_us", "max_us", "sd_us")


def latency_row(base: Mapping[str, Any], st: stats.LatencyStats) -> dict[str, Any]:
    row = dict(base)
    row.update(st.row())
    return row


def default_out(experiment: str) -> Path:
    return Path("out") / experiment


def write_results(
    out: Path,
    experiment: str,
    envelope: dict[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    tool_outputs: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the envelope, the raw samples and the tools' outputs; returns the paths."""
    written: list[Path] = []
    files: dict[str, str] = {"results": f"{experiment}.json"}
    if arrays:
        files["raw_samples"] = f"{experiment}-raw.npz"
    if tool_outputs:
        files["tool_outputs"] = f"{experiment}-tools.json.gz"
    envelope = dict(envelope)
    envelope["files"] = files
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        written.append(atomic_write_bytes(out / files["raw_samples"], buf.getvalue()))
    if tool_outputs:
        data = json.dumps(dict(tool_outputs)).encode()
        written.append(
            atomic_write_bytes(out / files["tool_outputs"], gzip.compress(data, mtime=0))
        )
    written.insert(0, atomic_write_json(out / files["results"], envelope))
    return written


def hist_arrays(prefix: str, hist: Mapping[int, int], overflows: int = 0) -> dict[str, np.ndarray]:
    v = np.array(sorted(hist), dtype=np.int64)
    c = np.array([hist[k] for k in sorted(hist)], dtype=np.int64)
    return {
        f"{prefix}_hist_us": v,
        f"{prefix}_hist_count": c,
        f"{prefix}_overflows": np.array([overflows], dtype=np.int64),
    }


def print_table(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    label_cols: Sequence[str],
    extra: Sequence[str] = (),
) -> None:
    """A rich table of the rows on stderr (stdout stays for --json)."""
    t = Table(title=title, title_justify="left")
    cols = [*label_cols, *TABLE_STATS, *extra]
    for c in cols:
        head = c[:-3] if c.endswith("_us") else c
        t.add_column(head, justify="left" if c in label_cols else "right", overflow="fold")
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    if console.is_terminal:
        console.print(t)
    else:  # CI, pipes: rich would squeeze the table into 80 columns and fold every cell
        Console(stderr=True, highlight=False, width=200).print(t)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in text.lower())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")
