"""Network namespaces and veth links that rtvm creates (ip netns + veth), always removed.

Names carry rtvm's pid (``rtvm<PID>-<tag>``), so that namespaces left by a killed rtvm (kill -9)
are recognised and removed by the next run (``remove_stale``). Every namespace created here is
registered and ``cleanup_all`` deletes it (its veth ends go with it) on exit, errors and Ctrl-C.
Addresses are /30 subnets of 10.231.0.0/16 chosen from the pid and a counter.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass

from rtvm.cli_support import RunFailed
from rtvm.measure.tools import ToolFailed, run_tool, which

_PREFIX = "rtvm"
_created: list[str] = []
_lock = threading.Lock()
_counter = [0]


@dataclass(frozen=True)
class Link:
    """A veth pair between namespace ``a`` and ``b`` (None = the root namespace)."""

    a: str | None
    b: str | None
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str


def require_root() -> None:
    if os.geteuid() != 0:
        raise RunFailed(
            "network namespaces need root (CAP_NET_ADMIN); run as root or use --net loopback"
        )


def _ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    ip = which("ip")
    argv = [ip, "-n", ns, *args] if ns else [ip, *args]
    return run_tool(argv, timeout=15, tool="ip", check=check).stdout


def list_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False)
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete namespaces left by rtvm processes that no longer exist."""
    removed = []
    for name in list_namespaces():
        m = re.fullmatch(rf"{_PREFIX}(\d+)-[\w.-]+", name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(ToolFailed):
                _ip("netns", "delete", name)
                removed.append(name)
    return removed


def create(tag: str) -> str:
    """Create namespace ``rtvm<PID>-<tag>`` with loopback up; returns its name."""
    require_root()
    name = f"{_PREFIX}{os.getpid()}-{tag}"
    with _lock:
        if not _created:
            remove_stale()
        _created.append(name)
    _ip("netns", "add", name)
    _ip("link", "set", "lo", "up", ns=name)
    return name


def next_subnet() -> tuple[str, str]:
    with _lock:
        n = _counter[0]
        _counter[0] += 1
    block = (os.getpid() * 8 + n) % (256 * 64)
    third, fourth = divmod(block, 64)
    base = fourth * 4
    return f"10.231.{third}.{base + 1}", f"10.231.{third}.{base + 2}"


def link(a: str | None, b: str | None) -> Link:
    """Connect two namespaces (None: root) with a veth pair and a /30; returns the addresses."""
    require_root()
    with _lock:
        n = _counter[0]
    tag = f"{os.getpid() % 100000}{n:02d}"[-8:]
    if_a, if_b = f"rva{tag}", f"rvb{tag}"
    addr_a, addr_b = next_subnet()
    if a is None:
        _ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", b or "1")
    else:
        _ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, ns=a)
        if b is not None:
            _ip("link", "set", if_b, "netns", b, ns=a)
        else:
            _ip("link", "set", if_b, "netns", "1", ns=a)
    for ns, ifc, addr in ((a, if_a, addr_a), (b, if_b, addr_b)):
        _ip("addr", "add", f"{addr}/30", "dev", ifc, ns=ns)
        _ip("link", "set", ifc, "up", ns=ns)
    return Link(a, b, if_a, if_b, addr_a, addr_b)


def exec_argv(ns: str | None, argv: list[str]) -> list[str]:
    """argv run inside namespace ``ns`` (unchanged for the root namespace)."""
    if ns is None:
        return list(argv)
    return [which("ip"), "netns", "exec", ns, *argv]


def delete(name: str) -> None:
    with contextlib.suppress(ToolFailed):
        _ip("netns", "delete", name, check=False)
    with _lock:
        if name in _created:
            _created.remove(name)


def cleanup_all() -> None:
    """Delete every namespace this process created (their veth ends go with them)."""
    with _lock:
        names = list(_created)
    for name in names:
        delete(name)
