"""The experiments' worker processes: every result comes back, errors are raised in the
parent, and leaving early stops every worker at once, whatever it was doing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from contextlib import closing

import pytest

from rtvm.experiments.process_pool import WorkerDied, imap_unordered


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _die_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _report_pid_then_sleep(x: int) -> int:
    if x == 0:
        return os.getpid()
    time.sleep(60)
    return x


def test_every_result_comes_back_once():
    assert sorted(imap_unordered(_square, list(range(9)), jobs=3)) == [x * x for x in range(9)]
    assert list(imap_unordered(_square, [], jobs=2)) == []


def test_an_exception_in_a_job_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="three"):
        list(imap_unordered(_fail_on_three, [1, 2, 3, 4], jobs=2))


def test_a_worker_that_dies_is_an_error_not_a_hang():
    with pytest.raises(WorkerDied, match="exit code -9"):
        list(imap_unordered(_die_on_two, [1, 2, 3], jobs=2))


def test_a_dead_worker_names_its_job_and_how_it_died():
    with pytest.raises(WorkerDied) as died:
        list(imap_unordered(_die_on_two, [1, 2, 3], jobs=2, describe=lambda x: f"job {x}"))
    msg = str(died.value.message)
    assert "while running job 2 " in msg
    assert "SIGKILL" in msg and "OOM" in msg


def test_leaving_early_kills_the_busy_workers_at_once():
    t0 = time.monotonic()
    with closing(imap_unordered(_report_pid_then_sleep, [1, 0, 2], jobs=3)) as it:
        first = next(it)  # the other two sleep for a minute
        workers = multiprocessing.active_children()
    assert time.monotonic() - t0 < 30
    assert len(workers) >= 2 and not any(w.is_alive() for w in workers)
    sleepers = [w for w in workers if w.pid != first]
    assert [w.exitcode for w in sleepers] == [-signal.SIGKILL] * len(sleepers) == [-9, -9]
