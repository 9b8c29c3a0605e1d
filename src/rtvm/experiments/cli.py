"""``rtvm reproduce NAME``: the published experiments, printed beside the published figures."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvm.cli_support import (
    Interrupted,
    RtvmGroup,
    RunFailed,
    command_epilog,
    common_options,
    console,
    emit_json,
    fail_input,
    result_envelope,
)
from rtvm.kernel.profile import load_profile
from rtvm.report.tables import segments_table


@click.group(cls=RtvmGroup, epilog=command_epilog("rtvm reproduce simple-rt --quick"))
def reproduce() -> None:
    """Reproduce a published experiment with the model."""


def _fmt(v: float | None, pub: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if pub is None else f"{v:.1f} ({pub:.1f})"


@reproduce.command(
    "simple-rt",
    epilog=command_epilog(
        "rtvm reproduce simple-rt",
        "rtvm reproduce simple-rt --quick --seed 2 --out out/simple-rt",
        "rtvm reproduce simple-rt --json > simple-rt.json",
    ),
)
@common_options
@click.option(
    "--duration",
    type=click.FloatRange(min=0.05, max=3600),
    default=None,
    help="Simulated seconds per method (default 30, --quick 3).",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Cost profile TOML (default: the embedded testbed profile).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Parallel processes (default: one per free core).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Simulate every method again, replacing those kept under --out by an earlier run.",
)
def simple_rt(
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
    duration: float | None,
    profile: Path | None,
    jobs: int | None,
    fresh: bool,
) -> None:
    """The four RT methods on the testbed: latency, heavy throughput, CPU (Table 3, Figs 6-8).

    Model figures are printed beside the published ones (Garcia et al. 2018), each cell
    "model / published".

    With --out, each method's result is kept under OUT/checkpoints as soon as it finishes; the
    same command run again (same seed, length, profile and rtvm) reuses those instead of
    simulating them again, so an interrupted run loses nothing. --fresh simulates them again.
    """
    from rtvm.experiments import simple_rt as exp

    dur = duration or (exp.QUICK_S if quick else exp.FULL_S)
    try:
        prof = load_profile(profile)
    except (ValueError, OSError) as e:
        fail_input(f"--profile {profile}: {e}", "a cost profile TOML like src/rtvm/profiles/")
    ckpt = out / "checkpoints" if out is not None else None
    kept: list[str] = []
    finished: list[str] = []
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"simple-rt: 4 methods x {dur:g} s simulated", total=4)

        def done(m: str, r: object) -> None:
            progress.advance(task)
            finished.append(m)
            progress.console.log(f"{m} done" + (f" (kept in {ckpt})" if ckpt else ""))

        def reused(m: str, r: object) -> None:
            progress.advance(task)
            kept.append(m)
            progress.console.log(f"{m} reused from {ckpt} (same key: seed, length, profile, rtvm)")

        try:
            results = exp.run(
                dur,
                seed,
                profile=str(profile) if profile else None,
                jobs=jobs,
                on_done=done,
                checkpoints=ckpt,
                reuse=not fresh,
                on_reused=reused,
            )
        except KeyboardInterrupt:
            raise Interrupted(_kept_note(out, ckpt, kept + finished)) from None
        except OSError as e:  # a checkpoint that cannot be written: say which, do not go on
            raise RunFailed(f"cannot keep a finished method under --out {out}: {e}") from None
    wall = time.perf_counter() - t0
    rows = [r.row for r in results.values()]
    published = exp.published_rows()
    env = result_envelope(
        "simple-rt", seed, dur, rows, published,
        scenario={"testbed": "garcia2018", "methods": list(results)},
        profile_sha256=prof.sha256, wall_s=round(wall, 2), reused_methods=kept,
        details={m: r.extra for m, r in results.items()},
    )  # fmt: skip
    if out is not None:
        for p in exp.write_outputs(out, env, results):
            console.log(f"wrote {p}")
    if as_json:
        emit_json(env)
        return
    pub = {p["method"]: p for p in published}
    t = Table(title=f"simple-rt: model (published), seed {seed}, {dur:g} s per method")
    for col in (
        "method",
        "mean us",
        "p99 us",
        "SD us",
        "p99.9 us",
        "heavy Gbps",
        "CPU %",
        "CPU % by CPU",
    ):
        t.add_column(col, justify="right" if col != "method" else "left", no_wrap=True)
    for r in rows:
        pr = pub.get(r["method"], {})
        t.add_row(
            r["method"],
            _fmt(r["mean_us"], pr.get("mean_us")),
            _fmt(r["p99_us"], pr.get("p99_us")),
            _fmt(r["sd_us"], pr.get("sd_us")),
            _fmt(r["p999_us"]),
            _fmt(r["heavy_gbps"], pr.get("heavy_gbps")),
            f"{r['cpu_util_pct']:.0f}",
            " ".join(f"{x:.0f}" for x in r["cpu_util_pct_by_cpu"]),
        )
    click.echo()
    import shutil

    from rich.console import Console

    wide = Console(width=max(110, shutil.get_terminal_size((110, 24)).columns))
    wide.print(t)
    wide.print(segments_table({m: r.extra["segments"] for m, r in results.items()}))
    for r in rows:
        if r["lost"] > max(2, r["samples"] // 100):
            click.echo(
                f"warning: {r['method']}: {r['lost']} of {r['samples'] + r['lost']} "
                "requests got no response: the figures cover the answered ones only",
                err=True,
            )
    reuse = f" ({', '.join(kept)} reused from {ckpt})" if kept else ""
    click.echo(
        f"published: Garcia, Shinjo, Pu, IEEE Access 2018; outsourcing needs 32% less "
        f"CPU than threaded. Wall time {wall:.1f} s{reuse}."
    )


def _kept_note(out: Path | None, ckpt: Path | None, kept: list[str]) -> str:
    """What an interrupted simple-rt leaves behind, and how to go on from it."""
    if ckpt is None:
        return "nothing kept (with --out DIR each finished method is kept, and a re-run goes on)"
    if not kept:
        return f"no method had finished; a re-run with --out {out} starts over"
    return f"{', '.join(kept)} kept in {ckpt}; the same command again simulates only the rest"
