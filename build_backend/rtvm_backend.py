"""rtvm's PEP 517 build backend: setuptools' own, plus what a mypyc build needs.

``RTVM_USE_MYPYC=1 pip install .`` compiles the simulation core (setup.py, src/rtvm/build.py).
mypyc type-checks what it compiles, so the isolated build environment then needs mypy and the
packages the compiled modules import (the project's own dependencies); a plain build needs
neither. Only ``build_wheel`` compiles: every other hook (requirements, metadata, sdist) runs
setup.py as a plain build, so a user with the variable exported can still make an sdist, and
the extension is not generated twice. Editable installs stay plain Python: a compiled module
shadows its .py file, so an editable compiled install would silently run yesterday's code.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (re-export every PEP 517 hook)

ROOT = Path(__file__).resolve().parent.parent
SWITCH = "RTVM_USE_MYPYC"


def _mypyc() -> bool:
    value = os.environ.get(SWITCH, "")
    if value not in ("", "0", "1"):
        raise SystemExit(f"rtvm: {SWITCH}={value!r}; allowed: 1 (compile with mypyc), 0 or unset")
    return value == "1"


@contextmanager
def _plain() -> Iterator[None]:
    """Run a hook as a plain build: setup.py then neither imports mypyc nor compiles."""
    saved = os.environ.get(SWITCH)
    os.environ[SWITCH] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SWITCH]
        else:
            os.environ[SWITCH] = saved


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def mypyc_requirements() -> list[str]:
    """mypy as the dev extra pins it, and the runtime dependencies mypyc must see the types of."""
    project = _pyproject()["project"]
    mypy = [r for r in project["optional-dependencies"]["dev"] if r.startswith("mypy")]
    return [*mypy, *project["dependencies"]]


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    compiled = _mypyc()
    with _plain():
        requires = _setuptools.get_requires_for_build_wheel(config_settings)
    return [*requires, *mypyc_requirements()] if compiled else requires


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    _mypyc()
    with _plain():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    # setuptools packs whatever build/lib holds: a module dropped from the compiled list (or a
    # compiled build before a plain one) would otherwise ship its old .so.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    _mypyc()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_sdist(config_settings: Any = None) -> list[str]:
    with _plain():
        return _setuptools.get_requires_for_build_sdist(config_settings)


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    with _plain():
        return _setuptools.build_sdist(sdist_directory, config_settings)


def _no_editable_mypyc() -> None:
    if _mypyc():
        raise SystemExit(
            "rtvm: RTVM_USE_MYPYC=1 needs a regular install (pip install .), not an editable "
            "one: compiled modules would shadow the .py files you edit"
        )


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    _no_editable_mypyc()
    return _setuptools.get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: Any = None
) -> str:
    _no_editable_mypyc()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    _no_editable_mypyc()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
