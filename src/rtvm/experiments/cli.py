"""``rtvm reproduce NAME``: the published experiments, printed beside the published figures."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvm.cli_support import (
    FiniteFloatRange,
    Interrupted,
    RtvmGroup,
    RunFailed,
    atomic_write_json,
    check_compress_idle,
    command_epilog,
    common_options,
    compress_idle_option,
    console,
    emit_json,
    fail_input,
    print_slowest,
    read_profile_option,
    result_envelope,
    signals_deferred,
    warn_lost,
    wide_console,
)
from rtvm.experiments.fidelity import (
    across_seeds,
    check_simple_rt,
    verdict_line,
    verdict_line_across_seeds,
)
from rtvm.report.tables import (
    fidelity_seeds_table,
    fidelity_table,
    seed_spread_table,
    segments_table,
    stages_table,
    wakeup_latency_table,
)

#: at most this many seeds in one --seeds run
MAX_SEEDS = 100

T = TypeVar("T")


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
        "rtvm reproduce simple-rt --seeds 1-5 --out out/seeds",
        "rtvm reproduce simple-rt --quick --slowest 2",
    ),
)
@common_options
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0.05, max=3600),
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
@click.option(
    "--seeds",
    "seeds_spec",
    metavar="LIST",
    default=None,
    help="Run every method under several seeds (e.g. 1-5 or 1,3,7) and show how much each "
    "figure moves and on how many seeds each bar holds; instead of --seed.",
)
@click.option(
    "--stages",
    "show_stages",
    is_flag=True,
    help="Also print each method's response time stage by stage along its path, and which "
    "stages its slowest 1% (at or above the p99) lose time in (always in the JSON's "
    "details.METHOD.stages).",
)
@click.option(
    "--slowest",
    type=click.IntRange(min=1, max=20),
    default=None,
    metavar="K",
    help="Also print each method's K slowest responses after the warm-up, each with what ran "
    "on every CPU and which thread waited for which lock while it was in flight (a flight "
    "recorder: the same figures; the JSON's details.METHOD.slowest).",
)
@compress_idle_option
@click.pass_context
def simple_rt(
    ctx: click.Context,
    seed: int,
    quick: bool,
    out: Path | None,
    as_json: bool,
    duration: float | None,
    profile: Path | None,
    jobs: int | None,
    fresh: bool,
    seeds_spec: str | None,
    show_stages: bool,
    slowest: int | None,
    compress_idle: int,
) -> None:
    """The four RT methods on the testbed: latency, heavy throughput, CPU (Table 3, Figs 6-8).

    Model figures are printed beside the published ones (Garcia et al. 2018), each cell
    "model / published".

    With --out, each method's result is kept under OUT/checkpoints as soon as it finishes; the
    same command run again (same seed, length, profile and rtvm) reuses those instead of
    simulating them again, so an interrupted run loses nothing. --fresh simulates them again.

    After the table, the fidelity bars (DESIGN.md section 8): how far each cell is from the
    published one and whether that is within its bar. With --seeds, the table holds each
    figure's mean over the seeds, then how far apart the seeds are and on how many seeds each
    bar holds; with --out, OUT/seed-N/ holds each seed's results as a single-seed run writes
    them, and OUT/results.json the summary.

    --slowest K explains the tails: each method's K slowest responses after the warm-up, with
    what ran on every CPU and which thread waited for which lock while each was in flight.

    --compress-idle N is for sweeps: it simulates only part of the heavy flows' steady state
    between RT requests (the request paths in full) and says so in the table's title and in
    the JSON's scenario.
    """
    from rtvm.experiments import simple_rt as exp

    dur = duration or (exp.QUICK_S if quick else exp.FULL_S)
    check_compress_idle(compress_idle, dur, "--quick" if quick and not duration else "--duration")
    prof = read_profile_option(profile)
    if fresh and out is None:  # nothing is kept without --out, so nothing would be replaced
        fail_input("--fresh without --out", "--fresh with --out DIR, whose kept runs it replaces")
    if seeds_spec is not None:
        if ctx.get_parameter_source("seed") is not click.core.ParameterSource.DEFAULT:
            fail_input("--seed and --seeds together", "one of them")
        if show_stages:
            fail_input("--stages with --seeds", "--stages with a single --seed")
        if slowest is not None:
            fail_input("--slowest with --seeds", "--slowest with a single --seed")
        seeds = parse_seeds(seeds_spec)
        _simple_rt_seeds(seeds, dur, profile, prof.sha256, out, as_json, jobs, fresh, compress_idle)
        return
    ckpt = out / "checkpoints" if out is not None else None
    kept: list[str] = []
    finished: list[str] = []
    t0 = time.perf_counter()

    def simulate(tick: Callable[[str], None]) -> dict[str, Any]:
        def done(m: str, r: object) -> None:
            finished.append(m)
            tick(f"{m} done" + (f" (kept in {ckpt})" if ckpt else ""))

        def reused(m: str, r: object) -> None:
            kept.append(m)
            tick(f"{m} reused from {ckpt} (same key: seed, length, profile, rtvm)")

        return exp.run(
            dur,
            seed,
            profile=str(profile) if profile else None,
            jobs=jobs,
            on_done=done,
            checkpoints=ckpt,
            reuse=not fresh,
            on_reused=reused,
            idle_keep=compress_idle,
            slowest=slowest or 0,
        )

    results = _with_progress(
        f"simple-rt: {len(exp.PAPER_METHODS)} methods x {dur:g} s simulated",
        len(exp.PAPER_METHODS),
        simulate,
        lambda: _kept_note(out, ckpt, kept + finished),
        out,
    )
    wall = time.perf_counter() - t0
    rows = [r.row for r in results.values()]
    published = exp.published_rows()
    checks = check_simple_rt(rows, published)
    env = result_envelope(
        "simple-rt", seed, dur, rows, published,
        scenario=_scenario(list(results), compress_idle),
        profile_sha256=prof.sha256, wall_s=round(wall, 2), reused_methods=kept,
        fidelity=[c.as_dict() for c in checks],
        details={m: r.extra for m, r in results.items()},
    )  # fmt: skip
    if out is not None:
        write_result_sets(out, [("the results", lambda: exp.write_outputs(out, env, results))])
    if as_json:
        emit_json(env)
        return
    t = _model_table(
        f"simple-rt: model (published), seed {seed}, {dur:g} s per method"
        + _compressed_label(compress_idle),
        rows,
        published,
    )
    click.echo()
    wide = wide_console()
    wide.print(t)
    wide.print(segments_table({m: r.extra["segments"] for m, r in results.items()}))
    if show_stages:
        for m, r in results.items():
            wide_console(132).print(stages_table(m, r.extra["stages"]))
            wide.print(wakeup_latency_table(m, r.extra["wakeup_latency"]))
    for m, r in results.items():
        print_slowest(m, r.extra.get("slowest", []))
    wide_console(132).print(fidelity_table(checks))
    click.echo(verdict_line(checks))
    warn_lost(rows)
    reuse = f" ({', '.join(kept)} reused from {ckpt})" if kept else ""
    click.echo(
        f"published: Garcia, Shinjo, Pu, IEEE Access 2018; outsourcing needs 32% less "
        f"CPU than threaded. Wall time {wall:.1f} s{reuse}."
    )


def _with_progress(
    description: str,
    total: int,
    simulate: Callable[[Callable[[str], None]], T],
    kept_note: Callable[[], str],
    out: Path | None,
) -> T:
    """Run ``simulate(tick)`` under a progress bar on stderr; ``tick(message)`` counts one
    finished method run and logs it. Ctrl-C ends it with what was kept (``kept_note()``), a
    checkpoint that cannot be written with one line."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log or pipe gets the lines, not a bar's remains
    ) as progress:
        task = progress.add_task(description, total=total)

        def tick(message: str) -> None:
            progress.advance(task)
            progress.console.log(message)

        try:
            return simulate(tick)
        except KeyboardInterrupt:
            raise Interrupted(kept_note()) from None
        except OSError as e:  # a checkpoint that cannot be written: say which, do not go on
            raise RunFailed(f"cannot keep a finished method under --out {out}: {e}") from None


def write_result_sets(out: Path, sets: list[tuple[str, Callable[[], list[Path]]]]) -> None:
    """Write each set of result files (``(name, write)``; ``write`` returns the paths) whole.

    A directory must never hold a mix of this run's files and an earlier run's, so Ctrl-C,
    SIGTERM or SIGHUP while a set is written is held until that set is complete; the run then
    ends (as interrupted) saying which sets were written. Every method is kept under --out
    before this, so the same command again writes the rest without simulating. Results that
    cannot be written end the run with one line (exit 1)."""
    written: list[str] = []
    try:
        for name, write in sets:
            with signals_deferred():
                for p in write():
                    console.log(f"wrote {p}")
                written.append(name)  # before a held signal is raised at the block's end
    except OSError as e:
        raise RunFailed(f"cannot write the results under --out {out}: {e}") from None
    except KeyboardInterrupt:
        left = [name for name, _ in sets if name not in written]
        if not left:
            raise Interrupted(f"after the results were written under {out}") from None
        raise Interrupted(
            f"while writing the results under {out}: {', '.join(written) or 'nothing'} "
            f"written, {', '.join(left)} not (the same command again writes them from the "
            "kept methods, without simulating)"
        ) from None


_SEED_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_seeds(spec: str) -> tuple[int, ...]:
    """``1-5``, ``1,3,7`` or ``1-3,9``: the seeds in the order given, each once."""
    allowed = f"seeds >= 0 as a list and ranges, like 1-5 or 1,3,7 (at most {MAX_SEEDS})"
    shown = spec if len(spec) <= 40 else spec[:37] + "..."
    seeds: dict[int, None] = {}  # ordered, and a set
    for raw in spec.split(","):
        part = raw.strip()
        m = _SEED_PART.fullmatch(part)
        if m is None:
            fail_input(f"--seeds {shown!r}: {part[:20]!r} is not a seed or a range", allowed)
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            fail_input(f"--seeds {shown!r}: {part[:20]!r} is not an ascending range", allowed)
        if hi - lo >= MAX_SEEDS:
            fail_input(f"--seeds {shown!r}: more than {MAX_SEEDS} seeds", allowed)
        for s in range(lo, hi + 1):
            seeds[s] = None
        if len(seeds) > MAX_SEEDS:
            fail_input(f"--seeds {shown!r}: more than {MAX_SEEDS} seeds", allowed)
    return tuple(seeds)


def _model_table(title: str, rows: list[dict[str, Any]], published: list[dict[str, Any]]) -> Table:
    """The main table: each method's figures, model (published)."""
    pub = {p["method"]: p for p in published}
    t = Table(title=title)
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
        by_cpu = r.get("cpu_util_pct_by_cpu")
        t.add_row(
            r["method"],
            _fmt(r["mean_us"], pr.get("mean_us")),
            _fmt(r["p99_us"], pr.get("p99_us")),
            _fmt(r["sd_us"], pr.get("sd_us")),
            _fmt(r["p999_us"]),
            _fmt(r["heavy_gbps"], pr.get("heavy_gbps")),
            f"{r['cpu_util_pct']:.0f}",
            " ".join(f"{x:.0f}" for x in by_cpu) if by_cpu else "-",
        )
    return t


def _simple_rt_seeds(
    seeds: tuple[int, ...],
    dur: float,
    profile: Path | None,
    profile_sha256: str,
    out: Path | None,
    as_json: bool,
    jobs: int | None,
    fresh: bool,
    compress_idle: int = 1,
) -> None:
    """simple-rt under several seeds: the seed-mean table, the spread, the bars per seed."""
    from rtvm.experiments import simple_rt as exp

    def seed_dir(s: int) -> Path:
        assert out is not None
        return out / f"seed-{s}"

    kept: list[tuple[str, int]] = []
    finished: list[tuple[str, int]] = []
    n = len(seeds) * len(exp.PAPER_METHODS)
    t0 = time.perf_counter()

    def simulate(tick: Callable[[str], None]) -> dict[int, dict[str, Any]]:
        def done(m: str, s: int, r: object) -> None:
            finished.append((m, s))
            tick(f"{m} seed {s} done" + (" (kept)" if out else ""))

        def reused(m: str, s: int, r: object) -> None:
            kept.append((m, s))
            tick(f"{m} seed {s} reused from {seed_dir(s) / 'checkpoints'}")

        return exp.run_seeds(
            dur,
            seeds,
            profile=str(profile) if profile else None,
            jobs=jobs,
            on_done=done,
            checkpoints=(lambda s: seed_dir(s) / "checkpoints") if out else None,
            reuse=not fresh,
            on_reused=reused,
            idle_keep=compress_idle,
        )

    results = _with_progress(
        f"simple-rt: {len(exp.PAPER_METHODS)} methods x {len(seeds)} seeds x {dur:g} s simulated",
        n,
        simulate,
        lambda: _kept_seeds_note(out, kept + finished, n),
        out,
    )
    wall = time.perf_counter() - t0
    published = exp.published_rows()
    rows_by_seed = {s: [r.row for r in res.values()] for s, res in results.items()}
    checks = {s: check_simple_rt(rows, published) for s, rows in rows_by_seed.items()}
    summary = exp.summarise_seeds(rows_by_seed)
    bars = across_seeds(checks)
    scenario = _scenario(list(exp.PAPER_METHODS), compress_idle)
    env = result_envelope(
        "simple-rt", None, dur,
        [{**r, "seed": s} for s, rows in rows_by_seed.items() for r in rows], published,
        seeds=list(seeds), scenario=scenario, profile_sha256=profile_sha256,
        wall_s=round(wall, 2), reused_methods=[f"{m}@{s}" for m, s in kept],
        summary=summary, fidelity=[b.as_dict() for b in bars],
        fidelity_by_seed={s: [c.as_dict() for c in cs] for s, cs in checks.items()},
        details_by_seed={s: {m: r.extra for m, r in res.items()} for s, res in results.items()},
    )  # fmt: skip
    if out is not None:

        def write_seed(s: int) -> list[Path]:
            one = result_envelope(
                "simple-rt", s, dur, rows_by_seed[s], published, scenario=scenario,
                profile_sha256=profile_sha256,
                reused_methods=[m for m, ks in kept if ks == s],
                fidelity=[c.as_dict() for c in checks[s]],
                details={m: r.extra for m, r in results[s].items()},
            )  # fmt: skip
            return exp.write_outputs(seed_dir(s), one, results[s])

        write_result_sets(
            out,
            [(f"seed-{s}/", functools.partial(write_seed, s)) for s in results]
            + [("results.json", lambda: [atomic_write_json(out / "results.json", env)])],
        )
    if as_json:
        emit_json(env)
        return
    wide = wide_console(132)
    label = _seeds_label(seeds)
    click.echo()
    wide.print(_model_table(
        f"simple-rt: model (published), mean over seeds {label}, {dur:g} s per method"
        + _compressed_label(compress_idle), summary, published,
    ))  # fmt: skip
    wide.print(seed_spread_table(summary))
    wide.print(fidelity_seeds_table(bars))
    click.echo(verdict_line_across_seeds(bars))
    for s, rows in rows_by_seed.items():
        warn_lost(rows, f" (seed {s})")
    click.echo(
        f"published: Garcia, Shinjo, Pu, IEEE Access 2018. {len(seeds)} seeds, wall time "
        f"{wall:.1f} s" + (f" ({len(kept)} method runs reused)." if kept else ".")
    )


def _scenario(methods: list[str], compress_idle: int) -> dict[str, Any]:
    scenario: dict[str, Any] = {"testbed": "garcia2018", "methods": methods}
    if compress_idle > 1:
        scenario["compress_idle"] = compress_idle
    return scenario


def _compressed_label(compress_idle: int) -> str:
    return f", idle compressed 1/{compress_idle}" if compress_idle > 1 else ""


def _seeds_label(seeds: tuple[int, ...]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _kept_seeds_note(out: Path | None, kept: list[tuple[str, int]], total: int) -> str:
    if out is None:
        return "nothing kept (with --out DIR each finished method is kept, and a re-run goes on)"
    if not kept:
        return f"no method had finished; a re-run with --out {out} starts over"
    return (
        f"{len(kept)} of {total} method runs kept under {out}/seed-N/checkpoints; the same "
        "command again simulates only the rest"
    )


def _kept_note(out: Path | None, ckpt: Path | None, kept: list[str]) -> str:
    """What an interrupted simple-rt leaves behind, and how to go on from it."""
    if ckpt is None:
        return "nothing kept (with --out DIR each finished method is kept, and a re-run goes on)"
    if not kept:
        return f"no method had finished; a re-run with --out {out} starts over"
    return f"{', '.join(kept)} kept in {ckpt}; the same command again simulates only the rest"
