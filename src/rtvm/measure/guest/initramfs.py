"""The guest's initramfs: busybox-static, the measuring tools with their libraries, the virtio
modules, and a tiny init.

The init reads its orders from the kernel command line (``rtvm.mode=timer rtvm.duration=10 ...``)
so one initramfs serves every run; it is cached by the hash of its contents. It prints:

- ``RTVM:BOOTED <uname -r>`` once running;
- ``RTVM:RC <tool> <status>`` after a tool ran;
- each result file as ``RTVM:FILE-BEGIN <name>``, gzip+base64 lines, ``RTVM:FILE-END <name>
  <md5 of the file>``, so the host can check what crossed the serial console;
- ``RTVM:READY <ip> <port>`` when the responder listens (rr mode);
- ``RTVM:DONE`` before powering off (``poweroff -f``; ``panic=1`` and qemu's ``-no-reboot`` make
  even a crashing init end the guest).

Details learned the hard way: busybox awk reads zero-padded numbers as octal, so the init never
post-processes cyclictest's numbers (the host does); the Debian kernels' virtio modules are plain
.ko files that busybox insmod loads in dependency order (virtio_ring before virtio).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rtvm.measure.guest.kernel import GuestKernel, cache_dir
from rtvm.measure.tools import ToolFailed, run_tool, which

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
dmesg -n 1
say() { echo "$@" > /dev/ttyS0; }
say "RTVM:BOOTED $(uname -r)"
P_mode=none; P_duration=5; P_interval=1000; P_prio=95; P_threads=1; P_hist=10000
P_ip=; P_gw=; P_port=11111; P_hold=60; P_policy=fifo
for w in $(cat /proc/cmdline); do
  case "$w" in
    rtvm.*=*) k=${w%%=*}; k=${k#rtvm.}; v=${w#*=}
      case "$k" in *[!a-z_]*) ;; *) eval "P_$k=\$v" ;; esac ;;
  esac
done
emit() {
  [ -f "$2" ] || { say "RTVM:MISSING $1"; return; }
  say "RTVM:FILE-BEGIN $1"
  gzip -c "$2" | base64 > /dev/ttyS0
  say "RTVM:FILE-END $1 $(md5sum "$2" | cut -d' ' -f1)"
}
finish() { say "RTVM:DONE"; sync; poweroff -f; }
case "$P_mode" in
  timer)
    pol="--policy=$P_policy"
    [ "$P_policy" = other ] && prio="" || prio="--priority=$P_prio"
    cyclictest -q --interval=$P_interval --duration=$P_duration --histogram=$P_hist \
      --threads=$P_threads --affinity=0-$(( $(nproc) - 1 )) $pol $prio --mlockall \
      --json=/tmp/ct.json > /tmp/ct.hist 2> /tmp/ct.err
    say "RTVM:RC cyclictest $?"
    # the text histogram (every bucket, zeros included) only when the JSON is missing
    if [ -s /tmp/ct.json ]; then emit cyclictest.json /tmp/ct.json
    else emit cyclictest.hist /tmp/ct.hist; fi
    emit cyclictest.err /tmp/ct.err
    ;;
  rr)
    for m in $(echo "$P_modules" | tr , " "); do
      insmod /lib/modules/$m.ko 2> /tmp/e || say "RTVM:INSMOD-FAILED $m $(cat /tmp/e)"
    done
    ip link set lo up
    ip link set eth0 up
    ip addr add "$P_ip" dev eth0
    [ -n "$P_gw" ] && ip route add default via "$P_gw"
    sockperf server -i 0.0.0.0 -p "$P_port" > /tmp/sockperf.log 2>&1 &
    spid=$!
    sleep 1
    if [ "$P_server" = fifo ]; then
      chrt -a -f -p "$P_prio" $spid > /dev/null 2>&1 && say "RTVM:SCHED sockperf fifo $P_prio"
    fi
    if kill -0 $spid 2>/dev/null; then
      say "RTVM:READY ${P_ip%/*} $P_port"
    else
      say "RTVM:RC sockperf 1"
    fi
    sleep "$P_hold"
    kill $spid 2>/dev/null
    emit sockperf.log /tmp/sockperf.log
    ;;
  *) say "RTVM:NOMODE $P_mode" ;;
esac
finish
"""

#: Programs copied into the guest with their libraries (busybox has no chrt: util-linux's).
GUEST_TOOLS = ("cyclictest", "sockperf", "chrt")


def ldd_libs(binary: str) -> list[str]:
    """Shared libraries of ``binary`` (absolute paths), from ldd."""
    r = run_tool([which("ldd"), binary], timeout=30, tool="ldd", check=False)
    if "not a dynamic executable" in (r.stdout + r.stderr):
        return []
    libs = []
    for ln in r.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", ln) or re.match(r"\s*(/\S+)\s+\(", ln)
        if m:
            libs.append(m.group(1))
    if r.returncode != 0 and not libs:
        raise ToolFailed("ldd", f"cannot list the libraries of {binary}", r.stderr + r.stdout)
    return libs


def _copy(src: str, root: Path) -> None:
    real = os.path.realpath(src)
    dest = root / src.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(real, dest)


def build(kernel: GuestKernel, tools: tuple[str, ...] = GUEST_TOOLS) -> Path:
    """Build (or reuse) the initramfs for ``kernel``; returns the path of the .cpio.gz."""
    busybox = which("busybox")
    binaries = [which(t) for t in tools]
    cpio = which("cpio")
    h = hashlib.sha256(INIT.encode())
    for f in [busybox, *binaries, *sorted(str(p) for p in kernel.modules.glob("*.ko"))]:
        st = os.stat(os.path.realpath(f))
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(kernel.release.encode())
    out = cache_dir() / "initramfs" / f"{kernel.release}-{h.hexdigest()[:16]}.cpio.gz"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtvm-initramfs-") as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib/modules", "proc", "sys", "dev", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(busybox), root / "bin" / "busybox")
        for lib in ldd_libs(busybox):
            _copy(lib, root)
        for b in binaries:
            dest = root / "usr" / "bin" / Path(b).name
            shutil.copy2(os.path.realpath(b), dest)
            for lib in ldd_libs(b):
                _copy(lib, root)
        for ko in kernel.modules.glob("*.ko"):
            shutil.copy2(ko, root / "lib" / "modules" / ko.name)
        init = root / "init"
        init.write_text(INIT)
        init.chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        r = subprocess.run(
            [cpio, "-o", "-H", "newc", "--quiet"],
            input=("\n".join(names) + "\n").encode(),
            cwd=root,
            capture_output=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise ToolFailed("cpio", f"exited with status {r.returncode}", r.stderr.decode())
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_bytes(gzip.compress(r.stdout, compresslevel=6, mtime=0))
        os.replace(tmp_out, out)
    return out
