"""Choosing the accelerator: KVM where it works, TCG (with a clear warning) where it does not.

``auto`` takes KVM when /dev/kvm is usable and comes from a module known to run stock kernels
(kvm_intel, kvm_amd); it takes TCG, with a warning saying why, when there is no usable /dev/kvm
or when /dev/kvm comes from kvm_pvm (a host that is itself a VM without vmx/svm: there, qemu first
aborts on "failed to set MSR 0x10a" unless the CPU model drops arch-capabilities, and then the
guest dies with "KVM internal error. Suberror: 1 / emulation failure" and qemu pauses). A KVM boot
that fails at run time (those messages, or no boot line in time) falls back to TCG under ``auto``.
``kvm`` forces KVM (a failure is an error); ``tcg`` forces TCG.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtvm.measure import hostinfo

TCG_NOTE = (
    "TCG: the guest ran under qemu's TCG emulator, not under hardware virtualization; "
    "its latencies measure an emulator (instruction translation, a software timer path) and "
    "say nothing about what KVM would give on this host"
)

#: qemu/KVM messages that mean KVM cannot run this guest here.
KVM_FAILURES = (
    "KVM internal error",
    "emulation failure",
    "failed to set MSR",
    "kvm_buf_set_msrs",
    "Could not access KVM kernel module",
    "failed to initialize kvm",
    "failed to initialize KVM",
)


@dataclass(frozen=True)
class Choice:
    accel: str  # "kvm" or "tcg"
    warning: str | None
    may_fall_back: bool


def choose(requested: str) -> Choice:
    st = hostinfo.kvm_status()
    if requested == "tcg":
        return Choice("tcg", None, False)
    if requested == "kvm":
        return Choice("kvm", None, False)
    if not st["dev_kvm"]:
        return Choice("tcg", "no usable /dev/kvm on this host: falling back to TCG", False)
    if st["kvm_module"] == "kvm_pvm":
        return Choice(
            "tcg",
            "/dev/kvm here comes from kvm_pvm (this host is itself a VM, its CPU has no "
            "vmx/svm); Debian kernels do not boot under it (emulation failures): using TCG; "
            "force a try with --accel kvm",
            False,
        )
    return Choice("kvm", None, True)


def qemu_args(accel: str, drop_arch_capabilities: bool = False) -> list[str]:
    if accel == "kvm":
        cpu = "host,-arch-capabilities" if drop_arch_capabilities else "host"
        return ["-accel", "kvm", "-cpu", cpu]
    return ["-accel", "tcg", "-cpu", "max"]


def kvm_failure(text: str) -> str | None:
    for pat in KVM_FAILURES:
        if pat in text:
            return pat
    return None
