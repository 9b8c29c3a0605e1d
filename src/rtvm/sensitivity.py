"""``rtvm sensitivity``: which cost of the profile moves which cell of the calibration table.

The profile's "estimate" costs come with a cited range, not a measurement, and its "fitted"
ones with a fit; a user who wants to know how far to trust a cell, or what a different host
would change, asks how the cells depend on them. For each chosen cost, the methods run with
that cost alone scaled by ``step`` and by ``1 / step`` (same seed, same length, every other cost
as the profile), and each cell gets its elasticity, the central difference

    e = (ln cell(up) - ln cell(down)) / (ln value(up) - ln value(down)),

taken at the integer values that actually ran, so e = 0.5 says that 10% more of the cost gives
about 5% more of the cell. Both runs are kept in the result (``<cell>_up`` / ``<cell>_down``), so
a cell that does not move monotonically can be seen as such. A cost that a step cannot move (0,
or an integer that rounds back to itself or down to 0) is left out with a note.

It answers a question of the fidelity bars too: a cell the model misses can be reached by a
cost only if that cost moves it (and at what price in the other cells). Elasticities are local
and one cost at a time: they say in which direction and how strongly, not how far.

JSON rows are flat, one per (cost, method): ``cost``, ``status``, ``value``, ``value_up``,
``value_down``, ``method``, then per cell ``<cell>_up``, ``<cell>_down`` (the cell's own key,
with its unit, e.g. ``p99_us_up``) and ``<name>_elasticity`` (no unit: ``mean``, ``p99``,
``sd``, ``heavy_gbps``, ``cpu_util``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from math import log
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtvm.calibrate import (
    CandidateRunner,
    candidate_options,
    profile_source,
)
from rtvm.cli_support import (
    FiniteFloatRange,
    Interrupted,
    OutDir,
    RunFailed,
    atomic_write_json,
    check_compress_idle,
    command_epilog,
    compress_idle_option,
    console,
    emit_json,
    fail_input,
    json_option,
    read_profile_option,
    result_envelope,
    warn_lost,
    wide_console,
)
from rtvm.experiments.published import SIMPLE_RT
from rtvm.kernel.profile import STATUSES, CostProfile

#: the cells whose elasticity is reported: the calibration table's and the CPU figure
CELLS: tuple[str, ...] = ("mean_us", "p99_us", "sd_us", "heavy_gbps", "cpu_util_pct")
#: the methods of the calibration table, in the paper's order (kept here: importing
#: rtvm.methods would load the simulation core for --help)
METHODS: tuple[str, ...] = tuple(r["method"] for r in SIMPLE_RT)
#: costs scaled by default: those without a direct source (an estimate's range, a fit)
DEFAULT_STATUSES: tuple[str, ...] = ("estimate", "fitted")


@dataclass(frozen=True)
class Perturbation:
    """One cost and the two values it is run at."""

    cost: str
    value: int
    status: str
    up: int
    down: int


def perturbations(
    profile: CostProfile, costs: tuple[str, ...] | None, step: float
) -> tuple[list[Perturbation], list[str]]:
    """The costs to scale (``costs``, or every estimate and fitted one) with their up and down
    values, and why each of the others is left out: a step moves no cost of 0 (or below), an
    integer that rounds back to itself stays where it is, and one that rounds down to 0 has no
    logarithm."""
    if costs is None:
        costs = tuple(k for k, c in profile.entries.items() if c.status in DEFAULT_STATUSES)
    out: list[Perturbation] = []
    skipped: list[str] = []
    for name in costs:
        c = profile.entries[name]
        up, down = round(c.value * step), round(c.value / step)
        if c.value <= 0:
            skipped.append(f"{name}: its value is {c.value}, which no factor moves")
        elif up == c.value or down == c.value:
            skipped.append(f"{name}: {c.value} does not move by a step of {step:g}")
        elif down <= 0:
            skipped.append(f"{name}: {c.value} / {step:g} rounds to 0")
        else:
            out.append(Perturbation(name, c.value, c.status, up, down))
    return out, skipped


def elasticity(up: float, down: float, value_up: int, value_down: int) -> float | None:
    """d ln(cell) / d ln(cost) by the central difference; None if a cell is not positive."""
    if up <= 0 or down <= 0:
        return None
    return log(up / down) / log(value_up / value_down)


def sensitivity_rows(
    p: Perturbation, up_rows: list[dict[str, Any]], down_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One flat row per method: the cost, its two values, each cell there and its elasticity
    (None where a cell is missing or not positive in either run)."""
    down_of = {r["method"]: r for r in down_rows}
    rows = []
    for u in up_rows:
        d = down_of[u["method"]]
        row: dict[str, Any] = {
            "cost": p.cost,
            "status": p.status,
            "value": p.value,
            "value_up": p.up,
            "value_down": p.down,
            "method": u["method"],
        }
        for cell in CELLS:
            row[f"{cell}_up"] = u[cell]
            row[f"{cell}_down"] = d[cell]
            e = elasticity(float(u[cell] or 0.0), float(d[cell] or 0.0), p.up, p.down)
            row[f"{_short(cell)}_elasticity"] = None if e is None else round(e, 3)
        rows.append(row)
    return rows


def _short(cell: str) -> str:
    """mean_us -> mean, heavy_gbps -> heavy_gbps: an elasticity has no unit."""
    return cell.removesuffix("_us").removesuffix("_pct")


def _parse_costs(spec: str | None, profile: CostProfile) -> tuple[str, ...] | None:
    """``--costs``: None (the default set), ``all``, a status, or names, comma-separated."""
    if spec is None:
        return None
    known = list(profile.entries)
    picked: list[str] = []
    for part in (s.strip() for s in spec.split(",")):
        if part == "all":
            picked += known
        elif part in STATUSES:
            picked += [k for k, c in profile.entries.items() if c.status == part]
        elif part in profile.entries:
            picked.append(part)
        else:
            fail_input(
                f"--costs {spec}: {part!r} is no cost of the profile",
                f"all, a status ({', '.join(STATUSES)}) or cost names: {', '.join(known)}",
            )
    return tuple(dict.fromkeys(picked))


def _parse_methods(spec: str | None) -> tuple[str, ...]:
    """``--methods``: methods of the calibration table, comma-separated, each once, in the
    order given (default: all four)."""
    if spec is None:
        return METHODS
    picked = tuple(dict.fromkeys(s.strip() for s in spec.split(",")))
    bad = [m for m in picked if m not in METHODS]
    if bad:
        fail_input(f"--methods {spec!r}: {', '.join(map(repr, bad))} unknown", ", ".join(METHODS))
    return picked


def _choose(
    profile: CostProfile, costs: str | None, step: float
) -> tuple[list[Perturbation], list[str]]:
    """The perturbations of ``--costs`` at ``--step``, or one line saying why there are none."""
    chosen, skipped = perturbations(profile, _parse_costs(costs, profile), step)
    if not chosen:
        fail_input(
            f"--costs {costs or 'default'} --step {step:g}: nothing to scale "
            f"({'; '.join(skipped) or 'no cost chosen'})",
            "costs with a value above 0 that the step moves (try a larger --step)",
        )
    return chosen, skipped


def run_sensitivity(
    evaluate: CandidateRunner, chosen: list[Perturbation]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The profile's own rows, and the sensitivity rows of every perturbation; warns when a
    run left requests unanswered (its cells then cover the answered ones only). Every run of
    every candidate goes to one process pool (``CandidateRunner.many``)."""
    for i, p in enumerate(chosen, 1):
        console.log(f"[{i}/{len(chosen)}] {p.cost}: {p.down} and {p.up} (now {p.value})")
    candidates: list[dict[str, int]] = [{}]
    for p in chosen:
        candidates += [{p.cost: p.up}, {p.cost: p.down}]
    base_rows, *scaled = evaluate.many(candidates)
    warn_lost(base_rows)
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(chosen):
        up, down = scaled[2 * i], scaled[2 * i + 1]
        warn_lost(up, f" ({p.cost} = {p.up})")
        warn_lost(down, f" ({p.cost} = {p.down})")
        rows += sensitivity_rows(p, up, down)
    return base_rows, rows


@click.command(
    epilog=command_epilog(
        "rtvm sensitivity --duration 2 --out out/sens",
        "rtvm sensitivity --costs rx_driver_per_packet,llc_miss --methods threaded --json",
        "rtvm sensitivity --costs all --step 1.1",
    ),
)
@click.option(
    "--costs",
    default=None,
    help="Costs to scale, comma-separated: names, a status "
    f"({', '.join(STATUSES)}) or all. Default: every {' and '.join(DEFAULT_STATUSES)} cost.",
)
@click.option(
    "--step",
    type=FiniteFloatRange(min=1.01, max=4.0),
    default=1.25,
    show_default=True,
    help="Each cost runs at value x step and value / step.",
)
@click.option(
    "--methods",
    default=None,
    help=f"Methods to run, comma-separated (default: {', '.join(METHODS)}).",
)
@candidate_options
@compress_idle_option
@click.option(
    "--out",
    type=OutDir(),
    default=None,
    help="Directory for sensitivity.json and every run's methods (checkpoints/: the same "
    "command after an interruption simulates only what is missing).",
)
@json_option
def sensitivity(
    costs: str | None,
    step: float,
    methods: str | None,
    duration: float,
    seed: int,
    profile: Path | None,
    compress_idle: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """How each cell (mean, p99, SD, heavy Gb/s, CPU) moves when one cost moves."""
    check_compress_idle(compress_idle, duration, "--duration")
    base: CostProfile = read_profile_option(profile)
    chosen, skipped = _choose(base, costs, step)
    picked = _parse_methods(methods)
    for note in skipped:
        console.log(f"left out {note}")
    t0 = time.perf_counter()
    runs = (1 + 2 * len(chosen)) * len(picked)
    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # a log or pipe gets the lines, not a bar's remains
        ) as progress,
        CandidateRunner(
            profile_source(profile), duration, seed, out, picked, idle_keep=compress_idle
        ) as evaluate,
    ):
        task = progress.add_task(
            f"sensitivity: {len(chosen)} costs x 2 runs + the profile's, "
            f"{len(picked)} methods x {duration:g} s simulated",
            total=runs,
        )
        evaluate.on_method = lambda _m: progress.advance(task)
        try:
            base_rows, rows = run_sensitivity(evaluate, chosen)
        except KeyboardInterrupt:
            raise Interrupted(evaluate.kept_note("runs")) from None
    env = result_envelope(
        "sensitivity",
        seed,
        duration,
        rows,
        [r for r in SIMPLE_RT if r["method"] in picked],
        scenario={"testbed": "garcia2018", "methods": list(picked), "step": step,
                  "costs": [p.cost for p in chosen],
                  **({"compress_idle": compress_idle} if compress_idle > 1 else {})},
        base=base_rows,
        left_out=skipped,
        profile_sha256=base.sha256,
        wall_s=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    if out is not None:
        try:
            console.log(f"wrote {atomic_write_json(out / 'sensitivity.json', env)}")
        except OSError as e:
            raise RunFailed(f"cannot write the results under --out {out}: {e}") from None
    if as_json:
        emit_json(env)
        return
    wide = wide_console(100)
    for b in base_rows:
        wide.print(method_table(b, rows, step))
    click.echo(
        "elasticity: d ln(cell) / d ln(cost), from runs at the values shown (cost x step and "
        "cost / step, rounded); 0.5 means 10% more cost gives about 5% more of the cell."
    )


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def method_table(base: dict[str, Any], rows: list[dict[str, Any]], step: float) -> Table:
    """One method's elasticities, a row per cost, under the cells as the profile gives them."""
    method = base["method"]
    now = (
        f"{_fmt(base['mean_us'], '.1f')} / {_fmt(base['p99_us'], '.1f')} / "
        f"{_fmt(base['sd_us'], '.1f')} us (mean / p99 / SD), "
        f"{_fmt(base['heavy_gbps'], '.2f')} Gb/s, {_fmt(base['cpu_util_pct'], '.1f')}% CPU"
    )
    t = Table(
        title=f"{method}: elasticity of each cell (cost x {step:g} and / {step:g})",
        caption=f"at the profile's values: {now}",
    )
    t.add_column("cost")
    t.add_column("value (down, up)", justify="right")
    for cell in CELLS:
        t.add_column(_short(cell), justify="right")
    for r in rows:
        if r["method"] != method:
            continue
        t.add_row(
            f"{r['cost']} ({r['status']})",
            f"{r['value']} ({r['value_down']}, {r['value_up']})",
            *(_fmt(r[f"{_short(c)}_elasticity"], "+.2f") for c in CELLS),
        )
    return t
