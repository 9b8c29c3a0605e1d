"""The ``rtvm`` command line. Each sub-command lives with its pillar and registers here."""

from __future__ import annotations

import click

from rtvm import __version__
from rtvm.build import build_kind
from rtvm.cli_support import RtvmGroup, command_epilog


@click.group(
    cls=RtvmGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=command_epilog("rtvm --version", "rtvm reproduce simple-rt --quick"),
)
@click.version_option(
    __version__,
    "-V",
    "--version",
    prog_name="rtvm",
    message=f"%(prog)s %(version)s ({build_kind()})",
)
def main() -> None:
    """Model, measure and tune the real-time latency of VMs on a Linux KVM host."""


def _register() -> None:
    """Attach the pillars' commands. Each import is cheap: heavy work starts only when run."""
    from importlib import import_module

    for module, name in (
        ("rtvm.experiments.cli", "reproduce"),
        ("rtvm.sim_cli", "sim"),
        ("rtvm.calibrate", "calibrate"),
        ("rtvm.measure.cli", "measure"),
    ):
        main.add_command(getattr(import_module(module), name))


_register()
