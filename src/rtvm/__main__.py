"""``rtvm`` and ``python -m rtvm``: the command line, with Ctrl-C handled from the first moment.

The console script points here rather than at ``rtvm.cli:main`` because importing the command
line (click, rich) takes a few tenths of a second, and a Ctrl-C then would print a traceback:
this module imports nothing heavy until it is inside the ``try``. Here too, and only here,
SIGTERM and SIGHUP become interrupts (``cli_support.terminate_signals_as_interrupts``).
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from rtvm.cli import main as cli_main
        from rtvm.cli_support import terminate_signals_as_interrupts
    except KeyboardInterrupt:
        print("rtvm: interrupted", file=sys.stderr)
        sys.exit(130)
    with terminate_signals_as_interrupts():  # this process's, not a library caller's
        cli_main()


if __name__ == "__main__":
    main()
