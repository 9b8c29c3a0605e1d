"""Worker processes for the methods of an experiment, which can always be stopped at once.

Why not ``multiprocessing.Pool``: its workers share the job queue's locks, and an idle worker
waits for its next job holding one. A worker killed there (a SIGTERM sent to the whole
process group by ``timeout`` or a closed terminal) keeps the lock for ever, and
``Pool.terminate`` then waits on it and hangs; its worker handler also forks replacements for
workers that exit, even while the pool is being stopped. Here each worker has its own pipe and
shares nothing, the parent hands out one job at a time, and stopping is a SIGKILL to each
worker: nothing a worker holds can outlive it, and no worker is started once stopping began.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, TypeVar

from rtvm.cli_support import TERMINATE_SIGNALS, RunFailed, signals_deferred

A = TypeVar("A")
R = TypeVar("R")


class WorkerDied(RunFailed):
    """A worker process ended without a result (killed by the system, or crashed): the run
    failed, one line and exit 1 from the command line."""


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``):
    a parent killed outright (``kill -9``, the OOM killer) must not leave it simulating."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's kill on its way out must do
        pass


def _worker(
    conn: Connection,
    fn: Callable[[Any], Any],
    ignored: frozenset[int],
    inherited: list[Connection],
) -> None:
    """Run jobs from ``conn`` until it sends None or is gone. ``inherited``: the parent's ends
    of every worker's pipe, this one's included, which the fork copied; closed at once, or a
    worker would never see its own pipe end when the parent is gone. Ctrl-C is the parent's
    to handle (it stops the workers); SIGTERM and SIGHUP end the worker as any process, unless
    the parent was started ignoring them (``ignored``: ``nohup``)."""
    for c in inherited:
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in TERMINATE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    _die_with_parent()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if job is None:
            return
        try:
            out: tuple[str, Any] = ("ok", fn(job))
        except Exception as e:
            out = ("error", e)
        try:
            conn.send(out)
        except (EOFError, OSError):
            return
        except Exception:
            conn.send(("error", RuntimeError(traceback.format_exc())))


def imap_unordered(
    fn: Callable[[A], R],
    args: Sequence[A],
    jobs: int,
    describe: Callable[[A], str] = repr,
) -> Generator[R, None, None]:
    """``fn(a)`` for every ``a`` in ``args``, in ``jobs`` worker processes (forked, so ``fn``
    may be any function), each result as soon as it is ready. An exception in ``fn`` is raised
    here; a worker that dies is ``WorkerDied``, naming its job by ``describe(a)``. Leaving the
    iteration early, by an exception (Ctrl-C, SIGTERM) or by closing it, kills every worker
    before it goes on. A signal during a fork or that cleanup is held until it is over
    (``signals_deferred``), so no worker is ever left unknown or half-stopped."""
    ctx = multiprocessing.get_context("fork")
    ignored = frozenset(sig for sig in TERMINATE_SIGNALS if signal.getsignal(sig) is signal.SIG_IGN)
    todo = list(reversed(args))
    workers: dict[Connection, Any] = {}
    running: dict[Connection, A] = {}  # each busy worker's job, to name it if the worker dies

    def hand(conn: Connection, job: A | None) -> None:
        try:
            conn.send(job)
        except OSError:  # its end is closed: the worker died after its last result
            _worker_died(workers[conn], None if job is None else describe(job))
        if job is not None:
            running[conn] = job

    try:
        for _ in range(min(jobs, len(todo))):
            with signals_deferred():  # the child is in ``workers`` before any signal acts
                mine, theirs = ctx.Pipe()
                inherited = [mine, *workers]
                p = ctx.Process(target=_worker, args=(theirs, fn, ignored, inherited))
                p.daemon = True
                p.start()
                workers[mine] = p
                theirs.close()
            hand(mine, todo.pop())
        busy = set(workers)
        while busy:
            for conn in wait(list(busy)):
                assert isinstance(conn, Connection)
                try:
                    status, value = conn.recv()
                except EOFError:
                    _worker_died(workers[conn], describe(running[conn]))
                del running[conn]
                if status == "error":
                    raise value
                if todo:
                    hand(conn, todo.pop())
                else:
                    hand(conn, None)
                    busy.discard(conn)
                yield value
        for p in workers.values():
            p.join()
    except BaseException:
        with signals_deferred():
            for p in workers.values():
                p.kill()
            for p in workers.values():
                p.join()
        raise
    finally:
        for conn in workers:
            conn.close()
        # the processes' descriptors go with them: an exception raised here keeps this frame
        # alive through its traceback, which must not keep them open too
        workers.clear()


def _worker_died(p: Any, job: str | None) -> NoReturn:
    p.join()
    code = p.exitcode
    how = f"exit code {code}"
    if code is not None and code < 0:
        try:
            how += f", {signal.Signals(-code).name}"
        except ValueError:  # a real-time signal has no name
            how += f", signal {-code}"
        if code == -signal.SIGKILL:
            how += ": killed, perhaps by the kernel's OOM killer (see dmesg)"
    running = f" while running {job}" if job else ""
    raise WorkerDied(f"a worker process ended without a result{running} ({how})")
