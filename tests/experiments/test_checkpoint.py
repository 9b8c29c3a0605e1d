"""Finished methods kept on disk: an interrupted simple-rt loses nothing; a stale one is unused."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtvm.experiments import checkpoint
from rtvm.experiments import simple_rt as exp
from rtvm.experiments.runner import run_method

FAST = ("outsourcing", "exclusive")  # the two quickest methods to simulate
DUR = 0.05


def _same(a, b) -> bool:
    return (
        a.row == b.row
        and a.extra == b.extra
        and np.array_equal(a.latencies_us, b.latencies_us)
        and a.segments_us.keys() == b.segments_us.keys()
        and all(
            np.array_equal(a.segments_us[k], b.segments_us[k], equal_nan=True)
            for k in a.segments_us
        )
        and a.probes_ns.keys() == b.probes_ns.keys()
        and all(
            np.array_equal(a.probes_ns[k], b.probes_ns[k])
            and a.probes_ns[k].dtype == b.probes_ns[k].dtype
            for k in a.probes_ns
        )
    )


def test_a_checkpoint_gives_back_the_result_it_kept_and_only_for_its_key(tmp_path):
    r = run_method("outsourcing", DUR, seed=3)
    key = checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, r.extra["profile_sha256"])
    checkpoint.save(tmp_path, key, r)
    back = checkpoint.load(tmp_path, key)
    assert back is not None and _same(back, r)
    assert len(r.probes_ns) == 9 and len(r.probes_ns["wire_out"]) == r.row["samples"]
    for changed in (
        {"seed": 4},
        {"duration_s": 0.1},
        {"profile_sha256": "other"},
        {"source_sha256": "x"},
    ):
        assert checkpoint.load(tmp_path, {**key, **changed}) is None, changed


def test_a_torn_or_foreign_checkpoint_is_ignored(tmp_path):
    key = checkpoint.run_key("simple-rt", "vanilla", 1, DUR, "sha")
    checkpoint.path_for(tmp_path, "vanilla").write_bytes(b"PK\x03\x04 not a whole zip")
    assert checkpoint.load(tmp_path, key) is None
    np.savez(checkpoint.path_for(tmp_path, "vanilla"), other=np.arange(3))
    assert checkpoint.load(tmp_path, key) is None


def test_an_interrupted_run_keeps_its_finished_methods_and_a_rerun_simulates_only_the_rest(
    tmp_path,
):
    def stop_after_first(m, r):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exp.run(DUR, 2, methods=FAST, jobs=1, on_done=stop_after_first, checkpoints=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outsourcing.npz"]

    reused, simulated = [], []
    again = exp.run(
        DUR, 2, methods=FAST, jobs=1, checkpoints=tmp_path,
        on_reused=lambda m, r: reused.append(m), on_done=lambda m, r: simulated.append(m),
    )  # fmt: skip
    assert reused == ["outsourcing"] and simulated == ["exclusive"]
    straight = exp.run(DUR, 2, methods=FAST, jobs=1)
    assert all(_same(again[m], straight[m]) for m in FAST)

    fresh = []
    exp.run(DUR, 2, methods=FAST, jobs=1, checkpoints=tmp_path, reuse=False,
            on_reused=lambda m, r: fresh.append(m))  # fmt: skip
    assert fresh == []


def test_an_interrupt_terminates_the_workers_instead_of_waiting_for_their_methods(tmp_path):
    """Without this a Ctrl-C would wait for every running method to end (minutes at 30 s)."""
    workers = []

    def stop_at_first(m, r):
        workers.extend(multiprocessing.active_children())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exp.run(0.3, 1, methods=("outsourcing", "vanilla"), jobs=2, on_done=stop_at_first,
                checkpoints=tmp_path)  # fmt: skip
    assert workers, "the pool's workers were not seen"
    assert not any(w.is_alive() for w in workers)
    # the one still simulating vanilla was killed, not waited for (the other had its last job)
    assert -signal.SIGKILL in [w.exitcode for w in workers], [w.exitcode for w in workers]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outsourcing.npz"]


def _signalled_run(out, sig, kept, *, group=True, ignore=None):
    """``rtvm reproduce simple-rt --duration 0.3 --jobs 2 --out OUT`` in a session of its own,
    sent ``sig`` (to the whole group, or to the parent alone) once ``kept`` methods are kept;
    started with ``ignore`` ignored (``nohup``). Returns the process and its stderr; a run
    that does not end within a minute of the signal fails the test."""

    def child_setup():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal starts a command
        if ignore is not None:
            signal.signal(ignore, signal.SIG_IGN)

    p = subprocess.Popen(
        [sys.executable, "-m", "rtvm", "reproduce", "simple-rt", "--duration", "0.3",
         "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=child_setup,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list((out / "checkpoints").glob("*.npz"))) < kept and p.poll() is None:
        assert time.monotonic() < deadline, f"{kept} methods did not finish in 120 s"
        time.sleep(0.02)
    (os.killpg if group else os.kill)(p.pid, sig)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("rtvm hung after the signal")
    return p, err


def _ended_as(p, err, code, first_words):
    """Stopped with ``code``, one last line that says what was kept, no process left."""
    if p.returncode == 0:
        pytest.skip("every method finished before the signal")
    assert p.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(first_words) and "kept in" in last, last
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker of the group is left running
        os.killpg(p.pid, 0)


def test_ctrl_c_stops_the_worker_processes_and_says_what_was_kept(tmp_path):
    """The terminal's Ctrl-C reaches the whole process group: the parent and its workers."""
    p, err = _signalled_run(tmp_path / "o", signal.SIGINT, 1)
    _ended_as(p, err, 130, "rtvm: interrupted: ")


def test_sigterm_to_the_parent_alone_stops_the_workers_too(tmp_path):
    """``kill PID``, a cancelled CI job: only the parent gets the signal; it stops its workers
    as on Ctrl-C, keeps what finished, and exits 128 + SIGTERM."""
    p, err = _signalled_run(tmp_path / "o", signal.SIGTERM, 1, group=False)
    _ended_as(p, err, 128 + signal.SIGTERM, "rtvm: terminated by SIGTERM: ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_whole_group_with_an_idle_worker_ends_the_run(tmp_path, sig):
    """``timeout`` and a closed terminal signal the whole group. With three of four methods
    done on two workers, one worker is idle: under ``multiprocessing.Pool`` it waited for a
    job holding the queue's lock, kept it when killed, and the parent hung in
    ``Pool.terminate``. The run must end, keep what finished, and leave no process."""
    p, err = _signalled_run(tmp_path / "o", sig, 3)
    _ended_as(p, err, 128 + sig, f"rtvm: terminated by {sig.name}: ")


def test_nohup_keeps_a_run_going_through_a_hangup(tmp_path):
    """A SIGHUP the process was started ignoring (``nohup``) stays ignored."""
    out = tmp_path / "o"
    p, err = _signalled_run(out, signal.SIGHUP, 1, ignore=signal.SIGHUP)
    assert p.returncode == 0, err
    assert len(list((out / "checkpoints").glob("*.npz"))) == 4


def test_the_cli_leaves_signal_handlers_alone_when_called_as_a_library():
    """Only the ``rtvm`` process turns SIGTERM into an interrupt; click's test runner (or any
    caller of ``rtvm.cli.main``) keeps its own handlers, from any thread."""
    from click.testing import CliRunner

    from rtvm.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is before
    codes = []
    t = threading.Thread(target=lambda: codes.append(CliRunner().invoke(main, ["--version"])))
    t.start()
    t.join()
    assert codes[0].exit_code == 0, codes[0].output


def test_an_interrupted_calibration_keeps_its_candidates_and_a_rerun_replays_them(
    tmp_path, monkeypatch
):
    """calibrate --out keeps every evaluated candidate; the search replays them from disk."""
    from click.testing import CliRunner

    import rtvm.calibrate as cal
    from rtvm.cli import main

    def one_candidate_then_ctrl_c(base, evaluate, log, on_best):
        evaluate({k: c.value for k, c in base.entries.items() if c.status == "fitted"})
        raise KeyboardInterrupt

    def written():  # a file simulated again is written again: a new inode
        return {p.name: p.stat().st_ino for p in (tmp_path / "checkpoints").rglob("*.npz")}

    monkeypatch.setattr(cal, "fit", one_candidate_then_ctrl_c)
    args = ["calibrate", "--duration", "0.2", "--out", str(tmp_path)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 130
    assert "1 evaluated candidates kept in" in first.output
    assert "no candidate had improved on the starting profile yet" in first.output
    assert not (tmp_path / "testbed.best-so-far.toml").exists()
    kept = written()
    assert sorted(kept) == sorted(f"{m}.npz" for m in exp.PAPER_METHODS)

    second = CliRunner().invoke(main, args)
    assert second.exit_code == 130 and written() == kept  # the candidate came from disk


def test_an_interrupted_calibration_names_its_best_point_once_it_has_one(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import rtvm.calibrate as cal
    from rtvm.cli import main

    def improve_once_then_ctrl_c(base, evaluate, log, on_best):
        fitted = {k: c.value for k, c in base.entries.items() if c.status == "fitted"}
        on_best(fitted, 0.5)
        raise KeyboardInterrupt

    monkeypatch.setattr(cal, "fit", improve_once_then_ctrl_c)
    run = CliRunner().invoke(main, ["calibrate", "--duration", "0.2", "--out", str(tmp_path)])
    best = tmp_path / "testbed.best-so-far.toml"
    assert run.exit_code == 130
    assert f"the best so far is in {best}" in " ".join(run.output.split())
    assert "stage objective 0.5000" in best.read_text()


def test_a_compressed_runs_checkpoint_lives_beside_a_full_runs(tmp_path):
    """Keys that differ only in idle compression: two files, each found by its own key, and
    neither overwrites the other."""
    r = run_method("outsourcing", DUR, seed=3)
    sha = r.extra["profile_sha256"]
    full = checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, sha)
    squeezed = checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, sha, 20)
    a, b = checkpoint.save(tmp_path, full, r), checkpoint.save(tmp_path, squeezed, r)
    assert a != b and a.name == "outsourcing.npz" and b.name == "outsourcing-idle20.npz"
    assert a.exists() and b.exists()
    assert checkpoint.load(tmp_path, full) is not None
    assert checkpoint.load(tmp_path, squeezed) is not None
    a.unlink()
    assert checkpoint.load(tmp_path, full) is None  # not served the compressed one
    assert checkpoint.load(tmp_path, squeezed) is not None


def test_a_run_that_kept_its_slowest_responses_has_its_own_checkpoint(tmp_path):
    """Same rows, more details: kept apart, so a run with --slowest never serves one without
    (nor the other way round), and neither overwrites the other."""
    r = run_method("outsourcing", DUR, seed=3)
    rs = run_method("outsourcing", DUR, seed=3, slowest=2)
    assert rs.row == r.row and len(rs.extra["slowest"]) == 2 and "slowest" not in r.extra
    sha = r.extra["profile_sha256"]
    plain = checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, sha)
    kept2 = checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, sha, 20, slowest=2)
    assert plain == checkpoint.run_key("simple-rt", "outsourcing", 3, DUR, sha, slowest=0)
    a = checkpoint.save(tmp_path, plain, r)
    b = checkpoint.save(tmp_path, kept2, rs)
    assert (a.name, b.name) == ("outsourcing.npz", "outsourcing-idle20-slowest2.npz")
    back = checkpoint.load(tmp_path, kept2)
    assert back is not None and _same(back, rs)
    assert checkpoint.load(tmp_path, {**kept2, "slowest": 3}) is None
    assert checkpoint.load(tmp_path, plain) is not None


def test_a_signal_while_results_are_written_lets_the_set_finish_and_says_what_is_written(
    tmp_path,
):
    """Ctrl-C in the middle of a set of result files: the set is finished (no mix of two
    runs' files), the next set is not begun, and the message names both."""
    from rtvm.cli_support import Interrupted
    from rtvm.experiments.cli import write_result_sets

    def first_set() -> list[Path]:
        a = tmp_path / "a.json"
        a.write_text("1")
        os.kill(os.getpid(), signal.SIGINT)  # held until the set is complete
        b = tmp_path / "b.png"
        b.write_text("2")
        return [a, b]

    def second_set() -> list[Path]:
        raise AssertionError("begun after the interrupt")

    with pytest.raises(Interrupted) as stopped:
        write_result_sets(tmp_path, [("seed-1/", first_set), ("results.json", second_set)])
    assert (tmp_path / "b.png").read_text() == "2"
    msg = " ".join(stopped.value.message.split())
    assert "seed-1/ written, results.json not" in msg
    assert "without simulating" in msg
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_results_written_whole_before_an_interrupt_are_said_to_be(tmp_path):
    from rtvm.cli_support import Interrupted
    from rtvm.experiments.cli import write_result_sets

    def only_set() -> list[Path]:
        os.kill(os.getpid(), signal.SIGINT)
        return []

    with pytest.raises(Interrupted, match="after the results were written under"):
        write_result_sets(tmp_path, [("the results", only_set)])
