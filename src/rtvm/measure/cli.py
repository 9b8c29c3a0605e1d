"""``rtvm measure``: real timer and request/response latency, on the host and in real guests."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from rtvm.cli_support import (
    FiniteFloatRange,
    RunFailed,
    command_epilog,
    common_options,
    console,
    emit_json,
    on_terminate,
)
from rtvm.measure import probe, results


@click.group(
    epilog=command_epilog(
        "rtvm measure timer --duration 10",
        "rtvm measure rr --duration 10",
        "rtvm measure vm-timer --quick",
        "rtvm measure vm-rr --quick",
    )
)
def measure() -> None:
    """Measure real latency: cyclictest and a UDP request/response probe, on this host and
    inside guests that rtvm boots with qemu. Results use the simulator's JSON schema."""


@contextlib.contextmanager
def _guarded() -> Iterator[None]:
    """Children and namespaces are cleaned up on exit, errors, Ctrl-C and SIGTERM."""
    from rtvm.measure import netns, tools

    old = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield
    finally:
        try:
            tools.cleanup_children()
            netns.cleanup_all()
        finally:
            signal.signal(signal.SIGTERM, old)


def _finish(
    experiment: str,
    out: Path | None,
    as_json: bool,
    run: Callable[[], tuple[dict[str, Any], dict[str, Any], dict[str, str]]],
    label_cols: tuple[str, ...],
    extra_cols: tuple[str, ...] = (),
    title: str = "",
) -> None:
    with _guarded():
        env, arrays, outputs = run()
    out_dir = out if out is not None else results.default_out(experiment)
    paths = results.write_results(out_dir, experiment, env, arrays, outputs)
    results.print_table(title or experiment, env["rows"], label_cols, extra_cols)
    for note in env.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"results: {paths[0]}")
    if as_json:
        emit_json(env)
    failures = env.get("failures") or []
    if failures:
        raise RunFailed(
            f"{len(failures)} of {len(env['rows'])} runs failed (their rows carry the error; "
            f"the others are in {paths[0]}); first: {failures[0]}"
        )


def _loads(values: tuple[str, ...], default: tuple[str, ...]) -> list[Any]:
    from rtvm.measure import stress

    specs = [stress.parse_load(v) for v in (values or default)]
    for s in specs:
        stress.validate(s)
    return specs


# -- timer ------------------------------------------------------------------------------------
def cyclictest_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """cyclictest's own options, the same for the host (timer) and the guest (vm-timer)."""
    f = click.option(
        "--histogram",
        "histogram_us",
        type=click.IntRange(10, 1_000_000),
        default=100000,
        show_default=True,
        help="Histogram range in us (cyclictest -h); samples above it are overflows.",
    )(f)
    f = click.option(
        "--policy",
        type=click.Choice(["fifo", "rr", "other"]),
        default="fifo",
        show_default=True,
        help="Scheduling policy of the measuring threads.",
    )(f)
    f = click.option(
        "--priority",
        type=click.IntRange(1, 99),
        default=95,
        show_default=True,
        help="RT priority of the measuring threads (cyclictest -p).",
    )(f)
    return click.option(
        "--interval",
        type=click.IntRange(50, 1_000_000),
        default=1000,
        show_default=True,
        help="Timer interval in us (cyclictest -i).",
    )(f)


@measure.command(
    epilog=command_epilog(
        "rtvm measure timer --duration 10",
        "rtvm measure timer --duration 30 --load none --load stress-ng:kernel --json",
        "rtvm measure timer --interval 200 --priority 90 --threads-per-cpu 2 --histogram 2000",
    )
)
@click.option(
    "--duration",
    type=click.IntRange(1, 86400),
    default=None,
    help="Seconds per run [10; --quick: 5].",
)
@cyclictest_options
@click.option(
    "--threads-per-cpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Measuring threads per CPU, pinned round-robin (cyclictest -t -a).",
)
@click.option("--cpus", default=None, help="CPU list to measure on, like taskset -c [all].")
@click.option(
    "--load",
    "loads",
    multiple=True,
    metavar="SPEC",
    help="Host load during the run: none, stress-ng, stress-ng:kernel or "
    "stress-ng:STRESSOR=N,... Repeat for one row each [none].",
)
@common_options
def timer(
    duration: int | None,
    interval: int,
    priority: int,
    policy: str,
    threads_per_cpu: int,
    cpus: str | None,
    histogram_us: int,
    loads: tuple[str, ...],
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Timer latency of this host with cyclictest, idle or under stress-ng load.

    Statistics come from cyclictest's 1 us histogram: min, mean, p50, p99, p99.9, max, SD,
    samples and overflows, with 95% order-statistic confidence intervals for the percentiles."""
    from rtvm.measure import cyclictest, sched
    from rtvm.measure.timer import EXPERIMENT, run_timer

    cfg = cyclictest.CyclictestConfig(
        interval_us=interval,
        priority=priority,
        policy=policy,
        threads_per_cpu=threads_per_cpu,
        cpus=sched.parse_cpus(cpus, "--cpus"),
        duration_s=duration or (5 if quick else 10),
        histogram_us=histogram_us,
    )
    specs = _loads(loads, ("none",))
    _finish(
        EXPERIMENT,
        out,
        as_json,
        lambda: run_timer(cfg, specs, seed),
        ("target", "load", "preemption", "threads"),
        ("overflows",),
        "host timer latency (cyclictest), us",
    )


# -- rr ---------------------------------------------------------------------------------------
def _party(sched_text: str | None, cpus_text: str | None, who: str) -> Any:
    from rtvm.measure import sched
    from rtvm.measure.rr import Party

    return Party(
        sched.parse_sched(sched_text, f"--{who}-sched") if sched_text else None,
        sched.parse_cpus(cpus_text, f"--{who}-cpus"),
    )


def _schedule(interval: str, rate: float | None) -> Any:
    from rtvm.cli_support import fail_input
    from rtvm.measure.probe import Schedule

    if rate is not None:
        return Schedule(rate_hz=rate)
    a, _, b = interval.partition(":")
    try:
        lo, hi = float(a), float(b or a)
    except ValueError:
        fail_input(
            f"--interval {interval!r} is not LO:HI", "LO:HI in ms, 0.05 <= LO <= HI <= 10000"
        )
    if not 0.05 <= lo <= hi <= 10000:
        fail_input(
            f"--interval {interval!r} out of range", "LO:HI in ms, 0.05 <= LO <= HI <= 10000"
        )
    return Schedule(lo, hi)


def rr_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by rr and vm-rr."""
    opts = [
        click.option(
            "--driver",
            "drivers",
            type=click.Choice(["probe", "sockperf"]),
            multiple=True,
            help="Client/responder pair; repeat for one row each [probe].",
        ),
        click.option(
            "--interval",
            default="1:10",
            show_default=True,
            help="Random inter-arrival time, uniform in LO:HI ms (the paper's 1 to 10 ms).",
        ),
        click.option(
            "--rate",
            type=FiniteFloatRange(0.1, 20000),
            default=None,
            help="Fixed request rate per second instead of random inter-arrivals.",
        ),
        click.option(
            "--size",
            type=click.IntRange(probe.MIN_SIZE, probe.MAX_SIZE),
            default=64,
            show_default=True,
            help="Request size in bytes.",
        ),
        click.option(
            "--heavy",
            type=click.IntRange(0, 16),
            multiple=True,
            help="Heavy receivers (iperf3 streams) beside the RT server; repeat for one "
            "row each [0].",
        ),
    ]
    for who in ("client", "server", "heavy"):
        opts.append(
            click.option(
                f"--{who}-sched",
                default=None,
                metavar="POLICY[:PRIO]",
                help=f"Scheduling of the {who} (chrt): other, fifo:PRIO, rr:PRIO, batch, idle.",
            )
        )
        opts.append(
            click.option(
                f"--{who}-cpus",
                default=None,
                metavar="LIST",
                help=f"CPUs of the {who} (taskset -c).",
            )
        )
    for o in reversed(opts):
        f = o(f)
    return f


@measure.command(
    epilog=command_epilog(
        "rtvm measure rr --duration 10",
        "rtvm measure rr --net netns --driver probe --driver sockperf --heavy 0 --heavy 2",
        "rtvm measure rr --server-sched fifo:80 --server-cpus 1 --heavy 2 --heavy-cpus 1",
    )
)
@click.option(
    "--duration",
    type=click.IntRange(1, 86400),
    default=None,
    help="Seconds per row [10; --quick: 5].",
)
@click.option(
    "--net",
    type=click.Choice(["loopback", "netns"]),
    default="loopback",
    show_default=True,
    help="Loopback, or namespaces rtvm creates (ip netns + veth; needs root).",
)
@rr_options
@common_options
def rr(
    duration: int | None,
    net: str,
    drivers: tuple[str, ...],
    interval: str,
    rate: float | None,
    size: int,
    heavy: tuple[int, ...],
    client_sched: str | None,
    client_cpus: str | None,
    server_sched: str | None,
    server_cpus: str | None,
    heavy_sched: str | None,
    heavy_cpus: str | None,
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Request/response latency over UDP on this host (rtvm's probe or sockperf ping-pong),
    optionally with heavy receivers and per-party priorities and CPUs."""
    from rtvm.measure.rr import EXPERIMENT, RrOptions, run_rr

    opts = RrOptions(
        drivers=drivers or ("probe",),
        net=net,
        duration_s=duration or (5 if quick else 10),
        schedule=_schedule(interval, rate),
        size=size,
        heavy=heavy or (0,),
        client=_party(client_sched, client_cpus, "client"),
        server=_party(server_sched, server_cpus, "server"),
        heavy_party=_party(heavy_sched, heavy_cpus, "heavy"),
        seed=seed,
    )
    _finish(
        EXPERIMENT,
        out,
        as_json,
        lambda: run_rr(opts),
        ("net", "driver", "heavy_receivers", "server_sched"),
        ("lost", "heavy_gbps"),
        "host request/response round trip (rtt), us",
    )


# -- guests -----------------------------------------------------------------------------------
def guest_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by vm-timer and vm-rr."""
    opts = [
        click.option(
            "--guest-kernel",
            "guest_kernels",
            type=click.Choice(["stock", "rt"]),
            multiple=True,
            help="Guest kernel: stock (linux-image-amd64) or rt (linux-image-rt-amd64); "
            "repeat for both [both; vm-rr --quick: stock].",
        ),
        click.option(
            "--accel",
            type=click.Choice(["auto", "kvm", "tcg"]),
            default="auto",
            show_default=True,
            help="KVM where it works, else TCG with a warning (auto); or force one.",
        ),
        click.option(
            "--qemu-sched",
            "qemu_scheds",
            multiple=True,
            metavar="POLICY[:PRIO]",
            help="Host-side policy of qemu's vCPU threads (main loop one priority above); "
            "repeat for one row each [other, fifo:80; --quick: other].",
        ),
        click.option(
            "--qemu-cpus", default=None, metavar="LIST", help="Host CPUs for the vCPU threads."
        ),
        click.option(
            "--vcpus", type=click.IntRange(1, 64), default=1, show_default=True, help="Guest CPUs."
        ),
        click.option(
            "--mem",
            type=click.IntRange(128, 65536),
            default=512,
            show_default=True,
            help="Guest memory in MiB.",
        ),
        click.option(
            "--boot-timeout",
            type=FiniteFloatRange(5, 3600),
            default=None,
            help="Seconds the guest may take to boot (and to answer) before it is killed "
            "[90; under host load 300].",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _qemu_scheds(values: tuple[str, ...], cpus: str | None, quick: bool) -> tuple[Any, ...]:
    from rtvm.measure import sched
    from rtvm.measure.guest.run import QemuSched

    c = sched.parse_cpus(cpus, "--qemu-cpus")
    vals = values or (("other",) if quick else ("other", "fifo:80"))
    out = []
    for v in vals:
        s = sched.parse_sched(v, "--qemu-sched")
        out.append(QemuSched(s if s.policy != "other" else None, c))
    return tuple(out)


@measure.command(
    "vm-timer",
    epilog=command_epilog(
        "rtvm measure vm-timer --quick",
        "rtvm measure vm-timer --guest-kernel rt --qemu-sched fifo:80 --qemu-cpus 1 --duration 30",
        "rtvm measure vm-timer --load none --load stress-ng:kernel --json --out results/",
    ),
)
@click.option(
    "--duration",
    type=click.IntRange(1, 86400),
    default=None,
    help="Seconds of cyclictest in the guest [10; --quick: 5].",
)
@cyclictest_options
@click.option(
    "--load",
    "loads",
    multiple=True,
    metavar="SPEC",
    help="Host load while the guest runs (as in 'timer'); repeat "
    "[none, stress-ng:kernel; --quick: none].",
)
@guest_options
@common_options
def vm_timer(
    duration: int | None,
    interval: int,
    priority: int,
    policy: str,
    histogram_us: int,
    loads: tuple[str, ...],
    guest_kernels: tuple[str, ...],
    accel: str,
    qemu_scheds: tuple[str, ...],
    qemu_cpus: str | None,
    vcpus: int,
    mem: int,
    boot_timeout: float | None,
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Timer latency inside a real guest: boot a Debian kernel (stock or PREEMPT_RT) with qemu,
    run cyclictest in it, read the results over the serial console. KVM where it works, TCG
    (an emulator: the output says so) where not; every row names its accelerator."""
    from rtvm.measure import cyclictest
    from rtvm.measure.guest.run import GuestOptions, run_vm_timer

    cfg = cyclictest.CyclictestConfig(
        interval_us=interval,
        priority=priority,
        policy=policy,
        duration_s=duration or (5 if quick else 10),
        histogram_us=histogram_us,
    )
    opts = GuestOptions(
        kernels=guest_kernels or ("stock", "rt"),
        accel=accel,
        vcpus=vcpus,
        mem_mb=mem,
        qemu=_qemu_scheds(qemu_scheds, qemu_cpus, quick),
        loads=tuple(_loads(loads, ("none",) if quick else ("none", "stress-ng:kernel"))),
        boot_timeout_s=boot_timeout,
        seed=seed,
    )
    _finish(
        "measure-vm-timer",
        out,
        as_json,
        lambda: run_vm_timer(opts, cfg),
        ("guest_kernel", "accelerator", "load", "qemu_sched"),
        ("overflows", "wall_s"),
        "guest timer latency (cyclictest in the guest), us",
    )


@measure.command(
    "vm-rr",
    epilog=command_epilog(
        "rtvm measure vm-rr --quick",
        "rtvm measure vm-rr --guest-kernel rt --driver probe --driver sockperf --heavy 0 --heavy 2",
        "rtvm measure vm-rr --net user --qemu-sched fifo:80 --server-sched fifo:90",
    ),
)
@click.option(
    "--duration",
    type=click.IntRange(1, 86400),
    default=None,
    help="Seconds per row [10; --quick: 5].",
)
@click.option(
    "--net",
    type=click.Choice(["auto", "tap", "user"]),
    default="auto",
    show_default=True,
    help="tap: a tap device in a namespace rtvm creates (root); user: qemu user-mode "
    "networking with hostfwd on loopback; auto: tap when root.",
)
@rr_options
@guest_options
@common_options
def vm_rr(
    duration: int | None,
    net: str,
    drivers: tuple[str, ...],
    interval: str,
    rate: float | None,
    size: int,
    heavy: tuple[int, ...],
    client_sched: str | None,
    client_cpus: str | None,
    server_sched: str | None,
    server_cpus: str | None,
    heavy_sched: str | None,
    heavy_cpus: str | None,
    guest_kernels: tuple[str, ...],
    accel: str,
    qemu_scheds: tuple[str, ...],
    qemu_cpus: str | None,
    vcpus: int,
    mem: int,
    boot_timeout: float | None,
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Request/response latency into a real guest: sockperf server inside, the probe (or
    sockperf ping-pong) on the host side, over a tap device or qemu user networking.
    --server-sched applies inside the guest (chrt); --server-cpus is not used there."""
    import os

    from rtvm.measure.guest.run import GuestOptions, run_vm_rr
    from rtvm.measure.rr import RrOptions

    if net == "auto":
        net = "tap" if os.geteuid() == 0 and Path("/dev/net/tun").exists() else "user"
    rr = RrOptions(
        drivers=drivers or ("probe",),
        net=net,
        duration_s=duration or (5 if quick else 10),
        schedule=_schedule(interval, rate),
        size=size,
        heavy=heavy or (0,),
        client=_party(client_sched, client_cpus, "client"),
        server=_party(server_sched, server_cpus, "server"),
        heavy_party=_party(heavy_sched, heavy_cpus, "heavy"),
        seed=seed,
    )
    opts = GuestOptions(
        kernels=guest_kernels or (("stock",) if quick else ("stock", "rt")),
        accel=accel,
        vcpus=vcpus,
        mem_mb=mem,
        qemu=_qemu_scheds(qemu_scheds, qemu_cpus, quick),
        boot_timeout_s=boot_timeout,
        seed=seed,
    )
    _finish(
        "measure-vm-rr",
        out,
        as_json,
        lambda: run_vm_rr(opts, rr, net),
        ("guest_kernel", "accelerator", "net", "driver", "heavy_receivers", "qemu_sched"),
        ("lost", "heavy_gbps"),
        "guest request/response round trip (rtt), us",
    )
