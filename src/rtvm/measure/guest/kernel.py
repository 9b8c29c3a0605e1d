"""Debian guest kernels, fetched with apt-get download into a cache and unpacked.

The meta packages (``linux-image-amd64``, ``linux-image-rt-amd64``) only depend on a versioned
image package; rtvm resolves it with ``apt-cache depends`` and downloads that one. The cache
(``~/.cache/rtvm``, or ``$RTVM_CACHE``) keeps the .deb and the unpacked kernel, so a second run
needs no network; without apt metadata the newest cached kernel of the flavour is used.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rtvm.cli_support import RunFailed, UserError
from rtvm.measure.tools import ToolFailed, run_tool, which

FLAVOURS = {"stock": "linux-image-amd64", "rt": "linux-image-rt-amd64"}

#: Modules the guest needs for virtio networking (vm-rr), with what they need.
NET_MODULES = ("virtio_net", "virtio_pci")
_MODULE_PATHS = (
    "kernel/drivers/virtio/",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/net/core/failover.ko",
)


def cache_dir() -> Path:
    base = os.environ.get("RTVM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rtvm"
    )
    return Path(base)


@dataclass(frozen=True)
class GuestKernel:
    flavour: str
    package: str  # versioned image package, e.g. linux-image-6.1.0-56-rt-amd64
    release: str  # uname -r of the guest, e.g. 6.1.0-56-rt-amd64
    deb_version: str
    vmlinuz: Path
    modules: Path  # directory with the .ko files (flat)

    @property
    def preemption(self) -> str:
        return "PREEMPT_RT" if "-rt-" in self.release else "PREEMPT_DYNAMIC (voluntary default)"

    def module_deps(self, name: str) -> list[str]:
        ko = self.modules / f"{name}.ko"
        if not ko.exists():
            raise RunFailed(f"guest kernel {self.release} has no module {name}")
        data = ko.read_bytes()
        i = data.find(b"depends=")
        if i < 0:
            return []
        j = data.find(b"\0", i)
        deps = data[i + len(b"depends=") : j].decode()
        return [d.replace("-", "_") for d in deps.split(",") if d]

    def load_order(self, targets: tuple[str, ...] = NET_MODULES) -> list[str]:
        """Modules in dependency order (virtio_ring before virtio, ...)."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(m: str, depth: int = 0) -> None:
            if m in seen or depth > 20:
                return
            seen.add(m)
            for d in self.module_deps(m):
                visit(d, depth + 1)
            order.append(m)

        for t in targets:
            visit(t)
        return order


def resolve_package(flavour: str) -> str:
    """The versioned image package the meta package depends on."""
    meta = FLAVOURS[flavour]
    r = run_tool([which("apt-cache"), "depends", meta], timeout=60, tool="apt-cache", check=False)
    for ln in r.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", ln)
        if m and m.group(1) != meta:
            return m.group(1)
    raise ToolFailed("apt-cache", f"found no image package behind {meta}", r.stderr + r.stdout)


def _cached(flavour: str) -> list[Path]:
    root = cache_dir() / "kernels"
    if not root.exists():
        return []
    out = []
    for d in root.iterdir():
        meta = d / "kernel.json"
        if meta.exists():
            with contextlib.suppress(ValueError, OSError):
                if json.loads(meta.read_text()).get("flavour") == flavour:
                    out.append(d)
    return sorted(out)


def _load(d: Path) -> GuestKernel:
    m = json.loads((d / "kernel.json").read_text())
    return GuestKernel(
        flavour=m["flavour"],
        package=m["package"],
        release=m["release"],
        deb_version=m["deb_version"],
        vmlinuz=d / "vmlinuz",
        modules=d / "modules",
    )


def fetch(flavour: str) -> GuestKernel:
    """The guest kernel of ``flavour`` (stock or rt), from the cache or apt."""
    if flavour not in FLAVOURS:
        raise UserError(f"unknown guest kernel {flavour!r}; allowed: {', '.join(FLAVOURS)}")
    try:
        pkg = resolve_package(flavour)
    except (ToolFailed, RunFailed) as exc:
        cached = _cached(flavour)
        if cached:
            return _load(cached[-1])
        raise RunFailed(
            f"cannot resolve {FLAVOURS[flavour]} ({exc.format_message()}); run apt-get update"
        ) from exc
    d = cache_dir() / "kernels" / pkg
    if (d / "kernel.json").exists():
        return _load(d)
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        run_tool([which("apt-get"), "download", pkg], timeout=900, tool="apt-get", cwd=debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            raise RunFailed(f"apt-get download {pkg} left no .deb in {debs}")
    return unpack(found[-1], flavour, pkg, d)


def unpack(deb: Path, flavour: str, pkg: str, dest: Path) -> GuestKernel:
    """Extract vmlinuz and the virtio modules from the .deb into ``dest`` (atomically)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    release = None
    proc = subprocess.Popen(
        [which("dpkg-deb"), "--fsys-tarfile", str(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for member in tf:
                name = member.name.lstrip("./")
                if not member.isfile():
                    continue
                if re.fullmatch(r"boot/vmlinuz-.+", name):
                    release = name.split("vmlinuz-", 1)[1]
                    _extract(tf, member, tmp / "vmlinuz")
                    continue
                m = re.fullmatch(r"(?:usr/)?lib/modules/([^/]+)/(.+)", name)
                if m and any(m.group(2).startswith(p) for p in _MODULE_PATHS):
                    base = Path(m.group(2)).name
                    if base.endswith(".ko.xz"):
                        data = tf.extractfile(member).read()  # type: ignore[union-attr]
                        (tmp / "modules" / base[:-3]).write_bytes(lzma.decompress(data))
                    elif base.endswith(".ko"):
                        _extract(tf, member, tmp / "modules" / base.replace("-", "_"))
    finally:
        _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or release is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ToolFailed("dpkg-deb", f"could not unpack a kernel from {deb.name}", err.decode())
    deb_version = deb.name.split("_")[1] if deb.name.count("_") >= 2 else "?"
    (tmp / "kernel.json").write_text(
        json.dumps(
            {"flavour": flavour, "package": pkg, "release": release, "deb_version": deb_version}
        )
    )
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return _load(dest)


def _extract(tf: tarfile.TarFile, member: tarfile.TarInfo, to: Path) -> None:
    src = tf.extractfile(member)
    assert src is not None
    with open(to, "wb") as fh:
        shutil.copyfileobj(src, fh)
