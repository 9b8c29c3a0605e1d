"""``rtvm measure``: real timer and request/response latency, on the host and in real guests."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from rtvm.cli_support import command_epilog, common_options, console, emit_json
from rtvm.measure import results


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

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
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


def _loads(values: tuple[str, ...], default: tuple[str, ...]) -> list[Any]:
    from rtvm.measure import stress

    specs = [stress.parse_load(v) for v in (values or default)]
    for s in specs:
        stress.validate(s)
    return specs


# -- timer ------------------------------------------------------------------------------------
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
@click.option(
    "--interval",
    type=click.IntRange(50, 1_000_000),
    default=1000,
    show_default=True,
    help="Timer interval in us (cyclictest -i).",
)
@click.option(
    "--priority",
    type=click.IntRange(1, 99),
    default=95,
    show_default=True,
    help="RT priority of the measuring threads (cyclictest -p).",
)
@click.option(
    "--policy",
    type=click.Choice(["fifo", "rr", "other"]),
    default="fifo",
    show_default=True,
    help="Scheduling policy of the measuring threads.",
)
@click.option(
    "--threads-per-cpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Measuring threads per CPU, pinned round-robin (cyclictest -t -a).",
)
@click.option("--cpus", default=None, help="CPU list to measure on, like taskset -c [all].")
@click.option(
    "--histogram",
    "histogram_us",
    type=click.IntRange(10, 1_000_000),
    default=10000,
    show_default=True,
    help="Histogram range in us (cyclictest -h); samples above it are overflows.",
)
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
