"""The optional mypyc build: what it compiles, that it says so, and that it changes no result."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

import rtvm.engine.core
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
# What a build reads: a copy of these is a clean tree (no build/, egg-info or caches).
TREE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
TREE_DIRS = ("src", "build_backend")


def _clean_tree(dest: Path) -> Path:
    dest.mkdir()
    for name in TREE_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__", ".mypy_cache", "*.so")
    for name in TREE_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    return dest


def _backend(tree: Path) -> ModuleType:
    """The tree's build backend, loaded from its file (not cached in sys.modules)."""
    spec = importlib.util.spec_from_file_location(
        "rtvm_backend_under_test", tree / "build_backend" / "rtvm_backend.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_compiled_module_exists_and_is_a_module_of_the_package() -> None:
    for name in COMPILED_MODULES:
        assert (ROOT / module_path(name)).is_file(), name
        assert importlib.util.find_spec(name) is not None, name


def test_the_running_build_is_whole_and_named_by_what_was_imported() -> None:
    """A source checkout runs plain Python; an installed mypyc build compiles every listed module.
    A mix means a stale or partial build: its speed would not be what it says."""
    compiled = {m for m in COMPILED_MODULES if is_compiled(m)}
    assert compiled in (set(), set(COMPILED_MODULES))
    # Judged from the module this process really imported, not by build_kind's own lookup.
    core_is_extension = rtvm.engine.core.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert build_kind() == ("mypyc" if core_is_extension else "python")


def test_the_result_envelope_and_version_say_which_build_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    import rtvm.cli
    import rtvm.cli_support

    assert rtvm.cli_support.result_envelope("x", 1, 1.0, [])["build"] in ("python", "mypyc")
    monkeypatch.setattr(rtvm.cli_support, "build_kind", lambda: "mixed")
    assert rtvm.cli_support.result_envelope("x", 1, 1.0, [])["build"] == "mixed"
    version = CliRunner().invoke(rtvm.cli.main, ["--version"]).output.strip()
    assert version.endswith(f"({build_kind()})") and build_kind() in version


def _run(pythonpath: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", RUN], env=env, cwd=pythonpath, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _sim_rows(pythonpath: Path) -> dict[str, list]:
    """``rtvm sim`` on every example scenario, briefly: the scenario path into the model (its
    values reach typed code the compiled build checks, e.g. ``[irq] heavy_nic_cpus``)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    rows = {}
    for example in sorted((ROOT / "examples").glob("*.toml")):
        out = subprocess.run(
            [sys.executable, "-m", "rtvm", "sim", str(example), "--duration", "0.05", "--json"],
            env=env, cwd=pythonpath, capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, f"{example.name}: {out.stderr[-2000:]}"
        rows[example.name] = json.loads(out.stdout)["rows"]
    return rows


def _can_compile() -> str | None:
    """Why a mypyc build cannot run here, or None. Offline-safe: the build below uses this
    environment's mypy, setuptools and wheel (the dev extra) instead of fetching them."""
    if shutil.which("cc") is None:
        return "no C compiler (.ci/run installs gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (.ci/run installs python3-dev)"
    for module in ("mypyc", "wheel"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (pip install -e '.[dev]')"
    return None


@pytest.mark.integration
def test_the_mypyc_build_gives_the_same_results_as_plain_python(tmp_path: Path) -> None:
    """Builds the compiled wheel from a clean copy, unpacks it and runs the same seeds under
    both builds: every statistic must be identical, to the last digit."""
    reason = _can_compile()
    if reason is not None:
        pytest.skip(reason)
    tree, wheels = _clean_tree(tmp_path / "tree"), tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*pip_wheel, "-q", "-w", str(wheels), str(tree)],
        env={**os.environ, "RTVM_USE_MYPYC": "1"},
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("rtvm-*.whl")
    compiled_tree, plain_tree = tmp_path / "compiled", tmp_path / "plain"
    with zipfile.ZipFile(wheel) as zf:
        extensions = {n.split(".cpython")[0] for n in zf.namelist() if n.endswith(".so")}
        zf.extractall(compiled_tree)
    assert {m.replace(".", "/") for m in COMPILED_MODULES} <= extensions
    shutil.copytree(ROOT / "src" / "rtvm", plain_tree / "rtvm")

    compiled, plain = _run(compiled_tree), _run(plain_tree)
    assert (compiled["build"], plain["build"]) == ("mypyc", "python")
    assert all(r["samples"] > 0 for r in plain["rows"].values())
    assert compiled["rows"] == plain["rows"]
    compiled_sims = _sim_rows(compiled_tree)
    assert "whatif-irqs-on-cpu0.toml" in compiled_sims
    assert compiled_sims == _sim_rows(plain_tree)


def test_a_mypyc_build_asks_for_mypy_and_the_dependencies_and_a_plain_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _clean_tree(tmp_path / "tree")
    monkeypatch.chdir(tree)
    backend = _backend(tree)
    monkeypatch.delenv("RTVM_USE_MYPYC", raising=False)
    plain = backend.get_requires_for_build_wheel()
    monkeypatch.setenv("RTVM_USE_MYPYC", "1")
    compiled = backend.get_requires_for_build_wheel()  # setup.py must not import mypyc here
    assert os.environ["RTVM_USE_MYPYC"] == "1"
    assert not (tree / "build").exists()  # mypyc generated nothing: only build_wheel compiles
    assert not any(r.startswith("mypy") for r in plain)
    assert set(compiled) - set(plain) >= {"mypy~=2.4.1", "numpy>=1.26", "pydantic>=2.6"}


@pytest.mark.parametrize("value", ["true", "yes", "2"])
def test_a_switch_value_other_than_0_or_1_is_refused_by_name(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTVM_USE_MYPYC", value)
    with pytest.raises(SystemExit, match=f"RTVM_USE_MYPYC='{value}'; allowed: 1"):
        _backend(ROOT).get_requires_for_build_wheel()


def test_an_editable_mypyc_install_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTVM_USE_MYPYC", "1")
    backend = _backend(ROOT)
    with pytest.raises(SystemExit, match="regular install"):
        backend.get_requires_for_build_editable()
    with pytest.raises(SystemExit, match="regular install"):
        backend.build_editable(str(tmp_path))


def test_the_sdist_carries_the_build_backend_even_with_the_switch_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyproject.toml names an in-tree backend: an sdist without it could not be installed; and
    a user who exports RTVM_USE_MYPYC=1 can still make one (no mypyc in an sdist build)."""
    tree = _clean_tree(tmp_path / "tree")
    monkeypatch.chdir(tree)
    monkeypatch.setenv("RTVM_USE_MYPYC", "1")
    backend = _backend(tree)
    dist = tmp_path / "dist"
    assert backend.get_requires_for_build_sdist() == []
    with tarfile.open(dist / backend.build_sdist(str(dist))) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"build_backend/rtvm_backend.py", "setup.py", "pyproject.toml"} <= names
    assert {module_path(m) for m in COMPILED_MODULES} <= names
    assert not any(n.endswith(".so") for n in names)
    assert not (tree / "build").exists()
