"""The cost profile: every per-packet, per-byte, per-switch, per-exit and per-miss cost of the
modelled hardware, read from one TOML file where each value carries its source and status."""

from __future__ import annotations

import difflib
import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import Any

STATUSES = ("sourced", "estimate", "fitted")


class ProfileError(ValueError):
    """A profile that cannot be used: one line naming the file, the key, the value and what is
    allowed, complete as it is (the CLI prefixes only the option it came from)."""


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
            entries[k] = Cost(_check_value("override", k, v), old.status, old.source)
        return CostProfile(self.name, entries, self.sha256 + "+override", dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        return {
            k: {"value": c.value, "status": c.status, "source": c.source}
            for k, c in self.entries.items()
        }


#: the largest value a cost may take: 1,000 s in ns, far beyond any per-event cost or byte count
#: of a host, small enough that no sum of them overflows the model's integer columns
MAX_COST = 10**12


def _check_value(origin: str, where: str, v: Any) -> int:
    """A cost is a TOML integer in 0..MAX_COST: ns, bytes or a count, never negative (a
    negative time would run the clock backwards), never a float or a string."""
    if isinstance(v, bool) or not isinstance(v, Integral) or not 0 <= int(v) <= MAX_COST:
        raise ProfileError(f"{origin}: {where} = {v!r}; allowed: an integer 0..{MAX_COST:,}")
    return int(v)


def _table(origin: str, key: str, v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProfileError(f"{origin}: {key} = {v!r}; allowed: a table ({what})")
    return v


def parse_profile(
    text: str, origin: str = "<profile>", require: Iterable[str] | None = None
) -> CostProfile:
    """Parse a profile's text; ProfileError names the first problem and what is allowed (text
    that is not TOML raises tomllib's own error, a ValueError too).
    ``require``: the costs it must hold, no more and no fewer (a user's file, checked against
    the embedded profile, so that a cost left out or misspelt is caught at load time, not
    when the model first reads it)."""
    data = tomllib.loads(text)
    meta = _table(origin, "meta", data.get("meta", {}), "name and notes")
    costs = _table(origin, "costs", data.get("costs", {}), "one [costs.NAME] table per cost")
    entries: dict[str, Cost] = {}
    for key, raw in costs.items():
        _table(origin, f"costs.{key}", raw, "value, status and source")
        for need in ("value", "status", "source"):
            if need not in raw:
                raise ProfileError(
                    f"{origin}: costs.{key} lacks '{need}'; allowed: a table with value, "
                    "status and source"
                )
        if raw["status"] not in STATUSES:
            raise ProfileError(
                f"{origin}: costs.{key}.status = {raw['status']!r}; allowed: {', '.join(STATUSES)}"
            )
        if not str(raw["source"]).strip():
            raise ProfileError(
                f"{origin}: costs.{key} has an empty source; allowed: where the value comes from"
            )
        value = _check_value(origin, f"costs.{key}.value", raw["value"])
        entries[key] = Cost(value, raw["status"], str(raw["source"]))
    if require is not None:
        _check_names(origin, set(entries), set(require))
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return CostProfile(str(meta.get("name", origin)), entries, sha, meta)


def _check_names(origin: str, have: set[str], need: set[str]) -> None:
    unknown, missing = sorted(have - need), sorted(need - have)
    if unknown:
        close = difflib.get_close_matches(unknown[0], need, n=1)
        raise ProfileError(
            f"{origin}: unknown cost {unknown[0]!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
            + f"; allowed: the {len(need)} costs of the embedded profile"
            " (src/rtvm/profiles/testbed.toml)"
        )
    if missing:
        raise ProfileError(
            f"{origin}: lacks {len(missing)} cost(s): {', '.join(missing)}; allowed: a profile "
            "with every cost of the embedded one (copy src/rtvm/profiles/testbed.toml)"
        )


def _embedded_text() -> str:
    return resources.files("rtvm.profiles").joinpath("testbed.toml").read_text("utf-8")


def load_profile(path: str | Path | None = None) -> CostProfile:
    """Load a profile file, or the embedded testbed profile when ``path`` is None. A file must
    hold the embedded profile's costs, each an integer >= 0: ProfileError otherwise (also
    for a file that is not UTF-8 or not TOML), OSError when it cannot be read."""
    if path is None:
        return parse_profile(_embedded_text(), "testbed.toml")
    p = Path(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return parse_profile(text, str(p), require=_embedded_names())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p}: not valid TOML: {e}") from None


@cache
def _embedded_names() -> frozenset[str]:
    return frozenset(parse_profile(_embedded_text(), "testbed.toml").entries)
