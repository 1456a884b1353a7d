"""Entry point of the ``neurolens`` CLI.

Subcommands are discovered from ``engine/cli/commands/*.py``: each module defines ``NAME``, ``HELP``, optional
``ORDER`` (position in ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``. Errors: a ``NeuroLensError``
prints one line naming the file and problem and exits 2 (3 for ``Cancelled``); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from engine._version import __version__
from engine.errors import Cancelled, NeuroLensError

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 3


def _command_modules():
    from engine.cli import commands

    mods = [importlib.import_module(f"engine.cli.commands.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]
    mods = [m for m in mods if hasattr(m, "NAME") and hasattr(m, "run")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neurolens",
        description="NeuroLens: decode what a person saw from their fMRI (headless engine; the GUI is neurolens-app).",
    )
    p.add_argument("--version", action="version", version=f"neurolens {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args._run(args) or 0)
    except Cancelled as e:
        print(f"neurolens: {e}", file=sys.stderr)
        return EXIT_CANCELLED
    except NeuroLensError as e:
        if args.debug:
            traceback.print_exc()
        print(f"neurolens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("neurolens: interrupted", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
