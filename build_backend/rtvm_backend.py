"""rtvm's PEP 517 build backend: setuptools' own, plus what a mypyc build needs.

``RTVM_USE_MYPYC=1 pip install .`` compiles the simulation core (setup.py, rtvm/build.py).
mypyc type-checks what it compiles, so the isolated build environment then needs mypy and the
packages the compiled modules import (the project's own dependencies); a plain build needs
neither. Editable installs stay plain Python: a compiled module shadows its .py file, so an
editable compiled install would silently run yesterday's code after an edit.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (re-export every PEP 517 hook)

MYPY_REQUIREMENT = "mypy~=2.4.1"


def _mypyc() -> bool:
    return os.environ.get("RTVM_USE_MYPYC") == "1"


def _project_dependencies() -> list[str]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    if not _mypyc():
        return _setuptools.get_requires_for_build_wheel(config_settings)
    # setuptools runs setup.py to collect its requirements; mypyc is not there yet.
    os.environ["RTVM_USE_MYPYC"] = "0"
    try:
        requires = _setuptools.get_requires_for_build_wheel(config_settings)
    finally:
        os.environ["RTVM_USE_MYPYC"] = "1"
    return [*requires, MYPY_REQUIREMENT, *_project_dependencies()]


def _no_editable_mypyc() -> None:
    if _mypyc():
        raise SystemExit(
            "rtvm: RTVM_USE_MYPYC=1 needs a regular install (pip install .), not an editable "
            "one: compiled modules would shadow the .py files you edit"
        )


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    _no_editable_mypyc()
    return _setuptools.get_requires_for_build_editable(config_settings)


def build_editable(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    _no_editable_mypyc()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
