"""What the host is: kernel, preemption model, CPU, whether it is itself a VM, what /dev/kvm is.

Every real result carries this ``host`` block so nobody mistakes a number from a VM, or from an
emulator, for bare metal or for KVM.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from rtvm.measure.tools import tool_version


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text("utf-8", "replace").strip()
    except OSError:
        return None


def preemption_model(uname_v: str | None = None, sys_root: str = "/") -> str:
    """PREEMPT_RT, PREEMPT_DYNAMIC (with the current mode when debugfs says), PREEMPT or none."""
    v = uname_v if uname_v is not None else platform.uname().version
    rt = _read(os.path.join(sys_root, "sys/kernel/realtime"))
    if rt == "1" or "PREEMPT_RT" in v:
        return "PREEMPT_RT"
    if "PREEMPT_DYNAMIC" in v:
        mode = _read(os.path.join(sys_root, "sys/kernel/debug/sched/preempt"))
        if mode:
            cur = [w.strip("()") for w in mode.split() if w.startswith("(")]
            if cur:
                return f"PREEMPT_DYNAMIC ({cur[0]})"
        cmd = _read(os.path.join(sys_root, "proc/cmdline")) or ""
        for w in cmd.split():
            if w.startswith("preempt="):
                return f"PREEMPT_DYNAMIC ({w.split('=', 1)[1]})"
        return "PREEMPT_DYNAMIC"
    if "PREEMPT" in v.split():
        return "PREEMPT"
    return "none (voluntary or server)"


def cpu_model(cpuinfo: str | None = None) -> str | None:
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    for ln in text.splitlines():
        if ln.startswith("model name"):
            return ln.split(":", 1)[1].strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    for ln in text.splitlines():
        if ln.startswith("flags"):
            return set(ln.split(":", 1)[1].split())
    return set()


def is_vm(cpuinfo: str | None = None) -> bool:
    """True when the CPU says it runs under a hypervisor (the 'hypervisor' cpuid bit)."""
    return "hypervisor" in cpu_flags(cpuinfo)


def kvm_provider(sys_module: str = "/sys/module") -> str | None:
    """Which module provides /dev/kvm: kvm_intel, kvm_amd, kvm_pvm, ... (None: no KVM)."""
    for m in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if Path(sys_module, m).exists():
            return m
    return "kvm" if Path(sys_module, "kvm").exists() else None


def kvm_status() -> dict[str, Any]:
    dev = Path("/dev/kvm")
    usable = dev.exists() and os.access(dev, os.R_OK | os.W_OK)
    flags = cpu_flags()
    return {
        "dev_kvm": usable,
        "kvm_module": kvm_provider(),
        "cpu_virt_ext": "vmx" if "vmx" in flags else ("svm" if "svm" in flags else None),
    }


def host_block(accelerator: str | None = None, tools: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``host`` block of a result."""
    u = platform.uname()
    versions = {t: tool_version(t, _VERSION_ARGS.get(t, ("--version",))) for t in tools}
    return {
        "kernel": u.release,
        "kernel_version": u.version,
        "preemption": preemption_model(u.version),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "is_vm": is_vm(),
        "kvm": kvm_status(),
        "accelerator": accelerator or "none (host)",
        "tool_versions": versions,
    }


_VERSION_ARGS: dict[str, tuple[str, ...]] = {"cyclictest": ("--help",)}
