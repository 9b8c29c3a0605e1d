"""The CLI's conventions: one-line errors with exit 2, --json alone on stdout, atomic files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from rtvm import __version__
from rtvm.cli_support import (
    RtvmGroup,
    atomic_write_json,
    atomic_write_text,
    common_options,
    emit_json,
    fail_input,
    result_envelope,
)


def _rtvm(*args):
    return subprocess.run([sys.executable, "-m", "rtvm", *args], capture_output=True, text=True)


def test_version_and_help():
    r = _rtvm("--version")
    assert r.returncode == 0 and __version__ in r.stdout
    r = _rtvm("--help")
    assert r.returncode == 0 and "Examples:" in r.stdout


def test_unknown_command_is_one_line_exit_2():
    r = _rtvm("no-such-command")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("rtvm: error:")
    assert "Traceback" not in r.stderr


@click.group(cls=RtvmGroup)
def demo():
    pass


@demo.command()
@common_options
@click.option("--cpus", type=click.IntRange(1, 64), default=2)
def run(seed, quick, out, as_json, cpus):
    if cpus == 3:
        fail_input("--cpus 3 is odd", "even numbers")
    if as_json:
        print("progress", file=sys.stderr)
        emit_json(result_envelope("demo", seed, 1.0, [{"cpus": cpus}]))


def _demo(args, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(args, prog_name="rtvm")
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_bad_value_names_option_and_allowed_range(capsys):
    code, out, err = _demo(["run", "--cpus", "0"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--cpus" in err and "1<=x<=64" in err


def test_user_error_is_one_line_exit_2(capsys):
    code, _, err = _demo(["run", "--cpus", "3"], capsys)
    assert code == 2 and err.strip() == "rtvm: error: --cpus 3 is odd; allowed: even numbers"


def test_json_is_exactly_one_object_on_stdout(capsys):
    code, out, err = _demo(["run", "--json", "--seed", "4"], capsys)
    assert code == 0 and "progress" in err
    obj = json.loads(out)
    assert obj["experiment"] == "demo" and obj["seed"] == 4 and obj["rows"] == [{"cpus": 2}]
    assert obj["published"] == [] and obj["rtvm_version"] == __version__
    assert out.count("\n") == 1


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_text(p, "second")
    assert p.read_text() == "second"
    assert os.listdir(p.parent) == ["r.json"]


def test_atomic_write_gives_the_file_the_modes_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "r.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: others may read results


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_text(p, "old")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]
