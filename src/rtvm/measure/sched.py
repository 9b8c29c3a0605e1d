"""Thread priorities and CPU affinities for each party (chrt/taskset semantics).

``--*-sched`` takes ``other``, ``batch``, ``idle``, ``fifo:PRIO`` or ``rr:PRIO`` (PRIO 1..99), like
``chrt``; ``--*-cpus`` takes a CPU list like ``taskset -c`` (``0``, ``0-1``, ``0,2-3``). They are
applied with ``os.sched_setscheduler`` and ``os.sched_setaffinity`` to every thread of the
process (``/proc/PID/task``), the way ``chrt -a -p`` and ``taskset -a -p`` do.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rtvm.cli_support import RunFailed, fail_input

_POLICIES = {
    "other": os.SCHED_OTHER,
    "batch": os.SCHED_BATCH,
    "idle": os.SCHED_IDLE,
    "fifo": os.SCHED_FIFO,
    "rr": os.SCHED_RR,
}
SCHED_ALLOWED = "other, batch, idle, fifo:PRIO or rr:PRIO with PRIO 1..99"
CPUS_ALLOWED = "a CPU list like 0, 0-1 or 0,2-3 naming CPUs of this host"


@dataclass(frozen=True)
class Sched:
    policy: str = "other"
    priority: int = 0

    @property
    def realtime(self) -> bool:
        return self.policy in ("fifo", "rr")

    def __str__(self) -> str:
        return f"{self.policy}:{self.priority}" if self.realtime else self.policy

    def with_priority(self, prio: int) -> Sched:
        return Sched(self.policy, max(1, min(99, prio))) if self.realtime else self


def parse_sched(text: str, option: str = "--sched") -> Sched:
    t = text.strip().lower()
    pol, _, prio = t.partition(":")
    if pol not in _POLICIES:
        fail_input(f"{option} {text!r}: unknown policy {pol!r}", SCHED_ALLOWED)
    if pol in ("fifo", "rr"):
        if not prio.isdigit() or not 1 <= int(prio) <= 99:
            fail_input(f"{option} {text!r}: {pol} needs a priority", SCHED_ALLOWED)
        return Sched(pol, int(prio))
    if prio:
        fail_input(f"{option} {text!r}: {pol} takes no priority", SCHED_ALLOWED)
    return Sched(pol, 0)


def parse_cpus(text: str | None, option: str = "--cpus") -> tuple[int, ...]:
    if text is None or text.strip() == "":
        return ()
    out: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            fail_input(f"{option} {text!r}: bad CPU list", CPUS_ALLOWED)
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            fail_input(f"{option} {text!r}: range {a}-{b} is backwards", CPUS_ALLOWED)
        out.update(range(a, b + 1))
    have = os.sched_getaffinity(0)
    missing = sorted(out - have)
    if missing:
        fail_input(
            f"{option} {text!r}: CPU {missing[0]} is not available here "
            f"(this process may use {format_cpus(tuple(sorted(have)))})",
            CPUS_ALLOWED,
        )
    return tuple(sorted(out))


def format_cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus) if cpus else "all"


def thread_ids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def thread_names(pid: int) -> dict[int, str]:
    out = {}
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError):
            out[tid] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    return out


def apply_thread(tid: int, sched: Sched | None, cpus: tuple[int, ...] = ()) -> None:
    """Apply to one thread id (0 = the calling thread). Raises RunFailed when not permitted."""
    try:
        if cpus:
            os.sched_setaffinity(tid, cpus)
        if sched is not None:
            os.sched_setscheduler(tid, _POLICIES[sched.policy], os.sched_param(sched.priority))
    except PermissionError as exc:
        raise RunFailed(
            f"not permitted to set {sched} / CPUs {format_cpus(cpus)} on thread {tid}: "
            "run as root or grant CAP_SYS_NICE (and an RT rtprio limit)"
        ) from exc
    except ProcessLookupError:
        pass  # the thread ended meanwhile


def apply_process(pid: int, sched: Sched | None, cpus: tuple[int, ...] = ()) -> int:
    """Apply to every thread of ``pid`` (chrt -a / taskset -a); returns how many threads."""
    tids = thread_ids(pid)
    for tid in tids:
        apply_thread(tid, sched, cpus)
    return len(tids)


def current(tid: int) -> tuple[str, int, tuple[int, ...]]:
    """(policy, priority, cpus) of a thread, for reports and tests."""
    pol = os.sched_getscheduler(tid)
    name = next((k for k, v in _POLICIES.items() if v == pol), str(pol))
    prio = os.sched_getparam(tid).sched_priority
    return name, prio, tuple(sorted(os.sched_getaffinity(tid)))
