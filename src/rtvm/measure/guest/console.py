"""Reading the guest's serial console: events and the result files the init printed.

Each file crosses as ``RTVM:FILE-BEGIN name``, gzip+base64 lines, ``RTVM:FILE-END name md5``; the
md5 of the decoded file must match, so a garbled console is an error, never a wrong number.
Stray lines (kernel messages, carriage returns) are tolerated.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import re
from dataclasses import dataclass, field

_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


@dataclass
class Console:
    events: list[str] = field(default_factory=list)  # "RTVM:..." lines other than file data
    files: dict[str, bytes] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)

    def event(self, prefix: str) -> str | None:
        """The first event starting with ``prefix`` (without the prefix), or None."""
        for e in self.events:
            if e.startswith(prefix):
                return e[len(prefix) :].strip()
        return None

    def rc(self, tool: str) -> int | None:
        for e in self.events:
            parts = e.split()
            if len(parts) == 3 and parts[0] == "RTVM:RC" and parts[1] == tool:
                try:
                    return int(parts[2])
                except ValueError:
                    return None
        return None


def parse(text: str) -> Console:
    c = Console()
    cur: str | None = None
    chunks: list[str] = []
    for raw in text.replace("\r", "\n").split("\n"):
        ln = raw.strip()
        if not ln:
            continue
        i = ln.find("RTVM:")
        if i >= 0:
            ln = ln[i:]
            if ln.startswith("RTVM:FILE-BEGIN "):
                cur, chunks = ln.split(None, 1)[1].strip(), []
                continue
            if ln.startswith("RTVM:FILE-END "):
                parts = ln.split()
                name = parts[1] if len(parts) > 1 else ""
                md5 = parts[2] if len(parts) > 2 else ""
                if cur is not None and name == cur:
                    _finish(c, cur, "".join(chunks), md5)
                cur = None
                continue
            c.events.append(ln)
            continue
        if cur is not None and _B64.match(ln):
            chunks.append(ln)
    if cur is not None:
        c.corrupt.append(f"{cur} (truncated)")
    return c


def _finish(c: Console, name: str, b64: str, md5: str) -> None:
    try:
        data = gzip.decompress(base64.b64decode(b64, validate=True))
    except (binascii.Error, OSError, EOFError, ValueError):
        c.corrupt.append(name)
        return
    if hashlib.md5(data).hexdigest() != md5:
        c.corrupt.append(name)
        return
    c.files[name] = data
