"""Host load with stress-ng, always bounded in time.

``--load`` takes ``none``, ``stress-ng`` (= ``stress-ng:kernel``) or ``stress-ng:SPEC`` where SPEC
is ``kernel`` or a comma list of ``STRESSOR=N`` (``stress-ng:timer=2,switch=1``).

``kernel`` is the "kernel stress" of the vm-timer experiment (Abeni and Faggioli): syscall- and
interrupt-heavy stressors rather than pure user-space CPU burners: timer (timer
interrupts), switch (context switches through pipes), get and syscall (system calls), futex, and
fork (process creation). One instance of each per CPU for timer and switch, one of the others.
Not hrtimers: stress-ng runs it at an RT priority, which starves SCHED_OTHER threads instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtvm.cli_support import fail_input
from rtvm.measure.tools import Background, tool_version, which

KERNEL_STRESSORS_PER_CPU = ("timer", "switch")
# not hrtimers: stress-ng runs that stressor's processes at an RT priority (SCHED_FIFO/RR,
# shown as PR -50 by top), so it starves every SCHED_OTHER thread (a guest's vCPUs included)
# rather than stressing the kernel; ask for it explicitly with stress-ng:hrtimers=1
KERNEL_STRESSORS_ONE = ("get", "syscall", "futex", "fork")

_ITEM = re.compile(r"^([a-z][a-z0-9-]*)=(\d{1,3})$")


@dataclass(frozen=True)
class LoadSpec:
    """A parsed ``--load`` value."""

    name: str  # "none" or "stress-ng:<spec>"
    stressors: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return bool(self.stressors)

    @property
    def label(self) -> str:
        return "idle" if not self.active else self.name


def kernel_preset(ncpu: int | None = None) -> tuple[tuple[str, int], ...]:
    n = ncpu or len(os.sched_getaffinity(0))
    return tuple((s, n) for s in KERNEL_STRESSORS_PER_CPU) + tuple(
        (s, 1) for s in KERNEL_STRESSORS_ONE
    )


def parse_load(text: str, ncpu: int | None = None) -> LoadSpec:
    """Parse ``--load``; bad input is one line naming what is allowed."""
    allowed = "none, stress-ng, stress-ng:kernel or stress-ng:STRESSOR=N[,STRESSOR=N...]"
    t = text.strip()
    if t in ("", "none", "idle"):
        return LoadSpec("none")
    tool, _, spec = t.partition(":")
    if tool != "stress-ng":
        fail_input(f"--load {text!r}: unknown load generator {tool!r}", allowed)
    if spec in ("", "kernel"):
        return LoadSpec("stress-ng:kernel", kernel_preset(ncpu))
    items = []
    for part in spec.split(","):
        m = _ITEM.match(part.strip())
        if not m:
            fail_input(f"--load {text!r}: bad item {part!r}", allowed)
        n = int(m.group(2))
        if not 1 <= n <= 256:
            fail_input(f"--load {text!r}: {m.group(1)}={n} out of range", "1 to 256 instances")
        items.append((m.group(1), n))
    return LoadSpec(f"stress-ng:{spec}", tuple(items))


def known_stressors() -> set[str] | None:
    """Stressor names this stress-ng knows (None if it cannot say)."""
    import subprocess

    try:
        r = subprocess.run(
            [which("stress-ng"), "--stressors"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = set(r.stdout.split())
    return names or None


def validate(spec: LoadSpec) -> None:
    """Check the stressor names against the installed stress-ng (drops unknown preset items)."""
    if not spec.active:
        return
    known = known_stressors()
    if known is None:
        return
    bad = [s for s, _ in spec.stressors if s not in known]
    if bad and spec.name != "stress-ng:kernel":
        fail_input(f"stress-ng has no stressor {bad[0]!r}", "see 'stress-ng --stressors'")


def argv(spec: LoadSpec, timeout_s: float, binary: str = "stress-ng") -> list[str]:
    """stress-ng's command line; ``--timeout`` bounds it even if rtvm itself dies."""
    known = known_stressors() if spec.name == "stress-ng:kernel" else None
    a = [binary]
    for s, n in spec.stressors:
        if known is not None and s not in known:
            continue  # an older stress-ng without this stressor: the preset goes on without it
        a += [f"--{s}", str(n)]
    a += ["--timeout", f"{max(1, int(timeout_s + 0.999))}s", "--metrics-brief"]
    return a


class HostLoad:
    """Context manager running the load (or nothing) for at most ``timeout_s`` seconds."""

    def __init__(self, spec: LoadSpec, timeout_s: float, log: Path) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.log = log
        self.bg: Background | None = None
        self.argv: Sequence[str] = ()

    def __enter__(self) -> HostLoad:
        if self.spec.active:
            self.argv = argv(self.spec, self.timeout_s, which("stress-ng"))
            self.bg = Background(self.argv, self.log, tool="stress-ng").start()
            # let the stressors spin up before measuring
            import time

            time.sleep(1.0)
            self.bg.check_alive("stopped before the measurement started")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bg is not None:
            self.bg.stop()

    def describe(self) -> dict[str, object]:
        return {
            "load": self.spec.label,
            "load_cmd": " ".join(self.argv) if self.argv else None,
            "load_version": tool_version("stress-ng") if self.spec.active else None,
        }
