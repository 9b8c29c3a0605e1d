"""The optional mypyc build: what it compiles, that it says so, and that it changes no result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

from rtvm.build import COMPILED_MODULES, build_kind, is_compiled, module_path

ROOT = Path(__file__).resolve().parent.parent

# One short run per method family, printed as JSON by a child process (so that the compiled
# modules, not this process's pure ones, are imported).
RUN = (
    "import json; from rtvm.build import build_kind; "
    "from rtvm.experiments.runner import run_method; "
    "rows = {m: run_method(m, 0.15, 3).row for m in ('vanilla', 'threaded', 'outsourcing')}; "
    "print(json.dumps({'build': build_kind(), 'rows': rows}, sort_keys=True))"
)


def test_every_compiled_module_exists_and_is_a_module_of_the_package() -> None:
    for name in COMPILED_MODULES:
        assert (ROOT / module_path(name)).is_file(), name
        assert find_spec(name) is not None, name


def test_the_running_build_is_whole() -> None:
    """A source checkout runs plain Python; an installed mypyc build compiles every listed module.
    A mix means a stale or partial build: its speed and its results would not be what it says."""
    compiled = {m for m in COMPILED_MODULES if is_compiled(m)}
    assert compiled in (set(), set(COMPILED_MODULES))
    assert build_kind() == ("mypyc" if compiled else "python")


def test_the_result_envelope_and_version_say_which_build_ran() -> None:
    from click.testing import CliRunner

    from rtvm.cli import main
    from rtvm.cli_support import result_envelope

    assert result_envelope("x", 1, 1.0, [])["build"] == build_kind()
    assert CliRunner().invoke(main, ["--version"]).output.strip().endswith(f"({build_kind()})")


def _run(pythonpath: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", RUN], env=env, cwd=pythonpath, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.integration
def test_the_mypyc_build_gives_the_same_results_as_plain_python(tmp_path: Path) -> None:
    """Builds the wheel as a user would (RTVM_USE_MYPYC=1, isolated build), unpacks it and runs
    the same seeds under both builds: every statistic must be identical, to the last digit."""
    if shutil.which("cc") is None and not os.environ.get("CI"):
        pytest.skip("no C compiler (.ci/run installs gcc)")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        env={**os.environ, "RTVM_USE_MYPYC": "1"},
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("rtvm-*.whl")
    compiled_tree, plain_tree = tmp_path / "compiled", tmp_path / "plain"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(compiled_tree)
    for name in COMPILED_MODULES:
        stem = name.replace(".", "/")
        assert any(n.startswith(stem + ".cpython") and n.endswith(".so") for n in names), name
    shutil.copytree(ROOT / "src" / "rtvm", plain_tree / "rtvm")

    compiled, plain = _run(compiled_tree), _run(plain_tree)
    assert (compiled["build"], plain["build"]) == ("mypyc", "python")
    assert all(r["samples"] > 0 for r in plain["rows"].values())
    assert compiled["rows"] == plain["rows"]


def test_an_editable_mypyc_install_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "build_backend"))
    monkeypatch.setenv("RTVM_USE_MYPYC", "1")
    import rtvm_backend

    with pytest.raises(SystemExit, match="regular install"):
        rtvm_backend.build_editable(str(tmp_path))


def test_the_sdist_carries_the_build_backend_and_setup_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyproject.toml names an in-tree backend: an sdist without it could not be installed."""
    import tarfile

    # A copy without the checkout's egg-info: setuptools would take its stale SOURCES.txt.
    tree = tmp_path / "tree"
    tree.mkdir()
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__", ".mypy_cache")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, tree / name)
    for name in ("src", "build_backend"):
        shutil.copytree(ROOT / name, tree / name, ignore=skip)
    monkeypatch.syspath_prepend(str(tree / "build_backend"))
    monkeypatch.chdir(tree)
    monkeypatch.delenv("RTVM_USE_MYPYC", raising=False)
    import rtvm_backend

    dist = tmp_path / "dist"
    with tarfile.open(dist / rtvm_backend.build_sdist(str(dist))) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"build_backend/rtvm_backend.py", "setup.py", "pyproject.toml"} <= names
    assert {module_path(m) for m in COMPILED_MODULES} <= names
