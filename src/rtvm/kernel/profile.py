"""The cost profile: every per-packet, per-byte, per-switch, per-exit and per-miss cost of the
modelled hardware, read from one TOML file where each value carries its source and status."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

STATUSES = ("sourced", "estimate", "fitted")


@dataclass(frozen=True)
class Cost:
    value: int
    status: str
    source: str


@dataclass
class CostProfile:
    """Named integer costs. Attribute access (``profile.context_switch``) returns the value."""

    name: str
    entries: dict[str, Cost]
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Plain instance attributes: the model reads costs on its hot paths, and a normal
        # attribute lookup is several times cheaper than __getattr__.
        for k, c in self.entries.items():
            self.__dict__[k] = c.value

    def __getattr__(self, key: str) -> int:
        entries = self.__dict__.get("entries")
        if entries is not None and key in entries:
            return entries[key].value
        raise AttributeError(f"cost profile {self.__dict__.get('name')!r} has no cost {key!r}")

    def with_values(self, **values: int) -> CostProfile:
        """A copy with some values replaced (what-ifs, calibration, tests)."""
        entries = dict(self.entries)
        for k, v in values.items():
            if k not in entries:
                raise KeyError(f"unknown cost {k!r}; known: {', '.join(sorted(entries))}")
            old = entries[k]
            entries[k] = Cost(int(v), old.status, old.source)
        return CostProfile(self.name, entries, self.sha256 + "+override", dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        return {
            k: {"value": c.value, "status": c.status, "source": c.source}
            for k, c in self.entries.items()
        }


def parse_profile(text: str, origin: str = "<profile>") -> CostProfile:
    data = tomllib.loads(text)
    meta = data.get("meta", {})
    entries: dict[str, Cost] = {}
    for key, raw in data.get("costs", {}).items():
        for need in ("value", "status", "source"):
            if need not in raw:
                raise ValueError(f"{origin}: costs.{key} lacks '{need}'")
        if raw["status"] not in STATUSES:
            raise ValueError(
                f"{origin}: costs.{key}.status = {raw['status']!r}; allowed: {', '.join(STATUSES)}"
            )
        if not str(raw["source"]).strip():
            raise ValueError(f"{origin}: costs.{key} has an empty source")
        entries[key] = Cost(int(raw["value"]), raw["status"], str(raw["source"]))
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return CostProfile(meta.get("name", origin), entries, sha, meta)


def load_profile(path: str | Path | None = None) -> CostProfile:
    """Load a profile file, or the embedded testbed profile when ``path`` is None."""
    if path is None:
        text = resources.files("rtvm.profiles").joinpath("testbed.toml").read_text("utf-8")
        return parse_profile(text, "testbed.toml")
    p = Path(path)
    return parse_profile(p.read_text("utf-8"), str(p))
