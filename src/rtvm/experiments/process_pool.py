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

import multiprocessing
import signal
import traceback
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from rtvm.cli_support import signals_deferred

A = TypeVar("A")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process ended without a result (killed by the system, or crashed)."""


def _worker(conn: Connection, fn: Callable[[Any], Any], ignore_hup: bool) -> None:
    """Run jobs from ``conn`` until it sends None. Ctrl-C is the parent's to handle (it stops
    the workers); SIGTERM ends the worker as it would any process (the parent's handler,
    inherited through fork, turns it into an interrupt, which is not for a worker); a SIGHUP
    the parent was ignoring (``nohup``) stays ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            out: tuple[str, Any] = ("ok", fn(job))
        except Exception as e:
            out = ("error", e)
        try:
            conn.send(out)
        except Exception:
            conn.send(("error", RuntimeError(traceback.format_exc())))


def imap_unordered(fn: Callable[[A], R], args: Sequence[A], jobs: int) -> Generator[R, None, None]:
    """``fn(a)`` for every ``a`` in ``args``, in ``jobs`` worker processes (forked, so ``fn``
    may be any function), each result as soon as it is ready. An exception in ``fn`` is raised
    here. Leaving the iteration early, by an exception (Ctrl-C, SIGTERM) or by closing it,
    kills every worker before it goes on; that cleanup is not itself interrupted."""
    ctx = multiprocessing.get_context("fork")
    ignore_hup = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    todo = list(reversed(args))
    workers: dict[Connection, Any] = {}
    try:
        for _ in range(min(jobs, len(todo))):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, fn, ignore_hup), daemon=True)
            p.start()
            theirs.close()
            workers[mine] = p
            mine.send(todo.pop())
        busy = set(workers)
        while busy:
            for conn in wait(list(busy)):
                assert isinstance(conn, Connection)
                try:
                    status, value = conn.recv()
                except EOFError:
                    p = workers[conn]
                    p.join()
                    raise WorkerDied(
                        f"a worker process ended without a result (exit code {p.exitcode})"
                    ) from None
                if status == "error":
                    raise value
                if todo:
                    conn.send(todo.pop())
                else:
                    conn.send(None)
                    busy.discard(conn)
                yield value
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
    for p in workers.values():
        p.join()
