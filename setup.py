"""Optional C extensions for the simulation core; all metadata lives in pyproject.toml.

A plain build ships pure Python. ``RTVM_USE_MYPYC=1 pip install .`` compiles the modules that
rtvm/build.py lists with mypyc (same source, identical results, ~2.7x faster simulation).
"""

import os
import sys

from setuptools import setup


def ext_modules() -> list:
    if os.environ.get("RTVM_USE_MYPYC") != "1":
        return []
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    from mypyc.build import mypycify

    from rtvm.build import COMPILED_MODULES, module_path

    return mypycify([module_path(m) for m in COMPILED_MODULES], opt_level="3")


setup(ext_modules=ext_modules())
