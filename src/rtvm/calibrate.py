"""``rtvm calibrate``: fit the profile's "fitted" costs to the calibration table, once.

Only the costs whose status is "fitted" move; every other cost keeps its source. Each fitted
cost is fitted against the cells of the calibration table (DESIGN.md section 3) that it governs
to first order, in stages (``STAGES``):

1. throughput: ``copy_per_byte_cold_milli`` sets how much CPU a heavy payload byte takes, so
   the four methods' heavy throughputs identify it. The latency cells do not take part: a
   dearer copy also makes the shared-CPU methods wait longer behind heavy handlers, and a fit
   on latency would let it stand in for tail mechanisms the model lacks.
2. latency: the RT path's LLC footprints (``rt_stage_ws_bytes_per_us``,
   ``rt_server_ws_bytes``) set its miss stalls; fitted on the mean and p99 response times of
   exclusive and outsourcing, whose latency under load is the LLC's alone in the model, with
   the copy cost of stage 1. Vanilla's and threaded's latencies are predictions.

A stage's objective (documented, deterministic) is the sum over the stage's methods of the
squared log-ratios model/published of its cells. The reported objective is the one of all cells
of all methods together: mean and p99, plus 4x the heavy throughput (its bar is tighter).
Search: per stage, a pattern search with multiplicative steps (x1.6, then x1.25, then x1.1)
within each cost's bounds: each cost alone, then pairs moved in opposite directions (the two
footprints trade off along a ridge), every evaluation a fixed-seed simulation, so a re-run from
the same profile gives the same fit (a local optimum: another start may end elsewhere). The
fitted profile is written atomically with the new values and the objective in its header; the
residuals per cell are printed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from rtvm.cli_support import (
    FiniteFloatRange,
    Interrupted,
    OutDir,
    RunFailed,
    atomic_write_text,
    command_epilog,
    console,
    emit_json,
    read_profile_option,
    result_envelope,
    seed_option,
)
from rtvm.experiments.published import SIMPLE_RT
from rtvm.kernel.profile import CostProfile

F = TypeVar("F", bound=Callable[..., Any])

#: bounds of the fitted costs (outside them a value would contradict its cited range)
BOUNDS: dict[str, tuple[int, int]] = {
    "copy_per_byte_cold_milli": (70, 600),
    "rt_stage_ws_bytes_per_us": (0, 65_536),
    "rt_server_ws_bytes": (0, 1_048_576),
}
STEPS = (1.6, 1.25, 1.1)
THROUGHPUT_WEIGHT = 4.0
#: the weight of each cell in the reported (all-cell) objective
CELL_WEIGHTS: dict[str, float] = {"mean_us": 1.0, "p99_us": 1.0, "heavy_gbps": THROUGHPUT_WEIGHT}


@dataclass(frozen=True)
class Stage:
    """One calibration stage: the fitted costs it moves, the cells and the methods it fits
    them against (None: all four)."""

    name: str
    keys: tuple[str, ...]
    cells: tuple[str, ...]
    methods: tuple[str, ...] | None = None


#: The stages, in order. The LLC footprints are fitted on the two methods whose response time
#: under load is, in the model, a fixed path plus LLC stalls alone (with ``llc_miss`` = 0 their
#: SDs are 0.2 and 0.4 us): exclusive (a dedicated RT CPU) and outsourcing (its own poll list and
#: no vhost). Vanilla's and threaded's latencies also carry CPU-sharing and lock waits, whose
#: tail the model under-predicts; fitting the footprints to them would let cache misses stand in
#: for those mechanisms. Their latencies are predictions.
STAGES: tuple[Stage, ...] = (
    Stage("throughput", ("copy_per_byte_cold_milli",), ("heavy_gbps",)),
    Stage(
        "latency",
        ("rt_stage_ws_bytes_per_us", "rt_server_ws_bytes"),
        ("mean_us", "p99_us"),
        ("exclusive", "outsourcing"),
    ),
)


def objective(
    rows: list[dict[str, Any]],
    cells: tuple[str, ...] | None = None,
    methods: tuple[str, ...] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """Sum of weighted squared log-ratios model/published over ``cells`` of ``methods``
    (default: all cells of all methods, with CELL_WEIGHTS; a stage's cells count with weight 1);
    residuals of every cell."""
    pub = {p["method"]: p for p in SIMPLE_RT}
    total = 0.0
    residuals = []
    for r in rows:
        p = pub[r["method"]]
        res = {"method": r["method"]}
        for key, weight in CELL_WEIGHTS.items():
            model = max(float(r[key] or 0.0), 1e-9)
            lr = math.log(model / p[key])
            counted = methods is None or r["method"] in methods
            if counted and cells is None:
                total += weight * lr * lr
            elif counted and cells is not None and key in cells:
                total += lr * lr
            res[key] = round(model, 2)
            res[f"{key}_published"] = p[key]
            res[f"{key}_rel_err_pct"] = round(100.0 * (model / p[key] - 1.0), 1)
        residuals.append(res)
    return total, residuals


def fit(
    base: CostProfile,
    evaluate: Callable[[dict[str, int]], list[dict[str, Any]]],
    log: Callable[[str], None] = lambda s: None,
    on_best: Callable[[dict[str, int], float], None] | None = None,
) -> tuple[dict[str, int], float, list]:
    """Fit stage by stage (STAGES); return the values, the all-cell objective, residuals."""
    fitted = [k for k, c in base.entries.items() if c.status == "fitted"]
    unknown = [k for k in fitted if k not in BOUNDS]
    if unknown:
        raise ValueError(f"fitted costs without bounds: {', '.join(unknown)}")
    staged = [k for st in STAGES for k in st.keys]
    unstaged = sorted(set(fitted) - set(staged))
    if unstaged:
        raise ValueError(f"fitted costs in no calibration stage: {', '.join(unstaged)}")
    cur = {k: base.entries[k].value for k in fitted}
    rows_of: dict[tuple[tuple[str, int], ...], list[dict[str, Any]]] = {}

    def rows(vals: dict[str, int]) -> list[dict[str, Any]]:
        key = tuple(sorted(vals.items()))
        if key not in rows_of:
            rows_of[key] = evaluate(vals)
            log(f"J={objective(rows_of[key])[0]:.4f} at {vals}")
        return rows_of[key]

    for st in STAGES:
        keys = tuple(k for k in st.keys if k in cur)
        if keys:
            cur = _descend(cur, keys, functools.partial(_stage_score, rows, st), on_best)
            moved = {k: cur[k] for k in keys}
            log(f"stage {st.name}: {moved}")
    j, residuals = objective(rows(cur))
    return cur, j, residuals


def _stage_score(
    rows: Callable[[dict[str, int]], list[dict[str, Any]]], st: Stage, vals: dict[str, int]
) -> float:
    """A stage's objective at ``vals``: its cells of its methods only."""
    return objective(rows(vals), st.cells, st.methods)[0]


def _descend(
    cur: dict[str, int],
    keys: tuple[str, ...],
    score: Callable[[dict[str, int]], float],
    on_best: Callable[[dict[str, int], float], None] | None,
) -> dict[str, int]:
    """Pattern search over ``keys`` with shrinking multiplicative steps: each key alone, then,
    when no single key improves, pairs moved in opposite directions. Two costs that trade off
    (two footprints whose sum the cells see) lie on a ridge that single moves cannot follow."""
    best = score(cur)
    for step in STEPS:
        improved = True
        while improved:
            improved = False
            for cand in _moves(cur, keys, step):
                j = score(cand)
                if j < best - 1e-9:
                    cur, best, improved = cand, j, True
                    if on_best is not None:  # an interrupted fit keeps its best point
                        on_best(cur, best)
                    break
    return cur


def _moves(cur: dict[str, int], keys: tuple[str, ...], step: float) -> Iterator[dict[str, int]]:
    """Candidate points around ``cur``, single-key moves first, then opposite pair moves."""
    for k in keys:
        for direction in (step, 1 / step):
            cand = _moved(cur, k, direction)
            if cand is not None:
                yield cand
    for a, b in itertools.combinations(keys, 2):
        for direction in (step, 1 / step):
            one = _moved(cur, a, direction)
            two = _moved(one, b, 1 / direction) if one is not None else None
            if two is not None:
                yield two


def _moved(cur: dict[str, int], k: str, direction: float) -> dict[str, int] | None:
    """``cur`` with key ``k`` scaled by ``direction`` within its bounds; None if it cannot move."""
    lo, hi = BOUNDS[k]
    v = cur[k]
    nv = round(v * direction) if v else round(lo + (hi - lo) * 0.01)
    nv = min(hi, max(lo, nv))
    return None if nv == v else {**cur, k: nv}


def rewrite_profile(text: str, values: dict[str, int], note: str) -> str:
    """Replace the ``value`` lines of the given [costs.NAME] tables; keep everything else."""
    for key, v in values.items():
        pat = re.compile(rf"(\[costs\.{re.escape(key)}\]\s*\nvalue\s*=\s*)(-?\d+)")
        text, n = pat.subn(rf"\g<1>{v}", text)
        if n != 1:
            raise ValueError(f"cost {key} not found once in the profile")
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith(_NOTE_PREFIXES):  # replace an earlier fit's note
        lines.pop(0)
    return f"# {note}\n" + "".join(lines)


_NOTE_PREFIXES = ("# fitted by rtvm calibrate", "# best so far of rtvm calibrate", "# candidate")


def candidate_options(f: F) -> F:
    """--duration, --seed and --profile of the commands that run the calibration table's
    methods on variants of a profile (calibrate, sensitivity)."""
    f = click.option(
        "--profile",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Profile to start from (default: the embedded one).",
    )(f)
    f = seed_option(f)
    return click.option(
        "--duration",
        type=FiniteFloatRange(min=0.2, max=60),
        default=2.0,
        show_default=True,
        help="Simulated seconds per method per run.",
    )(f)


def profile_source(profile: Path | None) -> Path:
    """The profile file a run starts from: ``profile``, or the embedded testbed profile."""
    if profile is not None:
        return profile
    from importlib import resources

    return Path(str(resources.files("rtvm.profiles").joinpath("testbed.toml")))


class CandidateRunner:
    """Runs the calibration table's methods on the starting profile with some costs replaced.

    A candidate is the starting profile's text with the given costs' ``value`` lines rewritten
    (``rewrite_profile``), in a temporary file private to this runner, so runs never share
    candidates. With ``out``, every candidate's finished methods are kept under
    ``out/checkpoints/<hash of the candidate's text>/``: a search or a sweep is deterministic,
    so the same command run again after an interruption replays from disk what it had
    evaluated and simulates only the rest. Use it as a context manager (the temporary
    directory goes with the block)."""

    def __init__(
        self,
        src_path: Path,
        duration: float,
        seed: int,
        out: Path | None,
        methods: tuple[str, ...] | None = None,
        on_method: Callable[[str], None] | None = None,
        idle_keep: int | None = None,
    ) -> None:
        self.src_path = src_path
        self.idle_keep = idle_keep  # idle compression of every run (None: none)
        self.duration = duration
        self.seed = seed
        self.out = out
        self.methods = methods
        #: hears of each method run finished or loaded from a checkpoint (a progress bar)
        self.on_method = on_method
        self.evaluated = 0
        self._workdir: Path | None = None

    def __enter__(self) -> CandidateRunner:
        self._workdir = Path(tempfile.mkdtemp(prefix="rtvm-candidates-"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __call__(self, vals: dict[str, int]) -> list[dict[str, Any]]:
        """The methods' rows with the costs in ``vals`` replaced (all others as the profile)."""
        return self.many([vals])[0]

    def many(self, candidates: list[dict[str, int]]) -> list[list[dict[str, Any]]]:
        """Each candidate's method rows, as ``__call__`` gives them, with every (candidate,
        method) run in one process pool: a sweep keeps the cores busy across candidates
        instead of waiting for each candidate's slowest method. ``evaluated`` counts a
        candidate once all its methods are done or loaded, so an interrupted sweep says how
        many it kept whole."""
        from rtvm.experiments import simple_rt as exp

        if self._workdir is None:
            raise RuntimeError("CandidateRunner is used outside its with block")
        methods = self.methods or exp.PAPER_METHODS
        source = self.src_path.read_text("utf-8")
        digests: list[str] = []  # each candidate's profile text, by hash
        todo: list[exp.RunJob] = []  # the runs of each distinct text, once
        for vals in candidates:
            text = rewrite_profile(source, vals, "candidate")
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            if digest not in digests:
                tmp = atomic_write_text(self._workdir / f"candidate-{digest}.toml", text)
                ckpt = self.out / "checkpoints" / digest if self.out is not None else None
                todo += [exp.RunJob(m, self.seed, str(tmp), ckpt, self.idle_keep) for m in methods]
            digests.append(digest)
        left = {j.profile: len(methods) for j in todo}  # methods still to come, per text
        told = self.on_method

        def heard(job: exp.RunJob, _r: object) -> None:
            left[job.profile] -= 1
            if left[job.profile] == 0:
                self.evaluated += 1
            if told is not None:
                told(job.method)

        try:
            results = exp.run_jobs(self.duration, todo, on_done=heard, on_reused=heard)
        except OSError as e:  # a run that cannot be kept: say which, do not go on
            if self.out is None:
                raise
            raise RunFailed(f"cannot keep a finished run under --out {self.out}: {e}") from None
        n = len(methods)  # results come in todo's order: n per distinct text
        rows_of = {
            d: [r.row for r in results[k * n : (k + 1) * n]]
            for k, d in enumerate(dict.fromkeys(digests))
        }
        return [rows_of[d] for d in digests]

    def kept_note(self, what: str) -> str:
        """What an interrupted run kept (``what``: the runs' name), for its one-line message."""
        if self.out is None:
            return f"nothing kept (with --out DIR every {what.rstrip('s')} is kept)"
        return (
            f"{self.evaluated} {what} kept in {self.out / 'checkpoints'} (the same command again "
            "replays them from disk)"
        )


@click.command(
    cls=click.Command,
    epilog=command_epilog(
        "rtvm calibrate --duration 2 --out out/calib",
        "rtvm calibrate --write   # update the embedded profile in place",
    ),
)
@candidate_options
@click.option(
    "--out",
    type=OutDir(),
    default=None,
    help="Directory for the fitted profile, the best so far, and every evaluated candidate "
    "(checkpoints/: an interrupted calibration run again goes on from them).",
)
@click.option(
    "--write",
    "write_back",
    is_flag=True,
    help="Write the fitted values into the starting profile file.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def calibrate(
    duration: float,
    seed: int,
    profile: Path | None,
    out: Path | None,
    write_back: bool,
    as_json: bool,
) -> None:
    """Fit the profile's "fitted" costs against the calibration table (DESIGN.md 3)."""
    base: CostProfile = read_profile_option(profile)
    src_path = profile_source(profile)
    t0 = time.perf_counter()
    best_file: Path | None = None  # written once a candidate improved on the start

    def save_best(vals: dict[str, int], j: float) -> None:
        nonlocal best_file
        if out is not None:
            note = (
                f"best so far of rtvm calibrate (seed {seed}, {duration:g} s): "
                f"stage objective {j:.4f}"
            )
            text = rewrite_profile(src_path.read_text("utf-8"), vals, note)
            best_file = atomic_write_text(out / "testbed.best-so-far.toml", text)

    with CandidateRunner(src_path, duration, seed, out) as evaluate:
        try:
            vals, j, residuals = fit(base, evaluate, log=console.log, on_best=save_best)
        except KeyboardInterrupt:
            kept = evaluate.kept_note("evaluated candidates")
            if best_file is not None:
                kept += f"; the best so far is in {best_file}"
            elif out is not None:
                kept += "; no candidate had improved on the starting profile yet"
            raise Interrupted(kept) from None
    note = f"fitted by rtvm calibrate (seed {seed}, {duration:g} s per method): objective {j:.4f}"
    text = rewrite_profile(src_path.read_text("utf-8"), vals, note)
    written = []
    if out is not None:
        written.append(atomic_write_text(out / "testbed.fitted.toml", text))
    if write_back:
        written.append(atomic_write_text(src_path, text))
    env = result_envelope(
        "calibrate",
        seed,
        duration,
        residuals,
        list(SIMPLE_RT),
        fitted=vals,
        objective=round(j, 5),
        wall_s=round(time.perf_counter() - t0, 1),
        written=[str(p) for p in written],
    )
    if as_json:
        emit_json(env)
        return
    t = Table(title=f"calibration residuals (objective {j:.4f}); fitted: {vals}")
    for col in ("method", "mean us (err %)", "p99 us (err %)", "heavy Gbps (err %)"):
        t.add_column(col)
    for r in residuals:
        t.add_row(
            r["method"],
            *(
                f"{r[k]} / {r[k + '_published']} ({r[k + '_rel_err_pct']:+.1f})"
                for k in ("mean_us", "p99_us", "heavy_gbps")
            ),
        )
    from rich.console import Console

    Console().print(t)
    for p in written:
        click.echo(f"wrote {p}")
