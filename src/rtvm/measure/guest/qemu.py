"""Booting a guest with qemu-system-x86_64, tuning its threads, and always ending it.

- qemu runs in its own process group, its serial console goes to a file that rtvm reads while the
  guest runs, and ``-no-reboot`` plus the kernel's ``panic=1`` turn a crashing guest into an
  exiting qemu.
- A watchdog thread kills qemu at a hard deadline whatever the guest does (a KVM guest that hits
  an emulation failure makes qemu pause instead of exiting). When qemu's threads run at an RT
  priority, the watchdog runs at a higher one.
- Errors, Ctrl-C and SIGTERM end qemu through the context manager and ``tools.cleanup_children``.
- qemu names its threads ("CPU 0/TCG", "CPU 0/KVM") only with ``-name NAME,debug-threads=on``;
  ``tune`` finds the vCPU threads by those names and gives them the requested policy, priority and
  CPUs; the main loop thread (the process's first thread) gets one priority step above the vCPUs
  (equal FIFO priorities for all of qemu's threads livelocked a guest: the main loop must be able
  to preempt a spinning vCPU to deliver its I/O and timers). Other qemu threads are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtvm.cli_support import RunFailed
from rtvm.measure import netns, sched
from rtvm.measure.guest import accel as accel_mod
from rtvm.measure.guest import console as console_mod
from rtvm.measure.guest.kernel import GuestKernel
from rtvm.measure.tools import Background, kill_group, last_lines, which

_VCPU = re.compile(r"^CPU (\d+)/(TCG|KVM)$")


class GuestFailed(RunFailed):
    """The guest did not boot, did not finish, or KVM could not run it."""

    def __init__(self, what: str, console_text: str = "", qemu_text: str = "", kvm: bool = False):
        parts = [what]
        q = last_lines(qemu_text, 2)
        if q:
            parts.append(f"qemu said: {q}")
        c = last_lines(console_text, 3)
        if c:
            parts.append(f"guest console ended: {c}")
        super().__init__("; ".join(parts))
        self.kvm_failure = kvm
        self.console_text = console_text
        self.qemu_text = qemu_text


@dataclass
class GuestSpec:
    kernel: GuestKernel
    initrd: Path
    accel: str = "tcg"
    vcpus: int = 1
    mem_mb: int = 512
    params: dict[str, str] = field(default_factory=dict)
    netdev: list[str] = field(default_factory=list)  # -netdev/-device arguments
    ns: str | None = None  # network namespace qemu runs in
    drop_arch_capabilities: bool = False
    name: str = "rtvm-guest"

    def cmdline(self) -> str:
        # no_timer_check: a guest starved of CPU (TCG under host load) fails the kernel's
        # IO-APIC timer check and panics at boot; VMs routinely skip it
        base = ["console=ttyS0", "quiet", "loglevel=1", "panic=1", "tsc=reliable", "no_timer_check"]
        return " ".join(base + [f"rtvm.{k}={v}" for k, v in self.params.items()])

    def argv(self, console_path: Path, binary: str) -> list[str]:
        a = [
            binary,
            "-name",
            f"{self.name},debug-threads=on",
            "-machine",
            "q35",
            *accel_mod.qemu_args(self.accel, self.drop_arch_capabilities),
            "-m",
            str(self.mem_mb),
            "-smp",
            str(self.vcpus),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            f"file:{console_path}",
            "-kernel",
            str(self.kernel.vmlinuz),
            "-initrd",
            str(self.initrd),
            "-append",
            self.cmdline(),
            *self.netdev,
        ]
        extra = os.environ.get("RTVM_QEMU_EXTRA_ARGS", "").split()  # fault tests (e.g. -S)
        return a + extra


class QemuGuest:
    """One guest run: ``with QemuGuest(spec, work, deadline_s) as g: g.wait_event(...)``."""

    def __init__(self, spec: GuestSpec, work: Path, deadline_s: float) -> None:
        self.spec = spec
        self.work = work
        self.deadline_s = deadline_s
        self.console_path = work / "console.log"
        self.bg: Background | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._watchdog_prio: int | None = None
        self.killed_by_watchdog = False
        self.started = 0.0
        self.thread_map: dict[str, Any] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> QemuGuest:
        self.work.mkdir(parents=True, exist_ok=True)
        self.console_path.write_bytes(b"")
        binary = which("qemu-system-x86_64")
        argv = netns.exec_argv(self.spec.ns, self.spec.argv(self.console_path, binary))
        self.bg = Background(argv, self.work / "qemu.log", tool="qemu-system-x86_64")
        self.started = time.monotonic()
        self.bg.start()
        self._watchdog = threading.Thread(target=self._watch, name="rtvm-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self.bg is not None:
            self.bg.stop(grace=3.0)
        if self._watchdog is not None:
            self._watchdog.join(5)

    def _watch(self) -> None:
        end = self.started + self.deadline_s
        while not self._stop.is_set():
            if self._watchdog_prio is not None:
                prio, self._watchdog_prio = self._watchdog_prio, None
                with contextlib.suppress(RunFailed):
                    sched.apply_thread(0, sched.Sched("fifo", prio))
            if time.monotonic() >= end:
                if self.bg is not None and self.bg.proc is not None and self.bg.alive():
                    self.killed_by_watchdog = True
                    kill_group(self.bg.proc, grace=2.0)
                return
            self._stop.wait(0.2)

    # -- output -------------------------------------------------------------------------------
    def console_text(self) -> str:
        try:
            return self.console_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def qemu_text(self) -> str:
        return self.bg.output() if self.bg else ""

    def alive(self) -> bool:
        return self.bg is not None and self.bg.alive()

    def _fail(self, what: str) -> GuestFailed:
        qt = self.qemu_text()
        kvm = self.spec.accel == "kvm" and (accel_mod.kvm_failure(qt) is not None or "boot" in what)
        return GuestFailed(what, self.console_text(), qt, kvm)

    def wait_event(self, prefix: str, timeout: float) -> str:
        """Wait for a console line starting with ``prefix``; returns the rest of that line."""
        end = time.monotonic() + timeout
        while True:
            c = console_mod.parse(self.console_text())
            got = c.event(prefix)
            if got is not None:
                return got
            qt = self.qemu_text()
            if self.spec.accel == "kvm" and accel_mod.kvm_failure(qt):
                raise self._fail("KVM could not run this guest kernel")
            if not self.alive():
                if self.killed_by_watchdog:
                    raise self._fail(f"guest hit the {self.deadline_s:.0f} s hard deadline")
                rc = self.bg.proc.returncode if self.bg and self.bg.proc else None
                raise self._fail(f"qemu exited (status {rc}) before the guest printed {prefix}")
            if time.monotonic() >= end:
                raise self._fail(f"guest did not print {prefix.strip()} within {timeout:.0f} s")
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> None:
        """Wait for the guest to power off (qemu exits)."""
        end = time.monotonic() + timeout
        while self.alive() and time.monotonic() < end:
            time.sleep(0.1)
        if self.alive():
            raise self._fail(f"guest did not power off within {timeout:.0f} s")

    def result(self) -> console_mod.Console:
        return console_mod.parse(self.console_text())

    # -- thread tuning ------------------------------------------------------------------------
    def threads(self) -> dict[int, str]:
        assert self.bg is not None
        return sched.thread_names(self.bg.pid)

    def vcpu_threads(self, timeout: float = 15.0) -> dict[int, str]:
        end = time.monotonic() + timeout
        while True:
            names = self.threads()
            vc = {t: n for t, n in names.items() if _VCPU.match(n)}
            if len(vc) >= self.spec.vcpus or time.monotonic() >= end or not self.alive():
                return vc
            time.sleep(0.05)

    def tune(self, vcpu: sched.Sched | None, cpus: tuple[int, ...]) -> dict[str, Any]:
        """Apply the vCPU threads' policy/priority/CPUs; main loop one step above; record all."""
        assert self.bg is not None
        vc = self.vcpu_threads()
        if not vc:
            raise self._fail("found no vCPU threads named 'CPU n/TCG' or 'CPU n/KVM' in qemu")
        if vcpu is not None or cpus:
            for tid in vc:
                sched.apply_thread(tid, vcpu, cpus)
            if vcpu is not None and vcpu.realtime:
                main_prio = min(99, vcpu.priority + 1)
                sched.apply_thread(self.bg.pid, vcpu.with_priority(main_prio))
                self._watchdog_prio = min(99, main_prio + 1)
        out: dict[str, Any] = {}
        for tid, name in self.threads().items():
            try:
                pol, prio, tcpus = sched.current(tid)
            except OSError:
                continue
            role = "vcpu" if tid in vc else ("main" if tid == self.bg.pid else "other")
            out[str(tid)] = {
                "name": name,
                "role": role,
                "policy": pol,
                "priority": prio,
                "cpus": sched.format_cpus(tcpus),
            }
        self.thread_map = out
        return out
