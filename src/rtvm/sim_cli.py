"""``rtvm sim SCENARIO.toml``: run any scenario on the model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from rtvm.cli_support import (
    FiniteFloatRange,
    OutDir,
    OutFile,
    RunFailed,
    UserError,
    atomic_write_json,
    command_epilog,
    console,
    emit_json,
    print_slowest,
    read_profile_option,
    result_envelope,
    warn_lost,
    wide_console,
)


def _write_outputs(out: Path, env: dict[str, Any], method: str, slowest: list[Any]) -> None:
    """results.json and, when the run kept its slowest responses (--slowest), the slowest one
    as a timeline (fig_slowest.png, as ``rtvm reproduce simple-rt --slowest --out`` draws it)."""
    path = out / "results.json"
    try:
        console.log(f"wrote {atomic_write_json(path, env)}")
        if slowest:
            from rtvm.report.plots import slowest_timelines

            path = out / "fig_slowest.png"
            console.log(f"wrote {slowest_timelines({method: slowest[0]}, path)}")
    except OSError as e:
        raise RunFailed(f"cannot write {path}: {e.strerror or e}") from None


@click.command(
    epilog=command_epilog(
        "rtvm sim examples/simple-rt-threaded.toml",
        "rtvm sim examples/whatif-6.1-rt.toml --duration 2 --trace out/trace.json",
        "rtvm sim examples/whatif-halt-polling.toml --json",
        "rtvm sim examples/simple-rt-threaded.toml --duration 3 --slowest 2",
    )
)
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Override the scenario's seed."
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0.01, max=3600),
    default=None,
    help="Override the scenario's simulated seconds.",
)
@click.option(
    "--out",
    type=OutDir(),
    default=None,
    help="Directory for results.json and, with --slowest, fig_slowest.png (written atomically).",
)
@click.option(
    "--trace",
    "trace",
    type=OutFile(),
    default=None,
    help="Write a Perfetto (Chrome trace-event JSON) trace of the run here.",
)
@click.option(
    "--slowest",
    type=click.IntRange(min=1, max=20),
    default=None,
    help="Keep the K slowest responses after the warm-up, each with what ran on the host "
    "while it was in flight (a flight recorder: fixed memory, any length; not with --trace).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def sim(
    scenario: Path,
    seed: int | None,
    duration: float | None,
    out: Path | None,
    trace: Path | None,
    slowest: int | None,
    as_json: bool,
) -> None:
    """Simulate a scenario: host, kernel generation, method, VMs, workloads, duration, seed."""
    from rtvm.experiments.runner import run_method
    from rtvm.scenario import load_scenario, profile_path

    if trace is not None and slowest is not None:
        raise UserError(
            "--slowest with --trace; allowed: one of them (--slowest keeps only "
            "the slow responses' part of the trace)"
        )

    try:
        sc = load_scenario(scenario)
    except ValueError as e:
        lines = str(e).splitlines()
        for line in lines[:-1]:  # one line per problem; the last one ends the run (exit 2)
            print(f"rtvm: error: {line}", file=sys.stderr)
        raise UserError(lines[-1]) from None
    profile = profile_path(sc, scenario)
    if profile is not None:  # its problems are the scenario's, named before any run
        read_profile_option(
            Path(profile),
            f"{scenario}: profile.path",
            "a readable cost profile TOML (a relative path is read from the scenario's directory)",
            given=sc.profile.path,
        )
    dur = duration or sc.duration_s
    sd = sc.seed if seed is None else seed
    rr = sc.workload.rr
    hcpus = sc.irq.heavy_nic_cpus
    try:
        res = run_method(
            sc.method,
            dur,
            sd,
            profile,
            sc.profile.overrides or None,
            warmup_s=min(sc.warmup_s, dur / 2),
            trace_path=str(trace) if trace else None,
            rr={
                "interarrival_min_ns": rr.interarrival_min_us * 1000,
                "interarrival_max_ns": rr.interarrival_max_us * 1000,
                "request_bytes": rr.request_bytes,
                "response_bytes": rr.response_bytes,
            },
            testbed={
                "ncpus": sc.host.cpus,
                "generation": sc.host.generation,
                "halt_poll_ns": sc.host.halt_poll_ns,
                "event_idx": sc.host.event_idx,
                "hz": sc.host.hz,
                "nohz_full": None if sc.host.nohz_full is None else tuple(sc.host.nohz_full),
                "heavy": sc.workload.heavy.receivers,
                "rt_nic_cpu": sc.irq.rt_nic_cpu,
                # a tuple, as build_testbed declares (the compiled build checks it)
                "heavy_nic_cpus": None if hcpus is None else tuple(hcpus),
                "rt_nic_rx_usecs": sc.irq.rt_nic_rx_usecs,
                "heavy_nic_rx_usecs": sc.irq.heavy_nic_rx_usecs,
                "guest_irq_vcpu": sc.irq.rt_guest_irq_vcpu,
            },
            idle_keep=sc.compress_idle,
            slowest=slowest or 0,
        )
    except (KeyError, ValueError) as e:
        raise UserError(f"{scenario}: {e}") from None
    except OSError as e:  # the trace's file, checked writable before the run
        raise RunFailed(f"cannot write the trace {trace}: {e.strerror or e}") from None
    row = {"scenario": sc.name, **res.row}
    env = result_envelope(
        sc.name,
        sd,
        dur,
        [row],
        [],
        scenario=sc.model_dump(),
        profile_sha256=res.extra["profile_sha256"],
        wall_s=round(res.wall_s, 2),
        details=res.extra,
    )
    if out is not None:
        _write_outputs(out, env, sc.method, res.extra.get("slowest", []))
    if trace is not None:
        console.log(f"wrote {trace} (open it at ui.perfetto.dev)")
    warn_lost([{**res.row, "method": sc.method}], f" ({dur:g} s)")
    if as_json:
        emit_json(env)
        return
    length = (
        f"{dur:g} s, idle compressed 1/{sc.compress_idle}"
        if sc.compress_idle > 1
        else f"{dur:g} s simulated"
    )
    t = Table(title=f"{sc.name}: {sc.method}, seed {sd}, {length}")
    for col in (
        "mean us",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "SD us",
        "samples",
        "heavy Gbps",
        "CPU %",
    ):
        t.add_column(col, justify="right")
    r = res.row
    t.add_row(
        *(
            f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k])
            for k in (
                "mean_us",
                "p50_us",
                "p99_us",
                "p999_us",
                "max_us",
                "sd_us",
                "samples",
                "heavy_gbps",
            )
        ),
        " ".join(f"{x:.0f}" for x in r["cpu_util_pct_by_cpu"]),
    )
    from rtvm.report.tables import (
        segments_table,
        stages_table,
        wakeup_latency_table,
    )

    wide = wide_console()
    wide.print(t)
    wide.print(segments_table({sc.method: res.extra["segments"]}))
    wide_console(132).print(stages_table(sc.method, res.extra["stages"]))
    wide.print(wakeup_latency_table(sc.method, res.extra["wakeup_latency"]))
    print_slowest(sc.method, res.extra.get("slowest", []))
