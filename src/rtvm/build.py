"""Which build of the simulation core is running: plain Python or compiled with mypyc.

The discrete-event core (engine, kernel, virt, the testbed wiring and its workloads) can be
compiled to C extensions by mypyc for a ~2.7x faster simulation with identical results (same
source, same integer arithmetic, same event order; tests/test_build.py checks it). The list of
compiled modules lives here so that ``setup.py`` (which compiles them) and the result envelope
(which records what ran) agree. Everything else (CLI, statistics, plots, measure, tune) stays
Python: it is not on the hot path and uses libraries mypyc gains nothing on.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec

COMPILED_MODULES: tuple[str, ...] = (
    "rtvm.engine.core",
    "rtvm.kernel.cpu",
    "rtvm.kernel.host",
    "rtvm.kernel.irq",
    "rtvm.kernel.llc",
    "rtvm.kernel.napi",
    "rtvm.kernel.nic",
    "rtvm.kernel.rtmutex",
    "rtvm.kernel.sched",
    "rtvm.kernel.schedstat",
    "rtvm.kernel.softirq",
    "rtvm.kernel.task",
    "rtvm.kernel.tick",
    "rtvm.virt.guest",
    "rtvm.virt.vcpu",
    "rtvm.virt.vhost",
    "rtvm.virt.virtio",
    "rtvm.virt.vm",
    "rtvm.virt.vmrpc",
    "rtvm.testbed",
    "rtvm.workloads.rr",
)


def module_path(name: str) -> str:
    """``rtvm.kernel.cpu`` -> ``src/rtvm/kernel/cpu.py`` (what setup.py hands to mypyc)."""
    return "src/" + name.replace(".", "/") + ".py"


def is_compiled(name: str) -> bool:
    """Whether importing ``name`` loads a C extension (without importing it)."""
    spec = find_spec(name)
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES))


def build_kind() -> str:
    """``python``, ``mypyc``, or ``mixed`` (some modules compiled: a stale or partial build)."""
    compiled = [is_compiled(m) for m in COMPILED_MODULES]
    if all(compiled):
        return "mypyc"
    return "mixed" if any(compiled) else "python"
