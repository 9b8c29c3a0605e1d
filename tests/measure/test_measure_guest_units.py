"""Guest plumbing without booting: serial-console protocol, module order, qemu command line,
accelerator choice, the host/guest kernel combinations."""

from __future__ import annotations

import base64
import gzip
import hashlib
from pathlib import Path

import pytest
from measure_helpers import FIXTURES

from rtvm.measure import cyclictest
from rtvm.measure.guest import accel, console, initramfs, run
from rtvm.measure.guest.kernel import GuestKernel
from rtvm.measure.guest.qemu import GuestSpec


def test_recorded_console_gives_cyclictest_results():
    c = console.parse((FIXTURES / "guest-console-timer.log").read_text())
    assert c.event("RTVM:BOOTED") == "6.1.0-56-amd64"
    assert c.rc("cyclictest") == 0 and c.event("RTVM:DONE") == ""
    assert not c.corrupt
    res = cyclictest.parse_json(c.files["cyclictest.json"].decode())
    hist = cyclictest.parse_histogram(c.files["cyclictest.hist"].decode())
    assert res.histogram() == hist.histogram()
    assert res.stats().samples > 1000


def _block(name: str, data: bytes) -> str:
    b64 = base64.b64encode(gzip.compress(data)).decode()
    lines = [b64[i : i + 76] for i in range(0, len(b64), 76)]
    md5 = hashlib.md5(data).hexdigest()
    return "\n".join([f"RTVM:FILE-BEGIN {name}", *lines, f"RTVM:FILE-END {name} {md5}"]) + "\n"


def test_console_tolerates_noise_and_rejects_corruption():
    data = bytes((i * 37 + i // 7) % 256 for i in range(3000))
    good = _block("a.json", data)
    noisy = "[    1.234] random kernel line\r\n" + good.replace("\n", "\r\n", 3)
    assert console.parse(noisy).files["a.json"] == data
    lines = good.splitlines()
    assert len(lines) > 5
    mid = lines[3]
    flipped = mid[:30] + ("A" if mid[30] != "A" else "B") + mid[31:]
    bad = "\n".join([*lines[:3], flipped, *lines[4:]])
    c = console.parse(bad)
    assert "a.json" not in c.files and c.corrupt == ["a.json"]
    trunc = console.parse("\n".join(lines[:2]))
    assert trunc.files == {} and trunc.corrupt == ["a.json (truncated)"]
    assert console.parse("").events == []


def _fake_kernel(tmp_path: Path, deps: dict[str, str]) -> GuestKernel:
    mods = tmp_path / "modules"
    mods.mkdir()
    for name, d in deps.items():
        (mods / f"{name}.ko").write_bytes(b"\x7fELF...\0license=GPL\0depends=" + d.encode() + b"\0")
    return GuestKernel("stock", "linux-image-x", "6.1.0-x-amd64", "1", tmp_path / "vmlinuz", mods)


def test_module_load_order_follows_depends(tmp_path):
    k = _fake_kernel(
        tmp_path,
        {
            "virtio_ring": "",
            "virtio": "virtio_ring",
            "failover": "",
            "net_failover": "failover",
            "virtio_net": "virtio_ring,virtio,net_failover",
            "virtio_pci_modern_dev": "",
            "virtio_pci_legacy_dev": "",
            "virtio_pci": "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
        },
    )
    order = k.load_order()
    assert set(order) == {p.stem for p in k.modules.glob("*.ko")}
    for m in order:
        for d in k.module_deps(m):
            assert order.index(d) < order.index(m)
    assert order.index("virtio_ring") < order.index("virtio")


def test_qemu_command_line(tmp_path):
    k = GuestKernel("rt", "p", "6.1.0-x-rt-amd64", "1", tmp_path / "vmlinuz", tmp_path)
    assert k.preemption == "PREEMPT_RT"
    spec = GuestSpec(k, tmp_path / "i.gz", "tcg", 1, 256, {"mode": "timer", "duration": "3"})
    a = spec.argv(tmp_path / "c.log", "qemu-system-x86_64")
    s = " ".join(a)
    assert "debug-threads=on" in s and "-no-reboot" in a and "-nodefaults" in a
    assert a[a.index("-accel") + 1] == "tcg" and a[a.index("-cpu") + 1] == "max"
    assert "rtvm.mode=timer rtvm.duration=3" in spec.cmdline() and "panic=1" in spec.cmdline()
    kvm = GuestSpec(k, tmp_path / "i.gz", "kvm", drop_arch_capabilities=True)
    ka = kvm.argv(tmp_path / "c.log", "q")
    assert ka[ka.index("-cpu") + 1] == "host,-arch-capabilities"


@pytest.mark.parametrize(
    ("status", "requested", "want", "warns"),
    [
        ({"dev_kvm": True, "kvm_module": "kvm_pvm", "cpu_virt_ext": None}, "auto", "tcg", True),
        ({"dev_kvm": False, "kvm_module": None, "cpu_virt_ext": None}, "auto", "tcg", True),
        ({"dev_kvm": True, "kvm_module": "kvm_intel", "cpu_virt_ext": "vmx"}, "auto", "kvm", False),
        ({"dev_kvm": True, "kvm_module": "kvm_pvm", "cpu_virt_ext": None}, "kvm", "kvm", False),
        ({"dev_kvm": True, "kvm_module": "kvm_amd", "cpu_virt_ext": "svm"}, "tcg", "tcg", False),
    ],
)
def test_accelerator_choice(monkeypatch, status, requested, want, warns):
    monkeypatch.setattr(accel.hostinfo, "kvm_status", lambda: status)
    c = accel.choose(requested)
    assert c.accel == want and bool(c.warning) == warns
    assert c.may_fall_back == (requested == "auto" and want == "kvm")


def test_kvm_failure_messages_are_recognised():
    assert accel.kvm_failure("error: failed to set MSR 0x10a to 0x69")
    assert accel.kvm_failure("KVM internal error. Suberror: 1\nemulation failure")
    assert accel.kvm_failure("all fine") is None


def test_combinations_name_the_host_kernel(monkeypatch):
    monkeypatch.setattr(run.hostinfo, "preemption_model", lambda *a: "PREEMPT_DYNAMIC")
    combos = run._combinations(["stock", "rt"])
    assert len(combos) == 4
    by = {(c["host_kernel"], c["guest_kernel"]): c["status"] for c in combos}
    assert by[("stock", "stock")] == by[("stock", "rt")] == "measured"
    assert "PREEMPT_RT" in by[("rt", "rt")] and "boot the host" in by[("rt", "stock")]


def test_init_script_protocol():
    s = initramfs.INIT
    for marker in ("RTVM:BOOTED", "RTVM:FILE-BEGIN", "RTVM:FILE-END", "RTVM:READY", "RTVM:DONE"):
        assert marker in s
    assert "poweroff -f" in s and "--json=/tmp/ct.json" in s
    assert "awk" not in s  # busybox awk reads zero-padded numbers as octal: never used
