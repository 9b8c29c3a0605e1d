"""Finished methods kept on disk, so that an interrupted experiment loses nothing.

A full ``rtvm reproduce simple-rt`` is minutes of simulation. Each method's result is written
under ``--out`` (``checkpoints/<method>.npz``, or ``<method>-idle<N>.npz`` for a run under idle
compression, atomically) as soon as it finishes; running the same command again loads the
finished ones instead of simulating them again.

Reuse is sound because a run is deterministic: one key gives one result. The key is everything
a result depends on: the experiment, the method, the seed, the simulated length, the cost
profile's hash and a hash of rtvm's own source (the version number alone would not notice an
edited model). A checkpoint whose key differs is ignored, never mixed into a table.

Format: one ``.npz`` holding the latency and per-request probe arrays and a JSON string with
the key, the row and the details, so it loads with ``allow_pickle=False`` (no code runs on load).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.cli_support import _json_default, atomic_write_bytes
from rtvm.experiments.runner import MethodResult

_META = "meta_json"
_LATENCY = "latency_us"
_SEGMENT = "segment:"
_PROBE = "probe:"


@cache
def source_sha256() -> str:
    """Hash of every Python file and embedded profile of the installed rtvm package."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def run_key(
    experiment: str,
    method: str,
    seed: int,
    duration_s: float,
    profile_sha256: str,
    idle_keep: int | None = None,
    slowest: int = 0,
) -> dict[str, Any]:
    """What one method's result depends on; equal keys give bit-identical results. A run
    under idle compression names it, and so does one that keeps its ``slowest`` responses
    (its rows are the same, its details hold more); a full run's key is as it always was."""
    key: dict[str, Any] = {
        "experiment": experiment,
        "method": method,
        "seed": seed,
        "duration_s": duration_s,
        "profile_sha256": profile_sha256,
        "source_sha256": source_sha256(),
    }
    if idle_keep is not None and idle_keep > 1:
        key["idle_keep"] = idle_keep
    if slowest > 0:
        key["slowest"] = slowest
    return key


def path_for(directory: Path, method: str, idle_keep: int | None = None, slowest: int = 0) -> Path:
    """Where a method's result is kept; a compressed run's apart from a full one's, and one
    that kept its slowest responses apart from one that did not, so that none overwrites
    another."""
    name = method
    if idle_keep is not None and idle_keep > 1:
        name += f"-idle{idle_keep}"
    if slowest > 0:
        name += f"-slowest{slowest}"
    return directory / f"{name}.npz"


def save(directory: Path, key: dict[str, Any], result: MethodResult) -> Path:
    """Write ``result`` under ``directory`` atomically, with the key it was made with."""
    meta = {
        "key": key,
        "row": result.row,
        "extra": result.extra,
        "wall_s": result.wall_s,
        "events": result.events,
    }
    arrays: dict[str, np.ndarray] = {
        _META: np.array(json.dumps(meta, default=_json_default)),
        _LATENCY: np.asarray(result.latencies_us, dtype=np.float64),
    }
    for name, v in result.segments_us.items():
        arrays[_SEGMENT + name] = np.asarray(v, dtype=np.float64)
    for name, v in result.probes_ns.items():
        arrays[_PROBE + name] = np.asarray(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    path = path_for(directory, key["method"], key.get("idle_keep"), key.get("slowest", 0))
    return atomic_write_bytes(path, buf.getvalue())


def load(directory: Path, key: dict[str, Any]) -> MethodResult | None:
    """The checkpointed result for ``key``, or None if there is none, it is unreadable, or it
    was made with another key (another seed, length, profile or rtvm source)."""
    p = path_for(directory, key["method"], key.get("idle_keep"), key.get("slowest", 0))
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z[_META][()]))
            if meta.get("key") != key:
                return None
            latencies = z[_LATENCY]
            segments = {
                name[len(_SEGMENT) :]: z[name] for name in z.files if name.startswith(_SEGMENT)
            }
            probes = {name[len(_PROBE) :]: z[name] for name in z.files if name.startswith(_PROBE)}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # missing, truncated by a crash before the rename, or not ours
    return MethodResult(
        row=meta["row"],
        latencies_us=latencies,
        segments_us=segments,
        wall_s=float(meta["wall_s"]),
        events=int(meta["events"]),
        extra=meta["extra"],
        probes_ns=probes,
    )
