"""The ``rtvm`` command line. Each sub-command lives with its pillar and registers here."""

from __future__ import annotations

import click

from rtvm import __version__
from rtvm.cli_support import RtvmGroup, command_epilog


@click.group(
    cls=RtvmGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=command_epilog("rtvm --version", "rtvm reproduce simple-rt --quick"),
)
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx, value),
    help="Show the version and the build (python or mypyc), and exit.",
)
def main() -> None:
    """Model, measure and tune the real-time latency of VMs on a Linux KVM host."""


def _print_version(ctx: click.Context, asked: bool) -> None:
    """Only on -V: finding which build runs imports the simulation core's packages, which every
    other command line (``rtvm --help`` included) should not pay for."""
    if not asked or ctx.resilient_parsing:
        return
    from rtvm.build import build_kind

    click.echo(f"rtvm {__version__} ({build_kind()})")
    ctx.exit()


def _register() -> None:
    """Attach the pillars' commands. Each import is cheap: heavy work starts only when run."""
    from importlib import import_module

    for module, name in (
        ("rtvm.experiments.cli", "reproduce"),
        ("rtvm.sim_cli", "sim"),
        ("rtvm.calibrate", "calibrate"),
        ("rtvm.sensitivity", "sensitivity"),
        ("rtvm.measure.cli", "measure"),
    ):
        main.add_command(getattr(import_module(module), name))


_register()
