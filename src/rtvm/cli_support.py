"""Conventions every rtvm command follows, in one place.

- Bad input: one line on stderr, ``rtvm: error: <what is wrong>; <what is allowed>``, exit code 2.
  Never a traceback for a user's mistake.
- A run that fails: one line, exit code 1 (``RunFailed``).
- Ctrl-C: one line, exit code 130, after the command's own cleanup has run; a command that
  keeps partial results says where (``Interrupted``). Under the ``rtvm`` command SIGTERM and
  SIGHUP are handled the same way, with exit code 128 + the signal.
- ``--json``: exactly one JSON object on stdout (``emit_json``); progress and logs on stderr
  (``console``).
- Files under ``--out`` are written atomically (``atomic_write_*``): a temporary file in the same
  directory, fsync, then rename, so an interrupted run never leaves half a file.
- Results carry what is needed to re-make them (``result_envelope``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from rtvm import __version__
from rtvm.build import build_kind

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: Progress, logs and human tables of --json runs go here, never to stdout.
console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """Bad input: the message names what is wrong and what is allowed. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(click.ClickException):
    """Ctrl-C, with a word on what was kept (and how to go on from it). Exit code 130."""

    exit_code = EXIT_INTERRUPTED


class RunFailed(click.ClickException):
    """The input was fine but the run failed (a tool crashed, a guest never answered). Exit 1."""

    exit_code = EXIT_RUN_FAILED


def fail_input(what: str, allowed: str) -> NoReturn:
    """Raise the standard bad-input error: ``<what>; allowed: <allowed>``."""
    raise UserError(f"{what}; allowed: {allowed}")


def one_line(text: str) -> str:
    """Collapse a message to one line (errors are always one line)."""
    return " ".join(str(text).split())


#: the signal that ended the run (SIGTERM, SIGHUP), if one did; None for Ctrl-C
_terminated_by: int | None = None
#: the signals ``terminate_signals_as_interrupts`` handles: a ``timeout``, a cancelled CI job,
#: a closed terminal
TERMINATE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def on_terminate(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP end a run as Ctrl-C does, so that the same cleanup runs: worker
    processes stopped, finished work kept. The exit code is then 128 + the signal's number, as
    a shell expects of a killed command."""
    global _terminated_by
    _terminated_by = signum
    raise KeyboardInterrupt


@contextmanager
def terminate_signals_as_interrupts() -> Iterator[None]:
    """For the command line's process only (``rtvm.__main__``), never for a library caller or
    a test runner: SIGTERM and SIGHUP raise KeyboardInterrupt (``on_terminate``) while the
    block runs. A signal the process was started ignoring (``nohup`` ignores SIGHUP) stays
    ignored. Outside the main thread nothing is installed (Python allows handlers only there)."""
    global _terminated_by
    _terminated_by = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in TERMINATE_SIGNALS}
    for sig, old in saved.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, on_terminate)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP that arrive while the block runs are held, and raised again
    once it is over (main thread only): a fork, or the cleanup that stops worker processes,
    must run to its end, or a worker is left running unknown to anyone. A signal the process
    ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, *TERMINATE_SIGNALS):
            saved[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
        yield
    finally:
        for restored, old in saved.items():
            if old is not None:  # None: a handler not set from Python (it cannot be restored)
                signal.signal(restored, old)
        for again in dict.fromkeys(held):
            signal.raise_signal(again)


def _interrupted(detail: str = "") -> NoReturn:
    word = "interrupted"
    code = EXIT_INTERRUPTED
    if _terminated_by is not None:
        word = f"terminated by {signal.Signals(_terminated_by).name}"
        code = 128 + _terminated_by
    print(f"rtvm: {word}{': ' + detail if detail else ''}", file=sys.stderr)
    sys.exit(code)


class RtvmGroup(click.Group):
    """A click group whose errors follow the conventions above."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):  # Ctrl-C, caught by click or not
            _interrupted()
        except Interrupted as exc:
            _interrupted(one_line(exc.format_message()))
        except click.UsageError as exc:  # includes BadParameter, NoSuchOption, MissingParameter
            msg = one_line(exc.format_message())
            hint = ""
            if exc.ctx is not None and exc.ctx.command_path:
                hint = f" (see '{exc.ctx.command_path} --help')"
            print(f"rtvm: error: {msg}{hint}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except click.ClickException as exc:
            print(f"rtvm: error: {one_line(exc.format_message())}", file=sys.stderr)
            sys.exit(exc.exit_code)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
        sys.exit(EXIT_OK)


def command_epilog(*examples: str) -> str:
    """The 'Example' block shown at the end of a command's --help."""
    lines = "\n".join(f"  {e}" for e in examples)
    return f"\b\nExamples:\n{lines}"


# -- parameter types ------------------------------------------------------------------------
class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan: every comparison with nan is false, so a plain
    range lets ``--duration nan`` through to the simulation."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and math.isnan(rv):
            self.fail(f"{value!r} is not a number; allowed: {self._describe_range()}", param, ctx)
        return rv


def _probe_writable(directory: Path) -> str | None:
    """Why no file could be made in ``directory`` (made when the run writes), or None if one
    could. Nothing is left behind, not even the directory: the nearest directory that exists
    up the path takes the probe, a temporary file removed at once (a refused command line, or
    shell completion, must not leave empty directories)."""
    d = directory
    while not os.path.lexists(d) and d.parent != d:  # lexists: a dangling link is in the way
        d = d.parent
    if not d.is_dir():
        return f"{str(d)!r} is not a directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rtvm-probe.", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return e.strerror or str(e)
    return None


class _WritablePath(click.Path):
    """A path a run writes to, checked before anything runs, so that a run of minutes does not
    end in an error it could have given at once (an unwritable place, a regular file in the
    way). Subclasses say what the path is and which directory must take a new file."""

    kind = "path"
    allowed = "a writable place"

    def directory(self, path: Path) -> Path:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail(f"an empty path; allowed: a {self.kind} path", param, ctx)
        rv = Path(os.fsdecode(super().convert(value, param, ctx)))
        why = _probe_writable(self.directory(rv))
        if why is not None:
            self.fail(
                f"{str(rv)!r}: cannot write there ({why}); allowed: {self.allowed}", param, ctx
            )
        return rv


class OutDir(_WritablePath):
    """A directory results go to: a file can be created in it (or, if it is missing, where it
    would be made)."""

    kind, allowed = "directory", "a writable directory"

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def directory(self, path: Path) -> Path:
        return path


class OutFile(_WritablePath):
    """A file a run writes (a trace): not a directory, and its directory (made when the run
    writes, if missing) takes a new file (it is written atomically: a temporary file beside
    it, then a rename)."""

    kind, allowed = "file", "a file in a writable directory"

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def directory(self, path: Path) -> Path:
        return path.parent


def read_profile_option(
    profile: Path | None,
    where: str = "--profile",
    allowed: str = "a readable cost profile TOML",
    given: str | None = None,
) -> Any:
    """The cost profile at ``profile`` (None: the embedded one), or one line saying what is
    wrong with it (exit 2), after ``where`` (the option or scenario key it came from; ``given``:
    the path as written there, where ``profile`` resolved it). Returns a ``CostProfile``."""
    from rtvm.kernel.profile import ProfileError, load_profile

    try:
        return load_profile(profile)
    except ProfileError as e:
        raise UserError(f"{where}: {one_line(str(e))}") from None
    except OSError as e:
        shown = f"{where} {profile}" if given is None else f"{where} = {given!r} ({profile})"
        fail_input(f"{shown}: {e.strerror or e}", allowed)


# -- common options -------------------------------------------------------------------------
def seed_option(f: F) -> F:
    return click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help="Random seed; one seed gives identical results.",
    )(f)


def quick_option(f: F) -> F:
    return click.option("--quick", is_flag=True, help="Reduced length, for a first look.")(f)


def out_option(f: F) -> F:
    return click.option(
        "--out",
        type=OutDir(),
        default=None,
        help="Directory for results, data and plots (written atomically).",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print exactly one JSON object on stdout; progress goes to stderr.",
    )(f)


def compress_idle_option(f: F) -> F:
    """--compress-idle N: idle compression (workloads.idle_compression) for the commands that
    run the testbed's methods many times (reproduce, sensitivity)."""
    return click.option(
        "--compress-idle",
        "compress_idle",
        type=click.IntRange(min=1, max=1000),
        default=1,
        show_default=True,
        metavar="N",
        help="Simulate 1/N of each gap between RT requests beyond its first 1 ms and stand in "
        "for the rest by the heavy flows' steady rates: for sweeps of runs of 10 s or more "
        "(about 4x faster at N=20 and 30 s; docs/model.md gives its error against full "
        "runs). 1: every gap in full.",
    )(f)


def check_compress_idle(compress_idle: int, duration_s: float, duration_flag: str) -> None:
    """Refuse idle compression of a run too short for its steady-rate sample (exit 2).
    ``duration_flag`` names where the length came from (``--duration`` or ``--quick``)."""
    from rtvm.workloads.idle_compression import MIN_DURATION_S

    if compress_idle > 1 and duration_s < MIN_DURATION_S:
        given = (
            f"--duration {duration_s:g}"
            if duration_flag == "--duration"
            else (f"{duration_flag} ({duration_s:g} s)")
        )
        fail_input(
            f"--compress-idle {compress_idle} with {given}",
            f"runs of at least {MIN_DURATION_S:g} s under idle compression",
        )


def common_options(f: F) -> F:
    """--seed, --quick, --out and --json, in that order in --help."""
    return seed_option(quick_option(out_option(json_option(f))))


# -- output ---------------------------------------------------------------------------------
def wide_console(min_width: int = 110) -> Console:
    """The results tables are wide: never narrower than ``min_width`` columns, even in a pipe."""
    return Console(width=max(min_width, shutil.get_terminal_size((110, 24)).columns))


def print_slowest(method: str, slowest: list[Mapping[str, Any]]) -> None:
    """A run's kept slowest responses (``details.slowest``), one table each, slowest first."""
    from rtvm.report.tables import slowest_table

    for rank, slow in enumerate(slowest, 1):
        wide_console(132).print(slowest_table(method, rank, slow))


def warn_lost(rows: list[dict[str, Any]], where: str = "") -> None:
    """Say so (stderr) when a method's row left more than a few RT requests unanswered (its
    figures then cover the answered ones only), or answered none (it has no figures)."""
    for r in rows:
        if not r["samples"]:
            click.echo(
                f"warning: {r['method']}{where}: no RT request was answered, so there are no "
                "latency figures: the run is shorter than the gaps between requests, or the "
                "RT path is stalled",
                err=True,
            )
        elif r["lost"] > max(2, r["samples"] // 100):
            click.echo(
                f"warning: {r['method']}{where}: {r['lost']} of {r['samples'] + r['lost']} "
                "requests got no response: the figures cover the answered ones only",
                err=True,
            )


def emit_json(obj: Mapping[str, Any]) -> None:
    """Print one JSON object on stdout, alone, and flush."""
    sys.stdout.write(json.dumps(obj, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is a normal file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def result_envelope(
    experiment: str,
    seed: int | None,
    duration_s: float | None,
    rows: list[dict[str, Any]],
    published: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The result object of DESIGN.md section 7, with the rtvm version; callers add the scenario
    and the cost profile's hash in ``extra`` so that any number can be re-made."""
    env: dict[str, Any] = {
        "experiment": experiment,
        "seed": seed,
        "duration_s": duration_s,
        "rows": rows,
        "published": published or [],
        "rtvm_version": __version__,
        "build": build_kind(),  # python, mypyc (same results) or mixed: says what ran
    }
    env.update(extra)
    return env
