"""``rtvm measure vm-timer`` and ``vm-rr``: the experiments run in real guests.

vm-timer: for each host load x qemu thread setting x guest kernel, boot the guest, tune qemu's
threads, let the guest's init run cyclictest, read its results from the serial console, and check
the guest powered off. The host kernel is what it is: the rows say which it is, and the
``combinations`` block says which of the four host/guest kernel pairs (stock or PREEMPT_RT each)
were measured and what the others need.

vm-rr: the guest runs ``sockperf server`` (its header is the probe's first 14 bytes, so both the
probe client and ``sockperf ping-pong`` talk to it); the client runs on the host side, over a tap
device inside a network namespace rtvm creates (vhost=off), or over qemu's user-mode network with
a hostfwd on loopback. Heavy receivers and priorities work as in ``rr``.
"""

from __future__ import annotations

import functools
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtvm.analysis import stats
from rtvm.cli_support import RunFailed, console, result_envelope
from rtvm.measure import cyclictest, hostinfo, netns, results, sched
from rtvm.measure.guest import accel as accel_mod
from rtvm.measure.guest import console as console_mod
from rtvm.measure.guest import initramfs, kernel
from rtvm.measure.guest.kernel import GuestKernel
from rtvm.measure.guest.qemu import GuestFailed, GuestSpec, QemuGuest
from rtvm.measure.rr import (
    HeavyReceivers,
    RrOptions,
    free_port,
    rr_notes,
    rr_row,
    run_client,
    scenario_dict,
)
from rtvm.measure.stress import HostLoad, LoadSpec
from rtvm.measure.tools import ToolFailed, run_tool, which


@dataclass(frozen=True)
class QemuSched:
    """Host-side setting of qemu's vCPU threads (and its main loop, one step above)."""

    sched: sched.Sched | None = None
    cpus: tuple[int, ...] = ()

    def label(self) -> str:
        s = str(self.sched) if self.sched else "other"
        return s + (f"@{sched.format_cpus(self.cpus)}" if self.cpus else "")


@dataclass(frozen=True)
class GuestOptions:
    kernels: tuple[str, ...] = ("stock", "rt")
    accel: str = "auto"
    vcpus: int = 1
    mem_mb: int = 512
    qemu: tuple[QemuSched, ...] = (QemuSched(),)
    loads: tuple[LoadSpec, ...] = (LoadSpec("none"),)
    boot_timeout_s: float | None = None  # None: 90 s idle, 300 s under host load

    def boot_s(self, loaded: bool = False) -> float:
        if self.boot_timeout_s is not None:
            return self.boot_timeout_s
        return 300.0 if loaded else 90.0

    seed: int = 1


@dataclass
class _AccelState:
    choice: accel_mod.Choice
    notes: list[str] = field(default_factory=list)
    drop_arch: bool = False


def _host_base() -> dict[str, Any]:
    u = platform.uname()
    return {"host_kernel": u.release, "host_preemption": hostinfo.preemption_model(u.version)}


def _combinations(measured_guest: Sequence[str]) -> list[dict[str, Any]]:
    host_pre = hostinfo.preemption_model()
    host_rt = host_pre == "PREEMPT_RT"
    out = []
    for h in ("stock", "rt"):
        for g in ("stock", "rt"):
            here = (h == "rt") == host_rt
            if here and g in measured_guest:
                status = "measured"
            elif here:
                status = f"not requested (add --guest-kernel {g})"
            else:
                want = "linux-image-rt-amd64 (PREEMPT_RT)" if h == "rt" else "a non-RT kernel"
                status = (
                    f"not measurable here: the host kernel is {platform.uname().release} "
                    f"({host_pre}); boot the host into {want} and rerun"
                )
            out.append({"host_kernel": h, "guest_kernel": g, "status": status})
    return out


def _boot(
    spec: GuestSpec, work: Path, deadline: float, q: QemuSched
) -> tuple[QemuGuest, dict[str, Any]]:
    """Start the guest and tune its threads; the caller owns (and must stop) the guest."""
    g = QemuGuest(spec, work, deadline).__enter__()
    try:
        threads = g.tune(q.sched, q.cpus)
        return g, threads
    except BaseException:
        g.stop()
        raise


def _run_guest(
    make_spec: Any,
    work: Path,
    deadline: float,
    q: QemuSched,
    state: _AccelState,
    boot_s: float,
    body: Any,
) -> Any:
    """Boot (with KVM fallbacks), run ``body(guest)``, always stop the guest."""
    for attempt in range(3):
        spec: GuestSpec = make_spec(state.choice.accel, state.drop_arch)
        try:
            g, threads = _boot(spec, work / f"try{attempt}", deadline, q)
        except GuestFailed as exc:
            if not _kvm_retry(exc, state):
                raise
            continue
        try:
            g.wait_event("RTVM:BOOTED", boot_s)
            return body(g, threads)
        except GuestFailed as exc:
            if not _kvm_retry(exc, state):
                raise
        finally:
            g.stop()
    raise RunFailed("the guest could not be started (see the messages above)")


def _kvm_retry(exc: GuestFailed, state: _AccelState) -> bool:
    """After a KVM failure: drop arch-capabilities once, then fall back to TCG under auto."""
    if state.choice.accel != "kvm" or not exc.kvm_failure:
        return False
    msg = exc.format_message()
    if "MSR" in msg and not state.drop_arch:
        state.drop_arch = True
        state.notes.append("KVM: qemu could not set MSR 0x10a; retried with -arch-capabilities")
        return True
    if state.choice.may_fall_back:
        state.notes.append(f"KVM failed ({msg[:160]}); fell back to TCG")
        console.print("[yellow]warning:[/] KVM could not run the guest; falling back to TCG")
        state.choice = accel_mod.Choice("tcg", "KVM failed at run time", False)
        return True
    return False


def _failed(
    label: str,
    exc: RunFailed,
    base: dict[str, Any],
    rows: list[dict[str, Any]],
    failures: list[str],
    outputs: dict[str, str],
) -> None:
    """A guest run that failed: a row with its error, and the run goes on with the others."""
    msg = exc.format_message()
    if isinstance(exc, GuestFailed):
        outputs[f"{label}/console"] = exc.console_text[-400000:]
        outputs[f"{label}/qemu"] = exc.qemu_text[-50000:]
    console.print(f"[red]failed:[/] {label}: {msg}")
    failures.append(f"{label}: {msg}")
    rows.append({**base, "error": msg})


def _accel_state(requested: str) -> _AccelState:
    choice = accel_mod.choose(requested)
    st = _AccelState(choice)
    if choice.warning:
        console.print(f"[yellow]warning:[/] {choice.warning}")
        st.notes.append(choice.warning)
    return st


def _finish_notes(state: _AccelState, rows: list[dict[str, Any]]) -> list[str]:
    notes = list(state.notes)
    if any(r.get("accelerator") == "tcg" for r in rows):
        notes.append(accel_mod.TCG_NOTE)
    if hostinfo.is_vm():
        notes.append(
            "the host is itself a virtual machine: its own latencies include its hypervisor's"
        )
    return notes


# -- vm-timer ---------------------------------------------------------------------------------
def _timer_spec(
    k: GuestKernel, initrd: Path, params: dict[str, str], opts: GuestOptions, acc: str, drop: bool
) -> GuestSpec:
    return GuestSpec(
        k, initrd, acc, opts.vcpus, opts.mem_mb, dict(params),
        drop_arch_capabilities=drop, name=f"rtvm-{k.release}",
    )  # fmt: skip


def _timer_body(deadline: float, g: QemuGuest, threads: dict[str, Any]) -> Any:
    g.wait_event("RTVM:DONE", deadline)
    g.wait_exit(30)
    return g.result(), g.console_text(), threads, g.spec.accel


def _vm_timer_one(
    k: GuestKernel,
    q: QemuSched,
    load: LoadSpec,
    cfg: cyclictest.CyclictestConfig,
    opts: GuestOptions,
    state: _AccelState,
    work: Path,
) -> tuple[cyclictest.CyclictestResult, str, dict[str, Any], str, float]:
    initrd = initramfs.build(k)
    # under TCG a guest needs about 2x its run time idle, more under load
    boot_s = opts.boot_s(load.active)
    deadline = boot_s + 6.0 * cfg.duration_s + 60
    params = {
        "mode": "timer",
        "duration": str(cfg.duration_s),
        "interval": str(cfg.interval_us),
        "prio": str(cfg.priority),
        "policy": cfg.policy,
        "threads": str(cfg.threads_per_cpu * opts.vcpus),
        "hist": str(cfg.histogram_us),
    }
    t_run = time.monotonic()
    with HostLoad(load, deadline + 30, work / "stress-ng.log"):
        con, text, threads, acc = _run_guest(
            functools.partial(_timer_spec, k, initrd, params, opts),
            work,
            deadline,
            q,
            state,
            boot_s,
            functools.partial(_timer_body, deadline),
        )
    wall = time.monotonic() - t_run
    rc = con.rc("cyclictest")
    if rc != 0:
        err = con.files.get("cyclictest.err", b"").decode("utf-8", "replace")
        raise GuestFailed(f"cyclictest in the guest exited with status {rc}", err or text)
    if "cyclictest.json" in con.files:
        res = cyclictest.parse_json(con.files["cyclictest.json"].decode())
    elif "cyclictest.hist" in con.files:
        res = cyclictest.parse_histogram(con.files["cyclictest.hist"].decode())
    else:
        raise GuestFailed(
            "the guest's results did not cross the serial console intact "
            f"(corrupt: {', '.join(con.corrupt) or 'none'})",
            text,
        )
    return res, text, threads, acc, wall


def run_vm_timer(
    opts: GuestOptions, cfg: cyclictest.CyclictestConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    for tool in ("qemu-system-x86_64", "cyclictest", "busybox", "cpio", "chrt"):
        which(tool)
    if any(s.active for s in opts.loads):
        which("stress-ng")
    state = _accel_state(opts.accel)
    t0 = time.monotonic()
    kernels = _fetch_kernels(opts.kernels)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    outputs: dict[str, str] = {}
    host = _host_base()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rtvm-vm-timer-") as tmp:
        for load in opts.loads:
            for q in opts.qemu:
                for f, k in kernels.items():
                    label = f"{f}-{q.label()}-{load.label}"
                    console.print(
                        f"[bold]vm-timer[/] guest {k.release} ({state.choice.accel}), "
                        f"qemu threads {q.label()}, host load {load.label}, "
                        f"cyclictest {cfg.duration_s} s"
                    )
                    work = Path(tmp) / results.slug(label)
                    base = {
                        "target": "guest",
                        **host,
                        "guest_kernel": k.release,
                        "guest_preemption": k.preemption,
                        "accelerator": state.choice.accel,
                        "load": load.label,
                        "qemu_sched": q.label(),
                        "vcpus": opts.vcpus,
                        "interval_us": cfg.interval_us,
                    }
                    try:
                        res, text, threads, acc, wall = _vm_timer_one(
                            k, q, load, cfg, opts, state, work
                        )
                    except (GuestFailed, ToolFailed) as exc:
                        _failed(label, exc, base, rows, failures, outputs)
                        continue
                    base.update(accelerator=acc, threads=len(res.threads), wall_s=round(wall, 1))
                    rows.append(results.latency_row(base, res.stats()))
                    key = results.slug(label)
                    arrays.update(results.hist_arrays(key, res.histogram(), res.overflows()))
                    outputs[f"{label}/console"] = text[-400000:]
                    outputs[f"{label}/cyclictest.json"] = res.raw_json or ""
                    outputs[f"{label}/qemu_threads"] = json.dumps(threads)
    env = result_envelope(
        "measure-vm-timer",
        opts.seed,
        float(cfg.duration_s),
        rows,
        [],
        host=hostinfo.host_block(
            state.choice.accel, ("qemu-system-x86_64", "cyclictest", "stress-ng")
        ),
        scenario={
            "guest_kernels": {f: f"{k.package} {k.deb_version}" for f, k in kernels.items()},
            "accel_requested": opts.accel,
            "vcpus": opts.vcpus,
            "qemu_sched": [q.label() for q in opts.qemu],
            "loads": [s.name for s in opts.loads],
            "cyclictest": {
                "interval_us": cfg.interval_us,
                "priority": cfg.priority,
                "policy": cfg.policy,
                "duration_s": cfg.duration_s,
                "histogram_us": cfg.histogram_us,
            },
        },
        combinations=_combinations(list(opts.kernels)),
        ci_method=stats.CI_METHOD,
        notes=_finish_notes(state, rows),
        wall_s=round(time.monotonic() - t0, 1),
    )
    if failures:
        env["failures"] = failures
    return env, arrays, outputs


def _fetch_kernels(flavours: Sequence[str]) -> dict[str, GuestKernel]:
    out = {}
    for f in flavours:
        console.print(f"guest kernel {f}: {kernel.FLAVOURS[f]} (cache {kernel.cache_dir()})")
        out[f] = kernel.fetch(f)
    return out


# -- vm-rr ------------------------------------------------------------------------------------
def _tap_setup(tag: str) -> tuple[str, str, str]:
    """A namespace with a tap device: (ns, tap, guest address)."""
    ns = netns.create(tag)
    tap = "rvtap0"
    ip = which("ip")
    host_addr, guest_addr = netns.next_subnet()
    for args in (
        ["tuntap", "add", "dev", tap, "mode", "tap"],
        ["addr", "add", f"{host_addr}/30", "dev", tap],
        ["link", "set", tap, "up"],
    ):
        run_tool([ip, "-n", ns, *args], timeout=15, tool="ip")
    return ns, tap, guest_addr


@dataclass(frozen=True)
class _RrRun:
    kernel: GuestKernel
    initrd: Path
    q: QemuSched
    driver: str
    nheavy: int
    net: str
    idx: int
    work: Path


def _rr_spec(
    k: GuestKernel,
    initrd: Path,
    params: dict[str, str],
    netdev: list[str],
    ns: str | None,
    opts: GuestOptions,
    acc: str,
    drop: bool,
) -> GuestSpec:
    return GuestSpec(
        k, initrd, acc, opts.vcpus, opts.mem_mb, dict(params), list(netdev), ns=ns,
        drop_arch_capabilities=drop, name=f"rtvm-{k.release}",
    )  # fmt: skip


def _rr_body(
    run: _RrRun,
    rr: RrOptions,
    opts: GuestOptions,
    client_ns: str | None,
    target: str,
    port: int,
    g: QemuGuest,
    threads: dict[str, Any],
) -> Any:
    g.wait_event("RTVM:READY", opts.boot_s())
    with HeavyReceivers(
        run.nheavy, run.net == "tap", rr.duration_s + 1, rr.heavy_party, run.work, f"{run.idx}"
    ) as heavy:
        out = run_client(run.driver, client_ns, target, port, rr, run.work, rr.seed + run.idx)
        heavy.collect()
    return out, heavy, g.console_text(), g.spec.accel, threads


def _vm_rr_one(
    run: _RrRun, rr: RrOptions, opts: GuestOptions, state: _AccelState
) -> tuple[Any, HeavyReceivers, str, str, dict[str, Any]]:
    """One vm-rr point: (client result, heavy receivers, console text, accelerator, the qemu
    threads' placement)."""
    hold = rr.duration_s + 40
    deadline = opts.boot_s() + hold + 30
    params = {
        "mode": "rr",
        "port": "11111",
        "hold": str(hold),
        "modules": ",".join(run.kernel.load_order()),
    }
    srv = rr.server.sched
    if srv is not None and srv.realtime:
        params.update(server="fifo", prio=str(srv.priority))
    ns = None
    try:
        if run.net == "tap":
            ns, tap, guest_addr = _tap_setup(f"vm{run.idx}")
            params["ip"] = f"{guest_addr}/30"
            netdev = ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off"]
            client_ns, target, port = ns, guest_addr, 11111
        else:
            port = free_port()
            params.update(ip="10.0.2.15/24", gw="10.0.2.2")
            netdev = ["-netdev", f"user,id=n0,hostfwd=udp:127.0.0.1:{port}-:11111"]
            client_ns, target = None, "127.0.0.1"
        netdev += ["-device", "virtio-net-pci,netdev=n0"]
        return _run_guest(
            functools.partial(_rr_spec, run.kernel, run.initrd, params, netdev, ns, opts),
            run.work,
            deadline,
            run.q,
            state,
            opts.boot_s(),
            functools.partial(_rr_body, run, rr, opts, client_ns, target, port),
        )
    finally:
        if ns:
            netns.delete(ns)


def _guest_server_sched(srv: sched.Sched | None, console_text: str) -> str:
    if srv is None or not srv.realtime:
        return "default"
    applied = console_mod.parse(console_text).event("RTVM:SCHED") is not None
    return f"{srv} (in guest)" if applied else f"{srv} (NOT applied in guest)"


def run_vm_rr(
    opts: GuestOptions, rr: RrOptions, net: str
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    for tool in ("qemu-system-x86_64", "sockperf", "busybox", "cpio", "chrt"):
        which(tool)
    if any(rr.heavy):
        which("iperf3")
    if net == "tap":
        netns.require_root()
        if not Path("/dev/net/tun").exists():
            raise RunFailed("--net tap needs /dev/net/tun; use --net user")
    state = _accel_state(opts.accel)
    t0 = time.monotonic()
    kernels = _fetch_kernels(opts.kernels)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    outputs: dict[str, str] = {}
    host = _host_base()
    failures: list[str] = []
    idx = 0
    srv = rr.server.sched
    with tempfile.TemporaryDirectory(prefix="rtvm-vm-rr-") as tmp:
        for q in opts.qemu:
            for f, k in kernels.items():
                initrd = initramfs.build(k)
                for nheavy in rr.heavy:
                    for driver in rr.drivers:
                        idx += 1
                        label = f"{f}-{q.label()}-{driver}-heavy{nheavy}"
                        work = Path(tmp) / results.slug(label)
                        work.mkdir(parents=True)
                        console.print(
                            f"[bold]vm-rr[/] guest {k.release} ({state.choice.accel}), {driver} "
                            f"over {net}, qemu threads {q.label()}, {nheavy} heavy receiver(s)"
                        )
                        run = _RrRun(k, initrd, q, driver, nheavy, net, idx, work)
                        try:
                            (rtt, rec, counts, text), heavy, ctext, acc, threads = _vm_rr_one(
                                run, rr, opts, state
                            )
                        except (GuestFailed, ToolFailed) as exc:
                            fail_base = {
                                "target": "guest",
                                **host,
                                "guest_kernel": k.release,
                                "accelerator": state.choice.accel,
                                "net": net,
                                "driver": driver,
                                "heavy_receivers": nheavy,
                                "qemu_sched": q.label(),
                            }
                            _failed(label, exc, fail_base, rows, failures, outputs)
                            continue
                        outputs[f"{label}/qemu_threads"] = json.dumps(threads)
                        outputs[f"{label}/client"] = text[-50000:]
                        outputs[f"{label}/console"] = ctext[-100000:]
                        outputs.update({f"{label}/{a}": b for a, b in heavy.outputs().items()})
                        base = {
                            "target": "guest",
                            **host,
                            "guest_kernel": k.release,
                            "guest_preemption": k.preemption,
                            "accelerator": acc,
                            "net": net,
                            "driver": driver,
                            "heavy_receivers": nheavy,
                            "heavy_gbps": heavy.gbps(),
                            "qemu_sched": q.label(),
                            "client_sched": rr.client.describe(),
                            "server_sched": _guest_server_sched(srv, ctext),
                        }
                        rows.append(rr_row(base, rtt, rec, counts))
                        key = results.slug(label)
                        arrays[f"{key}_rtt_us"] = rtt
                        if rec is not None:
                            arrays[f"{key}_records"] = rec
    notes = _finish_notes(state, rows) + rr_notes(rr.drivers)
    notes.append("the guest's responder is sockperf server (the probe speaks its header)")
    env = result_envelope(
        "measure-vm-rr",
        opts.seed,
        float(rr.duration_s),
        rows,
        [],
        host=hostinfo.host_block(state.choice.accel, ("qemu-system-x86_64", "sockperf", "iperf3")),
        scenario={
            "guest_kernels": {f: f"{k.package} {k.deb_version}" for f, k in kernels.items()},
            "accel_requested": opts.accel,
            "net": net,
            "qemu_sched": [q.label() for q in opts.qemu],
            "rr": scenario_dict(rr),
        },
        combinations=_combinations(list(opts.kernels)),
        ci_method=stats.CI_METHOD,
        notes=notes,
        wall_s=round(time.monotonic() - t0, 1),
    )
    if failures:
        env["failures"] = failures
    return env, arrays, outputs
